// What every check (periodic or TTL) reports, and the events it emits.
import type { CheckSpec, CheckStatus } from '../config/index.js';
import type { ProbeResult } from './probe.js';

export type CheckKind = CheckSpec['probe']['kind'];

export interface CheckState {
  readonly name: string;
  readonly kind: CheckKind;
  readonly status: CheckStatus;
  /** Output of the result that set the status (a probe's output, or a TTL note). */
  readonly output: string;
  /** Date.now() of the latest result, counted or not; null before the first. */
  readonly lastResultAt: number | null;
  /** Date.now() of the latest status change; null while the status is the initial one. */
  readonly lastChangeAt: number | null;
  /**
   * How late the latest run started, in ms (actual start minus due time: waiting for a slot
   * of the probe budget, or a busy event loop); null before the first run and for ttl checks.
   */
  readonly startLagMs: number | null;
  /** Results so far (probe runs; pushes for a ttl check). */
  readonly runs: number;
}

export interface ResultInfo {
  /** The raw result, before successes_before_passing / failures_before_critical. */
  readonly result: ProbeResult;
  /** Whether the result set status and output (false while a threshold is not reached yet). */
  readonly applied: boolean;
  /** Actual start minus scheduled start of the run, in ms (scheduler lag, or how long an overrun delayed it). */
  readonly lagMs: number;
  /** How long the run took, in ms (0 for TTL updates). */
  readonly durationMs: number;
}

/**
 * 'change' fires only when the status changes, before the 'result' of the same run;
 * 'result' fires for every result, after the state is updated. No events after stop().
 */
export interface CheckEvents {
  result: [state: CheckState, info: ResultInfo];
  change: [state: CheckState, previous: CheckStatus];
}

/** Consul registers new checks as critical until their first result. */
export const INITIAL_STATUS: CheckStatus = 'critical';
