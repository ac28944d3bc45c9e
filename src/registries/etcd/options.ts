// etcd connection settings: commander options, their environment variables (ours and empusa's),
// and their validation into one EtcdConfig. The password never travels through argv (visible in
// ps): it comes from the environment or a file, and is wrapped so it cannot be logged by accident.
import { Option, type Command } from 'commander';
import { checkDuration } from '../../config/duration.js';
import { parseHostPort, readSettingFile, Secret, type Sourced } from '../../net/endpoints.js';
import { segmentProblem } from './keys.js';
export { parseHostPort, Secret };


export interface EtcdTls {
  readonly ca: Buffer | undefined;
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
}

export interface EtcdConfig {
  /** "host:port" each, tried with failover. */
  readonly endpoints: readonly string[];
  readonly protocol: 'http' | 'https';
  /** Starts with "/", no trailing slash, never "/" alone. */
  readonly treeRoot: string;
  /** TTL of the emperor's lease, whole seconds (etcd's unit). */
  readonly leaseTtlSeconds: number;
  readonly tls: EtcdTls | undefined;
  readonly username: string | undefined;
  readonly password: Secret | undefined;
  /** For logs: endpoints, protocol, tree root, user — never the password. */
  readonly description: string;
}

/** What commander hands over for the options added by addEtcdOptions (all raw strings). */
export interface EtcdCliOptions {
  etcdEndpoint?: string[];
  etcdProtocol?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  treeRoot?: string;
  leaseTtl?: string;
}

export class EtcdConfigError extends Error {
  override readonly name = 'EtcdConfigError';
}

export const DEFAULT_LEASE_TTL = '10s';

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/**
 * Add the etcd connection options to `cmd`. Values are read by resolveEtcdConfig, which also
 * looks at the environment (EMPEROR_* first, then empusa's EMPUSA_*). No commander defaults on
 * purpose: the same options may sit on a parent and a subcommand, and a default on one would
 * hide a value given to the other.
 */
export function addEtcdOptions(cmd: Command, opts: { leaseTtl?: boolean } = {}): Command {
  cmd
    .addOption(
      new Option(
        '--etcd-endpoint <host:port>',
        'etcd endpoint; repeat or comma-separate for failover [env EMPEROR_ETCD_ENDPOINT, EMPUSA_ETCD_ENDPOINT]',
      ).argParser(collect),
    )
    .addOption(
      new Option('--etcd-protocol <protocol>', 'http or https (default: http) [env EMPEROR_ETCD_PROTOCOL, EMPUSA_ETCD_PROTOCOL]').choices([
        'http',
        'https',
      ]),
    )
    .addOption(new Option('--etcd-ca <file>', 'CA certificate (PEM) for https [env EMPEROR_ETCD_CA, EMPUSA_ETCD_CA]'))
    .addOption(new Option('--etcd-cert <file>', 'client certificate (PEM) for https [env EMPEROR_ETCD_CERT, EMPUSA_ETCD_CERT]'))
    .addOption(new Option('--etcd-key <file>', 'client private key (PEM) for https [env EMPEROR_ETCD_KEY, EMPUSA_ETCD_KEY]'))
    .addOption(new Option('--etcd-user <name>', 'etcd user name [env EMPEROR_ETCD_USER, EMPUSA_ETCD_USER]'))
    .addOption(
      new Option(
        '--etcd-password-file <file>',
        'file holding the etcd password; or set EMPEROR_ETCD_PASSWORD [env EMPEROR_ETCD_PASSWORD_FILE, EMPUSA_ETCD_PASSWORD_FILE]',
      ),
    )
    .addOption(new Option('--tree-root <path>', 'key prefix for all registry data, e.g. /services [env EMPEROR_TREE_ROOT, EMPUSA_TREE_ROOT]'));
  if (opts.leaseTtl !== false) {
    cmd.addOption(
      new Option('--lease-ttl <duration>', `TTL of the emperor's etcd lease (default: ${DEFAULT_LEASE_TTL}) [env EMPEROR_LEASE_TTL, EMPUSA_LEASE_TTL]`),
    );
  }
  return cmd;
}

type Env = Readonly<Record<string, string | undefined>>;

function fromEnv(env: Env, suffix: string): Sourced | undefined {
  for (const prefix of ['EMPEROR_', 'EMPUSA_']) {
    const name = prefix + suffix;
    const value = env[name];
    // An empty variable counts as unset, as shells make it easy to export VAR= by accident.
    if (value !== undefined && value !== '') return { value, source: name };
  }
  return undefined;
}

function pick(flagValue: string | undefined, flag: string, env: Env, suffix: string): Sourced | undefined {
  if (flagValue !== undefined) return { value: flagValue, source: flag };
  return fromEnv(env, suffix);
}

const fail = (message: string): never => {
  throw new EtcdConfigError(message);
};


function parseEndpoint(raw: string, source: string): { endpoint: string; scheme: 'http' | 'https' | undefined } {
  const text = raw.trim();
  let scheme: 'http' | 'https' | undefined;
  let rest = text;
  const m = /^(https?):\/\/(.*)$/i.exec(text);
  if (m) {
    scheme = m[1]!.toLowerCase() as 'http' | 'https';
    rest = m[2]!.replace(/\/+$/, '');
  }
  if (!parseHostPort(rest)) {
    fail(`${source}: expected host:port (e.g. 127.0.0.1:2379), got ${JSON.stringify(raw)}`);
  }
  return { endpoint: rest, scheme };
}

function readFile(what: Sourced, kind: string): Buffer {
  const read = readSettingFile(what, kind);
  return read.ok ? read.bytes : fail(read.problem);
}

/** Validate a tree root: "/x[/y...]" without empty segments; trailing slashes are dropped. */
export function normalizeTreeRoot(raw: string, source: string): string {
  const expected = 'an absolute key path such as /services';
  if (!raw.startsWith('/')) fail(`${source}: expected ${expected} (starting with "/"), got ${JSON.stringify(raw)}`);
  const root = raw.replace(/\/+$/, '');
  if (root === '') fail(`${source}: the tree root cannot be "/" alone: expected ${expected}`);
  if (root.includes('//')) fail(`${source}: expected ${expected} without empty segments, got ${JSON.stringify(raw)}`);
  // The same rules as a service type or name: no ".." (a root that only looks like it stays
  // inside another), no whitespace (it would break `service list` columns), no control characters.
  for (const segment of root.slice(1).split('/')) {
    const problem = segmentProblem(segment);
    if (problem !== undefined) fail(`${source}: expected ${expected}; each part between "/" ${problem}, got ${JSON.stringify(raw)}`);
  }
  return root;
}

/** Whole seconds of a lease TTL written as a duration ("10s", "1m"); rounded up, at least 1 s. */
function parseLeaseTtl(what: Sourced): number {
  const checked = checkDuration(what.value);
  if (!checked.ok) return fail(`${what.source}: ${checked.problem}`);
  if (checked.ms < 1000) fail(`${what.source}: expected at least 1s (etcd leases count whole seconds), got ${JSON.stringify(what.value)}`);
  return Math.ceil(checked.ms / 1000);
}

/** Password file contents without the final newline that editors and `echo` add. */
function readPassword(what: Sourced): Secret {
  const text = readFile(what, 'password file').toString('utf8').replace(/\r?\n$/, '');
  if (text === '') fail(`${what.source}: the password file ${JSON.stringify(what.value)} is empty`);
  return new Secret(text);
}

/**
 * Turn parsed options plus the environment into an EtcdConfig, or undefined when no etcd is
 * configured at all. Throws EtcdConfigError naming the flag or variable that is wrong.
 */
export function resolveEtcdConfig(opts: EtcdCliOptions, env: Env = process.env): EtcdConfig | undefined {
  // Endpoints: flags (each possibly comma-separated) win over EMPEROR_*, which wins over EMPUSA_*.
  let endpointSources: Sourced[] = [];
  if (opts.etcdEndpoint && opts.etcdEndpoint.length > 0) {
    endpointSources = opts.etcdEndpoint.map((value) => ({ value, source: '--etcd-endpoint' }));
  } else {
    const e = fromEnv(env, 'ETCD_ENDPOINT');
    if (e) endpointSources = [e];
  }
  const treeRootSrc = pick(opts.treeRoot, '--tree-root', env, 'TREE_ROOT');

  if (endpointSources.length === 0) {
    if (treeRootSrc) {
      fail(`${treeRootSrc.source} is set but no etcd endpoint is: add --etcd-endpoint HOST:PORT (or set EMPEROR_ETCD_ENDPOINT), or drop the tree root`);
    }
    const stray = (
      [
        [opts.etcdProtocol, '--etcd-protocol'],
        [opts.etcdCa, '--etcd-ca'],
        [opts.etcdCert, '--etcd-cert'],
        [opts.etcdKey, '--etcd-key'],
        [opts.etcdUser, '--etcd-user'],
        [opts.etcdPasswordFile, '--etcd-password-file'],
        [opts.leaseTtl, '--lease-ttl'],
      ] as const
    ).find(([v]) => v !== undefined);
    if (stray) fail(`${stray[1]} was given but no etcd endpoint: add --etcd-endpoint HOST:PORT (or set EMPEROR_ETCD_ENDPOINT)`);
    return undefined;
  }

  const endpoints: string[] = [];
  const schemes = new Set<'http' | 'https'>();
  for (const src of endpointSources) {
    for (const part of src.value.split(',')) {
      if (part.trim() === '') fail(`${src.source}: expected host:port[,host:port...], got an empty entry in ${JSON.stringify(src.value)}`);
      const { endpoint, scheme } = parseEndpoint(part, src.source);
      if (scheme) schemes.add(scheme);
      if (!endpoints.includes(endpoint)) endpoints.push(endpoint);
    }
  }

  const protocolSrc = pick(opts.etcdProtocol, '--etcd-protocol', env, 'ETCD_PROTOCOL');
  let protocol: 'http' | 'https';
  if (protocolSrc) {
    const p = protocolSrc.value.toLowerCase();
    if (p !== 'http' && p !== 'https') return fail(`${protocolSrc.source}: expected http or https, got ${JSON.stringify(protocolSrc.value)}`);
    protocol = p;
    for (const s of schemes) {
      if (s !== protocol) fail(`an etcd endpoint says ${s}:// but ${protocolSrc.source} is ${protocol}: make them agree`);
    }
  } else {
    if (schemes.size > 1) fail('etcd endpoints mix http:// and https://: use one protocol for all');
    protocol = schemes.values().next().value ?? 'http';
  }

  if (!treeRootSrc) {
    return fail('--tree-root is required with an etcd endpoint (or set EMPEROR_TREE_ROOT / EMPUSA_TREE_ROOT): expected an absolute key path such as /services');
  }
  const treeRoot = normalizeTreeRoot(treeRootSrc.value, treeRootSrc.source);

  const ttlSrc = pick(opts.leaseTtl, '--lease-ttl', env, 'LEASE_TTL');
  const leaseTtlSeconds = parseLeaseTtl(ttlSrc ?? { value: DEFAULT_LEASE_TTL, source: '--lease-ttl' });

  // TLS material.
  const caSrc = pick(opts.etcdCa, '--etcd-ca', env, 'ETCD_CA');
  const certSrc = pick(opts.etcdCert, '--etcd-cert', env, 'ETCD_CERT');
  const keySrc = pick(opts.etcdKey, '--etcd-key', env, 'ETCD_KEY');
  let tls: EtcdTls | undefined;
  if (caSrc || certSrc || keySrc) {
    if (protocol !== 'https') {
      const first = (caSrc ?? certSrc ?? keySrc)!;
      fail(`${first.source} is only used with TLS: add --etcd-protocol https (or set EMPEROR_ETCD_PROTOCOL=https)`);
    }
    if (certSrc && !keySrc) fail(`${certSrc.source} needs a private key too: add --etcd-key FILE`);
    if (keySrc && !certSrc) fail(`${keySrc.source} needs a certificate too: add --etcd-cert FILE`);
    tls = {
      ca: caSrc ? readFile(caSrc, 'CA certificate') : undefined,
      cert: certSrc ? readFile(certSrc, 'client certificate') : undefined,
      key: keySrc ? readFile(keySrc, 'client key') : undefined,
    };
  }

  // Auth: the user from a flag or env; the password only from env or a file.
  const userSrc = pick(opts.etcdUser, '--etcd-user', env, 'ETCD_USER');
  const passwordFileSrc = pick(opts.etcdPasswordFile, '--etcd-password-file', env, 'ETCD_PASSWORD_FILE');
  const passwordEnv = fromEnv(env, 'ETCD_PASSWORD');
  let password: Secret | undefined;
  // An explicit --etcd-password-file beats a password in the environment, which beats a file
  // named only by an environment variable (the more specific setting wins).
  if (passwordFileSrc && passwordFileSrc.source === '--etcd-password-file') password = readPassword(passwordFileSrc);
  else if (passwordEnv) password = new Secret(passwordEnv.value);
  else if (passwordFileSrc) password = readPassword(passwordFileSrc);
  let username: string | undefined;
  if (userSrc) {
    username = userSrc.value;
    // eslint-disable-next-line no-control-regex
    if (username.trim() === '' || /[\u0000-\u001f\u007f]/.test(username)) fail(`${userSrc.source}: expected a user name, got ${JSON.stringify(username)}`);
    if (!password) {
      fail(`${userSrc.source} needs a password: set EMPEROR_ETCD_PASSWORD or pass --etcd-password-file FILE (never on the command line)`);
    }
  } else if (password) {
    const from = passwordFileSrc?.source ?? passwordEnv?.source ?? 'a password';
    fail(`${from} gives an etcd password but no user: add --etcd-user NAME (or set EMPEROR_ETCD_USER)`);
  }

  const details = protocol === 'https' ? ['https', `tree root ${treeRoot}`] : [`tree root ${treeRoot}`];
  if (username) details.push(`user ${username}`);
  return {
    endpoints,
    protocol,
    treeRoot,
    leaseTtlSeconds,
    tls,
    username,
    password,
    description: `etcd ${endpoints.join(',')} (${details.join(', ')})`,
  };
}
