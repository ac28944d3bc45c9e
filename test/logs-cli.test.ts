// `emperor logs` (issue 16): the last lines of one, several or all vassals, and -f following
// across rotation (by size, and by an external logrotate plus reopen-logs), stopped by Ctrl-C.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace, runCli } from './support/emperor.js';
import { binEmperor } from './support/paths.js';
import { waitFor } from './support/wait.js';

const node = process.execPath;

/** Prints "line 0" … "line 199", then "DONE", then idles. */
const BURST = `for (let i = 0; i < 200; i++) console.log('line ' + i); console.log('DONE'); setInterval(() => {}, 1 << 30);`;
/** Prints "tick N" with N counting up, every 20 ms, forever. */
const TICKER = `let i = 0; setInterval(() => console.log('tick ' + i++), 20);`;

/** A running `emperor logs ... -f`, its output collected. */
class Follower {
  out = '';
  err = '';
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }
  static start(args: string[]): Follower {
    return new Follower(spawn(node, [binEmperor, 'logs', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }
  ticks(): number[] {
    return [...this.out.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
  }
}

describe('emperor logs', { timeout: 240_000 }, () => {
  const emperors: EmperorUnderTest[] = [];
  const followers: Follower[] = [];
  after(async () => {
    for (const f of followers) f.child.kill('SIGKILL');
    await Promise.all(emperors.map((e) => e.stop()));
  });

  const start = async (): Promise<EmperorUnderTest> => {
    const emp = await EmperorUnderTest.start(await makeWorkspace('emperor-logs-'));
    emperors.push(emp);
    return emp;
  };
  const logHas = async (emp: EmperorUnderTest, name: string, text: string): Promise<boolean> =>
    (await fs.readFile(path.join(emp.ws.logs, `${name}.log`), 'utf8').catch(() => '')).includes(text);

  it('prints the last N lines of one vassal, and of several or all with a prefix', async () => {
    const emp = await start();
    for (const name of ['a', 'b']) await emp.writeVassal(`${name}.json`, { command: [node, '-e', BURST] });
    for (const name of ['a', 'b']) await waitFor(() => logHas(emp, name, 'DONE'), `${name} printed DONE`);

    const one = await emp.cli(['logs', 'a', '--lines', '3']);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, 'line 198\nline 199\nDONE\n');

    const def = await emp.cli(['logs', 'a']);
    assert.equal(def.stdout.split('\n').length - 1, 100, 'the default is 100 lines');
    assert.ok(def.stdout.startsWith('line 101\n'));

    const both = await emp.cli(['logs', 'b', 'a', '-n', '2']);
    assert.equal(both.stdout, 'b | line 199\nb | DONE\na | line 199\na | DONE\n');

    const all = await emp.cli(['logs', '--lines', '1']);
    assert.equal(all.stdout, 'a | DONE\nb | DONE\n');

    const unknown = await emp.cli(['logs', 'nope']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no vassal named "nope"/);
    assert.equal(unknown.stdout, '');

    const bad = await emp.cli(['logs', 'a', '--lines', '-4']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--lines: expected a whole number/);

    const none = await runCli(['logs', '--state-dir', path.join(emp.ws.root, 'elsewhere')]);
    assert.equal(none.code, 3);
    assert.match(none.stderr, /no emperor is running/);
  });

  it('--lines N beyond the current file reads back into NAME.log.1, NAME.log.2 … in order', async () => {
    const emp = await start();
    // 400 lines of 30 bytes (12 KB) into files of 4 KB: the current file and three rotated ones.
    const rows = `for (let i = 0; i < 400; i++) console.log('row ' + String(i).padStart(4, '0') + ' ' + 'x'.repeat(20)); console.log('DONE'); setInterval(() => {}, 1 << 30);`;
    await emp.writeVassal('r.json', { command: [node, '-e', rows], logs: { max_size: '4KB', keep: 5 } });
    await waitFor(() => logHas(emp, 'r', 'DONE'), 'r printed DONE');
    const expected = (from: number): string =>
      Array.from({ length: 400 - from }, (_, k) => `row ${String(from + k).padStart(4, '0')} ${'x'.repeat(20)}\n`).join('') + 'DONE\n';
    const current = await fs.readFile(path.join(emp.ws.logs, 'r.log'), 'utf8');
    const inCurrent = current.split('\n').length - 1;
    assert.ok(inCurrent < 200, `the current file holds only the last ${inCurrent} lines`);
    await fs.access(path.join(emp.ws.logs, 'r.log.2'));

    const some = await emp.cli(['logs', 'r', '--lines', '301']);
    assert.equal(some.code, 0, some.stderr);
    assert.equal(some.stdout, expected(100), 'the last 301 lines, across the rotated files, in order');

    const all = await emp.cli(['logs', 'r', '--lines', '10000']);
    assert.equal(all.stdout, expected(0), 'everything the rotated files still hold, oldest first');
  });

  it('-f follows across size rotation and an external logrotate, every line once, and stops cleanly on Ctrl-C', async () => {
    const emp = await start();
    // Rotates every few hundred lines: the follower crosses many rotations.
    await emp.writeVassal('t.json', { command: [node, '-e', TICKER], logs: { max_size: '4KB', keep: 2 } });
    await emp.waitEvent('t', 'spawned');
    await waitFor(() => logHas(emp, 't', 'tick 3\n'), 't printed');

    const f = Follower.start(['t', '-f', '--lines', '2', '--state-dir', emp.ws.state]);
    followers.push(f);
    await waitFor(() => f.ticks().length >= 3, 'the follower printed lines');

    // Size rotation: t.log.1 appears (again) while following.
    const rotatedPast = (n: number) => () => Math.max(...f.ticks()) > n;
    const first = Math.max(...f.ticks());
    await waitFor(rotatedPast(first + 600), 'the follower went on across size rotations');

    // An external logrotate: the file is moved away, then the emperor is told to reopen.
    await fs.rename(path.join(emp.ws.logs, 't.log'), path.join(emp.ws.logs, 'moved.log'));
    const reopened = await emp.cli(['reopen-logs']);
    assert.equal(reopened.code, 0, reopened.stderr);
    await waitFor(() => logHas(emp, 't', 'tick'), 'a new t.log was opened');
    const newFirst = Number(/tick (\d+)/.exec(await fs.readFile(path.join(emp.ws.logs, 't.log'), 'utf8'))![1]);
    await waitFor(rotatedPast(newFirst + 20), 'the follower printed lines written to the reopened file');

    f.child.kill('SIGINT');
    const code = await f.exited;
    assert.equal(code, 0, `exit code after Ctrl-C (stderr: ${f.err})`);
    assert.equal(f.err, '');
    // Every line exactly once, in order: none lost or repeated at a rotation or at the start.
    const ticks = f.ticks();
    assert.ok(ticks.length > 600);
    for (let i = 1; i < ticks.length; i++) assert.equal(ticks[i], ticks[0]! + i, `line ${i} of the follower: tick ${ticks[i]} after tick ${ticks[i - 1]}`);
    assert.equal(f.out.split('\n').length - 1, ticks.length, 'only tick lines, no prefix for one vassal');
  });

  it('-f with no names follows every vassal, also one deployed later', async () => {
    const emp = await start();
    await emp.writeVassal('x.json', { command: [node, '-e', TICKER] });
    await waitFor(() => logHas(emp, 'x', 'tick 1\n'), 'x printed');
    const f = Follower.start(['-f', '--lines', '0', '--state-dir', emp.ws.state]);
    followers.push(f);
    await waitFor(() => /^x \| tick \d+$/m.test(f.out), 'x followed with a prefix');
    await emp.writeVassal('late.json', { command: [node, '-e', TICKER] });
    await waitFor(() => /^late \| tick \d+$/m.test(f.out), 'a vassal deployed after the follow began is followed too');
    f.child.kill('SIGINT');
    assert.equal(await f.exited, 0);
  });
});
