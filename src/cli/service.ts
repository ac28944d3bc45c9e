// `emperor service …`: empusa's CLI (register / unregister / list) over the same etcd layout the
// emperor writes, so scripts written for empusa keep working with `emperor service` instead.
import { Option, type Command } from 'commander';
import type { Etcd3, Lease } from 'etcd3';
import { checkDuration } from '../config/duration.js';
import { mergedOptions, optionsAlsoBefore } from './option-position.js';
import { instanceKey, instancesPrefix, parseTypeName, prefixRange, segmentProblem, serviceKey, servicesPrefix } from '../registries/etcd/keys.js';
import { addEtcdOptions, EtcdConfigError, parseHostPort, resolveEtcdConfig, type EtcdCliOptions, type EtcdConfig } from '../registries/etcd/options.js';

/** Per etcd call attempt; a CLI can afford a little more patience than the emperor. */
const CLI_CALL_TIMEOUT_MS = 3000;
/** setTimeout's limit, in seconds. */
const MAX_REFRESH_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** A mistake in the invocation (exit code 2), as opposed to a failure talking to etcd (1). */
export class UsageError extends Error {}

interface ServiceFlags extends EtcdCliOptions {
  serviceType?: string;
  serviceName?: string;
  serviceLocation?: string;
  ttl?: string;
  refreshEvery?: string;
  json?: boolean;
}

interface Sourced {
  value: string;
  source: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Flag, then EMPEROR_SERVICE_*, then empusa's EMPUSA_SERVICE_* (empty variables are unset). */
function setting(flag: string | undefined, flagName: string, envSuffix: string, env: Env): Sourced | undefined {
  if (flag !== undefined) return { value: flag, source: flagName };
  for (const name of [`EMPEROR_${envSuffix}`, `EMPUSA_${envSuffix}`]) {
    const v = env[name];
    if (v !== undefined && v !== '') return { value: v, source: name };
  }
  return undefined;
}

function required(s: Sourced | undefined, flagName: string, envSuffix: string, expected: string): Sourced {
  if (!s) throw new UsageError(`${flagName} is required (or set EMPUSA_${envSuffix} / EMPEROR_${envSuffix}): expected ${expected}`);
  return s;
}

function segment(s: Sourced, what: string): string {
  const problem = segmentProblem(s.value);
  if (problem) throw new UsageError(`${s.source}: the service ${what} ${problem}`);
  return s.value;
}

/** empusa's whole seconds (`--ttl 30`); any duration ("1m", "90s") is taken too, rounded up to whole seconds. */
function seconds(s: Sourced): number {
  const d = checkDuration(s.value);
  if (!d.ok) throw new UsageError(`${s.source}: expected a number of seconds (at least 1) or a duration like 30s or 2m, got ${JSON.stringify(s.value)}`);
  if (d.ms < 1000) throw new UsageError(`${s.source}: expected at least 1 second (etcd leases count whole seconds), got ${JSON.stringify(s.value)}`);
  return Math.ceil(d.ms / 1000);
}


function etcdConfig(flags: ServiceFlags, env: Env): EtcdConfig {
  const cfg = resolveEtcdConfig(flags, env);
  if (!cfg) {
    throw new UsageError('--etcd-endpoint is required (or set EMPUSA_ETCD_ENDPOINT / EMPEROR_ETCD_ENDPOINT): expected host:port');
  }
  return cfg;
}

/** "emperor service register" or, run as empusa, "empusa service register": how messages start. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Turn every failure into one line on stderr and an exit code; never a stack trace. */
async function run(cmd: Command, fn: (flags: ServiceFlags, prefix: string) => Promise<void>): Promise<void> {
  const prefix = commandPath(cmd);
  try {
    await fn(mergedOptions<ServiceFlags>(cmd), prefix);
  } catch (err) {
    const usage = err instanceof UsageError || err instanceof EtcdConfigError;
    process.stderr.write(`${prefix}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}

/**
 * etcd's client library (gRPC, protobuf: a third of an idle emperor's memory) is loaded by the
 * commands that talk to etcd, not by every start of the CLI.
 */
async function etcdLibrary() {
  const [client, { EtcdLeaseInvalidError }] = await Promise.all([import('../registries/etcd/client.js'), import('etcd3')]);
  return { ...client, EtcdLeaseInvalidError };
}
export type EtcdLibrary = Awaited<ReturnType<typeof etcdLibrary>>;

/** Run fn with an etcd client, turning etcd errors into short EtcdRegistryErrors. */
export async function withClient<T>(cfg: EtcdConfig, fn: (client: Etcd3, etcd: EtcdLibrary) => Promise<T>): Promise<T> {
  const etcd = await etcdLibrary();
  const client = etcd.createEtcdClient(cfg, { callTimeoutMs: CLI_CALL_TIMEOUT_MS });
  try {
    return await fn(client, etcd);
  } catch (err) {
    if (err instanceof UsageError || err instanceof etcd.EtcdRegistryError) throw err;
    throw new etcd.EtcdRegistryError(etcd.describeEtcdError(err, cfg), 'other');
  } finally {
    client.close();
  }
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
};

async function register(flags: ServiceFlags, env: Env, prefix: string): Promise<void> {
  const type = segment(required(setting(flags.serviceType, '--service-type', 'SERVICE_TYPE', env), '--service-type', 'SERVICE_TYPE', 'a service type such as http'), 'type');
  const name = segment(required(setting(flags.serviceName, '--service-name', 'SERVICE_NAME', env), '--service-name', 'SERVICE_NAME', 'an instance name'), 'name');
  const locSrc = required(setting(flags.serviceLocation, '--service-location', 'SERVICE_LOCATION', env), '--service-location', 'SERVICE_LOCATION', 'host:port');
  const location = locSrc.value.trim();
  if (!parseHostPort(location)) throw new UsageError(`${locSrc.source}: expected host:port (e.g. 10.0.0.5:8080), got ${JSON.stringify(locSrc.value)}`);
  const ttlSrc = setting(flags.ttl, '--ttl', 'SERVICE_TTL', env);
  const refreshSrc = setting(flags.refreshEvery, '--refresh-every', 'SERVICE_REFRESH_EVERY', env);
  const ttl = ttlSrc ? seconds(ttlSrc) : undefined;
  const refresh = refreshSrc ? seconds(refreshSrc) : undefined;
  if (refresh !== undefined) {
    if (ttl === undefined) throw new UsageError(`${refreshSrc!.source} needs --ttl: refreshing only makes sense for a registration that expires`);
    if (refresh >= ttl) throw new UsageError(`${refreshSrc!.source} (${refresh}s) must be shorter than ${ttlSrc!.source} (${ttl}s), or the registration expires between refreshes`);
    if (refresh > MAX_REFRESH_SECONDS) throw new UsageError(`${refreshSrc!.source}: at most ${MAX_REFRESH_SECONDS} seconds`);
  }
  const cfg = etcdConfig(flags, env);
  const key = Buffer.from(serviceKey(cfg.treeRoot, type, name));
  const value = Buffer.from(location);
  const what = `${type}/${name}`;

  await withClient(cfg, async (client, etcd) => {
    if (ttl === undefined) {
      await client.kv.put({ key, value });
      process.stdout.write(`registered ${what} at ${location}\n`);
      return;
    }
    const grant = async (): Promise<{ lease: Lease; id: string }> => {
      const lease = client.lease(ttl, { autoKeepAlive: false });
      lease.on('lost', () => undefined);
      const id = await lease.grant();
      return { lease, id };
    };
    let { lease, id } = await grant();
    await client.kv.put({ key, value, lease: id });
    if (refresh === undefined) {
      // Leave the lease to expire: that is what --ttl without --refresh-every means.
      lease.release();
      process.stdout.write(`registered ${what} at ${location} (expires in ${ttl}s)\n`);
      return;
    }
    process.stdout.write(`registered ${what} at ${location} (ttl ${ttl}s, refreshed every ${refresh}s until SIGINT/SIGTERM)\n`);

    /** Extend the lease; re-register when it (or the key) is gone, e.g. after an etcd outage. */
    const refreshOnce = async (): Promise<void> => {
      try {
        await within(lease.keepaliveOnce(), CLI_CALL_TIMEOUT_MS, 'lease keepalive');
      } catch (err) {
        if (!(err instanceof etcd.EtcdLeaseInvalidError)) throw err;
        lease.release();
        ({ lease, id } = await grant());
      }
      // Put back a value that was deleted or changed by hand, without a write when all is well.
      await client.kv.txn({
        compare: [
          { key, target: 'Value', result: 'Equal', value },
          { key, target: 'Lease', result: 'Equal', lease: id },
        ],
        success: [],
        failure: [{ request_put: { key, value, lease: id } }],
      });
    };

    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let inFlight: Promise<void> = Promise.resolve();
      let stopping = false;
      const tick = (): void => {
        inFlight = refreshOnce().catch((err: unknown) => {
          process.stderr.write(`${prefix}: refresh of ${what} failed: ${etcd.describeEtcdError(err, cfg)}; retrying in ${refresh}s\n`);
        });
        void inFlight.then(() => {
          if (!stopping) timer = setTimeout(tick, refresh * 1000);
        });
      };
      const stop = (): void => {
        if (stopping) return;
        stopping = true;
        clearTimeout(timer);
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        // A refresh in flight could re-put the key after we delete it: let it finish first.
        void inFlight.then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      timer = setTimeout(tick, refresh * 1000);
    });

    // Revoking the lease deletes the key — and only if it is still ours.
    try {
      await within(lease.revoke(), 2 * CLI_CALL_TIMEOUT_MS, 'lease revocation');
    } catch (err) {
      throw new etcd.EtcdRegistryError(`could not unregister ${what}: ${etcd.describeEtcdError(err, cfg)}; it expires within ${ttl}s`, 'unreachable');
    }
    process.stdout.write(`unregistered ${what}\n`);
  });
}

async function unregister(flags: ServiceFlags, env: Env, prefix: string): Promise<void> {
  const type = segment(required(setting(flags.serviceType, '--service-type', 'SERVICE_TYPE', env), '--service-type', 'SERVICE_TYPE', 'a service type such as http'), 'type');
  const name = segment(required(setting(flags.serviceName, '--service-name', 'SERVICE_NAME', env), '--service-name', 'SERVICE_NAME', 'an instance name'), 'name');
  const cfg = etcdConfig(flags, env);
  const what = `${type}/${name}`;
  await withClient(cfg, async (client) => {
    const res = await client.kv.txn({
      compare: [],
      success: [
        { request_delete_range: { key: Buffer.from(serviceKey(cfg.treeRoot, type, name)) } },
        { request_range: { key: Buffer.from(instanceKey(cfg.treeRoot, type, name)) } },
      ],
      failure: [],
    });
    const deleted = Number(res.responses[0]?.response_delete_range.deleted ?? 0);
    // Like `rm -f`: unregistering what is not there is not an error (the goal state holds).
    if (deleted === 0) process.stderr.write(`${prefix}: nothing was registered as ${what} under ${cfg.treeRoot}\n`);
    else process.stdout.write(`unregistered ${what}\n`);
    const doc = res.responses[1]?.response_range.kvs[0];
    if (doc && doc.lease !== '0') {
      const info = parseDoc(doc.value.toString());
      const by = info?.emperorHost ? ` on ${info.emperorHost}${info.emperorPid ? ` (pid ${info.emperorPid})` : ''}` : '';
      process.stderr.write(`${prefix}: note: ${what} is managed by an emperor${by}, which registers it again while its vassal runs\n`);
    }
  });
}

interface DocInfo {
  vassal?: string;
  health?: string;
  host?: string;
  emperorHost?: string;
  emperorPid?: number;
}

function parseDoc(text: string): DocInfo | undefined {
  try {
    const d = JSON.parse(text) as Record<string, unknown>;
    const emperor = (d.emperor ?? {}) as Record<string, unknown>;
    const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
    return {
      vassal: str(d.vassal),
      health: str(d.health),
      host: str(d.host),
      emperorHost: str(emperor.host),
      emperorPid: typeof emperor.pid === 'number' ? emperor.pid : undefined,
    };
  } catch {
    return undefined;
  }
}

interface ListedService {
  type: string;
  name: string;
  location: string;
  vassal?: string;
  health?: string;
  host?: string;
}

async function list(flags: ServiceFlags, env: Env): Promise<void> {
  // Only the flag filters: EMPUSA_SERVICE_TYPE exported for `register` must not narrow a listing.
  const type = flags.serviceType !== undefined ? segment({ value: flags.serviceType, source: '--service-type' }, 'type') : undefined;
  const cfg = etcdConfig(flags, env);
  const svcPrefix = servicesPrefix(cfg.treeRoot, type);
  const instPrefix = instancesPrefix(cfg.treeRoot, type);
  const rows = await withClient(cfg, async (client) => {
    const res = await client.kv.txn({
      compare: [],
      success: [{ request_range: prefixRange(svcPrefix) }, { request_range: prefixRange(instPrefix) }],
      failure: [],
    });
    const docs = new Map<string, DocInfo>();
    for (const kv of res.responses[1]?.response_range.kvs ?? []) {
      const tn = parseTypeName(kv.key.toString(), instancesPrefix(cfg.treeRoot));
      const info = tn && parseDoc(kv.value.toString());
      if (tn && info) docs.set(`${tn.type}/${tn.name}`, info);
    }
    const out: ListedService[] = [];
    for (const kv of res.responses[0]?.response_range.kvs ?? []) {
      const tn = parseTypeName(kv.key.toString(), servicesPrefix(cfg.treeRoot));
      if (!tn) continue;
      const row: ListedService = { type: tn.type, name: tn.name, location: kv.value.toString() };
      const info = docs.get(`${tn.type}/${tn.name}`);
      if (info?.vassal !== undefined) row.vassal = info.vassal;
      if (info?.health !== undefined) row.health = info.health;
      if (info?.host !== undefined) row.host = info.host;
      out.push(row);
    }
    return out.sort((a, b) => (a.type === b.type ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.type < b.type ? -1 : 1));
  });
  if (flags.json) {
    process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    return;
  }
  if (rows.length === 0) {
    process.stderr.write(`no services registered under ${cfg.treeRoot}${type ? ` of type ${type}` : ''}\n`);
    return;
  }
  const table = [['TYPE', 'NAME', 'LOCATION'], ...rows.map((r) => [r.type, r.name, r.location])];
  const widths = [0, 1].map((i) => Math.max(...table.map((row) => row[i]!.length)));
  process.stdout.write(table.map((row) => `${row[0]!.padEnd(widths[0]!)}  ${row[1]!.padEnd(widths[1]!)}  ${row[2]}`).join('\n') + '\n');
}

const serviceOptions = {
  type: () => new Option('--service-type <type>', 'service type, e.g. http [env EMPUSA_SERVICE_TYPE, EMPEROR_SERVICE_TYPE]'),
  name: () => new Option('--service-name <name>', 'service instance name [env EMPUSA_SERVICE_NAME, EMPEROR_SERVICE_NAME]'),
};

/**
 * Add `service register|unregister|list` to the program. The etcd options are accepted before
 * `service`, on it and on each subcommand: `emperor --tree-root /x service register …`,
 * `emperor service --tree-root /x register …` and `emperor service register --tree-root /x …`
 * all work, as do empusa's environment variables.
 */
export function addServiceCommands(program: Command): Command {
  const env = process.env;
  const service = program.command('service').description('register services in etcd the way empusa does (register, unregister, list)');
  addEtcdOptions(service, { leaseTtl: false });
  optionsAlsoBefore(service);

  const reg = service
    .command('register')
    .description('put <tree-root>/services/<type>/<name> = <location>; with --ttl it expires unless refreshed')
    .addOption(serviceOptions.type())
    .addOption(serviceOptions.name())
    .addOption(new Option('--service-location <host:port>', 'where the service listens [env EMPUSA_SERVICE_LOCATION, EMPEROR_SERVICE_LOCATION]'))
    .addOption(new Option('--ttl <seconds>', 'remove the registration after this many seconds unless refreshed [env EMPUSA_SERVICE_TTL]'))
    .addOption(
      new Option('--refresh-every <seconds>', 'keep running, extend the TTL this often, unregister on SIGINT/SIGTERM [env EMPUSA_SERVICE_REFRESH_EVERY]'),
    );
  addEtcdOptions(reg, { leaseTtl: false }).action((_o: unknown, cmd: Command) => run(cmd, (flags, prefix) => register(flags, env, prefix)));

  const unreg = service
    .command('unregister')
    .description('delete <tree-root>/services/<type>/<name> (nothing registered is not an error)')
    .addOption(serviceOptions.type())
    .addOption(serviceOptions.name());
  addEtcdOptions(unreg, { leaseTtl: false }).action((_o: unknown, cmd: Command) => run(cmd, (flags, prefix) => unregister(flags, env, prefix)));

  const ls = service
    .command('list')
    .description('print registered services: TYPE NAME LOCATION')
    .addOption(new Option('--service-type <type>', 'only this service type'))
    .option('--json', 'print a JSON array (with health and vassal for services an emperor registered)');
  addEtcdOptions(ls, { leaseTtl: false }).action((_o: unknown, cmd: Command) => run(cmd, (flags) => list(flags, env)));
  return service;
}
