// Starts one vassal as the leader of its own process group.
//
// Every failure of the spawn (out of file descriptors or processes included) becomes one
// ExitInfo.error: an 'error' event nobody listens to would kill the emperor and every vassal.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { fdExhausted, fdShortage } from './fdbudget.js';
import { GroupProbe, signalGroup } from './group.js';
import { resolveLaunch, setprivPath, wrapLaunch } from './launch.js';
import { posixSpawn, spawnBackend, type ChildSetup } from './posix-spawn.js';
import { readStatSync } from './procfs.js';
import { identityArgs } from './identity.js';
import { EMPEROR_FD, NOTIFY_FD, type ExitInfo, type SpawnRequest, type VassalProcess } from './types.js';

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Errors that mean "the host is out of something right now", worth saying so plainly. */
const EXHAUSTION: Readonly<Record<string, string>> = {
  EMFILE: 'the emperor is out of file descriptors (EMFILE)',
  ENFILE: 'the system is out of file descriptors (ENFILE)',
  EAGAIN: 'the system refused a new process (EAGAIN: process limit or memory)',
  ENOMEM: 'out of memory for a new process (ENOMEM)',
};

function spawnError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EMFILE' || code === 'ENFILE') fdExhausted();
  const why = code === undefined ? undefined : EXHAUSTION[code];
  return `spawn failed: ${why ?? message(err)}`;
}

/** A VassalProcess for a start that never happened; pid 0 is never signalled (see signalGroup). */
export function notStarted(error: string): VassalProcess {
  return {
    pid: 0,
    pgid: 0,
    startTime: undefined,
    exited: Promise.resolve({ code: null, signal: null, error }),
    signalGroup: () => false,
    groupAlive: () => false,
  };
}

export function spawnVassal(req: SpawnRequest): VassalProcess {
  const resolved = resolveLaunch(req.argv, req.cwd, req.env);
  if ('problem' in resolved) return notStarted(resolved.problem);

  const placement = req.placement;
  const cgroup = placement?.cgroup;
  // setpriv switches users, and execs the app after prctl(PR_SET_PDEATHSIG), so the pid we get
  // is the app's and the kernel SIGKILLs it if the emperor dies without a chance to clean up.
  // In a cgroup the parent-death signal is left out: when the emperor dies the guardian writes
  // cgroup.kill of its parent cgroup, which takes every process of every vassal (the signal
  // only ever took the leader), and should the guardian die too the next emperor kills what its
  // cgroups hold before it starts anything. It cost one exec per start: 200 apps at once came
  // up 10-20 % sooner without it on a busy two-core host (issue 13).
  // The native start does the parent-death signal itself (setpriv only switches users then).
  const native = spawnBackend().backend === 'posix_spawn';
  const wantDeathSignal = req.identity !== undefined || cgroup === undefined;
  const setpriv = req.identity !== undefined || (wantDeathSignal && !native) ? setprivPath() : undefined;
  if (req.identity && setpriv === undefined) return notStarted('cannot switch to another user: util-linux setpriv is not installed');
  const who = req.identity ? identityArgs(req.identity) : [];
  const inner = setpriv === undefined ? [...req.argv] : [setpriv, '--pdeathsig', 'SIGKILL', ...who, '--', ...req.argv];
  const setup: ChildSetup = {
    join: placement?.procsFiles ?? [],
    openFiles: req.openFiles,
    parentDeathSignal: wantDeathSignal ? 'SIGKILL' : undefined,
  };
  // Joins its cgroup(s) and sets open_files before exec, as the emperor's user (setpriv comes
  // after): the native start does both in the child itself, child_process needs a /bin/sh wrapper.
  const argv = native ? inner : wrapLaunch(inner, setup.join, setup.openFiles);
  // OOM kills are counted per cgroup; only those during this run are this process's.
  const oomBefore = placement?.oomKills() ?? 0;
  const [file = '', ...args] = argv;
  const shortage = fdShortage();
  if (shortage !== undefined) return notStarted(`not started: ${shortage}`);

  // Output always comes through the emperor (see src/output): it writes the log, so it can
  // rotate it and count what could not be written. fd 3 is the Emperor protocol's channel,
  // a socketpair (libuv makes every 'pipe' one), as $UWSGI_EMPEROR_FD; fd 4 the readiness
  // channel when asked for: the app writes READY=1 to $NOTIFY_FD.
  const out = req.output ? 'pipe' : 'ignore';
  const stdio: Array<'ignore' | 'pipe'> = ['ignore', out, out, 'pipe', ...(req.notify ? (['pipe'] as const) : [])];
  let leaderExited = false;
  let settle!: (info: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((resolve) => {
    settle = (info) => {
      leaderExited = true;
      resolve(info);
    };
  });
  const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
    const oom = (placement?.oomKills() ?? 0) > oomBefore;
    settle({ code, signal, ...(oom ? { oomKilled: true } : {}) });
  };
  // The app's path was found above; only another first word (setpriv) is looked up again.
  const started = start(native, file === req.argv[0] ? resolved.file : file, file, args, req, stdio, setup, onExit, settle);
  if ('failed' in started) {
    if (!started.later) settle({ code: null, signal: null, error: started.failed });
    return { ...notStarted(started.failed), exited };
  }
  const { pid, pipes } = started;
  // Read now, while the leader cannot have been reaped yet (that needs this event loop); the
  // native start has it from the child itself.
  const startTime = started.startTime ?? readStatSync(pid)?.startTime;
  req.output?.attach([
    [pipes[1], 'stdout'],
    [pipes[2], 'stderr'],
  ]);

  const probe = new GroupProbe(pid);
  // The app may close fd 3 or 4 or die; none of it is an emperor error (the listener is above).
  const notifyStream = req.notify ? pipes[NOTIFY_FD] : undefined;
  const emperorStream = pipes[EMPEROR_FD];
  return {
    pid,
    pgid: pid,
    ...(notifyStream ? { notify: notifyStream } : {}),
    ...(emperorStream ? { emperor: emperorStream } : {}),
    startTime,
    exited,
    ...(cgroup ? { cgroup: cgroup.dir, whenGone: (ms: number) => cgroup.whenEmpty(ms) } : {}),
    ...(placement && placement.procsFiles.length > 0 ? { joined: placement.procsFiles } : {}),
    signalGroup: (signal) => {
      if (!cgroup) return signalGroup(pid, signal);
      if (!cgroup.populated()) return false;
      // cgroup.kill also takes what forks meanwhile; other signals go to every listed process.
      if (signal === 'SIGKILL') void cgroup.kill();
      else cgroup.signalAll(signal);
      return true;
    },
    groupAlive: () => (cgroup ? cgroup.populated() : probe.alive(leaderExited)),
  };
}

/**
 * Starts the child (posix_spawn when the addon is built, else child_process): its pid and the
 * emperor's ends of its pipes, or why it could not start (`later`: child_process reports the
 * detail through its 'error' event, which settles the exit itself).
 */
function start(
  native: boolean,
  path: string,
  file: string,
  args: readonly string[],
  req: SpawnRequest,
  stdio: ReadonlyArray<'ignore' | 'pipe'>,
  setup: ChildSetup,
  onExit: (code: number | null, signal: NodeJS.Signals | null) => void,
  settle: (info: ExitInfo) => void,
): { pid: number; pipes: ReadonlyArray<Duplex | undefined>; startTime?: string | undefined } | { failed: string; later?: boolean } {
  if (native) {
    try {
      const spawned = posixSpawn(path, [file, ...args], req.env, req.cwd, stdio, setup, onExit);
      for (const s of spawned.stdio) s?.on('error', () => undefined);
      return { pid: spawned.pid, pipes: spawned.stdio, startTime: spawned.startTime };
    } catch (err) {
      return { failed: spawnError(err) };
    }
  }
  let child: ChildProcess;
  try {
    // EMFILE, ENFILE, EAGAIN and ENOENT come as an 'error' event; anything else is thrown here.
    child = spawn(file, args, { cwd: req.cwd, env: { ...req.env }, detached: true, stdio: [...stdio] });
  } catch (err) {
    return { failed: spawnError(err) };
  }
  // 'exit', not 'close': a grandchild still holding stdout must not delay the news.
  child.once('exit', onExit);
  child.on('error', (err) => {
    // Only a failed spawn leaves pid unset; other 'error's (a failed kill...) are no exit.
    if (child.pid === undefined) settle({ code: null, signal: null, error: spawnError(err) });
  });
  // A failed spawn may leave half-made pipes; none of their errors may reach the emperor.
  const pipes = ((child.stdio as ReadonlyArray<Duplex | null | undefined> | undefined) ?? []).map((s) => s ?? undefined);
  for (const s of pipes) s?.on('error', () => undefined);
  if (child.pid === undefined) {
    for (const s of pipes) s?.destroy();
    return { failed: 'spawn failed', later: true };
  }
  return { pid: child.pid, pipes };
}
