// Section "peers" (`npm run bench -- --peers`): the emperor side by side with PM2, supervisord and
// the uWSGI Emperor, in one run on one machine, the same scenario for each (issue 13).
//
// Every app is the same tiny shell script (PEER_APP below): it opens its FIFO, writes the time
// (`date +%s%N`) into it, then execs `sleep`. The bench holds the FIFO's read end, so:
//   - "process exists" is the timestamp the app wrote (a marker, not a poll);
//   - "process gone" is the FIFO's end of file, which the kernel delivers when the last process
//     holding the write end (the app, now `sleep`) has died: an event, not a poll.
// A peer whose program is not installed is skipped and the table says so.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { PARSER_IDLE_MS } from '../src/config/parse-pool.js';
import { BenchEmperor, addCleanup, makeWorkspace, type Workspace } from './harness.js';
import type { Row, RowStatus, Section, SectionContext } from './types.js';
import { FloorSpawner } from './floor.js';
import { cpuNs, fmtMs, loadAvg, machineBusyPct, machineTicks, percentile, sleep, statusKb, waitForQuiet, which, withTimeout } from './util.js';

const SECTION = 'peers';
const SINGLES = 30;
const BULK = 200;
/**
 * From the 200 up to the idle CPU window and the RSS, the same for every peer: past the
 * emperor's clean-up after a burst (its parse worker stops 10 s after its last file), so
 * "idle" is idle and not that clean-up.
 */
const IDLE_SETTLE_MS = 3000 + PARSER_IDLE_MS;
const IDLE_WINDOW_MS = 10_000;
/** One app up or gone may take this long (a polling peer needs seconds). */
const STEP_TIMEOUT_MS = 40_000;
const BULK_TIMEOUT_MS = 60_000;

/** Wall-clock milliseconds with sub-millisecond resolution, comparable with `date +%s%N`. */
const wallMs = (): number => performance.timeOrigin + performance.now();

/**
 * The app. Argument: its name (PM2, supervisord, the emperor) or `--ini NAME.ini` (what the
 * uWSGI Emperor passes to a vassal binary). Under the uWSGI Emperor it speaks that emperor's
 * protocol the way a uWSGI vassal does: it exits when the emperor writes its stop byte (0) or
 * goes away, so it stays a shell reading its emperor pipe instead of becoming `sleep` (without
 * that, the uWSGI Emperor SIGKILLs a removed vassal only after its 30 s curse tolerance).
 */
const PEER_APP = (fifoDir: string): string => `#!/bin/sh
if [ "$1" = --ini ]; then n=\${2##*/}; n=\${n%.ini}; else n=$1; fi
exec 3>"${fifoDir}/$n.fifo"
date +%s%N >&3
# Under the uWSGI Emperor only (this emperor gives every vassal UWSGI_EMPEROR_FD too, on fd 3).
# In bash: dash redirects only fds 0-9, and the uWSGI Emperor's fd is above 9 once it has more
# than a handful of vassals (with sh, 196 of 200 apps died at once with "Bad fd number").
if [ "$1" = --ini ]; then
  exec bash -c 'exec 0<&"$UWSGI_EMPEROR_FD"
    while b=$(head -c 1 | od -An -tu1 | tr -d " ") && [ -n "$b" ]; do [ "$b" = 0 ] && exit 0; done
    exit 0'
fi
exec sleep 1000000
`;

/** What the bench sees of one app: when it started (its marker) and when it was gone. */
class Marker {
  upAt: number | undefined;
  goneAt: number | undefined;
  private readonly sock: net.Socket;
  private buf = '';
  private upWaiters: Array<() => void> = [];
  private goneWaiters: Array<() => void> = [];

  constructor(fifo: string) {
    // Non-blocking, so the open does not wait for a writer; no end of file is reported before
    // a writer has come and gone (Linux tracks that per open FIFO).
    const fd = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    this.sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock.setEncoding('utf8');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      const nl = this.buf.indexOf('\n');
      if (nl < 0 || this.upAt !== undefined) return;
      const ns = BigInt(this.buf.slice(0, nl).trim());
      this.upAt = Number(ns / 1000n) / 1000;
      for (const w of this.upWaiters.splice(0)) w();
    });
    this.sock.on('end', () => {
      this.goneAt = wallMs();
      for (const w of this.goneWaiters.splice(0)) w();
      this.sock.destroy();
    });
    this.sock.on('error', () => undefined);
  }

  up(): Promise<void> {
    return this.upAt !== undefined ? Promise.resolve() : new Promise((resolve) => this.upWaiters.push(resolve));
  }

  gone(): Promise<void> {
    return this.goneAt !== undefined ? Promise.resolve() : new Promise((resolve) => this.goneWaiters.push(resolve));
  }

  close(): void {
    this.sock.destroy();
  }
}

/** One supervisor under test. Every action resolves once it has been handed over (not when done). */
interface Peer {
  readonly label: string;
  /** Why it cannot run here, or undefined. */
  missing(): string | undefined;
  start(ws: PeerWorkspace): Promise<void>;
  /** The supervisor's own processes (RSS and CPU are summed over them). */
  pids(): number[];
  deploy(names: readonly string[]): Promise<void>;
  remove(names: readonly string[]): Promise<void>;
  stop(): Promise<void>;
  /** What the supervisor complained about, when something went wrong. */
  trouble?(): string;
}

interface PeerWorkspace extends Workspace {
  readonly app: string;
  readonly fifos: string;
}

function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4000) err += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(file)} ${args.slice(0, 3).join(' ')} exited ${code}: ${err.trim().slice(-500)}`))));
  });
}

const pidFrom = async (file: string): Promise<number | undefined> => {
  const n = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim());
  return Number.isInteger(n) && n > 0 ? n : undefined;
};

async function waitPidFile(file: string, what: string): Promise<number> {
  const deadline = performance.now() + 20_000;
  for (;;) {
    const pid = await pidFrom(file);
    if (pid !== undefined) return pid;
    if (performance.now() > deadline) throw new Error(`${what}: no pid file ${file} after 20 s`);
    await sleep(50);
  }
}

/** Ask a supervisor we started to stop (its own way: `signal`), then SIGKILL it after 30 s. */
async function stopChild(child: ReturnType<typeof spawn> | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await withTimeout(exited, 30_000, `${path.basename(child.spawnfile)} to exit`).catch(() => child.kill('SIGKILL'));
}

// ---- the peers --------------------------------------------------------------------------------

class EmperorPeer implements Peer {
  readonly label = 'emperor';
  private emp: BenchEmperor | undefined;
  private ws!: PeerWorkspace;
  missing(): undefined {
    return undefined;
  }
  async start(ws: PeerWorkspace): Promise<void> {
    this.ws = ws;
    this.emp = await BenchEmperor.start('peers emperor', ws);
  }
  pids(): number[] {
    return [this.emp!.pid, ...(this.emp!.guardianPid ? [this.emp!.guardianPid] : [])];
  }
  async deploy(names: readonly string[]): Promise<void> {
    // Written under names the emperor ignores, then moved into place: a complete file appears.
    const staged = await Promise.all(
      names.map(async (n) => {
        const tmp = path.join(this.ws.vassals, `.${n}.json.tmp`);
        await fs.writeFile(tmp, JSON.stringify({ command: [this.ws.app, n] }));
        return tmp;
      }),
    );
    return this.handOver(() => Promise.all(staged.map((tmp, i) => fs.rename(tmp, path.join(this.ws.vassals, `${names[i]!}.json`)))));
  }
  remove(names: readonly string[]): Promise<void> {
    return this.handOver(() => Promise.all(names.map((n) => fs.unlink(path.join(this.ws.vassals, `${n}.json`)))));
  }
  private async handOver(act: () => Promise<unknown>): Promise<void> {
    markT0();
    await act();
  }
  async stop(): Promise<void> {
    await this.emp?.stop();
  }
  trouble(): string {
    const e = this.emp;
    return e ? `emperor warnings/errors by event: ${JSON.stringify(Object.fromEntries(e.complaintsByEvent))}; first: ${e.complaints.slice(0, 3).map((c) => `${c.vassal ?? ''} ${c.message ?? ''}`).join(' | ')}` : '';
  }
}

class Pm2Peer implements Peer {
  readonly label: string;
  private readonly bin: string | undefined;
  private env: NodeJS.ProcessEnv = {};
  private ws!: PeerWorkspace;
  private daemon: number | undefined;
  constructor() {
    try {
      const require = createRequire(import.meta.url);
      const pkg = require.resolve('pm2/package.json');
      this.bin = path.join(path.dirname(pkg), 'bin', 'pm2');
      this.label = `PM2 ${(require('pm2/package.json') as { version: string }).version}`;
    } catch {
      this.label = 'PM2';
    }
  }
  missing(): string | undefined {
    return this.bin && existsSync(this.bin) ? undefined : 'not installed (npm devDependency pm2: run npm ci)';
  }
  private pm2(...args: string[]): Promise<void> {
    return run(process.execPath, [this.bin!, ...args], this.env);
  }
  async start(ws: PeerWorkspace): Promise<void> {
    this.ws = ws;
    this.env = { PATH: process.env.PATH, HOME: ws.root, PM2_HOME: path.join(ws.root, 'pm2') };
    await this.pm2('ping');
    this.daemon = await waitPidFile(path.join(ws.root, 'pm2', 'pm2.pid'), 'PM2');
  }
  pids(): number[] {
    return this.daemon ? [this.daemon] : [];
  }
  async deploy(names: readonly string[]): Promise<void> {
    if (names.length === 1) {
      markT0();
      return this.pm2('start', this.ws.app, '--name', names[0]!, '--interpreter', 'none', '--', names[0]!);
    }
    // Many at once: one ecosystem file, one command (how PM2 users start a fleet).
    const eco = path.join(this.ws.root, 'ecosystem.json');
    await fs.writeFile(eco, JSON.stringify({ apps: names.map((n) => ({ name: n, script: this.ws.app, args: [n], interpreter: 'none' })) }));
    markT0();
    return this.pm2('start', eco);
  }
  remove(names: readonly string[]): Promise<void> {
    markT0();
    return this.pm2('delete', names.length === 1 ? names[0]! : 'all');
  }
  async stop(): Promise<void> {
    if (this.daemon) await this.pm2('kill').catch(() => undefined);
  }
}

class SupervisordPeer implements Peer {
  readonly label: string;
  private readonly bin = which('supervisord');
  private conf = '';
  private ws!: PeerWorkspace;
  private child: ReturnType<typeof spawn> | undefined;
  constructor() {
    let version = '';
    if (this.bin) version = spawnSync(this.bin, ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '';
    this.label = `supervisord ${version}`.trim();
  }
  missing(): string | undefined {
    return this.bin && which('supervisorctl') ? undefined : 'not installed (Debian package supervisor)';
  }
  async start(ws: PeerWorkspace): Promise<void> {
    this.ws = ws;
    this.conf = path.join(ws.root, 'supervisord.conf');
    await fs.mkdir(path.join(ws.root, 'conf.d'));
    await fs.writeFile(
      this.conf,
      [
        '[unix_http_server]',
        `file=${ws.root}/supervisor.sock`,
        '[supervisord]',
        `logfile=${ws.root}/supervisord.log`,
        `pidfile=${ws.root}/supervisord.pid`,
        `childlogdir=${ws.logs}`,
        'nodaemon=true',
        '[rpcinterface:supervisor]',
        'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface',
        '[supervisorctl]',
        `serverurl=unix://${ws.root}/supervisor.sock`,
        '[include]',
        `files = ${ws.root}/conf.d/*.conf`,
        '',
      ].join('\n'),
    );
    await fs.mkdir(ws.logs, { recursive: true });
    this.child = spawn(this.bin!, ['-c', this.conf], { stdio: 'ignore' });
    // Up = the control socket answers.
    const deadline = performance.now() + 20_000;
    while (!(await this.ctl('status').then(() => true, (e: Error) => /exited 3:/.test(e.message)))) {
      if (performance.now() > deadline) throw new Error('supervisord did not answer within 20 s');
      await sleep(100);
    }
  }
  private ctl(...args: string[]): Promise<void> {
    return run('supervisorctl', ['-c', this.conf, ...args]);
  }
  pids(): number[] {
    return this.child?.pid ? [this.child.pid] : [];
  }
  async deploy(names: readonly string[]): Promise<void> {
    markT0();
    await Promise.all(
      names.map((n) =>
        fs.writeFile(
          path.join(this.ws.root, 'conf.d', `${n}.conf`),
          `[program:${n}]\ncommand=${this.ws.app} ${n}\nautorestart=true\nstdout_logfile=NONE\nstderr_logfile=NONE\n`,
        ),
      ),
    );
    return this.ctl('update');
  }
  async remove(names: readonly string[]): Promise<void> {
    markT0();
    await Promise.all(names.map((n) => fs.unlink(path.join(this.ws.root, 'conf.d', `${n}.conf`))));
    return this.ctl('update');
  }
  stop(): Promise<void> {
    return stopChild(this.child, 'SIGTERM');
  }
}

class UwsgiPeer implements Peer {
  readonly label: string;
  private readonly bin = which('uwsgi');
  private ws!: PeerWorkspace;
  private child: ReturnType<typeof spawn> | undefined;
  constructor() {
    const version = this.bin ? (spawnSync(this.bin, ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '') : '';
    this.label = `uWSGI Emperor ${version}`.trim();
  }
  missing(): string | undefined {
    return this.bin ? undefined : 'not installed (Debian package uwsgi-core)';
  }
  async start(ws: PeerWorkspace): Promise<void> {
    this.ws = ws;
    // --emperor-freq 1: its fastest directory scan (the default is 3 s); the vassal binary is the app.
    this.child = spawn(this.bin!, ['--emperor', ws.vassals, '--emperor-freq', '1', '--emperor-wrapper', ws.app, '--emperor-pidfile', path.join(ws.root, 'uwsgi.pid')], {
      stdio: 'ignore',
      cwd: ws.root,
    });
    await waitPidFile(path.join(ws.root, 'uwsgi.pid'), 'uWSGI Emperor');
  }
  pids(): number[] {
    return this.child?.pid ? [this.child.pid] : [];
  }
  async deploy(names: readonly string[]): Promise<void> {
    const staged = await Promise.all(
      names.map(async (n) => {
        const tmp = path.join(this.ws.vassals, `.${n}.tmp`);
        await fs.writeFile(tmp, '[uwsgi]\n');
        return tmp;
      }),
    );
    markT0();
    await Promise.all(staged.map((tmp, i) => fs.rename(tmp, path.join(this.ws.vassals, `${names[i]!}.ini`))));
  }
  async remove(names: readonly string[]): Promise<void> {
    markT0();
    await Promise.all(names.map((n) => fs.unlink(path.join(this.ws.vassals, `${n}.ini`))));
  }
  stop(): Promise<void> {
    return stopChild(this.child, 'SIGINT');
  }
}

/**
 * Not a supervisor: the machine's floor (bench/floor.ts). One python3 process that posix_spawns
 * each app the moment its name arrives and SIGTERMs it on `-NAME`, and does nothing else. What
 * no supervisor can beat on this machine, shown beside them so a target the machine cannot reach
 * is seen as such; never compared against.
 */
class FloorPeer implements Peer {
  readonly label = 'floor: posix_spawn loop, no supervision';
  private spawner: FloorSpawner | undefined;
  missing(): string | undefined {
    return FloorSpawner.missing();
  }
  async start(ws: PeerWorkspace): Promise<void> {
    this.spawner = await FloorSpawner.start(ws.app, [ws.app, '{}']);
  }
  pids(): number[] {
    return this.spawner ? [this.spawner.pid] : [];
  }
  deploy(names: readonly string[]): Promise<void> {
    markT0();
    return this.spawner!.send(names);
  }
  remove(names: readonly string[]): Promise<void> {
    markT0();
    return this.spawner!.send(names.map((n) => `-${n}`));
  }
  async stop(): Promise<void> {
    await this.spawner?.stop();
  }
}

// ---- the scenario -----------------------------------------------------------------------------

/** When the action under measurement was handed to the peer (set by the peer itself). */
let t0 = 0;
function markT0(): void {
  t0 = wallMs();
}

interface Result {
  readonly label: string;
  skipped?: string;
  error?: string;
  note?: string;
  firstDeploy?: number;
  deploy: number[];
  remove: number[];
  bulkUp?: number;
  bulkGone?: number;
  rssIdleKb?: number;
  rssBulkKb?: number;
  idleCpuPct?: number;
  /** The floor (FloorPeer): shown, never compared against. */
  floor?: boolean;
  /** Apps of the 200 that died on their own while idle (a peer's fault, noted). */
  diedIdle?: number;
}

const sum = (xs: readonly (number | undefined)[]): number | undefined => (xs.some((x) => x === undefined) ? undefined : xs.reduce<number>((a, b) => a + b!, 0));

async function markers(ws: PeerWorkspace, names: readonly string[]): Promise<Marker[]> {
  const fifos = names.map((n) => path.join(ws.fifos, `${n}.fifo`));
  await Promise.all(fifos.map((f) => fs.rm(f, { force: true })));
  execFileSync('mkfifo', ['-m', '0600', ...fifos]);
  return fifos.map((f) => new Marker(f));
}

async function scenario(peer: Peer, ctx: SectionContext): Promise<Result> {
  const r: Result = { label: peer.label, deploy: [], remove: [], ...(peer instanceof FloorPeer ? { floor: true } : {}) };
  const root = await makeWorkspace('emperor-peers-');
  const ws: PeerWorkspace = { ...root, app: path.join(root.root, 'app.sh'), fifos: path.join(root.root, 'fifos') };
  await fs.mkdir(ws.fifos);
  await fs.writeFile(ws.app, PEER_APP(ws.fifos), { mode: 0o755 });
  const open: Marker[] = [];
  const dispose = addCleanup(`peers ${peer.label}`, () => peer.stop());
  try {
    await peer.start(ws);
    await sleep(2000);
    r.rssIdleKb = sum(peer.pids().map((p) => statusKb(p, 'VmRSS')));

    // One deploy first, reported apart: the first after start pays what each peer loads on
    // demand (the emperor: its parse worker, which also stops after 10 s without work).
    for (let i = -1; i < SINGLES; i++) {
      const name = i < 0 ? 'first' : `one-${i}`;
      const [m] = await markers(ws, [name]);
      open.push(m!);
      await peer.deploy([name]);
      const deployT0 = t0;
      await withTimeout(m!.up(), STEP_TIMEOUT_MS, `${peer.label}: ${name} up`);
      if (i < 0) r.firstDeploy = m!.upAt! - deployT0;
      else r.deploy.push(m!.upAt! - deployT0);
      await peer.remove([name]);
      const removeT0 = t0;
      await withTimeout(m!.gone(), STEP_TIMEOUT_MS, `${peer.label}: ${name} gone`);
      if (i >= 0) r.remove.push(m!.goneAt! - removeT0);
    }
    ctx.progress(`${peer.label}: single deploy p50 ${fmtMs(percentile([...r.deploy].sort((a, b) => a - b), 50))}, removal p50 ${fmtMs(percentile([...r.remove].sort((a, b) => a - b), 50))}`);

    const names = Array.from({ length: BULK }, (_, i) => `app-${String(i).padStart(3, '0')}`);
    const ms = await markers(ws, names);
    open.push(...ms);
    await peer.deploy(names);
    const bulkT0 = t0;
    await withTimeout(Promise.all(ms.map((m) => m.up())), BULK_TIMEOUT_MS, `${peer.label}: ${BULK} up`);
    r.bulkUp = Math.max(...ms.map((m) => m.upAt!)) - bulkT0;

    await sleep(IDLE_SETTLE_MS);
    const pids = peer.pids();
    const cpu0 = sum(pids.map(cpuNs));
    const w0 = performance.now();
    await sleep(IDLE_WINDOW_MS);
    const cpu1 = sum(pids.map(cpuNs));
    if (cpu0 !== undefined && cpu1 !== undefined) r.idleCpuPct = ((cpu1 - cpu0) / 1e6 / (performance.now() - w0)) * 100;
    r.rssBulkKb = sum(pids.map((p) => statusKb(p, 'VmRSS')));
    const died = names.filter((_, i) => ms[i]!.goneAt !== undefined);
    // The emperor's own apps dying is a bench failure; a peer's is reported beside its figures,
    // and its "all gone" then covers only the survivors, so it is not compared.
    if (died.length > 0 && !(peer instanceof EmperorPeer)) {
      r.diedIdle = died.length;
      r.note = `${died.length} of ${BULK} apps died while idle: its "remove all" covers only the others and is not compared`;
    }
    else if (died.length > 0) throw new Error(`${peer.label}: ${died.length} app(s) died while idle, e.g. ${died.slice(0, 3).join(', ')}${peer.trouble ? `; ${peer.trouble()}` : ''}`);

    await peer.remove(names);
    const goneT0 = t0;
    await withTimeout(Promise.all(ms.map((m) => m.gone())), BULK_TIMEOUT_MS, `${peer.label}: ${BULK} gone`);
    r.bulkGone = Math.max(...ms.map((m) => m.goneAt!)) - goneT0;
    ctx.progress(`${peer.label}: ${BULK} up in ${fmtMs(r.bulkUp)}, gone in ${fmtMs(r.bulkGone)}`);
  } catch (err) {
    r.error = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    ctx.progress(`${peer.label}: ${r.error}`);
  } finally {
    for (const m of open) m.close();
    await dispose();
  }
  return r;
}

// ---- the table --------------------------------------------------------------------------------

/** The side-by-side table of the last run (printed after the main table by run.ts). */
export let peersTable: string | undefined;

interface Line {
  readonly metric: string;
  readonly target: string;
  readonly cell: (r: Result) => string;
  /** Whether the emperor's result meets the target (given the others'); undefined: no target. */
  readonly ok?: (emperor: Result, others: readonly Result[]) => boolean | undefined;
}

const sorted = (xs: readonly number[]): number[] => [...xs].sort((a, b) => a - b);
const pct = (xs: readonly number[], p: number): number => percentile(sorted(xs), p);
const ms = (v: number | undefined): string => (v === undefined ? 'n/a' : v < 1000 ? `${v.toFixed(v < 100 ? 1 : 0)}` : `${(v / 1000).toFixed(2)} s`);
const mb = (kb: number | undefined): string => (kb === undefined ? 'n/a' : `${(kb / 1024).toFixed(1)} MiB`);
const ran = (r: Result): boolean => r.skipped === undefined && r.error === undefined;

const pm2Of = (others: readonly Result[]): Result | undefined => others.find((o) => o.label.startsWith('PM2') && ran(o));
/** Better than every peer that ran, by `factor` (2 = half of the best peer's figure). */
const beats = (mine: number | undefined, theirs: readonly (number | undefined)[], factor = 1): boolean =>
  mine !== undefined && theirs.every((t) => t === undefined || mine * factor <= t);

const LINES: readonly Line[] = [
  {
    metric: 'first deploy after start → process exists, ms',
    target: '—',
    cell: (r) => ms(r.firstDeploy),
  },
  {
    metric: `deploy 1 app → process exists, p50 / p90 / p99 ms (${SINGLES}, after the first)`,
    target: 'p99 ≤ 25 ms, ≤ 1/10 of PM2',
    cell: (r) => `${ms(pct(r.deploy, 50))} / ${ms(pct(r.deploy, 90))} / ${ms(pct(r.deploy, 99))}`,
    ok: (e, o) => {
      const p99 = pct(e.deploy, 99);
      const pm2 = pm2Of(o);
      return p99 <= 25 && (pm2 === undefined || p99 * 10 <= pct(pm2.deploy, 50)) && beats(p99, o.filter(ran).map((x) => pct(x.deploy, 50)));
    },
  },
  {
    metric: `remove 1 app → process gone, p50 / p99 / max ms (${SINGLES})`,
    target: 'p99 ≤ 50 ms',
    cell: (r) => `${ms(pct(r.remove, 50))} / ${ms(pct(r.remove, 99))} / ${ms(Math.max(...r.remove))}`,
    ok: (e, o) => pct(e.remove, 99) <= 50 && beats(pct(e.remove, 99), o.filter(ran).map((x) => pct(x.remove, 50))),
  },
  {
    metric: `${BULK} apps at once → all exist, ms`,
    target: '≤ 400 ms',
    cell: (r) => ms(r.bulkUp),
    ok: (e, o) => e.bulkUp !== undefined && e.bulkUp <= 400 && beats(e.bulkUp, o.filter(ran).map((x) => x.bulkUp)),
  },
  {
    metric: `remove all ${BULK} → all gone, ms`,
    target: '≤ 500 ms',
    cell: (r) => (r.diedIdle ? `${ms(r.bulkGone)} (${BULK - r.diedIdle} left)` : ms(r.bulkGone)),
    ok: (e, o) => e.bulkGone !== undefined && e.bulkGone <= 500 && beats(e.bulkGone, o.filter((x) => ran(x) && !x.diedIdle).map((x) => x.bulkGone)),
  },
  {
    metric: `supervisor RSS with 0 / ${BULK} apps`,
    target: '≤ 60 / ≤ 80 MiB',
    cell: (r) => `${mb(r.rssIdleKb)} / ${mb(r.rssBulkKb)}`,
    ok: (e, o) =>
      e.rssIdleKb !== undefined &&
      e.rssBulkKb !== undefined &&
      e.rssIdleKb <= 60 * 1024 &&
      e.rssBulkKb <= 80 * 1024 &&
      beats(e.rssBulkKb, o.filter((x) => ran(x) && x.label.startsWith('PM2')).map((x) => x.rssBulkKb)),
  },
  {
    metric: `supervisor CPU, ${BULK} apps idle (${IDLE_WINDOW_MS / 1000} s window), % of a core`,
    target: '≤ 0.2 %',
    cell: (r) => (r.idleCpuPct === undefined ? 'n/a' : r.idleCpuPct.toFixed(2)),
    ok: (e) => e.idleCpuPct !== undefined && e.idleCpuPct <= 0.2,
  },
];

function render(results: readonly Result[]): string {
  const [emperor, ...rest] = results;
  const others = rest.filter((r) => !r.floor);
  const head = ['row', ...results.map((r) => r.label), 'target for the emperor', 'ok'];
  const body = LINES.map((l) => {
    const verdict = emperor && ran(emperor) ? l.ok?.(emperor, others) : undefined;
    return [l.metric, ...results.map((r) => (r.skipped ? 'skipped' : r.error && r.deploy.length === 0 ? 'failed' : l.cell(r))), l.target, verdict === undefined ? '—' : verdict ? 'ok' : 'MISS'];
  });
  const lines = [head, ...body].map((cells) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`);
  lines.splice(1, 0, `|${head.map(() => '---').join('|')}|`);
  const notes = results.filter((r) => r.skipped || r.error || r.note).map((r) => `- ${r.label}: ${r.skipped ? `skipped, ${r.skipped}` : r.error ? `failed: ${r.error}` : r.note}`);
  return [...lines, ...notes].join('\n');
}

export const peers: Section = {
  name: SECTION,
  title: `the emperor side by side with PM2, supervisord and the uWSGI Emperor (${SINGLES} single deploys/removals, ${BULK} at once, RSS, idle CPU)`,
  async run(ctx): Promise<Row[]> {
    // BENCH_PEERS=emperor,pm2 runs only those (matched against the start of each label).
    const only = (process.env.BENCH_PEERS ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
    const all: Peer[] = [new EmperorPeer(), new Pm2Peer(), new SupervisordPeer(), new UwsgiPeer(), new FloorPeer()].filter((p) => only.length === 0 || only.some((o) => p.label.toLowerCase().startsWith(o)));
    const q = await waitForQuiet(25, Number(process.env.BENCH_QUIET_WAIT_MS ?? 30_000));
    const m0 = machineTicks();
    const results: Result[] = [];
    for (const peer of all) {
      const why = peer.missing();
      if (why !== undefined) {
        ctx.progress(`${peer.label}: skipped, ${why}`);
        results.push({ label: peer.label, skipped: why, deploy: [], remove: [] });
        continue;
      }
      ctx.progress(`${peer.label}: running the scenario`);
      results.push(await scenario(peer, ctx));
    }
    const busy = machineBusyPct(m0, machineTicks());
    peersTable = render(results);
    const rows: Row[] = [
      { section: SECTION, metric: 'machine', value: `busy ${q.busyPct.toFixed(0)} % before, ${busy.toFixed(0)} % during (all cores); load ${loadAvg()}`, target: '—', status: 'info' },
    ];
    const [emperor, ...rest] = results;
    const others = rest.filter((r) => !r.floor);
    for (const l of LINES) {
      const verdict = emperor && ran(emperor) ? l.ok?.(emperor, others) : undefined;
      const status: RowStatus = verdict === undefined ? 'info' : verdict ? 'ok' : 'MISS';
      rows.push({ section: SECTION, metric: l.metric, value: results.map((r) => `${r.label} ${r.skipped ? 'skipped' : l.cell(r)}`).join(' · '), target: l.target, status });
    }
    for (const r of results) if (r.error) rows.push({ section: SECTION, metric: r.label, value: `bench failed: ${r.error}`, target: '—', status: 'error' });
    return rows;
  },
};
