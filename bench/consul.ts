// Section "consul": how fast the Consul agent (the test double, test/consul/double.ts, running
// in the bench process) learns what the emperor's vassals do.
//
//   (a) ready → service registered, 200 vassals dropped one at a time
//   (b) SIGKILL of a registered vassal → service deregistered, the same 200
//   (c) graceful stop (file deleted) of the same 200, restarted meanwhile, one at a time: file
//       deleted → deregistered, and whether the service was gone before the stop signal
//
// t1 is the double's `service-registered` / `service-deregistered` event for the vassal's service
// ID (`<hostname sanitised>-<vassal>`), emitted when the agent handles the request.
import os from 'node:os';
import { defaultServiceId } from '../src/emperor/registration.js';
import { startConsulDouble, type ConsulDouble } from '../test/consul/double.js';
import { PART_TIMEOUT_MS, STEP_TIMEOUT_MS, pad, quietRow, rowsFor, stopAndReport, summary, until } from './common.js';
import { BenchEmperor, addCleanup, makeWorkspace } from './harness.js';
import { Sightings, crashOneAtATime, readyOneAtATime, split, stopOneAtATime } from './registry.js';
import type { Row, Section, SectionContext } from './types.js';
import { fmtMs, fmtPct, loadAvg, machineBusyPct, machineTicks } from './util.js';

const SECTION = 'consul';
const { row, check, errorRow } = rowsFor(SECTION);

const ONE_AT_A_TIME = 200;
const TARGET_READY_P99_MS = 50;
const TARGET_CRASH_P99_MS = 100;

const vassal = (port: number): string => JSON.stringify({ command: ['sleep', '1000'], start: { ready: { delay: '10ms' } }, service: { port } });

async function measure(ctx: SectionContext, consul: ConsulDouble, sightings: Sightings): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('consul emperor', ws, ['--consul-agent', consul.address]);
  ctx.progress(`[a] ready → registered: emperor pid ${emp.pid}, ${ONE_AT_A_TIME} vassals one at a time`);
  const host = os.hostname();
  const idOf = (name: string): string => defaultServiceId(host, name);
  try {
    rows.push(await quietRow(SECTION, ctx, 'part a'));
    const names = Array.from({ length: ONE_AT_A_TIME }, (_, i) => `c${pad(i)}`);
    const m0 = machineTicks();
    const ready = await readyOneAtATime({ ctx, tag: '[a]', emp, ws, names, content: (_, i) => vassal(40000 + i), keyOf: idOf, sightings });
    const busyA = machineBusyPct(m0, machineTicks());
    const a = summary(ready.samples);
    rows.push(row(`(a) ready line read → agent registered the service, p50 (n=${a.n})`, fmtMs(a.p50)));
    rows.push(check('(a) ready → registered, p99', fmtMs(a.p99), `≤ ${TARGET_READY_P99_MS} ms`, a.p99 <= TARGET_READY_P99_MS));
    rows.push(row('(a) ready → registered, min / max', `${fmtMs(a.min)} / ${fmtMs(a.max)}${a.min < 0 ? ' (negative: the registration reached the agent before the log line reached the bench)' : ''}`));
    rows.push(row('  (a) file dropped → registered', split(ready.fromDrop)));
    rows.push(row('  (a) machine CPU busy during part a, % of all cores', fmtPct(busyA)));

    rows.push(await quietRow(SECTION, ctx, 'part b'));
    // Each killed vassal restarts after its back-off (1 s) and registers again: part c stops those.
    const back = emp.collect('ready', new Set(names), PART_TIMEOUT_MS);
    back.catch(() => undefined);
    const m1 = machineTicks();
    const crash = await crashOneAtATime({ ctx, tag: '[b]', emp, pids: ready.pids, keyOf: idOf, sightings });
    const busyB = machineBusyPct(m1, machineTicks());
    const b = summary(crash.samples);
    rows.push(row(`(b) SIGKILL → agent deregistered the service, p50 (n=${b.n})`, fmtMs(b.p50)));
    rows.push(check('(b) crash → deregistered, p99', fmtMs(b.p99), `≤ ${TARGET_CRASH_P99_MS} ms`, b.p99 <= TARGET_CRASH_P99_MS));
    rows.push(row('(b) crash → deregistered, max', fmtMs(b.max)));
    rows.push(row('  (b) SIGKILL → "exited" line read', split(crash.toExitLine)));
    rows.push(row('  (b) machine CPU busy during part b, % of all cores', fmtPct(busyB)));

    // ---- (c) graceful stops
    await back;
    await until(() => names.every((n) => sightings.last.get(idOf(n)) === 'put'), 'every restarted vassal registered again', STEP_TIMEOUT_MS);
    rows.push(await quietRow(SECTION, ctx, 'part c'));
    ctx.progress(`[c] graceful stop of ${names.length} vassals, one file deleted at a time`);
    const stop = await stopOneAtATime({
      ctx,
      tag: '[c]',
      emp,
      ws,
      names,
      keyOf: idOf,
      sightings,
      // The agent runs in this process: what it holds at the moment the line is read.
      stillRegistered: (name) => Promise.resolve(consul.services().some((s) => s.ID === idOf(name))),
    });
    rows.push(row(`(c) file deleted → agent deregistered the service (graceful stop), n=${stop.samples.length}`, split(stop.samples)));
    rows.push(
      check(
        '(c) services still in the agent when the bench read the vassal\'s "stopping" line (logged just before SIGTERM; README: deregistered first)',
        `${stop.presentAtSignal.length}/${stop.samples.length}${stop.presentAtSignal.length ? ` (e.g. ${stop.presentAtSignal.slice(0, 3).join(', ')})` : ''}`,
        '0',
        stop.presentAtSignal.length === 0,
      ),
    );
  } catch (err) {
    rows.push(errorRow('one at a time', err));
  } finally {
    rows.push(...(await stopAndReport(SECTION, emp, 'parts a-c', ctx, ['exited', 'backoff'])));
  }
  return rows;
}

export const consul: Section = {
  name: SECTION,
  title: 'consul: registration latency against the Consul agent double',
  async run(ctx) {
    const rows: Row[] = [row('machine: load average (1/5/15 min) at start', loadAvg())];
    let dispose: (() => Promise<void>) | undefined;
    try {
      const double = await startConsulDouble();
      dispose = addCleanup('consul double', () => double.stop());
      ctx.progress(`Consul agent double at ${double.address}`);
      const sightings = new Sightings();
      double.events.on('service-registered', (e: { ID: string }) => sightings.note('put', e.ID));
      double.events.on('service-deregistered', (e: { ID: string }) => sightings.note('gone', e.ID));
      rows.push(...(await measure(ctx, double, sightings)));
      rows.push(row('agent events (service registrations incl. updates / deregistrations)', `${sightings.counts.put} / ${sightings.counts.gone}`));
      const left = double.services().length;
      rows.push(check('services left in the agent after the emperor stopped', String(left), '0', left === 0));
    } catch (err) {
      rows.push(errorRow('consul', err));
    } finally {
      await dispose?.();
    }
    return rows;
  },
};
