// Fleet mode against a real three-member etcd cluster, with three real emperors as three nodes
// on this machine (distinct node names, state and vassal directories). An independent sampler
// reads /proc every 50 ms and counts the processes of each fleet vassal (by a command line no
// other process has); any sample with two copies of a singleton fails the test.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { after, before, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace, runCli, type CliResult } from './support/emperor.js';
import { startEtcdCluster, type EtcdCluster } from './support/etcd.js';
import { waitFor } from './support/wait.js';

/** Short enough for quick failovers, long enough that a busy machine renews in time. */
const TTL_S = 5;
const WAIT_MS = 60_000;

/** Counts processes whose command line is exactly `sleep <marker>`, every 50 ms. */
class Sampler {
  private readonly timer: NodeJS.Timeout;
  readonly violations: string[] = [];
  private readonly limits = new Map<string, number>();
  private readonly counts = new Map<string, number[]>();
  samples = 0;

  constructor() {
    this.timer = setInterval(() => this.sample(), 50);
  }

  /** Watch `marker`; more than `limit` copies at once is a violation. */
  watch(marker: string, limit: number): void {
    this.limits.set(marker, limit);
  }

  pids(marker: string): number[] {
    return this.counts.get(marker) ?? [];
  }

  private sample(): void {
    const found = new Map<string, number[]>();
    let entries: string[];
    try {
      entries = readdirSync('/proc');
    } catch {
      return;
    }
    for (const e of entries) {
      if (!/^\d+$/.test(e)) continue;
      let cmd: string;
      try {
        cmd = readFileSync(`/proc/${e}/cmdline`, 'latin1');
      } catch {
        continue;
      }
      if (!cmd.startsWith('sleep\0')) continue;
      const marker = cmd.slice(6).replace(/\0$/, '');
      if (!this.limits.has(marker)) continue;
      found.set(marker, [...(found.get(marker) ?? []), Number(e)]);
    }
    this.samples++;
    for (const marker of this.limits.keys()) {
      const pids = found.get(marker) ?? [];
      this.counts.set(marker, pids);
      const limit = this.limits.get(marker)!;
      if (pids.length > limit) this.violations.push(`${new Date().toISOString()}: ${pids.length} copies of ${marker} (pids ${pids.join(', ')}), at most ${limit} allowed`);
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}

let markerSeq = 0;
/** A command line no other process on the machine has: sleep for a day and a unique fraction. */
const newMarker = (): string => `86400.${process.pid}${String(++markerSeq).padStart(3, '0')}`;

describe('fleet mode', () => {
  let cluster: EtcdCluster;
  let client: Etcd3;
  let sampler: Sampler;
  let rootSeq = 0;
  const emperors: EmperorUnderTest[] = [];

  before(async () => {
    cluster = await startEtcdCluster(3);
    client = new Etcd3({ hosts: cluster.members.map((m) => m.clientUrl) });
    sampler = new Sampler();
  });

  after(async () => {
    await Promise.all(emperors.map((e) => e.stop('SIGKILL').catch(() => undefined)));
    sampler.close();
    client.close();
    await cluster.dispose();
    assert.deepEqual(sampler.violations, [], 'never more copies than the placement allows');
  });

  const etcdArgs = (root: string): string[] => ['--etcd-endpoint', cluster.endpoints, '--tree-root', root];

  async function startNode(root: string, name: string, extra: string[] = ['--fleet-allow-root']): Promise<EmperorUnderTest> {
    const ws = await makeWorkspace('emperor-fleet-');
    const emp = await EmperorUnderTest.start(ws, [...etcdArgs(root), '--lease-ttl', `${TTL_S}s`, '--fleet', '--node-name', name, ...extra]);
    emperors.push(emp);
    await emp.waitFor((e) => e.event === 'fleet-joined', `${name} joined`, 0, WAIT_MS);
    return emp;
  }

  async function fleet(args: string[], root: string): Promise<CliResult> {
    return runCli(['fleet', ...args, ...etcdArgs(root)]);
  }

  async function deploy(root: string, name: string, doc: object, extra: string[] = []): Promise<CliResult> {
    const dir = await fs.mkdtemp(path.join((await makeWorkspace('emperor-fleet-spec-')).root, 'spec-'));
    const file = path.join(dir, `${name}.json`);
    await fs.writeFile(file, JSON.stringify(doc));
    return fleet(['deploy', file, ...extra], root);
  }

  interface StatusJson {
    nodes: Array<{ name: string; host: string; pid: number; alive: boolean; vassals: number }>;
    vassals: Array<{ name: string; placement: string | null; error: string | null; instances: Array<{ node: string; state: string; pid: number | null; health: string | null }> }>;
  }

  async function status(root: string): Promise<StatusJson> {
    const r = await fleet(['status', '--json'], root);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as StatusJson;
  }

  /** The emperor whose node holds the only instance of `marker`. */
  function holderOf(nodes: EmperorUnderTest[], marker: string): EmperorUnderTest {
    const [pid] = sampler.pids(marker);
    assert.ok(pid !== undefined, `an instance of ${marker} runs`);
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const holder = nodes.find((n) => n.pid === ppid);
    assert.ok(holder, `the instance's parent ${ppid} is one of the emperors`);
    return holder;
  }

  const singleton = (marker: string, extra: Record<string, unknown> = {}): object => ({
    command: ['sleep', marker],
    placement: { replicas: 1 },
    stop: { timeout: '2s' },
    ...extra,
  });

  it('deploys a singleton onto exactly one node, shows it in status, and removes it', async () => {
    const root = `/fleet-${++rootSeq}`;
    const nodes = [await startNode(root, 'n1'), await startNode(root, 'n2'), await startNode(root, 'n3')];
    const marker = newMarker();
    sampler.watch(marker, 1);
    const r = await deploy(root, 'solo', singleton(marker));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /deployed fleet vassal solo \(replicas: 1\)/);
    await waitFor(() => sampler.pids(marker).length === 1, 'one instance running', WAIT_MS);
    const holder = holderOf(nodes, marker);
    await waitFor(async () => (await status(root)).vassals[0]?.instances[0]?.state === 'running', 'status shows it running', WAIT_MS);
    const s = await status(root);
    assert.deepEqual(
      s.nodes.map((n) => [n.name, n.alive]),
      [
        ['n1', true],
        ['n2', true],
        ['n3', true],
      ],
    );
    assert.equal(s.vassals.length, 1);
    assert.equal(s.vassals[0]!.name, 'solo');
    assert.equal(s.vassals[0]!.placement, 'replicas: 1');
    assert.equal(s.vassals[0]!.instances.length, 1);
    assert.equal(s.vassals[0]!.instances[0]!.pid, sampler.pids(marker)[0]);
    assert.equal(s.nodes.find((n) => n.pid === holder.pid)?.name, s.vassals[0]!.instances[0]!.node);
    // A fleet instance is a vassal like any other on its node: a status row and a log file.
    const row = (await holder.status()).vassals.find((v) => v.name === 'solo');
    assert.equal(row?.state, 'running');
    assert.equal(row?.file, `etcd:${root}/fleet/vassals/solo`);

    // The etcd options and variables of `service`, before or after the subcommand.
    const before = await runCli([...etcdArgs(root), 'fleet', 'status', '--json']);
    assert.equal(before.code, 0, before.stderr);
    assert.equal((JSON.parse(before.stdout) as StatusJson).vassals[0]?.name, 'solo');
    const fromEnv = await runCli(['fleet', 'status', '--json'], { ...process.env, EMPUSA_ETCD_ENDPOINT: cluster.endpoints, EMPEROR_TREE_ROOT: root });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.equal((JSON.parse(fromEnv.stdout) as StatusJson).vassals[0]?.name, 'solo');
    const table = await fleet(['status'], root);
    assert.match(table.stdout, /^solo\s+replicas: 1\s+n\d\s+running\s+\d+\s+passing$/m);

    const rm = await fleet(['remove', 'solo'], root);
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, /all instances of solo stopped/);
    await waitFor(() => sampler.pids(marker).length === 0, 'the instance is gone', WAIT_MS);
    assert.equal((await client.getAll().prefix(`${root}/fleet/claims/`).keys()).length, 0, 'no claims left');
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it('refuses invalid fleet vassals at deploy with a clear error, and writes nothing', async () => {
    const root = `/fleet-${++rootSeq}`;
    const cases: Array<[string, object, RegExp]> = [
      ['noplace', { command: ['sleep', '1'] }, /placement: a fleet vassal needs a placement block/],
      ['relcwd', { command: ['sleep', '1'], cwd: 'app', placement: { replicas: 1 } }, /cwd: expected an absolute directory/],
      ['relcmd', { command: ['./server', '1'], placement: { replicas: 1 } }, /command\[0\]: must be absolute or a bare program name/],
      ['badplace', { command: ['sleep', '1'], placement: { replicas: 2, all: true } }, /placement: expected only one of replicas, nodes or all/],
      ['zero', { command: ['sleep', '1'], placement: { replicas: 0 } }, /placement\.replicas: expected a whole number of at least 1/],
      ['rootuser', { command: ['sleep', '1'], user: 'root', placement: { replicas: 1 } }, /user: a fleet vassal never runs as root/],
      ['typo', { command: ['sleep', '1'], placment: { replicas: 1 } }, /placment: unknown field .*did you mean placement\?/],
    ];
    for (const [name, doc, expected] of cases) {
      const r = await deploy(root, name, doc);
      assert.equal(r.code, 2, `${name}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, expected, name);
      assert.match(r.stderr, /nothing deployed/, name);
      assert.match(r.stderr, new RegExp(`${name}\\.json`), `${name}: the error names the file`);
    }
    const bad = await fleet(['deploy', '/nonexistent/x.yaml'], root);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /cannot read it/);
    const badName = await deploy(root, 'ok', singleton('1'), ['--name', '../etc']);
    assert.equal(badName.code, 2);
    assert.match(badName.stderr, /--name: the name must not contain "\.\."/);
    assert.equal((await client.getAll().prefix(`${root}/`).keys()).length, 0, 'nothing written');
    // A local vassal file may not carry a placement: it would silently run on this host only.
    const ws = await makeWorkspace('emperor-fleet-');
    const emp = await EmperorUnderTest.start(ws);
    emperors.push(emp);
    const mark = emp.mark();
    await emp.writeVassal('placed.json', { command: ['sleep', '1'], placement: { replicas: 1 } });
    const err = await emp.waitFor((e) => e.event === 'invalid' && e.vassal === 'placed', 'local file with placement refused', mark, WAIT_MS);
    assert.match(err.message, /placement: only fleet vassals are placed/);
    await emp.stop();
  });

  it('fails a singleton over within the lease when its node is SIGKILLed, never two at once', async () => {
    const root = `/fleet-${++rootSeq}`;
    const nodes = [await startNode(root, 'k1'), await startNode(root, 'k2'), await startNode(root, 'k3')];
    const marker = newMarker();
    sampler.watch(marker, 1);
    assert.equal((await deploy(root, 'kill-me', singleton(marker))).code, 0);
    await waitFor(() => sampler.pids(marker).length === 1, 'one instance running', WAIT_MS);
    const holder = holderOf(nodes, marker);
    const before = sampler.pids(marker)[0];
    await holder.stop('SIGKILL');
    // The guardian kills the instance with the emperor; another node claims it once the lease expires.
    await waitFor(() => sampler.pids(marker).length === 1 && sampler.pids(marker)[0] !== before, 'a new instance on another node', WAIT_MS);
    const next = holderOf(nodes, marker);
    assert.notEqual(next, holder);
    await Promise.all(nodes.filter((n) => n !== holder).map((n) => n.stop()));
  });

  it('a frozen holder (SIGSTOP past the lease) is fenced by its guardian and does not run a second copy after SIGCONT', async () => {
    const root = `/fleet-${++rootSeq}`;
    const nodes = [await startNode(root, 's1'), await startNode(root, 's2'), await startNode(root, 's3')];
    const marker = newMarker();
    sampler.watch(marker, 1);
    assert.equal((await deploy(root, 'frozen', singleton(marker))).code, 0);
    await waitFor(() => sampler.pids(marker).length === 1, 'one instance running', WAIT_MS);
    const holder = holderOf(nodes, marker);
    const first = sampler.pids(marker)[0];
    const mark = holder.mark();
    process.kill(holder.pid, 'SIGSTOP');
    try {
      // Its instance dies while it is frozen (only the guardian can do that), then another node runs one.
      await waitFor(() => sampler.pids(marker).length === 1 && sampler.pids(marker)[0] !== first, 'another node runs it while the holder is frozen', WAIT_MS).catch((err: unknown) => {
        // CI shows only the output: say what ran and what the frozen holder had logged.
        throw new Error(`${err instanceof Error ? err.message : String(err)}; instances now: ${sampler.pids(marker).join(', ') || 'none'} (first ${first}); the holder's log:\n${holder.tail(30)}`);
      });
      assert.notEqual(holderOf(nodes, marker), holder);
    } finally {
      process.kill(holder.pid, 'SIGCONT');
    }
    // It notices its lease lapsed, stops what it may no longer run, and rejoins as a node.
    await holder.waitFor((e) => e.event === 'fleet-lease-lost', 'the resumed node sees its lease lost', mark, WAIT_MS);
    await holder.waitFor((e) => e.event === 'fleet-joined', 'the resumed node rejoins', mark, WAIT_MS);
    const s = await status(root);
    assert.equal(s.nodes.length, 3, 'all three nodes alive again');
    assert.equal(s.vassals[0]?.instances.length, 1);
    assert.equal(sampler.pids(marker).length, 1);
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it('a hand-edited invalid fleet key is reported and leaves the running instance alone', async () => {
    const root = `/fleet-${++rootSeq}`;
    const nodes = [await startNode(root, 'h1'), await startNode(root, 'h2')];
    const marker = newMarker();
    sampler.watch(marker, 1);
    assert.equal((await deploy(root, 'edited', singleton(marker))).code, 0);
    await waitFor(() => sampler.pids(marker).length === 1, 'one instance running', WAIT_MS);
    const pid = sampler.pids(marker)[0];
    const holder = holderOf(nodes, marker);
    const mark = holder.mark();
    await client.put(`${root}/fleet/vassals/edited`).value('command: [sleep, "1"]\nplacement: { replicas: 1 }\nrestart: sometimes\n');
    const logged = await holder.waitFor((e) => e.event === 'fleet-invalid' && e.vassal === 'edited', 'the node reports the invalid document', mark, WAIT_MS);
    assert.match(logged.message, /restart/);
    assert.match(logged.message, /keeps its last valid version/);
    const s = await status(root);
    assert.match(s.vassals[0]?.error ?? '', /restart: /);
    const row = (await holder.status()).vassals.find((v) => v.name === 'edited');
    assert.match(row?.fileError ?? '', /restart: /);
    // A hostile key name never becomes a vassal, a claim or a path.
    await client.put(`${root}/fleet/vassals/..`).value('command: [sleep, 1]\nplacement: { all: true }\n');
    await client.put(`${root}/fleet/claims/x/y/z`).value('{}');
    const s2 = await status(root);
    assert.deepEqual(s2.vassals.map((v) => v.name), ['edited']);
    assert.equal((await fleet(['status'], root)).stdout.match(/ignored key/g)?.length, 2);
    assert.deepEqual(sampler.pids(marker), [pid], 'the same process still runs');
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it('spreads replicas one per node, and runs nodes: and all: placements where they say', async () => {
    const root = `/fleet-${++rootSeq}`;
    const nodes = [await startNode(root, 'r1'), await startNode(root, 'r2'), await startNode(root, 'r3')];
    const three = newMarker();
    const named = newMarker();
    const every = newMarker();
    sampler.watch(three, 3);
    sampler.watch(named, 2);
    sampler.watch(every, 3);
    assert.equal((await deploy(root, 'three', { command: ['sleep', three], placement: { replicas: 3 } })).code, 0);
    assert.equal((await deploy(root, 'named', { command: ['sleep', named], placement: { nodes: ['r1', 'r3', 'r9'] } })).code, 0);
    assert.equal((await deploy(root, 'every', { command: ['sleep', every], placement: { all: true } })).code, 0);
    await waitFor(() => sampler.pids(three).length === 3 && sampler.pids(named).length === 2 && sampler.pids(every).length === 3, 'all instances running', WAIT_MS);
    const parents = (marker: string): number[] =>
      sampler
        .pids(marker)
        .map((pid) => {
          const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
          return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        })
        .sort();
    assert.deepEqual(parents(three), nodes.map((n) => n.pid).sort(), 'one replica per node');
    assert.deepEqual(parents(every), nodes.map((n) => n.pid).sort());
    assert.deepEqual(parents(named), [nodes[0]!.pid, nodes[2]!.pid].sort());
    const s = await status(root);
    const r9 = s.nodes.find((n) => n.name === 'r9');
    assert.equal(r9?.alive, false, 'a named node that is not there shows as not alive');
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it('without --fleet-allow-root a root node runs a fleet vassal only as the non-root user it names', async () => {
    const root = `/fleet-${++rootSeq}`;
    if (process.getuid?.() !== 0) return; // the rule is about emperors running as root
    const node = await startNode(root, 'u1', []);
    const marker = newMarker();
    const asRoot = newMarker();
    sampler.watch(marker, 1);
    sampler.watch(asRoot, 0);
    const mark = node.mark();
    assert.equal((await deploy(root, 'rooty', singleton(asRoot))).code, 0);
    const refused = await node.waitFor((e) => e.event === 'fleet-invalid' && e.vassal === 'rooty', 'refused on the node', mark, WAIT_MS);
    assert.match(refused.message, /never runs as root here/);
    assert.equal((await deploy(root, 'nobody', singleton(marker, { user: 'nobody' }))).code, 0);
    await waitFor(() => sampler.pids(marker).length === 1, 'runs as nobody', WAIT_MS);
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${sampler.pids(marker)[0]}/status`, 'latin1'))?.[1];
    assert.notEqual(uid, '0');
    assert.equal((await status(root)).vassals.find((v) => v.name === 'rooty')?.instances.length, 0);
    await node.stop();
  });

  it('losing one etcd member changes nothing; losing quorum fences, and it recovers when quorum returns', async () => {
    const root = `/fleet-${++rootSeq}`;
    const nodes = [await startNode(root, 'q1'), await startNode(root, 'q2')];
    const marker = newMarker();
    sampler.watch(marker, 1);
    assert.equal((await deploy(root, 'steady', singleton(marker))).code, 0);
    await waitFor(() => sampler.pids(marker).length === 1, 'one instance running', WAIT_MS);
    const pid = sampler.pids(marker)[0];
    const marks = nodes.map((n) => n.mark());
    // One member down for two lease periods: the instance keeps running, nobody fences.
    const [m0, m1, m2] = cluster.members as [EtcdCluster['members'][0], EtcdCluster['members'][0], EtcdCluster['members'][0]];
    await m0.stop();
    const until = Date.now() + 2 * TTL_S * 1000;
    await waitFor(() => Date.now() >= until || sampler.pids(marker)[0] !== pid, 'two lease periods with a member down', WAIT_MS);
    assert.deepEqual(sampler.pids(marker), [pid], `the same instance runs on\n${nodes.map((n) => n.tail(15)).join('\n')}`);
    for (const [i, n] of nodes.entries()) assert.deepEqual(n.entries.slice(marks[i]).filter((e) => e.event === 'fleet-fenced' || e.event === 'fleet-lease-lost'), [], 'nobody fenced');
    await m0.start();

    // Quorum lost: the holder stops its instance before its lease could expire, and says so.
    const holder = holderOf(nodes, marker);
    const mark = holder.mark();
    await Promise.all([m1.stop(), m2.stop()]);
    await holder.waitFor((e) => e.event === 'fleet-fenced', 'the holder fences', mark, WAIT_MS);
    await waitFor(() => sampler.pids(marker).length === 0, 'the instance stopped', WAIT_MS);
    await Promise.all([m1.start(), m2.start()]);
    // Back on its own: exactly one instance again, on whichever node holds the claim now.
    await waitFor(() => sampler.pids(marker).length === 1, 'one instance running again', WAIT_MS);
    await waitFor(async () => (await status(root)).vassals[0]?.instances[0]?.state === 'running', 'status shows it running', WAIT_MS);
    await Promise.all(nodes.map((n) => n.stop()));
  });
});
