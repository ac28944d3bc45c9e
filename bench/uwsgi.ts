// Section "uwsgi": a real uWSGI (Debian's uwsgi + python3 plugin) serving a tiny WSGI app from an
// .ini vassal, run by this emperor over the Emperor protocol, next to the same file under
// `uwsgi --emperor` (its fastest scan, --emperor-freq 1).
//
// - deploy → ready: file renamed into the directory → the vassal's first HTTP 200 (for this
//   emperor also → its `ready` event, which is uWSGI's byte 5);
// - stop: file removed → the uWSGI master gone. uWSGI's own graceful shutdown (the same master
//   told to stop by SIGINT, the path byte 0 takes inside uWSGI) is measured alone; the target is
//   that + 100 ms.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { PART_TIMEOUT_MS, STEP_TIMEOUT_MS, quietRow, rowsFor, stopAndReport, summary } from './common.js';
import { BenchEmperor, addCleanup, makeWorkspace, type Workspace } from './harness.js';
import type { Row, Section, SectionContext } from './types.js';
import { fmtMs, isGone, now, sleep, withTimeout } from './util.js';

const SECTION = 'uwsgi';
const { row, check, errorRow } = rowsFor(SECTION);

const ROUNDS = 8;
const STOP_OVERHEAD_TARGET_MS = 100;

const APP = `def application(env, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
`;

const which = (bin: string): string | undefined => {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
};

function ini(ws: Workspace, name: string, port: number): string {
  return [
    '[uwsgi]',
    'plugin = python3',
    `http-socket = 127.0.0.1:${port}`,
    `wsgi-file = ${path.join(ws.root, 'app.py')}`,
    'master = true',
    'processes = 1',
    `pidfile = ${path.join(ws.root, 'pids', `${name}.pid`)}`,
    'emperor-stop-timeout = 30s',
    '',
  ].join('\n');
}

/** One HTTP GET; true on a 200. */
function ok200(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Polls until the vassal answers; the time it first did. */
async function firstAnswer(port: number): Promise<number> {
  const deadline = now() + STEP_TIMEOUT_MS;
  for (;;) {
    if (await ok200(port)) return now();
    if (now() > deadline) throw new Error(`no HTTP answer on port ${port} within ${STEP_TIMEOUT_MS} ms`);
    await sleep(2);
  }
}

async function pidOf(ws: Workspace, name: string): Promise<number> {
  const deadline = now() + STEP_TIMEOUT_MS;
  for (;;) {
    const n = Number((await fs.readFile(path.join(ws.root, 'pids', `${name}.pid`), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(n) && n > 0) return n;
    if (now() > deadline) throw new Error(`no pid file for ${name}`);
    await sleep(5);
  }
}

async function goneAt(pid: number): Promise<number> {
  const deadline = now() + STEP_TIMEOUT_MS * 2;
  while (!isGone(pid)) {
    if (now() > deadline) throw new Error(`uWSGI master ${pid} still there after ${STEP_TIMEOUT_MS * 2} ms`);
    await sleep(1);
  }
  return now();
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** SIGKILL a process group that may already be gone. */
function killGroup(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

async function workspace(prefix: string): Promise<Workspace> {
  const ws = await makeWorkspace(prefix);
  await fs.mkdir(path.join(ws.root, 'pids'));
  await fs.writeFile(path.join(ws.root, 'app.py'), APP);
  return ws;
}

/** Drop the file (a rename, as deploy tools do); t0 is the rename. */
async function drop(ws: Workspace, name: string, port: number): Promise<number> {
  const tmp = path.join(ws.root, `${name}.ini.tmp`);
  await fs.writeFile(tmp, ini(ws, name, port));
  const t0 = now();
  await fs.rename(tmp, path.join(ws.vassals, `${name}.ini`));
  return t0;
}

/** uWSGI alone: the same file, started by hand, stopped with SIGINT (uWSGI's stop, as byte 0 is). */
async function ownShutdown(ws: Workspace, bin: string): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const port = await freePort();
    const file = path.join(ws.root, `alone${i}.ini`);
    await fs.writeFile(file, ini(ws, `alone${i}`, port));
    const child = spawn(bin, ['--ini', file], { stdio: 'ignore', detached: true });
    const kill = addCleanup(`uwsgi alone ${i}`, () => Promise.resolve(killGroup(child.pid)));
    await firstAnswer(port);
    const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(now())));
    const t0 = now();
    child.kill('SIGINT');
    samples.push((await withTimeout(exited, STEP_TIMEOUT_MS * 2, 'uWSGI to exit on SIGINT')) - t0);
    await kill();
  }
  return samples;
}

async function underThisEmperor(ws: Workspace, ctx: SectionContext): Promise<{ ready: number[]; answer: number[]; stop: number[]; rows: Row[] }> {
  const emp = await BenchEmperor.start('uwsgi emperor', ws);
  const ready: number[] = [];
  const answer: number[] = [];
  const stop: number[] = [];
  let rows: Row[] = [];
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const name = `v${i}`;
      const port = await freePort();
      let readyAt = 0;
      const readyEvent = emp.waitFor((e) => e.event === 'ready' && e.vassal === name, `${name} ready`, STEP_TIMEOUT_MS).then(() => (readyAt = now()));
      const t0 = await drop(ws, name, port);
      const answeredAt = await firstAnswer(port);
      await readyEvent;
      ready.push(readyAt - t0);
      answer.push(answeredAt - t0);
      const pid = await pidOf(ws, name);
      const t1 = now();
      await fs.unlink(path.join(ws.vassals, `${name}.ini`));
      stop.push((await goneAt(pid)) - t1);
      await emp.waitFor((e) => e.event === 'stopped' && e.vassal === name, `${name} stopped`, STEP_TIMEOUT_MS);
      ctx.progress(`this emperor, round ${i + 1}/${ROUNDS}: ready ${fmtMs(ready[i]!)}, stop ${fmtMs(stop[i]!)}`);
    }
  } finally {
    rows = await stopAndReport(SECTION, emp, 'uwsgi', ctx);
  }
  return { ready, answer, stop, rows };
}

async function underUwsgiEmperor(ws: Workspace, bin: string, ctx: SectionContext): Promise<{ answer: number[]; stop: number[] }> {
  const child = spawn(bin, ['--emperor', ws.vassals, '--emperor-freq', '1'], { stdio: 'ignore', cwd: ws.root, detached: true });
  const dispose = addCleanup('uwsgi --emperor', async () => {
    if (child.pid && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGINT');
      await withTimeout(exited, 30_000, 'uWSGI Emperor to exit').catch(() => killGroup(child.pid));
    }
  });
  const answer: number[] = [];
  const stop: number[] = [];
  try {
    await sleep(500); // its first scan of the (empty) directory
    for (let i = 0; i < ROUNDS; i++) {
      const name = `u${i}`;
      const port = await freePort();
      const t0 = await drop(ws, name, port);
      answer.push((await firstAnswer(port)) - t0);
      const pid = await pidOf(ws, name);
      const t1 = now();
      await fs.unlink(path.join(ws.vassals, `${name}.ini`));
      stop.push((await goneAt(pid)) - t1);
      ctx.progress(`uwsgi --emperor, round ${i + 1}/${ROUNDS}: first answer ${fmtMs(answer[i]!)}, stop ${fmtMs(stop[i]!)}`);
    }
  } finally {
    await dispose();
  }
  return { answer, stop };
}

const p = (xs: readonly number[]): string => {
  const s = summary(xs);
  return `p50 ${fmtMs(s.p50)}, max ${fmtMs(s.max)} (n=${s.n})`;
};

async function measure(ctx: SectionContext): Promise<Row[]> {
  const bin = which('uwsgi');
  if (!bin || spawnSync('sh', ['-c', 'test -e /usr/lib/uwsgi/plugins/python3_plugin.so']).status !== 0) {
    return [row('uWSGI', 'not installed (Debian packages uwsgi and uwsgi-plugin-python3; scripts/setup.sh installs them)')];
  }
  const rows: Row[] = [];
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
  rows.push(await quietRow(SECTION, ctx, 'the uWSGI runs'));
  const own = await ownShutdown(await workspace('emperor-bench-uwsgi-alone-'), bin);
  rows.push(row(`uWSGI ${version} alone: graceful shutdown (SIGINT → master gone)`, p(own)));
  const mine = await underThisEmperor(await workspace('emperor-bench-uwsgi-'), ctx);
  rows.push(row('this emperor: .ini dropped → ready (byte 5)', p(mine.ready)));
  rows.push(row('this emperor: .ini dropped → first HTTP 200', p(mine.answer)));
  rows.push(row('this emperor: .ini removed → uWSGI master gone', p(mine.stop)));
  const overhead = summary(mine.stop).p50 - summary(own).p50;
  rows.push(check('this emperor: stop minus uWSGI\'s own shutdown (p50)', fmtMs(overhead), `≤ ${STOP_OVERHEAD_TARGET_MS} ms`, overhead <= STOP_OVERHEAD_TARGET_MS));
  rows.push(...mine.rows);
  const theirs = await underUwsgiEmperor(await workspace('emperor-bench-uwsgi-emperor-'), bin, ctx);
  rows.push(row('uwsgi --emperor (--emperor-freq 1): .ini dropped → first HTTP 200', p(theirs.answer)));
  rows.push(row('uwsgi --emperor (--emperor-freq 1): .ini removed → uWSGI master gone', p(theirs.stop)));
  return rows;
}

export const uwsgi: Section = {
  name: SECTION,
  title: 'uWSGI .ini vassals: deploy → ready and stop, next to uwsgi --emperor',
  async run(ctx) {
    try {
      return await withTimeout(measure(ctx), PART_TIMEOUT_MS * 2, 'section uwsgi');
    } catch (err) {
      return [errorRow('uwsgi section', err)];
    }
  },
};
