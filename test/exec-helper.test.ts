// The exec-probe helper process (src/checks/exec-runner.ts, exec-helper.ts): exec probes are
// spawned by a small child process instead of the emperor itself. Whatever dies first, the
// emperor or the helper, no probe (nor anything a probe started) is left behind, and a dead
// helper is replaced for the next probe.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { runProbe } from '../src/checks/index.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { isRunning } from './support/proc.js';
import { waitFor } from './support/wait.js';

const ENV: Readonly<Record<string, string>> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'emperor-exec-helper-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A probe script that records its own pid and a grandchild's (a sleep in its group), then hangs. */
async function hangingProbe(name: string): Promise<{ file: string; leaderFile: string; grandchildFile: string }> {
  const file = path.join(dir, `${name}.sh`);
  const leaderFile = path.join(dir, `${name}.leader`);
  const grandchildFile = path.join(dir, `${name}.grandchild`);
  // Written to a temporary name and renamed, so a reader never sees half a pid.
  await writeFile(file, `#!/bin/sh\necho $$ > "$1.tmp" && mv "$1.tmp" "$1"\nsleep 1000 &\necho $! > "$2.tmp" && mv "$2.tmp" "$2"\nwait\n`, { mode: 0o755 });
  return { file, leaderFile, grandchildFile };
}

async function readPid(file: string): Promise<number> {
  let pid = 0;
  await waitFor(async () => {
    pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    return Number.isInteger(pid) && pid > 1;
  }, `a pid in ${file}`);
  return pid;
}

/** Children of `parent` whose command line mentions `marker`. */
async function childrenWith(parent: number, marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(marker)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('exec-probe helper', () => {
  it('a killed helper fails its in-flight probes, kills their groups, and is replaced for the next probe', async () => {
    const { file, leaderFile, grandchildFile } = await hangingProbe('helper-killed');
    const pending = runProbe({ kind: 'exec', argv: [file, leaderFile, grandchildFile] }, { timeoutMs: 120_000, cwd: dir, env: ENV });
    const leader = await readPid(leaderFile);
    const grandchild = await readPid(grandchildFile);
    const helpers = await childrenWith(process.pid, 'exec-helper.js');
    assert.equal(helpers.length, 1, `one helper process, found ${helpers.join(', ')}`);
    process.kill(helpers[0]!, 'SIGKILL');

    const result = await pending;
    assert.equal(result.status, 'critical');
    assert.match(result.output, /^exec probe helper failed: killed by SIGKILL$/);
    await waitFor(() => !isRunning(leader) && !isRunning(grandchild), `probe ${leader} and its grandchild ${grandchild} to be gone`);

    assert.deepEqual(await runProbe({ kind: 'exec', argv: ['sh', '-c', 'echo again'] }, { timeoutMs: 60_000, cwd: dir, env: ENV }), { status: 'passing', output: 'again\n' });
    const replaced = await childrenWith(process.pid, 'exec-helper.js');
    assert.equal(replaced.length, 1);
    assert.notEqual(replaced[0], helpers[0]);
  });

  it('without a private directory for output sockets, probes still run, their output joined by a shell', async () => {
    // Kill the running helper so the next probe starts one that cannot make its directory.
    const helpers = await childrenWith(process.pid, 'exec-helper.js');
    for (const pid of helpers) process.kill(pid, 'SIGKILL');
    // Gone from /proc: reaped, so the emperor's side has seen it exit.
    await waitFor(() => helpers.every((pid) => !existsSync(`/proc/${pid}`)), 'the helper to be reaped');
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = path.join(dir, 'no-such-dir');
    try {
      const result = await runProbe({ kind: 'exec', argv: ['sh', '-c', 'echo one; echo two >&2; echo three; exit 1'] }, { timeoutMs: 60_000, cwd: dir, env: ENV });
      assert.deepEqual(result, { status: 'warning', output: 'one\ntwo\nthree\n' });
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
  });

  it('starts a second helper only when probes overlap, and no more than one per 16 probe slots', async () => {
    const controller = new AbortController();
    const ctx = { timeoutMs: 120_000, cwd: dir, env: ENV, signal: controller.signal };
    const before = await childrenWith(process.pid, 'exec-helper.js');
    assert.ok(before.length <= 1, `at most one idle helper before: ${before.join(', ')}`);
    // The default budget is 32 slots: two helpers at most.
    const marks = [0, 1, 2, 3].map((i) => path.join(dir, `overlap-${i}.pid`));
    const runs = marks.map((mark) => runProbe({ kind: 'exec', argv: ['sh', '-c', 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1"; exec sleep 1000', 'sh', mark] }, ctx));
    try {
      const pids = await Promise.all(marks.map((mark) => readPid(mark)));
      const helpers = await childrenWith(process.pid, 'exec-helper.js');
      assert.equal(helpers.length, 2, `two helpers for four probes at once: ${helpers.join(', ')}`);
      const parents = new Set(pids.map((pid) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1])));
      assert.deepEqual([...parents].sort(), [...helpers].sort(), 'the probes are spread over both');
    } finally {
      controller.abort();
    }
    for (const r of await Promise.all(runs)) assert.deepEqual(r, { status: 'critical', output: 'aborted' });
  });

  it('a SIGKILLed emperor leaves no probe and no grandchild of a probe behind', async () => {
    const { file, leaderFile, grandchildFile } = await hangingProbe('emperor-killed');
    const emp = await EmperorUnderTest.start(await makeWorkspace());
    await emp.writeVassal('probed.json', {
      command: ['sleep', '1000'],
      checks: [{ name: 'hangs', exec: [file, leaderFile, grandchildFile], interval: '10m', timeout: '10m' }],
    });
    let leader: number;
    let grandchild: number;
    try {
      leader = await readPid(leaderFile);
      grandchild = await readPid(grandchildFile);
    } finally {
      await emp.stop('SIGKILL');
    }
    await waitFor(() => !isRunning(leader) && !isRunning(grandchild), `probe ${leader} and its grandchild ${grandchild} to be gone after the emperor was SIGKILLed`);
  });
});
