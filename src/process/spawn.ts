// Starts one vassal as the leader of its own process group.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { Readable, type Writable } from 'node:stream';
import { GroupProbe, signalGroup } from './group.js';
import { launchProblem, setprivPath } from './launch.js';
import { LineSplitter } from './lines.js';
import { readStatSync } from './procfs.js';
import { identityArgs } from './identity.js';
import type { ExitInfo, SpawnRequest, VassalProcess } from './types.js';

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** A VassalProcess for a start that never happened; pid 0 is never signalled (see signalGroup). */
function notStarted(error: string): VassalProcess {
  return {
    pid: 0,
    pgid: 0,
    startTime: undefined,
    exited: Promise.resolve({ code: null, signal: null, error }),
    signalGroup: () => false,
    groupAlive: () => false,
  };
}

function openLog(logFile: string): number {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  return fs.openSync(logFile, 'a');
}

/**
 * onLine mode: both pipes go into one append stream of the log file, and through a splitter each.
 * pipe() gives back-pressure from the file; the extra 'data' listener sees the same chunks.
 */
function teeOutput(
  streams: ReadonlyArray<[Readable | null, 'stdout' | 'stderr']>,
  sink: Writable,
  onLine: NonNullable<SpawnRequest['onLine']>,
): void {
  let open = 0;
  for (const [stream, name] of streams) {
    if (!stream) continue;
    open += 1;
    const splitter = new LineSplitter((line) => onLine(line, name));
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      splitter.end();
      open -= 1;
      if (open === 0) sink.end();
    };
    stream.pipe(sink, { end: false });
    stream.on('data', (chunk: Buffer | string) => splitter.push(chunk));
    stream.once('end', finish);
    stream.once('close', finish);
    stream.on('error', finish);
  }
  if (open === 0) sink.end();
}

export function spawnVassal(req: SpawnRequest): VassalProcess {
  const problem = launchProblem(req.argv, req.cwd, req.env);
  if (problem !== undefined) return notStarted(problem);

  let fd: number;
  try {
    fd = openLog(req.logFile);
  } catch (err) {
    return notStarted(`cannot open log file ${req.logFile}: ${message(err)}`);
  }
  // With onLine the stream owns fd from here on; without it the child gets a copy of fd.
  const sink = req.onLine ? fs.createWriteStream(req.logFile, { fd, flags: 'a' }) : undefined;
  // A full disk must not take the emperor down; the app's own output is what is lost.
  sink?.on('error', () => undefined);

  // setpriv execs the app after prctl(PR_SET_PDEATHSIG), so the pid we get is the app's and
  // the kernel SIGKILLs it if the emperor dies without a chance to clean up.
  const setpriv = setprivPath();
  if (req.identity && setpriv === undefined) {
    if (sink) sink.destroy();
    else fs.closeSync(fd);
    return notStarted('cannot switch to another user: util-linux setpriv is not installed');
  }
  const who = req.identity ? identityArgs(req.identity) : [];
  const argv = setpriv === undefined ? [...req.argv] : [setpriv, '--pdeathsig', 'SIGKILL', ...who, '--', ...req.argv];
  const [file = '', ...args] = argv;
  // Without onLine the child writes straight to the log file. fd 3 is the readiness channel
  // when asked for: the app writes READY=1 to $NOTIFY_FD.
  const out = sink ? 'pipe' : fd;
  const stdio: StdioOptions = req.notify ? ['ignore', out, out, 'pipe'] : ['ignore', out, out];
  let child: ChildProcess;
  try {
    // detached: the vassal leads its own process group, so the whole group can be signalled.
    child = spawn(file, args, { cwd: req.cwd, env: { ...req.env }, detached: true, stdio });
  } catch (err) {
    sink?.destroy();
    return notStarted(`spawn failed: ${message(err)}`);
  } finally {
    // The child holds its own copy now (spawn is synchronous up to exec).
    if (!sink) fs.closeSync(fd);
  }

  const pid = child.pid ?? 0;
  let leaderExited = false;
  let settle!: (info: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((resolve) => {
    settle = (info) => {
      leaderExited = true;
      resolve(info);
    };
  });
  // 'exit', not 'close': a grandchild still holding stdout must not delay the news.
  child.once('exit', (code, signal) => settle({ code, signal }));
  child.on('error', (err) => {
    // Only a failed spawn leaves pid unset; other 'error's (a failed kill...) are no exit.
    if (child.pid === undefined) settle({ code: null, signal: null, error: `spawn failed: ${err.message}` });
  });

  if (sink && req.onLine) {
    teeOutput([[child.stdout, 'stdout'], [child.stderr, 'stderr']], sink, req.onLine);
  }

  const probe = new GroupProbe(pid);
  const fd3 = child.stdio[3];
  const notifyStream = req.notify && fd3 instanceof Readable ? fd3 : undefined;
  // The app may close fd 3 or die; neither is an emperor error.
  notifyStream?.on('error', () => undefined);
  return {
    pid,
    pgid: pid,
    ...(notifyStream ? { notify: notifyStream } : {}),
    // Read now, while the leader cannot have been reaped yet (that needs this event loop).
    startTime: pid > 0 ? readStatSync(pid)?.startTime : undefined,
    exited,
    signalGroup: (signal) => signalGroup(pid, signal),
    groupAlive: () => probe.alive(leaderExited),
  };
}
