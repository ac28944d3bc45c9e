// The invariant checker: samples the world from the outside all the time and turns bad
// conditions into violations once they outlive their bound.
//
// What it looks at, every SAMPLE_MS, in this order (so anything a registry names was spawned
// before the /proc scan that judges it):
//   1. the emperor's GET /v1/status (only to know which vassals passed readiness, and when);
//   2. etcd: both prefixes of the tree root, through etcd's JSON gateway (stateless: no client
//      back-off can hide a recovered etcd), unless we stopped etcd;
//   3. Consul: the double's services() accessor, unless we stopped the agent;
//   4. /proc: every process of this run (see procfs.ts);
//   5. TCP connects to every port a registration or a ready vassal names.
//
// Invariants (each bad condition is an "episode" keyed by what it is about; it is counted once,
// when it has held longer than its deadline; when it clears, its duration is a convergence time):
//   1. a registration whose process is dead or not ready. etcd: the instance document's pid is
//      not a live group leader of that vassal, or that process expects another path, or is of a
//      never-ready kind, or its port does not answer, or the emperor says it is not running (or
//      runs another pid); a location key without its document. Consul: the service's vassal has
//      no live leader, or the leader listens on another port / expects another service name, or
//      is never-ready, or the port does not answer, or the emperor says it is not running.
//   2. a ready vassal (emperor status "running" with pid P, P a live leader of that vassal from
//      /proc, its port answering) missing from a reachable registry: etcd has no instance document
//      at the path the process expects with pid P; Consul has no service <host>-<vassal> on its
//      port. Consul is not expected to hold a vassal whose health is critical: the agent itself
//      removes services critical for DeregisterCriticalServiceAfter (1 s here).
//   3. processes: two live leaders for one vassal (bound 300 ms, i.e. two samples); a leader of a
//      vassal with no valid file (bound: deregister timeout + longest stop.timeout + 1 s); a leader
//      not parented by the live emperor (orphan; 1 s); a group member whose leader is dead
//      (longest stop.timeout + 1 s). The driver itself checks that nothing survives an emperor
//      SIGKILL by more than 1 s, and the runner that nothing survives a clean stop.
//   4. is counted by the runner/world (crash, "bug" log events, growth).
//
// Deadline = max(since + bound, floor). Floors: a registry that came back from an outage gets
// 3 s from the moment it answered again; after an emperor SIGKILL, registrations (invariant 1) may
// linger for the etcd lease TTL + 1 s, and in Consul for check TTL + DeregisterCriticalServiceAfter
// + 1.5 s (or until the restarted emperor's anti-entropy removes them, which is sooner).
// While a registry is down (stopped by us) it is not reachable: its episodes are dropped, not
// judged. A stopped Consul double still answers services(), but a stopped agent points nobody
// anywhere, and its restart wipes it: treated as unreachable too.
import fs from 'node:fs/promises';
import net from 'node:net';
import { defaultServiceId } from '../src/emperor/registration.js';
import type { EmperorStatus, VassalStatus } from '../src/emperor/emperor.js';
import type { BoundClass, InvariantNo, Ledger } from './ledger.js';
import type { VassalProc } from './procfs.js';
import { HOSTILE_PREFIX } from './hostile.js';
import { MAX_STOP_TIMEOUT_MS, NEVER_READY } from './vassals.js';
import { SETTINGS, type World } from './world.js';

export const SAMPLE_MS = 150;
const PING_MS = 100;
const TICK_MS = 20;
const STATUS_BOUND_MS = 1000;
const NORMAL_BOUND_MS = 1000;
const AFTER_OUTAGE_MS = 3000;
const DUPLICATE_BOUND_MS = 300;
const NOFILE_BOUND_MS = SETTINGS.deregisterTimeoutMs + MAX_STOP_TIMEOUT_MS + 1000;
const ORPHAN_BOUND_MS = 1000;
const ORPHAN_CHILD_BOUND_MS = MAX_STOP_TIMEOUT_MS + 1000;
const ETCD_KILL_WINDOW_MS = SETTINGS.leaseTtlMs + 1000;
const CONSUL_KILL_WINDOW_MS = SETTINGS.consulCheckTtlMs + SETTINGS.consulDeregisterCriticalAfterMs + 1500;

type Domain = 'etcd-1' | 'etcd-2' | 'consul-1' | 'consul-2' | 'proc';

interface Cond {
  readonly key: string;
  /** The vassal it is about, for the history printed with a violation. */
  readonly vassal?: string;
  readonly no: InvariantNo;
  readonly what: string;
  readonly detail: string;
  readonly domain: Domain;
  readonly bound: number;
  /** Absolute time before which it is never a violation (context: outage, SIGKILL). */
  readonly floor: number;
  readonly floorClass: BoundClass;
  readonly normalClass: BoundClass;
}

interface Episode {
  cond: Cond;
  readonly since: number;
  counted: boolean;
}

interface EtcdEntry {
  readonly doc: { vassal?: string; pid?: number; port?: number; id?: string } | undefined;
  readonly location: string | undefined;
}

interface ConsulService {
  readonly ID: string;
  readonly Service: string;
  readonly Port: number;
  readonly Meta: Record<string, string>;
}

function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix);
  b[b.length - 1] = b[b.length - 1]! + 1;
  return b.toString('base64');
}

/** Both prefixes of the tree root through etcd's v3 JSON gateway. */
export async function readEtcd(clientUrl: string, root: string): Promise<Map<string, EtcdEntry>> {
  const prefix = `${root}/`;
  const res = await fetch(`${clientUrl}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: Buffer.from(prefix).toString('base64'), range_end: prefixEnd(prefix) }),
    signal: AbortSignal.timeout(1000),
  });
  if (!res.ok) throw new Error(`etcd range: HTTP ${res.status}`);
  const body = (await res.json()) as { kvs?: Array<{ key: string; value?: string }> };
  const docs = new Map<string, EtcdEntry['doc']>();
  const locs = new Map<string, string>();
  for (const kv of body.kvs ?? []) {
    const key = Buffer.from(kv.key, 'base64').toString();
    const value = Buffer.from(kv.value ?? '', 'base64').toString();
    const inst = `${root}/instances/`;
    const svc = `${root}/services/`;
    if (key.startsWith(inst)) {
      try {
        docs.set(key.slice(inst.length), JSON.parse(value) as EtcdEntry['doc']);
      } catch {
        docs.set(key.slice(inst.length), undefined);
      }
    } else if (key.startsWith(svc)) locs.set(key.slice(svc.length), value);
  }
  const out = new Map<string, EtcdEntry>();
  for (const p of new Set([...docs.keys(), ...locs.keys()])) out.set(p, { doc: docs.get(p), location: locs.get(p) });
  return out;
}

function probePort(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Checker {
  samples = 0;
  statusFailures = 0;
  etcdReadFailures = 0;
  private readonly episodes = new Map<string, Episode>();
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  /** Resource samples of the emperor (max seen). */
  maxRssKb = 0;
  maxFds = 0;
  private lastResourceSample = 0;
  private leakSeen = false;
  private readonly wrongUid = new Set<string>();
  private readonly reportsSeen = new Set<string>();
  private pingDone: Promise<void> = Promise.resolve();
  /** Longest lateness of the soak's own 20 ms ticker since the last reset (its own stalls). */
  private selfLagMs = 0;
  private ticker: NodeJS.Timeout | undefined;
  /** Slowest status answer, less the soak's own stall meanwhile. */
  maxStatusMs = 0;

  constructor(
    private readonly world: World,
    private readonly ledger: Ledger,
    /** Every bound (and the rest of a floor's window) times this: --bound-factor. */
    private readonly boundFactor = 1,
  ) {}

  start(): void {
    this.running = true;
    this.loopDone = this.loop();
    let last = performance.now();
    this.ticker = setInterval(() => {
      const now = performance.now();
      this.selfLagMs = Math.max(this.selfLagMs, now - last - TICK_MS);
      last = now;
    }, TICK_MS);
    this.pingDone = this.pingLoop();
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all([this.loopDone, this.pingDone]);
    clearInterval(this.ticker);
  }

  /**
   * Invariant 6: the emperor answers GET /v1/status within STATUS_BOUND_MS, whatever the driver
   * and the hostile actor do. Asked every PING_MS on its own loop (the sample loop takes longer);
   * a stall of the soak process itself (its ticker running late) is not held against the emperor.
   */
  private async pingLoop(): Promise<void> {
    // --bound-factor applies here too: the soak in npm test judges that status is answered.
    const bound = STATUS_BOUND_MS * this.boundFactor;
    while (this.running) {
      const emp = this.world.emperor;
      if (emp?.alive && !emp.expectExit) {
        this.selfLagMs = 0;
        const t0 = performance.now();
        let failed: string | undefined;
        try {
          await emp.status(bound * 10);
        } catch (err) {
          failed = err instanceof Error ? err.message : String(err);
        }
        const ms = Math.round(performance.now() - t0 - this.selfLagMs);
        // Only while that same emperor still runs and nobody meant to stop it.
        if (emp === this.world.emperor && emp.alive && !emp.expectExit) {
          this.maxStatusMs = Math.max(this.maxStatusMs, ms);
          if (ms > bound || failed !== undefined) {
            this.ledger.violation(6, `status not answered within ${bound / 1000} s`, `emperor pid ${emp.pid}: ${failed ?? 'answered'} after ${ms} ms (the soak itself stalled ${Math.round(this.selfLagMs)} ms meanwhile)`);
          }
        }
      }
      await sleep(PING_MS);
    }
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const t0 = Date.now();
      try {
        await this.sample();
      } catch (err) {
        this.ledger.harness(`checker sample failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      await sleep(Math.max(10, SAMPLE_MS - (Date.now() - t0)));
    }
  }

  /** Close every open episode at the end of the run (recording its duration). */
  finish(): void {
    const now = Date.now();
    for (const ep of this.episodes.values()) this.close(ep, now, true);
    this.episodes.clear();
  }

  private async sample(): Promise<void> {
    const w = this.world;
    this.samples++;
    const emp = w.emperor?.alive ? w.emperor : undefined;
    let status: EmperorStatus | undefined;
    if (emp) {
      try {
        status = await emp.status(800);
      } catch {
        if (emp.alive) this.statusFailures++;
      }
    }
    // etcd
    const etcdUpAtRead = w.etcdUp;
    let etcd: Map<string, EtcdEntry> | undefined;
    const etcdReadAt = Date.now();
    if (etcdUpAtRead) {
      try {
        etcd = await readEtcd(w.etcd.clientUrl, SETTINGS.treeRoot);
      } catch {
        if (w.etcdUp) this.etcdReadFailures++;
      }
    }
    // Consul (in-process double)
    const consulUp = w.consulUp;
    const consulReadAt = Date.now();
    const services: ConsulService[] | undefined = consulUp ? w.consul.services() : undefined;
    w.consulRequests += w.consul.requests.length;
    w.consul.requests.length = 0;
    // /proc
    const empPid = w.emperor?.alive ? w.emperor.pid : undefined;
    const procs = w.scanner.scan();
    this.judgeUids(procs);
    await this.judgeReports();
    if (status && w.hostile && !this.leakSeen && JSON.stringify(status).includes(w.hostile.marker)) {
      this.leakSeen = true;
      this.ledger.violation(5, 'status quotes a file the emperor refused', `status contains ${w.hostile.marker}, the first line of a root-only file a hostile symlink pointed at`);
    }
    this.sampleResources();
    // ports
    const ports = new Set<number>();
    for (const e of etcd?.values() ?? []) if (e.doc?.port) ports.add(e.doc.port);
    for (const s of services ?? []) if (s.Port) ports.add(s.Port);
    for (const p of procs) if (p.leader && p.env.get('PORT')) ports.add(Number(p.env.get('PORT')));
    const open = new Map<number, boolean>();
    await Promise.all([...ports].map(async (p) => open.set(p, await probePort(p))));

    const now = Date.now();
    const conds: Cond[] = [];
    const evaluated = new Set<Domain>(['proc']);
    const suspended = new Set<Domain>();

    const byPid = new Map<number, VassalProc>();
    const leaders = new Map<string, VassalProc[]>();
    for (const p of procs) {
      byPid.set(p.pid, p);
      if (p.leader && !p.probe) leaders.set(p.vassal, [...(leaders.get(p.vassal) ?? []), p]);
    }
    const statusOf = new Map<string, VassalStatus>((status?.vassals ?? []).map((v) => [v.name, v]));

    this.processConds(conds, procs, byPid, leaders, empPid);

    // Registries: reachable = up (not stopped by us) for the whole read, and read.
    const etcdOk = etcd !== undefined && w.etcdUp && w.etcdReachableSince <= etcdReadAt;
    const consulOk = services !== undefined && w.consulUp && w.consulReachableSince <= consulReadAt;
    if (!w.etcdUp || !etcdUpAtRead) suspended.add('etcd-1').add('etcd-2');
    if (!w.consulUp || !consulUp) suspended.add('consul-1').add('consul-2');
    if (!emp) suspended.add('etcd-2').add('consul-2');
    if (etcdOk) evaluated.add('etcd-1');
    if (consulOk) evaluated.add('consul-1');
    if (status && etcdOk) evaluated.add('etcd-2');
    if (status && consulOk) evaluated.add('consul-2');

    const etcdFloor1 = Math.max(w.etcdReachableSince + AFTER_OUTAGE_MS, w.lastKillAt + ETCD_KILL_WINDOW_MS);
    const consulFloor1 = Math.max(w.consulReachableSince + AFTER_OUTAGE_MS, w.lastKillAt + CONSUL_KILL_WINDOW_MS);
    const floorClass = (outageFloor: number, killFloor: number): BoundClass => (killFloor > outageFloor ? 'registry: after emperor SIGKILL' : 'registry: after outage');

    const isOpen = (port: number | undefined): boolean => port !== undefined && open.get(port) === true;
    const notRunning = (vassal: string, pid: number): string | undefined => {
      if (!status) return undefined;
      const vs = statusOf.get(vassal);
      if (!vs) return 'the emperor does not know the vassal';
      if (vs.state !== 'running') return `the emperor says ${vs.state}`;
      if (vs.pid !== pid) return `the emperor runs pid ${vs.pid}`;
      return undefined;
    };

    // ---- invariant 1: etcd
    if (etcdOk && etcd) {
      for (const [p, e] of etcd) {
        const reasons: Array<[string, string]> = [];
        const d = e.doc;
        if (!d) reasons.push(['dangling location', `location ${e.location} without an instance document`]);
        else {
          const proc = d.pid ? byPid.get(d.pid) : undefined;
          if (!proc || !proc.leader || proc.vassal !== d.vassal) reasons.push(['pid dead', `pid ${d.pid} is not a live leader of ${d.vassal}`]);
          else {
            if (proc.env.get('SOAK_SVC') !== p) reasons.push(['stale path', `pid ${d.pid} is registered as ${proc.env.get('SOAK_SVC')}`]);
            if (NEVER_READY.has(proc.env.get('SOAK_KIND') ?? '')) reasons.push(['never-ready kind registered', `kind ${proc.env.get('SOAK_KIND')}`]);
            const nr = notRunning(d.vassal ?? '', d.pid ?? 0);
            if (nr) reasons.push(['not ready', nr]);
          }
          if (!isOpen(d.port)) reasons.push(['port closed', `port ${d.port} does not answer`]);
        }
        if (reasons.length === 0) continue;
        const killFloor = w.lastKillAt + ETCD_KILL_WINDOW_MS;
        conds.push({
          key: `1:etcd:${p}`,
          ...(d?.vassal ? { vassal: d.vassal } : {}),
          no: 1,
          what: `etcd: ${reasons[0]![0]}`,
          detail: `etcd ${p} (vassal ${d?.vassal}, pid ${d?.pid}): ${reasons.map((r) => r[1]).join('; ')}`,
          domain: 'etcd-1',
          bound: NORMAL_BOUND_MS,
          floor: etcdFloor1,
          floorClass: floorClass(w.etcdReachableSince + AFTER_OUTAGE_MS, killFloor),
          normalClass: 'registry: normal',
        });
      }
    }

    // ---- invariant 1: Consul
    if (consulOk) {
      for (const s of services) {
        const vassal = s.Meta?.emperor_vassal ?? '?';
        const ls = leaders.get(vassal) ?? [];
        const proc = ls.find((l) => Number(l.env.get('PORT')) === s.Port) ?? ls[0];
        const reasons: Array<[string, string]> = [];
        if (!proc) reasons.push(['no live process', `no live leader of ${vassal}`]);
        else {
          if (Number(proc.env.get('PORT')) !== s.Port) reasons.push(['wrong port', `pid ${proc.pid} listens on ${proc.env.get('PORT')}`]);
          const expectedName = (proc.env.get('SOAK_SVC') ?? '').split('/')[1];
          if (expectedName !== s.Service) reasons.push(['stale service name', `pid ${proc.pid} expects service ${expectedName}`]);
          if (NEVER_READY.has(proc.env.get('SOAK_KIND') ?? '')) reasons.push(['never-ready kind registered', `kind ${proc.env.get('SOAK_KIND')}`]);
          const nr = notRunning(vassal, proc.pid);
          if (nr) reasons.push(['not ready', nr]);
        }
        if (!isOpen(s.Port)) reasons.push(['port closed', `port ${s.Port} does not answer`]);
        if (reasons.length === 0) continue;
        const killFloor = w.lastKillAt + CONSUL_KILL_WINDOW_MS;
        conds.push({
          key: `1:consul:${s.ID}`,
          vassal,
          no: 1,
          what: `consul: ${reasons[0]![0]}`,
          detail: `consul ${s.ID} (vassal ${vassal}, port ${s.Port}): ${reasons.map((r) => r[1]).join('; ')}`,
          domain: 'consul-1',
          bound: NORMAL_BOUND_MS,
          floor: consulFloor1,
          floorClass: floorClass(w.consulReachableSince + AFTER_OUTAGE_MS, killFloor),
          normalClass: 'registry: normal',
        });
      }
    }

    // ---- invariant 2: ready vassals missing
    if (status && (etcdOk || consulOk)) {
      const consulById = new Map((services ?? []).map((s) => [s.ID, s]));
      for (const vs of status.vassals) {
        if (vs.state !== 'running' || !vs.pid) continue;
        const proc = byPid.get(vs.pid);
        if (!proc || !proc.leader || proc.vassal !== vs.name) continue;
        const svc = proc.env.get('SOAK_SVC');
        const port = Number(proc.env.get('PORT'));
        if (!svc || !port || NEVER_READY.has(proc.env.get('SOAK_KIND') ?? '') || !isOpen(port)) continue;
        if (etcdOk && etcd) {
          const e = etcd.get(svc);
          if (e?.doc?.pid !== vs.pid) {
            conds.push({
              key: `2:etcd:${vs.name}`,
              vassal: vs.name,
              no: 2,
              what: 'etcd: ready vassal missing',
              detail: `${vs.name} (pid ${vs.pid}, ready since ${new Date(vs.stateSince).toISOString()}) has no etcd document at ${svc}${e?.doc ? ` (it names pid ${e.doc.pid})` : ''}`,
              domain: 'etcd-2',
              bound: NORMAL_BOUND_MS,
              floor: w.etcdReachableSince + AFTER_OUTAGE_MS,
              floorClass: 'registry: after outage',
              normalClass: 'registry: normal',
            });
          }
        }
        if (consulOk && vs.health !== 'critical') {
          const s = consulById.get(defaultServiceId(w.hostname, vs.name));
          if (!s || s.Port !== port) {
            conds.push({
              key: `2:consul:${vs.name}`,
              vassal: vs.name,
              no: 2,
              what: 'consul: ready vassal missing',
              detail: `${vs.name} (pid ${vs.pid}, health ${vs.health}) is not in Consul on port ${port}${s ? ` (registered on ${s.Port})` : ''}`,
              domain: 'consul-2',
              bound: NORMAL_BOUND_MS,
              floor: w.consulReachableSince + AFTER_OUTAGE_MS,
              floorClass: 'registry: after outage',
              normalClass: 'registry: normal',
            });
          }
        }
      }
    }

    this.update(now, conds, evaluated, suspended);
  }

  /**
   * Invariant 5: a vassal runs as its file's owner. Content that names its owner (SOAK_OWNER:
   * the hostile actor's, and root's files it swaps in) is judged once it has exec'd its final
   * program (sleep): before that the launch wrapper runs as root by design. The driver's own
   * files are root's (or, without root, the soak's user's) and run as that throughout.
   */
  private judgeUids(procs: readonly VassalProc[]): void {
    for (const p of procs) {
      if (p.uid === undefined) continue;
      const owner = p.env.get('SOAK_OWNER');
      const expected = owner !== undefined ? Number(owner) : this.world.driverUid;
      if (owner !== undefined && p.comm !== 'sleep') continue;
      const key = `${p.pid}:${p.startTime}`;
      if (p.uid === expected || this.wrongUid.has(key)) continue;
      this.wrongUid.add(key);
      this.ledger.violation(5, 'vassal runs as another uid than its file owner', `${p.vassal}: pid ${p.pid} (${p.comm}) runs as uid ${p.uid}, its content's owner is ${expected}${this.world.context(p.vassal)}`);
    }
  }

  /** The hostile content's own reports, <content owner>.<uid it ran as>.<pid>: caught even when the process died between samples. */
  private async judgeReports(): Promise<void> {
    const dir = this.world.hostile?.reportDir;
    if (!dir) return;
    for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
      if (this.reportsSeen.has(name)) continue;
      this.reportsSeen.add(name);
      const [owner, uid] = name.split('.');
      if (owner !== uid) this.ledger.violation(5, 'hostile content ran as another uid than its file owner', `report ${name}: content owned by uid ${owner} ran as uid ${uid}`);
    }
  }

  private processConds(conds: Cond[], procs: readonly VassalProc[], byPid: Map<number, VassalProc>, leaders: Map<string, VassalProc[]>, empPid: number | undefined): void {
    const w = this.world;
    const proc = (c: Omit<Cond, 'domain' | 'floor' | 'floorClass' | 'normalClass' | 'no'>): void => {
      conds.push({ ...c, no: 3, domain: 'proc', floor: -Infinity, floorClass: 'process: normal', normalClass: 'process: normal' });
    };
    for (const [vassal, ls] of leaders) {
      if (ls.length >= 2) {
        proc({
          key: `3:dup:${vassal}`,
          vassal,
          what: 'two live leaders for one vassal',
          detail: `${vassal}: pids ${ls.map((l) => `${l.pid} (ppid ${l.ppid})`).join(', ')}`,
          bound: DUPLICATE_BOUND_MS,
        });
      }
      // The hostile actor's vassals are not the driver's: their files come and go outside its model.
      if (!w.model.processAllowed(vassal) && !vassal.startsWith(HOSTILE_PREFIX)) {
        const f = w.model.files.get(vassal);
        proc({
          key: `3:nofile:${vassal}`,
          vassal,
          what: 'process of a vassal without a valid file',
          detail: `${vassal}: pid ${ls.map((l) => l.pid).join(', ')} runs, but its file is ${f ? 'invalid (never valid)' : 'gone'}`,
          bound: NOFILE_BOUND_MS,
        });
      }
    }
    for (const p of procs) {
      if (p.leader) {
        if (empPid === undefined || p.ppid !== empPid) {
          proc({
            key: `3:orphan:${p.pid}:${p.startTime}`,
            vassal: p.vassal,
            what: p.probe ? 'orphaned check probe' : 'orphaned vassal leader',
            detail: `${p.vassal}: pid ${p.pid} has parent ${p.ppid}, the emperor is ${empPid ?? 'not running'}`,
            bound: p.probe ? ORPHAN_BOUND_MS + 1000 : ORPHAN_BOUND_MS,
          });
        }
      } else if (!byPid.get(p.pgid)?.leader) {
        proc({
          key: `3:orphan-child:${p.pid}:${p.startTime}`,
          vassal: p.vassal,
          what: 'group member outliving its leader',
          detail: `${p.vassal}: pid ${p.pid} of group ${p.pgid}, whose leader is dead`,
          bound: ORPHAN_CHILD_BOUND_MS,
        });
      }
    }
  }

  private update(now: number, conds: readonly Cond[], evaluated: ReadonlySet<Domain>, suspended: ReadonlySet<Domain>): void {
    const seen = new Set<string>();
    for (const c of conds) {
      if (!evaluated.has(c.domain)) continue;
      seen.add(c.key);
      let ep = this.episodes.get(c.key);
      if (!ep) {
        ep = { cond: c, since: now, counted: false };
        this.episodes.set(c.key, ep);
        this.ledger.debug(`condition: ${c.detail}`);
      }
      ep.cond = c;
      const bound = c.bound * this.boundFactor;
      const floor = c.floor > ep.since ? ep.since + (c.floor - ep.since) * this.boundFactor : c.floor;
      const deadline = Math.max(ep.since + bound, floor);
      if (!ep.counted && now > deadline) {
        ep.counted = true;
        this.ledger.violation(
          c.no,
          c.what,
          `${c.detail} — for ${now - ep.since} ms (bound ${bound} ms${floor > ep.since + bound ? `, extended to ${floor - ep.since} ms by ${c.floorClass.replace(/^\w+: /, '')}` : ''})${c.vassal ? this.world.context(c.vassal) : ''}`,
        );
      }
    }
    for (const [key, ep] of this.episodes) {
      if (seen.has(key)) continue;
      if (suspended.has(ep.cond.domain)) {
        this.episodes.delete(key);
        continue;
      }
      if (!evaluated.has(ep.cond.domain)) continue;
      this.close(ep, now, false);
      this.episodes.delete(key);
    }
  }

  private close(ep: Episode, now: number, atEnd: boolean): void {
    const ms = now - ep.since;
    const c = ep.cond;
    let cls = c.floor > ep.since + c.bound ? c.floorClass : c.normalClass;
    // Orphans right after an emperor SIGKILL are what the guardian is for: classed apart.
    if (c.domain === 'proc' && ep.since >= this.world.lastKillAt && ep.since - this.world.lastKillAt < 2000) cls = 'process: after emperor SIGKILL';
    this.ledger.converged(cls, ms, `${c.what}: ${c.detail}${atEnd ? ' (still open at the end)' : ''}`);
    this.ledger.debug(`cleared after ${ms} ms: ${c.detail}`);
  }

  private sampleResources(): void {
    const now = Date.now();
    if (now - this.lastResourceSample < 2000) return;
    this.lastResourceSample = now;
    const r = this.world.resources();
    if (!r) return;
    this.maxRssKb = Math.max(this.maxRssKb, r.rssKb);
    this.maxFds = Math.max(this.maxFds, r.fds);
  }
}
