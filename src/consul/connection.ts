// Where and how to reach Consul: settings (each with the name of where it came from, so errors
// can name the flag, option or variable) plus the environment, validated into one connection.
// The environment variables are ours (EMPEROR_CONSUL_*) and Consul's own (CONSUL_HTTP_*), read as
// the consul CLI reads them. The command line (registries/consul/options.ts) and the library
// (index.ts) both hand their settings to resolveConnection; neither knows the other.
//
// The token is wrapped in a Secret so it never reaches a log line, an error or a description.
import { parseHostPort, readSettingFile, Secret, type Sourced } from '../net/endpoints.js';

export type ConsulConsistency = 'default' | 'consistent' | 'stale';
export const CONSISTENCY_MODES: readonly ConsulConsistency[] = ['default', 'consistent', 'stale'];

/** Consul's own default agent. */
export const DEFAULT_CONSUL_AGENT = '127.0.0.1:8500';

/** Where and how to reach Consul: what the client needs (helpers and the adapter alike). */
export interface ConsulConnection {
  /** "host:port" each ("[v6]:port" for IPv6), tried in order with failover. */
  readonly agents: readonly string[];
  readonly scheme: 'http' | 'https';
  /** CA bundle (PEM) for https; undefined = the system's roots. */
  readonly ca: Buffer | undefined;
  /** ACL token, sent as X-Consul-Token. */
  readonly token: Secret | undefined;
  /** HTTP basic auth "user:password" from CONSUL_HTTP_AUTH (as the consul CLI reads it). */
  readonly basicAuth: Secret | undefined;
  /** ?dc= on the endpoints that take it (catalog, health, KV, session); undefined = the agent's. */
  readonly dc: string | undefined;
  /** Applied to reads that support it (catalog, health, KV get, session info/node/list). */
  readonly consistency: ConsulConsistency;
  /** For logs: agents, scheme, dc, whether a token is set — never the token. */
  readonly description: string;
}

export class ConsulConfigError extends Error {
  override readonly name = 'ConsulConfigError';
}

export type { Sourced };

/** What the caller was given; anything left out is looked up in the environment. */
export interface ConnectionSettings {
  /** Each "host:port" or "http(s)://host:port", or several comma-separated. */
  readonly agents?: readonly Sourced[];
  /** Environment variables naming the agents when `agents` is empty, in order of preference. */
  readonly agentVariables?: readonly string[];
  readonly token?: Sourced;
  readonly tokenFile?: Sourced;
  readonly scheme?: Sourced;
  readonly caFile?: Sourced;
  readonly dc?: Sourced;
  readonly consistency?: Sourced;
}

export type Env = Readonly<Record<string, string | undefined>>;

/** The first of these variables that is set and not empty (an empty VAR= counts as unset). */
export function fromEnv(env: Env, ...names: string[]): Sourced | undefined {
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value !== '') return { value, source: name };
  }
  return undefined;
}

export const fail = (message: string): never => {
  throw new ConsulConfigError(message);
};

function parseAgent(raw: string, source: string): { agent: string; scheme: 'http' | 'https' | undefined } {
  const text = raw.trim();
  if (/^unix:/i.test(text)) fail(`${source}: unix sockets are not supported; expected host:port (e.g. ${DEFAULT_CONSUL_AGENT})`);
  let scheme: 'http' | 'https' | undefined;
  let rest = text;
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/.exec(text);
  if (m) {
    const s = m[1]!.toLowerCase();
    if (s !== 'http' && s !== 'https') fail(`${source}: expected an http:// or https:// address, got ${JSON.stringify(raw)}`);
    scheme = s as 'http' | 'https';
    rest = m[2]!.replace(/\/+$/, '');
  }
  if (!parseHostPort(rest)) fail(`${source}: expected host:port (e.g. ${DEFAULT_CONSUL_AGENT}), got ${JSON.stringify(raw)}`);
  return { agent: rest, scheme };
}

function readFile(what: Sourced, kind: string): Buffer {
  const read = readSettingFile(what, kind);
  return read.ok ? read.bytes : fail(read.problem);
}

/** Go's strconv.ParseBool, as the consul CLI reads CONSUL_HTTP_SSL. */
function goBool(what: Sourced): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(what.value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(what.value)) return false;
  return fail(`${what.source}: expected true or false, got ${JSON.stringify(what.value)}`);
}

/** Consul tokens are UUIDs; anything else must at least survive an HTTP header. */
const HEADER_SAFE = /^[\x21-\x7e]+$/;

/**
 * The token: a given one (token or token file, not both), else our variables, else Consul's.
 * Within each family a token file beats a token value, as in Consul's own client.
 */
function resolveToken(settings: ConnectionSettings, env: Env): Secret | undefined {
  if (settings.token !== undefined && settings.tokenFile !== undefined) {
    fail(`${settings.token.source} and ${settings.tokenFile.source} were both given: use one (preferably the file)`);
  }
  const candidates: Array<{ src: Sourced; file: boolean } | undefined> = [
    settings.tokenFile !== undefined ? { src: settings.tokenFile, file: true } : undefined,
    settings.token !== undefined ? { src: settings.token, file: false } : undefined,
  ];
  for (const [name, file] of [
    ['EMPEROR_CONSUL_TOKEN_FILE', true],
    ['EMPEROR_CONSUL_TOKEN', false],
    ['CONSUL_HTTP_TOKEN_FILE', true],
    ['CONSUL_HTTP_TOKEN', false],
  ] as const) {
    const src = fromEnv(env, name);
    candidates.push(src ? { src, file } : undefined);
  }
  const chosen = candidates.find((c) => c !== undefined);
  if (!chosen) return undefined;
  const { src, file } = chosen;
  // Never echo the value: it may be the token itself.
  if (!file) {
    const token = src.value.trim();
    if (token === '') fail(`${src.source}: the token is empty`);
    if (!HEADER_SAFE.test(token)) fail(`${src.source}: the token contains characters that cannot be sent in an HTTP header`);
    return new Secret(token);
  }
  const token = readFile(src, 'token file').toString('utf8').trim();
  if (token === '') fail(`${src.source}: the token file ${JSON.stringify(src.value)} is empty`);
  if (!HEADER_SAFE.test(token)) fail(`${src.source}: the token file ${JSON.stringify(src.value)} holds more than one line, or characters that cannot be sent in an HTTP header`);
  return new Secret(token);
}

/**
 * Validates the settings into a connection. Agents: the given ones, else the first of
 * `agentVariables` that is set, else 127.0.0.1:8500. Throws ConsulConfigError naming the
 * setting or variable that is wrong (never echoing a token).
 */
export function resolveConnection(settings: ConnectionSettings, env: Env): ConsulConnection {
  let agentSources = settings.agents ?? [];
  if (agentSources.length === 0) {
    agentSources = [fromEnv(env, ...(settings.agentVariables ?? [])) ?? { value: DEFAULT_CONSUL_AGENT, source: 'the default agent' }];
  }
  const agents: string[] = [];
  const schemes = new Set<'http' | 'https'>();
  for (const src of agentSources) {
    for (const part of src.value.split(',')) {
      if (part.trim() === '') fail(`${src.source}: expected host:port[,host:port...], got an empty entry in ${JSON.stringify(src.value)}`);
      const { agent, scheme } = parseAgent(part, src.source);
      if (scheme) schemes.add(scheme);
      if (!agents.includes(agent)) agents.push(agent);
    }
  }

  const schemeSrc = settings.scheme ?? fromEnv(env, 'EMPEROR_CONSUL_SCHEME');
  let scheme: 'http' | 'https';
  if (schemeSrc) {
    const s = schemeSrc.value.toLowerCase();
    if (s !== 'http' && s !== 'https') return fail(`${schemeSrc.source}: expected http or https, got ${JSON.stringify(schemeSrc.value)}`);
    scheme = s;
    for (const other of schemes) {
      if (other !== scheme) fail(`a Consul agent address says ${other}:// but ${schemeSrc.source} is ${scheme}: make them agree`);
    }
  } else if (schemes.size > 1) {
    return fail('Consul agent addresses mix http:// and https://: use one scheme for all');
  } else if (schemes.size === 1) {
    scheme = schemes.values().next().value!;
  } else {
    const ssl = fromEnv(env, 'CONSUL_HTTP_SSL');
    scheme = ssl && goBool(ssl) ? 'https' : 'http';
  }

  // A CA given to us explicitly must make sense; CONSUL_CACERT exported for other uses is ignored
  // over plain http, as the consul CLI ignores it.
  const caSrc = settings.caFile ?? fromEnv(env, 'EMPEROR_CONSUL_CACERT') ?? (scheme === 'https' ? fromEnv(env, 'CONSUL_CACERT') : undefined);
  if (caSrc && scheme !== 'https') {
    fail(`${caSrc.source} is only used with TLS: use the https scheme (--consul-scheme https, or an https:// agent address)`);
  }
  const ca = caSrc ? readFile(caSrc, 'CA certificate') : undefined;

  const token = resolveToken(settings, env);
  const authSrc = fromEnv(env, 'CONSUL_HTTP_AUTH');
  const basicAuth = authSrc ? new Secret(authSrc.value) : undefined;

  const dcSrc = settings.dc ?? fromEnv(env, 'EMPEROR_CONSUL_DC');
  let dc: string | undefined;
  if (dcSrc) {
    dc = dcSrc.value.trim();
    if (!/^[A-Za-z0-9_.-]+$/.test(dc)) fail(`${dcSrc.source}: expected a datacenter name such as dc1, got ${JSON.stringify(dcSrc.value)}`);
  }

  const consistencySrc = settings.consistency ?? fromEnv(env, 'EMPEROR_CONSUL_CONSISTENCY');
  let consistency: ConsulConsistency = 'default';
  if (consistencySrc) {
    const c = consistencySrc.value.trim().toLowerCase();
    if (!(CONSISTENCY_MODES as readonly string[]).includes(c)) {
      fail(`${consistencySrc.source}: expected default, consistent or stale, got ${JSON.stringify(consistencySrc.value)}`);
    }
    consistency = c as ConsulConsistency;
  }

  const details: string[] = [];
  if (scheme === 'https') details.push('https');
  if (dc) details.push(`dc ${dc}`);
  if (consistency !== 'default') details.push(`${consistency} reads`);
  if (token) details.push('token set');
  return {
    agents,
    scheme,
    ca,
    token,
    basicAuth,
    dc,
    consistency,
    description: `consul ${agents.join(',')}${details.length > 0 ? ` (${details.join(', ')})` : ''}`,
  };
}
