// `npm run soak -- --minutes M --seed S [--vassals N] [--verbose]`
//
// One emperor with both registries (a real etcd, the Consul agent double) runs while a seeded
// driver (soak/driver.ts) adds, changes, breaks, renames and deletes vassal files, kill -9s
// vassals and their children, stops etcd, restarts the Consul agent, SIGHUPs the emperor and a
// few times per run SIGKILLs and restarts it. An invariant checker (soak/checker.ts) samples
// everything from the outside and counts violations. At the end the emperor gets SIGTERM and
// must exit 0 leaving nothing behind. The summary table goes to stdout, progress to stderr;
// exit 0 = no violation, 1 = violations, 2 = the soak itself failed or bad arguments,
// 3 = watchdog (the run overran by minutes).
import { parseArgs } from 'node:util';
import { Checker, readEtcd, SAMPLE_MS } from './checker.js';
import { CHECKPOINT_STEPS, Driver, SIGKILL_CLEAN_MS } from './driver.js';
import { INVARIANTS, Ledger, type BoundClass, type InvariantNo } from './ledger.js';
import { HostileActor } from './hostile.js';
import { mulberry32 } from './prng.js';
import { MAX_STOP_TIMEOUT_MS } from './vassals.js';
import { SETTINGS, World } from './world.js';

const USAGE = `usage: npm run soak -- [--minutes M] [--seed S] [--vassals N] [--bound-factor K] [--verbose]
  --minutes M   how long the driver acts (fractional ok; default 1)
  --seed S      PRNG seed, an integer (default: random, printed)
  --vassals N   most vassal files at once (default 12; about two thirds are deployed at start)
  --bound-factor K  multiply every convergence bound by K (default 1; the test command uses 10)
  --verbose     print every action, condition and convergence to stderr`;

/** Resource growth rule (generous): measured after settling, with the same number of vassals. */
const FD_GROWTH_LIMIT = 50;
const RSS_FACTOR = 2;
const RSS_SLACK_KB = 50 * 1024;
const SETTLE_MS = 4000;
/** The whole run may overrun its nominal length by this much before the watchdog kills it. */
const WATCHDOG_SLACK_MS = 180_000;

interface Options {
  minutes: number;
  seed: number;
  seedGiven: boolean;
  vassals: number;
  boundFactor: number;
  verbose: boolean;
}

function parse(argv: string[]): Options | string {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        minutes: { type: 'string', default: '1' },
        seed: { type: 'string' },
        vassals: { type: 'string', default: '12' },
        'bound-factor': { type: 'string', default: '1' },
        verbose: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    return (err as Error).message;
  }
  if (values.help) return '';
  const minutes = Number(values.minutes);
  if (!Number.isFinite(minutes) || minutes <= 0) return `--minutes: expected a positive number, got ${values.minutes}`;
  const vassals = Number(values.vassals);
  if (!Number.isInteger(vassals) || vassals < 2 || vassals > 40) return `--vassals: expected an integer from 2 to 40, got ${values.vassals}`;
  const boundFactor = Number(values['bound-factor']);
  if (!Number.isFinite(boundFactor) || boundFactor < 1) return `--bound-factor: expected a number of at least 1, got ${values['bound-factor']}`;
  let seed: number;
  if (values.seed !== undefined) {
    seed = Number(values.seed);
    if (!Number.isSafeInteger(seed) || seed < 0) return `--seed: expected a non-negative integer, got ${values.seed}`;
    seed = seed >>> 0;
  } else seed = Math.floor(Math.random() * 2 ** 31);
  return { minutes, seed, seedGiven: values.seed !== undefined, vassals, boundFactor, verbose: values.verbose };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mb = (kb: number | undefined): string => (kb === undefined ? '?' : `${(kb / 1024).toFixed(1)} MB`);

interface Measures {
  start: { rssKb: number; fds: number } | undefined;
  end: { rssKb: number; fds: number } | undefined;
  lastIncarnationMs: number;
}

function table(o: Options, ledger: Ledger, world: World, driver: Driver | undefined, checker: Checker | undefined, m: Measures): string {
  const rows: Array<[string, string] | string> = [];
  const section = (title: string): void => {
    rows.push(title);
  };
  const row = (k: string, v: string | number): void => {
    rows.push([k, String(v)]);
  };
  row('seed', `${o.seed}${o.seedGiven ? '' : ' (random)'}`);
  row('duration', `${o.minutes} min of actions (${(ledger.elapsed() / 1000).toFixed(0)} s in all)`);
  row('steps', driver?.steps ?? 0);
  row(
    `sequence digest, first ${CHECKPOINT_STEPS} steps`,
    `${driver?.checkpointDigest ?? '-'} (same seed and options: same actions, same digest; timing varies, so outcomes do too)`,
  );
  row(`sequence digest, all ${driver?.steps ?? 0} steps`, driver?.sequenceDigest() ?? '-');
  row('checker samples', `${checker?.samples ?? 0} (every ${SAMPLE_MS} ms)`);
  row('emperor incarnations', `${world.incarnations} (last one up ${(m.lastIncarnationMs / 1000).toFixed(0)} s)`);
  row('consul requests served', world.consulRequests);
  section('actions by kind');
  for (const [k, v] of [...ledger.actions].sort()) row(`  ${k}`, v);
  section('emperor log events by kind');
  for (const [k, v] of [...world.events].sort()) row(`  ${k}`, v);
  section('violations by kind');
  const byNo = (no: InvariantNo): number => ledger.violations.filter((v) => v.no === no).length;
  for (const no of [1, 2, 3, 4, 5, 6] as const) {
    row(`  ${no}. ${INVARIANTS[no]}`, byNo(no));
    const kinds = new Map<string, number>();
    for (const v of ledger.violations.filter((x) => x.no === no)) kinds.set(v.what, (kinds.get(v.what) ?? 0) + 1);
    for (const [k, v] of kinds) row(`       ${k}`, v);
  }
  row('violations total', ledger.violations.length);
  if (ledger.harnessErrors.length > 0) row('soak errors (harness, not emperor)', ledger.harnessErrors.length);
  section('worst convergence (time a bad condition took to clear)');
  const bounds: Record<BoundClass, string> = {
    'registry: normal': 'bound 1000 ms',
    'registry: after outage': 'bound: 3000 ms after the registry answers again',
    'registry: after emperor SIGKILL': `bound: lease ${SETTINGS.leaseTtlMs} ms + 1 s (etcd), check TTL + DCSA + 1.5 s (Consul)`,
    'process: normal': `bounds 300 ms (duplicate) .. ${SETTINGS.deregisterTimeoutMs + MAX_STOP_TIMEOUT_MS + 1000} ms (no file)`,
    'process: after emperor SIGKILL': `bound ${SIGKILL_CLEAN_MS} ms`,
  };
  for (const cls of Object.keys(bounds) as BoundClass[]) {
    const w = ledger.worst.get(cls);
    row(`  ${cls}`, `${w ? `${w.ms} ms` : 'none seen'} (${bounds[cls]})`);
    if (w) row('', `    worst: ${w.what.length > 110 ? `${w.what.slice(0, 110)}…` : w.what}`);
  }
  section('emperor resources (after settling, same number of vassals)');
  row('  RSS start / end / max', `${mb(m.start?.rssKb)} / ${mb(m.end?.rssKb)} / ${mb(checker?.maxRssKb)}`);
  row('  open fds start / end / max', `${m.start?.fds ?? '?'} / ${m.end?.fds ?? '?'} / ${checker?.maxFds ?? '?'}`);
  row('  growth rule', `fds end > start + ${FD_GROWTH_LIMIT}, or RSS end > ${RSS_FACTOR} x start + ${RSS_SLACK_KB / 1024} MB`);
  row('slowest status answer', `${checker?.maxStatusMs ?? '?'} ms (bound 1000 ms, less the soak's own stalls)`);
  row('hostile user', world.hostile ? `uid ${world.hostile.uid}, tyrant mode (attacks are counted under actions as "hostile: ...")` : 'none (needs root)');
  row('checker status failures / etcd read failures', `${checker?.statusFailures ?? 0} / ${checker?.etcdReadFailures ?? 0}`);

  const width = Math.max(...rows.map((r) => (typeof r === 'string' ? 0 : r[0].length)));
  const lines = ['emperor soak summary', '='.repeat(20)];
  for (const r of rows) lines.push(typeof r === 'string' ? r : `${r[0].padEnd(width)}  ${r[1]}`);
  if (ledger.violations.length > 0) {
    lines.push('', `violation examples (${Math.min(10, ledger.violations.length)} of ${ledger.violations.length}):`);
    for (const v of ledger.violations.slice(0, 10)) lines.push(`  [${(v.at / 1000).toFixed(1)} s] ${v.no}. ${v.what}: ${v.detail.slice(0, 1200)}`);
  }
  if (ledger.harnessErrors.length > 0) {
    lines.push('', 'soak errors:');
    for (const e of ledger.harnessErrors.slice(0, 5)) lines.push(`  ${e.slice(0, 1500)}`);
  }
  lines.push('', ledger.violations.length === 0 && ledger.harnessErrors.length === 0 ? 'RESULT: PASS' : `RESULT: FAIL (rerun with --seed ${o.seed})`);
  return lines.join('\n');
}

/** SIGTERM: exit 0, nothing left running, nothing left registered. */
async function shutdown(world: World, ledger: Ledger): Promise<void> {
  const emp = world.emperor;
  if (!emp?.alive) return;
  emp.expectExit = true;
  const t0 = Date.now();
  emp.signal('SIGTERM');
  const info = await emp.waitExit(30_000);
  if (!info) {
    ledger.violation(4, 'emperor hung on SIGTERM', `no exit within 30 s; log tail:\n${emp.tail.slice(-15).join('\n')}`);
    emp.signal('SIGKILL');
    await emp.waitExit(5000);
  } else if (info.code !== 0) {
    ledger.violation(4, 'emperor exit status on SIGTERM', `code ${info.code} signal ${info.signal}; stderr: ${emp.stderr.slice(-1500)}`);
  }
  ledger.progress(`emperor stopped with SIGTERM in ${Date.now() - t0} ms (exit ${info?.code})`);
  let left = world.ourProcesses();
  if (left.length > 0) {
    // A zombie being reaped by init is dead already; anything else gets a short grace.
    await sleep(500);
    left = left.filter((p) => world.stillAlive([p]).length > 0);
  }
  if (left.length > 0) {
    ledger.violation(3, 'process left after the emperor stopped', left.map((p) => `${p.vassal}:${p.pid}${p.leader ? '(leader)' : ''}`).join(', '));
    world.killStrays();
  }
  // Deregistered before each stop, lease revoked on exit: both registries must be empty.
  const deadline = Date.now() + 1500;
  let etcdLeft: string[] = [];
  let consulLeft: string[] = [];
  for (;;) {
    consulLeft = world.consul.services().map((s) => s.ID);
    try {
      etcdLeft = [...(await readEtcd(world.etcd.clientUrl, SETTINGS.treeRoot)).keys()];
    } catch (err) {
      ledger.harness(`final etcd read failed: ${(err as Error).message}`);
      etcdLeft = [];
    }
    if ((etcdLeft.length === 0 && consulLeft.length === 0) || Date.now() > deadline) break;
    await sleep(200);
  }
  if (etcdLeft.length > 0) ledger.violation(1, 'etcd: registration left after the emperor stopped', etcdLeft.join(', '));
  if (consulLeft.length > 0) ledger.violation(1, 'consul: registration left after the emperor stopped', consulLeft.join(', '));
}

async function main(): Promise<number> {
  const o = parse(process.argv.slice(2));
  if (typeof o === 'string') {
    process.stderr.write(`${o ? `soak: ${o}\n` : ''}${USAGE}\n`);
    return o ? 2 : 0;
  }
  const ledger = new Ledger(o.verbose);
  const durationMs = Math.round(o.minutes * 60_000);
  const initial = Math.max(1, Math.round((o.vassals * 2) / 3));
  ledger.progress(`seed ${o.seed} — rerun with: npm run soak -- --minutes ${o.minutes} --seed ${o.seed}${o.vassals !== 12 ? ` --vassals ${o.vassals}` : ''}`);
  ledger.progress('the same seed replays the same action sequence; timing (and so what each action hits) varies');
  const world = new World(ledger);
  let driver: Driver | undefined;
  let checker: Checker | undefined;
  const m: Measures = { start: undefined, end: undefined, lastIncarnationMs: 0 };

  const abort = (why: string, code: number): void => {
    process.stderr.write(`soak: ${why}; killing everything\n`);
    world.abortSync();
    process.exit(code);
  };
  const watchdog = setTimeout(() => abort(`watchdog: the run overran its ${o.minutes} min by ${WATCHDOG_SLACK_MS / 60_000} min`, 3), durationMs + WATCHDOG_SLACK_MS);
  watchdog.unref();
  process.once('SIGINT', () => abort('interrupted', 130));
  process.once('SIGTERM', () => abort('terminated', 143));
  process.on('unhandledRejection', (err) => ledger.harness(`unhandled rejection in the soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`));

  try {
    await world.setup();
    ledger.progress(`etcd at ${world.etcd.endpoint}, Consul double at ${world.consul.address}, workspace ${world.ws.root}, run id ${world.runId}`);
    // Its own PRNG: the driver's sequence (and digest) stays what the seed always gave.
    world.hostile = await HostileActor.create(world.runId, world.ws, ledger, mulberry32((o.seed ^ 0x5eed5eed) >>> 0));
    ledger.progress(world.hostile ? `hostile user uid ${world.hostile.uid}; the emperor runs in tyrant mode` : 'no hostile user (it needs root); the emperor runs without tyrant mode');
    await world.startEmperor();
    driver = new Driver(world, ledger, mulberry32(o.seed), { maxVassals: o.vassals, durationMs, boundFactor: o.boundFactor });
    checker = new Checker(world, ledger, o.boundFactor);
    checker.start();
    await driver.deployInitial(initial);
    await sleep(SETTLE_MS);
    m.start = world.resources();
    ledger.progress(`baseline with ${initial} vassals: RSS ${mb(m.start?.rssKb)}, ${m.start?.fds} fds; driving for ${o.minutes} min (emperor SIGKILL at steps ${[...driver.killSteps].sort((a, b) => a - b).join(', ')})`);

    world.hostile?.start();
    const runStart = Date.now();
    let lastReport = runStart;
    while (Date.now() - runStart < durationMs) {
      await driver.step();
      if (Date.now() - lastReport >= 15_000) {
        lastReport = Date.now();
        const r = world.resources();
        ledger.progress(
          `step ${driver.steps}, ${world.model.files.size} files, ${ledger.violations.length} violations, emperor #${world.incarnations} RSS ${mb(r?.rssKb)} fds ${r?.fds ?? '?'}`,
        );
      }
    }
    ledger.progress(`driving done after ${driver.steps} steps; bringing registries back and settling`);
    await world.hostile?.stop();
    await driver.finish();
    await driver.normalize(initial);
    await sleep(SETTLE_MS + 1000);
    m.end = world.resources();
    m.lastIncarnationMs = world.emperor ? Date.now() - world.emperor.startedAt : 0;
    await checker.stop();
    checker.finish();
    if (m.start && m.end) {
      if (m.end.fds > m.start.fds + FD_GROWTH_LIMIT) ledger.violation(4, 'open file descriptors grew', `${m.start.fds} at start, ${m.end.fds} at the end`);
      if (m.end.rssKb > RSS_FACTOR * m.start.rssKb + RSS_SLACK_KB) ledger.violation(4, 'memory grew', `RSS ${mb(m.start.rssKb)} at start, ${mb(m.end.rssKb)} at the end`);
    }
    await shutdown(world, ledger);
  } catch (err) {
    ledger.harness(`the soak failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    await checker?.stop();
  } finally {
    await world.teardown();
    world.hostile?.teardown();
    clearTimeout(watchdog);
  }
  process.stdout.write(`${table(o, ledger, world, driver, checker, m)}\n`);
  if (ledger.harnessErrors.length > 0) return 2;
  return ledger.violations.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Let stdout drain; anything still holding the loop open is not ours to wait for.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(2);
  },
);
