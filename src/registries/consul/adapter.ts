// The Consul registry adapter: each ready vassal is an agent service (PUT /v1/agent/service/register)
// with two TTL checks that answer two different questions (as Nomad does):
// - health, `service:<id>`: the vassal's aggregate health with its checks' output. It never
//   deregisters anything: an unhealthy but living app stays registered, visible as critical, and
//   `?passing` consumers skip it.
// - liveness, `service:<id>:liveness`: passing while the emperor supervises the vassal. It alone
//   carries DeregisterCriticalServiceAfter, so only an emperor that stopped heartbeating (it died)
//   gets its services removed by Consul.
// The adapter heartbeats both every TTL/3 with their last status and output. (A single check
// carrying both made Consul remove a vassal that stayed critical for DeregisterCriticalServiceAfter
// while its emperor lived, and anti-entropy register it again, over and over.) Services registered
// with that single-check layout lack the liveness check: snapshot() reports them as different, so
// the registrar's next anti-entropy pass registers them again in this layout. Optionally the
// vassal's http/tcp checks are registered as Consul-native checks too.
//
// Ownership: every service carries Meta.emperor_id = this emperor's stable id; snapshot() reports
// only those. Policy (retries, back-off, anti-entropy, bounded deregistration) is the registrar's;
// this adapter is idempotent and reports lost registrations (agent restarted, agent switched, a
// heartbeat answered "unknown check") through onReset.
import { createHash } from 'node:crypto';
import type { CheckStatus } from '../../config/spec.js';
import type { Change, Observed, Registration, RegistrationKey, RegistryAdapter } from '../../registrar/types.js';
import { ConsulClient, ConsulError, goDuration, type AgentCheck, type AgentService, type CheckRegistration, type ServiceRegistration } from '../../consul/client.js';
import type { ConsulConfig } from './options.js';

export type ConsulLog = (level: 'debug' | 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;

export interface ConsulAdapterOptions {
  /** Stable id of this emperor (survives restarts): the ownership marker in each service's Meta. */
  readonly emperorId: string;
  readonly log: ConsulLog;
  /** Deadline of each request attempt on one agent (default 2 s). */
  readonly timeoutMs?: number;
  /** Requests in flight at once for one apply() or one heartbeat round (default 8). */
  readonly concurrency?: number;
}

/** Meta keys the emperor writes (Consul: [A-Za-z0-9_-], at most 128 bytes, no "consul-" prefix). */
export const META_EMPEROR_ID = 'emperor_id';
export const META_VASSAL = 'emperor_vassal';
export const META_TYPE = 'emperor_type';
/** Digest of what the agent does not show back (TTL, DeregisterCriticalServiceAfter, native checks). */
export const META_DEFINITION = 'emperor_def';
const OURS = new Set([META_EMPEROR_ID, META_VASSAL, META_TYPE, META_DEFINITION]);

/** Consul's limits (structs.ValidateServiceMetadata). */
const META_MAX_PAIRS = 64;
const META_KEY_MAX = 128;
const META_VALUE_MAX = 512;
const META_KEY = /^[A-Za-z0-9_-]+$/;
/** Consul keeps 4096 bytes of check output by default; stay below so nothing is cut. */
const OUTPUT_MAX_BYTES = 4000;
const CHECK_LINE_MAX_BYTES = 600;
const HEARTBEAT_WARN_EVERY_MS = 30_000;

/** The health TTL check of service `id` (Consul's default ID for a service's single check). */
export const healthCheckId = (id: string): string => `service:${id}`;
/** The liveness TTL check of service `id`: the one carrying DeregisterCriticalServiceAfter. */
export const livenessCheckId = (id: string): string => `service:${id}:liveness`;

interface Built {
  readonly body: ServiceRegistration;
  /** Digest of the registration without check statuses: re-register only when this changes. */
  readonly defHash: string;
  readonly status: CheckStatus;
  readonly output: string;
  readonly liveOutput: string;
  readonly fingerprint: string;
}

interface Tracked {
  /** '' for a service adopted from a snapshot (its definition is re-sent by the next put). */
  readonly defHash: string;
  readonly status: CheckStatus;
  readonly output: string;
  readonly liveOutput: string;
  lastSentAt: number;
  /** Registered (or adopted) at; a snapshot that started earlier cannot prove it gone. */
  readonly since: number;
}

const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

/** JSON with object keys sorted, so equal content gives equal text. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** What the agent shows back of a service: compared by snapshot() and fingerprint() alike. */
function observableDigest(o: { id: string; name: string; tags: readonly string[]; address: string; port: number; meta: Readonly<Record<string, string>>; checkIds: readonly string[] }): string {
  return sha(canonical({ ...o, checkIds: [...o.checkIds].sort() })).slice(0, 20);
}

/** `live`: the liveness check's status; the registrar re-puts a service whose liveness lapsed. */
const fingerprintOf = (observable: string, status: string, output: string, live: string): string => `${observable}/${status}/${sha(output).slice(0, 20)}/${live}`;

/** Cut to at most `max` UTF-8 bytes without splitting a character. */
function cutBytes(text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text;
  const marker = ' …(cut)';
  let out = Buffer.from(text).subarray(0, max - Buffer.byteLength(marker)).toString('utf8');
  // A split multi-byte character decodes to U+FFFD at the end: drop it.
  out = out.replace(/\uFFFD+$/, '');
  return out + marker;
}

const isStatus = (s: string): s is CheckStatus => s === 'passing' || s === 'warning' || s === 'critical';

/**
 * The health check's output: the aggregate status, then one line per vassal check with its status
 * and (first line of) output, bounded to what Consul keeps.
 */
export function healthOutput(reg: Registration): string {
  const who = `vassal ${reg.vassal}${reg.pid > 0 ? ` (pid ${reg.pid})` : ''}`;
  if (reg.checks.length === 0) return cutBytes(`${reg.health}: ${who} is running; it has no checks`, OUTPUT_MAX_BYTES);
  const counts = (['passing', 'warning', 'critical'] as const)
    .map((s) => [s, reg.checks.filter((c) => c.status === s).length] as const)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(', ');
  const lines = [`${reg.health}: ${who}, ${reg.checks.length} check${reg.checks.length === 1 ? '' : 's'} (${counts})`];
  for (const c of reg.checks) {
    const out = c.output.trim().split('\n')[0]?.trim() ?? '';
    lines.push(cutBytes(`${c.name}: ${c.status}${out ? ` - ${out}` : ''}`, CHECK_LINE_MAX_BYTES));
  }
  return cutBytes(lines.join('\n'), OUTPUT_MAX_BYTES);
}

/** Run tasks with at most `limit` in flight; all run; the first error is thrown at the end. */
async function runLimited(tasks: ReadonlyArray<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0;
  let failed = false;
  let firstError: unknown;
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
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), tasks.length) }, worker));
  if (failed) throw firstError;
}

/** The agent does not have the check (any more), or it is not our TTL check: it was lost. */
function isGone(err: unknown): boolean {
  if (!(err instanceof ConsulError) || err.kind !== 'http') return false;
  return err.status === 404 || (err.status === 500 && /does not have associated TTL/i.test(err.body));
}

const idOf = (c: Change): string => (c.op === 'put' ? c.reg.id : c.key.id);

export class ConsulAdapter implements RegistryAdapter {
  readonly kind = 'consul' as const;
  readonly description: string;
  /** Heartbeats the agent accepted (tests, benchmarks). */
  heartbeatsSent = 0;

  stats(): Readonly<Record<string, number>> {
    return { heartbeatsSent: this.heartbeatsSent };
  }

  private readonly client: ConsulClient;
  private readonly emperorId: string;
  private readonly log: ConsulLog;
  private readonly concurrency: number;
  private readonly heartbeatMs: number;
  private readonly listeners: Array<() => void> = [];
  private readonly tracked = new Map<string, Tracked>();
  private readonly built = new WeakMap<Registration, Built>();
  private readonly warned = new Set<string>();
  /** id → when remove() last ran, so a snapshot read before it does not adopt the service back. */
  private readonly removedAt = new Map<string, number>();
  /** Per agent: the comparison of its datacenter with --consul-dc (done once). */
  private readonly dcChecks = new Map<string, Promise<void>>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatFailingSince: number | null = null;
  private lastHeartbeatWarn = 0;
  private closed = false;

  private constructor(
    private readonly cfg: ConsulConfig,
    opts: ConsulAdapterOptions,
  ) {
    if (opts.emperorId === '' || Buffer.byteLength(opts.emperorId) > META_VALUE_MAX) {
      throw new RangeError(`emperorId must be 1 to ${META_VALUE_MAX} bytes (it is a Consul Meta value)`);
    }
    this.emperorId = opts.emperorId;
    this.log = opts.log;
    this.concurrency = opts.concurrency ?? 8;
    this.client = new ConsulClient(cfg, { timeoutMs: opts.timeoutMs });
    this.description = cfg.description;
    this.heartbeatMs = Math.max(10, Math.floor(cfg.checkTtlMs / 3));
    this.client.onAgentChange((from, to) => this.reset(`requests moved from Consul agent ${from} to ${to}, which does not hold our services`));
    this.scheduleHeartbeat();
  }

  /**
   * Create the adapter. Does not talk to Consul: registration happens on apply(), so an emperor
   * starts (and registers later) while the agent is down.
   */
  static create(cfg: ConsulConfig, opts: ConsulAdapterOptions): ConsulAdapter {
    return new ConsulAdapter(cfg, opts);
  }

  /** The agent in use, as vassals want it in CONSUL_HTTP_ADDR ("host:port" or "https://host:port"). */
  get agentAddress(): string {
    return this.client.agentAddress;
  }

  onReset(listener: () => void): void {
    this.listeners.push(listener);
  }

  fingerprint(reg: Registration): string {
    return this.build(reg).fingerprint;
  }

  async apply(changes: readonly Change[]): Promise<void> {
    this.assertOpen();
    // One change per id, the last one winning (a put then a delete of the same id: the delete).
    const last = new Map<string, Change>();
    for (const c of changes) {
      last.delete(idOf(c));
      last.set(idOf(c), c);
    }
    await runLimited(
      [...last.values()].map((c) => () => (c.op === 'put' ? this.put(c.reg) : this.remove(c.key))),
      this.concurrency,
    );
  }

  async snapshot(): Promise<Map<string, Observed>> {
    this.assertOpen();
    const started = Date.now();
    const [services, checks] = await Promise.all([this.client.agentServices(), this.client.agentChecks()]);
    const checksOf = new Map<string, AgentCheck[]>();
    for (const c of Object.values(checks)) {
      if (!c.ServiceID) continue;
      const list = checksOf.get(c.ServiceID) ?? [];
      list.push(c);
      checksOf.set(c.ServiceID, list);
    }
    const out = new Map<string, Observed>();
    for (const s of Object.values(services)) {
      if (s.Meta?.[META_EMPEROR_ID] !== this.emperorId) continue;
      const own = checksOf.get(s.ID) ?? [];
      const health = own.find((c) => c.CheckID === healthCheckId(s.ID));
      const live = own.find((c) => c.CheckID === livenessCheckId(s.ID));
      const key: RegistrationKey = { id: s.ID, type: s.Meta[META_TYPE] ?? '', name: s.Service };
      // Without both TTL checks (e.g. the old single-check layout) the service is not what we
      // write: a fingerprint nothing matches, so the registrar registers it again.
      out.set(s.ID, { key, fingerprint: health && live ? this.observedFingerprint(s, own, health, live) : `not-two-ttl-checks:${s.ID}` });
      // Ours but not heartbeated (registered before a restart of this emperor, say): keep it alive
      // as it is until the registrar re-puts or deletes it.
      if (health && live && isStatus(health.Status) && !this.tracked.has(s.ID) && (this.removedAt.get(s.ID) ?? -Infinity) < started) {
        this.tracked.set(s.ID, { defHash: '', status: health.Status, output: health.Output, liveOutput: live.Output, lastSentAt: 0, since: started });
      }
    }
    // Gone from the agent: the next put must register it again, not just update its check.
    for (const [id, t] of this.tracked) if (!out.has(id) && t.since < started) this.tracked.delete(id);
    for (const [id, at] of this.removedAt) if (at < started) this.removedAt.delete(id);
    return out;
  }

  /** Stop heartbeating and release connections. Never deregisters (the registrar does that first). */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      clearTimeout(this.heartbeatTimer);
      this.tracked.clear();
      this.client.close();
    }
    return Promise.resolve();
  }

  // ----- writes ----------------------------------------------------------------------------------

  private async put(reg: Registration): Promise<void> {
    const b = this.build(reg);
    const known = this.tracked.get(reg.id);
    let registered = false;
    const update = (): Promise<void> => this.sendChecks(reg.id, b.status, b.output, b.liveOutput);
    try {
      if (!known || known.defHash !== b.defHash) {
        await this.checkDatacenter();
        await this.client.registerService(b.body, { replaceExistingChecks: true });
        registered = true;
      }
      try {
        await update();
      } catch (err) {
        // We believed it registered, but the agent lost it (restart, removed by hand): register.
        if (registered || !isGone(err)) throw err;
        await this.client.registerService(b.body, { replaceExistingChecks: true });
        registered = true;
        await update();
      }
    } catch (err) {
      if (err instanceof ConsulError && err.kind === 'http' && err.status === 400) {
        // Consul will never take this definition: retrying cannot help. Anti-entropy re-offers it.
        this.warnOnce(`${reg.id}:400`, `${this.description}: Consul refused the registration of ${JSON.stringify(reg.id)}: ${err.body || err.message}`);
        return;
      }
      throw err;
    }
    const now = Date.now();
    this.tracked.set(reg.id, {
      defHash: b.defHash,
      status: b.status,
      output: b.output,
      liveOutput: b.liveOutput,
      lastSentAt: now,
      since: registered ? now : (known?.since ?? now),
    });
  }

  /** Set both TTL checks (which also restarts their TTLs): health as given, liveness passing. */
  private async sendChecks(id: string, status: CheckStatus, output: string, liveOutput: string): Promise<void> {
    await this.client.updateCheck(healthCheckId(id), status, output);
    await this.client.updateCheck(livenessCheckId(id), 'passing', liveOutput);
  }

  /**
   * Agent endpoints take no ?dc: a service lands in the datacenter of the agent it is registered
   * with. With --consul-dc set, say so (once per agent) when that is another datacenter.
   */
  private checkDatacenter(): Promise<void> {
    const want = this.cfg.dc;
    if (want === undefined) return Promise.resolve();
    const agent = this.client.agent;
    let check = this.dcChecks.get(agent);
    if (!check) {
      check = this.client.agentSelf().then(
        (self) => {
          const have: unknown = self.Config.Datacenter;
          if (typeof have === 'string' && have !== want) {
            this.log('warn', `${this.description}: the Consul agent at ${agent} is in datacenter ${have}, not ${want} (--consul-dc): services are registered in the agent's own datacenter`, {
              event: 'consul-datacenter-mismatch',
            });
          }
        },
        (err: unknown) => {
          // Unreachable (ask again next time) or refused (a token without agent:read): never a
          // reason not to register.
          if (!(err instanceof ConsulError && err.kind === 'http')) this.dcChecks.delete(agent);
          this.log('debug', `${this.description}: cannot read the datacenter of the agent at ${agent}: ${(err as Error).message}`);
        },
      );
      this.dcChecks.set(agent, check);
    }
    return check;
  }

  private async remove(key: RegistrationKey): Promise<void> {
    // Stop heartbeating first, so a heartbeat cannot race the deregistration into a false "lost".
    this.tracked.delete(key.id);
    this.removedAt.set(key.id, Date.now());
    // false: the agent does not have it — the goal state holds.
    await this.client.deregisterService(key.id);
  }

  // ----- heartbeats ------------------------------------------------------------------------------

  private scheduleHeartbeat(): void {
    if (this.closed) return;
    this.heartbeatTimer = setTimeout(() => {
      void this.heartbeat().finally(() => this.scheduleHeartbeat());
    }, this.heartbeatMs);
    // The emperor has other reasons to live; a forgotten adapter must not keep a process up.
    this.heartbeatTimer.unref();
  }

  /** Re-send both TTL checks' last status and output, unless a put just did. */
  private async heartbeat(): Promise<void> {
    const now = Date.now();
    const due = [...this.tracked].filter(([, t]) => now - t.lastSentAt >= this.heartbeatMs / 2);
    if (due.length === 0) return;
    const gone: string[] = [];
    let failure: unknown;
    let failures = 0;
    await runLimited(
      due.map(([id, t]) => async () => {
        if (this.closed || this.tracked.get(id) !== t) return;
        try {
          await this.sendChecks(id, t.status, t.output, t.liveOutput);
          t.lastSentAt = Date.now();
          this.heartbeatsSent++;
        } catch (err) {
          // Re-put or deregistered meanwhile: that change speaks for the service now.
          if (this.closed || this.tracked.get(id) !== t) return;
          if (isGone(err)) gone.push(id);
          else {
            failures++;
            failure ??= err;
          }
        }
      }),
      this.concurrency,
    );
    if (this.closed) return;
    if (gone.length > 0) {
      const which = gone.length === 1 ? JSON.stringify(gone[0]) : `${gone.length} services (e.g. ${JSON.stringify(gone[0])})`;
      this.reset(`the agent no longer has the check of ${which}: it was restarted, or the service was removed behind our back`);
    }
    if (failures > 0) {
      const t = Date.now();
      if (this.heartbeatFailingSince === null || t - this.lastHeartbeatWarn >= HEARTBEAT_WARN_EVERY_MS) {
        this.heartbeatFailingSince ??= t;
        this.lastHeartbeatWarn = t;
        const why = failure instanceof Error ? failure.message : String(failure);
        this.log('warn', `${this.description}: ${failures} health check heartbeat(s) failed: ${why}; the checks turn critical after ${goDuration(this.cfg.checkTtlMs)} without one`, {
          event: 'consul-heartbeat-failed',
        });
      }
    } else if (this.heartbeatFailingSince !== null) {
      this.heartbeatFailingSince = null;
      this.log('info', `${this.description}: health check heartbeats reach Consul again`, { event: 'consul-heartbeat-ok' });
    }
  }

  /** Everything we wrote may be gone: forget it and have the registrar re-apply the desired set. */
  private reset(reason: string): void {
    if (this.closed) return;
    this.tracked.clear();
    this.log('warn', `${this.description}: ${reason}; registering again`, { event: 'consul-reset' });
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.log('error', `${this.description}: reset listener failed: ${(err as Error).message}`);
      }
    }
  }

  // ----- what a registration becomes -------------------------------------------------------------

  private observedFingerprint(s: AgentService, own: readonly AgentCheck[], health: AgentCheck, live: AgentCheck): string {
    const observable = observableDigest({
      id: s.ID,
      name: s.Service,
      tags: s.Tags ?? [],
      address: s.Address ?? '',
      port: s.Port ?? 0,
      meta: s.Meta ?? {},
      checkIds: own.map((c) => c.CheckID),
    });
    return fingerprintOf(observable, health.Status, health.Output ?? '', live.Status);
  }

  private build(reg: Registration): Built {
    const cached = this.built.get(reg);
    if (cached) return cached;
    const every = goDuration(this.heartbeatMs);
    const healthCheck: CheckRegistration = {
      CheckID: healthCheckId(reg.id),
      Name: `emperor: vassal ${reg.vassal}`,
      Notes: `Aggregate health of vassal ${reg.vassal}, reported by its emperor every ${every}; never deregisters the service`,
      TTL: goDuration(this.cfg.checkTtlMs),
    };
    const livenessCheck: CheckRegistration = {
      CheckID: livenessCheckId(reg.id),
      Name: `emperor: vassal ${reg.vassal} is supervised`,
      Notes: `Passing while the emperor supervising vassal ${reg.vassal} heartbeats it (every ${every}); critical once it stopped, e.g. died`,
      TTL: goDuration(this.cfg.checkTtlMs),
      ...(this.cfg.deregisterCriticalAfterMs > 0 ? { DeregisterCriticalServiceAfter: goDuration(this.cfg.deregisterCriticalAfterMs) } : {}),
    };
    const natives = this.nativeChecks(reg);
    const meta = this.meta(reg);
    meta[META_DEFINITION] = sha(canonical([healthCheck, livenessCheck, natives])).slice(0, 16);
    const address = this.address(reg);
    const statusOf = new Map(reg.checks.map((c) => [c.name, c.status]));
    const body: ServiceRegistration = {
      ID: reg.id,
      Name: reg.name,
      Tags: [...reg.tags],
      Address: address,
      ...(reg.port !== null ? { Port: reg.port } : {}),
      Meta: meta,
      Checks: [
        // New checks start with the vassal's current health, and alive (Consul's default would be critical).
        { ...healthCheck, Status: reg.health },
        { ...livenessCheck, Status: 'passing' },
        ...natives.map((n) => {
          const s = statusOf.get(n.Name);
          return s ? { ...n, Status: s } : n;
        }),
      ],
    };
    const defHash = sha(canonical({ ...body, Checks: [healthCheck, livenessCheck, ...natives] }));
    const output = healthOutput(reg);
    const liveOutput = `vassal ${reg.vassal}${reg.pid > 0 ? ` (pid ${reg.pid})` : ''} is supervised by emperor ${this.emperorId}`;
    const observable = observableDigest({
      id: reg.id,
      name: reg.name,
      tags: reg.tags,
      address,
      port: reg.port ?? 0,
      meta,
      checkIds: body.Checks.map((c) => c.CheckID),
    });
    const built: Built = { body, defHash, status: reg.health, output, liveOutput, fingerprint: fingerprintOf(observable, reg.health, output, 'passing') };
    this.built.set(reg, built);
    return built;
  }

  /** An unspecified (bind-all) address means "this node": Consul then uses the node's address. */
  private address(reg: Registration): string {
    const a = reg.address.trim();
    if (a === '0.0.0.0' || a === '::' || a === '[::]') {
      this.warnOnce(`${reg.id}:address`, `${this.description}: ${JSON.stringify(reg.id)} has address ${a}, which Consul refuses: registering without an address (Consul uses the node's)`);
      return '';
    }
    return a;
  }

  /** The vassal's meta that Consul accepts, plus ours; what it refuses is dropped with a warning. */
  private meta(reg: Registration): Record<string, string> {
    const out: Record<string, string> = {
      [META_EMPEROR_ID]: this.emperorId,
      [META_VASSAL]: reg.vassal.slice(0, META_VALUE_MAX),
      [META_TYPE]: reg.type.slice(0, META_VALUE_MAX),
    };
    const room = META_MAX_PAIRS - OURS.size;
    let kept = 0;
    for (const [k, v] of Object.entries(reg.meta).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      let problem: string | undefined;
      if (OURS.has(k)) problem = 'is reserved by the emperor';
      else if (!META_KEY.test(k)) problem = 'may only contain letters, digits, "_" and "-"';
      else if (k.length > META_KEY_MAX) problem = `is longer than ${META_KEY_MAX} characters`;
      else if (k.startsWith('consul-')) problem = 'uses the prefix "consul-", reserved by Consul';
      else if (Buffer.byteLength(v) > META_VALUE_MAX) problem = `has a value longer than ${META_VALUE_MAX} bytes`;
      else if (kept >= room) problem = `is over Consul's limit of ${META_MAX_PAIRS} meta entries`;
      if (problem) {
        this.warnOnce(`${reg.id}:meta:${k}`, `${this.description}: not registering meta key ${JSON.stringify(k)} of ${JSON.stringify(reg.id)} in Consul: it ${problem}`);
        continue;
      }
      out[k] = v;
      kept++;
    }
    return out;
  }

  /** service.consul.native_checks: the vassal's http/tcp checks, run by the agent itself. */
  private nativeChecks(reg: Registration): CheckRegistration[] {
    const out: CheckRegistration[] = [];
    const used = new Set<string>([healthCheckId(reg.id), livenessCheckId(reg.id)]);
    for (const spec of reg.nativeChecks) {
      let target: Pick<CheckRegistration, 'HTTP' | 'TCP'>;
      if (spec.probe.kind === 'http') target = { HTTP: spec.probe.url };
      else if (spec.probe.kind === 'tcp') {
        const h = spec.probe.host;
        target = { TCP: `${h.includes(':') && !h.startsWith('[') ? `[${h}]` : h}:${spec.probe.port}` };
      } else continue;
      const base = `${healthCheckId(reg.id)}:${spec.name.replace(/[^A-Za-z0-9_.:-]+/g, '-') || 'check'}`;
      let checkId = base;
      for (let n = 2; used.has(checkId); n++) checkId = `${base}-${n}`;
      used.add(checkId);
      out.push({
        CheckID: checkId,
        Name: spec.name,
        Notes: `Check ${spec.name} of vassal ${reg.vassal}, run by the Consul agent`,
        ...target,
        Interval: goDuration(Math.max(1, spec.intervalMs)),
        Timeout: goDuration(Math.max(1, spec.timeoutMs)),
        SuccessBeforePassing: spec.successesBeforePassing,
        FailuresBeforeCritical: spec.failuresBeforeCritical,
      });
    }
    return out;
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log('warn', message, { event: 'consul-registration-adjusted' });
  }

  private assertOpen(): void {
    if (this.closed) throw new ConsulError('the Consul adapter is closed', 'closed');
  }
}
