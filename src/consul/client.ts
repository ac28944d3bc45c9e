// The one module that talks HTTP to Consul (the registry adapter, the helper commands and the
// library all go through it, so it can be swapped). Consul's documented HTTP API, called directly.
//
// Transport: node:http / node:https rather than global fetch, because fetch in Node 20 cannot take
// a custom CA without the undici package (--consul-cacert must work). Keep-alive agents; a
// per-attempt deadline; failover across the configured agents, sticking to the one that answered.
//
// Per Consul's docs, ?dc is sent only to endpoints that take it (catalog, health, KV, session:
// agent endpoints are local to the agent) and ?stale / ?consistent only to reads that support a
// consistency mode (catalog, health, KV get, session info/node/list).
//
// Errors are ConsulErrors: one line, with the agent, the request, Consul's status and message —
// never the token (it travels only in the X-Consul-Token header, and is masked anyway).
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import type { ConsulConnection } from './connection.js';

export const DEFAULT_TIMEOUT_MS = 2000;
/** Responses larger than this are refused (a catalog of many thousand services fits easily). */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

export type ConsulErrorKind =
  /** No agent answered (refused, reset, TLS failure...). Worth retrying, maybe elsewhere. */
  | 'unreachable'
  /**
   * Every agent tried accepted the connection but did not answer in time: busy (or frozen)
   * rather than gone. The registrar calls this slow (a warning), not down, until it lasts.
   */
  | 'slow'
  /** An agent answered with an error status: see `status` and `body`. */
  | 'http'
  /** The answer was not what the API documents (e.g. bad JSON). */
  | 'protocol'
  /** close() was called. */
  | 'closed';

/** One line, safe to log: the token never appears (and `cause` is never set). */
export class ConsulError extends Error {
  override readonly name = 'ConsulError';
  constructor(
    message: string,
    readonly kind: ConsulErrorKind,
    /** HTTP status when an agent answered. */
    readonly status: number | undefined = undefined,
    /** Consul's error text (the response body), trimmed. */
    readonly body: string = '',
    /** The agent that answered, or the last one tried. */
    readonly agent: string | undefined = undefined,
  ) {
    super(message);
  }

  /** Timed out rather than refused (see isSlowFailure in the registrar). */
  get slow(): boolean {
    return this.kind === 'slow';
  }
}

export type CheckStatusText = 'passing' | 'warning' | 'critical';

// ----- Consul's JSON shapes (the fields we read) ------------------------------------------------

export interface AgentService {
  ID: string;
  Service: string;
  Tags: string[] | null;
  Meta: Record<string, string> | null;
  Port: number;
  Address: string;
}

export interface AgentCheck {
  CheckID: string;
  Name: string;
  Status: string;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  Type?: string;
}

export interface AgentSelf {
  Config: { Datacenter: string; NodeName: string; [k: string]: unknown };
  [k: string]: unknown;
}

export interface CheckRegistration {
  CheckID: string;
  Name: string;
  Notes?: string;
  Status?: CheckStatusText;
  TTL?: string;
  HTTP?: string;
  TCP?: string;
  Interval?: string;
  Timeout?: string;
  SuccessBeforePassing?: number;
  FailuresBeforeCritical?: number;
  DeregisterCriticalServiceAfter?: string;
}

export interface ServiceRegistration {
  ID: string;
  Name: string;
  Tags: string[];
  Address: string;
  Port?: number;
  Meta: Record<string, string>;
  Checks: CheckRegistration[];
}

export interface HealthEntry {
  Node: { ID?: string; Node: string; Address: string; Datacenter?: string };
  Service: { ID: string; Service: string; Tags: string[] | null; Address: string; Port: number; Meta: Record<string, string> | null };
  Checks: Array<{ CheckID: string; Name: string; Status: string; Output: string; ServiceID: string }>;
}

export interface KVPair {
  Key: string;
  /** base64, null for an empty value. */
  Value: string | null;
  /** uint64: parsed as a bigint so large flags survive. */
  Flags: bigint;
  Session?: string;
  LockIndex: number;
  CreateIndex: number;
  ModifyIndex: number;
}

export interface SessionEntry {
  ID: string;
  Name: string;
  Node: string;
  /** Nanoseconds. */
  LockDelay: number;
  Behavior: string;
  TTL: string;
  NodeChecks?: string[] | null;
  ServiceChecks?: Array<{ ID: string; Namespace?: string }> | null;
  Checks?: string[] | null;
  CreateIndex: number;
  ModifyIndex: number;
}

export interface SessionCreateBody {
  Name?: string;
  Node?: string;
  LockDelay?: string;
  /** Deprecated by Consul in favour of NodeChecks, still accepted; [] means "no checks at all". */
  Checks?: string[];
  Behavior?: 'release' | 'delete';
  TTL?: string;
}

// ----- requests ---------------------------------------------------------------------------------

type QueryValue = string | number | bigint | boolean | readonly string[] | undefined;

interface Call {
  readonly method: 'GET' | 'PUT' | 'DELETE';
  /** Starts with /v1/, segments already encoded. */
  readonly path: string;
  /** `true` sends a bare flag (?recurse); false/undefined leave the parameter out. */
  readonly query?: Readonly<Record<string, QueryValue>>;
  readonly body?: string | Buffer;
  /** The endpoint takes ?dc: this value (undefined = the configured one, if any). */
  readonly dc?: { readonly value: string | undefined };
  /** The endpoint is a read with consistency modes: apply the configured one. */
  readonly consistency?: boolean;
  /** Statuses besides 2xx handed back to the caller instead of thrown. */
  readonly accept?: readonly number[];
}

interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly agent: string;
}

/** A transport failure of one attempt on one agent. */
class AttemptError extends Error {
  constructor(
    readonly reason: string,
    readonly retrySameAgent: boolean,
    /** The agent took the request but gave no answer within the deadline. */
    readonly timedOut = false,
  ) {
    super(reason);
  }
}

export interface ConsulClientOptions {
  /** Deadline of each attempt on one agent. */
  readonly timeoutMs?: number;
}

const encodeSeg = (s: string): string => encodeURIComponent(s);

/** A KV key as a path: leading slashes dropped (as the consul CLI does), each segment encoded. */
function kvPath(key: string): string {
  return '/v1/kv/' + key.replace(/^\/+/, '').split('/').map(encodeSeg).join('/');
}

function buildQuery(q: Readonly<Record<string, QueryValue>>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === false) continue;
    if (v === true) parts.push(encodeURIComponent(k));
    else if (Array.isArray(v)) for (const item of v as readonly string[]) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(item)}`);
    else parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  }
  return parts.length > 0 ? `?${parts.join('&')}` : '';
}

function transportReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
      return 'connection reset';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'unknown host';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'no route to host';
    case 'ETIMEDOUT':
      return 'connection timed out';
    default:
      break;
  }
  const tls = /certificate|self[- ]signed|SSL|TLS|wrong version number|handshake/i;
  if (tls.test(err.message) || (err.code !== undefined && /CERT|SSL|TLS|EPROTO/.test(err.code))) {
    return `TLS failure (${err.code ?? err.message}): check --consul-scheme and --consul-cacert`;
  }
  return err.message || err.code || 'transport error';
}

/** Consul's error text: first line, bounded. */
function firstLine(body: Buffer | string): string {
  const text = (typeof body === 'string' ? body : body.toString('utf8')).trim();
  const line = text.split('\n')[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}

/**
 * JSON with Consul's uint64 KV `Flags` kept exact: JSON.parse would round values above 2^53.
 * Keys and values are JSON strings (a `"Flags":` inside one is escaped as `\"Flags\":`), so the
 * rewrite only ever touches the field itself.
 */
function parseKvJson(text: string): KVPair[] {
  const quoted = text.replace(/"Flags":\s*(\d+)/g, '"Flags":"$1"');
  const raw = JSON.parse(quoted) as Array<Omit<KVPair, 'Flags'> & { Flags: string }>;
  return raw.map((p) => ({ ...p, Flags: BigInt(p.Flags ?? '0') }));
}

/** A Consul agent HTTP client with failover. One instance per configuration; close() when done. */
export class ConsulClient {
  private readonly agents: readonly string[];
  private current = 0;
  private lastGood: string | undefined;
  private readonly changeListeners: Array<(from: string, to: string) => void> = [];
  private readonly httpAgent: http.Agent;
  private readonly timeoutMs: number;
  private closed = false;

  constructor(
    private readonly conn: ConsulConnection,
    opts: ConsulClientOptions = {},
  ) {
    if (conn.agents.length === 0) throw new RangeError('ConsulClient needs at least one agent');
    this.agents = [...conn.agents];
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.httpAgent =
      conn.scheme === 'https'
        ? new https.Agent({ keepAlive: true, maxSockets: 16, ...(conn.ca ? { ca: conn.ca } : {}) })
        : new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  /** The agent requests go to now ("host:port"): the last one that answered, or the first. */
  get agent(): string {
    return this.agents[this.current]!;
  }

  /** The current agent as CONSUL_HTTP_ADDR wants it: "host:port", or "https://host:port". */
  get agentAddress(): string {
    return this.conn.scheme === 'https' ? `https://${this.agent}` : this.agent;
  }

  /** For logs: agents, scheme, dc, whether a token is set. */
  get description(): string {
    return this.conn.description;
  }

  /**
   * Called when a request was answered by another agent than the previous answer came from:
   * whatever was registered on the old agent is not on the new one.
   */
  onAgentChange(listener: (from: string, to: string) => void): void {
    this.changeListeners.push(listener);
  }

  close(): void {
    this.closed = true;
    this.httpAgent.destroy();
  }

  // ----- agent endpoints (local to the agent: no ?dc, no consistency modes) ----------------------

  async agentSelf(): Promise<AgentSelf> {
    return this.json<AgentSelf>(await this.call({ method: 'GET', path: '/v1/agent/self' }));
  }

  async agentServices(): Promise<Record<string, AgentService>> {
    return this.json<Record<string, AgentService>>(await this.call({ method: 'GET', path: '/v1/agent/services' }));
  }

  async agentChecks(): Promise<Record<string, AgentCheck>> {
    return this.json<Record<string, AgentCheck>>(await this.call({ method: 'GET', path: '/v1/agent/checks' }));
  }

  /** PUT /v1/agent/service/register; replaceExistingChecks drops the service's checks not in `def`. */
  async registerService(def: ServiceRegistration, opts: { replaceExistingChecks?: boolean } = {}): Promise<void> {
    await this.call({
      method: 'PUT',
      path: '/v1/agent/service/register',
      query: { 'replace-existing-checks': opts.replaceExistingChecks ? 'true' : undefined },
      body: JSON.stringify(def),
    });
  }

  /** False when the agent does not know the service (already gone): deregistering is idempotent. */
  async deregisterService(id: string): Promise<boolean> {
    const r = await this.call({ method: 'PUT', path: `/v1/agent/service/deregister/${encodeSeg(id)}`, accept: [404] });
    return r.status !== 404;
  }

  /** PUT /v1/agent/check/update/:id — sets a TTL check's status and output and restarts its TTL. */
  async updateCheck(checkId: string, status: CheckStatusText, output: string): Promise<void> {
    await this.call({ method: 'PUT', path: `/v1/agent/check/update/${encodeSeg(checkId)}`, body: JSON.stringify({ Status: status, Output: output }) });
  }

  // ----- catalog and health ----------------------------------------------------------------------

  /** Service name → tags, from the catalog. */
  async catalogServices(dc?: string): Promise<Record<string, string[]>> {
    return this.json<Record<string, string[]>>(await this.call({ method: 'GET', path: '/v1/catalog/services', dc: { value: dc }, consistency: true }));
  }

  async healthService(name: string, opts: { tags?: readonly string[]; passing?: boolean; dc?: string } = {}): Promise<HealthEntry[]> {
    const r = await this.call({
      method: 'GET',
      path: `/v1/health/service/${encodeSeg(name)}`,
      query: { tag: opts.tags && opts.tags.length > 0 ? opts.tags : undefined, passing: opts.passing === true },
      dc: { value: opts.dc },
      consistency: true,
    });
    return this.json<HealthEntry[]>(r);
  }

  // ----- KV --------------------------------------------------------------------------------------

  /** The entry (or, with recurse, the entries under the prefix); undefined when there is none. */
  async kvGet(key: string, opts: { recurse?: boolean; dc?: string } = {}): Promise<KVPair[] | undefined> {
    const r = await this.call({ method: 'GET', path: kvPath(key), query: { recurse: opts.recurse === true }, dc: { value: opts.dc }, consistency: true, accept: [404] });
    if (r.status === 404) return undefined;
    try {
      return parseKvJson(r.body.toString('utf8'));
    } catch {
      throw new ConsulError(`GET ${kvPath(key)} on Consul agent ${r.agent}: the answer is not the JSON the API documents`, 'protocol', r.status, '', r.agent);
    }
  }

  /** The value's bytes (?raw), undefined when the key does not exist. */
  async kvGetRaw(key: string, opts: { dc?: string } = {}): Promise<Buffer | undefined> {
    const r = await this.call({ method: 'GET', path: kvPath(key), query: { raw: true }, dc: { value: opts.dc }, consistency: true, accept: [404] });
    return r.status === 404 ? undefined : r.body;
  }

  /** PUT /v1/kv/:key; false when a cas/acquire/release did not take. */
  async kvPut(
    key: string,
    value: Buffer | string,
    opts: { cas?: bigint | number; acquire?: string; release?: string; flags?: bigint | number; dc?: string } = {},
  ): Promise<boolean> {
    const r = await this.call({
      method: 'PUT',
      path: kvPath(key),
      query: { cas: opts.cas, acquire: opts.acquire, release: opts.release, flags: opts.flags },
      body: value,
      dc: { value: opts.dc },
    });
    return this.bool(r);
  }

  /** DELETE /v1/kv/:key; false when a cas did not take. */
  async kvDelete(key: string, opts: { recurse?: boolean; cas?: bigint | number; dc?: string } = {}): Promise<boolean> {
    const r = await this.call({ method: 'DELETE', path: kvPath(key), query: { recurse: opts.recurse === true, cas: opts.cas }, dc: { value: opts.dc } });
    return this.bool(r);
  }

  // ----- sessions --------------------------------------------------------------------------------

  async sessionCreate(body: SessionCreateBody, dc?: string): Promise<string> {
    const r = await this.call({ method: 'PUT', path: '/v1/session/create', body: JSON.stringify(body), dc: { value: dc } });
    const id = this.json<{ ID?: unknown }>(r).ID;
    if (typeof id !== 'string') throw new ConsulError(`PUT /v1/session/create on Consul agent ${r.agent}: no session ID in the answer`, 'protocol', r.status, '', r.agent);
    return id;
  }

  async sessionDestroy(id: string, dc?: string): Promise<boolean> {
    return this.bool(await this.call({ method: 'PUT', path: `/v1/session/destroy/${encodeSeg(id)}`, dc: { value: dc } }));
  }

  async sessionInfo(id: string, dc?: string): Promise<SessionEntry[]> {
    return this.sessions(await this.call({ method: 'GET', path: `/v1/session/info/${encodeSeg(id)}`, dc: { value: dc }, consistency: true }));
  }

  async sessionNode(node: string, dc?: string): Promise<SessionEntry[]> {
    return this.sessions(await this.call({ method: 'GET', path: `/v1/session/node/${encodeSeg(node)}`, dc: { value: dc }, consistency: true }));
  }

  async sessionList(dc?: string): Promise<SessionEntry[]> {
    return this.sessions(await this.call({ method: 'GET', path: '/v1/session/list', dc: { value: dc }, consistency: true }));
  }

  /** The renewed session, or undefined when Consul does not know it (404). */
  async sessionRenew(id: string, dc?: string): Promise<SessionEntry | undefined> {
    const r = await this.call({ method: 'PUT', path: `/v1/session/renew/${encodeSeg(id)}`, dc: { value: dc }, accept: [404] });
    if (r.status === 404) return undefined;
    return this.sessions(r)[0];
  }

  // ----- plumbing --------------------------------------------------------------------------------

  private sessions(r: Reply): SessionEntry[] {
    // Consul answers null rather than [] in some versions when there is nothing.
    return this.json<SessionEntry[] | null>(r) ?? [];
  }

  private json<T>(r: Reply): T {
    try {
      return JSON.parse(r.body.toString('utf8')) as T;
    } catch {
      throw new ConsulError(`Consul agent ${r.agent}: the answer is not the JSON the API documents`, 'protocol', r.status, '', r.agent);
    }
  }

  private bool(r: Reply): boolean {
    const text = r.body.toString('utf8').trim();
    if (text === 'true') return true;
    if (text === 'false') return false;
    throw new ConsulError(`Consul agent ${r.agent}: expected true or false, got ${JSON.stringify(firstLine(text))}`, 'protocol', r.status, '', r.agent);
  }

  /** Mask the token (and basic auth) wherever Consul might have echoed it. */
  private mask(text: string): string {
    let out = text;
    for (const s of [this.conn.token?.reveal(), this.conn.basicAuth?.reveal()]) {
      if (s && s.length >= 3) out = out.split(s).join('[redacted]');
    }
    return out;
  }

  private async call(c: Call): Promise<Reply> {
    if (this.closed) throw new ConsulError('the Consul client is closed', 'closed');
    const query: Record<string, QueryValue> = { ...(c.query ?? {}) };
    if (c.dc) query.dc = c.dc.value ?? this.conn.dc;
    if (c.consistency && this.conn.consistency !== 'default') query[this.conn.consistency] = true;
    const target = c.path + buildQuery(query);

    const n = this.agents.length;
    const start = this.current;
    const reasons: string[] = [];
    let allTimedOut = true;
    for (let i = 0; i < n; i++) {
      if (this.closed) throw new ConsulError('the Consul client is closed', 'closed');
      const idx = (start + i) % n;
      const agent = this.agents[idx]!;
      let reply: Reply;
      try {
        reply = await this.attempt(agent, c, target);
      } catch (err) {
        if (!(err instanceof AttemptError)) throw err;
        reasons.push(`${agent}: ${err.reason}`);
        allTimedOut &&= err.timedOut;
        continue;
      }
      this.answered(idx, agent);
      if ((reply.status >= 200 && reply.status < 300) || c.accept?.includes(reply.status)) return reply;
      throw this.httpError(c, reply);
    }
    const tried = n === 1 ? `the Consul agent at ${reasons[0]}` : `any Consul agent (${reasons.join('; ')})`;
    const last = this.agents[(start + n - 1) % n];
    if (allTimedOut) {
      const who = n === 1 ? `the Consul agent at ${this.agents[start]}` : `none of the Consul agents (${this.agents.join(', ')})`;
      throw new ConsulError(this.mask(`${who} did not answer in time (within ${this.timeoutMs} ms): busy, or frozen`), 'slow', undefined, '', last);
    }
    throw new ConsulError(this.mask(`cannot reach ${tried}`), 'unreachable', undefined, '', last);
  }

  private answered(idx: number, agent: string): void {
    this.current = idx;
    const previous = this.lastGood;
    this.lastGood = agent;
    if (previous !== undefined && previous !== agent) {
      for (const l of this.changeListeners) l(previous, agent);
    }
  }

  private httpError(c: Call, r: Reply): ConsulError {
    const body = this.mask(firstLine(r.body));
    let message = `${c.method} ${c.path} on Consul agent ${r.agent}: ${r.status}${body ? ` ${body}` : ''}`;
    if (r.status === 403) message += ' (check the ACL token: --consul-token-file, EMPEROR_CONSUL_TOKEN or CONSUL_HTTP_TOKEN)';
    return new ConsulError(this.mask(message), 'http', r.status, body, r.agent);
  }

  /** One request on one agent; a stale keep-alive socket gets one more try on the same agent. */
  private async attempt(agent: string, c: Call, target: string): Promise<Reply> {
    try {
      return await this.once(agent, c, target);
    } catch (err) {
      if (err instanceof AttemptError && err.retrySameAgent) return this.once(agent, c, target);
      throw err;
    }
  }

  private once(agent: string, c: Call, target: string): Promise<Reply> {
    const m = /^\[?(.*?)\]?:(\d+)$/.exec(agent);
    const host = m?.[1] ?? agent;
    const port = Number(m?.[2] ?? 8500);
    const headers: Record<string, string> = { 'User-Agent': 'emperor', Accept: 'application/json' };
    if (this.conn.token) headers['X-Consul-Token'] = this.conn.token.reveal();
    if (this.conn.basicAuth) headers.Authorization = `Basic ${Buffer.from(this.conn.basicAuth.reveal()).toString('base64')}`;
    const body = c.body === undefined ? undefined : typeof c.body === 'string' ? Buffer.from(c.body) : c.body;
    if (body !== undefined || c.method !== 'GET') headers['Content-Length'] = String(body?.length ?? 0);
    const mod = this.conn.scheme === 'https' ? https : http;

    return new Promise<Reply>((resolve, reject) => {
      let settled = false;
      const finish = (err: AttemptError | undefined, reply?: Reply): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(reply!);
      };
      const req = mod.request({ host, port, method: c.method, path: target, headers, agent: this.httpAgent }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy();
            finish(new AttemptError(`answer larger than ${MAX_RESPONSE_BYTES} bytes`, false));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (err: NodeJS.ErrnoException) => finish(new AttemptError(transportReason(err), false)));
        res.on('close', () => {
          if (!res.complete) finish(new AttemptError('connection closed mid-answer', false));
        });
        res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), agent }));
      });
      const timer = setTimeout(() => {
        finish(new AttemptError(`no answer within ${this.timeoutMs} ms`, false, true));
        req.destroy();
      }, this.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        // A keep-alive socket the agent closed meanwhile: the request never reached it.
        const stale = req.reusedSocket && err.code === 'ECONNRESET';
        finish(new AttemptError(transportReason(err), stale));
      });
      req.end(body);
    });
  }
}

/** Go duration text for a whole number of milliseconds, as Consul reads durations ("30s", "1500ms"). */
export function goDuration(ms: number): string {
  const whole = Math.max(0, Math.round(ms));
  return whole % 1000 === 0 ? `${whole / 1000}s` : `${whole}ms`;
}
