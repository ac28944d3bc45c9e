// Which directory entries are vassals, and whether their names are safe. Names become registry
// keys (etcd/Consul) and appear in logs and URLs, so the accepted alphabet is deliberately small.
import path from 'node:path';
import { VASSAL_EXTENSIONS } from './spec.js';

export const MAX_NAME_LENGTH = 128;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.@-]*$/;
const NAME_CHAR = /^[A-Za-z0-9_.@-]$/;

export type VassalFileClass =
  | { kind: 'ignored' }
  | { kind: 'vassal'; name: string }
  | { kind: 'bad-name'; name: string; reason: string };

/** Editor swap/backup files and hidden files show up next to vassals; they are never vassals. */
function isEditorLeftover(basename: string): boolean {
  return basename.startsWith('.') || basename.endsWith('~') || basename.endsWith('.swp') || basename.endsWith('.tmp');
}

function isVassalExtension(ext: string): boolean {
  // Case-sensitive on purpose: the extension picks the parser, and "web.YAML" next to "web.yaml"
  // would otherwise be two files claiming one name.
  return (VASSAL_EXTENSIONS as readonly string[]).includes(ext);
}

function describeChar(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  const hex = `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  if (char === ' ') return 'a space';
  if (code < 0x20 || code === 0x7f) return `a control character (${hex})`;
  if (code > 0x7e) return `the non-ASCII character ${JSON.stringify(char)} (${hex})`;
  return `the character ${JSON.stringify(char)}`;
}

/** Why `name` is not acceptable as a vassal name, or undefined when it is fine. */
export function vassalNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the name is ${name.length} characters long (the limit is ${MAX_NAME_LENGTH})`;
  if (name.includes('..')) return 'the name must not contain ".."';
  if (NAME_PATTERN.test(name)) return undefined;
  const first = [...name][0] ?? '';
  if (NAME_CHAR.test(first) && !/^[A-Za-z0-9]$/.test(first)) return 'the name must start with a letter or a digit';
  const bad = [...name].find((char) => !NAME_CHAR.test(char)) ?? first;
  return `the name contains ${describeChar(bad)}; only letters, digits, "_", ".", "@" and "-" are allowed`;
}

export function isValidVassalName(name: string): boolean {
  return vassalNameProblem(name) === undefined;
}

/** Decides from a directory entry's basename whether it is a vassal, and under which name. */
export function classifyVassalFile(basename: string): VassalFileClass {
  if (isEditorLeftover(basename)) return { kind: 'ignored' };
  const ext = path.extname(basename);
  if (!isVassalExtension(ext)) return { kind: 'ignored' };
  const name = basename.slice(0, -ext.length);
  const reason = vassalNameProblem(name);
  return reason === undefined ? { kind: 'vassal', name } : { kind: 'bad-name', name, reason };
}
