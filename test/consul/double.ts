/**
 * A test double of a Consul agent's HTTP API (a single dev-mode server agent: it is its own
 * catalog, KV store and session server). Only the endpoints listed in test/consul/DOUBLE.md are
 * served; their status codes, bodies, headers and quirks follow Consul's API docs and sources, and
 * every deliberate difference is listed there too.
 *
 * ```ts
 * const consul = await startConsulDouble({ aclToken: 'secret' });
 * // point the code under test at consul.url ("http://127.0.0.1:PORT") / consul.address
 * await consul.stop();   // agent down (state kept)
 * await consul.start();  // agent restarted: local services and checks are gone, KV and sessions stay
 * consul.services();     // what is registered right now, with timestamps
 * consul.requests;       // every request received, in order
 * ```
 *
 * Nothing in src/ may import this file.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import { EventEmitter } from 'node:events';
import { createHash, randomUUID } from 'node:crypto';
import { formatGoDuration, GoDurationError, parseGoDuration } from './goduration.js';

export type HealthStatus = 'passing' | 'warning' | 'critical';

export interface ConsulDoubleOptions {
  /** TCP port on 127.0.0.1; default: a free one. */
  port?: number;
  /** When set, ACLs are enforced and this is the only (management) token. */
  aclToken?: string;
  /** Node name (Consul's default is the host name, and so is the double's). */
  nodeName?: string;
  /** Datacenter name; default "dc1". */
  datacenter?: string;
  /** Consul's `session_ttl_min` server option. Consul defaults to 10s; the double to 100ms. */
  sessionTTLMin?: string;
}

export interface RecordedRequest {
  method: string;
  /** Decoded path, without the query string. */
  path: string;
  query: URLSearchParams;
  /** As Node gives them: lower-case names (so `headers['x-consul-token']`). */
  headers: IncomingHttpHeaders;
  body: string;
  /** Date.now() when the request (with its body) was received. */
  at: number;
}

export interface RecordedResponse {
  request: RecordedRequest;
  status: number;
  body: string;
  at: number;
}

export interface ServiceSnapshot {
  ID: string;
  Service: string;
  Tags: string[];
  Meta: Record<string, string>;
  Port: number;
  Address: string;
  EnableTagOverride: boolean;
  Weights: { Passing: number; Warning: number };
  Kind: string;
  CheckIDs: string[];
  CreateIndex: number;
  ModifyIndex: number;
  registeredAt: number;
  updatedAt: number;
}

export interface CheckSnapshot {
  CheckID: string;
  Name: string;
  Status: HealthStatus;
  Output: string;
  Notes: string;
  ServiceID: string;
  ServiceName: string;
  Type: string;
  TTL: string;
  Interval: string;
  Timeout: string;
  HTTP: string;
  TCP: string;
  DeregisterCriticalServiceAfter: string;
  CreateIndex: number;
  ModifyIndex: number;
  registeredAt: number;
  statusChangedAt: number;
  /** Date.now() when the check last became critical, null while it is not critical. */
  criticalSince: number | null;
}

export interface KVSnapshot {
  Key: string;
  Value: Buffer;
  Flags: bigint;
  Session: string;
  LockIndex: number;
  CreateIndex: number;
  ModifyIndex: number;
}

export interface SessionSnapshot {
  ID: string;
  Name: string;
  Node: string;
  Behavior: 'release' | 'delete';
  TTL: string;
  LockDelayNs: number;
  CheckIDs: string[];
  CreateIndex: number;
  ModifyIndex: number;
  createdAt: number;
  /** When the servers will invalidate it (2 x TTL after the last create/renew), null without TTL. */
  expiresAt: number | null;
}

/**
 * Events on `double.events`:
 * - `request` (RecordedRequest): a request arrived (body read, before it is handled)
 * - `response` (RecordedResponse): a response was sent
 * - `service-registered` ({ ID, Service }) / `service-deregistered` ({ ID, Service, reason, CheckID? })
 *   with reason 'api' | 'critical' (DeregisterCriticalServiceAfter) | 'restart' | 'reset'
 * - `check-status` ({ CheckID, ServiceID, Status, Output })
 * - `session-invalidated` ({ ID, reason }) with reason 'destroy' | 'ttl' | 'check' | 'reset'
 */
export interface ConsulDouble {
  /** "127.0.0.1:PORT" */
  readonly address: string;
  /** "http://127.0.0.1:PORT" */
  readonly url: string;
  readonly port: number;
  readonly nodeName: string;
  readonly datacenter: string;
  readonly running: boolean;
  /** The current Raft-like index (bumped by every write). */
  readonly index: number;
  readonly requests: RecordedRequest[];
  readonly events: EventEmitter;
  /** Close the listener and every connection; state is kept. */
  stop(): Promise<void>;
  /** Listen again on the same port: an agent restart, which loses agent-local services and checks. */
  start(): Promise<void>;
  /** Forget everything (services, checks, KV, sessions, requests) as a brand-new dev agent would. */
  reset(): void;
  services(): ServiceSnapshot[];
  checks(): CheckSnapshot[];
  kv(): KVSnapshot[];
  sessions(): SessionSnapshot[];
}

const VERSION = '1.20.0';
const NODE_ADDRESS = '127.0.0.1';
const SERF_CHECK_ID = 'serfHealth';
const SESSION_TTL_MAX_NS = 86400e9;
const SESSION_TTL_MULTIPLIER = 2;
const MAX_LOCK_DELAY_NS = 60e9;
const LOCK_DELAY_MIN_THRESHOLD = 1000;
const DEFAULT_LOCK_DELAY_NS = 15e9;
const KV_MAX_VALUE_SIZE = 512 * 1024;
const DEFAULT_OUTPUT_MAX_SIZE = 4096;
const DEFAULT_WAIT_MS = 5 * 60_000;
const MAX_WAIT_MS = 10 * 60_000;
const ANONYMOUS_SUFFIX = '. The anonymous token is used implicitly when a request does not specify a token.';

type Obj = Record<string, unknown>;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string | Buffer;
}

interface Ctx {
  method: string;
  path: string;
  /** The part of the path after the route's pattern (the ID, key or name). */
  rest: string;
  query: URLSearchParams;
  body: Buffer;
  headers: IncomingHttpHeaders;
  res: ServerResponse;
  /** Response headers collected while handling (X-Consul-Index and friends). */
  out: Record<string, string>;
}

interface Route {
  pattern: string;
  prefix: boolean;
  methods: string[];
  handle: (ctx: Ctx) => Reply | Promise<Reply>;
}

interface QueryOpts {
  dc: string;
  stale: boolean;
  consistent: boolean;
  index: number;
  waitMs: number;
}

interface CheckSpec {
  checkId: string;
  name: string;
  status: string;
  notes: string;
  serviceId: string;
  ttlNs: number;
  intervalNs: number;
  timeoutNs: number;
  dcsaNs: number;
  http: string;
  method: string;
  header: Record<string, string[]> | null;
  body: string;
  tlsServerName: string;
  tlsSkipVerify: boolean;
  tcp: string;
  udp: string;
  grpc: string;
  h2ping: string;
  osService: string;
  dockerContainerId: string;
  args: string[];
  aliasNode: string;
  aliasService: string;
  outputMaxSize: number;
  successBeforePassing: number;
  failuresBeforeCritical: number;
  failuresBeforeWarning: number;
}

interface ServiceRec {
  id: string;
  name: string;
  tags: string[] | null;
  address: string;
  port: number;
  meta: Record<string, string> | null;
  enableTagOverride: boolean;
  weights: { Passing: number; Warning: number };
  taggedAddresses: Record<string, { Address: string; Port: number }>;
  kind: string;
  createIndex: number;
  modifyIndex: number;
  registeredAt: number;
  updatedAt: number;
}

interface CheckRec {
  id: string;
  name: string;
  status: HealthStatus;
  output: string;
  notes: string;
  serviceId: string;
  serviceName: string;
  serviceTags: string[] | null;
  type: string;
  spec: CheckSpec;
  createIndex: number;
  modifyIndex: number;
  registeredAt: number;
  statusChangedAt: number;
  criticalSince: number | null;
  lastTtlOutput: string;
  successes: number;
  failures: number;
  generation: number;
  ttlTimer?: NodeJS.Timeout;
  runTimer?: NodeJS.Timeout;
  reapTimer?: NodeJS.Timeout;
}

interface KVEntry {
  key: string;
  value: Buffer;
  flags: bigint;
  session: string;
  lockIndex: number;
  createIndex: number;
  modifyIndex: number;
}

interface SessionRec {
  id: string;
  name: string;
  node: string;
  lockDelayNs: number;
  behavior: 'release' | 'delete';
  ttl: string;
  ttlNs: number;
  nodeChecks: string[];
  serviceChecks: { ID: string; Namespace: string }[] | null;
  checks: string[] | null;
  createIndex: number;
  modifyIndex: number;
  createdAt: number;
  expiresAt: number | null;
  timer?: NodeJS.Timeout;
}

type Level = 'read' | 'write';

interface Authz {
  require(resource: string, level: Level, name?: string): void;
}

// ---------------------------------------------------------------------------------------------
// Request-body decoding, with Go's encoding/json leniency on key case (and snake_case aliases).

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function normKey(k: string): string {
  return k.toLowerCase().replace(/_/g, '');
}

function field(o: Obj, ...names: string[]): unknown {
  const wanted = new Set(names.map(normKey));
  for (const [k, v] of Object.entries(o)) if (wanted.has(normKey(k))) return v;
  return undefined;
}

function has(o: Obj, ...names: string[]): boolean {
  const wanted = new Set(names.map(normKey));
  return Object.keys(o).some((k) => wanted.has(normKey(k)));
}

function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'object';
  return typeof v;
}

function decodeError(fieldName: string, goType: string, v: unknown): HttpError {
  return new HttpError(
    400,
    `Request decode failed: json: cannot unmarshal ${jsonKind(v)} into Go struct field .${fieldName} of type ${goType}`,
  );
}

function getStr(o: Obj, name: string, ...aliases: string[]): string {
  const v = field(o, name, ...aliases);
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw decodeError(name, 'string', v);
  return v;
}

function getInt(o: Obj, name: string): number {
  const v = field(o, name);
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw decodeError(name, 'int', v);
  return v;
}

function getBool(o: Obj, name: string): boolean {
  const v = field(o, name);
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw decodeError(name, 'bool', v);
  return v;
}

function getStrArr(o: Obj, name: string, ...aliases: string[]): string[] | null {
  const v = field(o, name, ...aliases);
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw decodeError(name, '[]string', v);
  return v;
}

function getStrMap(o: Obj, name: string): Record<string, string> | null {
  const v = field(o, name);
  if (v === undefined || v === null) return null;
  if (!isObj(v) || !Object.values(v).every((x) => typeof x === 'string')) throw decodeError(name, 'map[string]string', v);
  return { ...(v as Record<string, string>) };
}

/** A Go duration field: a string ("10s") or a number of nanoseconds. */
function getDuration(o: Obj, name: string, ...aliases: string[]): number {
  const v = field(o, name, ...aliases);
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number') return Math.trunc(v);
  if (typeof v !== 'string') throw decodeError(name, 'time.Duration', v);
  try {
    return parseGoDuration(v);
  } catch (err) {
    if (err instanceof GoDurationError) throw new HttpError(400, `Request decode failed: ${err.message}`);
    throw err;
  }
}

function decodeJson(body: Buffer): unknown {
  const text = body.toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'Request decode failed: EOF');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(400, `Request decode failed: ${(err as Error).message}`);
  }
}

function decodeObject(body: Buffer, goType: string): Obj {
  const v = decodeJson(body);
  if (!isObj(v)) {
    throw new HttpError(400, `Request decode failed: json: cannot unmarshal ${jsonKind(v)} into Go value of type ${goType}`);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

const BIGINT_MARK = '\u0000bigint:';

function toJson(value: unknown, pretty: boolean): string {
  const text = JSON.stringify(
    value,
    (_key: string, v: unknown): unknown => (typeof v === 'bigint' ? `${BIGINT_MARK}${v.toString()}` : v),
    pretty ? 4 : undefined,
  );
  return text.replace(/"\\u0000bigint:(\d+)"/g, '$1') + (pretty ? '\n' : '');
}

function textReply(status: number, body: string, headers: Record<string, string> = {}): Reply {
  return { status, headers: { 'Content-Type': 'text/plain; charset=utf-8', ...headers }, body };
}

function isStatus(s: string): s is HealthStatus {
  return s === 'passing' || s === 'warning' || s === 'critical';
}

function goQuote(s: string): string {
  return JSON.stringify(s);
}

/** Go's url.Values.Encode: keys sorted, values in order. */
function encodeQuery(q: URLSearchParams): string {
  const keys = [...new Set([...q.keys()])].sort();
  const parts: string[] = [];
  for (const k of keys) for (const v of q.getAll(k)) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.join('&');
}

/** strconv.ParseUint(s, 10, 64) with Go's error text. */
function parseUint(s: string): bigint {
  if (!/^\d+$/.test(s)) throw new HttpError(500, `strconv.ParseUint: parsing ${goQuote(s)}: invalid syntax`);
  const n = BigInt(s);
  if (n > 18446744073709551615n) throw new HttpError(500, `strconv.ParseUint: parsing ${goQuote(s)}: value out of range`);
  return n;
}

/** strconv.ParseBool. */
function parseGoBool(s: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return undefined;
}

function splitHostPort(addr: string): { host: string; port: number } | undefined {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(addr);
  if (bracketed) return { host: bracketed[1] ?? '', port: Number(bracketed[2]) };
  const i = addr.lastIndexOf(':');
  if (i < 0) return undefined;
  const port = Number(addr.slice(i + 1));
  if (!Number.isInteger(port)) return undefined;
  return { host: addr.slice(0, i), port };
}

function goMethodName(method: string): string {
  return method.charAt(0).toUpperCase() + method.slice(1).toLowerCase();
}

function netErrorText(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connect: connection refused';
    case 'ECONNRESET':
      return 'read: connection reset by peer';
    case 'EHOSTUNREACH':
      return 'connect: no route to host';
    case 'ENOTFOUND':
      return `lookup ${err.message.split(' ').pop() ?? ''}: no such host`;
    default:
      return err.message;
  }
}

function truncateOutput(output: string, max: number): string {
  const total = Buffer.byteLength(output);
  if (total <= max) return output;
  return `${Buffer.from(output).subarray(0, max).toString('utf8')} ... (captured ${max} of ${total} bytes)`;
}

interface ProbeResult {
  status: HealthStatus;
  output: string;
}

function probeHttp(spec: CheckSpec): Promise<ProbeResult> {
  const method = spec.method === '' ? 'GET' : spec.method;
  const timeoutMs = spec.timeoutNs > 0 ? spec.timeoutNs / 1e6 : 10_000;
  const maxOut = spec.outputMaxSize > 0 ? spec.outputMaxSize : DEFAULT_OUTPUT_MAX_SIZE;
  let url: URL;
  try {
    url = new URL(spec.http);
  } catch {
    return Promise.resolve({ status: 'critical', output: `parse ${goQuote(spec.http)}: invalid URI for request` });
  }
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(spec.header ?? {})) headers[k] = v;
  const lower = new Set(Object.keys(headers).map((k) => k.toLowerCase()));
  if (!lower.has('user-agent')) headers['User-Agent'] = 'Consul Health Check';
  if (!lower.has('accept')) headers.Accept = 'text/plain, text/*, */*';
  const mod = url.protocol === 'https:' ? https : http;
  const target = `${url.hostname}:${url.port === '' ? (url.protocol === 'https:' ? '443' : '80') : url.port}`;
  return new Promise((resolve) => {
    let settled = false;
    // `timer` is declared below; these closures only run from I/O callbacks, after it exists.
    const finish = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const fail = (detail: string): void =>
      finish({ status: 'critical', output: `${goMethodName(method)} ${goQuote(spec.http)}: ${detail}` });
    const req = mod.request(
      url,
      { method, headers, agent: false, rejectUnauthorized: !spec.tlsSkipVerify, servername: spec.tlsServerName || undefined },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => fail(err.message));
        res.on('end', () => {
          const all = Buffer.concat(chunks);
          const kept = all.length > maxOut ? all.subarray(all.length - maxOut) : all;
          const code = res.statusCode ?? 0;
          const output = `HTTP ${method} ${spec.http}: ${code} ${res.statusMessage ?? ''} Output: ${kept.toString('utf8')}`;
          const status: HealthStatus = code >= 200 && code <= 299 ? 'passing' : code === 429 ? 'warning' : 'critical';
          finish({ status, output });
        });
      },
    );
    const timer = setTimeout(() => {
      fail('context deadline exceeded (Client.Timeout exceeded while awaiting headers)');
      req.destroy();
    }, timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      fail(err.code === undefined ? err.message : `dial tcp ${target}: ${netErrorText(err)}`);
    });
    if (spec.body !== '') req.write(spec.body);
    req.end();
  });
}

function probeTcp(spec: CheckSpec): Promise<ProbeResult> {
  const timeoutMs = spec.timeoutNs > 0 ? spec.timeoutNs / 1e6 : 10_000;
  const target = splitHostPort(spec.tcp);
  return new Promise((resolve) => {
    if (!target) {
      resolve({ status: 'critical', output: `dial tcp ${spec.tcp}: address ${spec.tcp}: missing port in address` });
      return;
    }
    let settled = false;
    const finish = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      sock.destroy();
      resolve(r);
    };
    const sock = net.connect({ host: target.host, port: target.port });
    sock.setTimeout(timeoutMs, () => finish({ status: 'critical', output: `dial tcp ${spec.tcp}: i/o timeout` }));
    sock.once('connect', () => finish({ status: 'passing', output: `TCP connect ${spec.tcp}: Success` }));
    sock.once('error', (err: NodeJS.ErrnoException) =>
      finish({ status: 'critical', output: `dial tcp ${spec.tcp}: ${netErrorText(err)}` }),
    );
  });
}

function emptySpec(): CheckSpec {
  return {
    checkId: '',
    name: '',
    status: '',
    notes: '',
    serviceId: '',
    ttlNs: 0,
    intervalNs: 0,
    timeoutNs: 0,
    dcsaNs: 0,
    http: '',
    method: '',
    header: null,
    body: '',
    tlsServerName: '',
    tlsSkipVerify: false,
    tcp: '',
    udp: '',
    grpc: '',
    h2ping: '',
    osService: '',
    dockerContainerId: '',
    args: [],
    aliasNode: '',
    aliasService: '',
    outputMaxSize: 0,
    successBeforePassing: 0,
    failuresBeforeCritical: 0,
    failuresBeforeWarning: 0,
  };
}

/** Decodes a CheckType (the `Check`/`Checks` of a service, or a CheckDefinition body). */
function decodeCheck(o: Obj, idField: 'CheckID' | 'ID'): CheckSpec {
  const header = field(o, 'Header');
  let headerMap: Record<string, string[]> | null = null;
  if (header !== undefined && header !== null) {
    if (!isObj(header) || !Object.values(header).every((v) => Array.isArray(v) && v.every((x) => typeof x === 'string'))) {
      throw decodeError('Header', 'map[string][]string', header);
    }
    headerMap = header as Record<string, string[]>;
  }
  const failuresBeforeCritical = getInt(o, 'FailuresBeforeCritical');
  const failuresBeforeWarning = has(o, 'FailuresBeforeWarning') ? getInt(o, 'FailuresBeforeWarning') : failuresBeforeCritical;
  return {
    checkId: getStr(o, idField),
    name: getStr(o, 'Name'),
    status: getStr(o, 'Status'),
    notes: getStr(o, 'Notes'),
    serviceId: idField === 'ID' ? getStr(o, 'ServiceID') : '',
    ttlNs: getDuration(o, 'TTL'),
    intervalNs: getDuration(o, 'Interval'),
    timeoutNs: getDuration(o, 'Timeout'),
    dcsaNs: getDuration(o, 'DeregisterCriticalServiceAfter'),
    http: getStr(o, 'HTTP'),
    method: getStr(o, 'Method'),
    header: headerMap,
    body: getStr(o, 'Body'),
    tlsServerName: getStr(o, 'TLSServerName'),
    tlsSkipVerify: getBool(o, 'TLSSkipVerify'),
    tcp: getStr(o, 'TCP'),
    udp: getStr(o, 'UDP'),
    grpc: getStr(o, 'GRPC'),
    h2ping: getStr(o, 'H2PING'),
    osService: getStr(o, 'OSService'),
    dockerContainerId: getStr(o, 'DockerContainerID'),
    args: getStrArr(o, 'Args', 'ScriptArgs') ?? [],
    aliasNode: getStr(o, 'AliasNode'),
    aliasService: getStr(o, 'AliasService'),
    outputMaxSize: getInt(o, 'OutputMaxSize'),
    successBeforePassing: getInt(o, 'SuccessBeforePassing'),
    failuresBeforeCritical,
    failuresBeforeWarning,
  };
}

function isEmptySpec(s: CheckSpec): boolean {
  return JSON.stringify(s) === JSON.stringify(emptySpec());
}

function isIntervalCheck(s: CheckSpec): boolean {
  return s.args.length > 0 || s.http !== '' || s.tcp !== '' || s.udp !== '' || s.grpc !== '' || s.h2ping !== '' || s.osService !== '';
}

/** structs.CheckType.Validate */
function validateCheck(s: CheckSpec): string | undefined {
  const interval = isIntervalCheck(s);
  const alias = s.aliasNode !== '' || s.aliasService !== '';
  if (s.intervalNs > 0 && s.ttlNs > 0) return 'Interval and TTL cannot both be specified';
  if (interval && s.intervalNs <= 0) return 'Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks';
  if (interval && alias) return 'Interval cannot be set for Alias checks';
  if (alias && s.ttlNs > 0) return 'TTL must be not be set for Alias checks';
  if (!interval && !alias && s.ttlNs <= 0) return 'TTL must be > 0 for TTL checks';
  if (s.outputMaxSize < 0) return 'MaxOutputMaxSize must be positive';
  if (s.failuresBeforeWarning > s.failuresBeforeCritical) return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical";
  return undefined;
}

/** structs.CheckType.Type */
function checkType(s: CheckSpec): string {
  if (s.grpc !== '' && s.intervalNs > 0) return 'grpc';
  if (s.http !== '' && s.intervalNs > 0) return 'http';
  if (s.ttlNs > 0) return 'ttl';
  if (s.tcp !== '' && s.intervalNs > 0) return 'tcp';
  if (s.udp !== '' && s.intervalNs > 0) return 'udp';
  if (s.aliasNode !== '' || s.aliasService !== '') return 'alias';
  if (s.args.length > 0 && s.dockerContainerId !== '' && s.intervalNs > 0) return 'docker';
  if (s.args.length > 0 && s.intervalNs > 0) return 'script';
  if (s.h2ping !== '' && s.intervalNs > 0) return 'h2ping';
  if (s.osService !== '' && s.intervalNs > 0) return 'os_service';
  return '';
}

function definitionJson(s: CheckSpec): Obj {
  const d: Obj = {};
  if (s.http !== '') {
    d.HTTP = s.http;
    if (s.header) d.Header = s.header;
    if (s.method !== '') d.Method = s.method;
    if (s.body !== '') d.Body = s.body;
    if (s.tlsServerName !== '') d.TLSServerName = s.tlsServerName;
    if (s.tlsSkipVerify) d.TLSSkipVerify = true;
  }
  if (s.tcp !== '') d.TCP = s.tcp;
  if (s.intervalNs > 0) d.Interval = formatGoDuration(s.intervalNs);
  if (s.outputMaxSize > 0) d.OutputMaxSize = s.outputMaxSize;
  if (s.timeoutNs > 0) d.Timeout = formatGoDuration(s.timeoutNs);
  if (s.dcsaNs > 0) d.DeregisterCriticalServiceAfter = formatGoDuration(s.dcsaNs);
  if (s.args.length > 0) d.ScriptArgs = s.args;
  if (s.aliasNode !== '') d.AliasNode = s.aliasNode;
  if (s.aliasService !== '') d.AliasService = s.aliasService;
  if (s.ttlNs > 0) d.TTL = formatGoDuration(s.ttlNs);
  return d;
}

const META_KEY_RE = /^[a-zA-Z0-9_-]+$/;

/** structs.ValidateServiceMetadata (for a typical service) */
function validateMeta(meta: Record<string, string>): string | undefined {
  const entries = Object.entries(meta);
  if (entries.length > 64) return 'Node metadata cannot contain more than 64 key/value pairs';
  for (const [k, v] of entries) {
    if (k === '') return 'Key cannot be blank';
    if (!META_KEY_RE.test(k)) return `Key contains invalid characters: ${k}`;
    if (k.length > 128) return `Key is too long (limit: 128 characters): ${k}`;
    if (k.startsWith('consul-')) return `Key prefix 'consul-' is reserved for internal use: ${k}`;
    if (v.length > 512) return `Value is too long (limit: 512 characters): ${k}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------

class ConsulDoubleImpl implements ConsulDouble {
  readonly requests: RecordedRequest[] = [];
  readonly events = new EventEmitter();
  readonly nodeName: string;
  readonly datacenter: string;
  private readonly aclToken: string | undefined;
  private readonly sessionTtlMinNs: number;
  private readonly sessionTtlMinText: string;
  private readonly nodeId = randomUUID();
  private readonly bus = new EventEmitter();
  private server: http.Server | undefined;
  private portNumber: number;
  private isRunning = false;

  private raftIndex = 0;
  private idx = { nodes: 0, services: 0, checks: 0, kv: 0, sessions: 0 };
  private serviceIdx = new Map<string, number>();
  private nodeIndex = { create: 0, modify: 0 };
  private serfIndex = { create: 0, modify: 0 };
  private consulServiceIndex = { create: 0, modify: 0 };
  private svcs = new Map<string, ServiceRec>();
  private chks = new Map<string, CheckRec>();
  private kvs = new Map<string, KVEntry>();
  private tombstones = new Map<string, number>();
  private lockDelays = new Map<string, number>();
  private sess = new Map<string, SessionRec>();
  private routes: Route[];

  constructor(opts: ConsulDoubleOptions) {
    this.portNumber = opts.port ?? 0;
    this.aclToken = opts.aclToken === '' ? undefined : opts.aclToken;
    this.nodeName = opts.nodeName ?? os.hostname();
    this.datacenter = opts.datacenter ?? 'dc1';
    this.sessionTtlMinText = opts.sessionTTLMin ?? '100ms';
    this.sessionTtlMinNs = parseGoDuration(this.sessionTtlMinText);
    this.bus.setMaxListeners(0);
    this.routes = this.buildRoutes();
    this.bootstrap();
  }

  get address(): string {
    return `${NODE_ADDRESS}:${this.portNumber}`;
  }
  get url(): string {
    return `http://${this.address}`;
  }
  get port(): number {
    return this.portNumber;
  }
  get running(): boolean {
    return this.isRunning;
  }
  get index(): number {
    return this.raftIndex;
  }

  // ----- lifecycle -------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.isRunning) return;
    if (this.server) this.clearAgentLocal('restart');
    const server = http.createServer((req, res) => void this.onRequest(req, res));
    server.keepAliveTimeout = 1000;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(this.portNumber, NODE_ADDRESS, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const addr = server.address();
    if (addr !== null && typeof addr === 'object') this.portNumber = addr.port;
    this.server = server;
    this.isRunning = true;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!this.isRunning || !server) return;
    this.isRunning = false;
    for (const c of this.chks.values()) this.stopCheckTimers(c);
    this.bus.emit('shutdown');
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  reset(): void {
    for (const c of this.chks.values()) this.stopCheckTimers(c);
    for (const s of this.sess.values()) clearTimeout(s.timer);
    for (const s of this.svcs.values()) this.events.emit('service-deregistered', { ID: s.id, Service: s.name, reason: 'reset' });
    for (const s of this.sess.values()) this.events.emit('session-invalidated', { ID: s.id, reason: 'reset' });
    this.svcs.clear();
    this.chks.clear();
    this.kvs.clear();
    this.tombstones.clear();
    this.lockDelays.clear();
    this.sess.clear();
    this.serviceIdx.clear();
    this.requests.length = 0;
    this.raftIndex = 0;
    this.idx = { nodes: 0, services: 0, checks: 0, kv: 0, sessions: 0 };
    this.bootstrap();
    this.bus.emit('change');
  }

  /** The writes a fresh dev agent makes: raft config, its node, serfHealth, the "consul" service. */
  private bootstrap(): void {
    this.raftIndex = 1;
    const n = this.bump();
    this.nodeIndex = { create: n, modify: n };
    this.idx.nodes = n;
    const c = this.bump();
    this.serfIndex = { create: c, modify: c };
    this.idx.checks = c;
    const s = this.bump();
    this.consulServiceIndex = { create: s, modify: s };
    this.idx.services = s;
    this.serviceIdx.set('consul', s);
  }

  private bump(): number {
    this.raftIndex += 1;
    this.bus.emit('change');
    return this.raftIndex;
  }

  // ----- accessors -------------------------------------------------------------------------

  services(): ServiceSnapshot[] {
    return [...this.svcs.values()]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((s) => ({
        ID: s.id,
        Service: s.name,
        Tags: [...(s.tags ?? [])],
        Meta: { ...(s.meta ?? {}) },
        Port: s.port,
        Address: s.address,
        EnableTagOverride: s.enableTagOverride,
        Weights: { ...s.weights },
        Kind: s.kind,
        CheckIDs: [...this.chks.values()].filter((c) => c.serviceId === s.id).map((c) => c.id).sort(),
        CreateIndex: s.createIndex,
        ModifyIndex: s.modifyIndex,
        registeredAt: s.registeredAt,
        updatedAt: s.updatedAt,
      }));
  }

  checks(): CheckSnapshot[] {
    return [...this.chks.values()]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((c) => ({
        CheckID: c.id,
        Name: c.name,
        Status: c.status,
        Output: c.output,
        Notes: c.notes,
        ServiceID: c.serviceId,
        ServiceName: c.serviceName,
        Type: c.type,
        TTL: c.spec.ttlNs > 0 ? formatGoDuration(c.spec.ttlNs) : '',
        Interval: c.spec.intervalNs > 0 ? formatGoDuration(c.spec.intervalNs) : '',
        Timeout: c.spec.timeoutNs > 0 ? formatGoDuration(c.spec.timeoutNs) : '',
        HTTP: c.spec.http,
        TCP: c.spec.tcp,
        DeregisterCriticalServiceAfter: c.spec.dcsaNs > 0 ? formatGoDuration(c.spec.dcsaNs) : '',
        CreateIndex: c.createIndex,
        ModifyIndex: c.modifyIndex,
        registeredAt: c.registeredAt,
        statusChangedAt: c.statusChangedAt,
        criticalSince: c.criticalSince,
      }));
  }

  kv(): KVSnapshot[] {
    return [...this.kvs.values()]
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map((e) => ({
        Key: e.key,
        Value: Buffer.from(e.value),
        Flags: e.flags,
        Session: e.session,
        LockIndex: e.lockIndex,
        CreateIndex: e.createIndex,
        ModifyIndex: e.modifyIndex,
      }));
  }

  sessions(): SessionSnapshot[] {
    return [...this.sess.values()]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((s) => ({
        ID: s.id,
        Name: s.name,
        Node: s.node,
        Behavior: s.behavior,
        TTL: s.ttl,
        LockDelayNs: s.lockDelayNs,
        CheckIDs: this.sessionCheckIds(s),
        CreateIndex: s.createIndex,
        ModifyIndex: s.modifyIndex,
        createdAt: s.createdAt,
        expiresAt: s.expiresAt,
      }));
  }

  // ----- HTTP plumbing ---------------------------------------------------------------------

  private buildRoutes(): Route[] {
    const r = (pattern: string, methods: string[], handle: (ctx: Ctx) => Reply | Promise<Reply>): Route => ({
      pattern,
      prefix: pattern.endsWith('/'),
      methods,
      handle,
    });
    return [
      r('/v1/agent/self', ['GET'], (c) => this.agentSelf(c)),
      r('/v1/agent/services', ['GET'], (c) => this.agentServices(c)),
      r('/v1/agent/service/register', ['PUT'], (c) => this.agentServiceRegister(c)),
      r('/v1/agent/service/deregister/', ['PUT'], (c) => this.agentServiceDeregister(c)),
      r('/v1/agent/service/', ['GET'], (c) => this.agentService(c)),
      r('/v1/agent/checks', ['GET'], (c) => this.agentChecks(c)),
      r('/v1/agent/check/register', ['PUT'], (c) => this.agentCheckRegister(c)),
      r('/v1/agent/check/deregister/', ['PUT'], (c) => this.agentCheckDeregister(c)),
      r('/v1/agent/check/pass/', ['PUT'], (c) => this.agentCheckTtl(c, 'passing', c.query.get('note') ?? '')),
      r('/v1/agent/check/warn/', ['PUT'], (c) => this.agentCheckTtl(c, 'warning', c.query.get('note') ?? '')),
      r('/v1/agent/check/fail/', ['PUT'], (c) => this.agentCheckTtl(c, 'critical', c.query.get('note') ?? '')),
      r('/v1/agent/check/update/', ['PUT'], (c) => this.agentCheckUpdate(c)),
      r('/v1/catalog/services', ['GET'], (c) => this.catalogServices(c)),
      r('/v1/catalog/service/', ['GET'], (c) => this.catalogService(c)),
      r('/v1/health/service/', ['GET'], (c) => this.healthService(c)),
      r('/v1/health/checks/', ['GET'], (c) => this.healthChecks(c)),
      r('/v1/kv/', ['GET', 'PUT', 'DELETE'], (c) => this.kvEndpoint(c)),
      r('/v1/session/create', ['PUT'], (c) => this.sessionCreate(c)),
      r('/v1/session/destroy/', ['PUT'], (c) => this.sessionDestroy(c)),
      r('/v1/session/info/', ['GET'], (c) => this.sessionInfo(c)),
      r('/v1/session/node/', ['GET'], (c) => this.sessionNode(c)),
      r('/v1/session/list', ['GET'], (c) => this.sessionList(c)),
      r('/v1/session/renew/', ['PUT'], (c) => this.sessionRenew(c)),
    ];
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of req) chunks.push(chunk as Buffer);
    } catch {
      return;
    }
    const body = Buffer.concat(chunks);
    const url = new URL(req.url ?? '/', `http://${NODE_ADDRESS}`);
    let path = url.pathname;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      // keep it raw, as Go keeps RawPath
    }
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      path,
      query: url.searchParams,
      headers: { ...req.headers },
      body: body.toString('utf8'),
      at: Date.now(),
    };
    this.requests.push(record);
    this.events.emit('request', record);

    const ctx: Ctx = { method: record.method, path, rest: '', query: url.searchParams, body, headers: req.headers, res, out: {} };
    let reply: Reply;
    try {
      reply = await this.dispatch(ctx, url.search);
    } catch (err) {
      if (err instanceof HttpError) reply = textReply(err.status, err.message);
      else reply = textReply(500, err instanceof Error ? err.message : String(err));
    }
    const headers = { ...ctx.out, ...reply.headers };
    if (!res.destroyed && !res.headersSent) {
      res.writeHead(reply.status, headers);
      res.end(reply.body);
    }
    const text = typeof reply.body === 'string' ? reply.body : reply.body.toString('utf8');
    this.events.emit('response', { request: record, status: reply.status, body: text, at: Date.now() } satisfies RecordedResponse);
  }

  private async dispatch(ctx: Ctx, search: string): Promise<Reply> {
    const route = this.matchRoute(ctx.path);
    if (!route) {
      if (this.routes.some((r) => r.prefix && r.pattern === `${ctx.path}/`)) {
        return { status: 301, headers: { Location: `${ctx.path}/${search}` }, body: '' };
      }
      if (ctx.path === '/') {
        return textReply(200, 'Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent configuration and restart.');
      }
      if (ctx.path.includes('/v1/')) return textReply(404, 'Invalid URL path: not a recognized HTTP API endpoint\n');
      return textReply(404, "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n");
    }
    ctx.out['X-Consul-Default-Acl-Policy'] = this.aclToken === undefined ? 'allow' : 'deny';
    const allow = ['OPTIONS', ...route.methods].join(',');
    if (ctx.method === 'OPTIONS') return { status: 200, headers: { Allow: allow }, body: '' };
    if (!route.methods.includes(ctx.method)) return textReply(405, `method ${ctx.method} not allowed`, { Allow: allow });
    ctx.rest = route.prefix ? ctx.path.slice(route.pattern.length) : '';
    return await route.handle(ctx);
  }

  private matchRoute(path: string): Route | undefined {
    let best: Route | undefined;
    for (const r of this.routes) {
      const hit = r.prefix ? path.startsWith(r.pattern) : path === r.pattern;
      if (hit && (!best || r.pattern.length > best.pattern.length)) best = r;
    }
    return best;
  }

  private json(ctx: Ctx, value: unknown, status = 200): Reply {
    return { status, headers: { 'Content-Type': 'application/json' }, body: toJson(value, ctx.query.has('pretty')) };
  }

  private empty(): Reply {
    return { status: 200, headers: {}, body: '' };
  }

  // ----- ACL -------------------------------------------------------------------------------

  /** ?token= first, then X-Consul-Token, then Authorization: Bearer (agent/http.go parseTokenInternal). */
  private requestToken(ctx: Ctx): string {
    const q = ctx.query.get('token');
    if (q !== null && q !== '') return q;
    const h = ctx.headers['x-consul-token'];
    const header = Array.isArray(h) ? h[0] : h;
    if (header !== undefined && header !== '') return header;
    const auth = ctx.headers.authorization;
    if (auth !== undefined && auth !== '') {
      const parts = auth.split(' ');
      if (parts.length > 1 && parts[0]?.toLowerCase() === 'bearer') {
        return parts.slice(1).join(' ').trim().split(' ')[0]?.trim() ?? '';
      }
    }
    return '';
  }

  private resolveToken(ctx: Ctx): Authz {
    if (this.aclToken === undefined) return { require: () => undefined };
    const token = this.requestToken(ctx);
    if (token === this.aclToken) return { require: () => undefined };
    if (token !== '') throw new HttpError(403, 'ACL not found');
    return {
      require: (resource: string, level: Level, name?: string) => {
        const on = name === undefined ? '' : ` on ${goQuote(name)}`;
        throw new HttpError(403, `Permission denied: anonymous token lacks permission '${resource}:${level}'${on}${ANONYMOUS_SUFFIX}`);
      },
    };
  }

  // ----- shared query handling -------------------------------------------------------------

  /** HTTPHandlers.parse: ?dc, ?stale/?consistent, ?wait/?index (400s), and the parameters the double refuses. */
  private parseQuery(ctx: Ctx): QueryOpts {
    for (const p of ['filter', 'node-meta']) {
      if (ctx.query.has(p)) throw new HttpError(400, `Consul double: the ?${p} query parameter is not implemented`);
    }
    const stale = ctx.query.has('stale');
    const consistent = ctx.query.has('consistent');
    if (stale && consistent) throw new HttpError(400, 'Cannot specify ?stale with ?consistent, conflicting semantics.');
    let waitMs = DEFAULT_WAIT_MS;
    const wait = ctx.query.get('wait');
    if (wait !== null && wait !== '') {
      try {
        waitMs = parseGoDuration(wait) / 1e6;
      } catch {
        throw new HttpError(400, 'Invalid wait time');
      }
      if (waitMs > MAX_WAIT_MS) waitMs = MAX_WAIT_MS;
      if (waitMs <= 0) waitMs = DEFAULT_WAIT_MS;
    }
    let index = 0;
    const idx = ctx.query.get('index');
    if (idx !== null && idx !== '') {
      if (!/^\d+$/.test(idx)) throw new HttpError(400, 'Invalid index');
      index = Number(idx);
    }
    const dc = ctx.query.get('dc');
    return { dc: dc === null || dc === '' ? this.datacenter : dc, stale, consistent, index, waitMs };
  }

  private parseDc(ctx: Ctx): string {
    const dc = ctx.query.get('dc');
    return dc === null || dc === '' ? this.datacenter : dc;
  }

  /** The RPC forwarding step: another datacenter cannot be reached from a lone agent. */
  private forward(dc: string): void {
    if (dc !== this.datacenter) throw new HttpError(500, 'No path to datacenter');
  }

  private setMeta(ctx: Ctx, index: number, q?: QueryOpts, withConsistency = false): void {
    ctx.out['X-Consul-Index'] = String(index < 1 ? 1 : index);
    ctx.out['X-Consul-Knownleader'] = 'true';
    ctx.out['X-Consul-Lastcontact'] = '0';
    if (withConsistency && q) {
      ctx.out['X-Consul-Effective-Consistency'] = q.consistent ? 'consistent' : q.stale ? 'stale' : 'leader';
    }
  }

  private nextChange(ms: number, ctx: Ctx): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (changed: boolean): void => {
        clearTimeout(timer);
        this.bus.off('change', onChange);
        this.bus.off('shutdown', onStop);
        ctx.res.off('close', onStop);
        resolve(changed);
      };
      const onChange = (): void => done(true);
      const onStop = (): void => done(false);
      const timer = setTimeout(() => done(false), ms);
      this.bus.on('change', onChange);
      this.bus.on('shutdown', onStop);
      ctx.res.on('close', onStop);
    });
  }

  /** Index-based blocking: re-run `compute` on every write until its index passes ?index or ?wait ends. */
  private async blocking<T>(ctx: Ctx, q: QueryOpts, compute: () => { index: number; value: T }): Promise<{ index: number; value: T }> {
    let result = compute();
    if (q.index === 0) return result;
    const deadline = Date.now() + q.waitMs;
    while (result.index <= q.index) {
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.nextChange(left, ctx))) break;
      result = compute();
    }
    return result;
  }

  // ----- JSON views --------------------------------------------------------------------------

  private agentServiceJson(s: ServiceRec): Obj {
    return {
      ...(s.kind !== '' ? { Kind: s.kind } : {}),
      ID: s.id,
      Service: s.name,
      Tags: s.tags ?? [],
      Meta: s.meta ?? {},
      Port: s.port,
      Address: s.address,
      ...(Object.keys(s.taggedAddresses).length > 0 ? { TaggedAddresses: s.taggedAddresses } : {}),
      Weights: s.weights,
      EnableTagOverride: s.enableTagOverride,
      Datacenter: this.datacenter,
    };
  }

  private nodeTaggedAddresses(): Record<string, string> {
    return { lan: NODE_ADDRESS, lan_ipv4: NODE_ADDRESS, wan: NODE_ADDRESS, wan_ipv4: NODE_ADDRESS };
  }

  private nodeMeta(): Record<string, string> {
    return { 'consul-network-segment': '', 'consul-version': VERSION };
  }

  private nodeJson(): Obj {
    return {
      ID: this.nodeId,
      Node: this.nodeName,
      Address: NODE_ADDRESS,
      Datacenter: this.datacenter,
      TaggedAddresses: this.nodeTaggedAddresses(),
      Meta: this.nodeMeta(),
      CreateIndex: this.nodeIndex.create,
      ModifyIndex: this.nodeIndex.modify,
    };
  }

  /** The catalog's view of the agent's services, plus the server's own "consul" service. */
  private catalogServicesList(): ServiceRec[] {
    const consul: ServiceRec = {
      id: 'consul',
      name: 'consul',
      tags: [],
      address: '',
      port: 8300,
      meta: { raft_version: '3', serf_protocol_current: '2', serf_protocol_max: '5', serf_protocol_min: '1', version: VERSION },
      enableTagOverride: false,
      weights: { Passing: 1, Warning: 1 },
      taggedAddresses: {},
      kind: '',
      createIndex: this.consulServiceIndex.create,
      modifyIndex: this.consulServiceIndex.modify,
      registeredAt: 0,
      updatedAt: 0,
    };
    return [consul, ...this.svcs.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  private healthServiceJson(s: ServiceRec): Obj {
    return {
      ...(s.kind !== '' ? { Kind: s.kind } : {}),
      ID: s.id,
      Service: s.name,
      Tags: s.tags ?? [],
      Address: s.address,
      ...(Object.keys(s.taggedAddresses).length > 0 ? { TaggedAddresses: s.taggedAddresses } : {}),
      Meta: s.meta,
      Port: s.port,
      Weights: s.weights,
      EnableTagOverride: s.enableTagOverride,
      Proxy: { Mode: '', MeshGateway: {}, Expose: {} },
      Connect: {},
      PeerName: '',
      CreateIndex: s.createIndex,
      ModifyIndex: s.modifyIndex,
    };
  }

  private catalogServiceNodeJson(s: ServiceRec): Obj {
    return {
      ID: this.nodeId,
      Node: this.nodeName,
      Address: NODE_ADDRESS,
      Datacenter: this.datacenter,
      TaggedAddresses: this.nodeTaggedAddresses(),
      NodeMeta: this.nodeMeta(),
      ServiceKind: s.kind,
      ServiceID: s.id,
      ServiceName: s.name,
      ServiceTags: s.tags ?? [],
      ServiceAddress: s.address,
      ...(Object.keys(s.taggedAddresses).length > 0 ? { ServiceTaggedAddresses: s.taggedAddresses } : {}),
      ServiceWeights: s.weights,
      ServiceMeta: s.meta,
      ServicePort: s.port,
      ServiceEnableTagOverride: s.enableTagOverride,
      ServiceProxy: { Mode: '', MeshGateway: {}, Expose: {} },
      ServiceConnect: {},
      ServicePeerName: '',
      CreateIndex: s.createIndex,
      ModifyIndex: s.modifyIndex,
    };
  }

  private checkJson(c: CheckRec, agentView: boolean): Obj {
    const timed = c.spec.intervalNs > 0;
    return {
      Node: this.nodeName,
      CheckID: c.id,
      Name: c.name,
      Status: c.status,
      Notes: c.notes,
      Output: c.output,
      ServiceID: c.serviceId,
      ServiceName: c.serviceName,
      ServiceTags: c.serviceTags ?? [],
      Type: c.type,
      Interval: timed ? formatGoDuration(c.spec.intervalNs) : '',
      Timeout: timed && c.spec.timeoutNs > 0 ? formatGoDuration(c.spec.timeoutNs) : '',
      ExposedPort: 0,
      Definition: definitionJson(c.spec),
      CreateIndex: agentView ? 0 : c.createIndex,
      ModifyIndex: agentView ? 0 : c.modifyIndex,
    };
  }

  private serfHealthJson(): Obj {
    return {
      Node: this.nodeName,
      CheckID: SERF_CHECK_ID,
      Name: 'Serf Health Status',
      Status: 'passing',
      Notes: '',
      Output: 'Agent alive and reachable',
      ServiceID: '',
      ServiceName: '',
      ServiceTags: [],
      Type: '',
      Interval: '',
      Timeout: '',
      ExposedPort: 0,
      Definition: {},
      CreateIndex: this.serfIndex.create,
      ModifyIndex: this.serfIndex.modify,
    };
  }

  private kvJson(e: KVEntry): Obj {
    return {
      LockIndex: e.lockIndex,
      Key: e.key,
      Flags: e.flags,
      Value: e.value.length === 0 ? null : e.value.toString('base64'),
      ...(e.session !== '' ? { Session: e.session } : {}),
      CreateIndex: e.createIndex,
      ModifyIndex: e.modifyIndex,
    };
  }

  private sessionJson(s: SessionRec): Obj {
    return {
      ID: s.id,
      Name: s.name,
      Node: s.node,
      LockDelay: s.lockDelayNs,
      Behavior: s.behavior,
      TTL: s.ttl,
      NodeChecks: s.nodeChecks,
      ServiceChecks: s.serviceChecks,
      ...(s.checks && s.checks.length > 0 ? { Checks: s.checks } : {}),
      CreateIndex: s.createIndex,
      ModifyIndex: s.modifyIndex,
    };
  }

  // ----- catalog indexes -------------------------------------------------------------------

  private touchService(name: string, index: number): void {
    this.serviceIdx.set(name.toLowerCase(), index);
  }

  private serviceIndexFor(name: string): number {
    return this.serviceIdx.get(name.toLowerCase()) ?? Math.max(this.idx.nodes, this.idx.services, this.idx.checks);
  }

  // ----- agent: self, services ---------------------------------------------------------------

  private agentSelf(ctx: Ctx): Reply {
    this.resolveToken(ctx).require('agent', 'read', this.nodeName);
    const acl = this.aclToken === undefined ? 'disabled' : 'enabled';
    const ttlChecks = [...this.chks.values()].filter((c) => c.type === 'ttl').length;
    return this.json(ctx, {
      Config: {
        Datacenter: this.datacenter,
        PrimaryDatacenter: this.datacenter,
        NodeName: this.nodeName,
        NodeID: this.nodeId,
        Revision: 'double',
        Server: true,
        Version: VERSION,
        BuildDate: '2024-01-01T00:00:00Z',
      },
      DebugConfig: {
        Datacenter: this.datacenter,
        NodeName: this.nodeName,
        NodeID: this.nodeId,
        ServerMode: true,
        DevMode: true,
        SessionTTLMin: this.sessionTtlMinText,
        ACLsEnabled: this.aclToken !== undefined,
      },
      Coord: { Vec: [0, 0, 0, 0, 0, 0, 0, 0], Error: 1.5, Adjustment: 0, Height: 1e-5 },
      Member: {
        Name: this.nodeName,
        Addr: NODE_ADDRESS,
        Port: 8301,
        Tags: {
          acls: this.aclToken === undefined ? '0' : '1',
          build: `${VERSION}:double`,
          dc: this.datacenter,
          id: this.nodeId,
          port: '8300',
          role: 'consul',
          segment: '',
          vsn: '2',
          vsn_max: '3',
          vsn_min: '2',
        },
        Status: 1,
        ProtocolMin: 1,
        ProtocolMax: 5,
        ProtocolCur: 2,
        DelegateMin: 2,
        DelegateMax: 5,
        DelegateCur: 4,
      },
      Stats: {
        agent: { check_monitors: '0', check_ttls: String(ttlChecks), checks: String(this.chks.size), services: String(this.svcs.size) },
        build: { prerelease: '', revision: 'double', version: VERSION },
        consul: { acl, bootstrap: 'true', known_datacenters: '1', leader: 'true', leader_addr: `${NODE_ADDRESS}:8300`, server: 'true' },
      },
      Meta: this.nodeMeta(),
    });
  }

  private agentServices(ctx: Ctx): Reply {
    this.resolveToken(ctx).require('service', 'read');
    const out: Obj = {};
    for (const s of [...this.svcs.values()].sort((a, b) => a.id.localeCompare(b.id))) out[s.id] = this.agentServiceJson(s);
    return this.json(ctx, out);
  }

  /** GET /v1/agent/service/:id, with hash-based blocking (?hash=&wait=). */
  private async agentService(ctx: Ctx): Promise<Reply> {
    let waitMs = DEFAULT_WAIT_MS;
    const wait = ctx.query.get('wait');
    if (wait !== null && wait !== '') {
      try {
        waitMs = Math.min(parseGoDuration(wait) / 1e6, MAX_WAIT_MS);
      } catch {
        throw new HttpError(400, 'Invalid wait time');
      }
    }
    const idx = ctx.query.get('index');
    if (idx !== null && idx !== '' && !/^\d+$/.test(idx)) throw new HttpError(400, 'Invalid index');
    const authz = this.resolveToken(ctx);
    const id = ctx.rest;
    const compute = (): { hash: string; value: Obj } => {
      const svc = this.svcs.get(id);
      if (!svc) throw new HttpError(404, `unknown service ID: ${id}`);
      authz.require('service', 'read', svc.name);
      const value = this.agentServiceJson(svc);
      const hash = createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
      return { hash, value: { ...value, ContentHash: hash } };
    };
    let result = compute();
    const wanted = ctx.query.get('hash');
    if (wanted !== null && wanted !== '') {
      const deadline = Date.now() + waitMs;
      while (result.hash === wanted) {
        const left = deadline - Date.now();
        if (left <= 0 || !(await this.nextChange(left, ctx))) break;
        result = compute();
      }
    }
    ctx.out['X-Consul-Contenthash'] = result.hash;
    return this.json(ctx, result.value);
  }

  private agentServiceRegister(ctx: Ctx): Reply {
    const body = decodeObject(ctx.body, 'structs.ServiceDefinition');
    const name = getStr(body, 'Name');
    if (name === '') throw new HttpError(400, 'Missing service name');
    const address = getStr(body, 'Address');
    if (address === '0.0.0.0' || address === '::' || address === '[::]') throw new HttpError(400, 'Invalid service address');
    const authz = this.resolveToken(ctx);

    const id = getStr(body, 'ID') || name;
    const port = getInt(body, 'Port');
    const tags = getStrArr(body, 'Tags');
    const meta = getStrMap(body, 'Meta');
    const kind = getStr(body, 'Kind');
    const enableTagOverride = getBool(body, 'EnableTagOverride');
    let weights = { Passing: 1, Warning: 1 };
    const w = field(body, 'Weights');
    if (w !== undefined && w !== null) {
      if (!isObj(w)) throw decodeError('Weights', 'structs.Weights', w);
      weights = { Passing: getInt(w, 'Passing'), Warning: getInt(w, 'Warning') };
      if (weights.Passing < 1) throw new HttpError(400, 'Invalid Weights: Passing must be greater than 0');
      if (weights.Warning < 0) throw new HttpError(400, 'Invalid Weights: Warning must be greater or equal than 0');
    }
    if (meta) {
      const problem = validateMeta(meta);
      if (problem !== undefined) throw new HttpError(400, `Invalid Service Meta: ${problem}`);
    }
    const taggedAddresses: Record<string, { Address: string; Port: number }> = {};
    const ta = field(body, 'TaggedAddresses');
    if (ta !== undefined && ta !== null) {
      if (!isObj(ta)) throw decodeError('TaggedAddresses', 'map[string]structs.ServiceAddress', ta);
      for (const [k, v] of Object.entries(ta)) {
        if (!isObj(v)) throw decodeError('TaggedAddresses', 'structs.ServiceAddress', v);
        taggedAddresses[k] = { Address: getStr(v, 'Address'), Port: getInt(v, 'Port') };
      }
    }
    if (net.isIPv4(address)) {
      taggedAddresses.lan_ipv4 ??= { Address: address, Port: port };
      taggedAddresses.wan_ipv4 ??= { Address: address, Port: port };
    } else if (net.isIPv6(address)) {
      taggedAddresses.lan_ipv6 ??= { Address: address, Port: port };
      taggedAddresses.wan_ipv6 ??= { Address: address, Port: port };
    }

    // ServiceDefinition.CheckTypes: `Check` unless empty, then every `Checks` entry.
    const specs: CheckSpec[] = [];
    const single = field(body, 'Check');
    if (single !== undefined && single !== null) {
      if (!isObj(single)) throw decodeError('Check', 'structs.CheckType', single);
      const spec = decodeCheck(single, 'CheckID');
      if (!isEmptySpec(spec)) specs.push(spec);
    }
    const many = field(body, 'Checks');
    if (many !== undefined && many !== null) {
      if (!Array.isArray(many)) throw decodeError('Checks', 'structs.CheckTypes', many);
      for (const c of many) {
        if (!isObj(c)) throw decodeError('Checks', 'structs.CheckType', c);
        specs.push(decodeCheck(c, 'CheckID'));
      }
    }
    for (const s of specs) {
      const problem = validateCheck(s);
      if (problem !== undefined) throw new HttpError(400, `Invalid check: ${problem}`);
    }
    for (const s of specs) {
      if (s.status !== '' && !isStatus(s.status)) throw new HttpError(400, "Status for checks must 'passing', 'warning', 'critical'");
    }
    authz.require('service', 'write', name);
    const existing = this.svcs.get(id);
    if (existing) authz.require('service', 'write', existing.name);
    if (specs.some((s) => s.args.length > 0)) {
      throw new HttpError(500, "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true");
    }

    const q = ctx.query;
    const replace = q.has('replace-existing-checks') && ['', 'true'].includes(q.get('replace-existing-checks') ?? '');
    this.addService(
      { id, name, tags, address, port, meta, enableTagOverride, weights, taggedAddresses, kind },
      specs,
      replace,
    );
    return this.empty();
  }

  private addService(
    input: Omit<ServiceRec, 'createIndex' | 'modifyIndex' | 'registeredAt' | 'updatedAt'>,
    specs: CheckSpec[],
    replaceExistingChecks: boolean,
  ): void {
    const now = Date.now();
    const index = this.bump();
    const existing = this.svcs.get(input.id);
    const same =
      existing !== undefined &&
      JSON.stringify({ ...existing, createIndex: 0, modifyIndex: 0, registeredAt: 0, updatedAt: 0 }) ===
        JSON.stringify({ ...input, createIndex: 0, modifyIndex: 0, registeredAt: 0, updatedAt: 0 });
    const rec: ServiceRec = {
      ...input,
      createIndex: existing?.createIndex ?? index,
      modifyIndex: same && existing ? existing.modifyIndex : index,
      registeredAt: existing?.registeredAt ?? now,
      updatedAt: now,
    };
    this.svcs.set(rec.id, rec);
    if (!same) {
      this.idx.services = index;
      this.touchService(rec.name, index);
      if (existing && existing.name.toLowerCase() !== rec.name.toLowerCase()) this.touchService(existing.name, index);
    }
    const kept = new Set<string>();
    specs.forEach((spec, i) => {
      let checkId = spec.checkId;
      if (checkId === '') checkId = specs.length > 1 ? `service:${rec.id}:${i + 1}` : `service:${rec.id}`;
      kept.add(checkId);
      const name = spec.name === '' ? `Service '${rec.name}' check` : spec.name;
      this.addCheck({ ...spec, checkId, name }, rec, index);
    });
    // Existing checks of this service stay unless ?replace-existing-checks (AddService).
    for (const c of [...this.chks.values()]) {
      if (c.serviceId !== rec.id) continue;
      if (replaceExistingChecks && !kept.has(c.id)) this.removeCheck(c, index);
      else if (!kept.has(c.id)) {
        c.serviceName = rec.name;
        c.serviceTags = rec.tags;
      }
    }
    this.events.emit('service-registered', { ID: rec.id, Service: rec.name });
  }

  private agentServiceDeregister(ctx: Ctx): Reply {
    const authz = this.resolveToken(ctx);
    const id = ctx.rest;
    const svc = this.svcs.get(id);
    if (!svc) {
      throw new HttpError(404, `Unknown service ID ${goQuote(id)}. Ensure that the service ID is passed, not the service name.`);
    }
    authz.require('service', 'write', svc.name);
    this.removeService(id, 'api');
    return this.empty();
  }

  private removeService(id: string, reason: string, index?: number, checkId?: string): void {
    const svc = this.svcs.get(id);
    if (!svc) return;
    const idx = index ?? this.bump();
    for (const c of [...this.chks.values()]) if (c.serviceId === id) this.removeCheck(c, idx);
    this.svcs.delete(id);
    this.idx.services = idx;
    this.touchService(svc.name, idx);
    this.events.emit('service-deregistered', { ID: svc.id, Service: svc.name, reason, ...(checkId === undefined ? {} : { CheckID: checkId }) });
  }

  /** Agent restart without config files: every agent-local service and check is gone. */
  private clearAgentLocal(reason: string): void {
    if (this.svcs.size === 0 && this.chks.size === 0) return;
    const idx = this.bump();
    for (const id of [...this.svcs.keys()]) this.removeService(id, reason, idx);
    for (const c of [...this.chks.values()]) this.removeCheck(c, idx);
  }

  // ----- agent: checks ---------------------------------------------------------------------

  private agentChecks(ctx: Ctx): Reply {
    this.resolveToken(ctx).require('node', 'read', this.nodeName);
    const out: Obj = {};
    for (const c of [...this.chks.values()].sort((a, b) => a.id.localeCompare(b.id))) out[c.id] = this.checkJson(c, true);
    return this.json(ctx, out);
  }

  private agentCheckRegister(ctx: Ctx): Reply {
    const body = decodeObject(ctx.body, 'structs.CheckDefinition');
    const spec = decodeCheck(body, 'ID');
    if (spec.name === '') throw new HttpError(400, 'Missing check name');
    if (spec.status !== '' && !isStatus(spec.status)) throw new HttpError(400, 'Bad check status');
    const authz = this.resolveToken(ctx);
    const problem = validateCheck(spec);
    if (problem !== undefined) throw new HttpError(400, `Invalid check: ${problem}`);
    let svc: ServiceRec | undefined;
    if (spec.serviceId !== '') {
      svc = this.svcs.get(spec.serviceId);
      if (!svc) throw new HttpError(404, `ServiceID ${goQuote(spec.serviceId)} does not exist`);
    }
    const checkId = spec.checkId === '' ? spec.name : spec.checkId;
    this.vetCheckWrite(authz, svc?.name ?? '');
    const existing = this.chks.get(checkId);
    if (existing) this.vetCheckWrite(authz, existing.serviceName);
    if (spec.args.length > 0) {
      throw new HttpError(500, "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true");
    }
    this.addCheck({ ...spec, checkId }, svc, this.bump());
    return this.empty();
  }

  private vetCheckWrite(authz: Authz, serviceName: string): void {
    if (serviceName !== '') authz.require('service', 'write', serviceName);
    else authz.require('node', 'write', this.nodeName);
  }

  /** Adds or replaces a check; a replaced check keeps its status and output (no flapping). */
  private addCheck(spec: CheckSpec, svc: ServiceRec | undefined, index: number): void {
    const now = Date.now();
    const prev = this.chks.get(spec.checkId);
    if (prev) this.stopCheckTimers(prev);
    const initial: HealthStatus = isStatus(spec.status) ? spec.status : 'critical';
    const status = prev ? prev.status : initial;
    const rec: CheckRec = {
      id: spec.checkId,
      name: spec.name,
      status,
      output: prev ? prev.output : '',
      notes: spec.notes,
      serviceId: svc?.id ?? '',
      serviceName: svc?.name ?? '',
      serviceTags: svc ? svc.tags : null,
      type: checkType(spec),
      spec,
      createIndex: prev?.createIndex ?? index,
      modifyIndex: index,
      registeredAt: prev?.registeredAt ?? now,
      statusChangedAt: prev && prev.status === status ? prev.statusChangedAt : now,
      criticalSince: status === 'critical' ? now : null,
      lastTtlOutput: prev ? prev.lastTtlOutput : '',
      successes: 0,
      failures: 0,
      generation: (prev?.generation ?? 0) + 1,
    };
    this.chks.set(rec.id, rec);
    this.idx.checks = index;
    if (rec.serviceName !== '') this.touchService(rec.serviceName, index);
    if (prev && prev.serviceName !== '' && prev.serviceName !== rec.serviceName) this.touchService(prev.serviceName, index);
    if (status === 'critical') this.invalidateSessionsForCheck(rec.id);
    if (this.isRunning) this.startCheckTimers(rec);
  }

  private removeCheck(c: CheckRec, index: number): void {
    if (this.chks.get(c.id) !== c) return;
    this.stopCheckTimers(c);
    this.chks.delete(c.id);
    this.idx.checks = index;
    if (c.serviceName !== '') this.touchService(c.serviceName, index);
    this.invalidateSessionsForCheck(c.id);
  }

  private agentCheckDeregister(ctx: Ctx): Reply {
    const authz = this.resolveToken(ctx);
    const c = this.vetCheckUpdate(authz, ctx.rest);
    this.removeCheck(c, this.bump());
    return this.empty();
  }

  private vetCheckUpdate(authz: Authz, id: string): CheckRec {
    const c = this.chks.get(id);
    if (!c) throw new HttpError(404, `Unknown check ID ${goQuote(id)}. Ensure that the check ID is passed, not the check name.`);
    this.vetCheckWrite(authz, c.serviceName);
    return c;
  }

  private agentCheckUpdate(ctx: Ctx): Reply {
    const body = decodeObject(ctx.body, 'agent.checkUpdate');
    const status = getStr(body, 'Status');
    const output = getStr(body, 'Output');
    if (!isStatus(status)) throw new HttpError(400, `Invalid check status: '${status}'`);
    return this.agentCheckTtl(ctx, status, output);
  }

  private agentCheckTtl(ctx: Ctx, status: HealthStatus, output: string): Reply {
    const authz = this.resolveToken(ctx);
    const c = this.vetCheckUpdate(authz, ctx.rest);
    if (c.spec.ttlNs <= 0) throw new HttpError(500, `CheckID ${goQuote(c.id)} does not have associated TTL`);
    const max = c.spec.outputMaxSize > 0 ? c.spec.outputMaxSize : DEFAULT_OUTPUT_MAX_SIZE;
    const kept = truncateOutput(output, max);
    this.setCheckStatus(c, status, kept);
    c.lastTtlOutput = kept;
    this.armTtl(c);
    return this.empty();
  }

  /** The agent's local state UpdateCheck plus the catalog sync it triggers. */
  private setCheckStatus(c: CheckRec, status: HealthStatus, output: string): void {
    if (this.chks.get(c.id) !== c) return;
    if (c.status === status && c.output === output) return;
    const index = this.bump();
    const now = Date.now();
    if (c.status !== status) c.statusChangedAt = now;
    if (status === 'critical') c.criticalSince ??= now;
    else c.criticalSince = null;
    c.status = status;
    c.output = output;
    c.modifyIndex = index;
    this.idx.checks = index;
    if (c.serviceName !== '') this.touchService(c.serviceName, index);
    this.events.emit('check-status', { CheckID: c.id, ServiceID: c.serviceId, Status: status, Output: output });
    if (status === 'critical') this.invalidateSessionsForCheck(c.id);
    this.armReaper(c);
  }

  private startCheckTimers(c: CheckRec): void {
    if (c.type === 'ttl') this.armTtl(c);
    if (c.type === 'http' || c.type === 'tcp') {
      // Like the agent (checks.CheckHTTP/CheckTCP run: lib.RandomStagger(Interval)), the first run
      // waits a random part of the interval: until then the check keeps its registered status
      // and an empty output.
      const generation = c.generation;
      c.runTimer = setTimeout(() => void this.runProbe(c, generation), Math.random() * (c.spec.intervalNs / 1e6));
    }
    this.armReaper(c);
  }

  private stopCheckTimers(c: CheckRec): void {
    clearTimeout(c.ttlTimer);
    clearTimeout(c.runTimer);
    clearTimeout(c.reapTimer);
    c.ttlTimer = c.runTimer = c.reapTimer = undefined;
    c.generation += 1;
  }

  private armTtl(c: CheckRec): void {
    clearTimeout(c.ttlTimer);
    if (!this.isRunning || c.spec.ttlNs <= 0) return;
    c.ttlTimer = setTimeout(() => {
      c.ttlTimer = undefined;
      const out = c.lastTtlOutput === '' ? 'TTL expired' : `TTL expired (last output before timeout follows): ${c.lastTtlOutput}`;
      this.setCheckStatus(c, 'critical', out);
    }, c.spec.ttlNs / 1e6);
  }

  /** DeregisterCriticalServiceAfter, honoured exactly (Consul: at least 1m, reaped every 30s). */
  private armReaper(c: CheckRec): void {
    clearTimeout(c.reapTimer);
    c.reapTimer = undefined;
    if (!this.isRunning || c.spec.dcsaNs <= 0 || c.serviceId === '' || c.status !== 'critical') return;
    const since = c.criticalSince ?? Date.now();
    const delay = Math.max(0, since + c.spec.dcsaNs / 1e6 - Date.now());
    c.reapTimer = setTimeout(() => {
      c.reapTimer = undefined;
      if (this.chks.get(c.id) === c && c.status === 'critical') this.removeService(c.serviceId, 'critical', undefined, c.id);
    }, delay);
  }

  private async runProbe(c: CheckRec, generation: number): Promise<void> {
    if (!this.isRunning || c.generation !== generation || this.chks.get(c.id) !== c) return;
    const result = c.type === 'http' ? await probeHttp(c.spec) : await probeTcp(c.spec);
    if (!this.isRunning || c.generation !== generation || this.chks.get(c.id) !== c) return;
    this.applyProbe(c, result);
    c.runTimer = setTimeout(() => void this.runProbe(c, generation), c.spec.intervalNs / 1e6);
  }

  /** checks.StatusHandler: SuccessBeforePassing / FailuresBeforeWarning / FailuresBeforeCritical. */
  private applyProbe(c: CheckRec, r: ProbeResult): void {
    if (r.status === 'passing' || r.status === 'warning') {
      c.successes += 1;
      c.failures = 0;
      if (c.successes >= c.spec.successBeforePassing) this.setCheckStatus(c, r.status, r.output);
      return;
    }
    c.failures += 1;
    c.successes = 0;
    if (c.failures >= c.spec.failuresBeforeCritical) this.setCheckStatus(c, 'critical', r.output);
    else if (c.failures >= c.spec.failuresBeforeWarning) this.setCheckStatus(c, 'warning', r.output);
  }

  // ----- catalog & health --------------------------------------------------------------------

  private matchesTags(s: ServiceRec, tags: string[]): boolean {
    const have = new Set((s.tags ?? []).map((t) => t.toLowerCase()));
    return tags.every((t) => have.has(t.toLowerCase()));
  }

  private instancesOf(name: string, tags: string[]): ServiceRec[] {
    const lower = name.toLowerCase();
    return this.catalogServicesList().filter((s) => s.name.toLowerCase() === lower && this.matchesTags(s, tags));
  }

  private async catalogServices(ctx: Ctx): Promise<Reply> {
    const q = this.parseQuery(ctx);
    this.forward(q.dc);
    this.resolveToken(ctx).require('service', 'read');
    const r = await this.blocking(ctx, q, () => {
      const out: Record<string, string[]> = {};
      for (const s of this.catalogServicesList()) {
        const tags = new Set(out[s.name] ?? []);
        for (const t of s.tags ?? []) tags.add(t);
        out[s.name] = [...tags].sort();
      }
      return { index: this.idx.services, value: out };
    });
    this.setMeta(ctx, r.index, q, true);
    return this.json(ctx, r.value);
  }

  private async catalogService(ctx: Ctx): Promise<Reply> {
    const q = this.parseQuery(ctx);
    const tags = ctx.query.getAll('tag');
    const name = ctx.rest;
    if (name === '') throw new HttpError(400, 'Missing service name');
    this.forward(q.dc);
    this.resolveToken(ctx).require('service', 'read', name);
    const r = await this.blocking(ctx, q, () => ({
      index: this.serviceIndexFor(name),
      value: this.instancesOf(name, tags).map((s) => this.catalogServiceNodeJson(s)),
    }));
    this.setMeta(ctx, r.index, q, true);
    return this.json(ctx, r.value);
  }

  private checksForService(id: string): CheckRec[] {
    return [...this.chks.values()].filter((c) => c.serviceId === id);
  }

  private async healthService(ctx: Ctx): Promise<Reply> {
    const q = this.parseQuery(ctx);
    const tags = ctx.query.getAll('tag');
    const name = ctx.rest;
    if (name === '') throw new HttpError(400, 'Missing service name');
    this.forward(q.dc);
    this.resolveToken(ctx).require('service', 'read', name);
    const r = await this.blocking(ctx, q, () => ({
      index: this.serviceIndexFor(name),
      value: this.instancesOf(name, tags).map((s) => {
        const checks = [
          { id: SERF_CHECK_ID, json: this.serfHealthJson() },
          ...this.checksForService(s.id).map((c) => ({ id: c.id, json: this.checkJson(c, false) })),
        ].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        return { Node: this.nodeJson(), Service: this.healthServiceJson(s), Checks: checks.map((c) => c.json) };
      }),
    }));
    this.setMeta(ctx, r.index, q, true);
    let entries = r.value;
    if (ctx.query.has('passing')) {
      const raw = ctx.query.get('passing') ?? '';
      const passing = raw === '' ? true : parseGoBool(raw);
      if (passing === undefined) throw new HttpError(400, 'Invalid value for ?passing');
      if (passing) entries = entries.filter((e) => e.Checks.every((c) => c.Status === 'passing'));
    }
    return this.json(ctx, entries);
  }

  private async healthChecks(ctx: Ctx): Promise<Reply> {
    const q = this.parseQuery(ctx);
    const name = ctx.rest;
    if (name === '') throw new HttpError(400, 'Missing service name');
    this.forward(q.dc);
    this.resolveToken(ctx).require('service', 'read', name);
    const r = await this.blocking(ctx, q, () => {
      const ids = new Set(this.instancesOf(name, []).map((s) => s.id));
      const checks = [...this.chks.values()]
        .filter((c) => ids.has(c.serviceId))
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        .map((c) => this.checkJson(c, false));
      return { index: this.serviceIndexFor(name), value: checks };
    });
    this.setMeta(ctx, r.index, q, true);
    return this.json(ctx, r.value);
  }

  // ----- KV ----------------------------------------------------------------------------------

  private kvListIndex(prefix: string): number {
    if (prefix === '') return this.idx.kv;
    let max = 0;
    for (const e of this.kvs.values()) if (e.key.startsWith(prefix) && e.modifyIndex > max) max = e.modifyIndex;
    for (const [k, i] of this.tombstones) if (k.startsWith(prefix) && i > max) max = i;
    return max === 0 ? this.idx.kv : max;
  }

  private kvUnder(prefix: string): KVEntry[] {
    return [...this.kvs.values()].filter((e) => e.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private async kvEndpoint(ctx: Ctx): Promise<Reply> {
    const q = this.parseQuery(ctx);
    const key = ctx.rest;
    if (ctx.method === 'GET') return ctx.query.has('keys') ? this.kvKeys(ctx, q, key) : this.kvGet(ctx, q, key);
    if (ctx.method === 'PUT') return this.kvPut(ctx, q, key);
    return this.kvDelete(ctx, q, key);
  }

  private async kvGet(ctx: Ctx, q: QueryOpts, key: string): Promise<Reply> {
    const recurse = ctx.query.has('recurse');
    if (!recurse && key === '') throw new HttpError(400, 'Missing key name');
    this.forward(q.dc);
    this.resolveToken(ctx).require('key', 'read', key);
    const r = await this.blocking(ctx, q, () => {
      if (recurse) return { index: this.kvListIndex(key), value: this.kvUnder(key) };
      const e = this.kvs.get(key);
      return e ? { index: e.modifyIndex, value: [e] } : { index: this.idx.kv, value: [] };
    });
    this.setMeta(ctx, r.index);
    const first = r.value[0];
    if (!first) return { status: 404, headers: {}, body: '' };
    if (ctx.query.has('raw') && !recurse) {
      return {
        status: 200,
        headers: {
          'Content-Type': 'text/plain',
          'X-Content-Type-Options': 'nosniff',
          'Content-Security-Policy': 'sandbox',
          'Content-Length': String(first.value.length),
        },
        body: Buffer.from(first.value),
      };
    }
    return this.json(ctx, r.value.map((e) => this.kvJson(e)));
  }

  private async kvKeys(ctx: Ctx, q: QueryOpts, prefix: string): Promise<Reply> {
    const sep = ctx.query.has('separator') ? (ctx.query.get('separator') ?? '') : (ctx.query.get('seperator') ?? '');
    this.forward(q.dc);
    this.resolveToken(ctx).require('key', 'read', prefix);
    const r = await this.blocking(ctx, q, () => {
      const keys: string[] = [];
      let last = '';
      for (const e of this.kvUnder(prefix)) {
        if (sep === '') {
          keys.push(e.key);
          continue;
        }
        const after = e.key.slice(prefix.length);
        const at = after.indexOf(sep);
        if (at < 0) {
          keys.push(e.key);
          continue;
        }
        const k = e.key.slice(0, prefix.length + at + sep.length);
        if (k !== last) {
          keys.push(k);
          last = k;
        }
      }
      return { index: this.kvListIndex(prefix), value: keys };
    });
    this.setMeta(ctx, r.index);
    if (r.value.length === 0 && prefix !== '') return { status: 404, headers: {}, body: '' };
    return this.json(ctx, r.value);
  }

  private conflicting(ctx: Ctx, ...flags: string[]): void {
    if (flags.filter((f) => ctx.query.has(f)).length > 1) {
      throw new HttpError(400, `Conflicting flags: ${encodeQuery(ctx.query)}\n`);
    }
  }

  private kvPut(ctx: Ctx, q: QueryOpts, key: string): Reply {
    if (key === '') throw new HttpError(400, 'Missing key name');
    this.conflicting(ctx, 'cas', 'acquire', 'release');
    const flags = ctx.query.has('flags') ? parseUint(ctx.query.get('flags') ?? '') : 0n;
    const cas = ctx.query.has('cas') ? parseUint(ctx.query.get('cas') ?? '') : undefined;
    const acquire = ctx.query.has('acquire') ? (ctx.query.get('acquire') ?? '') : undefined;
    const release = ctx.query.has('release') ? (ctx.query.get('release') ?? '') : undefined;
    const declared = Number(ctx.headers['content-length'] ?? ctx.body.length);
    if (declared > KV_MAX_VALUE_SIZE) {
      throw new HttpError(
        413,
        `Request body(${declared} bytes) too large, max size: ${KV_MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.`,
      );
    }
    this.forward(q.dc);
    this.resolveToken(ctx).require('key', 'write', key);
    const value = Buffer.from(ctx.body);

    if (acquire !== undefined) return this.json(ctx, this.kvLock(key, value, flags, acquire));
    if (release !== undefined) return this.json(ctx, this.kvUnlock(key, value, flags, release));
    if (cas !== undefined) {
      const existing = this.kvs.get(key);
      const index = this.bump();
      if (cas === 0n && existing) return this.json(ctx, false);
      if (cas !== 0n && (!existing || BigInt(existing.modifyIndex) !== cas)) return this.json(ctx, false);
      this.kvSet(key, value, flags, index);
      return this.json(ctx, true);
    }
    this.kvSet(key, value, flags, this.bump());
    return this.json(ctx, true);
  }

  /** state.kvsSetTxn: keeps CreateIndex and the lock holder; a no-op write keeps ModifyIndex. */
  private kvSet(key: string, value: Buffer, flags: bigint, index: number, lock?: { session: string; lockIndex: number }): void {
    const existing = this.kvs.get(key);
    const entry: KVEntry = {
      key,
      value,
      flags,
      session: lock ? lock.session : (existing?.session ?? ''),
      lockIndex: lock ? lock.lockIndex : 0,
      createIndex: existing?.createIndex ?? index,
      modifyIndex: index,
    };
    if (
      existing &&
      existing.value.equals(entry.value) &&
      existing.flags === entry.flags &&
      existing.session === entry.session &&
      existing.lockIndex === entry.lockIndex
    ) {
      return;
    }
    this.kvs.set(key, entry);
    this.tombstones.delete(key);
    this.idx.kv = index;
  }

  private kvLock(key: string, value: Buffer, flags: bigint, session: string): boolean {
    const index = this.bump();
    const delayedUntil = this.lockDelays.get(key);
    if (delayedUntil !== undefined && delayedUntil > Date.now()) return false;
    if (session === '') throw new HttpError(500, 'missing session');
    if (!this.sess.has(session)) throw new HttpError(500, `invalid session ${goQuote(session)}`);
    const existing = this.kvs.get(key);
    let lockIndex = 1;
    if (existing) {
      if (existing.session === session) lockIndex = existing.lockIndex;
      else if (existing.session !== '') return false;
      else lockIndex = existing.lockIndex + 1;
    }
    this.kvSet(key, value, flags, index, { session, lockIndex });
    return true;
  }

  private kvUnlock(key: string, value: Buffer, flags: bigint, session: string): boolean {
    const index = this.bump();
    if (session === '') throw new HttpError(500, 'missing session');
    const existing = this.kvs.get(key);
    if (!existing || existing.session !== session) return false;
    this.kvSet(key, value, flags, index, { session: '', lockIndex: existing.lockIndex });
    return true;
  }

  private kvDeleteKey(key: string, index: number): void {
    if (!this.kvs.delete(key)) return;
    this.tombstones.set(key, index);
    this.idx.kv = index;
  }

  private kvDelete(ctx: Ctx, q: QueryOpts, key: string): Reply {
    this.conflicting(ctx, 'recurse', 'cas');
    const recurse = ctx.query.has('recurse');
    if (!recurse && key === '') throw new HttpError(400, 'Missing key name');
    const cas = ctx.query.has('cas') ? parseUint(ctx.query.get('cas') ?? '') : undefined;
    this.forward(q.dc);
    this.resolveToken(ctx).require('key', 'write', key);
    const index = this.bump();
    if (cas !== undefined) {
      const existing = this.kvs.get(key);
      if (!existing) return this.json(ctx, true);
      if (BigInt(existing.modifyIndex) !== cas) return this.json(ctx, false);
      this.kvDeleteKey(key, index);
      return this.json(ctx, true);
    }
    if (recurse) for (const e of this.kvUnder(key)) this.kvDeleteKey(e.key, index);
    else this.kvDeleteKey(key, index);
    return this.json(ctx, true);
  }

  // ----- sessions ----------------------------------------------------------------------------

  private sessionCheckIds(s: SessionRec): string[] {
    return [...(s.checks ?? []), ...s.nodeChecks, ...(s.serviceChecks ?? []).map((c) => c.ID)];
  }

  private checkStatusOnNode(id: string): HealthStatus | undefined {
    if (id === SERF_CHECK_ID) return 'passing';
    return this.chks.get(id)?.status;
  }

  private sessionCreate(ctx: Ctx): Reply {
    const dc = this.parseDc(ctx);
    let name = '';
    let node = this.nodeName;
    let lockDelayNs = DEFAULT_LOCK_DELAY_NS;
    let behavior: string = 'release';
    let ttl = '';
    let checks: string[] | null = [SERF_CHECK_ID];
    let nodeChecks: string[] | null = [SERF_CHECK_ID];
    let serviceChecks: { ID: string; Namespace: string }[] | null = null;
    if (ctx.body.length > 0) {
      const body = decodeObject(ctx.body, 'structs.Session');
      if (has(body, 'Name')) name = getStr(body, 'Name');
      if (has(body, 'Node')) node = getStr(body, 'Node');
      if (has(body, 'Behavior')) behavior = getStr(body, 'Behavior');
      if (has(body, 'TTL')) ttl = getStr(body, 'TTL');
      if (has(body, 'LockDelay')) {
        let d = getDuration(body, 'LockDelay');
        if (d < LOCK_DELAY_MIN_THRESHOLD) d *= 1e9;
        lockDelayNs = d;
      }
      if (has(body, 'Checks')) checks = getStrArr(body, 'Checks');
      if (has(body, 'NodeChecks')) nodeChecks = getStrArr(body, 'NodeChecks');
      const sc = field(body, 'ServiceChecks');
      if (sc !== undefined && sc !== null) {
        if (!Array.isArray(sc)) throw decodeError('ServiceChecks', '[]structs.ServiceCheck', sc);
        serviceChecks = sc.map((c) => {
          if (!isObj(c)) throw decodeError('ServiceChecks', 'structs.ServiceCheck', c);
          return { ID: getStr(c, 'ID'), Namespace: getStr(c, 'Namespace') };
        });
      }
    }
    // fixupEmptySessionChecks (agent/session_endpoint.go)
    if (checks === null || checks.length === 0) nodeChecks = [];
    else if (checks.length === 1 && checks[0] === SERF_CHECK_ID) checks = null;
    else if (nodeChecks === null || nodeChecks.length === 0) checks = null;

    this.forward(dc);
    if (node === '') throw new HttpError(500, 'Must provide Node');
    this.resolveToken(ctx).require('session', 'write', node);
    if (behavior === '') behavior = 'release';
    if (behavior !== 'release' && behavior !== 'delete') throw new HttpError(500, `Invalid Behavior setting '${behavior}'`);
    let ttlNs = 0;
    if (ttl !== '') {
      try {
        ttlNs = parseGoDuration(ttl);
      } catch (err) {
        throw new HttpError(500, `Session TTL '${ttl}' invalid: ${(err as Error).message}`);
      }
      if (ttlNs !== 0 && (ttlNs < this.sessionTtlMinNs || ttlNs > SESSION_TTL_MAX_NS)) {
        throw new HttpError(
          500,
          `Invalid Session TTL '${ttlNs}', must be between [${formatGoDuration(this.sessionTtlMinNs)}=${formatGoDuration(SESSION_TTL_MAX_NS)}]`,
        );
      }
    }
    const rec: SessionRec = {
      id: randomUUID(),
      name,
      node,
      lockDelayNs,
      behavior: behavior === 'delete' ? 'delete' : 'release',
      ttl,
      ttlNs,
      nodeChecks: nodeChecks ?? [],
      serviceChecks,
      checks,
      createIndex: 0,
      modifyIndex: 0,
      createdAt: Date.now(),
      expiresAt: null,
    };
    const index = this.bump();
    if (node !== this.nodeName) throw new HttpError(500, 'Missing node registration');
    for (const id of this.sessionCheckIds(rec)) {
      const status = this.checkStatusOnNode(id);
      if (status === undefined) throw new HttpError(500, `Missing check '${id}' registration`);
      if (status === 'critical') throw new HttpError(500, `Check '${id}' is in critical state`);
    }
    rec.createIndex = rec.modifyIndex = index;
    this.sess.set(rec.id, rec);
    this.idx.sessions = index;
    this.armSessionTtl(rec);
    return this.json(ctx, { ID: rec.id });
  }

  /** Servers invalidate a TTL session SessionTTLMultiplier (2) x TTL after the last create/renew. */
  private armSessionTtl(s: SessionRec): void {
    clearTimeout(s.timer);
    if (s.ttlNs <= 0) return;
    const ms = (s.ttlNs * SESSION_TTL_MULTIPLIER) / 1e6;
    s.expiresAt = Date.now() + ms;
    // Server-side state: an expiry an hour away must not keep a finished test process alive.
    s.timer = setTimeout(() => this.invalidateSession(s.id, 'ttl'), ms);
    s.timer.unref();
  }

  private invalidateSession(id: string, reason: string): void {
    const s = this.sess.get(id);
    if (!s) return;
    clearTimeout(s.timer);
    const index = this.bump();
    this.sess.delete(id);
    this.idx.sessions = index;
    const delayMs = Math.min(s.lockDelayNs, MAX_LOCK_DELAY_NS) / 1e6;
    const now = Date.now();
    for (const e of [...this.kvs.values()]) {
      if (e.session !== id) continue;
      if (s.behavior === 'delete') this.kvDeleteKey(e.key, index);
      else this.kvSet(e.key, e.value, e.flags, index, { session: '', lockIndex: e.lockIndex });
      if (delayMs > 0) this.lockDelays.set(e.key, now + delayMs);
    }
    this.events.emit('session-invalidated', { ID: id, reason });
  }

  private invalidateSessionsForCheck(checkId: string): void {
    for (const s of [...this.sess.values()]) {
      if (this.sessionCheckIds(s).includes(checkId)) this.invalidateSession(s.id, 'check');
    }
  }

  private sessionDestroy(ctx: Ctx): Reply {
    const dc = this.parseDc(ctx);
    const id = ctx.rest;
    if (id === '') throw new HttpError(400, 'Missing session');
    this.forward(dc);
    const authz = this.resolveToken(ctx);
    const s = this.sess.get(id);
    if (s) {
      authz.require('session', 'write', s.node);
      this.invalidateSession(id, 'destroy');
    } else {
      this.bump();
    }
    return this.json(ctx, true);
  }

  private async sessionRead(
    ctx: Ctx,
    missing: string,
    aclName: string | undefined,
    pick: (all: SessionRec[]) => SessionRec[],
  ): Promise<Reply> {
    const q = this.parseQuery(ctx);
    if (missing !== '' && ctx.rest === '') throw new HttpError(400, missing);
    this.forward(q.dc);
    this.resolveToken(ctx).require('session', 'read', aclName);
    const r = await this.blocking(ctx, q, () => ({
      index: this.idx.sessions,
      value: pick([...this.sess.values()].sort((a, b) => a.id.localeCompare(b.id))).map((s) => this.sessionJson(s)),
    }));
    this.setMeta(ctx, r.index);
    return this.json(ctx, r.value);
  }

  private sessionInfo(ctx: Ctx): Promise<Reply> {
    return this.sessionRead(ctx, 'Missing session', this.sess.get(ctx.rest)?.node, (all) => all.filter((s) => s.id === ctx.rest));
  }

  private sessionNode(ctx: Ctx): Promise<Reply> {
    return this.sessionRead(ctx, 'Missing node name', ctx.rest, (all) => all.filter((s) => s.node.toLowerCase() === ctx.rest.toLowerCase()));
  }

  private sessionList(ctx: Ctx): Promise<Reply> {
    return this.sessionRead(ctx, '', undefined, (all) => all);
  }

  private sessionRenew(ctx: Ctx): Reply {
    const q = this.parseQuery(ctx);
    const id = ctx.rest;
    if (id === '') throw new HttpError(400, 'Missing session');
    this.forward(q.dc);
    const authz = this.resolveToken(ctx);
    const s = this.sess.get(id);
    if (!s) throw new HttpError(404, `Session id '${id}' not found`);
    authz.require('session', 'write', s.node);
    this.armSessionTtl(s);
    return this.json(ctx, [this.sessionJson(s)]);
  }
}

/** Starts a Consul agent double listening on 127.0.0.1 (see the module comment and DOUBLE.md). */
export async function startConsulDouble(opts: ConsulDoubleOptions = {}): Promise<ConsulDouble> {
  const double = new ConsulDoubleImpl(opts);
  await double.start();
  return double;
}
