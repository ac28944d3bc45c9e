// Fuzzing the vassal-file parser: thousands of random, mutated and known-nasty inputs, each of
// which must give a result (never a throw), a valid frozen spec or one clear one-line error
// naming the file, and never hang. The inputs are a pure function of a seed, printed with every
// run; reproduce a run with FUZZ_SEED=<seed>, one input with FUZZ_SEED=<seed> FUZZ_ONLY=<index>
// (comma-separated for several), and fuzz longer with FUZZ_COUNT=<random inputs>.
//
// Inputs run in a worker thread that reports each input before parsing it. No clock watches it:
// an input that hangs the parser is caught by the test's own deadline, whose abort terminates the
// worker and prints the input it was stuck on. Nothing here asserts how fast parsing is (a slow
// input on a busy machine is not a hang); parse speed belongs to `npm run bench`.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from './support/test.js';
import { Worker } from 'node:worker_threads';
import { parseVassal } from '../src/config/index.js';
import { FIXED_COUNT, SEEDS, VASSAL_DIR, inputAt } from './fixtures/fuzz/inputs.js';
import { MAX_MESSAGE_CHARS, brokenInvariant, type WorkerMessage, type WorkerTask } from './fixtures/fuzz/worker.js';
import { EmperorUnderTest, appVassal, makeWorkspace } from './support/emperor.js';
import { fixture } from './support/paths.js';

const SEED = process.env['FUZZ_SEED'] !== undefined ? Number(process.env['FUZZ_SEED']) >>> 0 : randomInt(2 ** 32);
const RANDOM_COUNT = Number(process.env['FUZZ_COUNT'] ?? 4_000);
const ONLY = process.env['FUZZ_ONLY']?.split(',').map((index) => Number(index.trim()));
/** The batches run thousands of inputs: on a busy machine that takes minutes, not seconds. */
const BATCH_TIMEOUT_MS = 600_000;
const REPRODUCE = `FUZZ_SEED=${SEED}`;
const WORKER = new URL('./fixtures/fuzz/worker.js', import.meta.url);

const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

interface BatchResult {
  failures: Array<Extract<WorkerMessage, { type: 'fail' }>>;
  ran: number;
  valid: number;
  invalid: number;
}

/** Runs the inputs in a worker; rejects naming the input when the worker dies or the test's deadline ends it. */
function runBatch(indices: number[], signal: AbortSignal): Promise<BatchResult> {
  const task: WorkerTask = { seed: SEED, indices };
  // A memory limit too: an input that makes the parser allocate without bound is a failure, not an OOM of the test run.
  const worker = new Worker(WORKER, { workerData: task, resourceLimits: { maxOldGenerationSizeMb: 1024 } });
  const failures: BatchResult['failures'] = [];
  let current: { index: number; kind: string } | undefined;
  const describeCurrent = (): string =>
    current === undefined ? 'before the first input' : `at input #${current.index} (${current.kind}); reproduce with ${REPRODUCE} FUZZ_ONLY=${current.index}`;

  return new Promise<BatchResult>((resolve, reject) => {
    let settled = false;
    const finish = (outcome: { result: BatchResult } | { error: Error }): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', stopped);
      if ('result' in outcome) resolve(outcome.result);
      else reject(outcome.error);
      void worker.terminate();
    };
    // The test ended (its deadline, or a cancel) while the worker still parsed: the runner reports
    // the timeout; this line says which input to replay.
    const stopped = (): void => {
      console.log(`# fuzz: the test ended ${describeCurrent()}`);
      finish({ error: new Error(`the test ended ${describeCurrent()}`) });
    };
    signal.addEventListener('abort', stopped, { once: true });
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'start') current = { index: message.index, kind: message.kind };
      else if (message.type === 'fail') failures.push(message);
      else finish({ result: { failures, ran: message.ran, valid: message.valid, invalid: message.invalid } });
    });
    worker.on('error', (error) => finish({ error: new Error(`the fuzz worker crashed ${describeCurrent()}: ${error.message}`, { cause: error }) }));
    worker.on('exit', (code) => finish({ error: new Error(`the fuzz worker exited (code ${code}) ${describeCurrent()}`) }));
  });
}

function assertNoFailures(result: BatchResult): void {
  if (result.failures.length === 0) return;
  const shown = result.failures.slice(0, 10).map((f) => `  #${f.index} ${f.kind}: ${f.problem}\n    input: ${f.preview}`);
  assert.fail(
    `${result.failures.length} of ${result.ran} inputs broke an invariant (${REPRODUCE} FUZZ_ONLY=${result.failures.map((f) => f.index).join(',')}):\n${shown.join('\n')}`,
  );
}

describe(`vassal file parser fuzzing (seed ${SEED})`, { concurrency: 2 }, () => {
  before(() => {
    // Printed whatever the outcome, so that any failure can be replayed.
    console.log(`# fuzz seed: ${SEED} (reproduce with ${REPRODUCE})`);
  });

  it('starts from seed files that are valid and exercise every field', () => {
    const fields = new Set<string>();
    for (const seed of SEEDS) {
      const file = path.join(VASSAL_DIR, seed.name);
      const result = parseVassal(seed.content, file);
      assert.ok(result.ok, `${seed.name}: ${result.ok ? '' : result.error.message}`);
      assert.equal(brokenInvariant({ kind: seed.name, file, content: seed.content }, result), undefined);
      for (const match of seed.content.matchAll(/"?([a-z_]+)"?:/g)) fields.add(match[1] ?? '');
    }
    for (const field of ['command', 'shell', 'cwd', 'env', 'restart', 'backoff', 'start', 'ready', 'tcp', 'http', 'exec', 'notify', 'delay', 'checks', 'ttl', 'on_critical', 'stop', 'drain', 'service', 'location', 'meta', 'consul', 'limits', 'limits_required', 'cpu_weight', 'open_files']) {
      assert.ok(fields.has(field), `no seed file uses ${field}`);
    }
  });

  if (ONLY !== undefined) {
    it(`replays input(s) ${ONLY.join(',')} of seed ${SEED}`, { timeout: BATCH_TIMEOUT_MS }, async (t: TestContext) => {
      const result = await runBatch(ONLY, t.signal);
      for (const index of ONLY) {
        const input = inputAt(SEED, index);
        const verdict = parseVassal(input.content, input.file);
        console.log(`# #${index} ${input.kind}: ${verdict.ok ? 'valid' : verdict.error.message.slice(0, 300)}`);
      }
      assertNoFailures(result);
    });
    return;
  }

  it(`survives ${FIXED_COUNT} known-nasty inputs: huge, binary, deep, alias bombs, odd YAML, edge numbers, unicode`, { timeout: BATCH_TIMEOUT_MS }, async (t: TestContext) => {
    const result = await runBatch(range(0, FIXED_COUNT), t.signal);
    assertNoFailures(result);
    assert.equal(result.ran, FIXED_COUNT);
    // Sanity: the list is mostly errors, but not only (some odd-but-valid files are in it).
    assert.ok(result.valid > 0 && result.invalid > result.valid, `valid ${result.valid}, invalid ${result.invalid}`);
  });

  it(`survives ${RANDOM_COUNT} random inputs: bytes, token soup, mutated and generated vassal files (seed ${SEED})`, { timeout: BATCH_TIMEOUT_MS }, async (t: TestContext) => {
    const result = await runBatch(range(FIXED_COUNT, RANDOM_COUNT), t.signal);
    assertNoFailures(result);
    assert.equal(result.ran, RANDOM_COUNT);
    // The generators must reach past the parsers into the schema: some inputs have to be valid.
    assert.ok(result.valid > 0, 'no random input was valid: the mutations never get past the parsers');
    console.log(`# ${result.ran} random inputs: ${result.valid} valid, ${result.invalid} invalid`);
  });
});

// Regressions for what fuzzing found (fixed in src/config); exact expectations, main thread.
describe('vassal file parser: inputs fuzzing found', () => {
  const fails = (content: string, name = 'web.yaml'): string => {
    const file = path.join(VASSAL_DIR, name);
    const result = parseVassal(content, file);
    assert.ok(!result.ok, 'expected an error');
    assert.equal(brokenInvariant({ kind: name, file, content }, result), undefined);
    return result.error.message;
  };
  const list = (n: number, item: string): string => Array.from({ length: n }, () => item).join(',');

  it('refuses aliases that multiply a large anchor, though they are few', () => {
    // 90 aliases passed the alias-count limit, expanding to 9 million values.
    assert.match(fails(`a: &a [${list(20_000, '1')}]\nb: [${list(90, '*a')}]\n`), /aliases expand to more than 10000 values \(an "alias bomb"\?\)/);
    assert.match(fails(`command: [x]\nenv: &e {${Array.from({ length: 5_000 }, (_, i) => `K${i}: v`).join(',')}}\nchecks: [*e, *e, *e]\n`), /alias bomb/);
  });

  it('still accepts modest aliases', () => {
    const result = parseVassal('command: &c [sh, -c, "true"]\nstart: {ready: {exec: *c}}\nchecks: [{exec: *c}]\n', path.join(VASSAL_DIR, 'web.yaml'));
    assert.ok(result.ok, result.ok ? '' : result.error.message);
    assert.deepEqual(result.spec.checks[0]?.probe, { kind: 'exec', argv: ['sh', '-c', 'true'] });
  });

  it('reports the first of a million YAML errors without building the others', () => {
    // Each error used to become an Error object with a stack trace: 20-30 s for 1 MiB of "[]".
    assert.match(fails('[]'.repeat(30_000)), /invalid YAML at line 1, column 3: Unexpected flow-seq-start at node end/);
    assert.match(fails(`[${','.repeat(60_000)}`), /invalid YAML at line 1, column 3: Unexpected , in flow sequence/);
    assert.match(fails('! '.repeat(30_000)), /A node can have at most one tag/);
  });

  it('keeps messages short when the file holds huge keys or names', () => {
    for (const [content, name] of [
      [`command: [x]\nchecks:\n - {ttl: 1s, name: ${'n'.repeat(100_000)}}\n - {ttl: 1s, name: ${'n'.repeat(100_000)}}\n`, 'web.yaml'],
      [`command: [x]\nservice: {port: 1, meta: {"${'m'.repeat(100_000)}": 1}}\n`, 'web.yaml'],
      [JSON.stringify({ command: ['x'], ['q'.repeat(200_000)]: 1 }), 'web.json'],
      [JSON.stringify({ command: ['x'], env: { [`${'E'.repeat(99_999)}-`]: 1 } }), 'web.json'],
    ] as const) {
      const message = fails(content, name);
      assert.ok(message.length <= MAX_MESSAGE_CHARS, `${message.length} characters: ${message.slice(0, 200)}`);
    }
  });

  it('does not quote the source in JSON errors', () => {
    assert.equal(fails('command: [x]\n', 'web.json'), `${VASSAL_DIR}/web.json: invalid JSON at line 1, column 1: Unexpected token 'c'`);
    assert.equal(fails('{"command":["x",], // hi\n}', 'web.json'), `${VASSAL_DIR}/web.json: invalid JSON at line 1, column 17: Unexpected token ']'`);
  });

  it('reports deep block nesting closed by a later line as too deep, not as a stack overflow', () => {
    // yaml's CST parser closes block collections recursively: "Maximum call stack size exceeded".
    for (const content of [`${'- '.repeat(10_000)}x\ny: 1\n`, `${'? '.repeat(5_000)}\nx: 1\n`, `command: [x]\nenv:\n  P: ${'808: '.repeat(5_000)}\nrestart: never\n`]) {
      assert.match(fails(content), /nested more than 32 levels deep/);
    }
  });

  it('names an alias without an anchor instead of calling it a bomb', () => {
    assert.equal(fails('command: *nothing\n'), `${VASSAL_DIR}/web.yaml: invalid YAML at line 1, column 10: alias *nothing has no anchor &nothing before it`);
    assert.match(fails('command: *a\nenv: &a {A: 1}\n'), /line 1, column 10: alias \*a has no anchor &a before it/);
  });
});

// End to end: a running vassal whose file is overwritten with garbage keeps running.
describe('a running vassal whose file turns into fuzzed garbage', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  const APP = fixture('app.js');

  before(async () => {
    ws = await makeWorkspace('emperor-fuzz-');
    emp = await EmperorUnderTest.start(ws);
  });
  after(async () => {
    await emp.stop();
    await fs.rm(ws.root, { recursive: true, force: true });
  });

  /** Replaces the file in one step, so the watcher never reads half of it. */
  async function replace(file: string, content: string | Buffer): Promise<void> {
    const temp = path.join(ws.vassals, `.${path.basename(file)}.tmp`);
    await fs.writeFile(temp, content);
    await fs.rename(temp, file);
  }

  it('keeps its pid, logs each bad content once, shows fileError, and recovers without a restart', async () => {
    const good = JSON.stringify(appVassal(APP), null, 2);
    const file = path.join(ws.vassals, 'keeper.yaml');
    const m0 = emp.mark();
    await replace(file, good);
    await emp.waitEvent('keeper', 'ready', m0);
    const before = await emp.vassal('keeper');
    assert.equal(before.state, 'running');
    const pid = before.pid;
    assert.ok(typeof pid === 'number');

    // The first invalid random input of this seed, after the fixed kinds of garbage.
    let fuzzed: { kind: string; content: string | Buffer } | undefined;
    for (let index = FIXED_COUNT; fuzzed === undefined; index++) {
      const input = inputAt(SEED, index);
      if (input.file.endsWith('.yaml') && !parseVassal(input.content, file).ok) fuzzed = input;
    }
    const bomb = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n${'bcdefghi'
      .split('')
      .map((k, i) => `${k}: &${k} [${list9(`*${'abcdefgh'[i] ?? 'a'}`)}]`)
      .join('\n')}\n`;
    const garbage: Array<{ what: string; content: string | Buffer; expect: RegExp }> = [
      { what: 'binary with NUL bytes', content: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x00, 0x00, 0xff, 0xfe]), expect: /looks binary/ },
      { what: 'invalid UTF-8', content: Buffer.from([0x63, 0x3a, 0x20, 0xc3, 0x28, 0xff]), expect: /not valid UTF-8/ },
      { what: 'a billion-laughs alias bomb', content: bomb, expect: /alias/ },
      { what: 'a quadratic alias bomb', content: `a: &a [${Array.from({ length: 20_000 }, () => '1').join(',')}]\nb: [${Array.from({ length: 50 }, () => '*a').join(',')}]\n`, expect: /alias bomb/ },
      { what: '10,000 levels of "["', content: '['.repeat(10_000), expect: /nested more than 32 levels/ },
      { what: 'a file over 64 KiB', content: `command: [x]\n${'#'.repeat(64 * 1024)}\n`, expect: /too large/ },
      { what: 'the good file cut in half', content: good.slice(0, Math.floor(good.length / 2)), expect: /invalid YAML/ },
      { what: `fuzzed: ${fuzzed.kind}`, content: fuzzed.content, expect: /keeper\.yaml/ },
    ];

    for (const { what, content, expect } of garbage) {
      const m = emp.mark();
      await replace(file, content);
      const event = await emp.waitFor((e) => e.vassal === 'keeper' && e.event === 'invalid', `keeper: invalid after ${what}`, m);
      assert.match(event.message, expect, what);
      assert.ok(event.message.includes(file), `${what}: ${event.message}`);
      assert.match(event.message, /keeps running/, what);
      const v = await emp.vassal('keeper');
      assert.equal(v.state, 'running', what);
      assert.equal(v.pid, pid, `${what}: the vassal was restarted`);
      assert.match(v.fileError ?? '', expect, what);
      assert.equal(emp.child.exitCode, null, `${what}: the emperor exited`);
    }
    assert.equal(emp.events('keeper', 'invalid', m0).length, garbage.length, 'one invalid event per distinct content');

    const m = emp.mark();
    await replace(file, good);
    await emp.waitEvent('keeper', 'file-fixed', m);
    const fixed = await emp.vassal('keeper');
    assert.equal(fixed.fileError, null);
    assert.equal(fixed.pid, pid);
    assert.equal(fixed.state, 'running');
    assert.equal(fixed.restarts, before.restarts);
    assert.equal(emp.events('keeper', 'spawned', m0).length, 1, 'spawned once in all');
    const status = await emp.cli(['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /keeper/);
  });
});

function list9(item: string): string {
  return Array.from({ length: 9 }, () => item).join(',');
}
