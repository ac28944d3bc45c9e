// From bytes (or a path) to a frozen VassalSpec, or one ConfigError explaining why not.
// Nothing here throws: a bad file must never take the emperor down with it.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { describeValue, isPlainMapping } from './describe.js';
import { deepFreeze, plainDataProblem, type DocumentParse } from './data.js';
import { ConfigError } from './errors.js';
import { issuesToConfigError, wordIssue } from './issues.js';
import { parseJson } from './json.js';
import { MAX_VASSAL_FILE_BYTES, readVassalFile, tooLarge, type FileFacts } from './read.js';
import { classifyVassalFile } from './names.js';
import { vassalSchema } from './schema.js';
import type { VassalSpec } from './spec.js';
import { parseYaml } from './yaml.js';


/** transient: not a verdict on the file (the parser could not run: out of fds or memory); try again later. */
export type VassalParseResult = { ok: true; spec: VassalSpec } | { ok: false; error: ConfigError; transient?: true };

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

const failure = (file: string, problem: string, cause?: unknown): VassalParseResult => ({
  ok: false,
  error: new ConfigError(file, problem, { cause }),
});

// fatal: a vassal with mojibake in its command line is better refused than run.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function decode(bytes: Uint8Array): { ok: true; text: string } | { ok: false; problem: string } {
  if (bytes.includes(0)) return { ok: false, problem: 'file looks binary (it contains NUL bytes)' };
  try {
    return { ok: true, text: utf8.decode(bytes) };
  } catch {
    return { ok: false, problem: 'file is not valid UTF-8 text' };
  }
}

function parseText(text: string, file: string): DocumentParse {
  return path.extname(file) === '.json' ? parseJson(text) : parseYaml(text);
}

function parseUnchecked(content: string | Buffer, file: string): VassalParseResult {
  const classified = classifyVassalFile(path.basename(file));
  if (classified.kind === 'ignored') {
    return failure(file, 'not a vassal file (expected a name ending in .yaml, .yml or .json, not hidden and not an editor backup)');
  }
  if (classified.kind === 'bad-name') {
    return failure(file, `invalid vassal name ${JSON.stringify(classified.name)}: ${classified.reason}`);
  }

  const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  if (bytes.length > MAX_VASSAL_FILE_BYTES) return failure(file, tooLarge(bytes.length));
  const decoded = decode(bytes);
  if (!decoded.ok) return failure(file, decoded.problem);
  if (decoded.text.trim() === '') return failure(file, 'file is empty');

  const parsed = parseText(decoded.text, file);
  if (!parsed.ok) return failure(file, parsed.problem);
  const dataProblem = plainDataProblem(parsed.value);
  if (dataProblem !== undefined) return failure(file, dataProblem);
  if (!isPlainMapping(parsed.value)) {
    return failure(file, `expected a mapping of settings at the top level (like "command: [...]"), got ${describeValue(parsed.value)}`);
  }

  const result = vassalSchema.safeParse(parsed.value, { reportInput: true, error: wordIssue });
  if (!result.success) return { ok: false, error: issuesToConfigError(file, result.error.issues) };
  const { service, cwd, ...fields } = result.data;
  const spec: VassalSpec = {
    ...fields,
    name: classified.name,
    file,
    hash: sha256(bytes),
    cwd: path.resolve(path.dirname(file), cwd ?? '.'),
    service: service === null ? null : { ...service, name: service.name ?? classified.name },
  };
  return { ok: true, spec: deepFreeze(spec) };
}

/**
 * Validates a vassal file's content. `file` names it (absolute; its basename gives the vassal
 * name and its extension the format). Synchronous and never throws.
 */
export function parseVassal(content: string | Buffer, file: string): VassalParseResult {
  const absolute = path.resolve(file);
  try {
    return parseUnchecked(content, absolute);
  } catch (cause) {
    // Only a bug can get here; still a result, so one odd file cannot crash the emperor.
    const message = cause instanceof Error ? cause.message : String(cause);
    return failure(absolute, `unexpected error while reading the file: ${message}`, cause);
  }
}

export interface LoadOptions {
  /** Follow a symbolic link at the path (default true); tyrant mode refuses links instead. */
  readonly followSymlinks?: boolean;
  /**
   * Decides from the descriptor's fstat alone, before a byte of content is parsed, whether the
   * file may be read at all (tyrant mode: owner, mode). A refusal never quotes the content.
   */
  readonly trust?: (file: string, facts: FileFacts) => Promise<string | undefined> | string | undefined;
  /** How the bytes become a spec (default: parseVassal here; the emperor parses in a worker). */
  readonly parse?: (bytes: Buffer, file: string) => Promise<VassalParseResult> | VassalParseResult;
}

export type VassalFileResult =
  | { ok: true; spec: VassalSpec; facts: FileFacts }
  | {
      ok: false;
      error: ConfigError;
      facts: FileFacts | undefined;
      /**
       * Same problem, same hash: the content's hash when it was read, else the reason it was
       * not read (a file refused for its size keeps its hash while it grows), so a watcher can
       * report each refusal once.
       */
      hash: string;
      /** Nothing is at the path. */
      gone?: true;
      /** It changed while it was read (a write in progress). */
      changing?: true;
    };

/**
 * Reads and validates a vassal file: owner, type, size and bytes from one descriptor (see
 * read.ts). Read errors (ENOENT, EACCES, a directory...) are ConfigErrors too. Never throws.
 */
export async function loadVassalFile(file: string, opts: LoadOptions = {}): Promise<VassalFileResult> {
  const absolute = path.resolve(file);
  const read = await readVassalFile(absolute, { followSymlinks: opts.followSymlinks ?? true });
  switch (read.kind) {
    case 'gone':
      return { ok: false, error: new ConfigError(absolute, 'file does not exist (ENOENT)'), facts: undefined, hash: '', gone: true };
    case 'refused':
      return { ok: false, error: new ConfigError(absolute, read.problem), facts: read.facts, hash: sha256(`refused: ${read.code ?? read.problem}`) };
    case 'changing':
      return { ok: false, error: new ConfigError(absolute, 'the file changed while it was read; try again once it is written'), facts: read.facts, hash: '', changing: true };
    case 'read':
      break;
  }
  const { facts, bytes } = read;
  const distrust = await opts.trust?.(absolute, facts);
  if (distrust !== undefined) return { ok: false, error: new ConfigError(absolute, distrust), facts, hash: sha256(`distrusted: ${distrust}`) };
  const verdict = await (opts.parse ?? parseVassal)(bytes, absolute);
  // No facts: a watcher's rescan then sees a changed file and tries again (the deploy is not lost).
  if (!verdict.ok && verdict.transient) return { ok: false, error: verdict.error, facts: undefined, hash: sha256(`transient: ${verdict.error.problem}`) };
  return verdict.ok ? { ok: true, spec: verdict.spec, facts } : { ok: false, error: verdict.error, facts, hash: sha256(bytes) };
}
