// What every probe kind shares: the result and context types, Consul's output cap, error text,
// and the one deadline that ends a run (timeout or abort). Kept free of heavy imports: the
// exec-probe helper process loads it too.
import type { CheckStatus } from '../config/spec.js';
import { formatDuration } from '../config/duration.js';
import type { Identity } from '../process/identity.js';

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
  /**
   * cgroup.procs files an exec probe writes its pid into before it execs: the vassal's, so a
   * probe counts against the vassal's limits, and what it leaves (even setsid'd) goes with the
   * vassal's cgroup.
   */
  readonly cgroupProcs?: readonly string[] | undefined;
}

/** Consul's cap on check output (its DefaultBufSize). */
export const MAX_OUTPUT_BYTES = 4 * 1024;

export const passing = (output: string): ProbeResult => ({ status: 'passing', output });
export const critical = (output: string): ProbeResult => ({ status: 'critical', output });

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

export type EndReason = 'timeout' | 'abort';

/**
 * One signal for "stop now", from either the timeout or the caller's signal, and which it was.
 * dispose() must be called when the run ends, to clear the timer and the listener.
 */
export function deadline(ctx: ProbeContext): { signal: AbortSignal; reason: () => EndReason | undefined; dispose: () => void } {
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

export function endedOutput(reason: EndReason, timeoutMs: number): string {
  return reason === 'timeout' ? `timed out after ${formatDuration(timeoutMs)}` : 'aborted';
}
