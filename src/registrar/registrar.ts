import { EventEmitter } from 'node:events';
import { isSlowFailure, type Change, type Observed, type Registration, type RegistrationKey, type RegistryAdapter } from './types.js';

export interface RegistryStatus {
  readonly registry: string;
  readonly description: string;
  /** False while the registry is down (failing calls, retrying). */
  readonly up: boolean;
  /** True while its last call was too slow (no answer in time) but it is not known to be down. */
  readonly slow: boolean;
  readonly stats: Readonly<Record<string, number>>;
}

/** One vassal's place in one registry, as the registrar believes it (the last anti-entropy pass corrects that belief). */
export interface RegistryEntry {
  readonly registry: 'etcd' | 'consul';
  readonly description: string;
  /** Registration id (Consul's service ID). */
  readonly id: string;
  /** empusa's type/name (etcd's key below the tree root), when registered. */
  readonly service: string | null;
  readonly location: string | null;
  readonly state: 'registered' | 'updating' | 'registering' | 'removing' | 'not registered';
  /** When the registry was last read back (anti-entropy); null before the first pass. */
  readonly lastComparedAt: number | null;
}

/** One registration's state changed in one registry (for live views: the dashboard's event stream). */
export interface RegistryChange {
  readonly vassal: string;
  readonly registry: 'etcd' | 'consul';
  /** Registration id (Consul's service ID). */
  readonly id: string;
  /** Where it stands now; 'failed' when the last call for it failed (it is retried). */
  readonly state: RegistryEntry['state'] | 'failed';
  /** The failure, for 'failed' (as logged: never secrets). */
  readonly error?: string;
}

export interface RegistrarEvents {
  change: [RegistryChange];
}

/** AdapterSync's report: these ids changed state here (or a call for them failed). */
type Changed = (ids: Iterable<string>, error?: string) => void;

export type RegistrarLog = (level: 'debug' | 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;

export interface RegistrarOptions {
  /** Period of the anti-entropy comparison between registry and desired state. */
  readonly antiEntropyMs: number;
  /** Longest a stop waits for deregistration before it goes ahead anyway. */
  readonly deregisterBoundMs: number;
  /** Retry back-off while a registry is unreachable: from retryMinMs doubling to retryMaxMs. */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** While down, repeat the "still unreachable" warning at most this often. */
  readonly downLogEveryMs: number;
  /** Calls that only time out count as "slow" (a warning) until they have failed for this long. */
  readonly slowIsDownAfterMs: number;
}

export const DEFAULT_REGISTRAR_OPTIONS: RegistrarOptions = {
  antiEntropyMs: 5000,
  deregisterBoundMs: 2000,
  retryMinMs: 100,
  // Short enough that a registry coming back is repaired within ~1 s.
  retryMaxMs: 1000,
  downLogEveryMs: 30_000,
  slowIsDownAfterMs: 5000,
};

/**
 * Where a change lands, for ordering concurrent puts and deletes: registries key on the id
 * (Consul) or on type + name (etcd), and two ids may share a name across a rename.
 */
function spots(key: RegistrationKey): [string, string] {
  return [`id ${key.id}`, `at ${key.type}/${key.name}`];
}

interface Pending {
  readonly key: RegistrationKey;
  readonly waiters: Array<() => void>;
}

/** How a registry is doing, as far as the last calls tell. */
type Health = 'up' | 'slow' | 'down';

/**
 * Keeps one registry in line with the registrar's wishes. Two lanes: removals, which go out at
 * once (never behind a retry timer or a batch of registrations), and registrations, which wait
 * while a removal is in flight. Retries with back-off while the registry fails, and
 * periodically compares what the registry holds with what it should hold (anti-entropy),
 * repairing drift such as a hand-deleted key. Holds no wishes of its own: what should be
 * registered is the registrar's map, read here.
 */
class AdapterSync {
  /** Deletes not yet confirmed, by registration id. */
  private readonly deleting = new Map<string, Pending>();
  /** What we believe the registry holds: id → fingerprint. */
  private applied = new Map<string, string>();
  /** Where puts in flight write (see spots): a delete there waits for them. */
  private readonly inflightPuts = new Set<string>();
  /** Where deletes in flight remove: a put there waits for them. */
  private readonly inflightDeletes = new Set<string>();
  private putting = false;
  private removing = false;
  private comparing = false;
  /** ids deleted while a snapshot was being read: the snapshot may still show them. */
  private removedDuringCompare: Set<string> | undefined;
  private putRetry: NodeJS.Timeout | undefined;
  private removalRetry: NodeJS.Timeout | undefined;
  private flushQueued = false;
  private entropyTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private health: Health = 'up';
  /** When the current run of failures began (null while calls succeed). */
  private failingSince: number | null = null;
  private lastDownLog = 0;
  private closed = false;
  /** Resolvers waiting for the next moment nothing is pending (tests, shutdown). */
  private idleWaiters: Array<() => void> = [];

  constructor(
    readonly adapter: RegistryAdapter,
    private readonly wanted: Wanted,
    private readonly opts: RegistrarOptions,
    private readonly log: RegistrarLog,
    private readonly changed: Changed = () => undefined,
  ) {
    adapter.onReset(() => {
      this.log('warn', `${adapter.description}: registrations may have been lost; re-registering all`, { event: 'registry-reset', registry: adapter.kind });
      const lost = [...this.applied.keys()];
      this.applied.clear();
      this.changed(lost);
      this.kick();
    });
    this.scheduleEntropy();
  }

  get isDown(): boolean {
    return this.health === 'down';
  }

  /** When a snapshot of the registry last came back (anti-entropy). */
  lastComparedAt: number | null = null;

  /** Where registration `id` stands here: `reg` is what is wanted for it (undefined: nothing). */
  stateOf(id: string, reg: Registration | undefined): RegistryEntry['state'] {
    if (this.deleting.has(id)) return 'removing';
    const held = this.applied.get(id);
    if (!reg) return held === undefined ? 'not registered' : 'removing';
    if (held === undefined) return 'registering';
    return held === this.adapter.fingerprint(reg) ? 'registered' : 'updating';
  }

  get isSlow(): boolean {
    return this.health === 'slow';
  }

  /** The registrar's wish for `reg` changed: a pending delete of the same id is superseded. */
  wish(reg: Registration): void {
    const pending = this.deleting.get(reg.id);
    if (pending) {
      // Whoever waited for the delete need not wait longer: the id is wanted again.
      this.deleting.delete(reg.id);
      for (const w of pending.waiters) w();
    }
    this.changed([reg.id]);
    this.kick();
  }

  /** Resolves when the registry confirmed the delete (callers bound the wait). */
  remove(key: RegistrationKey): Promise<void> {
    const known = this.applied.has(key.id) || this.inflightPuts.has(spots(key)[0]);
    const pending = this.deleting.get(key.id) ?? { key, waiters: [] };
    this.deleting.set(key.id, pending);
    this.changed([key.id]);
    // A removal never waits behind a retry timer: it is sent now, whatever failed before.
    clearTimeout(this.removalRetry);
    this.removalRetry = undefined;
    this.kick();
    // Never written (as far as we know): still delete, for safety, but nobody needs to wait.
    if (!known) return Promise.resolve();
    return new Promise((resolve) => pending.waiters.push(resolve));
  }

  /** Resolves when nothing is pending and the last attempt succeeded. */
  settled(): Promise<void> {
    if (this.isSettled()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private isSettled(): boolean {
    if (this.putting || this.removing || this.comparing || this.deleting.size > 0 || this.health !== 'up' || this.flushQueued) return false;
    for (const reg of this.wanted.values()) if (this.applied.get(reg.id) !== this.adapter.fingerprint(reg)) return false;
    return true;
  }

  private kick(): void {
    if (this.closed || this.flushQueued) return;
    this.flushQueued = true;
    // Batch everything that arrives in the same tick into one round of writes.
    setImmediate(() => {
      this.flushQueued = false;
      this.startRemovals();
      this.startPuts();
      this.notifyIdle();
    });
  }

  private startRemovals(): void {
    // Not even an anti-entropy snapshot holds a removal back (compare() allows for it).
    if (this.closed || this.removing || this.removalRetry) return;
    // A put of the same id still in flight must land first, or it would undo the delete.
    const batch = [...this.deleting.values()].filter((d) => !spots(d.key).some((t) => this.inflightPuts.has(t)));
    if (batch.length === 0) return;
    this.removing = true;
    for (const d of batch) for (const t of spots(d.key)) this.inflightDeletes.add(t);
    void this.send(
      batch.map((d): Change => ({ op: 'delete', key: d.key })),
      () => {
        for (const d of batch) {
          this.applied.delete(d.key.id);
          this.removedDuringCompare?.add(d.key.id);
          if (this.deleting.get(d.key.id) === d) this.deleting.delete(d.key.id);
          for (const w of d.waiters) w();
        }
      },
      (delay) => (this.removalRetry = this.retryIn(delay)),
    ).finally(() => {
      for (const d of batch) for (const t of spots(d.key)) this.inflightDeletes.delete(t);
      this.removing = false;
      this.kick();
    });
  }

  private startPuts(): void {
    // One batch at a time; whatever arrives meanwhile goes in the next (the lane kicks again).
    if (this.closed || this.comparing || this.putting || this.putRetry) return;
    // Removals go first: registrations wait while one is in flight or queued to go.
    if (this.removing || (this.deleting.size > 0 && !this.removalRetry)) return;
    const puts = new Map<string, { reg: Registration; fp: string }>();
    for (const reg of this.wanted.values()) {
      // A delete in flight at the same spot must land first, or it would undo this put.
      if (spots(reg).some((t) => this.inflightDeletes.has(t))) continue;
      const fp = this.adapter.fingerprint(reg);
      if (this.applied.get(reg.id) !== fp) puts.set(reg.id, { reg, fp });
    }
    if (puts.size === 0) return;
    this.putting = true;
    for (const { reg } of puts.values()) for (const t of spots(reg)) this.inflightPuts.add(t);
    void this.send(
      [...puts.values()].map(({ reg }): Change => ({ op: 'put', reg })),
      () => {
        for (const [id, { fp }] of puts) this.applied.set(id, fp);
      },
      (delay) => (this.putRetry = this.retryIn(delay)),
    ).finally(() => {
      for (const { reg } of puts.values()) for (const t of spots(reg)) this.inflightPuts.delete(t);
      this.putting = false;
      this.kick();
    });
  }

  /**
   * A retry timer for a lane. Whichever lane's timer fires first, it is time to try the
   * registry again, and removals go first: were the registrations to go alone and succeed, the
   * registry would show them beside a vassal already stopped until the removal's own timer.
   */
  private retryIn(delayMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      if (this.putRetry === timer) this.putRetry = undefined;
      clearTimeout(this.removalRetry);
      this.removalRetry = undefined;
      this.kick();
    }, delayMs);
    return timer;
  }

  /** One call to the registry; never rejects. */
  private async send(changes: Change[], onSuccess: () => void, retryAfter: (delayMs: number) => void): Promise<void> {
    const ids = changes.map((c) => (c.op === 'put' ? c.reg.id : c.key.id));
    try {
      await this.adapter.apply(changes);
      onSuccess();
      this.succeeded();
      this.changed(ids);
    } catch (err) {
      retryAfter(this.failed(err));
      this.changed(ids, err instanceof Error ? err.message : String(err));
    }
  }

  private notifyIdle(): void {
    if (this.isSettled()) for (const w of this.idleWaiters.splice(0)) w();
  }

  private succeeded(): void {
    if (this.health === 'down') {
      this.log('info', `${this.adapter.description} is reachable again after ${Math.round((Date.now() - (this.failingSince ?? Date.now())) / 100) / 10}s`, {
        event: 'registry-up',
        registry: this.adapter.kind,
      });
    } else if (this.health === 'slow') {
      this.log('info', `${this.adapter.description} answers in time again`, { event: 'registry-up', registry: this.adapter.kind });
    }
    this.health = 'up';
    this.failingSince = null;
    this.failures = 0;
    // It answers again: what waits for a retry timer need not wait longer.
    if (this.putRetry || this.removalRetry) {
      clearTimeout(this.putRetry);
      clearTimeout(this.removalRetry);
      this.putRetry = this.removalRetry = undefined;
      this.kick();
    }
  }

  /**
   * Record a failed call and say how long to wait before retrying. A call that only timed out
   * means the registry is slow, not that it is gone: a warning, and "down" only once calls
   * have kept failing for slowIsDownAfterMs. Any other failure (refused, unreachable, rejected)
   * is down at once.
   */
  private failed(err: unknown): number {
    const msg = err instanceof Error ? err.message : String(err);
    this.failures++;
    const now = Date.now();
    this.failingSince ??= now;
    const failingFor = now - this.failingSince;
    const desc = this.adapter.description;
    const fields = { registry: this.adapter.kind };
    if (isSlowFailure(err) && this.health !== 'down' && failingFor < this.opts.slowIsDownAfterMs) {
      if (this.health === 'up') this.log('warn', `${desc} is slow: ${msg}; retrying`, { event: 'registry-slow', ...fields });
      this.health = 'slow';
    } else if (this.health !== 'down') {
      this.health = 'down';
      this.lastDownLog = now;
      const since = failingFor > 0 ? ` (failing for ${Math.round(failingFor / 100) / 10}s)` : '';
      this.log('error', `${desc} unreachable${since}: ${msg}; vassals keep running, retrying`, { event: 'registry-down', ...fields });
    } else if (now - this.lastDownLog >= this.opts.downLogEveryMs) {
      this.lastDownLog = now;
      this.log('warn', `${desc} still unreachable after ${Math.round(failingFor / 1000)}s: ${msg}`, { event: 'registry-down', ...fields });
    }
    return Math.min(this.opts.retryMaxMs, this.opts.retryMinMs * 2 ** (this.failures - 1));
  }

  private scheduleEntropy(): void {
    if (this.closed) return;
    this.entropyTimer = setTimeout(() => {
      void this.compare().finally(() => this.scheduleEntropy());
    }, this.opts.antiEntropyMs);
  }

  /** Anti-entropy: believe the registry, not ourselves, then let the lanes repair the difference. */
  async compare(): Promise<void> {
    if (this.closed || this.putting || this.removing || this.comparing || this.putRetry || this.removalRetry) return;
    this.comparing = true;
    // Drift is what differs from what we believed we wrote, not from wishes still in the queue.
    const believed = new Map(this.applied);
    const removed = new Set<string>();
    this.removedDuringCompare = removed;
    let seen: Map<string, Observed>;
    try {
      seen = await this.adapter.snapshot();
    } catch (err) {
      this.comparing = false;
      this.removedDuringCompare = undefined;
      this.putRetry = this.retryIn(this.failed(err));
      return;
    }
    this.comparing = false;
    this.removedDuringCompare = undefined;
    this.lastComparedAt = Date.now();
    this.succeeded();
    const wanted = new Map<string, Registration>();
    for (const reg of this.wanted.values()) wanted.set(reg.id, reg);
    const applied = new Map<string, string>();
    let drift = 0;
    for (const [id, obs] of seen) {
      // Removed (or being removed) since the snapshot was asked for: not drift, not held.
      if (removed.has(id) || this.inflightDeletes.has(spots(obs.key)[0])) continue;
      applied.set(id, obs.fingerprint);
      const want = wanted.get(id);
      if (!want) {
        // Ours but not wanted (a leftover, or a delete that was lost): remove it.
        if (!this.deleting.has(id)) {
          this.deleting.set(id, { key: obs.key, waiters: [] });
          drift++;
        }
      } else if (believed.get(id) !== obs.fingerprint) drift++;
    }
    for (const id of believed.keys()) if (!seen.has(id) && wanted.has(id)) drift++;
    this.applied = applied;
    const moved = new Set<string>();
    for (const [id, fp] of applied) if (believed.get(id) !== fp) moved.add(id);
    for (const id of believed.keys()) if (!applied.has(id)) moved.add(id);
    if (moved.size > 0) this.changed(moved);
    if (drift > 0) {
      this.log('warn', `${this.adapter.description}: repairing ${drift} registration(s) that drifted`, { event: 'registry-drift', registry: this.adapter.kind, drift });
    }
    this.kick();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.putRetry);
    clearTimeout(this.removalRetry);
    clearTimeout(this.entropyTimer);
    await this.adapter.close();
  }
}

/**
 * The only component that talks to registries, and the only owner of what should be
 * registered, keyed by vassal. The emperor tells it intent — ready, health changed, stopping,
 * gone — and awaits the removals; nobody else keeps a copy.
 */
export class Registrar {
  private readonly syncs: AdapterSync[];
  /** What should be registered now, by vassal name. */
  private readonly wanted = new Map<string, Registration>();
  /** Removals in flight, by vassal name, so every caller awaits the same one. */
  private readonly leaving = new Map<string, Promise<void>>();
  /** Registration id → vassal, for the change events (a removed id is no longer in `wanted`). */
  private readonly owners = new Map<string, string>();
  /** Each registration's state changes, as they happen (nothing is computed without a listener). */
  readonly events = new EventEmitter<RegistrarEvents>();

  constructor(
    adapters: readonly RegistryAdapter[],
    private readonly log: RegistrarLog,
    private readonly opts: RegistrarOptions = DEFAULT_REGISTRAR_OPTIONS,
  ) {
    this.syncs = adapters.map((a) => {
      const sync: AdapterSync = new AdapterSync(a, a.accepts ? acceptedBy(this.wanted, a.accepts.bind(a)) : this.wanted, opts, log, (ids, error) =>
        this.changedIn(sync, ids, error),
      );
      return sync;
    });
  }

  private changedIn(sync: AdapterSync, ids: Iterable<string>, error: string | undefined): void {
    const listening = this.events.listenerCount('change') > 0;
    for (const id of ids) {
      const vassal = this.owners.get(id);
      if (vassal === undefined) continue;
      const reg = this.wanted.get(vassal);
      const wanted = reg?.id === id ? reg : undefined;
      // Not wanted and gone from every registry: nothing more will be said about this id.
      if (!wanted && error === undefined && this.syncs.every((s) => s.stateOf(id, undefined) === 'not registered')) this.owners.delete(id);
      if (!listening) continue;
      const state = error === undefined ? sync.stateOf(id, wanted) : 'failed';
      this.events.emit('change', { vassal, registry: sync.adapter.kind, id, state, ...(error === undefined ? {} : { error }) });
    }
  }

  get enabled(): boolean {
    return this.syncs.length > 0;
  }

  /** The vassal is ready: register it (applied at once, in the background). */
  ready(vassal: string, reg: Registration): void {
    const prev = this.wanted.get(vassal);
    // A reload may have renamed the service: the old registration must go.
    if (prev && (prev.id !== reg.id || prev.type !== reg.type || prev.name !== reg.name)) {
      this.wanted.delete(vassal);
      void this.removeEverywhere(vassal, keyOf(prev));
    }
    this.wanted.set(vassal, reg);
    this.owners.set(reg.id, vassal);
    for (const s of this.syncs) s.wish(reg);
  }

  /** The vassal's health changed: update its registration, if it is registered. */
  healthChanged(vassal: string, reg: Registration): void {
    // A late health event of a vassal on its way out must not register it again.
    if (!this.wanted.has(vassal)) return;
    this.ready(vassal, reg);
  }

  /**
   * The vassal is about to be stopped: deregister it everywhere. Resolves when every registry
   * confirmed, or after the bound (a dead registry must never block a stop); the delete keeps
   * being retried in the background.
   */
  stopping(vassal: string): Promise<void> {
    const leaving = this.leaving.get(vassal);
    const reg = this.wanted.get(vassal);
    if (!reg) return leaving ?? Promise.resolve();
    this.wanted.delete(vassal);
    return this.removeEverywhere(vassal, keyOf(reg));
  }

  /** The vassal is no longer serving (crashed, exited, failed to start): deregister at once. */
  gone(vassal: string): void {
    void this.stopping(vassal);
  }

  /** What is registered (or being registered) for a vassal, if anything. */
  registrationOf(vassal: string): Registration | undefined {
    return this.wanted.get(vassal);
  }

  private removeEverywhere(vassal: string, key: RegistrationKey): Promise<void> {
    if (this.syncs.length === 0) return Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.opts.deregisterBoundMs);
    });
    const all = Promise.all(
      this.syncs.map(async (s) => {
        const r = await Promise.race([s.remove(key).then(() => 'done' as const), bound]);
        if (r === 'timeout') {
          this.log('warn', `deregistration from ${s.adapter.description} not confirmed within ${this.opts.deregisterBoundMs} ms; stopping anyway (it is retried)`, {
            vassal,
            event: 'deregister-timeout',
            registry: s.adapter.kind,
          });
        }
      }),
    ).then(() => clearTimeout(timer));
    const p: Promise<void> = all.finally(() => {
      if (this.leaving.get(vassal) === p) this.leaving.delete(vassal);
    });
    this.leaving.set(vassal, p);
    return p;
  }

  /** Resolves when every registry holds exactly the desired set (tests and benchmarks). */
  async settled(): Promise<void> {
    await Promise.all(this.syncs.map((s) => s.settled()));
  }

  /** Run an anti-entropy pass now on every registry. */
  async compareNow(): Promise<void> {
    await Promise.all(this.syncs.map((s) => s.compare()));
  }

  status(): RegistryStatus[] {
    return this.syncs.filter((s) => s.adapter.active !== false).map((s) => ({
      registry: s.adapter.kind,
      description: s.adapter.description,
      up: !s.isDown,
      slow: s.isSlow,
      stats: s.adapter.stats?.() ?? {},
    }));
  }

  /** For each vassal wanted somewhere: the registries that hold it now (as last written or read back). */
  registeredIn(): Map<string, Array<'etcd' | 'consul'>> {
    const out = new Map<string, Array<'etcd' | 'consul'>>();
    for (const vassal of this.wanted.keys()) {
      const kinds = this.registriesOf(vassal);
      if (kinds.length > 0) out.set(vassal, kinds);
    }
    return out;
  }

  /** The registries that hold this vassal now (empty when none, or when it is not wanted). */
  registriesOf(vassal: string): Array<'etcd' | 'consul'> {
    const reg = this.wanted.get(vassal);
    if (!reg) return [];
    return this.syncs.filter((s) => s.stateOf(reg.id, reg) === 'registered').map((s) => s.adapter.kind);
  }

  /** A vassal's entries, one per registry; `id` names its registration when none is wanted now. */
  entriesOf(vassal: string, id: string): RegistryEntry[] {
    const reg = this.wanted.get(vassal);
    const key = reg?.id ?? id;
    return this.syncs.map((s) => ({
      registry: s.adapter.kind,
      description: s.adapter.description,
      id: key,
      service: reg ? `${reg.type}/${reg.name}` : null,
      location: reg?.location ?? null,
      state: s.stateOf(key, reg),
      lastComparedAt: s.lastComparedAt,
    }));
  }

  async close(): Promise<void> {
    await Promise.all(this.syncs.map((s) => s.close()));
  }
}

const keyOf = (r: Registration): RegistrationKey => ({ id: r.id, type: r.type, name: r.name });

/** What one registry should hold: the registrar's wishes (or those of them it accepts). */
interface Wanted {
  values(): Iterable<Registration>;
}

/** The registrations an adapter accepts (a Consul router without an agent for some vassals), read live. */
function acceptedBy(wanted: ReadonlyMap<string, Registration>, accepts: (reg: Registration) => boolean): Wanted {
  return {
    *values() {
      for (const reg of wanted.values()) if (accepts(reg)) yield reg;
    },
  };
}
