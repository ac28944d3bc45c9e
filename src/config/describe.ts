// Wording helpers shared by every error message in the config module, so that "got ..." and
// field paths read the same whether the problem came from zod, a parser or a hand-written check.

const MAX_SHOWN_CHARS = 40;

/** At most MAX_SHOWN_CHARS characters, with "…" when cut. */
function shorten(text: string): string {
  return text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS - 1)}…` : text;
}

/** Human-readable rendering of a value found in a vassal file, for "expected X, got Y". */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  // Truncated before quoting so a 1 MiB string cannot end up in a log line; JSON.stringify
  // escapes control characters, which keeps the message on one line.
  if (typeof value === 'string') return JSON.stringify(shorten(value));
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `a ${typeof value}`;
}

/** "expected <what>, got <value><hint>", or "required field is missing (expected <what>)". */
export function expectedGot(what: string, input: unknown, hint?: (input: unknown) => string): string {
  if (input === undefined) return `required field is missing (expected ${what})`;
  return `expected ${what}, got ${describeValue(input)}${hint?.(input) ?? ''}`;
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
      // A key can be as long as the file: shown like a value, cut short.
      const key = shorten(String(segment));
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
