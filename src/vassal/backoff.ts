// What a failure leads to: another try after an exponential back-off delay, or giving up.
import type { BackoffSpec } from '../config/spec.js';

export type FailureVerdict = { readonly retry: true; readonly delayMs: number } | { readonly retry: false; readonly why: string };

/** Consecutive failures of one vassal and the back-off that follows from them. */
export class Backoff {
  private count = 0;

  get failures(): number {
    return this.count;
  }

  /** A manual start or a deliberate restart forgets past failures. */
  reset(): void {
    this.count = 0;
  }

  /**
   * Count one failure. `ranForMs` is how long the failed process had been running (null when
   * it never got to running): a run that lasted reset_after was a success, so the series of
   * failures starts over.
   */
  fail(spec: BackoffSpec, ranForMs: number | null): FailureVerdict {
    if (ranForMs !== null && ranForMs >= spec.resetAfterMs) this.count = 0;
    this.count++;
    if (this.count > spec.maxRetries) return { retry: false, why: `giving up after ${spec.maxRetries} failed restarts in a row` };
    return { retry: true, delayMs: Math.min(spec.maxMs, spec.initialMs * 2 ** (this.count - 1)) };
  }
}
