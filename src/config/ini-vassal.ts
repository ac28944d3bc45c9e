// From a uWSGI .ini vassal's [uwsgi] options to the same document a YAML vassal would be, so
// one schema (schema.ts) validates both. Only `consul-*` (the uWSGI–Consul draft) and
// `emperor-*` options are read; every other option is uWSGI's business. The vassal runs as
// `uwsgi --ini FILE`, speaks the Emperor protocol (ready on byte 5, stopped with byte 0), and
// errors name the option as written in the file, not the YAML field it stands for.
import { parseIni, expandMagic, magicTable } from './ini.js';

/** What the document is built from, and how to name a schema error's field in the file's terms. */
export type IniDocument = { ok: true; document: Record<string, unknown>; optionFor: (field: string) => string | undefined } | { ok: false; problem: string; field?: string };

type Target =
  /** A single value at this document path. */
  | { readonly kind: 'one'; readonly path: readonly string[]; readonly as?: 'int' | 'bool' | 'tags' }
  /** Repeatable: each occurrence (or comma-separated part) is one more list entry. */
  | { readonly kind: 'many'; readonly what: 'agent' | 'http-check' | 'tcp-check' | 'env' };

const one = (dotted: string, as?: 'int' | 'bool' | 'tags'): Target => ({ kind: 'one', path: dotted.split('.'), ...(as ? { as } : {}) });

/**
 * Every option the emperor reads. The `emperor-*` names spell the YAML field's path with "-"
 * (stop.timeout → emperor-stop-timeout); README.md lists them for users.
 */
export const INI_OPTIONS: ReadonlyMap<string, Target> = new Map<string, Target>([
  // The uWSGI–Consul draft.
  ['consul-agent', { kind: 'many', what: 'agent' }],
  ['consul-consistency-mode', one('consul.consistency')],
  ['consul-service-name', one('service.name')],
  ['consul-service-id', one('service.id')],
  ['consul-service-tags', one('service.tags', 'tags')],
  ['consul-service-port', one('service.port', 'int')],
  ['consul-service-address', one('service.address')],
  // The emperor's own fields.
  ['emperor-restart', one('restart')],
  ['emperor-cwd', one('cwd')],
  ['emperor-env', { kind: 'many', what: 'env' }],
  ['emperor-user', one('user')],
  ['emperor-group', one('group')],
  ['emperor-start-timeout', one('start.timeout')],
  ['emperor-stop-timeout', one('stop.timeout')],
  ['emperor-stop-drain', one('stop.drain')],
  ['emperor-heartbeat-timeout', one('heartbeat_timeout')],
  ['emperor-backoff-initial', one('backoff.initial')],
  ['emperor-backoff-max', one('backoff.max')],
  ['emperor-backoff-reset-after', one('backoff.reset_after')],
  ['emperor-backoff-max-retries', one('backoff.max_retries', 'int')],
  ['emperor-check-http', { kind: 'many', what: 'http-check' }],
  ['emperor-check-tcp', { kind: 'many', what: 'tcp-check' }],
  ['emperor-check-interval', one('check.interval')],
  ['emperor-check-timeout', one('check.timeout')],
  ['emperor-on-critical-restart-after', one('on_critical.restart_after', 'int')],
  ['emperor-service-type', one('service.type')],
  ['emperor-service-deregister-when-critical', one('service.deregister_when_critical', 'bool')],
  ['emperor-logs-max-size', one('logs.max_size')],
  ['emperor-logs-keep', one('logs.keep', 'int')],
  ['emperor-limits-memory', one('limits.memory')],
  ['emperor-limits-pids', one('limits.pids', 'int')],
  ['emperor-limits-cpu-weight', one('limits.cpu_weight', 'int')],
  ['emperor-limits-open-files', one('limits.open_files', 'int')],
  ['emperor-limits-required', one('limits_required', 'bool')],
]);

const OWN_PREFIXES = ['consul-', 'emperor-'];
const isOwn = (key: string): boolean => OWN_PREFIXES.some((p) => key.startsWith(p));

const BOOLS: ReadonlyMap<string, boolean> = new Map([
  ['true', true],
  ['yes', true],
  ['on', true],
  ['1', true],
  ['false', false],
  ['no', false],
  ['off', false],
  ['0', false],
]);

/** Strings the schema's own messages then word ("expected a port number..., got "80x""). */
function convert(value: string, as: 'int' | 'bool' | 'tags' | undefined): unknown {
  if (as === 'int') return /^\d{1,15}$/.test(value) ? Number(value) : value;
  if (as === 'bool') return BOOLS.get(value.toLowerCase()) ?? value;
  // Comma-separated as in the draft; no trimming, so "v2, blue" is a tag with a space: refused.
  if (as === 'tags') return value === '' ? [] : value.split(',');
  return value;
}

function setPath(doc: Record<string, unknown>, keys: readonly string[], value: unknown): void {
  let at = doc;
  for (const key of keys.slice(0, -1)) {
    const next = (at[key] ??= {}) as Record<string, unknown>;
    at = next;
  }
  at[keys[keys.length - 1] ?? ''] = value;
}

/** "did you mean" for a misspelt option of ours (one edit away is enough for the usual typo). */
function closest(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of INI_OPTIONS.keys()) {
    const d = distance(key, name);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = cur;
  }
  return prev[b.length] ?? 3;
}

/**
 * The vassal document for `text`, the content of the .ini file `file`: the command is
 * `uwsgi --ini FILE` (the binary is the emperor's --uwsgi-bin, put in at launch), readiness
 * and stop go through the Emperor protocol, and the options above fill in the rest.
 */
export function iniDocument(text: string, file: string): IniDocument {
  const parsed = parseIni(text);
  if (!parsed.ok) return parsed;
  const magic = magicTable(file);
  const seenAt = new Map<string, number>();
  /** Formatted document path → the option it came from. */
  const origin = new Map<string, string>();
  const doc: Record<string, unknown> = {};
  const agents: string[] = [];
  const httpChecks: string[] = [];
  const tcpChecks: string[] = [];
  const env: Record<string, string> = {};
  let check: { interval?: string; timeout?: string } = {};

  for (const opt of parsed.options) {
    if (!isOwn(opt.key)) continue;
    const target = INI_OPTIONS.get(opt.key);
    if (target === undefined) {
      const guess = closest(opt.key);
      return { ok: false, field: opt.key, problem: `unknown option at line ${opt.line} (the emperor reads the consul-* and emperor-* options listed in its README)${guess ? `; did you mean ${guess}?` : ''}` };
    }
    const expanded = expandMagic(opt.value, magic);
    if (!expanded.ok) return { ok: false, field: opt.key, problem: `line ${opt.line}: ${expanded.problem}` };
    const value = expanded.value;
    if (target.kind === 'many') {
      if (target.what === 'agent') agents.push(...value.split(','));
      else if (target.what === 'http-check') httpChecks.push(value);
      else if (target.what === 'tcp-check') tcpChecks.push(value);
      else {
        const eq = value.indexOf('=');
        if (eq <= 0) return { ok: false, field: opt.key, problem: `line ${opt.line}: expected NAME=value, got ${JSON.stringify(value.slice(0, 40))}` };
        env[value.slice(0, eq)] = value.slice(eq + 1);
      }
      continue;
    }
    const first = seenAt.get(opt.key);
    if (first !== undefined) return { ok: false, field: opt.key, problem: `given twice (lines ${first} and ${opt.line}); keep one` };
    seenAt.set(opt.key, opt.line);
    const [head, tail] = target.path;
    if (head === 'check' && tail !== undefined) {
      check = { ...check, [tail]: value };
      continue;
    }
    setPath(doc, target.path, convert(value, target.as));
    origin.set(target.path.join('.'), opt.key);
  }

  if (agents.length > 0) {
    const consul = (doc.consul ??= {}) as Record<string, unknown>;
    consul.agents = agents;
    origin.set('consul.agents', 'consul-agent');
  }
  const service = doc.service as Record<string, unknown> | undefined;
  if (service !== undefined && service.name === undefined && service.type === undefined) {
    const given = Object.keys(service)
      .map((k) => origin.get(`service.${k}`))
      .find((o) => o !== undefined);
    return { ok: false, field: given, problem: 'needs consul-service-name (required to register the vassal) or emperor-service-type' };
  }
  if (doc.consul !== undefined && service === undefined) {
    return { ok: false, field: agents.length > 0 ? 'consul-agent' : 'consul-consistency-mode', problem: 'needs consul-service-name: without it there is nothing to register' };
  }
  if (service !== undefined && service.port === undefined) origin.set('service.port', 'consul-service-port');

  const checks = [...httpChecks.map((url) => ({ http: url, ...check })), ...tcpChecks.map((target) => ({ tcp: target, ...check }))];
  if (checks.length > 0) {
    doc.checks = checks;
    httpChecks.forEach((_, i) => origin.set(`checks[${i}].http`, 'emperor-check-http'));
    tcpChecks.forEach((_, i) => origin.set(`checks[${httpChecks.length + i}].tcp`, 'emperor-check-tcp'));
  } else if (check.interval !== undefined || check.timeout !== undefined) {
    return { ok: false, field: check.interval !== undefined ? 'emperor-check-interval' : 'emperor-check-timeout', problem: 'applies to emperor-check-http and emperor-check-tcp checks, and there are none' };
  }
  if (Object.keys(env).length > 0) {
    doc.env = env;
    origin.set('env', 'emperor-env');
  }

  doc.command = ['uwsgi', '--ini', file];
  doc.emperor_protocol = true;
  // Not used while the protocol works (byte 0 stops it); if the vassal closed its end, SIGINT is
  // uWSGI's "stop" (SIGTERM is "reload" in uWSGI 2.0).
  setPath(doc, ['stop', 'signal'], 'SIGINT');

  const optionFor = (field: string): string | undefined => {
    // The longest document path that the field starts with: "service.tags[1]" → service.tags,
    // env["1X"] → env. Every step is shorter, so this ends.
    for (let cut = field; cut !== ''; ) {
      const found = origin.get(cut);
      if (found !== undefined) return found;
      const shorter = cut.replace(/(\.[^.[]*|\[[^[]*\])$/, '');
      if (shorter === cut) break;
      cut = shorter;
    }
    if (field.startsWith('checks[')) return field.includes('.timeout') ? 'emperor-check-timeout' : field.includes('.interval') ? 'emperor-check-interval' : undefined;
    return undefined;
  };
  return { ok: true, document: doc, optionFor };
}
