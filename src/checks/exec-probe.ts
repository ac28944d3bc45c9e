// An exec probe, run where it is spawned: in the exec-probe helper process (exec-helper.ts).
import { spawn, type StdioOptions } from 'node:child_process';
import { statSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { CheckStatus } from '../config/spec.js';
import { identityArgs, type Identity } from '../process/identity.js';
import { launchProblem, setprivPath, wrapLaunch } from '../process/launch.js';
import type { OutputPairs } from './output-pairs.js';
import { critical, deadline, endedOutput, errorText, TailBuffer, type EndReason, type ProbeContext, type ProbeResult } from './probe-common.js';

/** Signals a whole process group; ESRCH (already gone) is not an error. */
export function killGroup(pgid: number): void {
  // Below 2, kill(-pgid) would address our own group or every process on the host.
  if (!Number.isInteger(pgid) || pgid < 2) return;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // ESRCH: nothing left; EPERM cannot happen for our own children.
  }
}

/**
 * The command line of a probe. A probe for a vassal with its own user goes through util-linux
 * setpriv, which switches to that user and sets a parent-death SIGKILL. A probe that runs as the
 * emperor's own user is exec'd directly (one exec less per probe, measured by `npm run bench`
 * section load): the helper process kills its probes' groups when the emperor goes away, and
 * the emperor kills them when the helper does (exec-runner.ts).
 *
 * `joined`: no shared output socket could be made (output-pairs.ts), so /bin/sh joins stderr
 * to stdout instead; `exec` keeps the pid, so the process spawned, the group leader and the
 * probe are still one process.
 */
function commandLine(argv: readonly string[], identity: Identity | undefined, setpriv: string | undefined, joined: boolean, cgroupProcs: readonly string[]): string[] {
  const command = joined ? ['/bin/sh', '-c', 'exec "$@" 2>&1', 'sh', ...argv] : [...argv];
  const switched = identity === undefined || setpriv === undefined ? command : [setpriv, '--pdeathsig', 'SIGKILL', ...identityArgs(identity), '--', ...command];
  // Into the vassal's cgroup first, as the emperor's user, with no window to fork outside it
  // (the same launch wrapper the vassal itself went through; one shell exec more per probe).
  return wrapLaunch(switched, cgroupProcs, undefined);
}

export interface ExecHooks {
  /** Called with the probe's pid (its process group) once it is spawned. */
  readonly onSpawn?: (pid: number) => void;
  /** Where the probe's shared stdout/stderr socket comes from; without it, a shell joins them. */
  readonly pairs?: OutputPairs | undefined;
}

/** Text for a probe that could not be started at all: why, in the words launchProblem uses. */
function notStarted(argv: readonly string[], ctx: ProbeContext, err: unknown): ProbeResult {
  return critical(`cannot start ${argv[0] ?? ''}: ${launchProblem(argv, ctx.cwd, ctx.env) ?? errorText(err)}`);
}

/**
 * Consul's script check: exit 0 passing, 1 warning, anything else critical; output is
 * stdout and stderr interleaved, its last 4 KiB kept with Consul's "Captured N of M bytes"
 * header. The command runs as the leader of its own process group; on timeout or abort the
 * whole group gets SIGKILL, and the result only comes once the leader has been reaped, so a
 * probe never overlaps the next one.
 */
export async function probeExecHere(argv: readonly string[], ctx: ProbeContext, hooks: ExecHooks = {}): Promise<ProbeResult> {
  // spawn() reports a missing cwd as "spawn /bin/sh ENOENT", which would point the wrong way.
  // Synchronous: a few microseconds here, where the thread pool would cost a round trip through
  // another thread (on a busy host, a wait for a CPU) for every probe.
  try {
    if (!statSync(ctx.cwd).isDirectory()) return critical(`working directory is not a directory: ${ctx.cwd}`);
  } catch {
    return critical(`working directory does not exist: ${ctx.cwd}`);
  }
  const aborted = (): boolean => ctx.signal?.aborted === true;
  if (aborted()) return critical('aborted');

  // A probe must never run with more privilege than the vassal it checks.
  const setpriv = ctx.identity ? setprivPath() : undefined;
  if (ctx.identity && setpriv === undefined) return critical('cannot switch to the vassal user: util-linux setpriv is not installed');
  // No socket (out of descriptors, the listener failed): the shell joins the output instead.
  const pair = await hooks.pairs?.pair().catch(() => undefined);
  if (aborted()) {
    pair?.child.destroy();
    pair?.ours.destroy();
    return critical('aborted');
  }
  const [file = '/bin/sh', ...args] = commandLine(argv, ctx.identity, setpriv, pair === undefined, ctx.cgroupProcs ?? []);
  const output = new TailBuffer();
  const run = deadline(ctx);
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    const settle = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      run.dispose();
      resolve(result);
    };
    let child;
    try {
      const stdio: StdioOptions = pair ? ['ignore', pair.child, pair.child] : ['ignore', 'pipe', 'ignore'];
      child = spawn(file, args, { cwd: ctx.cwd, env: { ...ctx.env }, detached: true, stdio });
    } catch (err) {
      pair?.ours.destroy();
      settle(notStarted(argv, ctx, err));
      return;
    } finally {
      // The probe has its own copy now; ours would keep the output open after it exits.
      pair?.child.destroy();
    }
    const pid = child.pid;
    const out: Readable | null = pair?.ours ?? child.stdout;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let outputClosed = out === null;
    let ended: EndReason | undefined;

    const endedResult = (reason: EndReason): ProbeResult => {
      const text = output.annotated();
      const what = endedOutput(reason, ctx.timeoutMs);
      return critical(text === '' ? what : `${what}\n\n${text}`);
    };
    // Exit plus the end of output (every holder of the socket closed it): the normal way a run completes.
    const complete = (): void => {
      if (ended !== undefined || exit === undefined || !outputClosed) return;
      const { code, signal } = exit;
      const text = output.annotated();
      const status: CheckStatus = code === 0 ? 'passing' : code === 1 ? 'warning' : 'critical';
      const fallback = signal !== null ? `killed by ${signal}` : `exit status ${code ?? 'unknown'}`;
      // A check is done when its command is: whatever it left running in its group (a `cmd &`)
      // would pile up, one per run, so it goes, as systemd treats what an ExecStartPre leaves.
      if (pid !== undefined) killGroup(pid);
      settle({ status, output: text === '' && status !== 'passing' ? fallback : text });
    };
    out?.on('data', (chunk: Buffer) => output.write(chunk));
    out?.on('error', () => undefined);
    out?.once('close', () => {
      outputClosed = true;
      complete();
    });
    out?.resume();
    child.once('error', (err) => {
      // Only a failed spawn leaves pid unset; a failed kill() is no reason to give up.
      if (pid === undefined) {
        out?.destroy();
        settle(notStarted(argv, ctx, err));
      }
    });
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      if (ended !== undefined) {
        // Killed by us: report as soon as the leader is reaped, whoever holds the output.
        out?.destroy();
        settle(endedResult(ended));
      } else complete();
    });

    if (pid === undefined) return; // the 'error' event settles
    hooks.onSpawn?.(pid);
    const onEnd = (): void => {
      ended = run.reason() ?? 'abort';
      killGroup(pid);
      // Exited already, with a grandchild holding the output: the kill freed it, and there is
      // no 'exit' left to wait for.
      if (exit !== undefined) {
        out?.destroy();
        settle(endedResult(ended));
      }
    };
    if (run.signal.aborted) onEnd();
    else run.signal.addEventListener('abort', onEnd, { once: true });
  });
}
