import type { Change, Observed, Registration, RegistrationKey, RegistryAdapter } from './types.js';

export interface RegistryStatus {
  readonly registry: string;
  readonly description: string;
  /** False while the last attempt failed (retrying). */
  readonly up: boolean;
  readonly stats: Readonly<Record<string, number>>;
}

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
}

export const DEFAULT_REGISTRAR_OPTIONS: RegistrarOptions = {
  antiEntropyMs: 5000,
  deregisterBoundMs: 2000,
  retryMinMs: 100,
  // Short enough that a registry coming back is repaired within ~1 s.
  retryMaxMs: 1000,
  downLogEveryMs: 30_000,
};

interface Pending {
  readonly key: RegistrationKey;
  readonly waiters: Array<() => void>;
}

/**
 * Keeps one registry in line with the desired set: applies changes in batches, retries with
 * back-off while the registry is down, and periodically compares what the registry holds with
 * what it should hold (anti-entropy), repairing drift such as a hand-deleted key.
 */
class AdapterSync {
  private readonly desired = new Map<string, Registration>();
  private readonly deleting = new Map<string, Pending>();
  /** What we believe the registry holds: id → fingerprint. */
  private applied = new Map<string, string>();
  /** ids whose put is in flight: a delete for them must be awaited. */
  private readonly inflightPuts = new Set<string>();
  private busy = false;
  private again = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private entropyTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private downSince: number | null = null;
  private lastDownLog = 0;
  private closed = false;
  /** Resolvers waiting for the next moment nothing is pending (tests, shutdown). */
  private idleWaiters: Array<() => void> = [];

  constructor(
    readonly adapter: RegistryAdapter,
    private readonly opts: RegistrarOptions,
    private readonly log: RegistrarLog,
  ) {
    adapter.onReset(() => {
      this.log('warn', `${adapter.description}: registrations may have been lost; re-registering all`, { event: 'registry-reset', registry: adapter.kind });
      this.applied.clear();
      this.kick();
    });
    this.scheduleEntropy();
  }

  get isDown(): boolean {
    return this.downSince !== null;
  }

  upsert(reg: Registration): void {
    this.desired.set(reg.id, reg);
    const pending = this.deleting.get(reg.id);
    if (pending) {
      // Superseded by a new registration; whoever waited for the delete need not wait longer.
      this.deleting.delete(reg.id);
      for (const w of pending.waiters) w();
    }
    this.kick();
  }

  /** Resolves when the registry confirmed the delete (callers bound the wait). */
  remove(key: RegistrationKey): Promise<void> {
    this.desired.delete(key.id);
    const known = this.applied.has(key.id) || this.inflightPuts.has(key.id);
    const pending = this.deleting.get(key.id) ?? { key, waiters: [] };
    this.deleting.set(key.id, pending);
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
    if (this.busy || this.deleting.size > 0 || this.isDown) return false;
    for (const [id, reg] of this.desired) if (this.applied.get(id) !== this.adapter.fingerprint(reg)) return false;
    return true;
  }

  private kick(): void {
    if (this.closed) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    if (this.retryTimer) return; // the retry will pick it up
    this.busy = true;
    // Batch everything that arrives in the same tick into one round of writes.
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.again = false;
    const changes: Change[] = [];
    const puts = new Map<string, string>();
    for (const [id, reg] of this.desired) {
      const fp = this.adapter.fingerprint(reg);
      if (this.applied.get(id) !== fp) {
        changes.push({ op: 'put', reg });
        puts.set(id, fp);
        this.inflightPuts.add(id);
      }
    }
    const deletes = [...this.deleting.values()];
    for (const d of deletes) changes.push({ op: 'delete', key: d.key });
    if (changes.length === 0) {
      this.finish();
      return;
    }
    try {
      await this.adapter.apply(changes);
      for (const [id, fp] of puts) this.applied.set(id, fp);
      for (const d of deletes) {
        this.applied.delete(d.key.id);
        if (this.deleting.get(d.key.id) === d) this.deleting.delete(d.key.id);
        for (const w of d.waiters) w();
      }
      this.succeeded();
    } catch (err) {
      this.failed(err);
    } finally {
      for (const id of puts.keys()) this.inflightPuts.delete(id);
    }
    this.finish();
  }

  private finish(): void {
    this.busy = false;
    if (this.closed) return;
    if (this.again && !this.retryTimer) this.kick();
    else if (this.isSettled()) for (const w of this.idleWaiters.splice(0)) w();
  }

  private succeeded(): void {
    if (this.downSince !== null) {
      this.log('info', `${this.adapter.description} is reachable again after ${Math.round((Date.now() - this.downSince) / 100) / 10}s`, {
        event: 'registry-up',
        registry: this.adapter.kind,
      });
    }
    this.downSince = null;
    this.failures = 0;
  }

  private failed(err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.failures++;
    const now = Date.now();
    if (this.downSince === null) {
      this.downSince = now;
      this.lastDownLog = now;
      this.log('error', `${this.adapter.description} unreachable: ${msg}; vassals keep running, retrying`, { event: 'registry-down', registry: this.adapter.kind });
    } else if (now - this.lastDownLog >= this.opts.downLogEveryMs) {
      this.lastDownLog = now;
      this.log('warn', `${this.adapter.description} still unreachable after ${Math.round((now - this.downSince) / 1000)}s: ${msg}`, {
        event: 'registry-down',
        registry: this.adapter.kind,
      });
    }
    const delay = Math.min(this.opts.retryMaxMs, this.opts.retryMinMs * 2 ** (this.failures - 1));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.kick();
    }, delay);
  }

  private scheduleEntropy(): void {
    if (this.closed) return;
    this.entropyTimer = setTimeout(() => {
      void this.compare().finally(() => this.scheduleEntropy());
    }, this.opts.antiEntropyMs);
  }

  /** Anti-entropy: believe the registry, not ourselves, then let flush repair the difference. */
  async compare(): Promise<void> {
    if (this.closed || this.busy || this.retryTimer) return;
    this.busy = true;
    // Drift is what differs from what we believed we wrote, not from wishes still in the queue.
    const believed = new Map(this.applied);
    let seen: Map<string, Observed>;
    try {
      seen = await this.adapter.snapshot();
    } catch (err) {
      this.busy = false;
      this.failed(err);
      return;
    }
    this.busy = false;
    this.succeeded();
    const applied = new Map<string, string>();
    let drift = 0;
    for (const [id, obs] of seen) {
      applied.set(id, obs.fingerprint);
      const want = this.desired.get(id);
      if (!want) {
        // Ours but not wanted (a leftover, or a delete that was lost): remove it.
        if (!this.deleting.has(id)) {
          this.deleting.set(id, { key: obs.key, waiters: [] });
          drift++;
        }
      } else if (believed.get(id) !== obs.fingerprint) drift++;
    }
    for (const id of believed.keys()) if (!seen.has(id) && this.desired.has(id)) drift++;
    this.applied = applied;
    if (drift > 0) {
      this.log('warn', `${this.adapter.description}: repairing ${drift} registration(s) that drifted`, { event: 'registry-drift', registry: this.adapter.kind, drift });
    }
    this.kick();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.entropyTimer);
    await this.adapter.close();
  }
}

/** The only component that talks to registries. Input: the desired set of registrations. */
export class Registrar {
  private readonly syncs: AdapterSync[];

  constructor(
    adapters: readonly RegistryAdapter[],
    private readonly log: RegistrarLog,
    private readonly opts: RegistrarOptions = DEFAULT_REGISTRAR_OPTIONS,
  ) {
    this.syncs = adapters.map((a) => new AdapterSync(a, opts, log));
  }

  get enabled(): boolean {
    return this.syncs.length > 0;
  }

  /** Register, or update (health changed): applied at once, in the background. */
  upsert(reg: Registration): void {
    for (const s of this.syncs) s.upsert(reg);
  }

  /**
   * Deregister from every registry. Resolves when all confirmed, or after the bound (a dead
   * registry must never block a stop); the delete keeps being retried in the background.
   */
  async remove(key: RegistrationKey): Promise<void> {
    if (this.syncs.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.opts.deregisterBoundMs);
    });
    const results = await Promise.all(
      this.syncs.map(async (s) => {
        const r = await Promise.race([s.remove(key).then(() => 'done' as const), bound]);
        if (r === 'timeout') {
          this.log('warn', `deregistration from ${s.adapter.description} not confirmed within ${this.opts.deregisterBoundMs} ms; stopping anyway (it is retried)`, {
            vassal: key.name,
            event: 'deregister-timeout',
            registry: s.adapter.kind,
          });
        }
        return r;
      }),
    );
    clearTimeout(timer);
    void results;
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
    return this.syncs.map((s) => ({ registry: s.adapter.kind, description: s.adapter.description, up: !s.isDown, stats: s.adapter.stats?.() ?? {} }));
  }

  async close(): Promise<void> {
    await Promise.all(this.syncs.map((s) => s.close()));
  }
}
