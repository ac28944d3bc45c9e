// The etcd registry adapter: empusa's layout (`<root>/services/<type>/<name>` = "host:port") plus
// a JSON instance document per service, both written in one transaction and both hung on the
// emperor's single lease, so everything vanishes within the TTL if the emperor dies.
import type { Etcd3, IKeyValue, IRequestOp, Lease } from 'etcd3';
import { EtcdLeaseInvalidError } from 'etcd3';
import type { Change, Observed, Registration, RegistrationKey, RegistryAdapter } from '../../registrar/types.js';
import { createEtcdClient, describeEtcdError, EtcdRegistryError, wrapEtcdError } from './client.js';
import { currentEmperor, DocumentCache, fingerprintOf, type EmperorIdentity } from './document.js';
import { instanceKey, instancesPrefix, parseTypeName, prefixRange, segmentProblem, serviceKey, servicesPrefix } from './keys.js';
import type { EtcdConfig } from './options.js';

export type EtcdLog = (level: 'debug' | 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;

export interface EtcdAdapterOptions {
  /** etcd's --max-txn-ops (default 128). Each change takes 2 ops (more when it cleans up a rename). */
  readonly maxTxnOps?: number;
  /** Request size budget per transaction, below etcd's default --max-request-bytes (1.5 MiB). */
  readonly maxTxnBytes?: number;
  /** Deadline of each etcd call attempt. */
  readonly callTimeoutMs?: number;
  /** Upper bound of close() (lease revocation) when etcd is slow or down. */
  readonly closeTimeoutMs?: number;
  /** Transactions of one apply() in flight at once. */
  readonly txnConcurrency?: number;
  /** For tests: who the instance documents say registered them. */
  readonly emperor?: EmperorIdentity;
}

const DEFAULTS = {
  maxTxnOps: 128,
  maxTxnBytes: 1024 * 1024,
  closeTimeoutMs: 1500,
  txnConcurrency: 8,
};

/** Per-key overhead of a request op in the txn's protobuf encoding, roughly; used for sizing. */
const OP_OVERHEAD_BYTES = 32;

interface Planned {
  /** "<type>/<name>" */
  readonly path: string;
  readonly change: Change;
}

interface Batch {
  readonly ops: IRequestOp[];
  readonly items: Array<{ readonly change: Change; readonly path: string; readonly stale: readonly string[] }>;
  bytes: number;
}

const idOf = (c: Change): string => (c.op === 'put' ? c.reg.id : c.key.id);
const keyOf = (c: Change): RegistrationKey => (c.op === 'put' ? c.reg : c.key);

async function runLimited(tasks: Array<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0;
  let firstError: unknown;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (err) {
        if (!failed) {
          failed = true;
          firstError = err;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failed) throw firstError;
}

export class EtcdAdapter implements RegistryAdapter {
  readonly kind = 'etcd' as const;
  readonly description: string;
  /** etcd requests issued (txns, lease grants/revokes, snapshot reads), for the benchmark. */
  roundTrips = 0;

  stats(): Readonly<Record<string, number>> {
    return { roundTrips: this.roundTrips };
  }

  private readonly docs: DocumentCache;
  private readonly opts: typeof DEFAULTS;
  private readonly listeners: Array<() => void> = [];
  private lease: Lease | undefined;
  private leaseId: string | undefined;
  private granting: Promise<string> | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Where each id was last written on the current lease ("<type>/<name>"), to clean up renames. */
  private readonly written = new Map<string, Set<string>>();
  private readonly warnedUnsafe = new Set<string>();

  private constructor(
    private readonly cfg: EtcdConfig,
    private readonly log: EtcdLog,
    private readonly client: Etcd3,
    options: EtcdAdapterOptions,
  ) {
    this.description = cfg.description;
    this.docs = new DocumentCache(options.emperor ?? currentEmperor());
    this.opts = {
      maxTxnOps: options.maxTxnOps ?? DEFAULTS.maxTxnOps,
      maxTxnBytes: options.maxTxnBytes ?? DEFAULTS.maxTxnBytes,
      closeTimeoutMs: options.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs,
      txnConcurrency: options.txnConcurrency ?? DEFAULTS.txnConcurrency,
    };
    if (this.opts.maxTxnOps < 2) throw new RangeError('maxTxnOps must be at least 2');
  }

  /**
   * Create the adapter. Does not talk to etcd: the lease is granted by the first apply() that
   * puts something, so an emperor starts (and registers later) while etcd is down.
   */
  static connect(cfg: EtcdConfig, log: EtcdLog, options: EtcdAdapterOptions = {}): Promise<EtcdAdapter> {
    const client = createEtcdClient(cfg, { callTimeoutMs: options.callTimeoutMs });
    return Promise.resolve(new EtcdAdapter(cfg, log, client, options));
  }

  /** The lease all our keys hang on, if one is granted and not known to be lost. */
  get currentLeaseId(): string | undefined {
    return this.leaseId;
  }

  onReset(listener: () => void): void {
    this.listeners.push(listener);
  }

  fingerprint(reg: Registration): string {
    return this.docs.get(reg).fingerprint;
  }

  async apply(changes: readonly Change[]): Promise<void> {
    this.assertOpen();
    const plan = this.plan(changes);
    if (plan.length === 0) return;
    const needsLease = plan.some((p) => p.change.op === 'put');
    for (let attempt = 0; ; attempt++) {
      let leaseId: string | undefined;
      try {
        leaseId = needsLease ? await this.currentLease() : undefined;
        const batches = this.batches(plan, leaseId ?? '0');
        await runLimited(
          batches.map((b) => () => this.commit(b)),
          this.opts.txnConcurrency,
        );
        return;
      } catch (err) {
        // etcd dropped the lease (expired while we could not reach it, or revoked by hand)
        // before the keepalive noticed: start over on a fresh lease, once.
        if (err instanceof EtcdLeaseInvalidError && leaseId !== undefined && attempt === 0) {
          this.leaseLost(leaseId, 'etcd no longer knows the lease');
          continue;
        }
        throw wrapEtcdError(err, this.cfg);
      }
    }
  }

  async snapshot(): Promise<Map<string, Observed>> {
    this.assertOpen();
    const leaseId = this.leaseId;
    const root = this.cfg.treeRoot;
    const instPrefix = instancesPrefix(root);
    const svcPrefix = servicesPrefix(root);
    this.roundTrips++;
    let responses;
    try {
      // Both ranges in one txn: one round trip, one consistent revision.
      const res = await this.client.kv.txn({
        compare: [],
        success: [{ request_range: prefixRange(instPrefix) }, { request_range: prefixRange(svcPrefix) }],
        failure: [],
      });
      responses = res.responses;
    } catch (err) {
      throw wrapEtcdError(err, this.cfg);
    }
    const out = new Map<string, Observed>();
    // Nothing can be ours without a lease (and keys on a lost lease are not ours any more).
    if (leaseId === undefined || leaseId !== this.leaseId) return out;
    const instances = responses[0]?.response_range.kvs ?? [];
    const services = new Map<string, IKeyValue>();
    for (const kv of responses[1]?.response_range.kvs ?? []) {
      const tn = parseTypeName(kv.key.toString(), svcPrefix);
      if (tn) services.set(`${tn.type}/${tn.name}`, kv);
    }
    const pathsById = new Map<string, string[]>();
    for (const kv of instances) {
      if (kv.lease !== leaseId) continue;
      const tn = parseTypeName(kv.key.toString(), instPrefix);
      if (!tn) continue;
      const doc = kv.value.toString();
      const id = docId(doc);
      // A document we cannot read is reported missing: the registrar then rewrites it.
      if (id === undefined) continue;
      const path = `${tn.type}/${tn.name}`;
      const loc = services.get(path);
      const location =
        loc === undefined
          ? ({ kind: 'absent' } as const)
          : loc.lease === leaseId
            ? ({ kind: 'ours', value: loc.value.toString() } as const)
            : ({ kind: 'foreign', value: loc.value.toString() } as const);
      const paths = pathsById.get(id) ?? [];
      paths.push(path);
      pathsById.set(id, paths);
      out.set(id, { key: { id, type: tn.type, name: tn.name }, fingerprint: fingerprintOf(location, doc) });
    }
    // The same id under two names (a rename whose cleanup was lost): report a fingerprint that
    // matches nothing, so the registrar re-puts it and the put removes the other paths.
    for (const [id, paths] of pathsById) {
      this.written.set(id, new Set(paths));
      if (paths.length > 1) {
        const obs = out.get(id)!;
        out.set(id, { key: obs.key, fingerprint: `duplicate:${paths.join(',')}` });
      }
    }
    return out;
  }

  /** Revoke the lease (so a clean shutdown leaves no keys) and close the client; bounded. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    const lease = this.lease;
    this.lease = undefined;
    this.leaseId = undefined;
    if (lease) {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), this.opts.closeTimeoutMs);
      });
      this.roundTrips++;
      const revoke = lease.revoke().then(
        () => 'revoked' as const,
        (err: unknown) => {
          this.log('warn', `${this.description}: could not revoke the lease on close: ${describeEtcdError(err, this.cfg)}; its keys expire within ${this.cfg.leaseTtlSeconds}s`, {
            event: 'etcd-lease-revoke-failed',
          });
          return 'failed' as const;
        },
      );
      const outcome = await Promise.race([revoke, bound]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        this.log('warn', `${this.description}: lease revocation did not finish within ${this.opts.closeTimeoutMs} ms; its keys expire within ${this.cfg.leaseTtlSeconds}s`, {
          event: 'etcd-lease-revoke-failed',
        });
      }
    }
    this.client.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new EtcdRegistryError('the etcd adapter is closed', 'closed');
  }

  /** The current lease id, granting a lease first when there is none (one grant at a time). */
  private currentLease(): Promise<string> {
    if (this.leaseId !== undefined) return Promise.resolve(this.leaseId);
    this.granting ??= this.grantLease().finally(() => {
      this.granting = undefined;
    });
    return this.granting;
  }

  private async grantLease(): Promise<string> {
    const lease = this.client.lease(this.cfg.leaseTtlSeconds, { autoKeepAlive: true });
    let id: string | undefined;
    lease.on('lost', (err: unknown) => {
      // etcd3 also emits 'lost' when the grant itself fails; nothing was written on it then.
      if (id !== undefined && this.leaseId === id) this.leaseLost(id, describeEtcdError(err, this.cfg));
    });
    this.lease = lease;
    this.roundTrips++;
    try {
      id = await lease.grant();
    } catch (err) {
      if (this.lease === lease) this.lease = undefined;
      lease.release();
      throw err;
    }
    if (this.closed || this.lease !== lease) {
      // close() raced the grant: do not leave a lease (or keys on it) behind.
      void lease.revoke().catch(() => undefined);
      throw new EtcdRegistryError('the etcd adapter is closed', 'closed');
    }
    this.leaseId = id;
    this.written.clear();
    this.log('debug', `${this.description}: granted lease ${id} (ttl ${this.cfg.leaseTtlSeconds}s)`, { event: 'etcd-lease-granted', lease: id });
    return id;
  }

  /** Forget a lease whose keys etcd has dropped, and tell the registrar to re-apply everything. */
  private leaseLost(id: string, reason: string): void {
    if (this.leaseId !== id) return;
    const lease = this.lease;
    this.lease = undefined;
    this.leaseId = undefined;
    this.written.clear();
    lease?.release();
    if (this.closed) return;
    this.log('warn', `${this.description}: lease ${id} lost (${reason}); registering again on a new lease`, { event: 'etcd-lease-lost', lease: id });
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.log('error', `${this.description}: reset listener failed: ${(err as Error).message}`);
      }
    }
  }

  /** Registrations etcd cannot take are skipped (and re-offered by anti-entropy): warn once each. */
  private warnOnce(id: string, message: string): void {
    if (this.warnedUnsafe.has(id)) return;
    this.warnedUnsafe.add(id);
    this.log('warn', message, { event: 'etcd-registration-skipped', id });
  }

  /**
   * One change per etcd path (a txn may not touch a key twice). For the same id the last change
   * wins; between different ids a put beats a delete (a rename onto a freed name).
   */
  private plan(changes: readonly Change[]): Planned[] {
    const byPath = new Map<string, Change>();
    for (const change of changes) {
      const key = keyOf(change);
      const problem = segmentProblem(key.type) ? `type ${segmentProblem(key.type)}` : segmentProblem(key.name) ? `name ${segmentProblem(key.name)}` : undefined;
      if (problem) {
        this.warnOnce(key.id, `${this.description}: not registering ${JSON.stringify(key.id)} in etcd: service ${problem}`);
        continue;
      }
      const path = `${key.type}/${key.name}`;
      const previous = byPath.get(path);
      if (previous && idOf(previous) !== key.id && previous.op === 'put' && change.op === 'delete') continue;
      byPath.delete(path);
      byPath.set(path, change);
    }
    return [...byPath].map(([path, change]) => ({ path, change }));
  }

  private batches(plan: readonly Planned[], leaseId: string): Batch[] {
    const root = this.cfg.treeRoot;
    const touched = new Set(plan.map((p) => p.path));
    const out: Batch[] = [];
    let current: Batch = { ops: [], items: [], bytes: 0 };
    const del = (key: string): IRequestOp => ({ request_delete_range: { key: Buffer.from(key) } });
    const put = (key: string, value: string): IRequestOp => ({ request_put: { key: Buffer.from(key), value: Buffer.from(value), lease: leaseId } });
    for (const { path, change } of plan) {
      const [type, name] = path.split('/') as [string, string];
      const svc = serviceKey(root, type, name);
      const inst = instanceKey(root, type, name);
      const ops: IRequestOp[] = [];
      if (change.op === 'put') {
        const w = this.docs.get(change.reg);
        ops.push(w.location === null ? del(svc) : put(svc, w.location), put(inst, w.doc));
      } else {
        ops.push(del(svc), del(inst));
      }
      // Paths this id was written under before (renamed service): remove them with the change,
      // unless another change of this apply owns that path now.
      const stale = [...(this.written.get(idOf(change)) ?? [])].filter((p) => p !== path && !touched.has(p));
      for (const p of stale) {
        const [t, n] = p.split('/') as [string, string];
        ops.push(del(serviceKey(root, t, n)), del(instanceKey(root, t, n)));
      }
      const bytes = ops.reduce((sum, op) => sum + opBytes(op), 0);
      if (bytes > this.opts.maxTxnBytes) {
        // etcd would refuse it in any transaction; failing the whole batch would block the rest.
        this.warnOnce(idOf(change), `${this.description}: not registering ${JSON.stringify(idOf(change))} in etcd: its document is ${bytes} bytes, over the ${this.opts.maxTxnBytes}-byte request budget`);
        continue;
      }
      if (current.ops.length > 0 && (current.ops.length + ops.length > this.opts.maxTxnOps || current.bytes + bytes > this.opts.maxTxnBytes)) {
        out.push(current);
        current = { ops: [], items: [], bytes: 0 };
      }
      current.ops.push(...ops);
      current.items.push({ change, path, stale });
      current.bytes += bytes;
    }
    if (current.ops.length > 0) out.push(current);
    return out;
  }

  private async commit(batch: Batch): Promise<void> {
    this.roundTrips++;
    await this.client.kv.txn({ compare: [], success: batch.ops, failure: [] });
    for (const { change, path } of batch.items) {
      const id = idOf(change);
      if (change.op === 'put') this.written.set(id, new Set([path]));
      else this.written.delete(id);
    }
  }
}

function opBytes(op: IRequestOp): number {
  const p = op.request_put;
  if (p) return OP_OVERHEAD_BYTES + (p.key?.length ?? 0) + (p.value?.length ?? 0);
  return OP_OVERHEAD_BYTES + (op.request_delete_range?.key?.length ?? 0);
}

function docId(doc: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(doc);
    if (parsed && typeof parsed === 'object' && typeof (parsed as { id?: unknown }).id === 'string') return (parsed as { id: string }).id;
  } catch {
    // not our document
  }
  return undefined;
}
