import type { Identity } from '../process/identity.js';
// One periodic check (http, tcp or exec): runs its probe on a fixed schedule, one run at a
// time, and turns results into a status with Consul's flap-damping thresholds.
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { CheckSpec, CheckStatus, ProbeTarget } from '../config/index.js';
import { runProbe, type ProbeResult } from './probe.js';
import { INITIAL_STATUS, type CheckEvents, type CheckState } from './state.js';
import { probeBudget, type ProbeBudget } from './budget.js';

/**
 * The first run comes at a random moment within min(interval, this), as Consul staggers its
 * checks: vassals started together do not all probe in the same instant, every interval.
 * Capped so a long interval does not leave a new check "no result yet" (critical) for long.
 */
export const FIRST_RUN_SPREAD_MS = 1000;

export interface CheckRunnerOptions {
  /** Working directory of exec probes (the vassal's). */
  readonly cwd: string;
  /** Complete environment of exec probes (the caller merges the emperor's and the spec's). */
  readonly env: Readonly<Record<string, string>>;
  /** Exec probes run as the vassal's user. */
  readonly identity?: Identity | undefined;
  /** Exec probes join these cgroup.procs files (the vassal's) before they exec. */
  readonly cgroupProcs?: readonly string[] | undefined;
  /** Slots for probes running at once (default: the emperor's, shared by every check). */
  readonly budget?: ProbeBudget;
}

/**
 * Consul's StatusHandler. Passing and warning results count as successes, critical ones as
 * failures; each resets the other counter. A success is applied (status and output) once
 * `successesBeforePassing` successes came in a row, a failure once `failuresBeforeCritical`
 * failures did; until then status and output stay as they were. Like Consul, the counters
 * start at their thresholds, so the first result always applies: the initial "no result
 * yet" is a placeholder, not an observed status worth protecting.
 */
export class StatusThresholds {
  private successes: number;
  private failures: number;

  constructor(
    private readonly successesBeforePassing: number,
    private readonly failuresBeforeCritical: number,
  ) {
    this.successes = successesBeforePassing;
    this.failures = failuresBeforeCritical;
  }

  /** Whether this result should set the check's status and output. */
  accept(status: CheckStatus): boolean {
    if (status === 'critical') {
      this.failures += 1;
      this.successes = 0;
      return this.failures >= this.failuresBeforeCritical;
    }
    this.successes += 1;
    this.failures = 0;
    return this.successes >= this.successesBeforePassing;
  }
}

type PeriodicSpec = CheckSpec & { readonly probe: ProbeTarget };

export function isPeriodic(spec: CheckSpec): spec is PeriodicSpec {
  return spec.probe.kind !== 'ttl';
}

export class CheckRunner extends EventEmitter<CheckEvents> {
  readonly spec: PeriodicSpec;
  private current: CheckState;
  private readonly thresholds: StatusThresholds;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  /** The in-flight run's abort handle and its completion. */
  private inFlight: { controller: AbortController; done: Promise<void> } | undefined;

  constructor(
    spec: CheckSpec,
    private readonly options: CheckRunnerOptions,
  ) {
    super();
    if (!isPeriodic(spec)) throw new TypeError(`check ${spec.name} is a TTL check; use TtlCheck`);
    this.spec = spec;
    this.thresholds = new StatusThresholds(spec.successesBeforePassing, spec.failuresBeforeCritical);
    this.current = {
      name: spec.name,
      kind: spec.probe.kind,
      status: INITIAL_STATUS,
      output: 'no result yet',
      lastResultAt: null,
      lastChangeAt: null,
      startLagMs: null,
      runs: 0,
    };
  }

  state(): CheckState {
    return this.current;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /**
   * Runs the first probe at a random moment within min(interval, FIRST_RUN_SPREAD_MS), then
   * every intervalMs. Starting twice does nothing.
   */
  start(): void {
    if (this.running) return;
    this.running = true;
    const firstAt = performance.now() + Math.random() * Math.min(this.spec.intervalMs, FIRST_RUN_SPREAD_MS);
    const previous = this.inFlight;
    // Restarted while a stopped run is still being killed: never two runs at once.
    if (previous === undefined) this.schedule(firstAt);
    else void previous.done.then(() => this.schedule(Math.max(firstAt, performance.now())));
  }

  /**
   * Stops scheduling and aborts the in-flight probe (an exec probe's group is SIGKILLed).
   * Resolves once that probe has finished; no events are emitted after stop() is called.
   */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    const inFlight = this.inFlight;
    if (inFlight === undefined) return;
    inFlight.controller.abort();
    await inFlight.done;
  }

  /** Schedules the run due at `dueAt` (performance.now() time). */
  private schedule(dueAt: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.launch(dueAt);
    }, Math.max(0, dueAt - performance.now()));
  }

  private launch(dueAt: number): void {
    if (!this.running || this.inFlight !== undefined) return;
    const entry = { controller: new AbortController(), done: Promise.resolve() };
    // runOnce handles every failure of the probe itself; what could reject here is a
    // listener throwing, which is the listener's bug and should surface as one.
    entry.done = this.runOnce(dueAt, entry.controller.signal).finally(() => {
      if (this.inFlight === entry) this.inFlight = undefined;
    });
    this.inFlight = entry;
  }

  private async runOnce(dueAt: number, signal: AbortSignal): Promise<void> {
    const budget = this.options.budget ?? probeBudget;
    const release = await budget.acquire(signal);
    let result: ProbeResult;
    let startedAt: number;
    try {
      if (!this.running || signal.aborted) return;
      startedAt = performance.now();
      budget.noteStart(this.spec.name, Math.max(0, startedAt - dueAt), this.spec.intervalMs);
      result = await runProbe(this.spec.probe, {
        timeoutMs: this.spec.timeoutMs,
        cwd: this.options.cwd,
        env: this.options.env,
        identity: this.options.identity,
        cgroupProcs: this.options.cgroupProcs,
        signal,
      });
    } finally {
      release();
    }
    const endedAt = performance.now();
    if (!this.running || signal.aborted) return;
    // Fixed rate: the next run is due one interval after this one was. After an overrun it
    // starts right away, and the schedule restarts from there instead of bursting to catch up.
    const nextDue = dueAt + this.spec.intervalMs;
    this.schedule(nextDue >= endedAt ? nextDue : endedAt);
    this.record(result, { lagMs: Math.max(0, startedAt - dueAt), durationMs: endedAt - startedAt });
  }

  private record(result: ProbeResult, timing: { lagMs: number; durationMs: number }): void {
    const now = Date.now();
    const applied = this.thresholds.accept(result.status);
    const previous = this.current;
    if (applied) {
      const changed = result.status !== previous.status;
      this.current = {
        ...previous,
        status: result.status,
        output: result.output,
        lastResultAt: now,
        lastChangeAt: changed ? now : previous.lastChangeAt,
        startLagMs: timing.lagMs,
        runs: previous.runs + 1,
      };
      if (changed) this.emit('change', this.current, previous.status);
    } else {
      this.current = { ...previous, lastResultAt: now, startLagMs: timing.lagMs, runs: previous.runs + 1 };
    }
    this.emit('result', this.current, { result, applied, ...timing });
  }
}
