import winston from 'winston';

export type LogFormat = 'human' | 'json';
export type Logger = winston.Logger;

// Structured fields ride along with every message so the JSON form is machine-readable
// (tests and log shippers key on `event` and `vassal`), while the human form stays terse.
const human = winston.format.printf((info) => {
  const { level, message, timestamp, vassal, event: _event, ...rest } = info as Record<string, unknown>;
  const tag = typeof vassal === 'string' ? ` [${vassal}]` : '';
  const extra = Object.entries(rest)
    .filter(([k]) => typeof k === 'string' && !k.startsWith('Symbol('))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${String(timestamp)} ${String(level)}${tag} ${String(message)}${extra ? ' ' + extra : ''}`;
});

export function createLogger(opts: { format: LogFormat; level?: string; colors?: boolean }): Logger {
  const formats = [winston.format.timestamp()];
  if (opts.format === 'json') {
    formats.push(winston.format.json());
  } else {
    if (opts.colors) formats.push(winston.format.colorize({ level: true }));
    formats.push(human);
  }
  return winston.createLogger({
    level: opts.level ?? 'info',
    format: winston.format.combine(...formats),
    // stdout, not stderr: the emperor's log is its main output, like uWSGI's and PM2's foreground mode.
    transports: [new winston.transports.Console({ stderrLevels: [] })],
  });
}

/** A logger that drops everything: for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
