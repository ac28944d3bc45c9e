// The raw vassal document, as written by users. Every object is strict (a typo must not be
// silently ignored), and leaf checks carry their own messages so errors read like
// "stop.timeout: expected a duration like 500ms, 10s or 2m, got "ten"" instead of zod's defaults.
import os from 'node:os';
import { z } from 'zod';
import { deepFreeze } from './data.js';
import { describeValue, isPlainMapping } from './describe.js';
import { checkDuration, DURATION_EXPECTED, formatDuration } from './duration.js';
import type { BackoffSpec, RestartPolicy } from './spec.js';

// Frozen at runtime too: specs are built from these, so mutating them would change every vassal.
export const DEFAULTS = deepFreeze({
  shell: false,
  restart: 'always',
  backoff: { initialMs: 1_000, maxMs: 60_000, resetAfterMs: 30_000, maxRetries: 5 },
  start: { timeoutMs: 30_000 },
  stop: { signal: 'SIGTERM', timeoutMs: 10_000 },
} as const satisfies {
  shell: boolean;
  restart: RestartPolicy;
  backoff: BackoffSpec;
  start: { timeoutMs: number };
  stop: { signal: NodeJS.Signals; timeoutMs: number };
});

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
  start: { timeoutMs: number };
  stop: { signal: NodeJS.Signals; timeoutMs: number };
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

/** Shape only; whether a string is allowed depends on `shell`, checked on the whole document. */
const command = leaf<string | string[]>((input) => {
  if (input === undefined) return bad(`required field is missing (expected ${ARGV_EXPECTED})`, ARGV_EXPECTED);
  if (typeof input === 'string') {
    if (input.trim() === '') return bad(`expected a non-empty command, got ${describeValue(input)}`, ARGV_EXPECTED);
    if (hasNul(input)) return bad('the command contains a NUL character', ARGV_EXPECTED);
    return ok(input);
  }
  if (!Array.isArray(input)) return bad(`expected ${ARGV_EXPECTED}, got ${describeValue(input)}`, ARGV_EXPECTED);
  if (input.length === 0) return bad(`expected ${ARGV_EXPECTED}, got an empty list`, ARGV_EXPECTED);
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

const maxRetries = leaf((input) => {
  const expected = 'a whole number of at least 1';
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
  max_retries: maxRetries.optional(),
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

const startShape = { timeout: duration({ positive: true }).optional() };

const start = z
  .strictObject(startShape)
  .optional()
  .transform((raw) => ({ timeoutMs: raw?.timeout ?? DEFAULTS.start.timeoutMs }));

const stopShape = { signal: signal.optional(), timeout: duration().optional() };

const stop = z
  .strictObject(stopShape)
  .optional()
  .transform((raw) => ({
    signal: raw?.signal ?? DEFAULTS.stop.signal,
    timeoutMs: raw?.timeout ?? DEFAULTS.stop.timeoutMs,
  }));

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
};

/** Allowed keys per object path (joined with "."), for unknown-field messages. */
export const ALLOWED_FIELDS: Readonly<Record<string, readonly string[]>> = {
  '': Object.keys(vassalShape),
  backoff: Object.keys(backoffShape),
  start: Object.keys(startShape),
  stop: Object.keys(stopShape),
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
    stop: raw.stop,
  };
});
