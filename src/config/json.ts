// JSON vassal files. JSON.parse does the work; the rest is turning its error into a line and column.
import type { DocumentParse } from './data.js';
import { describeValue } from './describe.js';

const JSON_SPACE = new Set([' ', '\t', '\n', '\r']);
const JSON_LITERAL = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
const JSON_ESCAPE = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);
const HEX4 = /[0-9a-fA-F]{4}/y;

/** Scans the string literal starting at `start`: where it ends, or where it goes wrong. */
function scanString(text: string, start: number): { end: number } | { error: number } {
  for (let i = start + 1; i < text.length; ) {
    const char = text[i] ?? '';
    if (char === '"') return { end: i + 1 };
    if (char.charCodeAt(0) < 0x20) return { error: i };
    if (char !== '\\') {
      i++;
      continue;
    }
    const next = text[i + 1] ?? '';
    HEX4.lastIndex = i + 2;
    if (JSON_ESCAPE.has(next)) i += 2;
    else if (next === 'u' && HEX4.test(text)) i += 6;
    else return { error: i + 1 };
  }
  return { error: text.length };
}

type Scan = { kind: 'error'; offset: number } | { kind: 'duplicate'; key: string; offset: number } | undefined;

/**
 * Walks JSON text: the first syntax error (offset of the first character JSON.parse rejects,
 * text.length for a premature end), or the first key repeated within one object (compared
 * decoded, so "a" and "\u0061" are the same key). Iterative: a million '[' must not overflow the stack.
 */
function scanJson(text: string): Scan {
  const closers: string[] = [];
  // Keys seen so far in each open object (undefined for a list), parallel to closers.
  const keys: Array<Set<string> | undefined> = [];
  const error = (offset: number): Scan => ({ kind: 'error', offset });
  type State = 'value' | 'value-or-close' | 'key' | 'key-or-close' | 'after-value';
  let state: State = 'value';
  let i = 0;
  for (;;) {
    while (i < text.length && JSON_SPACE.has(text[i] ?? '')) i++;
    if (state === 'after-value' && closers.length === 0) return i < text.length ? error(i) : undefined;
    if (i >= text.length) return error(text.length);
    const char = text[i] ?? '';
    const closer = closers[closers.length - 1];
    if ((state === 'value-or-close' || state === 'key-or-close') && char === closer) {
      closers.pop();
      keys.pop();
      i++;
      state = 'after-value';
    } else if (state === 'value' || state === 'value-or-close') {
      if (char === '{' || char === '[') {
        closers.push(char === '{' ? '}' : ']');
        keys.push(char === '{' ? new Set() : undefined);
        state = char === '{' ? 'key-or-close' : 'value-or-close';
        i++;
      } else if (char === '"') {
        const scanned = scanString(text, i);
        if ('error' in scanned) return error(scanned.error);
        i = scanned.end;
        state = 'after-value';
      } else {
        JSON_LITERAL.lastIndex = i;
        if (!JSON_LITERAL.test(text)) return error(i);
        i = JSON_LITERAL.lastIndex;
        state = 'after-value';
      }
    } else if (state === 'key' || state === 'key-or-close') {
      if (char !== '"') return error(i);
      const scanned = scanString(text, i);
      if ('error' in scanned) return error(scanned.error);
      const key = JSON.parse(text.slice(i, scanned.end)) as string;
      const seen = keys[keys.length - 1];
      if (seen?.has(key)) return { kind: 'duplicate', key, offset: i };
      seen?.add(key);
      i = scanned.end;
      while (i < text.length && JSON_SPACE.has(text[i] ?? '')) i++;
      if (text[i] !== ':') return error(i);
      i++;
      state = 'value';
    } else if (char === ',') {
      i++;
      state = closer === '}' ? 'key' : 'value';
    } else if (char === closer) {
      closers.pop();
      keys.pop();
      i++;
    } else {
      return error(i);
    }
  }
}

/**
 * Offset of the first character JSON.parse rejects (text.length for a premature end), or
 * undefined if the text is valid. Node 20's "Unexpected token" errors carry no position, so
 * this finds it.
 */
export function jsonErrorOffset(text: string): number | undefined {
  const scan = scanJson(text);
  return scan?.kind === 'error' ? scan.offset : undefined;
}

/** 1-based line and column of a UTF-16 offset. */
export function lineAndColumn(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, col: offset - lineStart + 1 };
}

export function atPosition(text: string, offset: number): string {
  const { line, col } = lineAndColumn(text, offset);
  return ` at line ${line}, column ${col}`;
}

// V8's messages embed either "at position N" or a quoted copy of the source; both are replaced
// by our own line/column, and the source copy could contain newlines.
function cleanMessage(message: string): string {
  return message
    .replace(/\s*in JSON at position \d+.*$/s, '')
    .replace(/, (?:\.\.\.)?".*"(?:\.\.\.)? is not valid JSON$/s, '')
    .replace(/^Unexpected end of JSON input$/, 'unexpected end of file');
}

export function parseJson(text: string): DocumentParse {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const reported = /at position (\d+)/.exec(message)?.[1];
    const offset = reported === undefined ? jsonErrorOffset(text) : Number(reported);
    return { ok: false, problem: `invalid JSON${offset === undefined ? '' : atPosition(text, offset)}: ${cleanMessage(message)}` };
  }
  // JSON.parse keeps the last of repeated keys without a word; YAML refuses them, and so does this.
  const scan = scanJson(text);
  if (scan?.kind === 'duplicate') return { ok: false, problem: `invalid JSON${atPosition(text, scan.offset)}: duplicate key ${describeValue(scan.key)}` };
  return { ok: true, value };
}
