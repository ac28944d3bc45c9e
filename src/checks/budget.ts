// The global budget of probes running at once, and the honest report when checks fall behind.
//
// Without a budget, 200 exec checks due in the same second all spawn in the same turn of the
// event loop: the control API and registry heartbeats wait behind them, and the checks
// themselves silently run at half their rate. With it, a probe waits for a slot (FIFO), and the
// wait shows up as the run's lag (actual start minus due time): in status, in metrics, and in
// one warning when runs start a whole interval late.
import { EventEmitter } from 'node:events';

/**
 * Default number of probes (http, tcp, exec) that may run at once, over all vassals. 32: with
 * 200 exec checks a second on a two-core host at a load of 20, a probe takes ~150 ms from slot
 * to result (mostly waiting for CPUs), so 16 slots capped checks at ~150 runs/s (lag p99 1.7 s)
 * while 32 ran all 200 (lag p99 0.35 s); each slot costs the emperor nothing but a message to
 * the exec-probe helper (npm run bench, section load).
 */
export const DEFAULT_PROBE_CONCURRENCY = 32;

/** After this long without a run a whole interval late, checks count as caught up again. */
const CAUGHT_UP_AFTER_MS = 30_000;

export interface BudgetSnapshot {
  /** Probes allowed at once (--check-concurrency). */
  readonly limit: number;
  /** Probes running now. */
  readonly running: number;
  /** Probes due and waiting for a slot. */
  readonly waiting: number;
  /** Most probes ever running at once. */
  readonly peak: number;
  /** Probe runs started since the emperor started. */
  readonly runs: number;
  /** Runs that started at least one interval after they were due. */
  readonly lateRuns: number;
  /** Largest start lag (actual start minus due time) of the runs of the last 10 s, in ms. */
  readonly maxLagMs: number;
  /** True from a run a whole interval late until 30 s without one. */
  readonly behind: boolean;
}

export interface BudgetEvents {
  /** Checks started falling behind (emitted once per episode). */
  behind: [info: { check: string; lagMs: number; intervalMs: number; limit: number; waiting: number }];
  /** No run was a whole interval late for 30 s. */
  'caught-up': [];
}

export class ProbeBudget extends EventEmitter<BudgetEvents> {
  private running = 0;
  private peak = 0;
  private runs = 0;
  private lateRuns = 0;
  private readonly queue: Array<() => void> = [];
  private behind = false;
  private lastLateAt = 0;
  /** [time, lag] of recent run starts, for maxLagMs (bounded: one entry per 100 ms window). */
  private recent: Array<{ at: number; lagMs: number }> = [];

  constructor(private limit = DEFAULT_PROBE_CONCURRENCY) {
    super();
  }

  /** Probes allowed at once. */
  get slots(): number {
    return this.limit;
  }

  setLimit(limit: number): void {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`probe concurrency must be a whole number ≥ 1, got ${limit}`);
    this.limit = limit;
    this.drain();
  }

  /**
   * Wait for a slot; resolves with the function that gives it back (call it exactly once).
   * An aborted wait gives up its place and resolves with a no-op release.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.resolve(() => undefined);
    return new Promise((resolve) => {
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.running++;
        this.peak = Math.max(this.peak, this.running);
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.running--;
          this.drain();
        });
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(grant);
        if (i >= 0) this.queue.splice(i, 1);
        resolve(() => undefined);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(grant);
      this.drain();
    });
  }

  private drain(): void {
    while (this.running < this.limit && this.queue.length > 0) this.queue.shift()!();
  }

  /** A run started `lagMs` after it was due; a whole interval late means checks fall behind. */
  noteStart(check: string, lagMs: number, intervalMs: number): void {
    const now = Date.now();
    this.runs++;
    const last = this.recent[this.recent.length - 1];
    if (last && now - last.at < 100) last.lagMs = Math.max(last.lagMs, lagMs);
    else this.recent.push({ at: now, lagMs });
    if (lagMs >= intervalMs) {
      this.lateRuns++;
      this.lastLateAt = now;
      if (!this.behind) {
        this.behind = true;
        this.emit('behind', { check, lagMs, intervalMs, limit: this.limit, waiting: this.queue.length });
      }
    } else if (this.behind && now - this.lastLateAt >= CAUGHT_UP_AFTER_MS) {
      this.behind = false;
      this.emit('caught-up');
    }
  }

  snapshot(): BudgetSnapshot {
    const now = Date.now();
    this.recent = this.recent.filter((r) => now - r.at <= 10_000);
    return {
      limit: this.limit,
      running: this.running,
      waiting: this.queue.length,
      peak: this.peak,
      runs: this.runs,
      lateRuns: this.lateRuns,
      maxLagMs: this.recent.reduce((m, r) => Math.max(m, r.lagMs), 0),
      behind: this.behind,
    };
  }
}

/**
 * The emperor's budget: one per process, shared by every check (the limit is set from
 * --check-concurrency at start-up). Tests make their own.
 */
export const probeBudget = new ProbeBudget();
