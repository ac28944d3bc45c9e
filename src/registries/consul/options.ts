// The Consul command-line options (commander), their EMPEROR_CONSUL_* variables, and what they
// resolve to. The connection itself (agents, token, TLS, dc) is resolved by consul/connection.ts,
// shared with the library; this module names the flags and adds the registration settings.
//
// Two entry points:
// - resolveConsulConfig: `emperor run`. Registration is on only when an agent is named by
//   --consul-agent or EMPEROR_CONSUL_AGENT. CONSUL_HTTP_ADDR alone does not turn it on: it is
//   commonly exported for the consul CLI, and an emperor must not start registering vassals
//   somewhere just because a shell had it set.
// - resolveConsulClientConfig: the helper commands (discover, kv, session). They always talk to
//   some agent: --consul-agent, EMPEROR_CONSUL_AGENT, CONSUL_HTTP_ADDR, else 127.0.0.1:8500
//   (Consul's default).
//
// The token is best given through the environment (EMPEROR_CONSUL_TOKEN, CONSUL_HTTP_TOKEN) or a
// file (--consul-token-file, CONSUL_HTTP_TOKEN_FILE): a --consul-token value is visible in `ps`.
import { Option, type Command } from 'commander';
import { checkDuration } from '../../config/duration.js';
import {
  CONSISTENCY_MODES,
  DEFAULT_CONSUL_AGENT,
  fail,
  fromEnv,
  resolveConnection,
  type ConnectionSettings,
  type ConsulConnection,
  type Env,
  type Sourced,
} from '../../consul/connection.js';

export interface ConsulConfig extends ConsulConnection {
  /** TTL of each service's two checks (`service:<id>`, `service:<id>:liveness`); heartbeated every TTL/3. */
  readonly checkTtlMs: number;
  /** DeregisterCriticalServiceAfter of the liveness check; 0 = never (Consul's "off"). */
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
          `Consul removes a service whose liveness check stays critical this long, i.e. after its emperor died (Consul's minimum is 1m; an unhealthy vassal is never removed); 0 = never (default: ${DEFAULT_DEREGISTER_CRITICAL_AFTER}) [env EMPEROR_CONSUL_DEREGISTER_CRITICAL_AFTER]`,
        ),
      )
      .addOption(
        new Option(
          '--consul-check-ttl <duration>',
          `TTL of each service's health and liveness checks, heartbeated every TTL/3 (default: ${DEFAULT_CHECK_TTL}) [env EMPEROR_CONSUL_CHECK_TTL]`,
        ),
      );
  }
  return cmd;
}

const given = (value: string | undefined, source: string): Sourced | undefined => (value === undefined ? undefined : { value, source });

function pick(flagValue: string | undefined, flag: string, env: Env, ...names: string[]): Sourced | undefined {
  return given(flagValue, flag) ?? fromEnv(env, ...names);
}

function parseMs(what: Sourced): number {
  const checked = checkDuration(what.value);
  if (!checked.ok) return fail(`${what.source}: ${checked.problem}`);
  return checked.ms;
}

/** The connection flags both entry points share. */
function connectionFlags(opts: ConsulCliOptions): ConnectionSettings {
  return {
    agents: (opts.consulAgent ?? []).map((value) => ({ value, source: '--consul-agent' })),
    token: given(opts.consulToken, '--consul-token'),
    tokenFile: given(opts.consulTokenFile, '--consul-token-file'),
    scheme: given(opts.consulScheme, '--consul-scheme'),
    caFile: given(opts.consulCacert, '--consul-cacert'),
  };
}

/**
 * `emperor run`: turn parsed options plus the environment into a ConsulConfig, or undefined when
 * no agent is configured (--consul-agent / EMPEROR_CONSUL_AGENT; CONSUL_HTTP_ADDR alone does not
 * enable registration). Throws ConsulConfigError naming the flag or variable that is wrong.
 */
export function resolveConsulConfig(opts: ConsulCliOptions, env: Env = process.env): ConsulConfig | undefined {
  const flags = connectionFlags(opts);
  const agents = flags.agents?.length ? flags.agents : [fromEnv(env, 'EMPEROR_CONSUL_AGENT')].filter((a) => a !== undefined);
  if (agents.length === 0) {
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
  const conn = resolveConnection(
    { ...flags, agents, dc: given(opts.consulDc, '--consul-dc'), consistency: given(opts.consulConsistency, '--consul-consistency') },
    env,
  );

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
 * The helper commands: always a connection. Agents from --consul-agent, EMPEROR_CONSUL_AGENT,
 * CONSUL_HTTP_ADDR, else 127.0.0.1:8500. The datacenter and consistency mode come from --dc /
 * --consistency (or --consul-dc / --consul-consistency), EMPEROR_CONSUL_DC /
 * EMPEROR_CONSUL_CONSISTENCY.
 */
export function resolveConsulClientConfig(opts: ConsulCliOptions, env: Env = process.env): ConsulConnection {
  return resolveConnection(
    {
      ...connectionFlags(opts),
      agentVariables: ['EMPEROR_CONSUL_AGENT', 'CONSUL_HTTP_ADDR'],
      dc: given(opts.dc, '--dc') ?? given(opts.consulDc, '--consul-dc'),
      consistency: given(opts.consistency, '--consistency') ?? given(opts.consulConsistency, '--consul-consistency'),
    },
    env,
  );
}
