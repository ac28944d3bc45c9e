// Consul connection settings: commander options, their environment variables (ours, EMPEROR_CONSUL_*,
// and Consul's own CONSUL_HTTP_*), and their validation into one config object.
//
// Two entry points:
// - resolveConsulConfig: `emperor run`. Registration is on only when an agent is named by
//   --consul-agent or EMPEROR_CONSUL_AGENT. CONSUL_HTTP_ADDR alone does not turn it on: it is
//   commonly exported for the consul CLI, and an emperor must not start registering vassals
//   somewhere just because a shell had it set.
// - resolveConsulClientConfig: the helper commands (discover, kv, session) and the library. They
//   always talk to some agent: --consul-agent, EMPEROR_CONSUL_AGENT, CONSUL_HTTP_ADDR, else
//   127.0.0.1:8500 (Consul's default).
//
// The token is best given through the environment (EMPEROR_CONSUL_TOKEN, CONSUL_HTTP_TOKEN) or a
// file (--consul-token-file, CONSUL_HTTP_TOKEN_FILE): a --consul-token value is visible in `ps`.
// It is wrapped in a Secret so it never reaches a log line, an error or a description.
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { checkDuration } from '../../config/duration.js';
import { parseHostPort, Secret } from '../shared.js';
export { Secret };
/** An agent address is host:port like any endpoint. */
export const parseAgentAddress = parseHostPort;


export type ConsulConsistency = 'default' | 'consistent' | 'stale';
export const CONSISTENCY_MODES: readonly ConsulConsistency[] = ['default', 'consistent', 'stale'];

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

/** `emperor run`'s Consul settings: the connection plus how services are registered. */
export interface ConsulConfig extends ConsulConnection {
  /** TTL of each service's `service:<id>` check; it is heartbeated every TTL/3. */
  readonly checkTtlMs: number;
  /** DeregisterCriticalServiceAfter of that check; 0 = never (Consul's "off"). */
  readonly deregisterCriticalAfterMs: number;
}

/** What commander hands over for the options added by addConsulOptions (all raw strings). */
export interface ConsulCliOptions {
  consulAgent?: string[];
  consulToken?: string;
  consulTokenFile?: string;
  consulScheme?: string;
  consulCacert?: string;
  consulDc?: string;
  consulConsistency?: string;
  consulDeregisterCriticalAfter?: string;
  consulCheckTtl?: string;
  /** Helper commands spell these --dc and --consistency. */
  dc?: string;
  consistency?: string;
}

export class ConsulConfigError extends Error {
  override readonly name = 'ConsulConfigError';
}

export const DEFAULT_CONSUL_AGENT = '127.0.0.1:8500';
export const DEFAULT_CHECK_TTL = '30s';
export const DEFAULT_DEREGISTER_CRITICAL_AFTER = '1m';
/** Below this, heartbeats (TTL/3) would be a busy loop. */
const MIN_CHECK_TTL_MS = 100;

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/**
 * Add the Consul options to `cmd`. With `registration: false` (the helper commands) only the
 * connection options are added: agent, token, token file, scheme and CA. No commander defaults
 * on purpose: the same options may sit on a parent and a subcommand, and a default on one would
 * hide a value given to the other (defaults are applied by the resolvers).
 */
export function addConsulOptions(cmd: Command, opts: { registration?: boolean } = {}): Command {
  const registration = opts.registration !== false;
  cmd
    .addOption(
      new Option(
        '--consul-agent <host:port>',
        registration
          ? 'register ready vassals with this Consul agent; repeat or comma-separate for failover [env EMPEROR_CONSUL_AGENT]'
          : `Consul agent; repeat or comma-separate for failover (default: ${DEFAULT_CONSUL_AGENT}) [env EMPEROR_CONSUL_AGENT, CONSUL_HTTP_ADDR]`,
      ).argParser(collect),
    )
    .addOption(
      new Option(
        '--consul-token-file <file>',
        'file holding the Consul ACL token (preferred over --consul-token) [env EMPEROR_CONSUL_TOKEN_FILE, CONSUL_HTTP_TOKEN_FILE]',
      ),
    )
    .addOption(
      new Option(
        '--consul-token <token>',
        'Consul ACL token; visible in ps: prefer EMPEROR_CONSUL_TOKEN / CONSUL_HTTP_TOKEN or --consul-token-file',
      ),
    )
    .addOption(
      new Option('--consul-scheme <scheme>', 'http or https (default: http) [env EMPEROR_CONSUL_SCHEME, CONSUL_HTTP_SSL=true]').choices([
        'http',
        'https',
      ]),
    )
    .addOption(new Option('--consul-cacert <file>', 'CA certificate (PEM) for https [env EMPEROR_CONSUL_CACERT, CONSUL_CACERT]'));
  if (registration) {
    cmd
      .addOption(new Option('--consul-dc <dc>', "datacenter for Consul reads and writes that take one (default: the agent's) [env EMPEROR_CONSUL_DC]"))
      .addOption(
        new Option('--consul-consistency <mode>', 'consistency mode of Consul reads that support one (default: default) [env EMPEROR_CONSUL_CONSISTENCY]').choices(
          CONSISTENCY_MODES,
        ),
      )
      .addOption(
        new Option(
          '--consul-deregister-critical-after <duration>',
          `Consul removes a service whose check stays critical this long, e.g. after the emperor was killed (Consul's minimum is 1m); 0s = never (default: ${DEFAULT_DEREGISTER_CRITICAL_AFTER}) [env EMPEROR_CONSUL_DEREGISTER_CRITICAL_AFTER]`,
        ),
      )
      .addOption(
        new Option(
          '--consul-check-ttl <duration>',
          `TTL of each service's health check, heartbeated every TTL/3 (default: ${DEFAULT_CHECK_TTL}) [env EMPEROR_CONSUL_CHECK_TTL]`,
        ),
      );
  }
  return cmd;
}

/** One setting's value and where it came from, so errors can name the flag or variable. */
interface Sourced {
  readonly value: string;
  readonly source: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** The first of these variables that is set and not empty (an empty VAR= counts as unset). */
function fromEnv(env: Env, ...names: string[]): Sourced | undefined {
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value !== '') return { value, source: name };
  }
  return undefined;
}

function pick(flagValue: string | undefined, flag: string, env: Env, ...names: string[]): Sourced | undefined {
  if (flagValue !== undefined) return { value: flagValue, source: flag };
  return fromEnv(env, ...names);
}

const fail = (message: string): never => {
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
  if (!parseAgentAddress(rest)) fail(`${source}: expected host:port (e.g. ${DEFAULT_CONSUL_AGENT}), got ${JSON.stringify(raw)}`);
  return { agent: rest, scheme };
}

function readFile(what: Sourced, kind: string): Buffer {
  try {
    return readFileSync(what.value);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (code ?? 'unreadable');
    return fail(`${what.source}: cannot read the ${kind} ${JSON.stringify(what.value)}: ${reason}`);
  }
}

function parseMs(what: Sourced): number {
  const checked = checkDuration(what.value);
  if (!checked.ok) return fail(`${what.source}: ${checked.problem}`);
  return checked.ms;
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
 * The token: a flag (--consul-token or --consul-token-file, not both), else our variables, else
 * Consul's. Within each family a token file beats a token value, as in Consul's own client.
 */
function resolveToken(opts: ConsulCliOptions, env: Env): Secret | undefined {
  if (opts.consulToken !== undefined && opts.consulTokenFile !== undefined) {
    fail('--consul-token and --consul-token-file were both given: use one (preferably the file)');
  }
  const candidates: Array<{ src: Sourced; file: boolean } | undefined> = [
    opts.consulTokenFile !== undefined ? { src: { value: opts.consulTokenFile, source: '--consul-token-file' }, file: true } : undefined,
    opts.consulToken !== undefined ? { src: { value: opts.consulToken, source: '--consul-token' }, file: false } : undefined,
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

interface ResolveMode {
  readonly registration: boolean;
  readonly dcFlag: string;
  readonly consistencyFlag: string;
}

function resolveConnection(opts: ConsulCliOptions, env: Env, agentSources: Sourced[], mode: ResolveMode): ConsulConnection {
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

  const schemeSrc = pick(opts.consulScheme, '--consul-scheme', env, 'EMPEROR_CONSUL_SCHEME');
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
  const caSrc = pick(opts.consulCacert, '--consul-cacert', env, 'EMPEROR_CONSUL_CACERT') ?? (scheme === 'https' ? fromEnv(env, 'CONSUL_CACERT') : undefined);
  if (caSrc && scheme !== 'https') {
    fail(`${caSrc.source} is only used with TLS: add --consul-scheme https (or an https:// agent address)`);
  }
  const ca = caSrc ? readFile(caSrc, 'CA certificate') : undefined;

  const token = resolveToken(opts, env);
  const authSrc = fromEnv(env, 'CONSUL_HTTP_AUTH');
  let basicAuth: Secret | undefined;
  if (authSrc) basicAuth = new Secret(authSrc.value);

  const dcFlagValue = mode.registration ? opts.consulDc : (opts.dc ?? opts.consulDc);
  const dcSrc = pick(dcFlagValue, mode.dcFlag, env, 'EMPEROR_CONSUL_DC');
  let dc: string | undefined;
  if (dcSrc) {
    dc = dcSrc.value.trim();
    if (!/^[A-Za-z0-9_.-]+$/.test(dc)) fail(`${dcSrc.source}: expected a datacenter name such as dc1, got ${JSON.stringify(dcSrc.value)}`);
  }

  const consistencyFlagValue = mode.registration ? opts.consulConsistency : (opts.consistency ?? opts.consulConsistency);
  const consistencySrc = pick(consistencyFlagValue, mode.consistencyFlag, env, 'EMPEROR_CONSUL_CONSISTENCY');
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

function agentFlagSources(opts: ConsulCliOptions): Sourced[] {
  return (opts.consulAgent ?? []).map((value) => ({ value, source: '--consul-agent' }));
}

/**
 * `emperor run`: turn parsed options plus the environment into a ConsulConfig, or undefined when
 * no agent is configured (--consul-agent / EMPEROR_CONSUL_AGENT; CONSUL_HTTP_ADDR alone does not
 * enable registration). Throws ConsulConfigError naming the flag or variable that is wrong.
 */
export function resolveConsulConfig(opts: ConsulCliOptions, env: Env = process.env): ConsulConfig | undefined {
  let agentSources = agentFlagSources(opts);
  if (agentSources.length === 0) {
    const e = fromEnv(env, 'EMPEROR_CONSUL_AGENT');
    if (e) agentSources = [e];
  }
  if (agentSources.length === 0) {
    const stray = (
      [
        [opts.consulToken, '--consul-token'],
        [opts.consulTokenFile, '--consul-token-file'],
        [opts.consulScheme, '--consul-scheme'],
        [opts.consulCacert, '--consul-cacert'],
        [opts.consulDc, '--consul-dc'],
        [opts.consulConsistency, '--consul-consistency'],
        [opts.consulDeregisterCriticalAfter, '--consul-deregister-critical-after'],
        [opts.consulCheckTtl, '--consul-check-ttl'],
      ] as const
    ).find(([v]) => v !== undefined);
    if (stray) fail(`${stray[1]} was given but no Consul agent: add --consul-agent HOST:PORT (or set EMPEROR_CONSUL_AGENT)`);
    return undefined;
  }
  const conn = resolveConnection(opts, env, agentSources, { registration: true, dcFlag: '--consul-dc', consistencyFlag: '--consul-consistency' });

  const ttlSrc = pick(opts.consulCheckTtl, '--consul-check-ttl', env, 'EMPEROR_CONSUL_CHECK_TTL') ?? { value: DEFAULT_CHECK_TTL, source: '--consul-check-ttl' };
  const checkTtlMs = parseMs(ttlSrc);
  if (checkTtlMs < MIN_CHECK_TTL_MS) fail(`${ttlSrc.source}: expected at least ${MIN_CHECK_TTL_MS}ms, got ${JSON.stringify(ttlSrc.value)}`);

  const dcsaSrc =
    pick(opts.consulDeregisterCriticalAfter, '--consul-deregister-critical-after', env, 'EMPEROR_CONSUL_DEREGISTER_CRITICAL_AFTER') ??
    ({ value: DEFAULT_DEREGISTER_CRITICAL_AFTER, source: '--consul-deregister-critical-after' });
  const deregisterCriticalAfterMs = parseMs(dcsaSrc);

  return { ...conn, checkTtlMs, deregisterCriticalAfterMs };
}

/**
 * The helper commands and the library: always a connection. Agents from --consul-agent,
 * EMPEROR_CONSUL_AGENT, CONSUL_HTTP_ADDR, else 127.0.0.1:8500. The datacenter and consistency
 * mode come from --dc / --consistency (or --consul-dc / --consul-consistency), EMPEROR_CONSUL_DC /
 * EMPEROR_CONSUL_CONSISTENCY.
 */
export function resolveConsulClientConfig(opts: ConsulCliOptions, env: Env = process.env): ConsulConnection {
  let agentSources = agentFlagSources(opts);
  if (agentSources.length === 0) {
    const e = fromEnv(env, 'EMPEROR_CONSUL_AGENT', 'CONSUL_HTTP_ADDR');
    agentSources = [e ?? { value: DEFAULT_CONSUL_AGENT, source: 'the default agent' }];
  }
  const dcFlag = opts.dc !== undefined ? '--dc' : '--consul-dc';
  const consistencyFlag = opts.consistency !== undefined ? '--consistency' : '--consul-consistency';
  return resolveConnection(opts, env, agentSources, { registration: false, dcFlag, consistencyFlag });
}

/** Go duration text for a whole number of milliseconds, as Consul reads durations ("30s", "1500ms"). */
export function goDuration(ms: number): string {
  const whole = Math.max(0, Math.round(ms));
  return whole % 1000 === 0 ? `${whole / 1000}s` : `${whole}ms`;
}
