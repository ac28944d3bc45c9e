// The emperor's own log: one line per call on stdout, JSON (tests and log shippers key on
// `event` and `vassal`) or terse human text.
//
// Written here rather than taken from winston (issue 13): winston with its dependencies was
// 11 MB of an idle emperor's 60 MB budget (RSS of a process that only imports it), pino still
// 9 MB, and what the emperor needs is small: levels, two formats, structured fields.

export type LogFormat = 'human' | 'json';
export type LogFields = Readonly<Record<string, unknown>>;

export interface Logger {
  /** `level` is one of LEVELS; a message above the logger's level is dropped. */
  log(level: string, message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** Resolves once every line logged so far has been handed to the operating system. */
  flush(): Promise<void>;
}

/** npm's levels, as winston had them: lower is more severe. */
const LEVELS: Readonly<Record<string, number>> = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 };

/** One log entry as both formats see it: the caller's fields, then level, message and time. */
export type LogEntry = Record<string, unknown> & { level: string; message: string; timestamp: string };

const COLORS: Readonly<Record<string, string>> = { error: '\x1b[31m', warn: '\x1b[33m', info: '\x1b[32m', debug: '\x1b[34m' };

/** JSON that never throws: a BigInt or a cycle in some field must not cost the line. */
function toJson(entry: LogEntry): string {
  try {
    return JSON.stringify(entry);
  } catch {
    const seen = new WeakSet<object>();
    return JSON.stringify(entry, (_key, value: unknown) => {
      if (typeof value === 'bigint') return value.toString();
      if (typeof value === 'object' && value !== null) {
        if (seen.has(value)) return '[circular]';
        seen.add(value);
      }
      return value;
    });
  }
}

function toHuman(entry: LogEntry, colors: boolean): string {
  const { level, message, timestamp, vassal, event: _event, ...rest } = entry;
  const tag = typeof vassal === 'string' ? ` [${vassal}]` : '';
  const extra = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : toJson(v as LogEntry)}`)
    .join(' ');
  const shown = colors && COLORS[level] ? `${COLORS[level]}${level}\x1b[39m` : level;
  return `${timestamp} ${shown}${tag} ${message}${extra ? ' ' + extra : ''}`;
}

/** A logger handing each entry that passes `level` to `sink`. */
export function entryLogger(sink: (entry: LogEntry) => void, level = 'info', flush: () => Promise<void> = () => Promise.resolve()): Logger {
  const max = LEVELS[level] ?? LEVELS.info!;
  const log = (lvl: string, message: string, fields: LogFields = {}): void => {
    if ((LEVELS[lvl] ?? 0) > max) return;
    // The caller's fields cannot pass for the level, message or time.
    sink({ ...fields, level: lvl, message, timestamp: new Date().toISOString() });
  };
  return {
    log,
    error: (m, f) => log('error', m, f),
    warn: (m, f) => log('warn', m, f),
    info: (m, f) => log('info', m, f),
    debug: (m, f) => log('debug', m, f),
    flush,
  };
}

let stdoutGuarded = false;

// Lines logged in one turn of the event loop go out in one write. A burst of 200 deploys logs
// some 600 lines, and a write to a pipe or file is a synchronous system call: profiled at 75 ms
// of the emperor's main thread for 200 apps at once (issue 13). What is still pending when the
// process exits (process.exit, a crash) is written by the 'exit' listener, which may write
// synchronously; so no line logged before an exit is lost.
let pending = '';
let scheduled = false;

function writePending(): void {
  scheduled = false;
  if (pending === '') return;
  const text = pending;
  pending = '';
  process.stdout.write(text);
}

function toStdout(line: string): void {
  pending += line;
  if (scheduled) return;
  scheduled = true;
  setImmediate(writePending);
}

export function createLogger(opts: { format: LogFormat; level?: string; colors?: boolean }): Logger {
  if (!stdoutGuarded) {
    stdoutGuarded = true;
    // A reader that went away (EPIPE) must not take the emperor and its vassals down with it.
    process.stdout.on('error', () => undefined);
    process.on('exit', writePending);
  }
  const format = opts.format === 'json' ? toJson : (e: LogEntry) => toHuman(e, opts.colors === true);
  // stdout, not stderr: the emperor's log is its main output, like uWSGI's and PM2's foreground mode.
  return entryLogger(
    (entry) => toStdout(`${format(entry)}\n`),
    opts.level,
    () =>
      new Promise((resolve) => {
        writePending();
        process.stdout.write('', () => resolve());
      }),
  );
}

/** A logger that drops everything: for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return entryLogger(() => undefined, 'error');
}
