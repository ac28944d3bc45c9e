// Parsing vassal files off the main thread. The yaml library needs 100-300 ms of CPU for a
// hostile but valid 64 KiB file (measured on a busy 2-core machine; even 4 KiB files took up to
// 100 ms), and on the main thread that much stops the emperor from answering status, reaping
// children and running checks. So every file is parsed in one worker thread, with a time and a
// memory limit: a file that exceeds either is refused, the worker is replaced, and nothing else
// waits more than the time limit for it.
import { Worker } from 'node:worker_threads';
import { deepFreeze } from './data.js';
import { ConfigError } from './errors.js';
import type { ParseOptions, VassalParseResult } from './load.js';
import type { VassalSpec } from './spec.js';

export interface ParseRequest {
  readonly id: number;
  readonly bytes: Uint8Array;
  readonly file: string;
  readonly opts?: ParseOptions;
}

export type ParseReply =
  | { readonly id: number; readonly ok: true; readonly spec: VassalSpec }
  | {
      readonly id: number;
      readonly ok: false;
      readonly error: { file: string; problem: string; field: string | undefined };
    };

/** What the worker sends: answers, and once, when it has loaded its modules, `ready`. */
export type WorkerMessage = ParseReply | { readonly ready: true };

/** The worker's answer for one request: an error travels as its parts, a ConfigError is rebuilt from them. */
export function replyFor(id: number, result: VassalParseResult): ParseReply {
  if (result.ok) return { id, ok: true, spec: result.spec };
  return { id, ok: false, error: { file: result.error.file, problem: result.error.problem, field: result.error.field } };
}

export interface ParserOptions {
  /** A file whose parse takes longer is refused and the worker replaced (default 10 s: a hostile 64 KiB file needs under 1 s, but a machine with a load of 20 on 2 cores stretched that past 3 s). */
  readonly timeLimitMs?: number;
  /** Heap a parse may use (default 96 MB): a file needing more is refused. */
  readonly memoryLimitMb?: number;
  /** The worker is stopped after this long without work (default 10 s): an idle emperor keeps no thread. */
  readonly idleMs?: number;
  /** The worker script (tests substitute one that misbehaves on purpose). */
  readonly workerUrl?: URL;
}

interface Job {
  readonly request: ParseRequest;
  readonly resolve: (result: VassalParseResult) => void;
}

/**
 * Requests sent ahead, so that small files do not each pay a round trip, and so the worker keeps
 * parsing while the main thread is busy spawning what it already answered (a burst of 200 files
 * took 3 s with 8 in flight on a loaded machine: each round trip waited for both threads to be
 * scheduled). A request that hangs the worker is still refused alone: the rest are sent again.
 */
const PIPELINE = 64;

const WORKER_URL = new URL('./parse-worker.js', import.meta.url);

/** How long an idle worker is kept by default (the bench waits this out before measuring an idle emperor). */
export const PARSER_IDLE_MS = 10_000;

const refused = (file: string, problem: string, transient = false): VassalParseResult => ({
  ok: false,
  error: new ConfigError(file, problem),
  ...(transient ? { transient: true as const } : {}),
});

/** The worker could not start or load its modules because the emperor is out of a resource. */
const EXHAUSTED = /\b(EMFILE|ENFILE|ENOMEM|EAGAIN)\b/;

/**
 * One worker thread, requests answered in order. The time limit runs from the moment the
 * worker could start on a request (the previous answer, or the request's dispatch), so the
 * request at the head of the line when it fires is the one that hung.
 */
export class VassalParser {
  private worker: Worker | undefined;
  private ready = false;
  private readonly queue: Job[] = [];
  private readonly inFlight: Job[] = [];
  private nextId = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly timeLimitMs: number;
  private readonly memoryLimitMb: number;
  private readonly idleMs: number;
  private readonly workerUrl: URL;
  /** Workers started so far (tests and status use it to see a replacement happened). */
  started = 0;

  constructor(opts: ParserOptions = {}) {
    this.timeLimitMs = opts.timeLimitMs ?? 10_000;
    this.memoryLimitMb = opts.memoryLimitMb ?? 96;
    this.idleMs = opts.idleMs ?? PARSER_IDLE_MS;
    this.workerUrl = opts.workerUrl ?? WORKER_URL;
  }

  /** Parses `bytes` as the vassal file `file`; never rejects. */
  parse(bytes: Uint8Array, file: string, opts: ParseOptions = {}): Promise<VassalParseResult> {
    if (this.closed) return Promise.resolve(refused(file, 'not parsed: the emperor is shutting down'));
    return new Promise((resolve) => {
      this.queue.push({ request: { id: this.nextId++, bytes: Uint8Array.from(bytes), file, opts }, resolve });
      clearTimeout(this.idleTimer);
      this.pump();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.watchdog);
    for (const job of [...this.inFlight.splice(0), ...this.queue.splice(0)]) job.resolve(refused(job.request.file, 'not parsed: the emperor is shutting down'));
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  private pump(): void {
    if (this.closed) return;
    if (!this.worker) this.spawn();
    const worker = this.worker!;
    // Referenced only while there is work: an idle worker never keeps the process alive.
    if (this.queue.length > 0 || this.inFlight.length > 0) worker.ref();
    else worker.unref();
    if (!this.ready) return;
    while (this.inFlight.length < PIPELINE && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.inFlight.push(job);
      worker.postMessage(job.request);
      if (this.inFlight.length === 1) this.armWatchdog();
    }
    if (this.inFlight.length === 0 && this.queue.length === 0) this.armIdle();
  }

  private spawn(): void {
    this.ready = false;
    this.started++;
    const worker = new Worker(this.workerUrl, {
      resourceLimits: { maxOldGenerationSizeMb: this.memoryLimitMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      // The worker's stdout/stderr stay the emperor's; nothing in it writes there.
    });
    this.worker = worker;
    worker.on('message', (reply: WorkerMessage) => {
      if (worker !== this.worker) return;
      if ('ready' in reply) {
        this.ready = true;
        this.pump();
        return;
      }
      const job = this.inFlight.shift();
      if (job === undefined || job.request.id !== reply.id) return; // cannot happen: answers come in order
      job.resolve(reply.ok ? { ok: true, spec: deepFreeze(reply.spec) } : { ok: false, error: new ConfigError(reply.error.file, reply.error.problem, reply.error) });
      if (this.inFlight.length > 0) this.armWatchdog();
      else clearTimeout(this.watchdog);
      this.pump();
    });
    worker.on('error', (error: Error & { code?: string }) => {
      if (worker !== this.worker) return;
      if (error.code !== 'ERR_WORKER_OUT_OF_MEMORY' && EXHAUSTED.test(error.message)) {
        // Not the file's fault: say so, and let it be read again (issue 10: exhaustion is transient).
        this.replace(`not parsed yet: the parser could not run (${error.message}); it is read again at the next rescan`, true);
        return;
      }
      const problem =
        error.code === 'ERR_WORKER_OUT_OF_MEMORY'
          ? `refused: parsing it needs more than ${this.memoryLimitMb} MB of memory`
          : `refused: the parser failed on it (${error.message})`;
      this.replace(problem);
    });
    worker.on('exit', () => {
      if (worker !== this.worker) return;
      this.replace('refused: the parser stopped while reading it');
    });
  }

  /** The head request broke the worker: refuse it, start a new worker for the rest. */
  private replace(problem: string, transient = false): void {
    clearTimeout(this.watchdog);
    const worker = this.worker;
    this.worker = undefined;
    this.ready = false;
    void worker?.terminate();
    const culprit = this.inFlight.shift();
    // Sent after the culprit, never started: they go again, first in line.
    this.queue.unshift(...this.inFlight.splice(0));
    if (culprit) culprit.resolve(refused(culprit.request.file, problem, transient));
    // Before ready, nothing was in flight: a worker that cannot even start fails the next file only.
    else {
      const next = this.queue.shift();
      next?.resolve(refused(next.request.file, problem, transient));
    }
    if (this.queue.length > 0) this.pump();
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.replace(`refused: parsing it took more than ${this.timeLimitMs / 1000} s (the limit for one vassal file)`), this.timeLimitMs);
    this.watchdog.unref();
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.inFlight.length > 0 || this.queue.length > 0) return;
      const worker = this.worker;
      this.worker = undefined;
      this.ready = false;
      void worker?.terminate();
    }, this.idleMs);
    this.idleTimer.unref();
  }
}
