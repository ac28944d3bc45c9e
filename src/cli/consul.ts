// `emperor discover|kv|session …`: the Consul helpers of the uWSGI Consul draft as commands, over
// the typed library in src/consul. Every command takes the Consul connection options
// (--consul-agent, --consul-token-file, … or CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, …) plus --dc and
// --consistency (the latter applies to reads), before the group, on it or on the subcommand:
// `emperor --dc dc2 kv get k`, `emperor kv --dc dc2 get k` and `emperor kv get k --dc dc2` all work.
// Failures are one line on stderr and exit code 1; never a stack trace, never the token.
import { Option, type Command } from 'commander';
import { checkDuration } from '../config/duration.js';
import { Consul, type KVEntry, type SessionInfo } from '../consul/index.js';
import { goDuration } from '../consul/client.js';
import { CONSISTENCY_MODES } from '../consul/connection.js';
import { addConsulOptions, resolveConsulClientConfig, type ConsulCliOptions } from '../registries/consul/options.js';
import { mergedOptions, optionsAlsoBefore } from './option-position.js';

/** Per request attempt: a person at a terminal can wait a little longer than the emperor. */
const CLI_TIMEOUT_MS = 5000;

/** A mistake in the invocation, reported like any other failure (one line, exit 1). */
class UsageError extends Error {}
/** The operation ran but did not take (cas, lock, missing key): its own message, exit 1. */
class NotDone extends Error {}

interface Flags extends ConsulCliOptions {
  json?: boolean;
  recurse?: boolean;
  raw?: boolean;
  cas?: string;
  acquire?: string;
  release?: string;
  flags?: string;
  tag?: string[];
  passing?: boolean;
  name?: string;
  node?: string;
  lockDelay?: string;
  checks?: string;
  ttl?: string;
  behavior?: string;
}


async function run(name: string, cmd: Command, fn: (consul: Consul, flags: Flags) => Promise<void>): Promise<void> {
  let consul: Consul | undefined;
  try {
    const flags = mergedOptions<Flags>(cmd);
    consul = new Consul({ connection: resolveConsulClientConfig(flags, process.env), timeoutMs: CLI_TIMEOUT_MS });
    await fn(consul, flags);
  } catch (err) {
    const message = err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err);
    process.stderr.write(`emperor ${name}: ${message}\n`);
    process.exitCode = 1;
  } finally {
    consul?.close();
  }
}

const out = (text: string): void => void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);

/** JSON with bigints (KV flags are uint64) printed as plain numbers. */
function toJson(value: unknown): string {
  const MARK = '\u0000bigint:';
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${MARK}${v.toString()}` : v), 2).replace(/"\\u0000bigint:(\d+)"/g, '$1');
}

function uint(text: string, flag: string): bigint {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${flag}: expected a whole number (0 or more), got ${JSON.stringify(text)}`);
  const n = BigInt(text.trim());
  if (n > 18446744073709551615n) throw new UsageError(`${flag}: at most 18446744073709551615 (uint64), got ${text}`);
  return n;
}

function duration(text: string, flag: string): string {
  const d = checkDuration(text);
  if (!d.ok) throw new UsageError(`${flag}: ${d.problem}`);
  return goDuration(d.ms);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

function kvJson(e: KVEntry): Record<string, unknown> {
  return {
    Key: e.key,
    Value: e.text,
    Flags: e.flags,
    ...(e.session ? { Session: e.session } : {}),
    LockIndex: e.lockIndex,
    CreateIndex: e.createIndex,
    ModifyIndex: e.modifyIndex,
  };
}

function sessionTable(list: readonly SessionInfo[]): string {
  return table([
    ['ID', 'NAME', 'NODE', 'BEHAVIOR', 'TTL', 'LOCK-DELAY', 'CHECKS'],
    ...list.map((s) => [s.id, s.name || '-', s.node, s.behavior, s.ttl || '-', goDuration(s.lockDelayMs), s.checks.join(',') || '-']),
  ]);
}

/** Connection options plus --dc and --consistency, on a group and on each of its subcommands. */
function withOptions(cmd: Command): Command {
  return addConsulOptions(cmd, { registration: false })
    .addOption(new Option('--dc <dc>', "datacenter (default: the agent's) [env EMPEROR_CONSUL_DC]"))
    .addOption(new Option('--consistency <mode>', 'consistency mode of reads (default: default) [env EMPEROR_CONSUL_CONSISTENCY]').choices(CONSISTENCY_MODES));
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/**
 * Add `discover`, `kv` and `session` to the program (each with the Consul connection options).
 */
export function addConsulCommands(program: Command): void {
  // ----- discover ---------------------------------------------------------------------------
  const discover = optionsAlsoBefore(withOptions(program.command('discover').description('find services in Consul (catalog and health)')));

  withOptions(discover.command('services').description('list the services in the catalog with their tags').option('--json', 'print JSON')).action(
    (_o: unknown, cmd: Command) =>
      run('discover services', cmd, async (consul, f) => {
        const list = await consul.services();
        if (f.json) return out(toJson(list));
        if (list.length === 0) return;
        out(table(list.map((s) => [s.name, s.tags.join(',')])).replace(/ +$/gm, ''));
      }),
  );

  withOptions(
    discover
      .command('service <name>')
      .description('print address:port of each instance of a service (its address, else its node\'s)')
      .addOption(new Option('--tag <tag>', 'only instances with this tag; repeat to require several').argParser(collect))
      .option('--passing', 'only instances whose checks all pass')
      .option('--json', 'print JSON (id, address, port, tags, meta, node, status, checks)'),
  ).action((name: string, _o: unknown, cmd: Command) =>
    run('discover service', cmd, async (consul, f) => {
      const list = await consul.service(name, { tag: f.tag, passing: f.passing });
      if (f.json) return out(toJson(list));
      if (list.length === 0) {
        process.stderr.write(`emperor discover service: no ${f.passing ? 'passing ' : ''}instances of ${JSON.stringify(name)}\n`);
        return;
      }
      out(list.map((i) => i.location).join('\n'));
    }),
  );

  // ----- kv ---------------------------------------------------------------------------------
  const kv = optionsAlsoBefore(withOptions(program.command('kv').description("read and write Consul's key/value store")));

  withOptions(
    kv
      .command('get <key>')
      .description('print a value (decoded as UTF-8); with --recurse every key:value under the prefix')
      .option('--recurse', 'treat KEY as a prefix')
      .option('--raw', 'write the stored bytes exactly, without a newline')
      .option('--json', 'print the entry (entries) as JSON, with indexes, flags and lock session'),
  ).action((key: string, _o: unknown, cmd: Command) =>
    run('kv get', cmd, async (consul, f) => {
      if (f.raw && (f.recurse || f.json)) throw new UsageError(`--raw cannot be combined with ${f.recurse ? '--recurse' : '--json'}`);
      if (!f.recurse && key.replace(/^\/+/, '') === '') throw new UsageError('expected a key name (use --recurse for the whole store)');
      if (f.raw) {
        const bytes = await consul.kvGetRaw(key);
        if (!bytes) throw new NotDone(`no key ${JSON.stringify(key)}`);
        process.stdout.write(bytes);
        return;
      }
      if (f.recurse) {
        const list = await consul.kvGet(key, { recurse: true });
        if (list.length === 0) throw new NotDone(`no keys under ${JSON.stringify(key)}`);
        if (f.json) return out(toJson(list.map(kvJson)));
        out(list.map((e) => `${e.key}:${e.text}`).join('\n'));
        return;
      }
      const e = await consul.kvGet(key);
      if (!e) throw new NotDone(`no key ${JSON.stringify(key)}`);
      if (f.json) return out(toJson(kvJson(e)));
      process.stdout.write(`${e.text}\n`);
    }),
  );

  withOptions(
    kv
      .command('set <key> <value>')
      .description('write a value; exit 1 when a --cas, --acquire or --release does not take')
      .option('--cas <index>', "write only if the key's ModifyIndex is INDEX (0: only if it does not exist)")
      .option('--acquire <session>', 'write and take the lock for SESSION')
      .option('--release <session>', 'write and release the lock SESSION holds')
      .option('--flags <n>', 'opaque uint64 stored with the value (default 0)'),
  ).action((key: string, value: string, _o: unknown, cmd: Command) =>
    run('kv set', cmd, async (consul, f) => {
      const given = (['cas', 'acquire', 'release'] as const).filter((k) => f[k] !== undefined);
      if (given.length > 1) throw new UsageError(`--${given[0]} and --${given[1]} cannot be combined`);
      if (key.replace(/^\/+/, '') === '') throw new UsageError('expected a key name');
      const cas = f.cas !== undefined ? uint(f.cas, '--cas') : undefined;
      const flags = f.flags !== undefined ? uint(f.flags, '--flags') : undefined;
      for (const k of ['acquire', 'release'] as const) if (f[k] !== undefined && f[k].trim() === '') throw new UsageError(`--${k}: expected a session ID`);
      const ok = await consul.kvSet(key, value, { cas, acquire: f.acquire, release: f.release, flags });
      if (ok) return;
      if (cas !== undefined) {
        throw new NotDone(
          cas === 0n ? `${JSON.stringify(key)} was not written: it already exists (--cas 0)` : `${JSON.stringify(key)} was not written: its ModifyIndex is not ${cas} (it changed)`,
        );
      }
      if (f.acquire !== undefined) throw new NotDone(`lock on ${JSON.stringify(key)} not acquired: another session holds it, or its lock-delay is running`);
      throw new NotDone(`lock on ${JSON.stringify(key)} not released: session ${f.release} does not hold it`);
    }),
  );

  withOptions(
    kv
      .command('del <key>')
      .description('delete a key (or, with --recurse, a prefix); exit 1 when a --cas does not take')
      .option('--recurse', 'delete every key under the prefix KEY')
      .option('--cas <index>', "delete only if the key's ModifyIndex is INDEX"),
  ).action((key: string, _o: unknown, cmd: Command) =>
    run('kv del', cmd, async (consul, f) => {
      if (f.recurse && f.cas !== undefined) throw new UsageError('--recurse and --cas cannot be combined');
      if (!f.recurse && key.replace(/^\/+/, '') === '') throw new UsageError('expected a key name (use --recurse for a prefix)');
      const cas = f.cas !== undefined ? uint(f.cas, '--cas') : undefined;
      const ok = await consul.kvDel(key, { recurse: f.recurse, cas });
      if (!ok) {
        throw new NotDone(
          cas === 0n ? `${JSON.stringify(key)} was not deleted: --cas 0 never deletes an existing key` : `${JSON.stringify(key)} was not deleted: its ModifyIndex is not ${cas} (it changed)`,
        );
      }
    }),
  );

  // ----- session ----------------------------------------------------------------------------
  const session = optionsAlsoBefore(withOptions(program.command('session').description('Consul sessions (for locks and leader election)')));

  withOptions(
    session
      .command('create')
      .description('create a session and print its ID')
      .option('--name <name>', 'human-readable name')
      .option('--node <node>', "node the session belongs to (default: the agent's)")
      .option('--lock-delay <duration>', 'how long a lock it held stays unacquirable after it ends (Consul default 15s)')
      .option('--checks <ids>', 'comma-separated node check IDs to tie it to (default serfHealth; "" for none)')
      .option('--ttl <duration>', 'invalidate unless renewed within this (Consul takes 10s to 24h)')
      .addOption(new Option('--behavior <behavior>', 'what invalidation does to held locks (default release)').choices(['release', 'delete'])),
  ).action((_o: unknown, cmd: Command) =>
    run('session create', cmd, async (consul, f) => {
      const checks = f.checks === undefined ? undefined : f.checks.split(',').map((c) => c.trim()).filter((c) => c !== '');
      const id = await consul.sessionCreate({
        name: f.name,
        node: f.node,
        lockDelay: f.lockDelay !== undefined ? duration(f.lockDelay, '--lock-delay') : undefined,
        checks,
        ttl: f.ttl !== undefined ? duration(f.ttl, '--ttl') : undefined,
        behavior: f.behavior as 'release' | 'delete' | undefined,
      });
      out(id);
    }),
  );

  withOptions(session.command('destroy <id>').description('destroy a session (its locks are released or deleted per its behavior)')).action(
    (id: string, _o: unknown, cmd: Command) =>
      run('session destroy', cmd, async (consul) => {
        if (!(await consul.sessionDestroy(id))) throw new NotDone(`session ${id} was not destroyed`);
      }),
  );

  withOptions(session.command('info <id>').description('show one session').option('--json', 'print JSON')).action((id: string, _o: unknown, cmd: Command) =>
    run('session info', cmd, async (consul, f) => {
      const s = await consul.sessionInfo(id);
      if (!s) throw new NotDone(`no session ${id} (it expired, was destroyed, or never existed)`);
      out(f.json ? toJson(s) : sessionTable([s]));
    }),
  );

  withOptions(session.command('renew <id>').description('renew a TTL session').option('--json', 'print JSON')).action((id: string, _o: unknown, cmd: Command) =>
    run('session renew', cmd, async (consul, f) => {
      const s = await consul.sessionRenew(id);
      if (!s) throw new NotDone(`no session ${id} to renew (it expired, was destroyed, or never existed)`);
      out(f.json ? toJson(s) : sessionTable([s]));
    }),
  );

  withOptions(session.command('node <node>').description("list a node's sessions").option('--json', 'print JSON')).action((node: string, _o: unknown, cmd: Command) =>
    run('session node', cmd, async (consul, f) => {
      const list = await consul.sessionNode(node);
      if (f.json) return out(toJson(list));
      if (list.length > 0) out(sessionTable(list));
    }),
  );

  withOptions(session.command('list').description('list every session').option('--json', 'print JSON')).action((_o: unknown, cmd: Command) =>
    run('session list', cmd, async (consul, f) => {
      const list = await consul.sessionList();
      if (f.json) return out(toJson(list));
      if (list.length > 0) out(sessionTable(list));
    }),
  );
}
