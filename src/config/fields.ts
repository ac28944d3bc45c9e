// The leaf fields of a vassal document, as zod schemas. zod checks the type; the few rules zod
// has no word for (durations, host:port, URLs, signal names) are refinements on top. Each field
// words its own failure through `expecting`, so a message reads
// "expected a duration like 500ms, 10s or 2m, got "ten"" rather than zod's default, and the
// output types are inferred from these schemas: there is no second description to keep in step.
import os from 'node:os';
import { z } from 'zod';
import { describeValue, expectedGot, isPlainMapping } from './describe.js';
import { checkDuration, DURATION_EXPECTED, formatDuration } from './duration.js';
import { parseSize, SIZE_EXPECTED } from './size.js';

/** A hint appended to "got <value>", e.g. ` (quote it: "8080")`; empty when none applies. */
type Hint = (input: unknown) => string;

/** zod's `error` option for a field that accepts `what`: every failure of it is worded alike. */
export const expecting = (what: string, hint?: Hint) => ({
  error: (issue: { input?: unknown }) => expectedGot(what, issue.input, hint),
});

/** A failed refinement inside a transform, worded by the caller; `path` names the field, relative to the value. */
export function refuse(ctx: z.core.$RefinementCtx, message: string, path: PropertyKey[] = []): typeof z.NEVER {
  ctx.addIssue({ code: 'custom', message, path });
  return z.NEVER;
}

// spawn() rejects strings with NUL bytes at start time; catching them here puts the error
// where the user can fix it. (YAML "\0" and JSON "\u0000" escapes can produce them.)
const hasNul = (text: string): boolean => text.includes('\u0000');

// ---- durations ----------------------------------------------------------------------------

/** "500ms", "10s", "2m", or a bare number of seconds (30, "30") -> milliseconds. */
export const duration = z.union([z.string(), z.number()], expecting(DURATION_EXPECTED)).transform((value, ctx) => {
  const result = checkDuration(value);
  return result.ok ? result.ms : refuse(ctx, result.problem);
});

/** A duration that must be longer than 0 (timeouts, intervals, TTLs). */
export const positiveDuration = duration.refine((ms) => ms > 0, {
  error: (issue) => `expected a duration greater than 0, got ${formatDuration(Number(issue.input))}`,
});

// ---- commands -----------------------------------------------------------------------------

const ARGV_EXPECTED = 'a list of strings like ["node", "server.js"], or a string with shell: true';
const ARGV_LIST_EXPECTED = 'a list of strings like ["./check.sh", "--quick"]';

// YAML turns `[server, --port, 8080]` into a number; say how to fix it rather than coerce.
const quoteHint: Hint = (input) => (typeof input === 'number' || typeof input === 'boolean' ? ` (quote it: "${String(input)}")` : '');

// Empty arguments are legitimate (ssh-keygen -N ""); only the program name must be non-empty.
const argument = z.string(expecting('a string', quoteHint)).refine((arg) => !hasNul(arg), 'the argument contains a NUL character');

/** A non-empty list of strings whose first element (the program) is non-empty. */
const argvList = (listError: ReturnType<typeof expecting>) =>
  z
    .array(argument, listError)
    .min(1, listError)
    .refine((argv) => argv[0] !== '', { path: [0], error: 'expected a program name, got ""' });

/** The command line for `shell: true`. Whether a string is allowed depends on `shell` (checked on the whole document). */
const commandLine = z
  .string(expecting(ARGV_EXPECTED))
  .refine((text) => text.trim() !== '', expecting('a non-empty command'))
  .refine((text) => !hasNul(text), 'the command contains a NUL character');

export const command = z.union([commandLine, argvList(expecting(ARGV_EXPECTED))], expecting(ARGV_EXPECTED));

/** exec probes: the same rules as `command`, but always a list (there is no shell: true for them). */
const execArgv = argvList({
  error: (issue) =>
    typeof issue.input === 'string'
      ? `expected ${ARGV_LIST_EXPECTED}, got a string; write it as a list, or as ["/bin/sh", "-c", ${describeValue(issue.input)}] for a shell command`
      : expectedGot(ARGV_LIST_EXPECTED, issue.input),
});

// ---- probe targets ------------------------------------------------------------------------

const TCP_EXPECTED = 'host:port, like "127.0.0.1:8080", "localhost:8080" or "[::1]:8080"';
// Letters, digits, ".", "-", "_" (hostnames and IPv4), or ":" and hex inside brackets (IPv6, with an optional %zone).
const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/;
const IPV6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/;

/** host and port of "host:port", or the hint that says what is wrong. */
function splitHostPort(text: string): { host: string; port: number } | { hint: string } {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return { hint: '' };
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!IPV6.test(host) || !host.includes(':')) return { hint: '' };
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return { hint: ' (the port is missing)' };
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return { hint: ' (put IPv6 addresses in brackets: "[::1]:8080")' };
    if (host === '') return { hint: ' (the host is missing)' };
    if (!HOSTNAME.test(host)) return { hint: '' };
  }
  if (!/^\d{1,5}$/.test(portText)) return { hint: ' (the port must be a number)' };
  const port = Number(portText);
  if (port < 1 || port > 65_535) return { hint: ' (the port must be between 1 and 65535)' };
  return { host, port };
}

export const tcpTarget = z.string(expecting(TCP_EXPECTED)).transform((input, ctx) => {
  const split = splitHostPort(input.trim());
  if ('hint' in split) return refuse(ctx, expectedGot(TCP_EXPECTED, input, () => split.hint));
  return { kind: 'tcp', host: split.host, port: split.port } as const;
});

const HTTP_EXPECTED = 'an http:// or https:// URL, like "http://127.0.0.1:8080/health"';

export const httpTarget = z.string(expecting(HTTP_EXPECTED)).transform((input, ctx) => {
  const fail = (hint = '') => refuse(ctx, expectedGot(HTTP_EXPECTED, input, () => hint));
  const url = URL.parse(input.trim());
  if (url === null) return fail();
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return fail(` (the scheme is ${url.protocol.slice(0, -1)})`);
  if (url.hostname === '') return fail(' (the host is missing)');
  // Kept as written (trimmed): the URL is also the default check name and appears in outputs.
  return { kind: 'http', url: input.trim() } as const;
});

export const execTarget = execArgv.transform((argv) => ({ kind: 'exec', argv }) as const);

export const notifyFlag = z.literal(true, {
  error: (issue) =>
    issue.input === false
      ? 'expected true, got false; for another readiness gate use tcp, http, exec or delay instead of notify'
      : expectedGot('true', issue.input),
});

export const emperorFlag = z.literal(true, {
  error: (issue) =>
    issue.input === false
      ? 'expected true, got false; for another readiness gate use tcp, http, exec, notify or delay instead of emperor'
      : expectedGot('true', issue.input),
});

// ---- the process's environment -------------------------------------------------------------

export const cwd = z
  .string(expecting('a directory path'))
  .refine((text) => text.trim() !== '', expecting('a directory path'))
  .refine((text) => !hasNul(text), 'the path contains a NUL character');

/**
 * A mapping of names to strings, each key and value checked by the caller. Built with
 * Object.fromEntries, which defines own properties: a key called __proto__ stays a key
 * (z.record would drop it).
 */
function stringMap(what: string, entry: (key: string, value: unknown) => { value: string } | { problem: string }) {
  return z.custom<Record<string, unknown>>(isPlainMapping, expecting(what)).transform((input, ctx) => {
    const entries: Array<[string, string]> = [];
    for (const [key, value] of Object.entries(input)) {
      const checked = entry(key, value);
      if ('problem' in checked) return refuse(ctx, checked.problem, [key]);
      entries.push([key, checked.value]);
    }
    return Object.fromEntries(entries);
  });
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const env = stringMap('a mapping of variable names to values', (key, value) => {
  if (!ENV_NAME.test(key)) return { problem: 'invalid variable name: use letters, digits and "_", not starting with a digit' };
  const valueExpected = 'a string, number or boolean';
  let text: string;
  if (typeof value === 'string') text = value;
  else if (typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) text = String(value);
  else return { problem: expectedGot(valueExpected, value) };
  if (hasNul(text)) return { problem: 'the value contains a NUL character' };
  return { value: text };
});

// A user or group to run as: a name as in /etc/passwd, or a numeric id. Only root can switch.
const ACCOUNT = /^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10})$/;
const ACCOUNT_EXPECTED = 'a user or group name, or a numeric id';

export const account = z
  .union([z.string(), z.int().min(0, expecting(ACCOUNT_EXPECTED))], expecting(ACCOUNT_EXPECTED))
  .transform(String)
  .refine((text) => ACCOUNT.test(text), expecting(ACCOUNT_EXPECTED));

// ---- numbers, names and signals -------------------------------------------------------------

const AT_LEAST_ONE = 'a whole number of at least 1';
export const atLeastOne = z.int(expecting(AT_LEAST_ONE)).min(1, expecting(AT_LEAST_ONE));

/** Check names appear on the command line and as metric labels, so they are kept to this alphabet. */
export const CHECK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@/+-]*$/;
const CHECK_NAME_EXPECTED = 'a name of letters, digits and _ . : @ / + -, starting with a letter or a digit';

export const checkName = z
  .string(expecting(CHECK_NAME_EXPECTED))
  .regex(CHECK_NAME, expecting(CHECK_NAME_EXPECTED, () => ' (it is used on the command line and as a metric label)'));

const SIGNAL_EXPECTED = 'a signal name like SIGTERM, SIGINT or HUP';

// SIGSTOP suspends instead of ending the process, so the stop timeout would always expire.
const UNUSABLE_SIGNALS: ReadonlyMap<string, string> = new Map([
  ['SIGSTOP', 'SIGSTOP cannot be used to stop a vassal: it suspends the process instead of ending it'],
]);

export const signal = z.string(expecting(SIGNAL_EXPECTED)).transform((input, ctx): NodeJS.Signals => {
  const upper = input.trim().toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  if (!Object.hasOwn(os.constants.signals, name)) return refuse(ctx, expectedGot(SIGNAL_EXPECTED, input));
  const unusable = UNUSABLE_SIGNALS.get(name);
  if (unusable !== undefined) return refuse(ctx, unusable);
  // Every key of os.constants.signals is a NodeJS.Signals member; the hasOwn check above is the proof.
  return name as NodeJS.Signals;
});

// ---- service registration ------------------------------------------------------------------

// Type and name become etcd key segments and Consul names: the vassal-name alphabet, so
// nothing like "/", "..", spaces or control characters can reach a key.
const KEY_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/;
const KEY_SEGMENT_EXPECTED = 'letters, digits and _ . @ -, starting with a letter or digit (at most 128)';

export const keySegment = z
  .string(expecting(KEY_SEGMENT_EXPECTED))
  .refine((text) => KEY_SEGMENT.test(text) && !text.includes('..'), expecting(`${KEY_SEGMENT_EXPECTED} (it becomes a registry key)`));

// Consul: service IDs are path segments of the agent API.
const SERVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const SERVICE_ID_EXPECTED = 'letters, digits and _ . -, starting with a letter or digit (at most 128)';
export const serviceId = z.string(expecting(SERVICE_ID_EXPECTED)).regex(SERVICE_ID, expecting(SERVICE_ID_EXPECTED));

const PORT_EXPECTED = 'a port number from 1 to 65535';
export const portNumber = z.int(expecting(PORT_EXPECTED)).min(1, expecting(PORT_EXPECTED)).max(65_535, expecting(PORT_EXPECTED));

const ADDRESS_EXPECTED = 'a host name or IP address like 127.0.0.1';
export const address = z
  .string(expecting(ADDRESS_EXPECTED))
  .refine((text) => text.trim() !== '' && !/[\s/]/.test(text) && !hasNul(text), expecting(ADDRESS_EXPECTED));

const TAG_EXPECTED = 'a non-empty tag without spaces';
const tag = z
  .string(expecting(TAG_EXPECTED))
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  .refine((text) => text !== '' && !/[\s\u0000-\u001f]/.test(text), expecting(TAG_EXPECTED));
export const tags = z.array(tag, expecting('a list of non-empty strings without spaces'));

// Consul's limits on service meta: keys of letters, digits, _ and -, at most 128, not starting
// with "consul-" (reserved); values at most 512 characters.
const META_KEY = /^[A-Za-z0-9_-]{1,128}$/;

export const meta = stringMap('a mapping of keys (letters, digits, _ -; at most 128) to strings of at most 512 characters', (key, value) => {
  if (!META_KEY.test(key) || key.toLowerCase().startsWith('consul-')) {
    return { problem: `expected a key of letters, digits, _ and - not starting with "consul-", got ${describeValue(key)}` };
  }
  if (key.startsWith('emperor_')) return { problem: `keys starting with "emperor_" are reserved for the emperor's own markers` };
  if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') return { problem: expectedGot('a string', value) };
  const text = String(value);
  return text.length > 512 ? { problem: 'expected at most 512 characters' } : { value: text };
});

// ---- log rotation -------------------------------------------------------------------------

/** Smallest max_size: rotating every few hundred bytes is a typo, not a policy. */
const MIN_LOG_SIZE = 1024;
const LOG_SIZE_EXPECTED = `${SIZE_EXPECTED}, at least 1K, or 0 to never rotate`;

/** "10M", "512K", a number of bytes -> bytes; 0 = never rotate. */
export const logSize = z.union([z.string(), z.number()], expecting(LOG_SIZE_EXPECTED)).transform((input, ctx) => {
  const bytes = parseSize(input);
  if (bytes === undefined || (bytes !== 0 && bytes < MIN_LOG_SIZE)) return refuse(ctx, expectedGot(LOG_SIZE_EXPECTED, input));
  return bytes;
});

const MAX_LOG_KEEP = 100;
const LOG_KEEP_EXPECTED = `a whole number from 0 to ${MAX_LOG_KEEP}`;
export const logKeep = z.int(expecting(LOG_KEEP_EXPECTED)).min(0, expecting(LOG_KEEP_EXPECTED)).max(MAX_LOG_KEEP, expecting(LOG_KEEP_EXPECTED));

// ---- resource limits ----------------------------------------------------------------------

/** Smallest limits.memory: below this not even a shell starts, so it is a typo (256 for 256M). */
const MIN_MEMORY = 1024 * 1024;
const MEMORY_EXPECTED = `${SIZE_EXPECTED}, at least 1M`;

/** "256M", "1G", a number of bytes -> bytes. */
export const memoryLimit = z.union([z.string(), z.number()], expecting(MEMORY_EXPECTED)).transform((input, ctx) => {
  const bytes = parseSize(input);
  if (bytes === undefined || bytes < MIN_MEMORY) return refuse(ctx, expectedGot(MEMORY_EXPECTED, input));
  return bytes;
});

const wholeBetween = (min: number, max: number, what: string) => {
  const expected = `a whole number of ${what} from ${min} to ${max}`;
  return z.int(expecting(expected)).min(min, expecting(expected)).max(max, expecting(expected));
};

// pids.max counts threads too: a Node app alone has about a dozen.
export const pidsLimit = wholeBetween(1, 4_194_304, 'processes and threads');
export const cpuWeight = wholeBetween(1, 10_000, 'shares (100 = default)');
// Linux refuses more than fs.nr_open (1048576 by default).
export const openFiles = wholeBetween(16, 1_048_576, 'file descriptors');
