// uWSGI .ini vassal files: the reading side. uWSGI parses the whole file itself when the vassal
// runs (`uwsgi --ini FILE`); the emperor reads only the [uwsgi] section's options, line by line
// the way uWSGI's core/ini.c does (";" and "#" comment lines, "key = value" with blanks trimmed,
// a key may repeat), and expands uWSGI's magic variables (%n, %d, %c, ...) in the values it uses.
// Linear in the file's size and never recursive: a hostile file costs one pass over 64 KiB.
import path from 'node:path';

/** One `key = value` line of the [uwsgi] section. */
export interface IniOption {
  readonly key: string;
  readonly value: string;
  /** 1-based line number, for error messages. */
  readonly line: number;
}

export type IniParse = { ok: true; options: IniOption[] } | { ok: false; problem: string };

/** The section `uwsgi --ini FILE` reads (uWSGI's default when no ":section" is given). */
export const UWSGI_SECTION = 'uwsgi';

const isBlank = (char: string | undefined): boolean => char === ' ' || char === '\t' || char === '\r';

/**
 * uWSGI strips blanks, tabs and carriage returns (not other white space) around lines, keys and
 * values. A loop, not a regular expression: /[ \t\r]+$/ backtracks quadratically over a long run
 * of blanks in the middle of a line (64 KiB of them took seconds).
 */
function trim(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isBlank(text[start])) start++;
  while (end > start && isBlank(text[end - 1])) end--;
  return text.slice(start, end);
}

/**
 * The options of the [uwsgi] section, in file order. A file without that section is an error
 * here (uWSGI itself only warns and runs with no options, which is never what was meant).
 */
export function parseIni(text: string): IniParse {
  const options: IniOption[] = [];
  let section = '';
  let sawSection = false;
  let lineNo = 0;
  for (const raw of text.split('\n')) {
    lineNo++;
    const line = trim(raw);
    if (line === '' || line.startsWith(';') || line.startsWith('#')) continue;
    if (line.startsWith('[')) {
      // uWSGI drops the last character whatever it is; a missing "]" is worth saying.
      if (!line.endsWith(']')) return { ok: false, problem: `invalid INI at line ${lineNo}: a section header must end with "]"` };
      section = line.slice(1, -1);
      if (section === UWSGI_SECTION) sawSection = true;
      continue;
    }
    if (section !== UWSGI_SECTION) continue;
    const eq = line.indexOf('=');
    // uWSGI takes a line without "=" as a key with an empty value.
    const key = trim(eq < 0 ? line : line.slice(0, eq));
    const value = eq < 0 ? '' : trim(line.slice(eq + 1));
    options.push({ key, value, line: lineNo });
  }
  if (!sawSection) return { ok: false, problem: `no [${UWSGI_SECTION}] section (uwsgi --ini reads only that section)` };
  return { ok: true, options };
}

/**
 * uWSGI's magic variables for a config file (core/uwsgi.c config_magic_table_fill), as far as
 * they depend only on the file's path: %p full path, %s file name, %n name without extension,
 * %e extension, %d directory with a trailing "/", %c the directory's own name, %0..%9 the
 * directory's components, %o the path as given (the emperor gives the full path), %% a "%".
 * %x is empty at this point, as in uWSGI. Other letters (%b, %i, %j, ...) need the uWSGI
 * binary or the inode; they are refused in the options the emperor reads rather than guessed.
 */
export function magicTable(file: string): ReadonlyMap<string, string> {
  const full = path.resolve(file);
  const base = path.basename(full);
  const dir = full.slice(0, full.length - base.length);
  const dot = base.lastIndexOf('.');
  const table = new Map<string, string>([
    ['%', '%'],
    ['p', full],
    ['o', full],
    ['s', base],
    ['n', dot >= 0 ? base.slice(0, dot) : base],
    ['e', dot >= 0 ? base.slice(dot + 1) : ''],
    ['d', dir],
    ['c', path.basename(dir)],
    ['x', ''],
  ]);
  const parts = dir.split('/').filter((p) => p !== '');
  for (let i = 0; i <= 9; i++) table.set(String(i), parts[i] ?? '');
  return table;
}

export type MagicResult = { ok: true; value: string } | { ok: false; problem: string };

/** Expands magic variables in one value; `%(option)` references and unknown letters are refused. */
export function expandMagic(value: string, table: ReadonlyMap<string, string>): MagicResult {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const char = value[i];
    if (char !== '%' || i + 1 >= value.length) {
      out += char;
      continue;
    }
    const next = value[i + 1] ?? '';
    const replacement = table.get(next);
    if (replacement === undefined) {
      const what = next === '(' ? 'option references like %(name)' : `the magic variable %${next}`;
      return { ok: false, problem: `${what} cannot be used here (the emperor expands %n, %s, %e, %p, %d, %c, %0-%9 and %%)` };
    }
    out += replacement;
    i++;
  }
  return { ok: true, value: out };
}
