// Consul helpers for apps and scripts, after the uWSGI Consul draft (services, service, KV,
// sessions): a typed wrapper over the one Consul client module. A vassal of an emperor that
// registers in Consul gets CONSUL_HTTP_ADDR (and EMPEROR_SERVICE_ID) in its environment, so
// `Consul.fromEnv()` reaches the same agent the emperor uses.
//
//   const consul = Consul.fromEnv();
//   const dbs = await consul.service('db', { passing: true });   // [{ address, port, ... }]
//   await consul.kvSet('config/feature', 'on');
//   consul.close();
import {
  ConsulClient,
  goDuration,
  type HealthEntry,
  type KVPair,
  type SessionCreateBody,
  type SessionEntry,
} from './client.js';
import { resolveConnection, type ConsulConnection, type ConsulConsistency, type Sourced } from './connection.js';

export { ConsulError, type ConsulErrorKind } from './client.js';
export { ConsulConfigError, type ConsulConnection, type ConsulConsistency } from './connection.js';

export type HealthStatus = 'passing' | 'warning' | 'critical';

export interface ConsulOptions {
  /** "host:port" (or "https://host:port"), or several for failover. Default: 127.0.0.1:8500. */
  readonly agent?: string | readonly string[];
  readonly scheme?: 'http' | 'https';
  /** CA certificate (PEM) for https: its contents... */
  readonly ca?: Buffer;
  /** ...or the file holding it. */
  readonly caFile?: string;
  /** ACL token (sent as X-Consul-Token). */
  readonly token?: string;
  readonly tokenFile?: string;
  /** Datacenter for every call that takes one (each call may override it). */
  readonly dc?: string;
  /** Consistency mode of the reads that support one. */
  readonly consistency?: ConsulConsistency;
  /** Deadline of each request attempt on one agent, ms (default 2000). */
  readonly timeoutMs?: number;
  /**
   * A connection resolved elsewhere (the emperor's commands resolve theirs from their flags, so
   * errors name the flag); the connection options above and the environment are then not read.
   */
  readonly connection?: ConsulConnection;
}

export interface CatalogService {
  readonly name: string;
  readonly tags: string[];
}

export interface ServiceInstance {
  readonly id: string;
  readonly name: string;
  /** The service's address, or its node's when the service has none. */
  readonly address: string;
  readonly port: number;
  /** "address:port" ("[v6]:port" for IPv6). */
  readonly location: string;
  readonly tags: string[];
  readonly meta: Record<string, string>;
  readonly node: string;
  readonly nodeAddress: string;
  /** Worst status of the instance's checks (node checks included). */
  readonly status: HealthStatus;
  readonly checks: Array<{ id: string; name: string; status: string; output: string }>;
}

export interface KVEntry {
  readonly key: string;
  readonly value: Buffer;
  /** The value decoded as UTF-8. */
  readonly text: string;
  readonly flags: bigint;
  /** The session holding the key's lock, if any. */
  readonly session: string | undefined;
  readonly lockIndex: number;
  readonly createIndex: number;
  /** Pass as `cas` to update only if nobody changed the key since. */
  readonly modifyIndex: number;
}

export interface SessionInfo {
  readonly id: string;
  readonly name: string;
  readonly node: string;
  readonly behavior: string;
  /** Consul's text, e.g. "30s"; '' without a TTL. */
  readonly ttl: string;
  readonly lockDelayMs: number;
  /** Node and service check IDs the session is tied to. */
  readonly checks: string[];
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export interface SessionCreateOptions {
  readonly name?: string;
  readonly node?: string;
  /** Go duration text ("15s") or milliseconds. */
  readonly lockDelay?: string | number;
  /** Node check IDs; [] ties the session to no check at all (not even serfHealth). */
  readonly checks?: readonly string[];
  /** Go duration text ("30s") or milliseconds; Consul takes 10s to 24h. */
  readonly ttl?: string | number;
  readonly behavior?: 'release' | 'delete';
  readonly dc?: string;
}

const WORST: Record<string, number> = { passing: 0, warning: 1, critical: 2 };

function hostPort(address: string, port: number): string {
  return `${address.includes(':') && !address.startsWith('[') ? `[${address}]` : address}:${port}`;
}

function toInstance(e: HealthEntry): ServiceInstance {
  const address = e.Service.Address || e.Node.Address;
  let worst: HealthStatus = 'passing';
  for (const c of e.Checks ?? []) {
    const s = c.Status in WORST ? (c.Status as HealthStatus) : 'critical';
    if (WORST[s]! > WORST[worst]!) worst = s;
  }
  return {
    id: e.Service.ID,
    name: e.Service.Service,
    address,
    port: e.Service.Port,
    location: hostPort(address, e.Service.Port),
    tags: e.Service.Tags ?? [],
    meta: e.Service.Meta ?? {},
    node: e.Node.Node,
    nodeAddress: e.Node.Address,
    status: worst,
    checks: (e.Checks ?? []).map((c) => ({ id: c.CheckID, name: c.Name, status: c.Status, output: c.Output })),
  };
}

function toEntry(p: KVPair): KVEntry {
  const value = p.Value === null ? Buffer.alloc(0) : Buffer.from(p.Value, 'base64');
  return {
    key: p.Key,
    value,
    text: value.toString('utf8'),
    flags: p.Flags,
    session: p.Session || undefined,
    lockIndex: p.LockIndex,
    createIndex: p.CreateIndex,
    modifyIndex: p.ModifyIndex,
  };
}

function toSession(s: SessionEntry): SessionInfo {
  const checks = [...(s.Checks ?? []), ...(s.NodeChecks ?? []), ...(s.ServiceChecks ?? []).map((c) => c.ID)];
  return {
    id: s.ID,
    name: s.Name,
    node: s.Node,
    behavior: s.Behavior,
    ttl: s.TTL,
    lockDelayMs: Math.round(s.LockDelay / 1e6),
    checks: [...new Set(checks)],
    createIndex: s.CreateIndex,
    modifyIndex: s.ModifyIndex,
  };
}

const durationText = (d: string | number): string => (typeof d === 'number' ? goDuration(d) : d);

/** Consul discovery, KV and session helpers over one agent connection (with failover). */
export class Consul {
  private readonly client: ConsulClient;

  /**
   * From `options`, and from `env` for what they leave out (nothing by default: pass
   * process.env, or use Consul.fromEnv()).
   */
  constructor(options: ConsulOptions = {}, env: Readonly<Record<string, string | undefined>> = {}) {
    this.client = new ConsulClient(options.connection ?? Consul.connection(options, env), { timeoutMs: options.timeoutMs });
  }

  /**
   * From the environment as the emperor's helpers read it — EMPEROR_CONSUL_AGENT, CONSUL_HTTP_ADDR,
   * CONSUL_HTTP_TOKEN(_FILE), CONSUL_CACERT, CONSUL_HTTP_SSL, EMPEROR_CONSUL_DC... — with
   * `options` taking precedence.
   */
  static fromEnv(env: Readonly<Record<string, string | undefined>> = process.env, options: ConsulOptions = {}): Consul {
    return new Consul(options, env);
  }

  private static connection(o: ConsulOptions, env: Readonly<Record<string, string | undefined>>): ConsulConnection {
    // Errors name the option ("agent: expected host:port..."), or the variable it came from.
    const option = (value: string | undefined, source: string): Sourced | undefined => (value === undefined ? undefined : { value, source });
    const agents = o.agent === undefined ? [] : (typeof o.agent === 'string' ? [o.agent] : [...o.agent]).map((value) => ({ value, source: 'agent' }));
    const conn = resolveConnection(
      {
        agents,
        agentVariables: ['EMPEROR_CONSUL_AGENT', 'CONSUL_HTTP_ADDR'],
        scheme: option(o.scheme, 'scheme'),
        caFile: option(o.caFile, 'caFile'),
        token: option(o.token, 'token'),
        tokenFile: option(o.tokenFile, 'tokenFile'),
        dc: option(o.dc, 'dc'),
        consistency: option(o.consistency, 'consistency'),
      },
      env,
    );
    return o.ca ? { ...conn, ca: o.ca } : conn;
  }

  /** The agent in use ("host:port"). */
  get agent(): string {
    return this.client.agent;
  }

  /** Every service in the catalog with its tags, by name. */
  async services(dc?: string): Promise<CatalogService[]> {
    const map = await this.client.catalogServices(dc);
    return Object.keys(map)
      .sort()
      .map((name) => ({ name, tags: [...(map[name] ?? [])] }));
  }

  /** Instances of a service (from the health endpoint); `tag` filters (all must match). */
  async service(name: string, opts: { tag?: string | readonly string[]; passing?: boolean; dc?: string } = {}): Promise<ServiceInstance[]> {
    const tags = opts.tag === undefined ? [] : typeof opts.tag === 'string' ? [opts.tag] : [...opts.tag];
    const entries = await this.client.healthService(name, { tags, passing: opts.passing, dc: opts.dc });
    return entries.map(toInstance);
  }

  /** One key (undefined when missing) or, with `recurse`, every key under the prefix ([] when none). */
  kvGet(key: string, opts?: { dc?: string; recurse?: false }): Promise<KVEntry | undefined>;
  kvGet(key: string, opts: { dc?: string; recurse: true }): Promise<KVEntry[]>;
  async kvGet(key: string, opts: { dc?: string; recurse?: boolean } = {}): Promise<KVEntry | KVEntry[] | undefined> {
    const pairs = await this.client.kvGet(key, { recurse: opts.recurse, dc: opts.dc });
    if (opts.recurse) return (pairs ?? []).map(toEntry);
    const first = pairs?.[0];
    return first ? toEntry(first) : undefined;
  }

  /** The value's bytes exactly as stored (?raw); undefined when the key is missing. */
  kvGetRaw(key: string, opts: { dc?: string } = {}): Promise<Buffer | undefined> {
    return this.client.kvGetRaw(key, opts);
  }

  /** Write a key. False when a `cas`, `acquire` or `release` did not take. */
  kvSet(
    key: string,
    value: string | Buffer,
    opts: { cas?: bigint | number; acquire?: string; release?: string; flags?: bigint | number; dc?: string } = {},
  ): Promise<boolean> {
    return this.client.kvPut(key, value, opts);
  }

  /** Delete a key (or, with `recurse`, a prefix). False when a `cas` did not take. */
  kvDel(key: string, opts: { recurse?: boolean; cas?: bigint | number; dc?: string } = {}): Promise<boolean> {
    return this.client.kvDelete(key, opts);
  }

  /** Create a session; returns its ID. */
  sessionCreate(opts: SessionCreateOptions = {}): Promise<string> {
    const body: SessionCreateBody = {};
    if (opts.name !== undefined) body.Name = opts.name;
    if (opts.node !== undefined) body.Node = opts.node;
    if (opts.lockDelay !== undefined) body.LockDelay = durationText(opts.lockDelay);
    if (opts.checks !== undefined) body.Checks = [...opts.checks];
    if (opts.ttl !== undefined) body.TTL = durationText(opts.ttl);
    if (opts.behavior !== undefined) body.Behavior = opts.behavior;
    return this.client.sessionCreate(body, opts.dc);
  }

  /** Destroy a session (releasing or deleting its locks per its behavior); idempotent. */
  sessionDestroy(id: string, opts: { dc?: string } = {}): Promise<boolean> {
    return this.client.sessionDestroy(id, opts.dc);
  }

  /** A session, or undefined when Consul does not know it (expired, destroyed). */
  async sessionInfo(id: string, opts: { dc?: string } = {}): Promise<SessionInfo | undefined> {
    const list = await this.client.sessionInfo(id, opts.dc);
    return list[0] ? toSession(list[0]) : undefined;
  }

  /** The sessions of a node. */
  async sessionNode(node: string, opts: { dc?: string } = {}): Promise<SessionInfo[]> {
    return (await this.client.sessionNode(node, opts.dc)).map(toSession);
  }

  /** Every session in the datacenter. */
  async sessionList(opts: { dc?: string } = {}): Promise<SessionInfo[]> {
    return (await this.client.sessionList(opts.dc)).map(toSession);
  }

  /** Renew a TTL session; undefined when Consul does not know it (it expired or was destroyed). */
  async sessionRenew(id: string, opts: { dc?: string } = {}): Promise<SessionInfo | undefined> {
    const s = await this.client.sessionRenew(id, opts.dc);
    return s ? toSession(s) : undefined;
  }

  /** Release connections. */
  close(): void {
    this.client.close();
  }
}
