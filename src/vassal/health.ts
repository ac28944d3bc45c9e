// A running vassal's health: its checks, their worst status, and on_critical.restart_after.
import type { CheckStatus, VassalSpec } from '../config/spec.js';
import { worstStatus } from '../checks/aggregate.js';
import { CheckRunner } from '../checks/runner.js';
import type { CheckState, ResultInfo } from '../checks/state.js';
import { TtlCheck } from '../checks/ttl.js';
import type { Identity } from '../process/identity.js';
import type { VassalLog } from './types.js';

type Check = CheckRunner | TtlCheck;

export interface HealthEvents {
  /** Any check changed status (per-check statuses are part of what registries show). */
  changed(health: CheckStatus): void;
  /** on_critical.restart_after critical results in a row: the vassal should restart. */
  critical(reason: string): void;
}

/** The checks of one process, from ready until it leaves running. */
export class VassalHealth {
  private readonly checks: Check[];
  private readonly resultLag = new WeakMap<Check, number>();
  private worst: CheckStatus;
  /** Consecutive check results with a critical aggregate, for on_critical.restart_after. */
  private criticalStreak = 0;
  private stopped = false;

  constructor(
    private readonly spec: VassalSpec,
    run: { readonly env: Record<string, string>; readonly identity: Identity | undefined; readonly cgroupProcs: readonly string[] | undefined },
    private readonly log: VassalLog,
    private readonly on: HealthEvents,
  ) {
    this.checks = spec.checks.map((c) => (c.probe.kind === 'ttl' ? new TtlCheck(c) : new CheckRunner(c, { cwd: spec.cwd, env: run.env, identity: run.identity, cgroupProcs: run.cgroupProcs })));
    this.worst = worstStatus(this.checks.map((c) => c.state().status));
    for (const check of this.checks) {
      check.on('change', (st: CheckState, previous: CheckStatus) => {
        this.log(st.status === 'passing' ? 'info' : 'warn', 'check', `check ${st.name}: ${previous} -> ${st.status}`, {
          check: st.name,
          status: st.status,
          previous,
          output: st.output.slice(0, 500),
        });
        this.update();
      });
      check.on('result', (_st: CheckState, info: ResultInfo) => {
        this.resultLag.set(check, info.lagMs + info.durationMs);
        this.onResult();
      });
    }
  }

  start(): void {
    for (const check of this.checks) check.start();
  }

  get status(): CheckStatus {
    return this.worst;
  }

  states(): Array<CheckState & { readonly resultLagMs: number | null }> {
    return this.checks.map((c) => ({ ...c.state(), resultLagMs: this.resultLag.get(c) ?? null }));
  }

  /** Push a result to a ttl check (by name; the name may be omitted when there is only one). */
  pushTtl(vassal: string, checkName: string | undefined, status: CheckStatus, note: string | undefined): CheckState {
    const ttls = this.checks.filter((c): c is TtlCheck => c instanceof TtlCheck);
    const target = checkName === undefined ? (ttls.length === 1 ? ttls[0] : undefined) : ttls.find((c) => c.state().name === checkName);
    if (!target) {
      const names = ttls.map((c) => c.state().name).join(', ') || 'none';
      throw new Error(
        checkName === undefined
          ? `vassal "${vassal}" has ${ttls.length} ttl checks (${names}); name one`
          : `vassal "${vassal}" has no ttl check named "${checkName}" (ttl checks: ${names})`,
      );
    }
    target.push(status, note);
    return target.state();
  }

  stop(): void {
    this.stopped = true;
    for (const c of this.checks) {
      c.removeAllListeners();
      // Aborts an in-flight probe; its reaping finishes in the background.
      void c.stop();
    }
  }

  private update(): void {
    const health = worstStatus(this.checks.map((c) => c.state().status));
    const changed = health !== this.worst;
    this.worst = health;
    if (changed) this.log(health === 'passing' ? 'info' : 'warn', 'health', `health ${health}`, { health });
    this.on.changed(health);
  }

  private onResult(): void {
    const limit = this.spec.onCritical?.restartAfter;
    if (!limit || this.stopped) return;
    this.criticalStreak = this.worst === 'critical' ? this.criticalStreak + 1 : 0;
    if (this.criticalStreak < limit) return;
    this.on.critical(`health critical for ${limit} check result(s) in a row`);
  }
}
