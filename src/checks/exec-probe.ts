// An exec probe, run where it is spawned: in the exec-probe helper process (exec-helper.ts).
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import type { CheckStatus } from '../config/spec.js';
import { identityArgs, type Identity } from '../process/identity.js';
import { setprivPath } from '../process/launch.js';
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
 * The command line that runs argv with stderr joined to stdout, so the output is interleaved
 * exactly as written (two pipes would only give arrival order). `exec` keeps the pid: the
 * process we spawn, the group leader and the probe are one process.
 *
 * A probe for a vassal with its own user goes through util-linux setpriv, which switches to
 * that user and sets a parent-death SIGKILL. A probe that runs as the emperor's own user skips
 * setpriv (one exec less per probe, measured by `npm run bench` section load): the helper
 * process kills its probes' groups when the emperor goes away, and the emperor kills them when
 * the helper does (exec-runner.ts).
 */
function wrappedArgv(argv: readonly string[], identity: Identity | undefined, setpriv: string | undefined): string[] {
  const joined = ['/bin/sh', '-c', 'exec "$@" 2>&1', 'sh', ...argv];
  if (identity === undefined || setpriv === undefined) return joined;
  return [setpriv, '--pdeathsig', 'SIGKILL', ...identityArgs(identity), '--', ...joined];
}

/**
 * Consul's script check: exit 0 passing, 1 warning, anything else critical; output is
 * stdout and stderr interleaved, its last 4 KiB kept with Consul's "Captured N of M bytes"
 * header. The command runs as the leader of its own process group; on timeout or abort the
 * whole group gets SIGKILL, and the result only comes once the leader has been reaped, so a
 * probe never overlaps the next one.
 */
export async function probeExecHere(argv: readonly string[], ctx: ProbeContext, onSpawn?: (pid: number) => void): Promise<ProbeResult> {
  // spawn() reports a missing cwd as "spawn /bin/sh ENOENT", which would point the wrong way.
  try {
    if (!(await stat(ctx.cwd)).isDirectory()) return critical(`working directory is not a directory: ${ctx.cwd}`);
  } catch {
    return critical(`working directory does not exist: ${ctx.cwd}`);
  }
  if (ctx.signal?.aborted === true) return critical('aborted');

  // A probe must never run with more privilege than the vassal it checks.
  const setpriv = ctx.identity ? setprivPath() : undefined;
  if (ctx.identity && setpriv === undefined) return critical('cannot switch to the vassal user: util-linux setpriv is not installed');
  const [file = '/bin/sh', ...args] = wrappedArgv(argv, ctx.identity, setpriv);
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
      child = spawn(file, args, { cwd: ctx.cwd, env: { ...ctx.env }, detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
    } catch (err) {
      settle(critical(`cannot start ${argv[0] ?? ''}: ${errorText(err)}`));
      return;
    }
    const pid = child.pid;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let ended: EndReason | undefined;

    child.stdout?.on('data', (chunk: Buffer) => output.write(chunk));
    child.stdout?.on('error', () => undefined);
    child.once('error', (err) => {
      // Only a failed spawn leaves pid unset; a failed kill() is no reason to give up.
      if (pid === undefined) settle(critical(`cannot start ${argv[0] ?? ''}: ${errorText(err)}`));
    });
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      if (ended !== undefined) {
        // Killed by us: report as soon as the leader is reaped, whoever holds the pipe.
        child.stdout?.destroy();
        const text = output.annotated();
        const what = endedOutput(ended, ctx.timeoutMs);
        settle(critical(text === '' ? what : `${what}\n\n${text}`));
      }
    });
    // 'close' comes after 'exit' and the end of output: the normal way a run completes.
    child.once('close', () => {
      if (ended !== undefined || exit === undefined) return;
      const { code, signal } = exit;
      const text = output.annotated();
      const status: CheckStatus = code === 0 ? 'passing' : code === 1 ? 'warning' : 'critical';
      const fallback = signal !== null ? `killed by ${signal}` : `exit status ${code ?? 'unknown'}`;
      settle({ status, output: text === '' && status !== 'passing' ? fallback : text });
    });

    if (pid === undefined) return; // the 'error' event settles
    onSpawn?.(pid);
    const onEnd = (): void => {
      ended = run.reason() ?? 'abort';
      killGroup(pid);
      // Exited already, with a grandchild holding the output pipe: the kill freed the pipe,
      // and there is no 'exit' left to wait for.
      if (exit !== undefined) {
        child.stdout?.destroy();
        const text = output.annotated();
        const what = endedOutput(ended, ctx.timeoutMs);
        settle(critical(text === '' ? what : `${what}\n\n${text}`));
      }
    };
    if (run.signal.aborted) onEnd();
    else run.signal.addEventListener('abort', onEnd, { once: true });
  });
}
