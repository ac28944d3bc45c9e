/**
 * Test harness for a REAL single-member etcd (Debian's `etcd-server` package, etcd 3.4 on bookworm;
 * `scripts/setup.sh` installs it). Each server gets free loopback client/peer ports and a fresh
 * data dir under os.tmpdir().
 *
 * ```ts
 * const etcd = await startEtcd();
 * const client = new Etcd3({ hosts: etcd.clientUrl });
 * // ...
 * client.close();
 * await etcd.dispose();
 * ```
 *
 * Outage and recovery: `await etcd.stop()` (or `kill()`), then `await etcd.start()` brings it back
 * on the same ports with the same data.
 *
 * User/password auth: `startEtcd({ auth: { rootPassword: 'pw' } })` creates the user `root` with
 * that password and enables auth before resolving, so every request needs credentials:
 *
 * ```ts
 * const etcd = await startEtcd({ auth: { rootPassword: 'root-pw' } });
 * const root = new Etcd3({ hosts: etcd.clientUrl, auth: { username: 'root', password: 'root-pw' } });
 * // a user that may only read/write keys under /emperor/:
 * await etcd.addUser({ name: 'emperor', password: 'emp-pw', prefix: '/emperor/' });
 * const emp = new Etcd3({ hosts: etcd.clientUrl, auth: { username: 'emperor', password: 'emp-pw' } });
 * ```
 *
 * Every etcd started here dies with the test process: it is spawned through `setpriv --pdeathsig KILL`
 * when setpriv is present, and on process 'exit' all live servers are SIGKILLed and data dirs not yet
 * disposed are removed.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './paths.js';
import { freePort } from './net.js';

export interface EtcdAuthOptions {
  /** Password of the `root` user, which is created before auth is enabled. */
  rootPassword: string;
}

export interface StartEtcdOptions {
  /** Enable user/password auth (see the module comment). */
  auth?: EtcdAuthOptions;
  /** How long to wait for /health to report true, per (re)start. Default 20 s. */
  readyTimeoutMs?: number;
}

export interface AddUserOptions {
  name: string;
  password: string;
  /** Key prefix the user's role is granted on. */
  prefix: string;
  /** Role to create and grant; default `<name>-role`. */
  role?: string;
  /** Default 'readwrite'. */
  permission?: 'read' | 'write' | 'readwrite';
}

export interface EtcdServer {
  /** "127.0.0.1:PORT" (gRPC and HTTP on the same port). */
  readonly endpoint: string;
  /** "http://127.0.0.1:PORT" — pass as `hosts` to the etcd3 client. */
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** The auth options it was started with, if any. */
  readonly auth: EtcdAuthOptions | undefined;
  /** PID of the running etcd, or undefined while stopped. */
  readonly pid: number | undefined;
  /** Start again on the same ports and data dir, and wait until healthy. No-op if running. */
  start(): Promise<void>;
  /** SIGTERM, await exit; SIGKILL if it has not exited after a few seconds. No-op if stopped. */
  stop(): Promise<void>;
  /** SIGKILL (a crash), await exit. No-op if stopped. */
  kill(): Promise<void>;
  /** stop() and remove the data dir. */
  dispose(): Promise<void>;
  /** The last captured stdout/stderr of etcd (bounded). */
  logTail(): string;
  /** Run etcdctl against this server (as root when auth is on); resolves to stdout. */
  etcdctl(args: string[]): Promise<string>;
  /** Create a role granted `permission` on `prefix`, and a user with that role (auth mode). */
  addUser(opts: AddUserOptions): Promise<void>;
}

const STOP_GRACE_MS = 5_000;
const LOG_LIMIT = 64 * 1024;
const BIN_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...BIN_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

function requireBinary(name: string): string {
  const found = findBinary(name);
  if (!found) {
    throw new Error(
      `${name} not found on PATH: run ${path.join(repoRoot, 'scripts', 'setup.sh')} to install etcd-server/etcd-client`,
    );
  }
  return found;
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export { freePort };

// --- cleanup of servers left running by a crashed/aborted test run -------------------------------
const live = new Set<ChildProcess>();
const undisposedDirs = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of undisposedDirs) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
      } catch {
        // best effort: a just-killed etcd may still be writing
      }
    }
  });
}
function track(child: ChildProcess): void {
  installExitHook();
  live.add(child);
  child.once('exit', () => live.delete(child));
}

class Log {
  private chunks: string[] = [];
  private size = 0;
  push(chunk: string): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > LOG_LIMIT && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
  }
  tail(max = 4000): string {
    const all = this.chunks.join('');
    return all.length > max ? all.slice(-max) : all;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
    if (!res.ok) return false;
    const body = (await res.json()) as { health?: unknown };
    return body.health === 'true' || body.health === true;
  } catch {
    return false;
  }
}

class EtcdProcess implements EtcdServer {
  readonly endpoint: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private readonly log = new Log();
  private initialized = false;
  private disposed = false;

  constructor(
    private readonly etcdBin: string,
    readonly dataDir: string,
    clientPort: number,
    peerPort: number,
    readonly auth: EtcdAuthOptions | undefined,
    private readonly readyTimeoutMs: number,
    /** A member of a cluster (startEtcdCluster): its name and the whole cluster's peer list. */
    private readonly member?: { name: string; initialCluster: string; token: string },
  ) {
    this.endpoint = `127.0.0.1:${clientPort}`;
    this.clientUrl = `http://${this.endpoint}`;
    this.peerUrl = `http://127.0.0.1:${peerPort}`;
    installExitHook();
    undisposedDirs.add(dataDir);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  logTail(): string {
    return this.log.tail();
  }

  private args(): string[] {
    if (this.member) {
      return [
        '--name', this.member.name,
        '--data-dir', this.dataDir,
        '--listen-client-urls', this.clientUrl,
        '--advertise-client-urls', this.clientUrl,
        '--listen-peer-urls', this.peerUrl,
        '--initial-advertise-peer-urls', this.peerUrl,
        '--initial-cluster', this.member.initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', this.member.token,
        // etcd's defaults (100 ms / 1 s): shorter ones make leaders flap on a busy two-core machine.
        '--heartbeat-interval', '100',
        '--election-timeout', '1000',
        '--logger', 'zap',
        '--log-outputs', 'stderr',
        '--log-level', 'warn',
      ];
    }
    return [
      '--name', 'default',
      '--data-dir', this.dataDir,
      '--listen-client-urls', this.clientUrl,
      '--advertise-client-urls', this.clientUrl,
      '--listen-peer-urls', this.peerUrl,
      '--initial-advertise-peer-urls', this.peerUrl,
      '--initial-cluster', `default=${this.peerUrl}`,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `emperor-test-${path.basename(this.dataDir)}`,
      // Single member: a short election timeout makes it leader in ~50 ms instead of ~1 s.
      '--heartbeat-interval', '25',
      '--election-timeout', '250',
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      '--log-level', 'warn',
      // (etcd 3.4 has no --unsafe-no-fsync; that flag is 3.5+.)
    ];
  }

  async start(): Promise<void> {
    if (this.disposed) throw new Error('etcd server was disposed');
    if (this.child) return;
    const setpriv = findBinary('setpriv');
    // --pdeathsig: the kernel SIGKILLs etcd if the test process dies without running 'exit' hooks.
    const [cmd, args] = setpriv
      ? [setpriv, ['--pdeathsig', 'KILL', this.etcdBin, ...this.args()]]
      : [this.etcdBin, this.args()];
    this.log.push(`--- starting etcd ${this.clientUrl} (${this.dataDir})\n`);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    track(child);
    child.stdout.setEncoding('utf8').on('data', (d: string) => this.log.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => this.log.push(d));
    let exitInfo: string | undefined;
    this.exited = new Promise<void>((resolve) => {
      // 'close' (not 'exit'): etcd's last stderr lines are in the log by then.
      child.once('close', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        this.log.push(`--- etcd exited with ${exitInfo}\n`);
        if (this.child === child) {
          this.child = undefined;
        }
        resolve();
      });
      child.once('error', (err) => {
        exitInfo = `spawn error: ${err.message}`;
        this.log.push(`--- ${exitInfo}\n`);
        if (this.child === child) this.child = undefined;
        resolve();
      });
    });

    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      if (exitInfo !== undefined) {
        throw new Error(`etcd exited before becoming healthy (${exitInfo}):\n${this.log.tail()}`);
      }
      // Race the probe against the exit so a crash is reported at once, not after the probe's timeout.
      if (await Promise.race([healthy(this.clientUrl), this.exited.then(() => false)])) break;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`etcd not healthy after ${this.readyTimeoutMs} ms at ${this.clientUrl}:\n${this.log.tail()}`);
      }
      await sleep(25);
    }

    if (this.auth && !this.initialized) {
      await this.etcdctlRaw(['user', 'add', 'root', '--interactive=false', `--new-user-password=${this.auth.rootPassword}`], false);
      // etcdctl 3.4's `auth enable` also creates the root role and grants it to root.
      await this.etcdctlRaw(['auth', 'enable'], false);
    }
    this.initialized = true;
  }

  private async terminate(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    const exited = this.exited;
    if (!child || !exited) return;
    child.kill(signal);
    if (signal !== 'SIGKILL') {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), STOP_GRACE_MS))),
      ]);
      clearTimeout(timer);
      if (timedOut) child.kill('SIGKILL');
    }
    await exited;
  }

  stop(): Promise<void> {
    return this.terminate('SIGTERM');
  }

  kill(): Promise<void> {
    return this.terminate('SIGKILL');
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    await this.stop();
    this.disposed = true;
    await rm(this.dataDir, { recursive: true, force: true });
    undisposedDirs.delete(this.dataDir);
  }

  private etcdctlRaw(args: string[], asRoot: boolean): Promise<string> {
    const bin = requireBinary('etcdctl');
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCDCTL_')) env[k] = v;
    env.ETCDCTL_API = '3';
    const full = ['--endpoints', this.clientUrl, '--dial-timeout', '3s', '--command-timeout', '10s'];
    if (asRoot && this.auth) full.push('--user', 'root', '--password', this.auth.rootPassword);
    full.push(...args);
    return new Promise((resolve, reject) => {
      execFile(bin, full, { env, timeout: 20_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`etcdctl ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
  }

  etcdctl(args: string[]): Promise<string> {
    return this.etcdctlRaw(args, true);
  }

  async addUser(opts: AddUserOptions): Promise<void> {
    const role = opts.role ?? `${opts.name}-role`;
    await this.etcdctl(['role', 'add', role]);
    await this.etcdctl(['role', 'grant-permission', role, '--prefix=true', opts.permission ?? 'readwrite', opts.prefix]);
    await this.etcdctl(['user', 'add', opts.name, '--interactive=false', `--new-user-password=${opts.password}`]);
    await this.etcdctl(['user', 'grant-role', opts.name, role]);
  }
}

/**
 * Start a fresh single-member etcd on free loopback ports with a temporary data dir, and wait until
 * GET /health reports true (and, with `auth`, until root exists and auth is enabled).
 * Always `dispose()` it (e.g. in an `after` hook).
 */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
  const etcdBin = requireBinary('etcd');
  if (opts.auth) requireBinary('etcdctl');
  let lastError: unknown;
  // The ports are free when picked but could be taken before etcd binds them: retry with new ones.
  for (let attempt = 0; attempt < 3; attempt++) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'emperor-etcd-'));
    const clientPort = await freePort();
    let peerPort = await freePort();
    while (peerPort === clientPort) peerPort = await freePort();
    const server = new EtcdProcess(etcdBin, dataDir, clientPort, peerPort, opts.auth, opts.readyTimeoutMs ?? 20_000);
    try {
      await server.start();
      return server;
    } catch (err) {
      lastError = err;
      await server.dispose();
      if (!(err instanceof Error && /address already in use/i.test(err.message))) break;
    }
  }
  throw lastError;
}

export interface EtcdCluster {
  readonly members: readonly EtcdServer[];
  /** "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" (for --etcd-endpoint). */
  readonly endpoints: string;
  /** Stop and remove every member. */
  dispose(): Promise<void>;
}

/**
 * A real etcd cluster of `size` members on free loopback ports, each with its own data dir. The
 * members start together (a member is healthy only once the cluster has quorum). A member can be
 * stopped and started again (`members[i].stop()`, `.start()`); starting several at once (for
 * quorum) must be done together: `Promise.all(ms.map((m) => m.start()))`.
 */
export async function startEtcdCluster(size = 3, opts: { readyTimeoutMs?: number } = {}): Promise<EtcdCluster> {
  const etcdBin = requireBinary('etcd');
  const ports: Array<{ client: number; peer: number }> = [];
  const used = new Set<number>();
  const pick = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!used.has(p)) {
        used.add(p);
        return p;
      }
    }
  };
  for (let i = 0; i < size; i++) ports.push({ client: await pick(), peer: await pick() });
  const token = `emperor-cluster-${process.pid}-${Date.now()}`;
  const initialCluster = ports.map((p, i) => `m${i}=http://127.0.0.1:${p.peer}`).join(',');
  const members: EtcdProcess[] = [];
  for (let i = 0; i < size; i++) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'emperor-etcd-cluster-'));
    members.push(new EtcdProcess(etcdBin, dataDir, ports[i]!.client, ports[i]!.peer, undefined, opts.readyTimeoutMs ?? 60_000, { name: `m${i}`, initialCluster, token }));
  }
  try {
    await Promise.all(members.map((m) => m.start()));
  } catch (err) {
    await Promise.all(members.map((m) => m.dispose()));
    throw err;
  }
  return {
    members,
    endpoints: members.map((m) => m.endpoint).join(','),
    dispose: async () => {
      await Promise.all(members.map((m) => m.dispose()));
    },
  };
}
