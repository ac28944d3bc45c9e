// YAML vassal files. The yaml package is driven stage by stage (Parser -> CST -> Composer ->
// toJS) so that the expensive or recursive stages only ever see input already known to be
// shallow: its composer recurses per nesting level and its built-in duplicate-key check is
// quadratic (40,000 keys took 10 s), which a 1 MiB file could otherwise exploit.
import { Composer, isMap, isScalar, isSeq, LineCounter, Parser, type CST, type Document } from 'yaml';
import { MAX_DEPTH, type DocumentParse } from './data.js';

/** Aliases expanded by toJS; a "billion laughs" file needs millions. */
export const MAX_ALIAS_COUNT = 100;

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

export function parseYaml(text: string): DocumentParse {
  const lineCounter = new LineCounter();
  const at = (offset: number): string => {
    const { line, col } = lineCounter.linePos(offset);
    return ` at line ${line}, column ${col}`;
  };
  const tooDeep = `the document is nested more than ${MAX_DEPTH} levels deep`;
  if (rawBracketDepth(text) > MAX_RAW_BRACKET_DEPTH) return { ok: false, problem: tooDeep };

  const tokens = Array.from(new Parser(lineCounter.addNewLine).parse(text));
  const deep = findTooDeepToken(tokens);
  if (deep !== undefined) return { ok: false, problem: `${tooDeep}${at(deep.offset)}` };

  const docs = Array.from(new Composer(COMPOSER_OPTIONS).compose(tokens, true, text.length));
  const [doc, second] = docs;
  if (doc === undefined) return { ok: false, problem: 'file is empty' };
  if (second !== undefined) return { ok: false, problem: `the file holds more than one YAML document${at(second.range[0])}; use one file per vassal` };
  // Warnings too: an unresolved tag like !foo would otherwise quietly become a plain string.
  const error = doc.errors[0] ?? doc.warnings[0];
  if (error !== undefined) return { ok: false, problem: `invalid YAML${at(error.pos[0])}: ${error.message}` };
  const duplicate = findDuplicateKey(doc);
  if (duplicate !== undefined) return { ok: false, problem: `invalid YAML${at(duplicate.offset)}: duplicate key ${JSON.stringify(duplicate.key)}` };
  if (doc.contents === null) return { ok: false, problem: 'file is empty (it has only comments)' };

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
