// One probe run: an HTTP GET, a TCP connect or a command, mapped to Consul's statuses.
// runProbe never throws and never outlives its timeout (plus the time to reap a killed
// command): every failure, including its own bugs, comes back as a critical result.
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import { formatDuration } from '../config/duration.js';
import type { CheckStatus, ProbeTarget } from '../config/index.js';
import { identityArgs, setprivPath, type Identity } from '../process/index.js';
import { runExecInThread } from './exec-runner.js';

export interface ProbeResult {
  readonly status: CheckStatus;
  readonly output: string;
}

export interface ProbeContext {
  /** The run is critical ("timed out after ...") when it takes longer; an exec probe's group is SIGKILLed. */
  readonly timeoutMs: number;
  /** Working directory of exec probes (the vassal's). */
  readonly cwd: string;
  /**
   * Complete environment of exec probes. Like the process layer's SpawnRequest.env, the caller
   * merges the emperor's environment and the spec's env; nothing is added here.
   */
  readonly env: Readonly<Record<string, string>>;
  /** Aborting ends the run at once (critical, "aborted"); an exec probe's group is SIGKILLed first. */
  readonly signal?: AbortSignal;
  /** Exec probes run as the vassal's user (tyrant mode, user:/group:). */
  readonly identity?: Identity | undefined;
}

/** Consul's cap on check output (its DefaultBufSize). */
export const MAX_OUTPUT_BYTES = 4 * 1024;

/** Sent with HTTP probes, after Consul's "Consul Health Check". */
export const USER_AGENT = 'Emperor Health Check';

const passing = (output: string): ProbeResult => ({ status: 'passing', output });
const critical = (output: string): ProbeResult => ({ status: 'critical', output });

/** Error text that is never empty: Node's happy-eyeballs AggregateError has message "". */
export function errorText(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    return [...new Set(err.errors.map((inner) => errorText(inner)))].join('; ');
  }
  if (err instanceof Error) {
    // fetch() reports "fetch failed" and hides the reason (ECONNREFUSED...) in cause.
    if (err.message === 'fetch failed' && err.cause !== undefined) return errorText(err.cause);
    if (err.message !== '') return err.message;
    const code = (err as NodeJS.ErrnoException).code;
    return code ?? err.name;
  }
  return String(err);
}

/**
 * Keeps the last `limit` bytes written, like Consul's circbuf: for a check the end of the
 * output (the final error) matters most.
 */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private held = 0;
  total = 0;

  constructor(private readonly limit = MAX_OUTPUT_BYTES) {}

  write(chunk: Buffer | Uint8Array | string): void {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.total += buffer.length;
    this.chunks.push(buffer);
    this.held += buffer.length;
    while (this.held > this.limit) {
      const first = this.chunks[0];
      if (first === undefined) break;
      const excess = this.held - this.limit;
      if (first.length <= excess) {
        this.chunks.shift();
        this.held -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.held -= excess;
      }
    }
  }

  /** The kept bytes as text (a multi-byte character cut at the start shows as U+FFFD). */
  text(): string {
    return Buffer.concat(this.chunks, this.held).toString('utf8');
  }

  /** Consul's script-check format: a "Captured N of M bytes" header when anything was dropped. */
  annotated(): string {
    const text = this.text();
    return this.total > this.held ? `Captured ${this.held} of ${this.total} bytes\n...\n${text}` : text;
  }
}

type EndReason = 'timeout' | 'abort';

/**
 * One signal for "stop now", from either the timeout or the caller's signal, and which it was.
 * dispose() must be called when the run ends, to clear the timer and the listener.
 */
function deadline(ctx: ProbeContext): { signal: AbortSignal; reason: () => EndReason | undefined; dispose: () => void } {
  const controller = new AbortController();
  let reason: EndReason | undefined;
  const end = (why: EndReason): void => {
    if (reason !== undefined) return;
    reason = why;
    controller.abort(new Error(why));
  };
  const timer = setTimeout(() => end('timeout'), Math.max(0, ctx.timeoutMs));
  const onAbort = (): void => end('abort');
  ctx.signal?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    reason: () => reason,
    dispose: () => {
      clearTimeout(timer);
      ctx.signal?.removeEventListener('abort', onAbort);
    },
  };
}

function endedOutput(reason: EndReason, timeoutMs: number): string {
  return reason === 'timeout' ? `timed out after ${formatDuration(timeoutMs)}` : 'aborted';
}

// ---- http ---------------------------------------------------------------------------------

/**
 * Consul's HTTP check: GET, following redirects (Consul follows them unless disable_redirects
 * is set), 2xx passing, 429 warning, anything else or no answer critical. Output is
 * "HTTP GET <url>: <code> <reason> Output: <body>", the body cut to its last 4 KiB like
 * Consul's circular buffer. The timeout covers reading the body too.
 */
async function probeHttp(url: string, ctx: ProbeContext): Promise<ProbeResult> {
  const prefix = `HTTP GET ${url}`;
  const run = deadline(ctx);
  try {
    const response = await fetch(url, {
      method: 'GET',
      redirect: 'follow',
      signal: run.signal,
      headers: { 'user-agent': USER_AGENT, accept: 'text/plain, text/*, */*' },
    });
    const body = new TailBuffer();
    if (response.body !== null) {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) body.write(chunk);
    }
    const status: CheckStatus = response.status >= 200 && response.status <= 299 ? 'passing' : response.status === 429 ? 'warning' : 'critical';
    const statusLine = `${response.status} ${response.statusText}`.trim();
    return { status, output: `${prefix}: ${statusLine} Output: ${body.text()}` };
  } catch (err) {
    const why = run.reason();
    return critical(`${prefix}: ${why === undefined ? errorText(err) : endedOutput(why, ctx.timeoutMs)}`);
  } finally {
    run.dispose();
  }
}

// ---- tcp ----------------------------------------------------------------------------------

/** "host:port", with IPv6 hosts in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Consul's TCP check: a completed connect is passing ("TCP connect <addr>: Success"). */
function probeTcp(host: string, port: number, ctx: ProbeContext): Promise<ProbeResult> {
  const prefix = `TCP connect ${hostPort(host, port)}`;
  return new Promise<ProbeResult>((resolve) => {
    const run = deadline(ctx);
    let socket: net.Socket | undefined;
    const finish = (result: ProbeResult): void => {
      run.dispose();
      socket?.destroy();
      resolve(result);
    };
    const onEnd = (): void => finish(critical(`${prefix}: ${endedOutput(run.reason() ?? 'abort', ctx.timeoutMs)}`));
    if (run.signal.aborted) {
      onEnd();
      return;
    }
    run.signal.addEventListener('abort', onEnd, { once: true });
    try {
      socket = net.connect({ host, port });
    } catch (err) {
      run.signal.removeEventListener('abort', onEnd);
      finish(critical(`${prefix}: ${errorText(err)}`));
      return;
    }
    socket.once('connect', () => {
      run.signal.removeEventListener('abort', onEnd);
      finish(passing(`${prefix}: Success`));
    });
    socket.once('error', (err) => {
      run.signal.removeEventListener('abort', onEnd);
      finish(critical(`${prefix}: ${errorText(err)}`));
    });
  });
}

// ---- exec ---------------------------------------------------------------------------------

/** Signals a whole process group; ESRCH (already gone) is not an error. */
function killGroup(pgid: number): void {
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
 * process we spawn, the group leader and the probe are one process. When util-linux setpriv
 * is available the probe also gets a parent-death SIGKILL, like vassals do.
 */
function wrappedArgv(argv: readonly string[], identity: Identity | undefined): string[] {
  const joined = ['/bin/sh', '-c', 'exec "$@" 2>&1', 'sh', ...argv];
  const setpriv = setprivPath();
  const who = identity ? identityArgs(identity) : [];
  return setpriv === undefined ? joined : [setpriv, '--pdeathsig', 'SIGKILL', ...who, '--', ...joined];
}

/**
 * Consul's script check: exit 0 passing, 1 warning, anything else critical; output is
 * stdout and stderr interleaved, its last 4 KiB kept with Consul's "Captured N of M bytes"
 * header. The command runs as the leader of its own process group; on timeout or abort the
 * whole group gets SIGKILL, and the result only comes once the leader has been reaped, so a
 * probe never overlaps the next one.
 */
export async function probeExecHere(argv: readonly string[], ctx: ProbeContext): Promise<ProbeResult> {
  // spawn() reports a missing cwd as "spawn /bin/sh ENOENT", which would point the wrong way.
  try {
    if (!(await stat(ctx.cwd)).isDirectory()) return critical(`working directory is not a directory: ${ctx.cwd}`);
  } catch {
    return critical(`working directory does not exist: ${ctx.cwd}`);
  }
  if (ctx.signal?.aborted === true) return critical('aborted');

  // A probe must never run with more privilege than the vassal it checks.
  if (ctx.identity && setprivPath() === undefined) return critical('cannot switch to the vassal user: util-linux setpriv is not installed');
  const [file = '/bin/sh', ...args] = wrappedArgv(argv, ctx.identity);
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

// ---- entry point --------------------------------------------------------------------------

/** Runs one probe. Never throws; a timeout or an abort is a critical result. */
export async function runProbe(target: ProbeTarget, ctx: ProbeContext): Promise<ProbeResult> {
  try {
    if (ctx.signal?.aborted === true) return critical('aborted');
    switch (target.kind) {
      case 'http':
        return await probeHttp(target.url, ctx);
      case 'tcp':
        return await probeTcp(target.host, target.port, ctx);
      case 'exec':
        // On the probe thread: spawning blocks the caller until the child has exec'd.
        return await runExecInThread(target.argv, ctx);
    }
    return critical(`unsupported probe kind ${JSON.stringify((target as { kind: unknown }).kind)}`);
  } catch (err) {
    // Only a bug gets here; a probe that crashes is a failing probe, not a crashed emperor.
    return critical(`probe failed: ${errorText(err)}`);
  }
}
