// Turns zod's issue list into the single ConfigError users see. Leaf checks in schema.ts already
// word their own messages; this covers the structural cases zod reports itself.
import type { z } from 'zod';
import { describeValue, formatPath } from './describe.js';
import { ConfigError } from './errors.js';
import { ALLOWED_FIELDS } from './schema.js';

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

/** ALLOWED_FIELDS key of an object path: `checks[].name` style, any list index written as "[]". */
function fieldsKey(path: readonly PropertyKey[]): string {
  let key = '';
  for (const segment of path) {
    if (typeof segment === 'number') key += '[]';
    else key += key === '' ? String(segment) : `.${String(segment)}`;
  }
  return key;
}

interface Explained {
  path: PropertyKey[];
  problem: string;
  expected?: string;
}

function explain(issue: Issue): Explained {
  const path = [...issue.path];
  switch (issue.code) {
    case 'unrecognized_keys': {
      const key = issue.keys[0] ?? '';
      const allowed = ALLOWED_FIELDS[fieldsKey(path)] ?? [];
      return {
        path: [...path, key],
        problem: `unknown field (allowed: ${allowed.join(', ')})${suggestion(key, allowed)}`,
        expected: `one of ${allowed.join(', ')}`,
      };
    }
    case 'invalid_type': {
      const expected = TYPE_NAMES[issue.expected] ?? issue.expected;
      if (issue.input === undefined) return { path, problem: `required field is missing (expected ${expected})`, expected };
      return { path, problem: `expected ${expected}, got ${describeValue(issue.input)}`, expected };
    }
    case 'invalid_value': {
      const expected = `one of ${issue.values.map(String).join(', ')}`;
      return { path, problem: `expected ${expected}, got ${describeValue(issue.input)}`, expected };
    }
    case 'custom': {
      const expected: unknown = issue.params?.['expected'];
      return typeof expected === 'string' ? { path, problem: issue.message, expected } : { path, problem: issue.message };
    }
    default:
      return { path, problem: issue.message };
  }
}

/** How many distinct problems an issue stands for (one per unknown key). */
const weight = (issue: Issue): number => (issue.code === 'unrecognized_keys' ? issue.keys.length : 1);

/**
 * One error for the whole document. Unknown fields go first: a misspelt key ("comand") also
 * makes the real key look missing, and the typo is the thing to fix.
 */
export function issuesToConfigError(file: string, issues: readonly Issue[]): ConfigError {
  const ordered = [...issues].sort(
    (a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'),
  );
  const first = ordered[0];
  if (first === undefined) return new ConfigError(file, 'invalid configuration');
  const { path, problem, expected } = explain(first);
  const more = issues.reduce((sum, issue) => sum + weight(issue), 0) - 1;
  const suffix = more > 0 ? ` (and ${more} more problem${more === 1 ? '' : 's'})` : '';
  const field = path.length > 0 ? formatPath(path) : undefined;
  return new ConfigError(file, `${problem}${suffix}`, { field, expected });
}
