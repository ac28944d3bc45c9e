// The native vfork-style start (native/spawn.c), when it was built; Node's child_process otherwise.
//
// uv_spawn fork()s the whole emperor: 6-10 ms of event loop per start on a small VM, against
// 2.5 ms for clone with CLONE_VM | CLONE_VFORK (posix_spawn's way: no page tables copied), which
// is what most of "200 apps at once" waited for (issue 13). The child is set up as uv_spawn sets
// up a `detached: true` child, and before its exec also joins its cgroups, sets its fd limit and
// takes its parent-death signal, which otherwise cost an extra exec each (a /bin/sh wrapper,
// setpriv). Its exit comes from SIGCHLD on this event loop, reaped with waitid (see native/spawn.c).
import { createRequire } from 'node:module';
import net from 'node:net';
import { constants } from 'node:os';
import type { Duplex } from 'node:stream';
import { parseStat } from './procfs.js';

interface Addon {
  spawn(
    file: string,
    argv: readonly string[],
    envp: readonly string[],
    cwd: string,
    stdio: readonly number[],
    join: readonly string[],
    openFiles: number,
    pdeathsig: number,
    onExit: (code: number | null, signal: number | null) => void,
  ): { pid: number; fds: number[]; stat: string };
}

/** Where `npm run build` (node-gyp) puts the addon, from dist/src/process. */
const ADDON = '../../../build/Release/emperor_spawn.node';

let addon: { loaded: Addon | undefined; why: string | undefined } | undefined;

function load(): Addon | undefined {
  if (addon === undefined) {
    try {
      addon = { loaded: createRequire(import.meta.url)(ADDON) as Addon, why: undefined };
    } catch (err) {
      addon = { loaded: undefined, why: err instanceof Error ? err.message.split('\n')[0] : String(err) };
    }
  }
  return addon.loaded;
}

/** How vassals are started: 'posix_spawn' (the addon) or 'fork' (child_process), and why not the addon. */
export function spawnBackend(): { backend: 'posix_spawn' | 'fork'; why?: string } {
  if (process.env.EMPEROR_SPAWN === 'fork') return { backend: 'fork', why: 'EMPEROR_SPAWN=fork' };
  return load() ? { backend: 'posix_spawn' } : { backend: 'fork', why: addon?.why ?? 'not built' };
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

export interface Spawned {
  readonly pid: number;
  /** The emperor's end of each child fd asked for as a pipe (a unix socketpair, as libuv's 'pipe'), else undefined. */
  readonly stdio: ReadonlyArray<Duplex | undefined>;
  /** /proc/<pid>/stat starttime, as the child read it before its exec. */
  readonly startTime: string | undefined;
}

/** What the child does to itself before it execs, in this order (each failure is the spawn's error). */
export interface ChildSetup {
  /** cgroup.procs files it moves itself into, so the app never runs outside them. */
  readonly join: readonly string[];
  /** RLIMIT_NOFILE, soft and hard. */
  readonly openFiles: number | undefined;
  /** The signal it gets when the emperor dies (prctl PR_SET_PDEATHSIG). */
  readonly parentDeathSignal: NodeJS.Signals | undefined;
}

/**
 * Start `file` (an absolute path: no PATH search) with `argv` as its own session leader.
 * `stdio[i]` is 'pipe' or 'ignore' (/dev/null) for the child's fd i. onExit is called once,
 * after the child was reaped. Throws an Error with `code` (ENOENT, EACCES, EAGAIN, EMFILE...)
 * when it could not start, or a set-up step failed; nothing is left open or running then.
 * Only when spawnBackend() says 'posix_spawn' (the caller asks once per start).
 */
export function posixSpawn(
  file: string,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
  cwd: string,
  stdio: ReadonlyArray<'pipe' | 'ignore'>,
  setup: ChildSetup,
  onExit: (code: number | null, signal: NodeJS.Signals | null) => void,
): Spawned {
  const addon = load();
  if (addon === undefined) throw new Error('the posix_spawn addon is not built');
  const envp = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const pdeathsig = setup.parentDeathSignal === undefined ? 0 : constants.signals[setup.parentDeathSignal];
  const { pid, fds, stat } = addon.spawn(file, argv, envp, cwd, stdio.map((s) => (s === 'pipe' ? 1 : 0)), setup.join, setup.openFiles ?? -1, pdeathsig, (code, signal) =>
    onExit(code, signal === null ? null : (SIGNAL_NAMES.get(signal) ?? null)),
  );
  return {
    pid,
    startTime: parseStat(stat)?.startTime,
    // Readable and writable, as child_process makes every piped fd: fd 3 is a two-way channel.
    stdio: fds.map((fd) => (fd < 0 ? undefined : new net.Socket({ fd, readable: true, writable: true }))),
  };
}
