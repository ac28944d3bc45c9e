// Start-up leaves V8's optimizing compiler asleep (issue 13, src/cli/tiering.ts): its first
// compile pages in ~4 MB that an emperor with few vassals would keep. The emperor runs for real
// under `node --trace-opt`, which prints a line for every function TurboFan compiles (through C
// stdio: on a pipe those lines may come out of order with the log's, so the test counts them over
// the whole life of an emperor with no vassals, started and stopped).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import readline from 'node:readline';
import { afterEach, describe, it } from './support/test.js';
import { makeWorkspace } from './support/emperor.js';
import { binEmperor } from './support/paths.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('V8 tiering around start-up', () => {
  it('an emperor with no vassals, started and stopped, optimizes nothing', async () => {
    const ws = await makeWorkspace();
    cleanups.push(() => fs.rm(ws.root, { recursive: true, force: true }));
    const child = spawn(process.execPath, ['--trace-opt', binEmperor, '--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--log-format', 'json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const optimized: string[] = [];
    let started = false;
    for await (const line of readline.createInterface({ input: child.stdout })) {
      if (line.includes('completed optimizing')) optimized.push(line);
      if (!started && line.startsWith('{') && (JSON.parse(line) as { event?: string }).event === 'started') {
        started = true;
        child.kill('SIGTERM');
      }
    }
    assert.ok(started, `the emperor never logged "started": ${stderr}`);
    assert.equal(await exited, 0, stderr);
    assert.deepEqual(optimized, []);
  });
});
