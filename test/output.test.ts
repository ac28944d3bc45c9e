// Output is bounded (issue 10): logs rotate by size under a fast writer, are reopened for an
// external logrotate, count what a full disk drops, and mirroring is rate-limited per vassal.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { waitFor } from './support/wait.js';

const node = process.execPath;

/**
 * Writes `mb` MiB of numbered 100-byte lines as fast as the pipe takes them, then "DONE". After
 * every STEP_MB it creates `at-K` in the sync directory and waits for the test's `go-K`: the test
 * samples the log directory at each of those points however fast the emperor is (with one
 * sample per 20 ms poll only, a fast machine finished the 60 MiB within 18 samples).
 */
const STEP_MB = 4;
const FLOOD = `
const fs = require('node:fs');
const mb = Number(process.argv[1]);
const sync = process.argv[2];
const step = ${STEP_MB} * 1024 * 1024;
const line = (i) => ('line ' + i + ' ').padEnd(99, 'x') + '\\n';
let i = 0;
const chunk = () => { let s = ''; for (let k = 0; k < 655; k++) s += line(i++); return s; };
const total = mb * 1024 * 1024;
let written = 0;
let nextStop = step;
function pause(k) {
  fs.writeFileSync(sync + '/at-' + k, '');
  const wait = () => (fs.existsSync(sync + '/go-' + k) ? go() : setTimeout(wait, 2));
  wait();
}
function go() {
  while (written < total) {
    if (written >= nextStop) {
      const k = nextStop / step;
      nextStop += step;
      return pause(k);
    }
    const c = chunk();
    written += c.length;
    if (!process.stdout.write(c)) return process.stdout.once('drain', go);
  }
  process.stdout.write('DONE ' + i + '\\n', () => setInterval(() => {}, 1 << 30));
}
go();
`;

function rssKb(pid: number): number {
  return Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

/** Sizes of NAME.log and NAME.log.N in dir. */
function logFiles(dir: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of fs.readdirSync(dir)) {
    if (f !== `${name}.log` && !f.startsWith(`${name}.log.`)) continue;
    try {
      out.set(f, fs.statSync(path.join(dir, f)).size);
    } catch {
      // rotated away between readdir and stat
    }
  }
  return out;
}

describe('vassal logs', { timeout: 180_000 }, () => {
  const emperors: EmperorUnderTest[] = [];
  after(async () => {
    await Promise.all(emperors.map((e) => e.stop()));
  });
  const start = async (args: string[] = [], ws?: Awaited<ReturnType<typeof makeWorkspace>>) => {
    const emp = await EmperorUnderTest.start(ws ?? (await makeWorkspace()), args);
    emperors.push(emp);
    return emp;
  };

  it('rotate by size under a fast writer: never more than max_size × (keep + 1), RSS flat, nothing dropped', async () => {
    const emp = await start();
    const maxSize = 1024 * 1024;
    const keep = 2;
    const mb = 60;
    const sync = path.join(emp.ws.root, 'flood-sync');
    fs.mkdirSync(sync);
    await emp.writeVassal('flood.json', { command: [node, '-e', FLOOD, String(mb), sync], logs: { max_size: '1M', keep }, start: { ready: { delay: '10ms' } } });
    await emp.waitEvent('flood', 'spawned', 0, 30_000);
    const logs = emp.ws.logs;
    const rss: number[] = [];
    let samples = 0;
    let pauses = 0;
    let maxTotal = 0;
    let maxFiles = 0;
    const last = (): string => {
      try {
        return fs.readFileSync(path.join(logs, 'flood.log'), 'utf8');
      } catch {
        return '';
      }
    };
    // Sample the directory as often as the loop allows until the writer is done, and at each of
    // its pauses before letting it go on.
    await waitFor(
      () => {
        const files = logFiles(logs, 'flood');
        const total = [...files.values()].reduce((a, b) => a + b, 0);
        maxTotal = Math.max(maxTotal, total);
        maxFiles = Math.max(maxFiles, files.size);
        for (const [f, size] of files) assert.ok(size <= maxSize, `${f} is ${size} bytes, over max_size`);
        samples++;
        if (samples % 10 === 0) rss.push(rssKb(emp.pid));
        const k = pauses + 1;
        if (fs.existsSync(path.join(sync, `at-${k}`))) {
          rss.push(rssKb(emp.pid));
          pauses = k;
          fs.writeFileSync(path.join(sync, `go-${k}`), '');
        }
        return /DONE \d+\n$/.test(last());
      },
      'the writer to finish',
      120_000,
    );
    assert.equal(pauses, Math.ceil(mb / STEP_MB) - 1, 'the directory was sampled at every pause of the writer');
    assert.ok(maxTotal <= maxSize * (keep + 1), `the logs took ${maxTotal} bytes at most, limit ${maxSize * (keep + 1)}`);
    assert.ok(maxFiles <= keep + 1, `${maxFiles} log files at once`);
    // Rotated files end at a line boundary: the cut is after the last whole line that fits.
    for (let i = 1; i <= keep; i++) {
      const text = fs.readFileSync(path.join(logs, `flood.log.${i}`), 'utf8');
      assert.ok(text.endsWith('\n') && /^line \d+ x+$/.test(text.split('\n')[0]!), `flood.log.${i} holds whole lines`);
    }
    const lines = Number(/DONE (\d+)/.exec(last())?.[1]);
    assert.ok(lines * 100 >= mb * 1024 * 1024, 'the writer wrote everything');
    const status = await emp.vassal('flood');
    assert.equal(status.output.droppedBytes, 0);
    // Flat: the emperor never held more than a bounded queue of the 60 MiB that went through.
    const first = rss[0] ?? rssKb(emp.pid);
    const peak = Math.max(...rss, rssKb(emp.pid));
    assert.ok(peak - first < 40 * 1024, `RSS grew from ${first} kB to ${peak} kB while ${mb} MiB went through`);
  });

  it('reopen-logs and SIGUSR1: after logrotate moves the file, output goes to a new one and nothing is lost', async () => {
    const emp = await start();
    const tick = `let i = 0; setInterval(() => console.log('tick ' + i++), 20);`;
    await emp.writeVassal('ticker.json', { command: [node, '-e', tick], logs: { max_size: 0 }, start: { ready: { delay: '10ms' } } });
    const log = path.join(emp.ws.logs, 'ticker.log');
    await waitFor(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('tick 3\n'), 'ticks in the log', 30_000);

    // As logrotate does: move the file, then run the postrotate command.
    fs.renameSync(log, `${log}.1`);
    const cli = await emp.cli(['reopen-logs']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /reopened 1 vassal log/);
    await waitFor(() => fs.existsSync(log) && /tick \d+\n/.test(fs.readFileSync(log, 'utf8')), 'a new log file with ticks', 30_000);
    const sizeMoved = fs.statSync(`${log}.1`).size;

    fs.renameSync(log, `${log}.2`);
    process.kill(emp.pid, 'SIGUSR1');
    await waitFor(() => fs.existsSync(log) && /tick \d+\n/.test(fs.readFileSync(log, 'utf8')), 'a new log file after SIGUSR1', 30_000);
    await emp.waitFor((e) => e.event === 'reopen-logs', 'the reopen is logged', 0, 30_000);
    assert.equal(fs.statSync(`${log}.1`).size, sizeMoved, 'nothing is written to a moved file after the reopen');
    // Every tick is in exactly one of the three files, in order.
    await waitFor(() => /tick \d+\n/.test(fs.readFileSync(log, 'utf8')), 'ticks after the second reopen', 30_000);
    const ticks = [`${log}.1`, `${log}.2`, log].flatMap((f) => [...fs.readFileSync(f, 'utf8').matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1])));
    assert.deepEqual(
      ticks,
      ticks.map((_, i) => i),
      'no tick lost or repeated across the reopens',
    );
    assert.equal((await emp.vassal('ticker')).output.droppedBytes, 0);
  });

  it('a full disk: output is dropped, counted in status, reported once, and writing resumes when space returns', { skip: process.getuid?.() !== 0 ? 'needs root to mount a tmpfs' : false }, async () => {
    const ws = await makeWorkspace();
    fs.mkdirSync(ws.logs);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0750', 'tmpfs', ws.logs]);
    // This test's own emperor and mount are cleaned up here, in that order, so a failure of
    // either is reported under this test's name.
    let emp: EmperorUnderTest | undefined;
    try {
      emp = await EmperorUnderTest.start(ws, []);
      // 1 KiB lines, 200 a second: the 256 KiB disk is full within about a second.
      const writer = `const l = 'y'.repeat(1023) + '\\n'; let i = 0; setInterval(() => { for (let k = 0; k < 20; k++) process.stdout.write(l); i++; }, 100);`;
      await emp.writeVassal('full.json', { command: [node, '-e', writer], logs: { max_size: 0 }, start: { ready: { delay: '10ms' } } });
      const dropped = await emp.waitEvent('full', 'output-dropped', 0, 30_000);
      assert.match(dropped.message, /ENOSPC/);
      await waitFor(async () => (await emp!.vassal('full')).output.droppedBytes > 20 * 1024, 'dropped bytes counted in status', 30_000);
      const status = await emp.cli(['status', 'full']);
      assert.match(status.stdout, /dropped output\s+\d+ bytes/);

      // Space returns (an operator truncates the log): writing resumes, and the episode is summed up.
      const since = emp.mark();
      fs.truncateSync(path.join(ws.logs, 'full.log'), 0);
      const resumed = await emp.waitEvent('full', 'output-resumed', since, 30_000);
      assert.ok(Number(resumed.dropped_bytes) > 0);
      assert.equal(emp.events('full', 'output-dropped').length, 1, 'reported once for the whole episode');
      assert.ok((await emp.vassal('full')).output.droppedBytes >= Number(resumed.dropped_bytes));
      assert.equal(emp.child.exitCode, null);
    } finally {
      try {
        await emp?.stop();
      } finally {
        execFileSync('umount', [ws.logs]);
      }
    }
  });

  it('mirroring is rate-limited per vassal; what is held back is counted and still in the log file', async () => {
    const emp = await start(['--mirror-output', '--mirror-rate', '10']);
    const ws = emp.ws;
    const go = path.join(ws.root, 'go');
    const script = `i=0; while [ $i -lt 5000 ]; do echo "noisy $i"; i=$((i+1)); done; while [ ! -e ${go} ]; do sleep 0.05; done; sleep 5.5; echo after; exec sleep 1000`;
    await emp.writeVassal('noisy.json', { command: ['/bin/sh', '-c', script], start: { ready: { delay: '10ms' } } });
    await emp.writeVassal('quiet.json', { command: ['/bin/sh', '-c', 'echo hello from quiet; exec sleep 1000'], start: { ready: { delay: '10ms' } } });
    const log = path.join(ws.logs, 'noisy.log');
    await waitFor(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('noisy 4999\n'), 'all 5000 lines in the log file', 30_000);
    await emp.waitEvent('noisy', 'mirror-suppressed', 0, 30_000);
    // Another vassal's lines are not held back by the noisy one.
    await emp.waitFor((e) => e.event === 'output' && e.vassal === 'quiet' && e.message === 'hello from quiet', 'the quiet vassal mirrored', 0, 30_000);
    const held = (await emp.vassal('noisy')).output.mirrorSuppressedBytes;
    assert.ok(held > 0, 'held-back bytes are counted');
    // The episode ends at a line after a quiet spell that refills the burst (50 lines at 10/s: 5 s).
    fs.writeFileSync(go, '');
    const resumed = await emp.waitEvent('noisy', 'mirror-resumed', 0, 30_000);
    assert.equal(resumed.suppressed_bytes, held);
    await emp.waitFor((e) => e.event === 'output' && e.vassal === 'noisy' && e.message === 'after', 'mirroring resumes', 0, 30_000);
    const mirrored = emp.events('noisy', 'output').length;
    assert.ok(mirrored < 1000, `${mirrored} of 5001 lines mirrored at 10 lines/s`);
    assert.equal(emp.events('noisy', 'mirror-suppressed').length, 1, 'the suppression is reported once');
  });
});
