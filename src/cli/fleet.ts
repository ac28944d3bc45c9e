// `emperor fleet deploy|remove|status`: fleet vassals in etcd, from anywhere that reaches it.
// deploy validates a file exactly as a node will (and as a local vassal file is validated) and
// writes nothing when it is invalid; the nodes place, claim and run it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { parseVassal as ParseVassal } from '../config/load.js';
import { classifyVassalFile, vassalNameProblem } from '../config/names.js';
import { MAX_VASSAL_FILE_BYTES, tooLarge } from '../config/read.js';
import type { VassalSpec } from '../config/spec.js';
import { claimsPrefix, specKey } from '../fleet/keys.js';
import { describePlacement, fleetStatus } from '../fleet/status.js';
import { prefixRange } from '../registries/etcd/keys.js';
import { mergedOptions, optionsAlsoBefore } from './option-position.js';
import { UsageError, withClient } from './service.js';
import { addEtcdOptions, EtcdConfigError, resolveEtcdConfig, type EtcdCliOptions, type EtcdConfig } from '../registries/etcd/options.js';


type Flags = EtcdCliOptions & { name?: string; json?: boolean; wait?: boolean };

const collectFlags = (cmd: Command): Flags => mergedOptions<Flags>(cmd);

function etcdConfig(flags: Flags): EtcdConfig {
  const cfg = resolveEtcdConfig(flags, process.env);
  if (!cfg) throw new UsageError('--etcd-endpoint is required (or set EMPEROR_ETCD_ENDPOINT / EMPUSA_ETCD_ENDPOINT): expected host:port');
  return cfg;
}

async function run(name: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    const usage = err instanceof UsageError || err instanceof EtcdConfigError;
    process.stderr.write(`emperor fleet ${name}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}

// The vassal parser (zod, yaml) is loaded only by the commands that use it: main.ts adds these
// commands to every emperor, which should stay light (the etcd client is loaded by withClient).
const parser = async (): Promise<typeof ParseVassal> => (await import('../config/load.js')).parseVassal;

/** Validate a file as a fleet vassal named `name`; the same ConfigError a node would report. */
async function validate(file: string, name: string): Promise<{ spec: VassalSpec; bytes: Buffer }> {
  let bytes: Buffer;
  try {
    const st = await fs.stat(file);
    if (!st.isFile()) throw new UsageError(`${file}: not a regular file`);
    if (st.size > MAX_VASSAL_FILE_BYTES) throw new UsageError(`${file}: ${tooLarge(st.size)}`);
    bytes = await fs.readFile(file);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const verdict = (await parser())(bytes, file, { fleetName: name });
  if (!verdict.ok) throw new UsageError(`invalid fleet vassal, nothing deployed: ${verdict.error.message}`);
  return { spec: verdict.spec, bytes };
}

async function deploy(file: string, flags: Flags): Promise<void> {
  const absolute = path.resolve(file);
  let name = flags.name;
  if (name === undefined) {
    const c = classifyVassalFile(path.basename(absolute));
    if (c.kind === 'ignored') throw new UsageError(`${file}: expected a vassal file named NAME.yaml, NAME.yml or NAME.json (or give --name)`);
    if (c.kind === 'bad-name') throw new UsageError(`${file}: invalid vassal name ${JSON.stringify(c.name)}: ${c.reason} (or give --name)`);
    name = c.name;
  } else {
    const problem = vassalNameProblem(name);
    if (problem !== undefined) throw new UsageError(`--name: ${problem}`);
  }
  // Nodes read a fleet document as YAML (JSON is YAML too); an .ini would mean something else there.
  if (path.extname(absolute) === '.ini') throw new UsageError(`${file}: a fleet vassal is a YAML or JSON file (uWSGI .ini vassals run from a vassals directory)`);
  const { spec, bytes } = await validate(absolute, name);
  const cfg = etcdConfig(flags);
  await withClient(cfg, async (client) => {
    await client.put(specKey(cfg.treeRoot, name)).value(bytes);
  });
  process.stdout.write(`deployed fleet vassal ${name} (${describePlacement(spec)}) to ${cfg.treeRoot}\n`);
}

async function remove(name: string, flags: Flags): Promise<void> {
  const problem = vassalNameProblem(name);
  if (problem !== undefined) throw new UsageError(`NAME: ${problem}`);
  const cfg = etcdConfig(flags);
  await withClient(cfg, async (client, etcd) => {
    const deleted = Number((await client.delete().key(specKey(cfg.treeRoot, name)).exec()).deleted);
    if (deleted === 0) {
      process.stderr.write(`emperor fleet remove: no fleet vassal named ${name} under ${cfg.treeRoot}\n`);
      return;
    }
    process.stdout.write(`removed fleet vassal ${name}\n`);
    if (flags.wait === false) return;
    // Each node stops its instance (deregister, drain, signal) and then gives its claim back.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const left = (await client.kv.range(prefixRange(claimsPrefix(cfg.treeRoot, name)))).kvs.length;
      if (left === 0) {
        process.stdout.write(`all instances of ${name} stopped\n`);
        return;
      }
      if (Date.now() > deadline) throw new etcd.EtcdRegistryError(`${left} instance(s) of ${name} still hold their claims after 60s; they stop when their nodes see the removal`, 'slow');
      await new Promise((r) => setTimeout(r, 200));
    }
  });
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

async function status(flags: Flags): Promise<void> {
  const cfg = etcdConfig(flags);
  const { readFleet } = await import('../fleet/snapshot.js');
  const snap = await withClient(cfg, (client) => readFleet(client, cfg.treeRoot));
  const parse = await parser();
  const s = fleetStatus(snap, cfg.treeRoot, (name, raw) => parse(raw, `etcd:${specKey(cfg.treeRoot, name)}`, { fleetName: name }));
  if (flags.json) {
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return;
  }
  const out: string[] = [];
  out.push(s.nodes.length === 0 ? `no fleet nodes under ${cfg.treeRoot}` : table([['NODE', 'HOST', 'PID', 'ALIVE', 'VASSALS', 'FLEET', 'LOAD'], ...s.nodes.map((n) => [n.name, n.host, String(n.pid || '-'), n.alive ? 'yes' : 'no', String(n.vassals), String(n.instances), n.load.toFixed(2)])]));
  out.push('');
  if (s.vassals.length === 0) out.push('no fleet vassals');
  else {
    const rows = [['VASSAL', 'PLACEMENT', 'NODE', 'STATE', 'PID', 'HEALTH']];
    for (const v of s.vassals) {
      if (v.instances.length === 0) rows.push([v.name, v.placement ?? '-', '-', v.error ? 'invalid' : 'pending', '-', '-']);
      for (const [i, inst] of v.instances.entries()) rows.push([i === 0 ? v.name : '', i === 0 ? (v.placement ?? '-') : '', inst.node, inst.state, inst.pid === null ? '-' : String(inst.pid), inst.health ?? '-']);
      if (v.instances.length > 0 && v.pending > 0) rows.push(['', '', `(${v.pending} pending)`, '', '', '']);
    }
    out.push(table(rows));
    for (const v of s.vassals) if (v.error) out.push(`${v.name}: ${v.error}`);
  }
  for (const b of s.invalidKeys) out.push(`ignored key ${JSON.stringify(b.key)}: ${b.reason}`);
  process.stdout.write(out.join('\n') + '\n');
}

/**
 * `emperor fleet …`; the etcd options work before `fleet`, on it and on each subcommand, as for
 * `service` (`emperor --etcd-endpoint e:2379 fleet status`, `emperor fleet status --etcd-endpoint …`).
 */
export function addFleetCommands(program: Command): void {
  const fleet = program.command('fleet').description('deploy, remove and inspect fleet vassals (placed on emperors started with --fleet)');
  optionsAlsoBefore(addEtcdOptions(fleet, { leaseTtl: false }));
  const dep = fleet
    .command('deploy <file>')
    .description('validate a vassal file with a placement block and put it in etcd; nothing is written when it is invalid')
    .addOption(new Option('--name <name>', 'the fleet vassal name (default: the file name without extension)'));
  addEtcdOptions(dep, { leaseTtl: false }).action((file: string, _o: unknown, cmd: Command) => run('deploy', () => deploy(file, collectFlags(cmd))));
  const rm = fleet.command('remove <name>').description('remove a fleet vassal; waits until every instance has stopped').option('--no-wait', 'return once the removal is written');
  addEtcdOptions(rm, { leaseTtl: false }).action((name: string, _o: unknown, cmd: Command) => run('remove', () => remove(name, collectFlags(cmd))));
  const st = fleet.command('status').description('every node (alive, vassals, load) and every fleet vassal (where each instance runs, state, health)').option('--json', 'print JSON');
  addEtcdOptions(st, { leaseTtl: false }).action((_o: unknown, cmd: Command) => run('status', () => status(collectFlags(cmd))));
}
