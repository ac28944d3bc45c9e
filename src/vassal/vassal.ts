import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { CheckStatus, VassalSpec } from '../config/spec.js';
import type { CheckState } from '../checks/state.js';
import { formatDuration } from '../config/duration.js';
import type { ExitInfo, VassalProcess } from '../process/types.js';
import { VassalOutput } from '../output/capture.js';
import { DEFAULT_MIRROR_LIMIT } from '../output/mirror.js';
import { Backoff } from './backoff.js';
import { drainAndStop } from './drain.js';
import { VassalHealth } from './health.js';
import { launchProcess, releaseProcess, vassalEnv, type Launched } from './launch.js';
import { Readiness } from './readiness.js';
import { queueStart } from './start-turns.js';
import { waitReady } from '../checks/ready.js';
import type { EmperorLink } from './emperor-link.js';
import { IllegalTransition, nextState, SETTLED, type VassalEvent, type VassalState } from './states.js';
import { describeExit, lastExitBecause, lastExitOf, type LastExit, type VassalContext, type VassalLog, type VassalSnapshot } from './types.js';

export type { LastExit, VassalContext, VassalSnapshot } from './types.js';

type AfterStop = 'stopped' | 'restart' | 'failed';

/**
 * One app: owns its state machine, its process group and its restart back-off.
 * Nothing else mutates it; the emperor only sends it intents (start, stop, restart, reload).
 * Readiness, health checks, drain and back-off are collaborators in their own modules.
 */
/** State changes kept per vassal: enough for a timeline of the last restarts, bounded at 1,000 vassals. */
const HISTORY_LENGTH = 40;

/** One state change: when, into what, and why it left running (the last exit) when it did. */
export interface StateChange {
  readonly at: number;
  readonly state: VassalState;
  readonly reason?: string;
}

export class Vassal extends EventEmitter {
  private _state: VassalState = 'stopped';
  private readonly changes: StateChange[] = [];
  private _spec: VassalSpec;
  private pendingSpec: VassalSpec | undefined;
  private launched: Launched | undefined;
  private afterStop: AfterStop = 'stopped';
  private readonly backoff = new Backoff();
  private spawns = 0;
  private oomKills = 0;
  private lastExit: LastExit | null = null;
  /** Why the vassal gave up, while it is fatal. */
  private fatalReason: string | null = null;
  private readonly now: () => number;
  private stateSince: number;
  private spawnedAt = 0;
  private nextStartAt: number | null = null;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Leftovers of the previous process group being killed; a new spawn waits for it. */
  private reaping: Promise<void> = Promise.resolve();
  /** Bumped on every launch and stop so late callbacks of an older attempt do nothing. */
  private generation = 0;
  private readiness: Readiness | undefined;
  private readyAt: number | null = null;
  private health: VassalHealth | undefined;
  /** Armed by the first Emperor-protocol heartbeat (byte 26); firing means the vassal is hung. */
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** An in-place reload (byte 1) waiting for byte 5 again. */
  private reloadWait: AbortController | undefined;
  private readonly log: VassalLog = (level, event, message, fields = {}) =>
    this.ctx.logger.log(level, message, { vassal: this.name, event, ...fields });

  /** Log file (and mirror) of every process this vassal runs, with its counters. */
  readonly output: VassalOutput;

  constructor(
    spec: VassalSpec,
    private readonly ctx: VassalContext,
  ) {
    super();
    this._spec = spec;
    this.now = ctx.now ?? Date.now;
    this.stateSince = this.now();
    this.output = new VassalOutput({
      name: spec.name,
      file: path.join(ctx.logsDir, `${spec.name}.log`),
      policy: spec.logs,
      logger: ctx.logger,
      mirror: ctx.mirrorOutput ? (ctx.mirrorLimit ?? DEFAULT_MIRROR_LIMIT) : undefined,
    });
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

  private get proc(): VassalProcess | undefined {
    return this.launched?.proc;
  }

  snapshot(now = this.now()): VassalSnapshot {
    const health = this._state === 'running' ? this.health : undefined;
    return {
      name: this.name,
      state: this._state,
      pid: this.proc && this.proc.pid > 0 ? this.proc.pid : null,
      uptimeMs: this.proc && this.proc.pid > 0 ? now - this.spawnedAt : null,
      restarts: Math.max(0, this.spawns - 1),
      failures: this.backoff.failures,
      lastExit: this.lastExit,
      fatalReason: this._state === 'fatal' ? this.fatalReason : null,
      file: this.spec.file,
      hash: this.spec.hash,
      stateSince: this.stateSince,
      nextStartAt: this.nextStartAt,
      health: health ? health.status : null,
      checks: health ? health.states() : [],
      oomKills: this.oomKills,
      cgroup: this.proc?.cgroup ?? null,
      readyAfterMs: this.readyAt === null ? null : this.readyAt - this.spawnedAt,
      output: this.output.stats(),
    };
  }

  /** Push a result to a ttl check (by name; the name may be omitted when there is only one). */
  pushTtl(checkName: string | undefined, status: CheckStatus, note: string | undefined): CheckState {
    if (this._state !== 'running' || !this.health) throw new Error(`vassal "${this.name}" is not running (${this._state})`);
    return this.health.pushTtl(this.name, checkName, status, note);
  }

  // ---- intents -------------------------------------------------------------------------

  /** Run the vassal. A manual start forgets past failures (clears fatal). */
  start(opts: { manual?: boolean } = {}): void {
    if (opts.manual) this.backoff.reset();
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
        this.beginStop('stopped', 'stop');
        break;
      case 'backoff':
        this.move('stop', () => {
          this.clearRetry();
          this.generation++;
        });
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
    this.backoff.reset();
    switch (this._state) {
      case 'starting':
      case 'running':
        this.beginStop('restart', 'stop');
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

  // ---- moves ---------------------------------------------------------------------------

  /**
   * Take the move the table gives for `event`: run `actions` (what the move does before anyone
   * sees the new state), then enter the state and tell listeners. A move the table refuses is
   * not taken: the vassal stays where it is, and the refusal is reported as the bug it is
   * (an error log line with event "bug", and an "illegal" event that tests fail on).
   */
  private move(event: VassalEvent, actions?: () => void): boolean {
    const next = nextState(this._state, event);
    if (next === undefined) {
      const err = new IllegalTransition(this._state, event);
      this.ctx.logger.error(err.message, { vassal: this.name, event: 'bug', from: this._state, on: event });
      this.emit('illegal', err);
      return false;
    }
    actions?.();
    this._state = next;
    this.stateSince = this.now();
    this.recordMove(next);
    if (next !== 'backoff') this.nextStartAt = null;
    this.emit('state', next);
    return true;
  }

  /** Recent state changes, oldest first (the dashboard's restart timeline). */
  history(): readonly StateChange[] {
    return this.changes;
  }

  private recordMove(state: VassalState): void {
    const leftRunning = state === 'exited' || state === 'backoff' || state === 'fatal';
    this.changes.push({ at: this.stateSince, state, ...(leftRunning && this.lastExit ? { reason: this.lastExit.reason } : {}) });
    if (this.changes.length > HISTORY_LENGTH) this.changes.splice(0, this.changes.length - HISTORY_LENGTH);
  }

  private clearRetry(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Leave whatever the current process was doing: no readiness wait, no checks, no retry. */
  private quiesce(): void {
    this.clearRetry();
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    this.reloadWait?.abort();
    this.reloadWait = undefined;
    this.readiness?.cancel();
    this.readiness = undefined;
    this.health?.stop();
    this.health = undefined;
  }

  /** → starting: spawn once the previous group's leftovers are gone. */
  private launch(event: 'start' | 'retry'): void {
    const gen = this.generation + 1;
    const moved = this.move(event, () => {
      this.clearRetry();
      this.fatalReason = null;
      if (this.pendingSpec) {
        this._spec = this.pendingSpec;
        this.pendingSpec = undefined;
      }
      this.generation = gen;
    });
    if (!moved) return;
    // Never let a new group overlap leftovers of the previous one.
    void this.reaping
      .then(() => (gen === this.generation && this._state === 'starting' ? this.ctx.containment?.precreate?.(this._spec.name) : undefined))
      .then(() => {
        if (gen !== this.generation || this._state !== 'starting') return;
        // In a burst, starts are spread over turns of the event loop (start-turns.ts).
        queueStart(() => {
          if (gen === this.generation && this._state === 'starting') this.spawnNow(gen);
        });
      });
  }

  private spawnNow(gen: number): void {
    const spec = this._spec;
    // In tyrant mode (or with user:) the log belongs to the vassal's user, as its files do.
    const owner = this.ctx.identityFor?.(spec);
    this.output.configure(spec.logs, owner ? { uid: owner.uid, gid: owner.gid } : undefined);
    const launched = launchProcess(this.ctx, spec, this.log, this.output);
    const { proc } = launched;
    this.launched = launched;
    this.spawns++;
    this.spawnedAt = this.now();
    this.readyAt = null;
    void proc.exited.then((info) => this.onExit(proc, info, gen));
    if (proc.pid <= 0) return; // the exit path reports why it could not spawn
    this.listen(launched.link, gen);
    this.readiness = new Readiness(spec, launched, {
      ready: () => this.onReady(gen),
      failed: (reason, event) => this.onStartFailed(gen, reason, event),
    });
  }

  /** The Emperor protocol's news from the vassal of generation `gen`. */
  private listen(link: EmperorLink, gen: number): void {
    const current = (): boolean => gen === this.generation && (this._state === 'starting' || this._state === 'running');
    link.on('heartbeat', () => {
      if (!current()) return;
      // As uWSGI's emperor: only a vassal that has sent one heartbeat is expected to keep sending them.
      clearTimeout(this.heartbeatTimer);
      const timeoutMs = this._spec.heartbeatTimeoutMs;
      this.heartbeatTimer = setTimeout(() => {
        if (!current()) return;
        this.lastExit = lastExitBecause(`hung: no heartbeat for ${formatDuration(timeoutMs)}`, this.now());
        this.log('warn', 'heartbeat-lost', `no Emperor-protocol heartbeat for ${formatDuration(timeoutMs)}: the vassal is hung; killing and restarting it`);
        this.beginStop('failed', 'fail', { hung: true });
      }, timeoutMs);
    });
    link.on('loyal', () => {
      if (current()) this.log('info', 'loyal', 'served its first request (Emperor protocol: loyal)');
    });
    link.on('shutdown', () => {
      if (!current()) return;
      this.log('info', 'voluntary-shutdown', 'asked to be stopped (Emperor protocol byte 22); it stays stopped until started or its file changes');
      void this.stop();
    });
  }

  /**
   * The uWSGI Emperor's touch reload: byte 1 asks a running vassal to reload itself gracefully
   * (uWSGI keeps its sockets, so no request is refused), and byte 5 says it accepts requests
   * again. It stays registered and running meanwhile. Without a running process that speaks
   * the protocol this is a restart. Resolves once it is ready again, or has been restarted.
   */
  reloadInPlace(spec: VassalSpec): Promise<void> {
    const link = this.launched?.link;
    if (this._state !== 'running' || !link?.isOpen || !this._spec.emperorProtocol || !spec.emperorProtocol) return this.restart(spec);
    const gen = this.generation;
    this.reloadWait?.abort();
    const abort = new AbortController();
    this.reloadWait = abort;
    this.pendingSpec = undefined;
    this._spec = spec;
    // Checks may have changed with the file: run the new ones.
    this.startHealth();
    link.send(1);
    this.log('info', 'reloading', 'sent the Emperor protocol reload message (byte 1); waiting for byte 5');
    const timeoutMs = spec.start.timeoutMs;
    const timer = setTimeout(() => abort.abort(new Error(`not ready again within ${formatDuration(timeoutMs)}`)), timeoutMs);
    const launched = this.launched!;
    return waitReady({ kind: 'emperor' }, { cwd: spec.cwd, env: launched.env, identity: launched.identity, signal: abort.signal, emperor: link }).then(
      () => {
        clearTimeout(timer);
        if (this.reloadWait === abort) this.reloadWait = undefined;
        if (gen !== this.generation || this._state !== 'running') return;
        this.log('info', 'reloaded', 'reloaded in place: accepting requests again');
        this.emit('reloaded');
      },
      async (err: unknown) => {
        clearTimeout(timer);
        if (this.reloadWait === abort) this.reloadWait = undefined;
        if (gen !== this.generation || this._state !== 'running') return;
        const why = abort.signal.aborted && abort.signal.reason instanceof Error ? abort.signal.reason.message : err instanceof Error ? err.message : String(err);
        this.lastExit = lastExitBecause(`reload failed: ${why}`, this.now());
        this.log('warn', 'reload-failed', `reload failed: ${why}; restarting it`);
        this.beginStop('failed', 'fail');
        await this.until((s) => s !== 'stopping');
      },
    );
  }

  private startHealth(): void {
    const launched = this.launched;
    if (!launched) return;
    this.health?.stop();
    const { identity } = launched;
    // Checks get the app's environment without what the emperor adds for the app itself.
    this.health = new VassalHealth(this._spec, { env: vassalEnv(this.ctx, this._spec, identity), identity, cgroupProcs: launched.proc.joined }, this.log, {
      changed: (health) => this.emit('health', health),
      critical: (reason) => this.onCritical(reason),
    });
    this.health.start();
  }

  /** starting → running: checks start, the emperor registers it. */
  private onReady(gen: number): void {
    if (gen !== this.generation || this._state !== 'starting' || !this.launched) return;
    const readyAt = this.now();
    const moved = this.move('ready', () => {
      this.readiness = undefined;
      this.readyAt = readyAt;
      this.startHealth();
    });
    if (moved) this.log('info', 'ready', 'ready', { pid: this.proc?.pid, after_ms: readyAt - this.spawnedAt });
  }

  /** starting → stopping: readiness failed or timed out; counts as a failure. */
  private onStartFailed(gen: number, reason: string, event: 'start-failed' | 'start-timeout'): void {
    if (gen !== this.generation || this._state !== 'starting') return;
    this.lastExit = lastExitBecause(reason, this.now());
    this.log('warn', event, `start failed: ${reason}; killing its process group`);
    this.beginStop('failed', 'fail');
  }

  /** running → stopping: on_critical.restart_after; counts as a failure. */
  private onCritical(reason: string): void {
    if (this._state !== 'running') return;
    this.lastExit = lastExitBecause(reason, this.now());
    this.log('warn', 'critical-restart', `restarting: ${reason}`);
    this.beginStop('failed', 'fail');
  }

  /** starting/running → exited, backoff or fatal: the leader exited on its own. */
  private onExit(proc: VassalProcess, info: ExitInfo, gen: number): void {
    if (proc !== this.proc) return;
    const reason = describeExit(info);
    if (this._state === 'stopping') {
      // Expected; the stop routine finishes the transition once the whole group is gone.
      const oom = info.oomKilled ? { oom_killed: true } : {};
      this.log(info.oomKilled ? 'warn' : 'info', 'exited', `pid ${proc.pid} ${reason}`, { pid: proc.pid, code: info.code, signal: info.signal, ...oom });
      if (info.oomKilled) this.oomKills++;
      // An OOM kill while stopping is still news worth keeping over "stopped by the emperor".
      if (this.afterStop !== 'failed' || info.oomKilled) this.lastExit = lastExitOf(info, this.now());
      return;
    }
    if (gen !== this.generation) return;
    const wasRunning = this._state === 'running';
    this.quiesce();
    this.lastExit = lastExitOf(info, this.now());
    if (info.oomKilled) this.oomKills++;
    if (proc.pid > 0) {
      const oom = info.oomKilled ? { oom_killed: true } : {};
      this.log(info.code === 0 && !info.oomKilled ? 'info' : 'warn', 'exited', `pid ${proc.pid} ${reason}`, { pid: proc.pid, code: info.code, signal: info.signal, ...oom });
    } else {
      this.log('error', 'spawn-failed', `could not start: ${reason}`);
    }
    this.launched?.link.close();
    this.launched = undefined;
    this.reaping = releaseProcess(this.ctx, this._spec.name, proc, true, this.log);

    const policy = this._spec.restart;
    const clean = info.code === 0 && !info.error;
    if (policy === 'never' || (policy === 'on-failure' && clean)) {
      this.move('exit');
      return;
    }
    this.fail(wasRunning ? this.now() - this.spawnedAt : null);
  }

  /** A failure: → backoff (and a retry timer) or → fatal, as the back-off decides. */
  private fail(ranForMs: number | null): void {
    const verdict = this.backoff.fail(this._spec.backoff, ranForMs, this.now());
    if (!verdict.retry) {
      const why = `${verdict.why}; last: ${this.lastExit?.reason ?? 'unknown'}`;
      if (this.move('give-up', () => (this.fatalReason = why))) this.log('error', 'fatal', why, { failures: this.backoff.failures - 1 });
      return;
    }
    const delay = verdict.delayMs;
    const gen = this.generation;
    const moved = this.move('crash', () => {
      this.retryTimer = setTimeout(() => {
        if (gen === this.generation && this._state === 'backoff') this.launch('retry');
      }, delay);
    });
    if (!moved) return;
    this.nextStartAt = this.now() + delay;
    this.log('warn', 'backoff', `restarting in ${formatDuration(delay)} (failure ${this.backoff.failures} of ${this._spec.backoff.maxRetries})`, { delay_ms: delay });
  }

  /** → stopping: deregister, drain (if it was serving), signal the group, wait for it. */
  private beginStop(after: AfterStop, event: 'stop' | 'fail', opts: { hung?: boolean } = {}): void {
    const wasServing = this._state === 'running';
    const gen = this.generation + 1;
    const moved = this.move(event, () => {
      this.quiesce();
      this.afterStop = after;
      this.generation = gen;
    });
    if (!moved) return;
    const proc = this.proc;
    if (!proc || proc.pid <= 0) {
      this.launched = undefined;
      queueMicrotask(() => this.finishStop(gen));
      return;
    }
    const name = this.name;
    const beforeStop = this.ctx.beforeStop;
    const link = this.launched?.link;
    const steps = {
      drain: wasServing && !opts.hung,
      ...(beforeStop ? { deregister: () => beforeStop(name) } : {}),
      // uWSGI 2.0 takes SIGTERM as "reload": a protocol vassal is asked to stop with byte 0.
      ...(this._spec.emperorProtocol && link ? { stopMessage: () => link.send(0) } : {}),
      ...(opts.hung ? { hung: true } : {}),
    };
    void drainAndStop(proc, this._spec.stop, steps, this.log)
      .then(() => releaseProcess(this.ctx, this._spec.name, proc, false, this.log))
      .then(() => {
        link?.close();
        if (this.proc === proc) this.launched = undefined;
        this.finishStop(gen);
      });
  }

  /** stopping → stopped, starting (restart) or backoff/fatal (a failed start). */
  private finishStop(gen: number): void {
    // A newer stop or launch owns the vassal now.
    if (gen !== this.generation || this._state !== 'stopping') return;
    this.log('info', 'stopped', 'stopped');
    switch (this.afterStop) {
      case 'restart':
        this.backoff.reset();
        this.launch('start');
        break;
      case 'failed':
        this.fail(null);
        break;
      case 'stopped':
        this.move('stopped');
        break;
    }
  }
}
