// YAML vassal files. The yaml package is driven stage by stage (Parser -> CST -> Composer ->
// toJS) so that the expensive or recursive stages only ever see input already known to be
// shallow: its composer recurses per nesting level and its built-in duplicate-key check is
// quadratic (40,000 keys took 10 s), which a 1 MiB file could otherwise exploit.
import { Composer, isAlias, isMap, isPair, isScalar, isSeq, LineCounter, Parser, type CST, type Document } from 'yaml';
import { MAX_DEPTH, type DocumentParse } from './data.js';
import { describeValue } from './describe.js';

/** Aliases expanded by toJS; a "billion laughs" file needs millions. */
export const MAX_ALIAS_COUNT = 100;

/**
 * Values that aliases may add in total. The count above alone lets 90 aliases of one anchored
 * 100,000-item list through: 9 million values, seconds of work for the checks that follow.
 */
export const MAX_ALIAS_EXPANSION = 10_000;

// The CST parser is iterative but slow on deep flow nesting (about 6 s for a megabyte of '['),
// so an absurd bracket depth is refused before it runs. Counting raw brackets can only
// overestimate nesting, hence a bound far above MAX_DEPTH.
const MAX_RAW_BRACKET_DEPTH = 1_000;

const COMPOSER_OPTIONS = {
  // Duplicate keys are still errors: findDuplicateKey does the check in linear time.
  uniqueKeys: false,
  // Keys like `? [a]` become errors instead of being stringified (with a process warning).
  stringKeys: true,
  // No !!binary / !!timestamp / !!set: they produce Buffers, Dates and Sets, not config values.
  resolveKnownTags: false,
  logLevel: 'error',
  prettyErrors: false,
} as const;

function rawBracketDepth(text: string): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0x5b || code === 0x7b) max = Math.max(max, ++depth);
    else if ((code === 0x5d || code === 0x7d) && depth > 0) depth--;
  }
  return max;
}

/** The first collection token nested deeper than MAX_DEPTH, found without recursion. */
function findTooDeepToken(tokens: readonly CST.Token[]): CST.Token | undefined {
  const stack: Array<{ token: CST.Token | null | undefined; depth: number }> = tokens.map((token) => ({ token, depth: 0 }));
  for (let entry = stack.pop(); entry !== undefined; entry = stack.pop()) {
    const { token, depth } = entry;
    if (token === null || token === undefined) continue;
    if (token.type === 'document') {
      stack.push({ token: token.value, depth });
    } else if (token.type === 'block-map' || token.type === 'block-seq' || token.type === 'flow-collection') {
      if (depth >= MAX_DEPTH) return token;
      for (const item of token.items) stack.push({ token: item.key, depth: depth + 1 }, { token: item.value, depth: depth + 1 });
    }
  }
  return undefined;
}

/** First repeated key in any mapping (aliases are not followed, so this is linear in the file). */
function findDuplicateKey(doc: Document.Parsed): { key: string; offset: number } | undefined {
  const stack: unknown[] = [doc.contents];
  for (let node = stack.pop(); node !== undefined || stack.length > 0; node = stack.pop()) {
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        if (isScalar(pair.key)) {
          const key = String(pair.key.value);
          if (seen.has(key)) return { key, offset: pair.key.range?.[0] ?? 0 };
          seen.add(key);
        }
        stack.push(pair.value);
      }
    } else if (isSeq(node)) {
      // One push per item: spreading a 500,000-item list into push() overflows the call stack.
      for (const item of node.items) stack.push(item);
    }
  }
  return undefined;
}

/**
 * `env` values are strings, and YAML users write `PORT: 8080`. Converting the parsed number back
 * would turn `UMASK: 0022` into "22" and `VERSION: 1.10` into "1.1", so plain scalars in env
 * keep the text exactly as written.
 */
function keepEnvScalarsAsWritten(doc: Document.Parsed): void {
  const env = isMap(doc.contents) ? doc.contents.get('env', true) : undefined;
  if (!isMap(env)) return;
  for (const pair of env.items) {
    const value = pair.value;
    if (isScalar(value) && (typeof value.value === 'number' || typeof value.value === 'boolean') && typeof value.source === 'string') {
      value.value = value.source;
    }
  }
}

/** The first error (and the first warning) the composer reports; composing stops at the first error. */
class FirstError extends Error {
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message);
  }
}

type ErrorSource = number | readonly [number, number] | readonly [number, number, number] | { offset: number };

const sourceOffset = (source: ErrorSource): number => (typeof source === 'number' ? source : 'offset' in source ? source.offset : source[0]);

/** Token sources can be a megabyte long; an error message shows only their start. */
function shortSource(source: string): string {
  const shown = source.length > 40 ? `${source.slice(0, 39)}…` : source;
  return JSON.stringify(shown);
}

/**
 * Composes the (single) document, stopping at the first error. yaml's Composer otherwise builds
 * an Error object, stack trace included, for every problem it meets: a megabyte of "[]" or
 * ",,," holds a million of them and took 20 to 30 s, while only the first is ever reported.
 */
function composeOne(tokens: readonly CST.Token[], length: number): { doc: Document.Parsed | undefined; error?: FirstError; warning?: FirstError } {
  const composer = new Composer(COMPOSER_OPTIONS);
  let first: FirstError | undefined;
  let warning: FirstError | undefined;
  // onError is private in yaml's typings, but it is a plain property every stage calls through.
  const hooks = composer as unknown as { onError?: unknown };
  if (typeof hooks.onError === 'function') {
    hooks.onError = (source: ErrorSource, _code: string, message: string, isWarning?: boolean): void => {
      // Some stages catch what they call and report it again through here: keep throwing the first.
      if (first !== undefined) throw first;
      if (isWarning) {
        warning ??= new FirstError(sourceOffset(source), message);
        return;
      }
      first = new FirstError(sourceOffset(source), message);
      throw first;
    };
  }
  const docs: Document.Parsed[] = [];
  try {
    for (const token of tokens) {
      if (token.type === 'error') {
        const message = token.source ? `${token.message}: ${shortSource(token.source)}` : token.message;
        return { doc: undefined, error: new FirstError(token.offset, message) };
      }
      for (const doc of composer.next(token)) docs.push(doc);
    }
    for (const doc of composer.end(true, length)) docs.push(doc);
  } catch (error) {
    if (error instanceof FirstError) return { doc: undefined, error };
    throw error;
  }
  const [doc] = docs;
  const reported = doc?.errors[0];
  if (reported !== undefined) return { doc, error: new FirstError(reported.pos[0], reported.message) };
  return warning === undefined ? { doc } : { doc, warning };
}

type AliasExpansion =
  | { kind: 'added'; values: number }
  /** An alias inside the node its anchor names: the data would be infinitely deep. */
  | { kind: 'cycle' }
  /** An alias with no anchor of that name before it (toJS would throw "Unresolved alias"). */
  | { kind: 'unknown'; alias: string; offset: number };

/**
 * How many values the document's aliases add once expanded. Walks the document once, in
 * source order, so each alias resolves to the latest preceding node with its anchor, as YAML
 * defines it.
 */
function aliasExpansion(doc: Document.Parsed): AliasExpansion {
  const anchors = new Map<string, unknown>();
  /** Expanded size of every node already walked completely. */
  const sizes = new Map<unknown, number>();
  let added = 0;
  type Step = { node: unknown; exit: false } | { node: unknown; exit: true; children: unknown[] };
  const stack: Step[] = [{ node: doc.contents, exit: false }];
  for (let step = stack.pop(); step !== undefined; step = stack.pop()) {
    const { node } = step;
    if (step.exit) {
      let size = 1;
      for (const child of step.children) size += sizes.get(child) ?? 0;
      sizes.set(node, Math.min(size, Number.MAX_SAFE_INTEGER));
      continue;
    }
    if (node === null || typeof node !== 'object') continue;
    if (isAlias(node)) {
      const target = anchors.get(node.source);
      if (target === undefined) return { kind: 'unknown', alias: node.source, offset: node.range?.[0] ?? 0 };
      const size = sizes.get(target);
      if (size === undefined) return { kind: 'cycle' }; // the target is still open: it contains this alias
      sizes.set(node, size);
      added = Math.min(added + size, Number.MAX_SAFE_INTEGER);
      continue;
    }
    const anchor = (node as { anchor?: unknown }).anchor;
    if (typeof anchor === 'string') anchors.set(anchor, node);
    let children: unknown[] = [];
    if (isMap(node) || isSeq(node)) {
      for (const item of node.items as unknown[]) {
        if (isPair(item)) children.push(item.key, item.value);
        else children.push(item);
      }
    } else if (isPair(node)) {
      children = [node.key, node.value];
    }
    stack.push({ node, exit: true, children });
    // Reversed, so that children are walked in source order.
    for (let i = children.length - 1; i >= 0; i--) stack.push({ node: children[i], exit: false });
  }
  return { kind: 'added', values: added };
}

export function parseYaml(text: string): DocumentParse {
  const lineCounter = new LineCounter();
  const at = (offset: number): string => {
    const { line, col } = lineCounter.linePos(offset);
    return ` at line ${line}, column ${col}`;
  };
  const tooDeep = `the document is nested more than ${MAX_DEPTH} levels deep`;
  if (rawBracketDepth(text) > MAX_RAW_BRACKET_DEPTH) return { ok: false, problem: tooDeep };

  let tokens: CST.Token[];
  try {
    tokens = Array.from(new Parser(lineCounter.addNewLine).parse(text));
  } catch (error) {
    // The CST parser closes block collections recursively: thousands of levels opened on one
    // line ("a: a: a: ...", "- - - ...", "? ? ? ...") and then closed by a line further out
    // overflow the stack, before anything could count the levels.
    if (error instanceof RangeError && /call stack/i.test(error.message)) return { ok: false, problem: `${tooDeep} (too deep to read)` };
    throw error;
  }
  const deep = findTooDeepToken(tokens);
  if (deep !== undefined) return { ok: false, problem: `${tooDeep}${at(deep.offset)}` };
  const second = tokens.filter((token) => token.type === 'document')[1];
  if (second !== undefined) return { ok: false, problem: `the file holds more than one YAML document${at(second.offset)}; use one file per vassal` };

  const { doc, error, warning } = composeOne(tokens, text.length);
  // Warnings too: an unresolved tag like !foo would otherwise quietly become a plain string.
  const problem = error ?? warning;
  if (problem !== undefined) return { ok: false, problem: `invalid YAML${at(problem.offset)}: ${problem.message}` };
  if (doc === undefined) return { ok: false, problem: 'file is empty' };
  const duplicate = findDuplicateKey(doc);
  if (duplicate !== undefined) return { ok: false, problem: `invalid YAML${at(duplicate.offset)}: duplicate key ${describeValue(duplicate.key)}` };
  if (doc.contents === null) return { ok: false, problem: 'file is empty (it has only comments)' };

  const expansion = aliasExpansion(doc);
  // A cycle is infinitely deep; say so the way any other over-deep document is reported.
  if (expansion.kind === 'cycle') return { ok: false, problem: `${tooDeep} (an alias refers to a node that contains it)` };
  if (expansion.kind === 'unknown') {
    const alias = shortSource(expansion.alias).slice(1, -1);
    return { ok: false, problem: `invalid YAML${at(expansion.offset)}: alias *${alias} has no anchor &${alias} before it` };
  }
  if (expansion.values > MAX_ALIAS_EXPANSION) {
    return { ok: false, problem: `the YAML's aliases expand to more than ${MAX_ALIAS_EXPANSION} values (an "alias bomb"?)` };
  }

  keepEnvScalarsAsWritten(doc);
  try {
    return { ok: true, value: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) };
  } catch (error) {
    // toJS throws a ReferenceError once alias expansion passes maxAliasCount.
    const message = error instanceof Error ? error.message : String(error);
    if (/alias/i.test(message)) {
      return { ok: false, problem: `the YAML expands aliases more than ${MAX_ALIAS_COUNT} times (an "alias bomb"?)` };
    }
    return { ok: false, problem: `invalid YAML: ${message}` };
  }
}
