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
import { classifyVassalFile, vassalNameProblem } from './names.js';
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

/**
 * How a document is read. A fleet vassal (emperor fleet deploy, or a spec read from etcd) is
 * named by the fleet, not by a file, and has no directory its paths could be relative to.
 */
export interface ParseOptions {
  /** Parse as the fleet vassal of this name (the file is only a label for errors and its format). */
  readonly fleetName?: string | undefined;
}

function nameOf(file: string, opts: ParseOptions): { ok: true; name: string } | { ok: false; result: VassalParseResult } {
  if (opts.fleetName !== undefined) {
    const problem = vassalNameProblem(opts.fleetName);
    return problem === undefined ? { ok: true, name: opts.fleetName } : { ok: false, result: failure(file, `invalid fleet vassal name ${JSON.stringify(opts.fleetName)}: ${problem}`) };
  }
  const classified = classifyVassalFile(path.basename(file));
  if (classified.kind === 'ignored') {
    return { ok: false, result: failure(file, 'not a vassal file (expected a name ending in .yaml, .yml, .json or .ini, not hidden and not an editor backup)') };
  }
  if (classified.kind === 'bad-name') {
    return { ok: false, result: failure(file, `invalid vassal name ${JSON.stringify(classified.name)}: ${classified.reason}`) };
  }
  return { ok: true, name: classified.name };
}

/** A program path a fleet spec may use: absolute, or a bare name looked up on PATH. */
function relativeProgram(program: string | undefined): boolean {
  return program !== undefined && program.includes('/') && !path.isAbsolute(program);
}

/** Rules a fleet spec must meet beyond a local file's: placement, absolute paths, no root by name. */
function fleetProblem(doc: { placement: unknown; cwd?: string | undefined; argv: readonly string[]; shell: boolean; user: string | null; group: string | null; checks: ReadonlyArray<{ probe: { kind: string; argv?: readonly string[] } }>; start: { ready: { kind: string; argv?: readonly string[] } } }): { field: string; problem: string } | undefined {
  if (doc.placement === null) return { field: 'placement', problem: 'a fleet vassal needs a placement block: { replicas: 1 }, { replicas: N }, { nodes: [web-1, web-2] } or { all: true }' };
  if (doc.cwd !== undefined && !path.isAbsolute(doc.cwd)) {
    return { field: 'cwd', problem: `expected an absolute directory (a fleet vassal has no file directory to be relative to), got ${JSON.stringify(doc.cwd)}` };
  }
  const relative = 'must be absolute or a bare program name found on PATH (a fleet vassal has no file directory to be relative to)';
  if (!doc.shell && relativeProgram(doc.argv[0])) return { field: 'command[0]', problem: `${relative}, got ${JSON.stringify(doc.argv[0])}` };
  for (const [i, check] of doc.checks.entries()) {
    if (check.probe.kind === 'exec' && relativeProgram(check.probe.argv?.[0])) return { field: `checks[${i}].exec[0]`, problem: `${relative}, got ${JSON.stringify(check.probe.argv?.[0])}` };
  }
  if (doc.start.ready.kind === 'exec' && relativeProgram(doc.start.ready.argv?.[0])) return { field: 'start.ready.exec[0]', problem: `${relative}, got ${JSON.stringify(doc.start.ready.argv?.[0])}` };
  // The spec arrives over the network: it may not ask for root. Nodes started with
  // --fleet-allow-root run a spec without user: as the emperor's own user instead.
  if (doc.user === 'root' || doc.user === '0') return { field: 'user', problem: 'a fleet vassal never runs as root by name; name a non-root user (or leave user: out on nodes started with --fleet-allow-root)' };
  if (doc.group === 'root' || doc.group === '0') return { field: 'group', problem: 'a fleet vassal never runs with the root group; name another group' };
  return undefined;
}

function parseUnchecked(content: string | Buffer, file: string, opts: ParseOptions): VassalParseResult {
  const named = nameOf(file, opts);
  if (!named.ok) return named.result;
  const name = named.name;
  const fleet = opts.fleetName !== undefined;

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
  if (fleet) {
    const problem = fleetProblem(result.data);
    if (problem) return { ok: false, error: new ConfigError(file, problem.problem, { field: problem.field }) };
  } else if (result.data.placement !== null) {
    return { ok: false, error: new ConfigError(file, 'only fleet vassals are placed (emperor fleet deploy FILE); a file in the vassals directory runs on this host: remove placement', { field: 'placement' }) };
  }
  const { service, cwd, ...fields } = result.data;
  const spec: VassalSpec = {
    ...fields,
    kind: parsed.optionFor === undefined ? 'command' : 'uwsgi',
    name,
    file,
    hash: sha256(bytes),
    cwd: fleet ? (cwd ?? '/') : path.resolve(path.dirname(file), cwd ?? '.'),
    service: service === null ? null : { ...service, name: service.name ?? name },
  };
  return { ok: true, spec: deepFreeze(spec) };
}

/**
 * Validates a vassal file's content. `file` names it (absolute; its basename gives the vassal
 * name and its extension the format). Synchronous and never throws.
 */
export function parseVassal(content: string | Buffer, file: string, opts: ParseOptions = {}): VassalParseResult {
  // A fleet spec's label may be an etcd key, not a path of this host.
  const absolute = opts.fleetName === undefined ? path.resolve(file) : file;
  try {
    return parseUnchecked(content, absolute, opts);
  } catch (cause) {
    // Only a bug can get here; still a result, so one odd file cannot crash the emperor.
    const message = cause instanceof Error ? cause.message : String(cause);
    return failure(absolute, `unexpected error while reading the file: ${message}`, cause);
  }
}

// Reading a file (one descriptor, trust, then parse) lives in load-file.ts, which does not load
// the parser's modules (zod, yaml) unless it has to parse in this thread.
export { loadVassalFile, type LoadOptions, type VassalFileResult } from './load-file.js';
