// Section "etcd": how fast a real etcd reflects what the emperor's vassals do.
//
//   (a) ready → location key visible, 200 vassals dropped one at a time (emperor A)
//   (b) SIGKILL of a registered vassal → its location key deleted, the same 200 (A)
//   (c) 1,000 dropped at once → all 1,000 location keys present; etcd round trips used (emperor B)
//   (d) delete all 1,000 files → all location keys gone; round trips (B)
//   (e) graceful stop (file deleted) of the 200 of (a) and (b), restarted meanwhile, one at a
//       time: file deleted → key deleted, and whether the key was gone before the stop signal (A)
//   (f) etcd SIGKILLed, then started again: how long after it is healthy the emperor's etcd
//       client (the adapter, as the registrar uses it) writes again. etcd3's default circuit
//       breaker would refuse for 5 s; the emperor's half-opens after 1 s (src/registries/etcd/client.ts).
//
// t1 is always the bench's own etcd watcher (prefix `<root>/services/`) receiving the event, so a
// figure includes etcd's commit and the watch stream: what any other client would see.
import { Etcd3, type IKeyValue } from 'etcd3';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { EmperorStatus } from '../src/emperor/emperor.js';
import { EtcdAdapter } from '../src/registries/etcd/adapter.js';
import { resolveEtcdConfig } from '../src/registries/etcd/options.js';
import { startEtcd, type EtcdServer } from '../test/support/etcd.js';
import { PART_TIMEOUT_MS, STEP_TIMEOUT_MS, WRITE_CONCURRENCY, apiStatus, pad, quietRow, rowsFor, stage, stopAndReport, summary, until } from './common.js';
import { BenchEmperor, addCleanup, makeWorkspace } from './harness.js';
import { Sightings, crashOneAtATime, readyOneAtATime, split, stopOneAtATime } from './registry.js';
import type { Row, Section, SectionContext } from './types.js';
import { fmtMs, fmtPct, loadAvg, machineBusyPct, machineTicks, now, pool } from './util.js';

const SECTION = 'etcd';
const { row, check, errorRow } = rowsFor(SECTION);

const ONE_AT_A_TIME = 200;
const BURST = 1000;
const ROOT_A = '/bench-a';
const ROOT_B = '/bench-b';
const TYPE = 'default';
const TARGET_READY_P99_MS = 50;
const TARGET_CRASH_P99_MS = 100;
/** (f): the registrar retries every second; a client that refused for longer would delay it. */
const TARGET_RECOVERY_MS = 2500;
const RECOVERY_ROUNDS = 3;

/** A cheap registered app, ready 10 ms after spawn; the port is registered, never listened on. */
const vassal = (port: number): string => JSON.stringify({ command: ['sleep', '1000'], start: { ready: { delay: '10ms' } }, service: { port } });

const locationKey = (root: string, name: string): string => `${root}/services/${TYPE}/${name}`;

/** The last sighting of the key is a put (after its delete in part b). */
function registeredAgain(etcd: Etcd, name: string): boolean {
  return etcd.sightings.last.get(locationKey(ROOT_A, name)) === 'put';
}

function roundTrips(st: EmperorStatus): number {
  const etcd = st.registries.find((r) => r.registry === 'etcd');
  const n = etcd?.stats.roundTrips;
  if (typeof n !== 'number') throw new Error('emperor status shows no etcd roundTrips counter');
  return n;
}

interface Etcd {
  server: EtcdServer;
  client: Etcd3;
  sightings: Sightings;
}

async function oneAtATime(ctx: SectionContext, etcd: Etcd): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('etcd emperor A', ws, ['--etcd-endpoint', etcd.server.endpoint, '--tree-root', ROOT_A]);
  ctx.progress(`[a] ready → key: emperor A pid ${emp.pid}, ${ONE_AT_A_TIME} vassals one at a time`);
  try {
    rows.push(await quietRow(SECTION, ctx, 'part a'));
    const names = Array.from({ length: ONE_AT_A_TIME }, (_, i) => `r${pad(i)}`);
    const m0 = machineTicks();
    const ready = await readyOneAtATime({
      ctx,
      tag: '[a]',
      emp,
      ws,
      names,
      content: (_, i) => vassal(20000 + i),
      keyOf: (name) => locationKey(ROOT_A, name),
      sightings: etcd.sightings,
    });
    const busyA = machineBusyPct(m0, machineTicks());
    const a = summary(ready.samples);
    rows.push(row(`(a) ready line read → location key put seen by a watcher, p50 (n=${a.n})`, fmtMs(a.p50)));
    rows.push(check('(a) ready → key visible, p99', fmtMs(a.p99), `≤ ${TARGET_READY_P99_MS} ms`, a.p99 <= TARGET_READY_P99_MS));
    rows.push(row('(a) ready → key visible, min / max', `${fmtMs(a.min)} / ${fmtMs(a.max)}${a.min < 0 ? ' (negative: the put reached the watcher before the log line reached the bench)' : ''}`));
    rows.push(row('  (a) file dropped → key visible', split(ready.fromDrop)));
    rows.push(row('  (a) machine CPU busy during part a, % of all cores', fmtPct(busyA)));

    rows.push(await quietRow(SECTION, ctx, 'part b'));
    // Each killed vassal restarts after its back-off (1 s) and registers again: part e stops those.
    const back = emp.collect('ready', new Set(names), PART_TIMEOUT_MS);
    back.catch(() => undefined);
    const m1 = machineTicks();
    const crash = await crashOneAtATime({ ctx, tag: '[b]', emp, pids: ready.pids, keyOf: (name) => locationKey(ROOT_A, name), sightings: etcd.sightings });
    const busyB = machineBusyPct(m1, machineTicks());
    const b = summary(crash.samples);
    rows.push(row(`(b) SIGKILL → location key delete seen by a watcher, p50 (n=${b.n})`, fmtMs(b.p50)));
    rows.push(check('(b) crash → key deleted, p99', fmtMs(b.p99), `≤ ${TARGET_CRASH_P99_MS} ms`, b.p99 <= TARGET_CRASH_P99_MS));
    rows.push(row('(b) crash → key deleted, max', fmtMs(b.max)));
    rows.push(row('  (b) SIGKILL → "exited" line read', split(crash.toExitLine)));
    rows.push(row('  (b) machine CPU busy during part b, % of all cores', fmtPct(busyB)));

    // ---- (e) graceful stops
    await back;
    await until(() => names.every((n) => registeredAgain(etcd, n)), 'every restarted vassal registered again', STEP_TIMEOUT_MS);
    rows.push(await quietRow(SECTION, ctx, 'part e'));
    ctx.progress(`[e] graceful stop of ${names.length} vassals, one file deleted at a time`);
    const stop = await stopOneAtATime({
      ctx,
      tag: '[e]',
      emp,
      ws,
      names,
      keyOf: (name) => locationKey(ROOT_A, name),
      sightings: etcd.sightings,
      // Linearizable read, sent as soon as the line is read: a delete committed before the line was written is seen.
      stillRegistered: async (name) => (await etcd.client.get(locationKey(ROOT_A, name)).string()) !== null,
    });
    const e = summary(stop.samples);
    rows.push(row(`(e) file deleted → location key delete seen by a watcher (graceful stop), n=${e.n}`, split(stop.samples)));
    rows.push(
      check(
        '(e) keys still in etcd when the bench read the vassal\'s "stopping" line (logged just before SIGTERM; README: deleted first)',
        `${stop.presentAtSignal.length}/${e.n}${stop.presentAtSignal.length ? ` (e.g. ${stop.presentAtSignal.slice(0, 3).join(', ')})` : ''}`,
        '0',
        stop.presentAtSignal.length === 0,
      ),
    );
  } catch (err) {
    rows.push(errorRow('one at a time', err));
  } finally {
    rows.push(...(await stopAndReport(SECTION, emp, 'parts a, b, e', ctx, ['exited', 'backoff'])));
  }
  return rows;
}

async function burst(ctx: SectionContext, etcd: Etcd): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('etcd emperor B', ws, ['--etcd-endpoint', etcd.server.endpoint, '--tree-root', ROOT_B]);
  ctx.progress(`[c] ${BURST} at once: emperor B pid ${emp.pid}`);
  const names = Array.from({ length: BURST }, (_, i) => `b${pad(i)}`);
  const keys = names.map((n) => locationKey(ROOT_B, n));
  const count = async (): Promise<number> => (await etcd.client.getAll().prefix(`${ROOT_B}/services/`).keys()).length;
  try {
    rows.push(await quietRow(SECTION, ctx, 'part c'));
    // ---- (c)
    const staged = await Promise.all(names.map((n, i) => stage(ws.vassals, n, vassal(30000 + i))));
    const rt0 = roundTrips(await apiStatus(ws));
    etcd.sightings.resetSeen();
    const readyAll = emp.collect('ready', new Set(names), PART_TIMEOUT_MS);
    readyAll.catch(() => undefined);
    const m0 = machineTicks();
    const t0 = now();
    await pool(staged, WRITE_CONCURRENCY, (drop) => drop());
    ctx.progress(`[c] ${BURST} files dropped in ${fmtMs(now() - t0)}`);
    const tAll = await etcd.sightings.all('put', keys, PART_TIMEOUT_MS, (n) => ctx.progress(`[c] ${n}/${BURST} keys seen`));
    const busy = machineBusyPct(m0, machineTicks());
    const rt1 = roundTrips(await apiStatus(ws));
    const lastReady = Math.max(...[...(await readyAll).values()].map((a) => a.t));
    const present = await count();
    rows.push(row(`(c) ${BURST} dropped at once → all ${BURST} location keys seen by a watcher`, fmtMs(tAll - t0)));
    rows.push(row(`  (c) → ${BURST}th "ready" line (ready = 10 ms after spawn)`, fmtMs(lastReady - t0)));
    rows.push(row(`  (c) ${BURST}th ready line → ${BURST}th key`, fmtMs(tAll - lastReady)));
    rows.push(row(`(c) etcd round trips for the burst (status roundTrips delta, incl. lease grant and anti-entropy reads)`, `${rt1 - rt0} (${((rt1 - rt0) / BURST).toFixed(3)} per vassal)`));
    rows.push(check('(c) location keys in etcd afterwards (range read)', `${present}/${BURST}`, `${BURST}/${BURST}`, present === BURST));
    rows.push(row('  (c) machine CPU busy during the burst, % of all cores', fmtPct(busy)));

    // ---- (d)
    const stopped = emp.collect('stopped', new Set(names), PART_TIMEOUT_MS);
    stopped.catch(() => undefined);
    const rt2 = roundTrips(await apiStatus(ws));
    etcd.sightings.resetSeen();
    const d0 = now();
    await pool(names, WRITE_CONCURRENCY, (n) => fs.unlink(path.join(ws.vassals, `${n}.json`)));
    const tGone = await etcd.sightings.all('gone', keys, PART_TIMEOUT_MS, (n) => ctx.progress(`[d] ${n}/${BURST} keys deleted`));
    const stoppedAt = await stopped;
    const lastStopped = Math.max(...[...stoppedAt.values()].map((a) => a.t));
    // The emperor deletes the key, waits for etcd's answer, then signals the app; the watcher's
    // copy of the delete travels separately (etcd → watch stream → bench), so it may come later.
    const late = names.filter((n) => (etcd.sightings.seen.gone.get(locationKey(ROOT_B, n)) ?? Infinity) > stoppedAt.get(n)!.t).length;
    const rt3 = roundTrips(await apiStatus(ws));
    const left = await count();
    rows.push(row(`(d) delete all ${BURST} files → all ${BURST} location keys deleted (watcher)`, fmtMs(tGone - d0)));
    rows.push(row(`  (d) → ${BURST}th "stopped" line`, fmtMs(lastStopped - d0)));
    rows.push(row('  (d) vassals whose key delete reached the watcher only after their "stopped" line', `${late}/${BURST}`));
    rows.push(row('(d) etcd round trips for the delete', `${rt3 - rt2} (${((rt3 - rt2) / BURST).toFixed(3)} per vassal)`));
    rows.push(check('(d) location keys left in etcd (range read)', String(left), '0', left === 0));
  } catch (err) {
    rows.push(errorRow(`${BURST} at once`, err));
  } finally {
    rows.push(...(await stopAndReport(SECTION, emp, 'parts c-d', ctx)));
  }
  return rows;
}

/** (f) on its own etcd: kill, start, then apply until it is taken; ms from "healthy" to that. */
async function recovery(ctx: SectionContext): Promise<Row[]> {
  const server = await startEtcd();
  const dispose = addCleanup('etcd server (f)', () => server.dispose());
  let adapter: EtcdAdapter | undefined;
  try {
    const cfg = resolveEtcdConfig({ etcdEndpoint: [server.endpoint], treeRoot: '/bench-f' }, {});
    if (!cfg) throw new Error('no etcd config');
    adapter = await EtcdAdapter.connect(cfg, () => undefined, { callTimeoutMs: 1000 });
    const a = adapter;
    const change = (i: number) =>
      [
        {
          op: 'put' as const,
          reg: { id: `bench-f-${i}`, vassal: 'f', type: TYPE, name: 'f', location: '127.0.0.1:1', address: '127.0.0.1', port: 1, tags: [], meta: {}, health: 'passing' as const, checks: [], pid: 1, deregisterWhenCritical: true, nativeChecks: [] },
        },
      ];
    await a.apply(change(0));
    const samples: number[] = [];
    for (let round = 1; round <= RECOVERY_ROUNDS; round++) {
      ctx.progress(`(f) round ${round}: SIGKILL etcd, start it, apply until it is taken`);
      await server.kill();
      // Make the client see the outage (and trip its breaker) before etcd is back.
      for (let i = 0; i < 3; i++) await a.apply(change(round)).catch(() => undefined);
      await server.start();
      const healthy = now();
      await until(
        async () => {
          try {
            await a.apply(change(round));
            return true;
          } catch {
            return false;
          }
        },
        'an apply taken after the restart',
        STEP_TIMEOUT_MS,
      );
      samples.push(now() - healthy);
    }
    const worst = Math.max(...samples);
    return [check(`(f) etcd SIGKILLed and started again → the emperor's client writes again, ms after etcd is healthy (${RECOVERY_ROUNDS} rounds, worst)`, `${fmtMs(worst)} (${samples.map((x) => fmtMs(x)).join(', ')})`, `≤ ${fmtMs(TARGET_RECOVERY_MS)}`, worst <= TARGET_RECOVERY_MS)];
  } finally {
    await adapter?.close();
    await dispose();
  }
}

export const etcd: Section = {
  name: SECTION,
  title: 'etcd: registration latency and cost against a real etcd',
  async run(ctx) {
    const rows: Row[] = [row('machine: load average (1/5/15 min) at start', loadAvg())];
    let server: EtcdServer | undefined;
    let disposeServer: (() => Promise<void>) | undefined;
    let disposeClient: (() => Promise<void>) | undefined;
    try {
      server = await startEtcd();
      const s = server;
      disposeServer = addCleanup('etcd server', () => s.dispose());
      ctx.progress(`etcd pid ${server.pid} at ${server.endpoint}`);
      const client = new Etcd3({ hosts: server.clientUrl });
      const sightings = new Sightings();
      // Only the location keys (what empusa clients read), under both tree roots.
      const watchers = await Promise.all([ROOT_A, ROOT_B].map((root) => client.watch().prefix(`${root}/services/`).create()));
      disposeClient = addCleanup('etcd client', async () => {
        await Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
        client.close();
      });
      for (const watcher of watchers) {
        watcher.on('put', (kv: IKeyValue) => sightings.note('put', kv.key.toString()));
        watcher.on('delete', (kv: IKeyValue) => sightings.note('gone', kv.key.toString()));
        watcher.on('error', (err: Error) => ctx.progress(`etcd watcher error: ${err.message}`));
      }
      const e: Etcd = { server, client, sightings };
      for (const part of [oneAtATime, burst]) {
        try {
          rows.push(...(await part(ctx, e)));
        } catch (err) {
          rows.push(errorRow(part.name, err));
        }
      }
      rows.push(row('location-key watch events received (puts / deletes, all parts)', `${sightings.counts.put} / ${sightings.counts.gone}`));
      try {
        rows.push(...(await recovery(ctx)));
      } catch (err) {
        rows.push(errorRow('recovery', err));
      }
    } catch (err) {
      rows.push(errorRow('etcd', err));
    } finally {
      await disposeClient?.();
      await disposeServer?.();
    }
    return rows;
  },
};
