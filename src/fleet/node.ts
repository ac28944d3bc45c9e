// One emperor as a fleet node: its lease, its node record, and the instances it claims.
//
// Every decision several hosts must agree on is an etcd transaction on this node's lease:
// a claim is created only if absent (so one instance slot has one holder), and it vanishes with
// the lease. Fencing: an instance may run only while this node's claim on it can still be
// valid. The lease is valid at least until (send time of the last confirmed renewal + TTL), so
// - instances are stopped gracefully (deregister, drain, signal) once renewals have failed for
//   SOFT_FRACTION of the TTL, and no instance starts after that;
// - the guardian (a separate process: it runs on even when this event loop is frozen) kills
//   them at a hard deadline HARD_MARGIN before the lease can expire.
// Nothing here votes: the claim keys, their leases and etcd's revisions decide.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { EtcdLeaseInvalidError, type Etcd3, type Lease, type Watcher } from 'etcd3';
import { ConfigError } from '../config/errors.js';
import type { VassalParseResult } from '../config/load.js';
import type { VassalSpec } from '../config/spec.js';
import type { Logger } from '../log/logger.js';
import { describeEtcdError } from '../registries/etcd/client.js';
import type { EtcdConfig } from '../registries/etcd/options.js';
import type { Vassal } from '../vassal/vassal.js';
import { claimKey, fleetPrefix, nodeKey, specKey } from './keys.js';
import { readFleet, type ClaimRecord, type FleetSnapshot, type NodeRecord } from './snapshot.js';
import { fleetStatus, type FleetStatusJson } from './status.js';

/** The whole fleet as this node last read it, for live views (the dashboard). */
export type FleetWorld = FleetStatusJson & { readonly self: string };

/** Renewals failed for this share of the TTL: stop the instances gracefully. */
const SOFT_FRACTION = 0.7;
/** The guardian kills instances this long before the lease can expire (at least HARD_MARGIN_MS). */
const HARD_MARGIN_FRACTION = 0.1;
const HARD_MARGIN_MS = 300;
/** Spread: per fleet instance this node runs beyond the least loaded node's count, it waits this much longer before claiming. */
const SPREAD_STEP_MS = 25;
/** ...but never more than this, so a failover stays within lease TTL + 1 s. */
const SPREAD_MAX_MS = 400;
/** Claims attempted in one round; then the picture is read again (so others can catch up). */
const CLAIMS_PER_ROUND = 32;
/** etcd's default --max-txn-ops. */
const MAX_TXN_OPS = 128;
/** A full re-read even without watch events, in case the watch missed something. */
const RESYNC_MS = 2000;

/** What the node needs from its emperor. */
export interface FleetHost {
  readonly logger: Logger;
  /** Parse a fleet document (in the emperor's parse worker, like a vassal file). */
  parse(bytes: Buffer, label: string, name: string): Promise<VassalParseResult>;
  /** Who it would run as here; a problem refuses it on this node. */
  admit(spec: VassalSpec): Promise<{ ok: true } | { ok: false; problem: string }>;
  /** Run (or reload into) this spec under the fleet name; a string is why it cannot run here. */
  run(name: string, spec: VassalSpec): Vassal | string;
  /** The fleet document became invalid: report it; what runs keeps running. */
  invalid(name: string, label: string, error: ConfigError): void;
  /** Stop the instance and forget it; resolves once its processes are gone. */
  stop(name: string, why: string): Promise<void>;
  /** Tell the guardian the hard deadline (centiseconds of /proc/uptime), or that there is none. */
  fenceDeadline(uptimeCs: number | undefined): void;
  /** Vassals supervised (for the node record). */
  vassalCount(): number;
}

export interface FleetOptions {
  readonly node: string;
  readonly etcd: EtcdConfig;
  readonly client: Etcd3;
  /**
   * The lease's own connection: renewals must not queue behind a burst of claims and status
   * writes on a shared channel (a late renewal fences every instance of the node).
   */
  readonly leaseClient?: Etcd3;
}

interface Held {
  readonly slot: string;
  /** The spec hash it last ran (or was told to run). */
  hash: string | undefined;
  vassal: Vassal | undefined;
  /** Releasing: being stopped, then its claim deleted. */
  releasing: boolean;
}

type Verdict = { ok: true; spec: VassalSpec } | { ok: false; error: ConfigError };

/** Centiseconds of CLOCK_BOOTTIME, as /proc/uptime shows it to the guardian. */
function uptimeCs(): number | undefined {
  try {
    const [up] = readFileSync('/proc/uptime', 'utf8').split(' ');
    const v = Number(up);
    return Number.isFinite(v) ? Math.floor(v * 100) : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A stable per-node order of candidates, so nodes racing for singletons mostly pick different ones. */
const rank = (node: string, name: string): string => createHash('sha1').update(`${node}\0${name}`).digest('hex');

/** The slots a placement asks for, given the live nodes. */
export function desiredSlots(spec: VassalSpec, liveNodes: readonly string[]): string[] {
  const p = spec.placement;
  if (!p) return [];
  if (p.kind === 'replicas') return Array.from({ length: p.replicas }, (_, i) => String(i));
  if (p.kind === 'nodes') return [...p.nodes];
  return [...liveNodes];
}

/** Slots this node itself may hold: any replica slot, or its own name for nodes/all. */
function eligible(spec: VassalSpec, slot: string, node: string): boolean {
  const p = spec.placement;
  if (!p) return false;
  if (p.kind === 'replicas') return /^\d+$/.test(slot) && Number(slot) < p.replicas;
  if (p.kind === 'nodes') return slot === node && p.nodes.includes(node);
  return slot === node;
}

export class FleetNode {
  readonly node: string;
  private readonly root: string;
  private readonly ttlMs: number;
  private readonly client: Etcd3;
  private readonly leaseClient: Etcd3;
  private readonly cfg: EtcdConfig;
  private lease: Lease | undefined;
  private leaseId: string | undefined;
  /** performance.now() of sending the last renewal etcd confirmed (or of the grant). */
  private lastSend = -Infinity;
  private readonly held = new Map<string, Held>();
  private readonly verdicts = new Map<string, { digest: string; verdict: Verdict }>();
  private watcher: Watcher | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private keepalivesInFlight = 0;
  private closed = false;
  private fenced = false;
  private reconciling: Promise<void> | undefined;
  private dirty = false;
  private joining: Promise<void> | undefined;
  private readonly started = Date.now();
  private lastRecord = '';
  private readonly statusQueue = new Map<string, ClaimRecord>();
  private flushing = false;
  private lastEtcdError = '';
  /** The last read of the whole fleet (every node and claim), for world(). */
  private lastSnap: FleetSnapshot | undefined;
  /** 'world': the fleet read differs from the last one (a node or an instance changed). */
  readonly events = new EventEmitter<{ world: [] }>();

  constructor(
    private readonly host: FleetHost,
    opts: FleetOptions,
  ) {
    this.node = opts.node;
    this.root = opts.etcd.treeRoot;
    this.ttlMs = opts.etcd.leaseTtlSeconds * 1000;
    this.client = opts.client;
    this.leaseClient = opts.leaseClient ?? opts.client;
    this.cfg = opts.etcd;
  }

  private get log(): Logger {
    return this.host.logger;
  }

  /** Until here, renewals may fail and instances keep running. */
  private get softDeadline(): number {
    return this.lastSend + this.ttlMs * SOFT_FRACTION;
  }

  private get hardDeadline(): number {
    return this.lastSend + this.ttlMs - Math.max(HARD_MARGIN_MS, this.ttlMs * HARD_MARGIN_FRACTION);
  }

  /** Is this fleet name one of ours (for the emperor's registrations and status)? */
  holds(name: string): boolean {
    return this.held.has(name);
  }

  /**
   * Asked right before each spawn of a fleet instance: it may start only while its claim is held
   * and can still be valid. The one check that also holds after this loop was frozen.
   */
  mayStart(name: string): string | undefined {
    const h = this.held.get(name);
    if (!h || h.releasing) return `fleet instance "${name}" is not claimed by node ${this.node}`;
    if (this.fenced || performance.now() >= this.softDeadline) return `fleet node ${this.node} cannot confirm its etcd lease; not starting "${name}" (fencing)`;
    return undefined;
  }

  async start(): Promise<void> {
    this.tickTimer = setInterval(() => this.tick(), Math.max(100, Math.floor(this.ttlMs / 6)));
    this.resyncTimer = setInterval(() => this.kick(), RESYNC_MS);
    this.watcher = await this.client.watch().prefix(fleetPrefix(this.root)).create();
    this.watcher.on('data', () => this.kick());
    this.watcher.on('error', () => undefined);
    this.watcher.on('disconnected', () => undefined);
    this.watcher.on('connected', () => this.kick());
    this.rejoin();
  }

  /** Stop claiming, stop our instances (the emperor's shutdown does), then give the lease back. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.tickTimer);
    clearInterval(this.resyncTimer);
    await this.watcher?.cancel().catch(() => undefined);
    await this.reconciling?.catch(() => undefined);
    await Promise.all([...this.held.keys()].map((name) => this.host.stop(name, 'the emperor is shutting down')));
    this.held.clear();
    this.host.fenceDeadline(undefined);
    const lease = this.lease;
    this.lease = undefined;
    this.leaseId = undefined;
    // Revoked only now that nothing runs: the claims vanish and other nodes take over at once.
    if (lease) await Promise.race([lease.revoke().catch(() => undefined), sleep(1500)]);
    this.client.close();
    if (this.leaseClient !== this.client) this.leaseClient.close();
  }

  // ---- the lease ---------------------------------------------------------------------------

  private rejoin(): void {
    if (this.closed || this.joining) return;
    this.joining = this.join().finally(() => {
      this.joining = undefined;
    });
  }

  /** Grant a lease and publish the node record on it; retried until it works. */
  private async join(): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      const sentAt = performance.now();
      const lease = this.leaseClient.lease(this.ttlMs / 1000, { autoKeepAlive: false });
      lease.on('lost', () => undefined);
      try {
        const id = await lease.grant();
        const record = this.record();
        const key = nodeKey(this.root, this.node);
        const res = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(record).lease(id)).else(this.client.get(key)).commit();
        if (!res.succeeded) {
          await lease.revoke().catch(() => undefined);
          const other = res.responses[0]?.response_range?.kvs[0];
          if (attempt === 0 || attempt % 10 === 0) {
            this.log.warn(
              `fleet: node name "${this.node}" is held by another lease (${other ? other.value.toString('utf8').slice(0, 200) : 'unknown'}); waiting for it to expire (another emperor with the same --node-name, or this node's previous run)`,
              { event: 'fleet-node-name-taken', node: this.node },
            );
          }
          await sleep(1000);
          continue;
        }
        if (this.closed) {
          await lease.revoke().catch(() => undefined);
          return;
        }
        this.lease = lease;
        this.leaseId = id;
        this.lastSend = sentAt;
        this.lastRecord = record;
        this.fenced = false;
        this.armGuardian();
        this.log.info(`fleet: joined as node ${this.node} (lease ${id}, ttl ${this.ttlMs / 1000}s)`, { event: 'fleet-joined', node: this.node, lease: id });
        this.kick();
        return;
      } catch (err) {
        lease.release();
        this.etcdTrouble(`fleet: cannot join as node ${this.node}: ${describeEtcdError(err, this.cfg)}; retrying`);
        await sleep(Math.min(2000, 200 * (attempt + 1)));
      }
    }
  }

  private etcdTrouble(message: string): void {
    if (message === this.lastEtcdError) return;
    this.lastEtcdError = message;
    this.log.error(message, { event: 'fleet-etcd-error', node: this.node });
  }

  private record(): string {
    const r: NodeRecord = {
      name: this.node,
      host: os.hostname(),
      pid: process.pid,
      started: this.started,
      vassals: this.host.vassalCount(),
      instances: this.held.size,
      load: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    };
    return JSON.stringify(r);
  }

  /** Renew, check the fence, keep the node record current. */
  private tick(): void {
    if (this.closed) return;
    if (this.keepalivesInFlight === 0) this.renew();
    this.checkFence();
    const id = this.leaseId;
    if (id !== undefined) void this.refreshRecord(id);
  }

  /**
   * One renewal. etcd3 sends each keepalive stream to a member picked at random and does not
   * fail a stream over: after a failure the next attempt goes out at once (to another member,
   * likely), so one member down costs a few milliseconds, not a tick.
   */
  private renew(retries = 5): void {
    const lease = this.lease;
    const id = this.leaseId;
    if (!lease || id === undefined || this.closed) return;
    const sentAt = performance.now();
    this.keepalivesInFlight++;
    // A stream to a member that went away can hang: each attempt gets a deadline.
    void lease
      .keepaliveOnce({ deadline: Date.now() + Math.max(500, Math.floor(this.ttlMs / 4)) })
      .then(
        () => {
          if (this.leaseId !== id) return;
          // Even a late answer proves the lease was renewed no earlier than it was sent.
          if (sentAt > this.lastSend) this.lastSend = sentAt;
          this.armGuardian();
          if (this.fenced && performance.now() < this.softDeadline) {
            this.fenced = false;
            this.lastEtcdError = '';
            this.log.info(`fleet: etcd lease ${id} renewed again; resuming fleet instances`, { event: 'fleet-lease-renewed', node: this.node });
            this.kick();
          }
        },
        (err: unknown) => {
          if (this.leaseId !== id) return;
          if (err instanceof EtcdLeaseInvalidError) {
            this.leaseLost('etcd no longer knows the lease (it expired)');
            return;
          }
          if (retries > 0) setTimeout(() => this.renew(retries - 1), 50);
          else this.etcdTrouble(`fleet: cannot renew lease ${id}: ${describeEtcdError(err, this.cfg)}`);
        },
      )
      .finally(() => this.keepalivesInFlight--);
  }

  private checkFence(): void {
    if (this.fenced || this.leaseId === undefined) return;
    const now = performance.now();
    if (now < this.softDeadline) return;
    this.fenced = true;
    const late = Math.round(now - this.lastSend);
    this.log.error(
      `fleet: lease ${this.leaseId} not renewed for ${late} ms (ttl ${this.ttlMs / 1000}s): stopping ${this.held.size} fleet instance(s) so no other node can run a second copy; they resume if etcd answers in time`,
      { event: 'fleet-fenced', node: this.node, instances: this.held.size },
    );
    for (const h of this.held.values()) {
      if (h.vassal) void h.vassal.stop();
      h.hash = undefined; // restarted by the next reconcile once renewals work again
    }
    if (now >= this.lastSend + this.ttlMs) this.leaseLost('the lease TTL passed without a confirmed renewal');
  }

  private armGuardian(): void {
    const up = uptimeCs();
    if (up === undefined) return;
    const remainingMs = this.hardDeadline - performance.now();
    // One centisecond lower for the rounding of /proc/uptime.
    this.host.fenceDeadline(up + Math.floor(remainingMs / 10) - 1);
  }

  /** The lease is gone (or must be taken as gone): stop everything, forget the claims, join again. */
  private leaseLost(reason: string): void {
    const id = this.leaseId;
    if (id === undefined) return;
    this.lease?.release();
    this.lease = undefined;
    this.leaseId = undefined;
    this.fenced = true;
    this.host.fenceDeadline(uptimeCs() ?? 0);
    this.log.error(`fleet: lease ${id} lost (${reason}); stopping ${this.held.size} fleet instance(s) and joining again`, { event: 'fleet-lease-lost', node: this.node, instances: this.held.size });
    const names = [...this.held.keys()];
    this.held.clear();
    for (const name of names) void this.host.stop(name, 'its claim lapsed with the lease');
    this.rejoin();
  }

  private async refreshRecord(id: string): Promise<void> {
    const record = this.record();
    const changed = (a: string, b: string): boolean => {
      // load moves all the time: only the other fields, or a 10-s old load, warrant a write.
      const pa = JSON.parse(a) as NodeRecord;
      const pb = JSON.parse(b) as NodeRecord;
      return pa.vassals !== pb.vassals || pa.instances !== pb.instances || Math.abs(pa.load - pb.load) >= 0.5;
    };
    if (this.lastRecord && !changed(this.lastRecord, record)) return;
    this.lastRecord = record;
    const key = nodeKey(this.root, this.node);
    await this.client
      .if(key, 'Lease', '==', id)
      .then(this.client.put(key).value(record).lease(id))
      .commit()
      .catch(() => {
        this.lastRecord = '';
      });
  }

  // ---- reconciling -------------------------------------------------------------------------

  /** Something changed (or may have): read everything again and act on it, one round at a time. */
  private kick(): void {
    if (this.closed) return;
    if (this.reconciling) {
      this.dirty = true;
      return;
    }
    this.dirty = false;
    this.reconciling = this.reconcile()
      .catch((err: unknown) => {
        this.etcdTrouble(`fleet: cannot read the fleet: ${describeEtcdError(err, this.cfg)}`);
      })
      .finally(() => {
        this.reconciling = undefined;
        if (this.dirty) this.kick();
      });
  }

  private async verdict(name: string, raw: Buffer): Promise<Verdict> {
    const digest = createHash('sha256').update(raw).digest('hex');
    const cached = this.verdicts.get(name);
    if (cached?.digest === digest) return cached.verdict;
    const label = `etcd:${specKey(this.root, name)}`;
    const parsed = await this.host.parse(raw, label, name);
    let verdict: Verdict = parsed.ok ? { ok: true, spec: parsed.spec } : { ok: false, error: parsed.error };
    if (verdict.ok) {
      const admitted = await this.host.admit(verdict.spec);
      if (!admitted.ok) verdict = { ok: false, error: new ConfigError(label, admitted.problem) };
    }
    if (!parsed.ok && parsed.transient) return verdict; // not a verdict on the document: try again later
    this.verdicts.set(name, { digest, verdict });
    if (!verdict.ok) {
      const keeps = this.held.has(name) ? '; the running instance keeps its last valid version' : '; not running it here';
      this.log.error(`invalid fleet vassal: ${verdict.error.message}${keeps}`, { vassal: name, event: 'fleet-invalid', node: this.node });
    }
    return verdict;
  }

  private async reconcile(): Promise<void> {
    const id = this.leaseId;
    if (id === undefined) return;
    const snap = await readFleet(this.client, this.root);
    this.log.debug(`fleet: read revision ${snap.revision}: ${snap.specs.size} vassal(s), ${snap.nodes.size} node(s)`, { event: 'fleet-read', node: this.node });
    if (this.leaseId !== id || this.closed) return;
    this.lastEtcdError = '';
    const specs = new Map<string, Verdict>();
    // All at once: the parse worker pipelines them (one by one, 100 new documents took seconds).
    const verdicts = await Promise.all([...snap.specs].map(async ([name, { raw }]) => [name, await this.verdict(name, raw)] as const));
    for (const [name, verdict] of verdicts) specs.set(name, verdict);
    for (const name of this.verdicts.keys()) if (!snap.specs.has(name)) this.verdicts.delete(name);
    const before = this.lastSnap;
    this.lastSnap = snap;
    if (before?.revision !== snap.revision) this.events.emit('world');
    if (this.leaseId !== id || this.closed) return;
    const live = [...snap.nodes.keys()];

    // What etcd says we hold.
    const mine = new Map<string, string[]>();
    for (const [name, slots] of snap.claims) {
      for (const [slot, c] of slots) if (c.lease === id) mine.set(name, [...(mine.get(name) ?? []), slot]);
    }

    // 1. Instances whose claim is gone (deleted by hand, or our view was stale): stop at once.
    for (const [name, h] of this.held) {
      if (h.releasing) continue;
      if (!(mine.get(name) ?? []).includes(h.slot)) {
        this.held.delete(name);
        this.log.warn(`fleet: claim ${claimKey(this.root, name, h.slot)} is no longer ours; stopping the instance`, { vassal: name, event: 'fleet-claim-gone', node: this.node });
        void this.host.stop(name, 'its fleet claim is gone');
      }
    }

    // 2. Claims we hold: run, reload, or release them.
    for (const [name, slots] of mine) {
      const verdict = specs.get(name);
      for (const slot of slots) {
        const h = this.held.get(name);
        const spec = verdict?.ok ? verdict.spec : undefined;
        const keep = verdict === undefined ? false : verdict.ok ? eligible(verdict.spec, slot, this.node) && (h === undefined || h.slot === slot) : h?.slot === slot;
        if (!keep) {
          void this.release(name, slot, verdict === undefined ? 'removed from the fleet' : 'no longer placed here');
          continue;
        }
        if (!verdict?.ok) {
          if (verdict) this.host.invalid(name, `etcd:${specKey(this.root, name)}`, verdict.error);
          // Once it is valid again, the emperor hears of it (and clears the error) even if unchanged.
          if (h) h.hash = undefined;
          continue;
        }
        if (!h) {
          // A claim of ours we did not know (our own earlier round, or a restart within the lease).
          this.held.set(name, { slot, hash: undefined, vassal: undefined, releasing: false });
        }
        if (spec && !this.fenced) this.ensureRunning(name, spec);
      }
    }

    if (this.fenced) return;

    // 3. Claim what is free and ours to take, the least loaded node first.
    const counts = new Map<string, number>(live.map((n) => [n, 0]));
    for (const slots of snap.claims.values()) {
      for (const c of slots.values()) {
        const holder = c.record?.node;
        if (holder !== undefined && counts.has(holder)) counts.set(holder, (counts.get(holder) ?? 0) + 1);
      }
    }
    const candidates: Array<{ name: string; slot: string; spec: VassalSpec }> = [];
    for (const [name, verdict] of specs) {
      if (!verdict.ok || mine.has(name) || this.held.has(name)) continue;
      const spec = verdict.spec;
      const taken = snap.claims.get(name) ?? new Map();
      const free = desiredSlots(spec, live).filter((s) => !taken.has(s) && eligible(spec, s, this.node));
      if (free.length > 0) candidates.push({ name, slot: free[0]!, spec });
    }
    if (candidates.length === 0) return;
    const myCount = this.held.size;
    const least = Math.min(...counts.values(), myCount);
    const delay = Math.min(SPREAD_MAX_MS, (myCount - least) * SPREAD_STEP_MS);
    if (delay > 0) await sleep(delay + (parseInt(rank(this.node, '').slice(0, 4), 16) % 20));
    if (this.leaseId !== id || this.closed || this.fenced) return;
    candidates.sort((a, b) => rank(this.node, a.name).localeCompare(rank(this.node, b.name)));
    await this.claim(candidates.slice(0, CLAIMS_PER_ROUND), id);
    // More to take, or others to let catch up: look again.
    this.dirty = true;
  }

  /**
   * Claim several slots in one transaction: each is created only if absent, all or none. When
   * another node took one meanwhile, the failure branch says which, and the rest is tried again
   * (a burst of deploys is then a few transactions, not one per instance).
   */
  private async claim(wanted: Array<{ name: string; slot: string; spec: VassalSpec }>, id: string): Promise<void> {
    let batch = wanted.filter((c) => !this.held.has(c.name));
    const value = JSON.stringify({ node: this.node, state: 'claimed', pid: null, health: null } satisfies ClaimRecord);
    for (let attempt = 0; batch.length > 0 && attempt < 4; attempt++) {
      const keys = batch.map((c) => Buffer.from(claimKey(this.root, c.name, c.slot)));
      const res = await this.client.kv.txn({
        compare: keys.map((key) => ({ key, target: 'Create' as const, result: 'Equal' as const, create_revision: 0 })),
        success: keys.map((key) => ({ request_put: { key, value: Buffer.from(value), lease: id } })),
        failure: keys.map((key) => ({ request_range: { key } })),
      });
      if (this.leaseId !== id || this.closed) return;
      if (!res.succeeded) {
        const taken = new Set(res.responses.flatMap((r) => (r.response_range?.kvs ?? []).map((kv) => kv.key.toString('utf8'))));
        batch = batch.filter((c) => !taken.has(claimKey(this.root, c.name, c.slot)));
        continue;
      }
      for (const c of batch) {
        if (this.held.has(c.name)) continue;
        this.held.set(c.name, { slot: c.slot, hash: undefined, vassal: undefined, releasing: false });
        this.log.info(`fleet: claimed ${c.name} (slot ${c.slot})`, { vassal: c.name, event: 'fleet-claimed', node: this.node, slot: c.slot });
        this.ensureRunning(c.name, c.spec);
      }
      return;
    }
  }

  private ensureRunning(name: string, spec: VassalSpec): void {
    const h = this.held.get(name);
    if (!h || h.releasing || this.fenced) return;
    if (h.hash === spec.hash && h.vassal && h.vassal.state !== 'stopped') return;
    const out = this.host.run(name, spec);
    if (typeof out === 'string') {
      this.log.error(`fleet: cannot run ${name} here: ${out}; releasing the claim`, { vassal: name, event: 'fleet-refused', node: this.node });
      void this.release(name, h.slot, out);
      return;
    }
    h.hash = spec.hash;
    if (h.vassal !== out) {
      h.vassal = out;
      const report = (): void => this.report(name, out);
      out.on('state', report);
      out.on('health', report);
    }
    if (out.state === 'stopped' || out.state === 'fatal' || out.state === 'exited') out.start();
    this.report(name, out);
  }

  /** Stop the instance, then give the claim back (only if it is still ours). */
  private async release(name: string, slot: string, why: string): Promise<void> {
    const h = this.held.get(name);
    if (h?.releasing) return;
    if (h && h.slot === slot) h.releasing = true;
    const id = this.leaseId;
    this.log.info(`fleet: releasing ${name} (slot ${slot}): ${why}`, { vassal: name, event: 'fleet-release', node: this.node, slot });
    if (h && h.slot === slot) await this.host.stop(name, why);
    if (this.held.get(name) === h && h?.slot === slot) this.held.delete(name);
    if (id === undefined || this.leaseId !== id) return;
    const key = claimKey(this.root, name, slot);
    await this.client
      .if(key, 'Lease', '==', id)
      .then(this.client.delete().key(key))
      .commit()
      .catch((err: unknown) => this.etcdTrouble(`fleet: cannot release ${key}: ${describeEtcdError(err, this.cfg)}`));
    this.kick();
  }

  /** Publish an instance's state in its claim (what `fleet status` shows). */
  private report(name: string, vassal: Vassal): void {
    const h = this.held.get(name);
    if (!h || h.vassal !== vassal) return;
    const snap = vassal.snapshot();
    this.statusQueue.set(name, { node: this.node, state: snap.state, pid: snap.pid, health: snap.health });
    void this.flush();
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.statusQueue.size > 0) {
        const id = this.leaseId;
        if (id === undefined) return;
        const batch: Array<{ key: string; value: string }> = [];
        for (const [name, rec] of this.statusQueue) {
          const h = this.held.get(name);
          if (h && !h.releasing) batch.push({ key: claimKey(this.root, name, h.slot), value: JSON.stringify(rec) });
        }
        this.statusQueue.clear();
        // One transaction for the lot (a burst of starts is hundreds of changes), each put only
        // if the claim is still ours; if one is not, the others go one by one.
        for (let i = 0; i < batch.length; i += MAX_TXN_OPS) {
          const part = batch.slice(i, i + MAX_TXN_OPS);
          const all = await this.client.kv
            .txn({
              compare: part.map((b) => ({ key: Buffer.from(b.key), target: 'Lease' as const, result: 'Equal' as const, lease: id })),
              success: part.map((b) => ({ request_put: { key: Buffer.from(b.key), value: Buffer.from(b.value), lease: id } })),
              failure: [],
            })
            .then((r) => r.succeeded)
            .catch(() => true); // etcd unreachable: the next change (or the claim's end) says it again
          if (all) continue;
          await Promise.all(
            part.map((b) =>
              this.client
                .if(b.key, 'Lease', '==', id)
                .then(this.client.put(b.key).value(b.value).lease(id))
                .commit()
                .catch(() => undefined),
            ),
          );
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Every live node and where each fleet vassal's instances run, as of the last read (undefined
   * before the first): what `emperor fleet status` shows, judged by this node's verdicts.
   */
  world(): FleetWorld | undefined {
    const snap = this.lastSnap;
    if (!snap) return undefined;
    return { ...fleetStatus(snap, this.root, (name) => this.verdicts.get(name)?.verdict), self: this.node };
  }

  /** For the status API: this node's view. */
  snapshotView(): { node: string; lease: string | null; fenced: boolean; instances: Array<{ name: string; slot: string }> } {
    return { node: this.node, lease: this.leaseId ?? null, fenced: this.fenced, instances: [...this.held].map(([name, h]) => ({ name, slot: h.slot })) };
  }
}

export type { FleetSnapshot };
