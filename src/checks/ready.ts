import type { Identity } from '../process/identity.js';
// Readiness gates: when a started vassal counts as running.
import { performance } from 'node:perf_hooks';
import type { ReadySpec } from '../config/index.js';
import { errorText, runProbe, type ProbeResult } from './probe.js';

/** A gate the caller has resolved: 'default' is turned into a probe or a delay before this. */
export type ResolvedReadySpec = Exclude<ReadySpec, { kind: 'default' }>;

export interface ReadyContext {
  /** Working directory and complete environment of exec probes (as for CheckRunner). */
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /** Aborting rejects with an AbortError, after killing an in-flight probe. The start timeout goes here. */
  readonly signal: AbortSignal;
  /** Exec probes run as the vassal's user. */
  readonly identity?: Identity | undefined;
  /** See ProbeContext.cgroupProcs. */
  readonly cgroupProcs?: readonly string[] | undefined;
  /** For 'notify': the read end of the vassal's NOTIFY_FD. */
  readonly notify?: NodeJS.ReadableStream;
  /** For 'emperor': the vassal's Emperor protocol link (src/vassal/emperor-link.ts). */
  readonly emperor?: EmperorChannel;
  /** Called with every failed probe attempt, e.g. to say why a start timed out. */
  readonly onAttempt?: (result: ProbeResult) => void;
}

/** What an 'emperor' readiness wait needs of the vassal's Emperor protocol link. */
export interface EmperorChannel {
  readonly isOpen: boolean;
  once(event: 'accepting' | 'closed', listener: () => void): unknown;
  off(event: 'accepting' | 'closed', listener: () => void): unknown;
}

/** Resolves on the vassal's next byte 5; rejects when its end of the channel closes first. */
function waitEmperor(ctx: ReadyContext): Promise<void> {
  const link = ctx.emperor;
  if (link === undefined || !link.isOpen) return Promise.reject(new Error('the vassal has no open Emperor protocol channel ($UWSGI_EMPEROR_FD)'));
  const { signal } = ctx;
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      link.off('accepting', onAccepting);
      link.off('closed', onClosed);
      signal.removeEventListener('abort', onAbort);
    };
    const onAccepting = (): void => {
      cleanup();
      resolve();
    };
    const onClosed = (): void => {
      cleanup();
      reject(new Error('closed $UWSGI_EMPEROR_FD without sending byte 5 (ready to accept requests)'));
    };
    const onAbort = (): void => {
      cleanup();
      reject(abortError(signal));
    };
    link.once('accepting', onAccepting);
    link.once('closed', onClosed);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Lower and upper bound of one readiness probe attempt's timeout. */
export const READY_PROBE_TIMEOUT_MIN_MS = 5_000;
export const READY_PROBE_TIMEOUT_MAX_MS = 10_000;

/**
 * Timeout of one readiness probe attempt: the retry interval, but at least 5 s and at most
 * 10 s. A connection refused fails at once whatever the timeout, so a long one only matters
 * for an app that accepted the connection and is slow to answer, and waiting for that answer
 * is faster than abandoning and retrying it. Short retry intervals keep detection quick;
 * the overall bound is start.timeout, which the caller enforces through `signal`.
 */
export function readyProbeTimeoutMs(intervalMs: number): number {
  return Math.min(Math.max(intervalMs, READY_PROBE_TIMEOUT_MIN_MS), READY_PROBE_TIMEOUT_MAX_MS);
}

/** The line that means "ready" (s6 / sd_notify). */
export const READY_LINE = 'READY=1';
/** Longest notify line kept; longer ones cannot be READY=1 and are skipped. */
const MAX_NOTIFY_LINE = 4096;

export class ReadyAbortedError extends Error {
  override readonly name = 'AbortError';
  readonly code = 'ABORT_ERR';
  constructor(cause: unknown) {
    super('readiness wait aborted', { cause });
  }
}

function abortError(signal: AbortSignal): ReadyAbortedError {
  return new ReadyAbortedError(signal.reason);
}

/** Resolves after ms, or rejects when signal aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Probe attempts on a fixed schedule (one every intervalMs from the first; an attempt that
 * overruns is followed at once), until one passes. Passing is required: a warning (HTTP 429,
 * exit 1) is not ready. On abort the in-flight probe is aborted (an exec group is killed)
 * and the rejection waits for it to finish, so nothing is left running.
 */
async function waitProbe(ready: Extract<ResolvedReadySpec, { kind: 'probe' }>, ctx: ReadyContext): Promise<void> {
  const timeoutMs = readyProbeTimeoutMs(ready.intervalMs);
  let dueAt = performance.now();
  for (;;) {
    if (ctx.signal.aborted) throw abortError(ctx.signal);
    const result = await runProbe(ready.probe, { timeoutMs, cwd: ctx.cwd, env: ctx.env, signal: ctx.signal, identity: ctx.identity, cgroupProcs: ctx.cgroupProcs });
    if (ctx.signal.aborted) throw abortError(ctx.signal);
    if (result.status === 'passing') return;
    ctx.onAttempt?.(result);
    dueAt += ready.intervalMs;
    const wait = dueAt - performance.now();
    if (wait > 0) await sleep(wait, ctx.signal);
    else dueAt = performance.now();
  }
}

/**
 * Resolves on the first line that is exactly READY=1 (a trailing \r is tolerated, as is a
 * final READY=1 without newline when the stream ends). Other KEY=VALUE lines are skipped;
 * lines may come several per chunk or split across chunks. Rejects if the stream ends or
 * fails first. Afterwards the stream is left flowing, so later writes by the app never fill
 * the pipe and block it; closing it is the caller's business.
 */
function waitNotify(ctx: ReadyContext): Promise<void> {
  const stream = ctx.notify;
  if (stream === undefined) return Promise.reject(new Error('notify readiness needs the NOTIFY_FD stream'));
  const { signal } = ctx;
  return new Promise<void>((resolve, reject) => {
    let pending = '';
    let skipping = false; // inside an over-long line
    const decoder = new TextDecoder();
    const cleanup = (): void => {
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      stream.removeListener('close', onEnd);
      stream.removeListener('error', onError);
      signal.removeEventListener('abort', onAbort);
    };
    const succeed = (): void => {
      cleanup();
      resolve();
    };
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const isReady = (line: string): boolean => (line.endsWith('\r') ? line.slice(0, -1) : line) === READY_LINE;
    function onData(chunk: Buffer | string): void {
      pending += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
      for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        const wasSkipping = skipping;
        skipping = false;
        if (!wasSkipping && isReady(line)) {
          succeed();
          return;
        }
      }
      if (pending.length > MAX_NOTIFY_LINE) {
        pending = '';
        skipping = true;
      }
    }
    function onEnd(): void {
      if (!skipping && isReady(pending + decoder.decode())) succeed();
      else fail(new Error(`closed NOTIFY_FD without ${READY_LINE}`));
    }
    function onError(err: unknown): void {
      fail(new Error(`reading NOTIFY_FD failed: ${errorText(err)}`, { cause: err }));
    }
    function onAbort(): void {
      fail(abortError(signal));
    }
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
  });
}

/**
 * Resolves once the vassal is ready according to `ready`; rejects with a ReadyAbortedError
 * (name "AbortError") when ctx.signal aborts, or with an Error when readiness can no longer
 * come (notify stream closed). Settles exactly once.
 */
export async function waitReady(ready: ResolvedReadySpec, ctx: ReadyContext): Promise<void> {
  if (ctx.signal.aborted) throw abortError(ctx.signal);
  switch (ready.kind) {
    case 'probe':
      return waitProbe(ready, ctx);
    case 'notify':
      return waitNotify(ctx);
    case 'emperor':
      return waitEmperor(ctx);
    case 'delay':
      return sleep(ready.ms, ctx.signal);
  }
  throw new Error(`waitReady: unresolved readiness kind ${JSON.stringify((ready as { kind: unknown }).kind)}`);
}
