// Reading a vassal file: owner, type, size and bytes from one descriptor (read.ts), the trust
// decision, then the parse. Apart from load.ts so that the emperor, which parses in a worker
// thread (parse-pool.ts), never loads the parser's modules (zod, yaml) in its main thread.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { ConfigError } from './errors.js';
import type { VassalParseResult } from './load.js';
import { readVassalFile, type FileFacts } from './read.js';
import type { VassalSpec } from './spec.js';

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** The parse in this thread, for callers that give no parse of their own. */
const parseHere = async (bytes: Buffer, file: string): Promise<VassalParseResult> => (await import('./load.js')).parseVassal(bytes, file);

/**
 * What "the file changed" compares: the content (YAML, JSON), and for .ini vassals also the
 * modification time, since touching an .ini is how a uWSGI Emperor user asks for a reload.
 */
export function changeKey(spec: VassalSpec, facts: { readonly mtimeMs: number }): string {
  return spec.kind === 'uwsgi' ? `${spec.hash}@${facts.mtimeMs}` : spec.hash;
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
  const verdict = await (opts.parse ?? parseHere)(bytes, absolute);
  // No facts: a watcher's rescan then sees a changed file and tries again (the deploy is not lost).
  if (!verdict.ok && verdict.transient) return { ok: false, error: verdict.error, facts: undefined, hash: sha256(`transient: ${verdict.error.problem}`) };
  return verdict.ok ? { ok: true, spec: verdict.spec, facts } : { ok: false, error: verdict.error, facts, hash: sha256(bytes) };
}
