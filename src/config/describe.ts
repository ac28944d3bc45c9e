// Wording helpers shared by every error message in the config module, so that "got ..." and
// field paths read the same whether the problem came from zod, a parser or a hand-written check.

const MAX_SHOWN_CHARS = 40;

/** Human-readable rendering of a value found in a vassal file, for "expected X, got Y". */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string') {
    // Truncate before quoting so a 1 MiB string cannot end up in a log line; JSON.stringify
    // escapes control characters, which keeps the message on one line.
    const shown = value.length > MAX_SHOWN_CHARS ? `${value.slice(0, MAX_SHOWN_CHARS - 1)}…` : value;
    return JSON.stringify(shown);
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `a ${typeof value}`;
}

/** Keys that can be shown bare after a dot; anything else is shown as ["key"]. */
const SIMPLE_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Dotted field path as users think of it: `stop.timeout`, `command[1]`, `env["MY VAR"]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') {
      out += `[${segment}]`;
    } else {
      const key = String(segment);
      if (SIMPLE_KEY.test(key)) out += out === '' ? key : `.${key}`;
      else out += out === '' ? JSON.stringify(key) : `[${JSON.stringify(key)}]`;
    }
  }
  return out;
}

/** Plain `{...}` objects only: YAML can produce Dates, Maps or Buffers, and zod treats those as objects. */
export function isPlainMapping(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
