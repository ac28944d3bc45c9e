// The emperor's dashboard. Plain browser JavaScript, shipped as is (no build step, no CDN).
// Everything from the emperor (vassal names, output lines, check output, specs) is put into the
// page with textContent, never parsed as HTML: a vassal that prints <script> shows that text.
'use strict';

const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

const rows = new Map(); // name -> { v, tr, cells, at }
let registeredIn = {};
let emperorStartedAt = null;
let sortKey = 'name';
let sortDesc = false;
let filterText = '';
let selected = null;
let csrf = null;
let privileged = false;
let privilegeNote = '';
let logSource = null;
/** The open vassal's registry entries: fetched with its detail, then kept current by `registry` events. */
let detailRegs = [];

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}
const ago = (t) => (t ? `${duration(Date.now() - t)} ago` : '-');
const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.round(n / 1024)} KB`);

// ---- the table ---------------------------------------------------------------------------

/** Keystrokes in the filter box closer together than this are applied as one. */
const FILTER_MS = 50;

const COLUMNS = ['name', 'state', 'health', 'pid', 'uptime', 'restarts', 'lastExit', 'registries'];

function uptimeOf(r) {
  return r.v.uptimeMs === null ? null : r.v.uptimeMs + (Date.now() - r.at);
}

function sortValue(r, key) {
  const v = r.v;
  switch (key) {
    case 'uptime': return uptimeOf(r) ?? -1;
    case 'pid': return v.pid ?? -1;
    case 'restarts': return v.restarts;
    case 'lastExit': return v.lastExit ? v.lastExit.reason : '';
    case 'registries': return (registeredIn[v.name] || []).join(',');
    case 'health': return v.health ?? '';
    default: return String(v[key] ?? '');
  }
}

function fillRow(r) {
  const v = r.v;
  const c = r.cells;
  c.name.textContent = v.name;
  if (v.fleet) c.name.append(' ', el('span', 'fleet', 'tag'));
  c.state.textContent = '';
  const st = el('span', v.state === 'backoff' && v.nextStartAt ? `backoff (retry in ${duration(v.nextStartAt - Date.now())})` : v.state, `state-${v.state}`);
  c.state.append(st);
  c.health.textContent = '';
  if (v.health) c.health.append(el('span', v.health, `health-${v.health}`));
  else c.health.textContent = '-';
  c.pid.textContent = v.pid ?? '-';
  c.uptime.textContent = duration(uptimeOf(r));
  c.restarts.textContent = v.restarts;
  c.lastExit.textContent = v.lastExit ? v.lastExit.reason : '-';
  c.lastExit.title = v.fileError || (v.lastExit ? v.lastExit.reason : '');
  c.registries.textContent = (registeredIn[v.name] || []).join(', ') || '-';
  r.tr.dataset.state = v.state;
  r.tr.dataset.health = v.health ?? '';
  r.search = `${v.name} ${v.state} ${v.health ?? ''} ${v.pid ?? ''} ${v.lastExit ? v.lastExit.reason : ''}`.toLowerCase();
  showIfMatches(r);
}

/** Hide or show a row by the filter; the DOM is touched only when that changes (no relayout otherwise). */
function showIfMatches(r) {
  const hide = filterText !== '' && !r.search.includes(filterText);
  if (r.hidden !== hide) {
    r.hidden = hide;
    r.tr.hidden = hide;
  }
}

function upsert(v, at, flash) {
  let r = rows.get(v.name);
  if (!r) {
    const tr = el('tr');
    const cells = {};
    for (const k of COLUMNS) {
      cells[k] = el('td');
      tr.append(cells[k]);
    }
    tr.dataset.name = v.name;
    tr.addEventListener('click', () => select(v.name));
    // Done flashing: a row shown again later (filter cleared) must not flash again.
    tr.addEventListener('animationend', () => tr.classList.remove('flash'));
    r = { v, tr, cells, at, hidden: false, onScreen: false };
    rows.set(v.name, r);
    visibility.observe(tr);
  }
  const changedState = r.v.state !== v.state || r.v.health !== v.health;
  r.v = v;
  r.at = at;
  fillRow(r);
  if (flash && changedState) {
    r.tr.classList.remove('flash');
    void r.tr.offsetWidth; // restart the animation
    r.tr.classList.add('flash');
  }
  return r;
}

function remove(name) {
  const r = rows.get(name);
  if (!r) return;
  visibility.unobserve(r.tr);
  r.tr.remove();
  rows.delete(name);
}

const collator = new Intl.Collator(undefined, { numeric: false });

/**
 * Put the rows in the sort order. Each row's key is computed once (not in every comparison), and
 * the DOM is touched only when the order changed: a batch of changes that moves no row costs no
 * layout.
 */
function render() {
  const keyed = [];
  for (const r of rows.values()) keyed.push({ r, k: sortValue(r, sortKey) });
  keyed.sort((a, b) => {
    const x = a.k;
    const y = b.k;
    const cmp = typeof x === 'number' && typeof y === 'number' ? x - y : collator.compare(String(x), String(y));
    return (sortDesc ? -cmp : cmp) || collator.compare(a.r.v.name, b.r.v.name);
  });
  const body = $('vassals').tBodies[0];
  const now = body.children;
  let same = now.length === keyed.length;
  for (let i = 0; same && i < keyed.length; i++) same = now[i] === keyed[i].r.tr;
  if (!same) body.replaceChildren(...keyed.map((x) => x.r.tr));
  $('empty').hidden = rows.size > 0;
  counts();
}

function counts() {
  const by = {};
  let shown = 0;
  for (const r of rows.values()) {
    by[r.v.state] = (by[r.v.state] || 0) + 1;
    if (!r.hidden) shown++;
  }
  const box = $('f-counts');
  box.textContent = '';
  for (const [state, n] of Object.entries(by).sort()) {
    box.append(el('span', `${n} ${state}`, `state-${state}`), ' ');
  }
  $('shown').textContent = filterText ? `${shown} of ${rows.size} shown` : `${rows.size} vassal(s)`;
}

// ---- live updates --------------------------------------------------------------------------

function connect() {
  const es = new EventSource('/api/events');
  const conn = $('conn');
  es.addEventListener('open', () => {
    conn.textContent = 'live';
    conn.className = 'conn up';
  });
  es.addEventListener('error', () => {
    conn.textContent = 'reconnecting…';
    conn.className = 'conn down';
  });
  es.addEventListener('snapshot', (ev) => {
    const s = JSON.parse(ev.data);
    const now = Date.now();
    const seen = new Set();
    emperorStartedAt = s.startedAt;
    $('f-pid').textContent = s.pid;
    for (const v of s.vassals) {
      upsert(v, now, false);
      seen.add(v.name);
    }
    for (const name of [...rows.keys()]) if (!seen.has(name)) remove(name);
    facts(s.facts);
    fleetWorld(s.fleetWorld);
    render();
    if (selected) refreshDetail();
  });
  es.addEventListener('changes', (ev) => {
    const c = JSON.parse(ev.data);
    const now = Date.now();
    let added = false;
    for (const v of c.rows) {
      if (!rows.has(v.name)) added = true;
      upsert(v, now, true);
      if (v.name === selected) showStatus(v);
    }
    for (const name of c.removed) remove(name);
    if (added || sortKey !== 'name') render();
    else counts();
  });
  es.addEventListener('facts', (ev) => facts(JSON.parse(ev.data)));
  es.addEventListener('registry', (ev) => registryChanged(JSON.parse(ev.data)));
  es.addEventListener('fleet', (ev) => fleetWorld(JSON.parse(ev.data)));
}

/** Fleet mode: this node (from the facts) and the instances it runs (from the latest of facts and fleet events). */
let fleetNode = null;
let fleetHere = null;

function fleetHeader() {
  const box = $('f-fleet');
  const f = fleetNode;
  box.hidden = !f;
  if (!f) return;
  const here = fleetHere ?? f.instances.map((i) => i.name);
  box.textContent = `fleet node ${f.node}: ${here.length} instance(s) here${f.fenced ? ', FENCED (claims may have lapsed)' : ''}`;
  box.className = f.fenced ? 'health-critical' : '';
  box.title = here.join('\n');
}

/** Fleet mode: every node, and where each fleet vassal's instances run (from the fleet's etcd). */
function fleetWorld(w) {
  const box = $('fleet');
  box.hidden = !w;
  if (!w) return;
  fleetHere = w.vassals.filter((v) => v.instances.some((i) => i.node === w.self)).map((v) => v.name);
  fleetHeader();
  const placed = w.vassals.reduce((n, v) => n + v.instances.length, 0);
  $('fleet-summary').textContent = `${w.nodes.length} node(s), ${w.vassals.length} fleet vassal(s), ${placed} instance(s); this node: ${w.self}`;
  const nodes = $('fleet-nodes').tBodies[0];
  nodes.textContent = '';
  for (const n of w.nodes) {
    const tr = row([[n.name], [n.host], [n.pid || '-'], [n.vassals], [n.instances], [n.alive ? n.load.toFixed(2) : '-'], [n.alive ? (n.started ? duration(Date.now() - n.started) : '-') : 'not alive', n.alive ? '' : 'health-critical']]);
    tr.dataset.node = n.name;
    if (n.name === w.self) {
      tr.classList.add('self');
      tr.cells[0].title = 'this node';
    }
    nodes.append(tr);
  }
  const vassals = $('fleet-vassals').tBodies[0];
  vassals.textContent = '';
  if (w.vassals.length === 0) vassals.append(note('no fleet vassals (emperor fleet deploy FILE)', 6));
  for (const v of w.vassals) {
    const first = [[v.name], [v.error ? 'invalid' : v.placement ?? '-', v.error ? 'state-invalid' : '']];
    const lines = v.instances.length > 0 ? v.instances : [null];
    lines.forEach((i, k) => {
      const head = k === 0 ? first : [[''], ['']];
      const cells = i ? [[i.node], [i.state, `state-${i.state}`], [i.pid ?? '-'], [i.health ?? '-', i.health ? `health-${i.health}` : '']] : [[v.pending > 0 ? `(${v.pending} pending)` : '-'], ['-'], ['-'], ['-']];
      const tr = row([...head, ...cells]);
      tr.dataset.vassal = v.name;
      if (i) tr.dataset.node = i.node;
      if (v.error) tr.title = v.error;
      vassals.append(tr);
    });
    if (v.instances.length > 0 && v.pending > 0) vassals.append(row([[''], [''], [`(${v.pending} pending)`], [''], [''], ['']]));
  }
}

/** Registrations changed state: their rows' registries column, the header, the open detail. */
function registryChanged(c) {
  for (const [name, regs] of Object.entries(c.registeredIn)) {
    if (regs.length > 0) registeredIn[name] = regs;
    else delete registeredIn[name];
    const r = rows.get(name);
    if (r) fillRow(r);
  }
  registryHealth(c.registries);
  for (const ch of c.changes) if (ch.vassal === selected) detailRegistry(ch);
  if (sortKey === 'registries') render();
}

function registryHealth(list) {
  const regs = $('f-registries');
  regs.textContent = '';
  for (const r of list) regs.append(el('span', `${r.registry} ${r.up ? (r.slow ? 'slow' : 'up') : 'DOWN'}`, r.up ? (r.slow ? 'health-warning' : 'health-passing') : 'health-critical'), ' ');
}

function facts(f) {
  if (!f) return;
  $('f-rss').textContent = bytes(f.rssBytes);
  $('f-cpu').textContent = `${f.cpuPercent}%`;
  registryHealth(f.registries);
  fleetNode = f.fleet;
  fleetHeader();
  const before = JSON.stringify(registeredIn);
  registeredIn = f.registeredIn || {};
  if (JSON.stringify(registeredIn) !== before) for (const r of rows.values()) fillRow(r);
}

/** Rows on screen: the uptime ticker rewrites only those (1,000 cells a second would mean a layout a second). */
const visibility = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const r = rows.get(e.target.dataset.name);
    if (r) r.onScreen = e.isIntersecting;
  }
});

setInterval(() => {
  if (emperorStartedAt) $('f-uptime').textContent = duration(Date.now() - emperorStartedAt);
  for (const r of rows.values()) if (r.onScreen && r.v.uptimeMs !== null) r.cells.uptime.textContent = duration(uptimeOf(r));
}, 1000);

// ---- one vassal ------------------------------------------------------------------------------

function select(name) {
  if (selected && rows.has(selected)) rows.get(selected).tr.classList.remove('selected');
  selected = name;
  detailRegs = [];
  $('d-registries').tBodies[0].textContent = '';
  const r = rows.get(name);
  if (r) r.tr.classList.add('selected');
  $('detail').hidden = false;
  $('d-name').textContent = name;
  $('d-message').hidden = true;
  if (r) showStatus(r.v);
  refreshDetail();
  followLog(name);
}

function showStatus(v) {
  const st = $('d-state');
  st.textContent = v.state;
  st.className = `state state-${v.state}`;
  const dl = $('d-facts');
  dl.textContent = '';
  const add = (k, val) => dl.append(el('dt', k), el('dd', val));
  add('health', v.health ?? '-');
  add('pid', v.pid ?? '-');
  add('uptime', duration(v.uptimeMs));
  add('restarts', v.restarts);
  add('failures in a row', v.failures);
  add('last exit', v.lastExit ? `${v.lastExit.reason} (${ago(v.lastExit.at)})` : '-');
  if (v.fatalReason) add('gave up', v.fatalReason);
  if (v.fileError) add('file error', v.fileError);
  add('file', v.file);
  add('in this state', ago(v.stateSince));
  showChecks(v.checks);
  for (const b of document.querySelectorAll('[data-action]')) b.disabled = !privileged || v.state === 'invalid';
}

function showChecks(checks) {
  const body = $('d-checks').tBodies[0];
  body.textContent = '';
  if (checks.length === 0) body.append(note('no checks running', 5));
  for (const c of checks) body.append(row([[c.name], [c.status, `health-${c.status}`], [ago(c.lastResultAt)], [ago(c.lastChangeAt)], [c.output]]));
}

function row(cells) {
  const tr = el('tr');
  for (const [text, cls] of cells) {
    const td = el('td', text, cls);
    td.title = String(text ?? '');
    tr.append(td);
  }
  return tr;
}

/** A one-cell row across a whole table: "no checks", "not registered". */
function note(text, columns) {
  const tr = el('tr');
  const td = el('td', text, 'muted');
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

async function refreshDetail() {
  const name = selected;
  if (!name) return;
  if (!privileged) {
    $('d-spec').textContent = privilegeNote;
    return;
  }
  const res = await fetch(`/api/vassals/${encodeURIComponent(name)}`);
  if (name !== selected) return;
  if (!res.ok) {
    $('d-spec').textContent = (await res.json().catch(() => ({}))).error || `HTTP ${res.status}`;
    return;
  }
  const d = await res.json();
  showStatus(d.status);
  $('d-spec').textContent = d.spec ? JSON.stringify(d.spec, null, 2) : '(no valid file yet)';
  detailRegs = d.registries;
  showRegistries();
  const hist = $('d-history');
  hist.textContent = '';
  for (const h of d.history) {
    const s = el('span', null, `h-${h.state}`);
    s.title = `${new Date(h.at).toLocaleTimeString()} ${h.state}${h.reason ? `: ${h.reason}` : ''}`;
    hist.append(s);
  }
  if (d.history.length === 0) hist.textContent = 'no state changes yet';
}

function showRegistries() {
  const regs = $('d-registries').tBodies[0];
  regs.textContent = '';
  if (detailRegs.length === 0) regs.append(note('not registered anywhere (no service: in its file, or no registry configured)', 6));
  for (const r of detailRegs) {
    const cls = r.state === 'registered' ? 'health-passing' : r.state === 'failed' ? 'health-critical' : 'health-warning';
    const tr = row([[r.registry], [r.id], [r.service ?? '-'], [r.location ?? '-'], [r.state, cls], [ago(r.lastComparedAt)]]);
    tr.dataset.registry = r.registry;
    if (r.error) tr.cells[4].title = r.error;
    regs.append(tr);
  }
}

/** One registry event for the open vassal: its entry there takes the new state at once. */
function detailRegistry(ch) {
  const i = detailRegs.findIndex((r) => r.registry === ch.registry);
  if (i < 0) {
    // Not known when the detail was read (registered since): read it again.
    refreshDetail();
    return;
  }
  detailRegs[i] = { ...detailRegs[i], id: ch.id, state: ch.state, error: ch.error };
  showRegistries();
}

const MAX_LOG_LINES = 1000;

function followLog(name) {
  if (logSource) logSource.close();
  logSource = null;
  const pre = $('d-log');
  pre.textContent = '';
  if (!privileged) {
    $('d-log-state').textContent = '';
    pre.textContent = privilegeNote;
    return;
  }
  const src = new EventSource(`/api/vassals/${encodeURIComponent(name)}/log?lines=200`);
  logSource = src;
  $('d-log-state').textContent = '(live)';
  src.addEventListener('message', (ev) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(document.createTextNode(JSON.parse(ev.data) + '\n'));
    while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  src.addEventListener('skipped', (ev) => pre.append(document.createTextNode(`[${ev.data} line(s) skipped: the page fell behind]\n`)));
  src.addEventListener('error', () => {
    if (logSource === src) $('d-log-state').textContent = '(reconnecting…)';
  });
  src.addEventListener('open', () => {
    if (logSource === src) {
      pre.textContent = ''; // a reconnect sends the last lines again
      $('d-log-state').textContent = '(live)';
    }
  });
}

async function act(action) {
  const name = selected;
  const msg = $('d-message');
  msg.hidden = false;
  msg.className = 'message ok';
  msg.textContent = `${action} ${name}…`;
  for (const b of document.querySelectorAll('[data-action]')) b.disabled = true;
  try {
    const res = await fetch(`/api/vassals/${encodeURIComponent(name)}/${action}`, { method: 'POST', headers: { 'x-emperor-csrf': csrf } });
    const body = await res.json().catch(() => ({}));
    if (res.ok) {
      msg.textContent = `${action}: ${body.state}${body.lastExit && body.state !== 'running' ? ` (last exit: ${body.lastExit.reason})` : ''}`;
      if (name === selected) showStatus(body);
    } else {
      msg.className = 'message';
      msg.textContent = `${action} refused: ${body.error || `HTTP ${res.status}`}`;
    }
  } catch (err) {
    msg.className = 'message';
    msg.textContent = `${action} failed: ${err}`;
  } finally {
    const r = rows.get(name);
    if (r && name === selected) showStatus(r.v);
    refreshDetail();
  }
}

// ---- wiring ----------------------------------------------------------------------------------

async function main() {
  const res = await fetch('/api/session');
  if (res.status === 401) {
    location.href = '/login';
    return;
  }
  const s = await res.json();
  csrf = s.csrf;
  privileged = s.privileged;
  privilegeNote = s.why || '';
  for (const b of document.querySelectorAll('[data-action]')) {
    b.addEventListener('click', () => act(b.dataset.action));
    if (!privileged) b.title = privilegeNote;
  }
  $('d-close').addEventListener('click', () => {
    $('detail').hidden = true;
    if (selected && rows.has(selected)) rows.get(selected).tr.classList.remove('selected');
    selected = null;
    if (logSource) logSource.close();
    logSource = null;
  });
  // The first keystroke filters at once; keystrokes that follow within FILTER_MS are applied
  // together at its end, so fast typing costs one layout, not one per character.
  let filterCooling = null;
  let filterPending = false;
  const applyFilter = () => {
    filterText = $('filter').value.trim().toLowerCase();
    for (const r of rows.values()) showIfMatches(r);
    counts();
  };
  $('filter').addEventListener('input', () => {
    if (filterCooling) {
      filterPending = true;
      return;
    }
    applyFilter();
    const cool = () => {
      filterCooling = null;
      if (filterPending) {
        filterPending = false;
        applyFilter();
        filterCooling = setTimeout(cool, FILTER_MS);
      }
    };
    filterCooling = setTimeout(cool, FILTER_MS);
  });
  for (const th of document.querySelectorAll('#vassals th')) {
    th.addEventListener('click', () => {
      if (sortKey === th.dataset.key) sortDesc = !sortDesc;
      else {
        sortKey = th.dataset.key;
        sortDesc = false;
      }
      for (const h of document.querySelectorAll('#vassals th')) h.classList.remove('sorted', 'desc');
      th.classList.add('sorted');
      if (sortDesc) th.classList.add('desc');
      render();
    });
  }
  connect();
}

main();
