// What a failure leads to: another try after an exponential back-off delay, or giving up,
// either after max_retries failures in a row or after more than max_restarts within a window.
import type { BackoffSpec } from '../config/spec.js';
import { formatDuration } from '../config/duration.js';

export type FailureVerdict = { readonly retry: true; readonly delayMs: number } | { readonly retry: false; readonly why: string };

/** The failures of one vassal and the back-off that follows from them. */
export class Backoff {
  private count = 0;
  /** When each restart after a failure was decided, oldest first, within the intensity window. */
  private restarts: number[] = [];

  /** Failures in a row (what max_retries counts). */
  get failures(): number {
    return this.count;
  }

  /** A manual start or a deliberate restart forgets past failures, and the intensity window. */
  reset(): void {
    this.count = 0;
    this.restarts = [];
  }

  /**
   * Count one failure at `now`. `ranForMs` is how long the failed process had been running
   * (null when it never got to running): a run that lasted reset_after was a success, so the
   * series of failures in a row starts over, but the intensity window does not forget it.
   */
  fail(spec: BackoffSpec, ranForMs: number | null, now: number): FailureVerdict {
    if (ranForMs !== null && ranForMs >= spec.resetAfterMs) this.count = 0;
    this.count++;
    if (this.count > spec.maxRetries) return { retry: false, why: `giving up after ${spec.maxRetries} failed restarts in a row (backoff.max_retries)` };
    const { count, withinMs } = spec.maxRestarts;
    this.restarts = this.restarts.filter((t) => now - t < withinMs);
    if (this.restarts.length >= count) {
      return { retry: false, why: `giving up: restarted ${this.restarts.length} times within ${formatDuration(withinMs)} (backoff.max_restarts)` };
    }
    this.restarts.push(now);
    return { retry: true, delayMs: Math.min(spec.maxMs, spec.initialMs * 2 ** (this.count - 1)) };
  }
}
