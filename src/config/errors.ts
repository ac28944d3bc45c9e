// One error type for everything that can be wrong with a vassal file, formatted for a log line.

export interface ConfigErrorDetails {
  /** Dotted path of the offending field, e.g. `stop.timeout` or `command[1]`. */
  field?: string | undefined;
  cause?: unknown;
}

// Control characters in file names or values must not split a log line (or forge a second one).
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (char) => {
    if (char === '\n') return '\\n';
    if (char === '\r') return '\\r';
    if (char === '\t') return '\\t';
    return `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** Longest field and problem text kept in a message; the file name is always shown whole. */
export const MAX_PROBLEM_CHARS = 600;

const capped = (text: string): string => (text.length <= MAX_PROBLEM_CHARS ? text : `${text.slice(0, MAX_PROBLEM_CHARS - 1)}…`);

/**
 * Message format: `<file>: <field>: <problem>`, or `<file>: <problem>` when no field applies.
 * Always one line, and field plus problem at most MAX_PROBLEM_CHARS long: values quoted from
 * the file are shortened where they are worded, this is the backstop for a log line.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly file: string;
  readonly field?: string;
  /** The message without the file and field prefix. */
  readonly problem: string;

  constructor(file: string, problem: string, details: ConfigErrorDetails = {}) {
    const text = details.field === undefined ? problem : `${details.field}: ${problem}`;
    super(`${oneLine(file)}: ${capped(oneLine(text))}`, details.cause === undefined ? undefined : { cause: details.cause });
    this.file = file;
    this.problem = problem;
    if (details.field !== undefined) this.field = details.field;
  }
}
