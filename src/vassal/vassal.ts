import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { CheckStatus, ReadySpec, VassalSpec } from '../config/spec.js';
import { worstStatus } from '../checks/aggregate.js';
import { waitReady } from '../checks/ready.js';
import { CheckRunner } from '../checks/runner.js';
import type { CheckState, ResultInfo } from '../checks/state.js';
import { TtlCheck } from '../checks/ttl.js';
import { formatDuration } from '../config/duration.js';
import type { Logger } from '../log/logger.js';
import { spawnVassal } from '../process/spawn.js';
import { reapGroupAfterExit, stopGroup } from '../process/stop.js';
import type { ExitInfo, VassalProcess } from '../process/types.js';
import { identityEnv, type Identity } from '../process/identity.js';
import { isLegal, SETTLED, type VassalEvent, type VassalState } from './states.js';

/** What a vassal needs from its emperor; injected so a vassal can be driven in isolation. */
export interface VassalContext {
  readonly logger: Logger;
  readonly logsDir: string;
  /** Copy every output line into the emperor's log, labelled with the vassal name. */
  readonly mirrorOutput: boolean;
  /** Environment every vassal inherits (secrets already removed). */
  readonly baseEnv: Readonly<Record<string, string>>;
  /** Kills recorded groups if the emperor dies without cleaning up. */
  readonly guardian: { add(pgid: number): void; remove(pgid: number): void };
  /** Pid records, so the next emperor can kill what a SIGKILLed one left behind. */
  readonly records: {
    write(name: string, rec: { pid: number; pgid: number; startTime: string | undefined; argv: readonly string[]; emperorPid: number }): Promise<void>;
    remove(name: string): Promise<void>;
  };
  /**
   * Awaited after a vassal leaves `running` and before its stop signal is sent: the registrar
   * deregisters here, so the registry stops pointing at the app before the app stops serving.
   */
  readonly beforeStop?: (v: Vassal) => Promise<void>;
  /** Who a spec runs as (tyrant mode, user:/group:); undefined = as the emperor. */
  readonly identityFor?: (spec: VassalSpec) => Identity | undefined;
  /** Environment the emperor adds for a spec (CONSUL_HTTP_ADDR, EMPEROR_SERVICE_ID). */
  readonly extraEnv?: (spec: VassalSpec) => Record<string, string>;
}

export interface LastExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly error?: string;
  /** One human phrase: "exited with code 1", "killed by SIGKILL", "not ready within 30s". */
  readonly reason: string;
  readonly at: number;
}

export interface VassalSnapshot {
  readonly name: string;
  readonly state: VassalState;
  readonly pid: number | null;
  /** Since the current process was spawned; null without a process. */
  readonly uptimeMs: number | null;
  readonly restarts: number;
  readonly failures: number;
  readonly lastExit: LastExit | null;
  readonly file: string;
  readonly hash: string;
  readonly stateSince: number;
  readonly nextStartAt: number | null;
  /** Worst of the checks while running (passing without checks); null when not running. */
  readonly health: CheckStatus | null;
  /** resultLagMs: last result time minus its scheduled time (scheduling delay + run time). */
  readonly checks: Array<CheckState & { readonly resultLagMs: number | null }>;
  /** ms from spawn to ready of the current process. */
  readonly readyAfterMs: number | null;
}

type Check = CheckRunner | TtlCheck;

type AfterStop = 'stopped' | 'restart' | 'failed';

/** Default readiness of a vassal without a port: the process stayed up this long. */
const DEFAULT_READY_MS = 1000;
/** How often a default TCP readiness probe knocks. */
const DEFAULT_READY_INTERVAL_MS = 100;

function describeExit(info: ExitInfo): string {
  if (info.error) return info.error;
  if (info.signal) return `killed by ${info.signal}`;
  return `exited with code ${info.code ?? '?'}`;
}

/**
 * One app: owns its state machine, its process group and its restart back-off.
 * Nothing else mutates it; the emperor only sends it intents (start, stop, restart, reload).
 */
export class Vassal extends EventEmitter {
  private _state: VassalState = 'stopped';
  private _spec: VassalSpec;
  private pendingSpec: VassalSpec | undefined;
  private proc: VassalProcess | undefined;
  private afterStop: AfterStop = 'stopped';
  private failures = 0;
  private spawns = 0;
  private lastExit: LastExit | null = null;
  private stateSince = Date.now();
  private spawnedAt = 0;
  private nextStartAt: number | null = null;
  private startTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Leftovers of the previous process group being killed; a new spawn waits for it. */
  private reaping: Promise<void> = Promise.resolve();
  /** Bumped on every launch and stop so late callbacks of an older attempt do nothing. */
  private generation = 0;
  private readyAbort: AbortController | undefined;
  private readyAt: number | null = null;
  private checks: Check[] = [];
  private readonly resultLag = new WeakMap<Check, number>();
  private health: CheckStatus | null = null;
  /** Consecutive check results with a critical aggregate, for on_critical.restart_after. */
  private criticalStreak = 0;

  constructor(
    spec: VassalSpec,
    private readonly ctx: VassalContext,
  ) {
    super();
    this._spec = spec;
  }

  get name(): string {
    return this._spec.name;
  }
  get state(): VassalState {
    return this._state;
  }
  get spec(): VassalSpec {
    return this.pendingSpec ?? this._spec;
  }
  /** The spec of the process that runs now (differs from `spec` while a reload is pending). */
  get runningSpec(): VassalSpec {
    return this._spec;
  }

  snapshot(now = Date.now()): VassalSnapshot {
    return {
      name: this.name,
      state: this._state,
      pid: this.proc && this.proc.pid > 0 ? this.proc.pid : null,
      uptimeMs: this.proc && this.proc.pid > 0 ? now - this.spawnedAt : null,
      restarts: Math.max(0, this.spawns - 1),
      failures: this.failures,
      lastExit: this.lastExit,
      file: this.spec.file,
      hash: this.spec.hash,
      stateSince: this.stateSince,
      nextStartAt: this.nextStartAt,
      health: this._state === 'running' ? this.health : null,
      checks: this._state === 'running' ? this.checks.map((c) => ({ ...c.state(), resultLagMs: this.resultLag.get(c) ?? null })) : [],
      readyAfterMs: this.readyAt === null ? null : this.readyAt - this.spawnedAt,
    };
  }

  /** Push a result to a ttl check (by name; the name may be omitted when there is only one). */
  pushTtl(checkName: string | undefined, status: CheckStatus, note: string | undefined): CheckState {
    if (this._state !== 'running') throw new Error(`vassal "${this.name}" is not running (${this._state})`);
    const ttls = this.checks.filter((c): c is TtlCheck => c instanceof TtlCheck);
    const target = checkName === undefined ? (ttls.length === 1 ? ttls[0] : undefined) : ttls.find((c) => c.state().name === checkName);
    if (!target) {
      const names = ttls.map((c) => c.state().name).join(', ') || 'none';
      throw new Error(
        checkName === undefined
          ? `vassal "${this.name}" has ${ttls.length} ttl checks (${names}); name one`
          : `vassal "${this.name}" has no ttl check named "${checkName}" (ttl checks: ${names})`,
      );
    }
    target.push(status, note);
    return target.state();
  }

  // ---- intents -------------------------------------------------------------------------

  /** Run the vassal. A manual start forgets past failures (clears fatal). */
  start(opts: { manual?: boolean } = {}): void {
    if (opts.manual) this.failures = 0;
    switch (this._state) {
      case 'stopped':
      case 'exited':
      case 'fatal':
      case 'backoff':
        this.launch('start');
        break;
      case 'stopping':
        this.afterStop = 'restart';
        break;
      case 'starting':
      case 'running':
        break;
    }
  }

  /** Stop and stay stopped. Resolves once the whole process group is gone. */
  stop(): Promise<void> {
    switch (this._state) {
      case 'starting':
      case 'running':
        this.beginStop('stopped');
        break;
      case 'backoff':
        this.clearTimers();
        this.generation++;
        this.to('stopped', 'stop');
        break;
      case 'stopping':
        this.afterStop = 'stopped';
        break;
      default:
        break;
    }
    return this.until((s) => SETTLED.has(s) && !this.proc);
  }

  /** Graceful stop, then start again (with `spec` when given: a changed file is a new deploy). */
  restart(spec?: VassalSpec): Promise<void> {
    if (spec) this.pendingSpec = spec;
    this.failures = 0;
    switch (this._state) {
      case 'starting':
      case 'running':
        this.beginStop('restart');
        break;
      case 'stopping':
        this.afterStop = 'restart';
        break;
      default:
        this.launch('start');
    }
    return this.until((s) => s !== 'stopping' && s !== 'starting');
  }

  /** Resolves when the state satisfies `pred` (checked now and at every change). */
  until(pred: (s: VassalState) => boolean): Promise<void> {
    if (pred(this._state)) return Promise.resolve();
    return new Promise((resolve) => {
      const onState = (s: VassalState): void => {
        if (pred(s)) {
          this.off('state', onState);
          resolve();
        }
      };
      this.on('state', onState);
    });
  }

  // ---- machinery -----------------------------------------------------------------------

  private to(next: VassalState, event: VassalEvent): void {
    if (!isLegal(this._state, event, next)) {
      // A bug, not a user error: say so loudly but keep supervising.
      this.ctx.logger.error(`illegal transition ${this._state} --${event}--> ${next}`, { vassal: this.name, event: 'bug' });
    }
    this._state = next;
    this.stateSince = Date.now();
    if (next !== 'backoff') this.nextStartAt = null;
    this.emit('state', next);
  }

  private log(level: 'info' | 'warn' | 'error', event: string, message: string, fields: Record<string, unknown> = {}): void {
    this.ctx.logger.log(level, message, { vassal: this.name, event, ...fields });
  }

  private clearTimers(): void {
    clearTimeout(this.startTimer);
    clearTimeout(this.retryTimer);
    this.startTimer = this.retryTimer = undefined;
  }

  private launch(event: VassalEvent): void {
    this.clearTimers();
    if (this.pendingSpec) {
      this._spec = this.pendingSpec;
      this.pendingSpec = undefined;
    }
    const gen = ++this.generation;
    this.to('starting', event);
    // Never let a new group overlap leftovers of the previous one.
    void this.reaping.then(() => {
      if (gen === this.generation && this._state === 'starting') this.spawnNow(gen);
    });
  }

  private spawnNow(gen: number): void {
    const spec = this._spec;
    const notify = spec.start.ready.kind === 'notify';
    const identity = this.ctx.identityFor?.(spec);
    // The file's own env wins over what the emperor adds: a vassal may point at another agent.
    const env: Record<string, string> = {
      ...this.ctx.baseEnv,
      ...(identity ? identityEnv(identity) : {}),
      ...this.ctx.extraEnv?.(spec),
      ...spec.env,
      EMPEROR_VASSAL: spec.name,
      ...(notify ? { NOTIFY_FD: '3' } : {}),
    };
    const proc = spawnVassal({
      notify,
      identity,
      name: spec.name,
      argv: spec.argv,
      cwd: spec.cwd,
      env,
      logFile: path.join(this.ctx.logsDir, `${spec.name}.log`),
      ...(this.ctx.mirrorOutput
        ? { onLine: (line: string, stream: 'stdout' | 'stderr') => this.ctx.logger.info(line, { vassal: spec.name, event: 'output', stream }) }
        : {}),
    });
    this.proc = proc;
    this.spawns++;
    this.spawnedAt = Date.now();
    void proc.exited.then((info) => this.onExit(proc, info, gen));
    if (proc.pid <= 0) return; // the exit path reports why it could not spawn
    this.ctx.guardian.add(proc.pgid);
    this.ctx.records
      .write(spec.name, { pid: proc.pid, pgid: proc.pgid, startTime: proc.startTime, argv: spec.argv, emperorPid: process.pid })
      .catch((err: unknown) => this.log('warn', 'record-failed', `could not write pid record: ${String(err)}`));
    this.log('info', 'spawned', `spawned pid ${proc.pid}`, { pid: proc.pid });

    this.readyAt = null;
    const abort = new AbortController();
    this.readyAbort = abort;
    waitReady(this.resolveReady(spec), { cwd: spec.cwd, env, identity, signal: abort.signal, ...(proc.notify ? { notify: proc.notify } : {}) }).then(
      () => this.onReady(gen),
      (err: unknown) => {
        if (!abort.signal.aborted) this.onReadyFailed(gen, err instanceof Error ? err.message : String(err));
      },
    );
    // Created after the readiness timer, so a delay equal to the timeout still counts as ready.
    this.startTimer = setTimeout(() => this.onStartTimeout(gen), spec.start.timeoutMs);
  }

  /** `default` readiness: TCP on the service port when there is one, else up for 1 s. */
  private resolveReady(spec: VassalSpec): Exclude<ReadySpec, { kind: 'default' }> {
    const r = spec.start.ready;
    if (r.kind !== 'default') return r;
    const port = spec.service?.port;
    if (port) return { kind: 'probe', probe: { kind: 'tcp', host: spec.service?.address ?? '127.0.0.1', port }, intervalMs: DEFAULT_READY_INTERVAL_MS };
    return { kind: 'delay', ms: Math.min(DEFAULT_READY_MS, spec.start.timeoutMs) };
  }

  private onReady(gen: number): void {
    if (gen !== this.generation || this._state !== 'starting') return;
    clearTimeout(this.startTimer);
    this.readyAt = Date.now();
    this.startChecks();
    this.to('running', 'ready');
    this.log('info', 'ready', 'ready', { pid: this.proc?.pid, after_ms: this.readyAt - this.spawnedAt });
  }

  private onReadyFailed(gen: number, reason: string): void {
    if (gen !== this.generation || this._state !== 'starting') return;
    this.lastExit = { code: null, signal: null, reason: `readiness failed: ${reason}`, at: Date.now() };
    this.log('warn', 'start-failed', `start failed: readiness failed: ${reason}; killing its process group`);
    this.beginStop('failed', 'start-timeout');
  }

  // ---- checks --------------------------------------------------------------------------

  private startChecks(): void {
    const spec = this._spec;
    const identity = this.ctx.identityFor?.(spec);
    const env: Record<string, string> = { ...this.ctx.baseEnv, ...(identity ? identityEnv(identity) : {}), ...spec.env, EMPEROR_VASSAL: spec.name };
    this.criticalStreak = 0;
    this.checks = spec.checks.map((c) => (c.probe.kind === 'ttl' ? new TtlCheck(c) : new CheckRunner(c, { cwd: spec.cwd, env, identity })));
    this.health = worstStatus(this.checks.map((c) => c.state().status));
    for (const check of this.checks) {
      check.on('change', (st: CheckState, previous: CheckStatus) => {
        this.log(st.status === 'passing' ? 'info' : 'warn', 'check', `check ${st.name}: ${previous} -> ${st.status}`, {
          check: st.name,
          status: st.status,
          previous,
          output: st.output.slice(0, 500),
        });
        this.updateHealth();
      });
      check.on('result', (_st: CheckState, info: ResultInfo) => {
        this.resultLag.set(check, info.lagMs + info.durationMs);
        this.onCheckResult();
      });
      check.start();
    }
  }

  private updateHealth(): void {
    const health = worstStatus(this.checks.map((c) => c.state().status));
    const changed = health !== this.health;
    this.health = health;
    if (changed) this.log(health === 'passing' ? 'info' : 'warn', 'health', `health ${health}`, { health });
    // Per-check statuses are part of what registries show, so any check change is news.
    this.emit('health', health);
  }

  private onCheckResult(): void {
    const limit = this._spec.onCritical?.restartAfter;
    if (!limit || this._state !== 'running') return;
    this.criticalStreak = this.health === 'critical' ? this.criticalStreak + 1 : 0;
    if (this.criticalStreak < limit) return;
    const reason = `health critical for ${limit} check result(s) in a row`;
    this.lastExit = { code: null, signal: null, reason, at: Date.now() };
    this.log('warn', 'critical-restart', `restarting: ${reason}`);
    this.beginStop('failed', 'stop');
  }

  private stopChecks(): void {
    for (const c of this.checks) {
      c.removeAllListeners();
      // Aborts an in-flight probe; its reaping finishes in the background.
      void c.stop();
    }
    this.checks = [];
    this.health = null;
  }

  private onStartTimeout(gen: number): void {
    if (gen !== this.generation || this._state !== 'starting') return;
    const reason = `not ready within ${formatDuration(this._spec.start.timeoutMs)}`;
    this.lastExit = { code: null, signal: null, reason, at: Date.now() };
    this.log('warn', 'start-timeout', `start failed: ${reason}; killing its process group`);
    this.beginStop('failed', 'start-timeout');
  }

  private onExit(proc: VassalProcess, info: ExitInfo, gen: number): void {
    if (proc !== this.proc) return;
    const reason = describeExit(info);
    if (this._state === 'stopping') {
      // Expected; the stop routine finishes the transition once the whole group is gone.
      this.log('info', 'exited', `pid ${proc.pid} ${reason}`, { pid: proc.pid, code: info.code, signal: info.signal });
      if (this.afterStop !== 'failed') this.lastExit = { code: info.code, signal: info.signal, reason, at: Date.now(), ...(info.error ? { error: info.error } : {}) };
      return;
    }
    if (gen !== this.generation) return;
    const wasRunning = this._state === 'running';
    this.clearTimers();
    this.readyAbort?.abort();
    this.stopChecks();
    this.lastExit = { code: info.code, signal: info.signal, reason, at: Date.now(), ...(info.error ? { error: info.error } : {}) };
    if (proc.pid > 0) {
      this.log(info.code === 0 ? 'info' : 'warn', 'exited', `pid ${proc.pid} ${reason}`, { pid: proc.pid, code: info.code, signal: info.signal });
    } else {
      this.log('error', 'spawn-failed', `could not start: ${reason}`);
    }
    this.proc = undefined;
    this.reaping = this.releaseGroup(proc, true);

    const policy = this._spec.restart;
    const clean = info.code === 0 && !info.error;
    if (policy === 'never' || (policy === 'on-failure' && clean)) {
      this.to('exited', 'exit');
      return;
    }
    this.fail('exit', wasRunning);
  }

  /** Count a failure and either schedule a retry with exponential back-off or give up. */
  private fail(event: 'exit' | 'stopped', wasRunning: boolean): void {
    const { initialMs, maxMs, resetAfterMs, maxRetries } = this._spec.backoff;
    // A run that lasted long enough was a success; the series of failures starts over.
    if (wasRunning && Date.now() - this.spawnedAt >= resetAfterMs) this.failures = 0;
    this.failures++;
    if (this.failures > maxRetries) {
      this.to('fatal', event);
      this.log('error', 'fatal', `giving up after ${maxRetries} failed restarts in a row; last: ${this.lastExit?.reason ?? 'unknown'}`, {
        failures: this.failures - 1,
      });
      return;
    }
    const delay = Math.min(maxMs, initialMs * 2 ** (this.failures - 1));
    this.to('backoff', event);
    this.nextStartAt = Date.now() + delay;
    this.log('warn', 'backoff', `restarting in ${formatDuration(delay)} (failure ${this.failures} of ${maxRetries})`, { delay_ms: delay });
    const gen = this.generation;
    this.retryTimer = setTimeout(() => {
      if (gen === this.generation && this._state === 'backoff') this.launch('retry');
    }, delay);
  }

  private beginStop(after: AfterStop, event: VassalEvent = 'stop'): void {
    this.clearTimers();
    this.readyAbort?.abort();
    const wasServing = this._state === 'running';
    this.stopChecks();
    this.afterStop = after;
    const gen = ++this.generation;
    const proc = this.proc;
    this.to('stopping', event);
    if (!proc || proc.pid <= 0) {
      this.proc = undefined;
      queueMicrotask(() => this.finishStop(gen));
      return;
    }
    const { signal, timeoutMs, drainMs } = this._spec.stop;
    void this.deregisterAndDrain(wasServing ? drainMs : 0)
      .then(() => {
        this.log('info', 'stopping', `stopping pid ${proc.pid} with ${signal}`, { pid: proc.pid, signal });
        return stopGroup(proc, signal, timeoutMs);
      })
      .then(({ forced }) => {
        if (forced) this.log('warn', 'killed', `process group did not stop within ${formatDuration(timeoutMs)}; sent SIGKILL`, { pid: proc.pid });
      })
      .catch((err: unknown) => this.log('error', 'stop-failed', `stopping failed: ${String(err)}`))
      .then(() => this.releaseGroup(proc, false))
      .then(() => {
        if (this.proc === proc) this.proc = undefined;
        this.finishStop(gen);
      });
  }

  /** Registries first, then let in-flight requests finish, then (the caller) signal. */
  private async deregisterAndDrain(drainMs: number): Promise<void> {
    try {
      await this.ctx.beforeStop?.(this);
    } catch (err) {
      this.log('warn', 'deregister-failed', `deregistration failed: ${String(err)}; stopping anyway`);
    }
    if (drainMs > 0) {
      this.log('info', 'draining', `draining for ${formatDuration(drainMs)} before the stop signal`);
      await new Promise((r) => setTimeout(r, drainMs));
    }
  }

  private finishStop(gen: number): void {
    // A newer stop or launch owns the vassal now.
    if (gen !== this.generation || this._state !== 'stopping') return;
    this.log('info', 'stopped', 'stopped');
    switch (this.afterStop) {
      case 'restart':
        this.failures = 0;
        this.launch('stopped');
        break;
      case 'failed':
        this.fail('stopped', false);
        break;
      case 'stopped':
        this.to('stopped', 'stopped');
        break;
    }
  }

  /** Forget a process group: kill leftovers after an unexpected exit, drop its records. */
  private async releaseGroup(proc: VassalProcess, reap: boolean): Promise<void> {
    if (proc.pid <= 0) return;
    try {
      if (reap) await reapGroupAfterExit(proc);
    } catch (err) {
      this.log('warn', 'reap-failed', `could not kill leftovers of pid ${proc.pid}: ${String(err)}`);
    }
    this.ctx.guardian.remove(proc.pgid);
    await this.ctx.records.remove(this._spec.name).catch(() => undefined);
  }
}
