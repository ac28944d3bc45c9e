// The emperor's log (src/log/logger.ts) writes the lines of one event-loop turn in one write
// (issue 13); no line logged before the process exits may be lost, however it exits.
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from './support/test.js';

const loggerModule = fileURLToPath(new URL('../src/log/logger.js', import.meta.url));

/** Runs `body` after `log` is a JSON logger; resolves with its stdout lines and exit code. */
function run(body: string): Promise<{ lines: string[]; code: number | null }> {
  const script = `const { createLogger } = await import(${JSON.stringify(loggerModule)});
const log = createLogger({ format: 'json' });
${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ lines: out.split('\n').filter(Boolean), code }));
  });
}

const numbered = (lines: string[]): number[] => lines.map((l) => (JSON.parse(l) as { i: number }).i);
const upTo = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

void test('every line logged before process.exit() in the same turn is written, in order', async () => {
  const r = await run(`for (let i = 0; i < 2000; i++) log.info('line ' + i, { event: 'x', i });
process.exit(3);`);
  assert.equal(r.code, 3);
  assert.deepEqual(numbered(r.lines), upTo(2000));
});

void test('lines logged just before an uncaught exception are written', async () => {
  const r = await run(`for (let i = 0; i < 500; i++) log.warn('line ' + i, { event: 'x', i });
setImmediate(() => {
  log.error('last', { event: 'x', i: 500 });
  throw new Error('boom');
});`);
  assert.equal(r.code, 1);
  assert.deepEqual(numbered(r.lines), upTo(501));
});

void test('flush() resolves after the lines logged so far are out', async () => {
  const r = await run(`log.info('a', { event: 'x', i: 0 });
await log.flush();
process.stdout.write('{"i":1}\\n');
log.info('b', { event: 'x', i: 2 });`);
  assert.equal(r.code, 0);
  assert.deepEqual(numbered(r.lines), [0, 1, 2]);
});
