// From bytes (or a path) to a frozen VassalSpec, or one ConfigError explaining why not.
// Nothing here throws: a bad file must never take the emperor down with it.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { describeValue, isPlainMapping } from './describe.js';
import { deepFreeze, plainDataProblem } from './data.js';
import { ConfigError } from './errors.js';
import { issuesToConfigError, wordIssue } from './issues.js';
import { parseJson } from './json.js';
import { MAX_VASSAL_FILE_BYTES, tooLarge } from './read.js';
import { classifyVassalFile } from './names.js';
import { vassalSchema } from './schema.js';
import type { VassalSpec } from './spec.js';
import { parseYaml } from './yaml.js';
import { iniDocument } from './ini-vassal.js';


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

/** optionFor: an .ini vassal's map from document fields back to its options. */
type Parsed = { ok: true; value: unknown; optionFor?: (field: string) => string | undefined } | { ok: false; problem: string; field?: string | undefined };

function parseText(text: string, file: string): Parsed {
  const ext = path.extname(file);
  if (ext === '.ini') {
    const ini = iniDocument(text, file);
    return ini.ok ? { ok: true, value: ini.document, optionFor: ini.optionFor } : ini;
  }
  return ext === '.json' ? parseJson(text) : parseYaml(text);
}

/** An .ini vassal's errors name the option as written in the file (consul-service-port), not the field it maps to. */
function inFileTerms(error: ConfigError, optionFor: ((field: string) => string | undefined) | undefined): ConfigError {
  if (optionFor === undefined || error.field === undefined) return error;
  const option = optionFor(error.field);
  return option === undefined ? error : new ConfigError(error.file, error.problem, { field: option });
}

function parseUnchecked(content: string | Buffer, file: string): VassalParseResult {
  const classified = classifyVassalFile(path.basename(file));
  if (classified.kind === 'ignored') {
    return failure(file, 'not a vassal file (expected a name ending in .yaml, .yml, .json or .ini, not hidden and not an editor backup)');
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
  if (!parsed.ok) return { ok: false, error: new ConfigError(file, parsed.problem, { field: parsed.field }) };
  const dataProblem = plainDataProblem(parsed.value);
  if (dataProblem !== undefined) return failure(file, dataProblem);
  if (!isPlainMapping(parsed.value)) {
    return failure(file, `expected a mapping of settings at the top level (like "command: [...]"), got ${describeValue(parsed.value)}`);
  }

  const result = vassalSchema.safeParse(parsed.value, { reportInput: true, error: wordIssue });
  if (!result.success) return { ok: false, error: inFileTerms(issuesToConfigError(file, result.error.issues), parsed.optionFor) };
  const { service, cwd, ...fields } = result.data;
  const spec: VassalSpec = {
    ...fields,
    kind: parsed.optionFor === undefined ? 'command' : 'uwsgi',
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

// Reading a file (one descriptor, trust, then parse) lives in load-file.ts, which does not load
// the parser's modules (zod, yaml) unless it has to parse in this thread.
export { loadVassalFile, type LoadOptions, type VassalFileResult } from './load-file.js';
