// Guards shared by the JSON and YAML readers. Both can produce data a recursive walker would
// choke on (JSON.parse happily returns a 500,000-deep array; YAML aliases can even form
// cycles), so everything here is iterative and depth-bounded.
import { formatPath, isPlainMapping } from './describe.js';

/** Deepest nesting accepted; a real vassal needs 2 (e.g. backoff -> initial). */
export const MAX_DEPTH = 32;

export type DocumentParse = { ok: true; value: unknown } | { ok: false; problem: string };

interface Frame {
  value: unknown;
  depth: number;
  parent: Frame | undefined;
  key: PropertyKey;
}

function pathOf(frame: Frame): PropertyKey[] {
  const path: PropertyKey[] = [];
  for (let at: Frame | undefined = frame; at?.parent !== undefined; at = at.parent) path.unshift(at.key);
  return path;
}

// Deep paths are cut short: "a[0][0][0]…" says where it starts, which is what the user needs.
const SHOWN_PATH_SEGMENTS = 4;

function where(frame: Frame): string {
  const path = pathOf(frame);
  if (path.length === 0) return '';
  const shown = formatPath(path.slice(0, SHOWN_PATH_SEGMENTS));
  return ` (at ${shown}${path.length > SHOWN_PATH_SEGMENTS ? '…' : ''})`;
}

/**
 * Checks that parsed data is plain JSON-like data (mappings, lists, strings, numbers, booleans,
 * null) no deeper than MAX_DEPTH. Returns the problem, or undefined when the data is fine.
 */
export function plainDataProblem(root: unknown): string | undefined {
  const stack: Frame[] = [{ value: root, depth: 0, parent: undefined, key: '' }];
  for (let frame = stack.pop(); frame !== undefined; frame = stack.pop()) {
    const { value, depth } = frame;
    if (value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') continue;
    const isList = Array.isArray(value);
    if (!isList && !isPlainMapping(value)) {
      const kind = typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
      return `unsupported value of type ${kind}${where(frame)}`;
    }
    if (depth >= MAX_DEPTH) return `the document is nested more than ${MAX_DEPTH} levels deep${where(frame)}`;
    const entries: Array<[PropertyKey, unknown]> = isList ? [...value.entries()] : Object.entries(value);
    for (const [key, child] of entries) stack.push({ value: child, depth: depth + 1, parent: frame, key });
  }
  return undefined;
}

/** Object.freeze all the way down, iteratively, so a spec cannot be mutated by any consumer. */
export function deepFreeze<T>(root: T): T {
  const stack: unknown[] = [root];
  for (let value = stack.pop(); value !== undefined || stack.length > 0; value = stack.pop()) {
    if (typeof value !== 'object' || value === null || Object.isFrozen(value)) continue;
    Object.freeze(value);
    for (const child of Object.values(value)) stack.push(child);
  }
  return root;
}
