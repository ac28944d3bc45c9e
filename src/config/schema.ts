// The raw vassal document, as written by users. Every object is strict (a typo must not be
// silently ignored), and leaf checks carry their own messages so errors read like
// "stop.timeout: expected a duration like 500ms, 10s or 2m, got "ten"" instead of zod's defaults.
import os from 'node:os';
import { z } from 'zod';
import { deepFreeze } from './data.js';
import { describeValue, isPlainMapping } from './describe.js';
import { checkDuration, DURATION_EXPECTED, formatDuration } from './duration.js';
import type { BackoffSpec, CheckSpec, ProbeTarget, ReadySpec, RestartPolicy, ServiceSpec } from './spec.js';

// Frozen at runtime too: specs are built from these, so mutating them would change every vassal.
export const DEFAULTS = deepFreeze({
  shell: false,
  restart: 'always',
  backoff: { initialMs: 1_000, maxMs: 60_000, resetAfterMs: 30_000, maxRetries: 5 },
  start: { timeoutMs: 30_000, ready: { kind: 'default' } },
  /** How often a tcp/http/exec readiness probe is retried when start.ready gives no interval. */
  readyIntervalMs: 100,
  check: {
    intervalMs: 10_000,
    /** The timeout defaults to min(interval, this). */
    maxDefaultTimeoutMs: 10_000,
    successesBeforePassing: 1,
    failuresBeforeCritical: 1,
  },
  stop: { signal: 'SIGTERM', timeoutMs: 10_000, drainMs: 0 },
} as const satisfies {
  shell: boolean;
  restart: RestartPolicy;
  backoff: BackoffSpec;
  start: { timeoutMs: number; ready: ReadySpec };
  readyIntervalMs: number;
  check: { intervalMs: number; maxDefaultTimeoutMs: number; successesBeforePassing: number; failuresBeforeCritical: number };
  stop: { signal: NodeJS.Signals; timeoutMs: number; drainMs: number };
});

/** Check names appear on the command line and as metric labels, so they are kept to this alphabet. */
export const CHECK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@/+-]*$/;

export const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const satisfies readonly RestartPolicy[];

/** The document after validation; load.ts adds name, file, hash and resolves cwd. */
export interface VassalDocument {
  argv: string[];
  shell: boolean;
  /** As written (possibly relative), or undefined for "the vassal file's directory". */
  cwd: string | undefined;
  env: Record<string, string>;
  restart: RestartPolicy;
  backoff: BackoffSpec;
  start: { timeoutMs: number; ready: ReadySpec };
  checks: CheckSpec[];
  onCritical: { restartAfter: number } | null;
  stop: { signal: NodeJS.Signals; timeoutMs: number; drainMs: number };
  service: ServiceDocument | null;
  user: string | null;
  group: string | null;
}

// ---- leaves -------------------------------------------------------------------------------

type Check<T> =
  | { ok: true; value: T }
  | { ok: false; problem: string; expected: string; path?: PropertyKey[] };

const ok = <T>(value: T): Check<T> => ({ ok: true, value });
const bad = (problem: string, expected: string, path?: PropertyKey[]): Check<never> =>
  path === undefined ? { ok: false, problem, expected } : { ok: false, problem, expected, path };

/** A field validated by a plain function; its failure message becomes the issue message verbatim. */
function leaf<T>(check: (input: unknown) => Check<T>) {
  return z.unknown().transform((input, ctx): T => {
    const result = check(input);
    if (result.ok) return result.value;
    ctx.addIssue({ code: 'custom', message: result.problem, input, path: result.path ?? [], params: { expected: result.expected } });
    return z.NEVER;
  });
}

// spawn() rejects strings with NUL bytes at start time; catching them here puts the error
// where the user can fix it. (YAML "\0" and JSON "\u0000" escapes can produce them.)
const hasNul = (text: string): boolean => text.includes('\u0000');

const duration = (options: { positive?: boolean } = {}) =>
  leaf((input) => {
    const result = checkDuration(input);
    if (!result.ok) return bad(result.problem, DURATION_EXPECTED);
    if (options.positive === true && result.ms <= 0) {
      return bad(`expected a duration greater than 0, got ${describeValue(input)}`, 'a duration greater than 0');
    }
    return ok(result.ms);
  });

const ARGV_EXPECTED = 'a list of strings like ["node", "server.js"], or a string with shell: true';
const ARGV_LIST_EXPECTED = 'a list of strings like ["./check.sh", "--quick"]';

/** A non-empty list of strings whose first element (the program) is non-empty. */
function checkArgvList(input: unknown[], expected: string): Check<string[]> {
  if (input.length === 0) return bad(`expected ${expected}, got an empty list`, expected);
  const argv: string[] = [];
  for (const [index, arg] of input.entries()) {
    if (typeof arg !== 'string') {
      // YAML turns `[server, --port, 8080]` into a number; say how to fix it rather than coerce.
      const hint = typeof arg === 'number' || typeof arg === 'boolean' ? ` (quote it: "${String(arg)}")` : '';
      return bad(`expected a string, got ${describeValue(arg)}${hint}`, 'a non-empty string', [index]);
    }
    // Empty arguments are legitimate (ssh-keygen -N ""); only the program name must be non-empty.
    if (arg === '' && index === 0) return bad('expected a program name, got ""', 'a non-empty string', [index]);
    if (hasNul(arg)) return bad('the argument contains a NUL character', 'a non-empty string', [index]);
    argv.push(arg);
  }
  return ok(argv);
}

/** Shape only; whether a string is allowed depends on `shell`, checked on the whole document. */
const command = leaf<string | string[]>((input) => {
  if (input === undefined) return bad(`required field is missing (expected ${ARGV_EXPECTED})`, ARGV_EXPECTED);
  if (typeof input === 'string') {
    if (input.trim() === '') return bad(`expected a non-empty command, got ${describeValue(input)}`, ARGV_EXPECTED);
    if (hasNul(input)) return bad('the command contains a NUL character', ARGV_EXPECTED);
    return ok(input);
  }
  if (!Array.isArray(input)) return bad(`expected ${ARGV_EXPECTED}, got ${describeValue(input)}`, ARGV_EXPECTED);
  return checkArgvList(input, ARGV_EXPECTED);
});

/** exec probes: the same rules as `command`, but always a list (there is no shell: true for them). */
const execArgv = leaf<string[]>((input) => {
  if (typeof input === 'string') {
    return bad(
      `expected ${ARGV_LIST_EXPECTED}, got a string; write it as a list, or as ["/bin/sh", "-c", ${describeValue(input)}] for a shell command`,
      ARGV_LIST_EXPECTED,
    );
  }
  if (!Array.isArray(input)) return bad(`expected ${ARGV_LIST_EXPECTED}, got ${describeValue(input)}`, ARGV_LIST_EXPECTED);
  return checkArgvList(input, ARGV_LIST_EXPECTED);
});

const TCP_EXPECTED = 'host:port, like "127.0.0.1:8080", "localhost:8080" or "[::1]:8080"';
// Letters, digits, ".", "-", "_" (hostnames and IPv4), or ":" and hex inside brackets (IPv6, with an optional %zone).
const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/;
const IPV6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/;

const tcpTarget = leaf<ProbeTarget>((input) => {
  if (typeof input !== 'string') return bad(`expected ${TCP_EXPECTED}, got ${describeValue(input)}`, TCP_EXPECTED);
  const text = input.trim();
  const fail = (hint = ''): Check<never> => bad(`expected ${TCP_EXPECTED}, got ${describeValue(input)}${hint}`, TCP_EXPECTED);
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return fail();
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!IPV6.test(host) || !host.includes(':')) return fail();
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return fail(' (the port is missing)');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return fail(' (put IPv6 addresses in brackets: "[::1]:8080")');
    if (host === '') return fail(' (the host is missing)');
    if (!HOSTNAME.test(host)) return fail();
  }
  if (!/^\d{1,5}$/.test(portText)) return fail(' (the port must be a number)');
  const port = Number(portText);
  if (port < 1 || port > 65_535) return fail(' (the port must be between 1 and 65535)');
  return ok({ kind: 'tcp', host, port });
});

const HTTP_EXPECTED = 'an http:// or https:// URL, like "http://127.0.0.1:8080/health"';

const httpTarget = leaf<ProbeTarget>((input) => {
  const fail = (hint = ''): Check<never> => bad(`expected ${HTTP_EXPECTED}, got ${describeValue(input)}${hint}`, HTTP_EXPECTED);
  if (typeof input !== 'string') return fail();
  let url: URL;
  try {
    url = new URL(input.trim());
  } catch {
    return fail();
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return fail(` (the scheme is ${url.protocol.slice(0, -1)})`);
  if (url.hostname === '') return fail(' (the host is missing)');
  // Kept as written (trimmed): the URL is also the default check name and appears in outputs.
  return ok({ kind: 'http', url: input.trim() });
});

const execTarget = execArgv.transform((argv): ProbeTarget => ({ kind: 'exec', argv }));

const notifyFlag = leaf<true>((input) => {
  const expected = 'true';
  if (input === true) return ok(true);
  if (input === false) return bad('expected true, got false; for another readiness gate use tcp, http, exec or delay instead of notify', expected);
  return bad(`expected true, got ${describeValue(input)}`, expected);
});

const cwd = leaf((input) => {
  const expected = 'a directory path';
  if (typeof input !== 'string' || input.trim() === '') return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  if (hasNul(input)) return bad('the path contains a NUL character', expected);
  return ok(input);
});

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const env = leaf((input) => {
  const mappingExpected = 'a mapping of variable names to values';
  if (!isPlainMapping(input)) return bad(`expected ${mappingExpected}, got ${describeValue(input)}`, mappingExpected);
  const valueExpected = 'a string, number or boolean';
  const entries: Array<[string, string]> = [];
  for (const [key, value] of Object.entries(input)) {
    if (!ENV_NAME.test(key)) {
      return bad(
        'invalid variable name: use letters, digits and "_", not starting with a digit',
        'a name matching ^[A-Za-z_][A-Za-z0-9_]*$',
        [key],
      );
    }
    let text: string;
    if (typeof value === 'string') text = value;
    else if (typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) text = String(value);
    else return bad(`expected ${valueExpected}, got ${describeValue(value)}`, valueExpected, [key]);
    if (hasNul(text)) return bad('the value contains a NUL character', valueExpected, [key]);
    entries.push([key, text]);
  }
  // fromEntries defines own properties, so a variable called __proto__ stays a variable.
  return ok(Object.fromEntries(entries));
});

const atLeastOne = leaf((input) => {
  const expected = 'a whole number of at least 1';
  if (input === undefined) return bad(`required field is missing (expected ${expected})`, expected);
  if (typeof input === 'number' && Number.isSafeInteger(input) && input >= 1) return ok(input);
  return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
});

const SIGNAL_EXPECTED = 'a signal name like SIGTERM, SIGINT or HUP';

// SIGSTOP suspends instead of ending the process, so the stop timeout would always expire.
const UNUSABLE_SIGNALS: ReadonlyMap<string, string> = new Map([
  ['SIGSTOP', 'SIGSTOP cannot be used to stop a vassal: it suspends the process instead of ending it'],
]);

const signal = leaf((input) => {
  if (typeof input !== 'string') return bad(`expected ${SIGNAL_EXPECTED}, got ${describeValue(input)}`, SIGNAL_EXPECTED);
  const upper = input.trim().toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  if (!Object.hasOwn(os.constants.signals, name)) {
    return bad(`expected ${SIGNAL_EXPECTED}, got ${describeValue(input)}`, SIGNAL_EXPECTED);
  }
  const unusable = UNUSABLE_SIGNALS.get(name);
  if (unusable !== undefined) return bad(unusable, SIGNAL_EXPECTED);
  // Every key of os.constants.signals is a NodeJS.Signals member; the hasOwn check above is the proof.
  return ok(name as NodeJS.Signals);
});

// ---- objects ------------------------------------------------------------------------------

const backoffShape = {
  initial: duration().optional(),
  max: duration().optional(),
  reset_after: duration().optional(),
  max_retries: atLeastOne.optional(),
};

const backoff = z
  .strictObject(backoffShape)
  .optional()
  .transform((raw, ctx): BackoffSpec => {
    const spec: BackoffSpec = {
      initialMs: raw?.initial ?? DEFAULTS.backoff.initialMs,
      maxMs: raw?.max ?? DEFAULTS.backoff.maxMs,
      resetAfterMs: raw?.reset_after ?? DEFAULTS.backoff.resetAfterMs,
      maxRetries: raw?.max_retries ?? DEFAULTS.backoff.maxRetries,
    };
    if (spec.maxMs < spec.initialMs) {
      // Blame the field the user actually wrote: with max left at its default, initial is the odd one.
      const message =
        raw?.max === undefined
          ? `expected at most backoff.max (${formatDuration(spec.maxMs)} by default), got ${formatDuration(spec.initialMs)}; lower it or raise backoff.max`
          : `expected a duration of at least backoff.initial (${formatDuration(spec.initialMs)}), got ${formatDuration(spec.maxMs)}`;
      ctx.addIssue({
        code: 'custom',
        message,
        path: [raw?.max === undefined ? 'initial' : 'max'],
        params: { expected: 'backoff.max at least as long as backoff.initial' },
      });
    }
    return spec;
  });

// ---- readiness ----------------------------------------------------------------------------

const readyShape = {
  tcp: tcpTarget.optional(),
  http: httpTarget.optional(),
  exec: execTarget.optional(),
  notify: notifyFlag.optional(),
  delay: duration().optional(),
  interval: duration({ positive: true }).optional(),
};

const READY_KINDS = ['tcp', 'http', 'exec', 'notify', 'delay'] as const;
const PROBE_KINDS = ['tcp', 'http', 'exec'] as const;

/** "a, b, c or d" */
const orList = (items: readonly string[]): string =>
  items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1] ?? ''}`;

const ready = z
  .strictObject(readyShape)
  .optional()
  .transform((raw, ctx): ReadySpec => {
    if (raw === undefined) return DEFAULTS.start.ready;
    // zod runs this even after an unknown key; one report about the typo is enough.
    if (ctx.issues.length > 0) return z.NEVER;
    const expected = `exactly one of ${orList(READY_KINDS)}`;
    const given = READY_KINDS.filter((kind) => raw[kind] !== undefined);
    const [kind, second] = given;
    if (kind === undefined || second !== undefined) {
      ctx.addIssue({
        code: 'custom',
        // With two kinds, point at the second: the first one is the likelier intent.
        path: second === undefined ? [] : [second],
        message:
          second === undefined
            ? `expected ${expected}, got ${raw.interval === undefined ? 'an empty mapping' : 'only interval'}`
            : `expected ${expected}, got both ${kind} and ${second}; keep one`,
        params: { expected },
      });
      return z.NEVER;
    }
    if (kind === 'notify' || kind === 'delay') {
      if (raw.interval !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['interval'],
          message: `interval only applies to ${orList(PROBE_KINDS)} probes, not to ${kind}; remove it`,
          params: { expected: `no interval with ${kind}` },
        });
        return z.NEVER;
      }
      return kind === 'notify' ? { kind: 'notify' } : { kind: 'delay', ms: raw.delay ?? 0 };
    }
    const probe = raw[kind];
    if (probe === undefined) return z.NEVER; // unreachable: `kind` was picked because it is set
    return { kind: 'probe', probe, intervalMs: raw.interval ?? DEFAULTS.readyIntervalMs };
  });

const startShape = { timeout: duration({ positive: true }).optional(), ready };

const start = z
  .strictObject(startShape)
  .optional()
  .transform((raw) => ({ timeoutMs: raw?.timeout ?? DEFAULTS.start.timeoutMs, ready: raw?.ready ?? DEFAULTS.start.ready }));

// ---- checks -------------------------------------------------------------------------------

const CHECK_NAME_EXPECTED = 'a name of letters, digits and _ . : @ / + -, starting with a letter or a digit';

const checkName = leaf<string>((input) => {
  if (typeof input !== 'string') return bad(`expected ${CHECK_NAME_EXPECTED}, got ${describeValue(input)}`, CHECK_NAME_EXPECTED);
  if (!CHECK_NAME.test(input)) {
    return bad(`expected ${CHECK_NAME_EXPECTED}, got ${describeValue(input)} (it is used on the command line and as a metric label)`, CHECK_NAME_EXPECTED);
  }
  return ok(input);
});

/** Every run of characters a check name cannot contain becomes one "_". */
const sanitizeName = (text: string): string => text.replace(/[^A-Za-z0-9_.:@/+-]+/g, '_');

/** "<kind>:<target>", fitted to CHECK_NAME; used when a check has no name. */
export function defaultCheckName(probe: CheckSpec['probe']): string {
  switch (probe.kind) {
    case 'tcp':
      return sanitizeName(`tcp:${probe.host.includes(':') ? `[${probe.host}]` : probe.host}:${probe.port}`);
    case 'http':
      return sanitizeName(`http:${probe.url}`);
    case 'exec':
      return sanitizeName(`exec:${probe.argv.join(' ')}`);
    case 'ttl':
      return 'ttl';
  }
}

const checkShape = {
  name: checkName.optional(),
  http: httpTarget.optional(),
  tcp: tcpTarget.optional(),
  exec: execTarget.optional(),
  ttl: duration({ positive: true }).optional(),
  interval: duration({ positive: true }).optional(),
  timeout: duration({ positive: true }).optional(),
  successes_before_passing: atLeastOne.optional(),
  failures_before_critical: atLeastOne.optional(),
};

const CHECK_KINDS = ['http', 'tcp', 'exec', 'ttl'] as const;
/** Settings of periodic checks; a TTL check is pushed by the app, so none of them apply. */
const PERIODIC_ONLY = ['interval', 'timeout', 'successes_before_passing', 'failures_before_critical'] as const;

const check = z.strictObject(checkShape).transform((raw, ctx): CheckSpec => {
  if (ctx.issues.length > 0) return z.NEVER;
  const expected = `exactly one of ${orList(CHECK_KINDS)}`;
  const given = CHECK_KINDS.filter((kind) => raw[kind] !== undefined);
  const [kind, second] = given;
  if (kind === undefined || second !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: second === undefined ? [] : [second],
      message: second === undefined ? `expected ${expected}, got none of them` : `expected ${expected}, got both ${kind} and ${second}; keep one`,
      params: { expected },
    });
    return z.NEVER;
  }
  if (kind === 'ttl') {
    const ttlMs = raw.ttl ?? 0;
    const misplaced = PERIODIC_ONLY.find((field) => raw[field] !== undefined);
    if (misplaced !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [misplaced],
        message: `not allowed with ttl: a TTL check is not run by the emperor, the app reports its status; remove ${misplaced}`,
        params: { expected: 'no interval, timeout or thresholds with ttl' },
      });
      return z.NEVER;
    }
    const probe = { kind: 'ttl', ttlMs } as const;
    return {
      name: raw.name ?? defaultCheckName(probe),
      probe,
      // Not used for ttl; set to the TTL so that "how often is this expected to report" has an answer.
      intervalMs: ttlMs,
      timeoutMs: ttlMs,
      successesBeforePassing: 1,
      failuresBeforeCritical: 1,
    };
  }
  const probe = raw[kind];
  if (probe === undefined) return z.NEVER; // unreachable: `kind` was picked because it is set
  const intervalMs = raw.interval ?? DEFAULTS.check.intervalMs;
  const timeoutMs = raw.timeout ?? Math.min(intervalMs, DEFAULTS.check.maxDefaultTimeoutMs);
  if (timeoutMs > intervalMs) {
    ctx.addIssue({
      code: 'custom',
      path: ['timeout'],
      message:
        raw.interval === undefined
          ? `expected at most interval (${formatDuration(intervalMs)} by default), got ${formatDuration(timeoutMs)}; lower it or raise interval`
          : `expected at most interval (${formatDuration(intervalMs)}), got ${formatDuration(timeoutMs)}`,
      params: { expected: 'a timeout no longer than the interval' },
    });
    return z.NEVER;
  }
  return {
    name: raw.name ?? defaultCheckName(probe),
    probe,
    intervalMs,
    timeoutMs,
    successesBeforePassing: raw.successes_before_passing ?? DEFAULTS.check.successesBeforePassing,
    failuresBeforeCritical: raw.failures_before_critical ?? DEFAULTS.check.failuresBeforeCritical,
  };
});

const checks = z
  .array(check)
  .optional()
  .transform((list, ctx): CheckSpec[] => {
    if (ctx.issues.length > 0) return z.NEVER;
    const seen = new Map<string, number>();
    for (const [index, spec] of (list ?? []).entries()) {
      const first = seen.get(spec.name);
      if (first === undefined) {
        seen.set(spec.name, index);
        continue;
      }
      ctx.addIssue({
        code: 'custom',
        path: [index, 'name'],
        message: `duplicate check name ${JSON.stringify(spec.name)}: checks[${first}] and checks[${index}] both use it; give them different names`,
        params: { expected: 'a name not used by another check of this vassal' },
      });
    }
    return list ?? [];
  });

const onCriticalShape = { restart_after: atLeastOne };

const onCritical = z
  .strictObject(onCriticalShape)
  .optional()
  .transform((raw) => (raw === undefined ? null : { restartAfter: raw.restart_after }));

const stopShape = { signal: signal.optional(), timeout: duration().optional(), drain: duration().optional() };

const stop = z
  .strictObject(stopShape)
  .optional()
  .transform((raw) => ({
    signal: raw?.signal ?? DEFAULTS.stop.signal,
    timeoutMs: raw?.timeout ?? DEFAULTS.stop.timeoutMs,
    drainMs: raw?.drain ?? DEFAULTS.stop.drainMs,
  }));

// ---- service ------------------------------------------------------------------------------

// Type and name become etcd key segments and Consul names: the vassal-name alphabet, so
// nothing like "/", "..", spaces or control characters can reach a key.
const KEY_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_.@-]*$/;
const KEY_SEGMENT_EXPECTED = 'letters, digits and _ . @ -, starting with a letter or digit (at most 128)';
const keySegment = leaf<string>((input) => {
  if (typeof input !== 'string') return bad(`expected ${KEY_SEGMENT_EXPECTED}, got ${describeValue(input)}`, KEY_SEGMENT_EXPECTED);
  if (input.length === 0 || input.length > 128 || !KEY_SEGMENT.test(input) || input.includes('..')) {
    return bad(`expected ${KEY_SEGMENT_EXPECTED} (it becomes a registry key), got ${describeValue(input)}`, KEY_SEGMENT_EXPECTED);
  }
  return ok(input);
});

// Consul: service IDs are path segments of the agent API.
const SERVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const serviceId = leaf<string>((input) => {
  const expected = 'letters, digits and _ . -, starting with a letter or digit (at most 128)';
  if (typeof input !== 'string' || !SERVICE_ID.test(input)) return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  return ok(input);
});

const portNumber = leaf<number>((input) => {
  const expected = 'a port number from 1 to 65535';
  if (typeof input !== 'number' || !Number.isInteger(input) || input < 1 || input > 65_535) return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  return ok(input);
});

const address = leaf<string>((input) => {
  const expected = 'a host name or IP address like 127.0.0.1';
  if (typeof input !== 'string' || input.trim() === '' || /[\s/]/.test(input) || hasNul(input)) return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  return ok(input);
});

const tags = leaf<string[]>((input) => {
  const expected = 'a list of non-empty strings without spaces';
  if (!Array.isArray(input)) return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  for (const [i, t] of input.entries()) {
    if (typeof t !== 'string' || t === '' || /\s/.test(t) || [...t].some((ch) => ch.charCodeAt(0) < 32)) return bad(`expected a non-empty tag without spaces, got ${describeValue(t)}`, expected, [i]);
  }
  return ok(input as string[]);
});

// Consul's limits on service meta: keys of letters, digits, _ and -, at most 128, not starting
// with "consul-" (reserved); values at most 512 characters.
const META_KEY = /^[A-Za-z0-9_-]{1,128}$/;
const meta = leaf<Record<string, string>>((input) => {
  const expected = 'a mapping of keys (letters, digits, _ -; at most 128) to strings of at most 512 characters';
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(input as Record<string, unknown>)) {
    if (!META_KEY.test(k) || k.toLowerCase().startsWith('consul-')) return bad(`expected a key of letters, digits, _ and - not starting with "consul-", got ${describeValue(k)}`, expected, [k]);
    if (k.startsWith('emperor_')) return bad(`keys starting with "emperor_" are reserved for the emperor's own markers`, expected, [k]);
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') return bad(`expected a string, got ${describeValue(v)}`, expected, [k]);
    const text = String(v);
    if (text.length > 512) return bad('expected at most 512 characters', expected, [k]);
    out[k] = text;
  }
  return ok(out);
});

const consulShape = { native_checks: z.boolean().optional() };
const consul = z.strictObject(consulShape).optional();

const serviceShape = {
  name: keySegment.optional(),
  type: keySegment.optional(),
  id: serviceId.optional(),
  address: address.optional(),
  port: portNumber.optional(),
  location: tcpTarget.optional(),
  tags: tags.optional(),
  meta: meta.optional(),
  deregister_when_critical: z.boolean().optional(),
  consul,
};

/** Name is filled in by load.ts (it defaults to the vassal name, known only there). */
export type ServiceDocument = Omit<ServiceSpec, 'name'> & { name: string | undefined };

const service = z
  .strictObject(serviceShape)
  .optional()
  .transform((raw, ctx): ServiceDocument | null => {
    if (raw === undefined) return null;
    let addr = raw.address ?? '127.0.0.1';
    let port = raw.port ?? null;
    if (raw.location) {
      if (raw.address !== undefined || raw.port !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['location'], message: 'give either location or address/port, not both', params: { expected: 'location "host:port", or address and port' } });
        return null;
      }
      if (raw.location.kind === 'tcp') {
        addr = raw.location.host;
        port = raw.location.port;
      }
    }
    if (port === null) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: 'a service needs a port (with an optional address) or a location "host:port"', params: { expected: 'a port number, or location "host:port"' } });
      return null;
    }
    const host = addr.includes(':') ? `[${addr}]` : addr;
    return {
      name: raw.name,
      type: raw.type ?? 'default',
      id: raw.id ?? null,
      address: addr,
      port,
      location: `${host}:${port}`,
      tags: raw.tags ?? [],
      meta: raw.meta ?? {},
      deregisterWhenCritical: raw.deregister_when_critical ?? false,
      consulNativeChecks: raw.consul?.native_checks ?? false,
    };
  });

// A user or group to run as: a name as in /etc/passwd, or a numeric id. Only root can switch.
const ACCOUNT = /^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10})$/;
const account = leaf<string>((input) => {
  const expected = 'a user or group name, or a numeric id';
  const text = typeof input === 'number' && Number.isInteger(input) && input >= 0 ? String(input) : input;
  if (typeof text !== 'string' || !ACCOUNT.test(text)) return bad(`expected ${expected}, got ${describeValue(input)}`, expected);
  return ok(text);
});

// Key order here is the order listed in "unknown field (allowed: ...)" messages.
const vassalShape = {
  command,
  shell: z.boolean().optional(),
  cwd: cwd.optional(),
  env: env.optional(),
  restart: z.enum(RESTART_POLICIES).optional(),
  backoff,
  start,
  stop,
  checks,
  on_critical: onCritical,
  service,
  user: account.optional(),
  group: account.optional(),
};

/**
 * Allowed keys per object path, for unknown-field messages. Keys join names with "." and write
 * list positions as "[]", so every item of `checks` shares "checks[]" (see fieldsKey in issues.ts).
 */
export const ALLOWED_FIELDS: Readonly<Record<string, readonly string[]>> = {
  '': Object.keys(vassalShape),
  backoff: Object.keys(backoffShape),
  start: Object.keys(startShape),
  'start.ready': Object.keys(readyShape),
  stop: Object.keys(stopShape),
  'checks[]': Object.keys(checkShape),
  on_critical: Object.keys(onCriticalShape),
  service: Object.keys(serviceShape),
  'service.consul': Object.keys(consulShape),
};

export const vassalSchema = z.strictObject(vassalShape).transform((raw, ctx): VassalDocument => {
  const shell = raw.shell ?? DEFAULTS.shell;
  let argv: string[] = [];
  if (typeof raw.command === 'string') {
    if (shell) argv = ['/bin/sh', '-c', raw.command];
    else {
      ctx.addIssue({
        code: 'custom',
        path: ['command'],
        message: `got a string, but without shell: true the command must be a list like ["node", "server.js"]; give a list, or set shell: true to run it with /bin/sh -c`,
        params: { expected: ARGV_EXPECTED },
      });
    }
  } else if (shell) {
    ctx.addIssue({
      code: 'custom',
      path: ['command'],
      message: 'expected a string when shell: true, got a list; write the command line as one string, or remove shell: true',
      params: { expected: 'a string (the command line for /bin/sh -c)' },
    });
  } else {
    argv = raw.command;
  }
  return {
    argv,
    shell,
    cwd: raw.cwd,
    env: raw.env ?? {},
    restart: raw.restart ?? DEFAULTS.restart,
    backoff: raw.backoff,
    start: raw.start,
    checks: raw.checks,
    onCritical: raw.on_critical,
    stop: raw.stop,
    service: raw.service,
    user: raw.user ?? null,
    group: raw.group ?? null,
  };
});
