// The one place zod's issues become words. Fields word their own failures (fields.ts); wordIssue
// is the error map for what zod reports itself (wrong types, unknown keys, enum values), and
// issuesToConfigError turns the list into the single ConfigError users see.
import type { z } from 'zod';
import { expectedGot, formatPath } from './describe.js';
import { ConfigError } from './errors.js';

type Issue = z.core.$ZodIssue;

const TYPE_NAMES: Readonly<Record<string, string>> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  boolean: 'true or false',
  number: 'a number',
  int: 'a whole number',
};

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

function suggestion(key: string, allowed: readonly string[]): string {
  const lower = key.toLowerCase();
  const close = allowed.find((name) => name === lower || editDistance(lower, name) <= 2);
  return close === undefined ? '' : `; did you mean ${close}?`;
}

/** The keys an object schema accepts, in the order its shape lists them. */
function allowedKeys(schema: unknown): string[] {
  const def = (schema as { _zod?: { def?: { shape?: object } } } | undefined)?._zod?.def;
  return def?.shape === undefined ? [] : Object.keys(def.shape);
}

/** zod's `error` option for a whole parse: words the issues no field worded itself. */
export function wordIssue(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'unrecognized_keys': {
      const allowed = allowedKeys(issue.inst);
      return `unknown field (allowed: ${allowed.join(', ')})${suggestion(issue.keys[0] ?? '', allowed)}`;
    }
    case 'invalid_type':
      return expectedGot(TYPE_NAMES[issue.expected] ?? issue.expected, issue.input);
    case 'invalid_value':
      return expectedGot(`one of ${issue.values.map(String).join(', ')}`, issue.input);
    default:
      return undefined;
  }
}

/**
 * A value that is none of a union's types gets the union's own message; a value of one of
 * them ("a list" for a command given as a list) gets that alternative's problems.
 */
function unwrapUnion(issue: Issue): Issue[] {
  if (issue.code !== 'invalid_union') return [issue];
  const typeMatched = issue.errors.filter((problems) => !problems.some((inner) => inner.code === 'invalid_type' && inner.path.length === 0));
  const [only, another] = typeMatched;
  if (only === undefined || another !== undefined) return [issue];
  return only.flatMap((inner) => unwrapUnion({ ...inner, path: [...issue.path, ...inner.path] }));
}

/** How many distinct problems an issue stands for (one per unknown key). */
const weight = (issue: Issue): number => (issue.code === 'unrecognized_keys' ? issue.keys.length : 1);

/**
 * One error for the whole document. Unknown fields go first: a misspelt key ("comand") also
 * makes the real key look missing, and the typo is the thing to fix.
 */
export function issuesToConfigError(file: string, issues: readonly Issue[]): ConfigError {
  const all = issues.flatMap(unwrapUnion);
  const ordered = [...all].sort((a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'));
  const first = ordered[0];
  if (first === undefined) return new ConfigError(file, 'invalid configuration');
  const path = first.code === 'unrecognized_keys' ? [...first.path, first.keys[0] ?? ''] : first.path;
  const more = all.reduce((sum, issue) => sum + weight(issue), 0) - 1;
  const suffix = more > 0 ? ` (and ${more} more problem${more === 1 ? '' : 's'})` : '';
  return new ConfigError(file, `${first.message}${suffix}`, { field: path.length > 0 ? formatPath(path) : undefined });
}
