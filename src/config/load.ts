// From bytes (or a path) to a frozen VassalSpec, or one ConfigError explaining why not.
// Nothing here throws: a bad file must never take the emperor down with it.
import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { describeValue, isPlainMapping } from './describe.js';
import { deepFreeze, plainDataProblem, type DocumentParse } from './data.js';
import { ConfigError } from './errors.js';
import { issuesToConfigError, wordIssue } from './issues.js';
import { parseJson } from './json.js';
import { classifyVassalFile } from './names.js';
import { vassalSchema } from './schema.js';
import type { VassalSpec } from './spec.js';
import { parseYaml } from './yaml.js';

/** Largest vassal file accepted, in bytes. Real ones are a few hundred bytes. */
export const MAX_VASSAL_FILE_BYTES = 1024 * 1024;

export type VassalParseResult = { ok: true; spec: VassalSpec } | { ok: false; error: ConfigError };

const failure = (file: string, problem: string, cause?: unknown): VassalParseResult => ({
  ok: false,
  error: new ConfigError(file, problem, { cause }),
});

function tooLarge(bytes: number): string {
  const mib = (bytes / MAX_VASSAL_FILE_BYTES).toFixed(1);
  return `file is too large (${bytes} bytes, ${mib} MiB; the limit is 1 MiB)`;
}

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
    hash: createHash('sha256').update(bytes).digest('hex'),
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

const FS_PROBLEMS: Readonly<Record<string, string>> = {
  ENOENT: 'file does not exist',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'is a directory, not a vassal file',
  ENOTDIR: 'a parent of this path is not a directory',
  ELOOP: 'too many levels of symbolic links',
};

function fsProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const known = code === undefined ? undefined : FS_PROBLEMS[code];
  if (known !== undefined) return `${known} (${code})`;
  return `cannot read the file: ${error instanceof Error ? error.message : String(error)}`;
}

const READ_CHUNK = 64 * 1024;

/** Reads at most MAX_VASSAL_FILE_BYTES + 1 bytes, so an oversized or growing file costs nothing. */
async function readCapped(file: string): Promise<{ ok: true; bytes: Buffer } | { ok: false; problem: string; cause?: unknown }> {
  let handle;
  try {
    // O_NONBLOCK: opening a FIFO named web.yaml would otherwise wait for a writer forever.
    handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (cause) {
    return { ok: false, problem: fsProblem(cause), cause };
  }
  try {
    const stats = await handle.stat();
    if (stats.isDirectory()) return { ok: false, problem: FS_PROBLEMS['EISDIR'] ?? 'is a directory' };
    if (!stats.isFile()) return { ok: false, problem: 'not a regular file' };
    if (stats.size > MAX_VASSAL_FILE_BYTES) return { ok: false, problem: tooLarge(stats.size) };
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.alloc(READ_CHUNK);
      const { bytesRead } = await handle.read(chunk, 0, READ_CHUNK, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
      if (total > MAX_VASSAL_FILE_BYTES) return { ok: false, problem: tooLarge(total) };
    }
    return { ok: true, bytes: Buffer.concat(chunks, total) };
  } catch (cause) {
    return { ok: false, problem: fsProblem(cause), cause };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Reads and validates a vassal file. Read errors (ENOENT, EACCES, EISDIR...) are ConfigErrors too. */
export async function loadVassalFile(file: string): Promise<VassalParseResult> {
  const absolute = path.resolve(file);
  const read = await readCapped(absolute);
  if (!read.ok) return failure(absolute, read.problem, read.cause);
  return parseVassal(read.bytes, absolute);
}
