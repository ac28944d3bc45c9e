// Section "checks": what 1,000 periodic health checks cost the emperor, and how late they run.
//
// 1,000 vassals (`sleep 1000`, ready 10 ms after spawn), each with one TCP check every 10 s
// (timeout 1 s) against ONE loopback listener the bench runs. Once all are running and every
// check has produced 2 results:
//   1. emperor RSS;
//   2. emperor CPU (utime+stime) over 20 s, with nobody polling its status;
//   3. check-result lag (`checks[0].resultLagMs` in status: actual start minus scheduled start,
//      plus the probe's run time) over >= 2,000 distinct results, deduplicated by
//      (vassal, lastResultAt), read by polling GET /v1/status every few seconds.
import net from 'node:net';
import type { EmperorStatus } from '../src/emperor/emperor.js';
import { PART_TIMEOUT_MS, WRITE_CONCURRENCY, apiStatus, pad, quietRow, rowsFor, stage, stopAndReport, summary, until } from './common.js';
import { BenchEmperor, addCleanup, makeWorkspace } from './harness.js';
import type { Row, Section, SectionContext } from './types.js';
import { cpuPct, fmtMb, fmtMs, fmtPct, loadAvg, machineBusyPct, machineTicks, now, pool, readStat, sleep, statusKb } from './util.js';

const SECTION = 'checks';
const { row, check, errorRow } = rowsFor(SECTION);

const VASSALS = 1000;
const INTERVAL_MS = 10_000;
const CPU_WINDOW_MS = 20_000;
/** Each result stays visible in status for one interval; polling at under half of it sees every one (twice). */
const POLL_EVERY_MS = 4000;
const MIN_SAMPLES = 2000;
const POLL_MARGIN_MS = 50;
const TARGET_CPU_PCT = 10;
const TARGET_LAG_P99_MS = 100;
const TARGET_RSS_KB = 200 * 1024;

/** One listener for every check: accepts and closes at once. */
async function startListener(): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    accepted++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A backlog of 4096: the first round of 1,000 checks connects within a few seconds.
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => resolve());
  });
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('listener has no port');
  return {
    port: addr.port,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

interface Reading {
  status: string;
  lastResultAt: number | null;
  lagMs: number | null;
}

function readings(st: EmperorStatus): Map<string, Reading> {
  const out = new Map<string, Reading>();
  for (const v of st.vassals) {
    const c = v.checks[0];
    if (c) out.set(v.name, { status: c.status, lastResultAt: c.lastResultAt, lagMs: c.resultLagMs });
  }
  return out;
}

async function measure(ctx: SectionContext, port: number, accepted: () => number): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('checks emperor', ws);
  ctx.progress(`emperor pid ${emp.pid}; listener 127.0.0.1:${port}`);
  const baseRss = statusKb(emp.pid, 'VmRSS');
  const names = Array.from({ length: VASSALS }, (_, i) => `k${pad(i)}`);
  const content = JSON.stringify({
    command: ['sleep', '1000'],
    start: { ready: { delay: '10ms' } },
    checks: [{ tcp: `127.0.0.1:${port}`, interval: `${INTERVAL_MS / 1000}s`, timeout: '1s' }],
  });
  try {
    // ---- start 1,000 and let every check run twice
    const ready = emp.collect('ready', new Set(names), PART_TIMEOUT_MS, (n) => {
      if (n % 250 === 0) ctx.progress(`${n}/${VASSALS} ready`);
    });
    ready.catch(() => undefined);
    const t0 = now();
    await pool(names, WRITE_CONCURRENCY, async (name) => (await stage(ws.vassals, name, content))());
    await ready;
    ctx.progress(`all ${VASSALS} ready after ${fmtMs(now() - t0)}; waiting for 2 results of every check`);
    const first = new Map<string, number>();
    let rounds = 0;
    await until(
      async () => {
        const r = readings(await apiStatus(ws));
        let second = 0;
        for (const name of names) {
          const at = r.get(name)?.lastResultAt ?? null;
          if (at === null) continue;
          const f = first.get(name);
          if (f === undefined) first.set(name, at);
          else if (at !== f) second++;
        }
        rounds = second;
        return second === VASSALS;
      },
      () => `2 results of each of ${VASSALS} checks (${rounds} had 2)`,
      3 * INTERVAL_MS + 10_000,
      1000,
    );
    const warm = now() - t0;
    ctx.progress(`every check has 2 results, ${fmtMs(warm)} after the first drop`);
    rows.push(row(`${VASSALS} dropped → every check has 2 results`, fmtMs(warm)));

    // ---- RSS
    const rss = statusKb(emp.pid, 'VmRSS');
    if (rss === undefined) throw new Error(`cannot read /proc/${emp.pid}/status`);
    rows.push(check(`emperor RSS (VmRSS) with ${VASSALS} checked vassals`, fmtMb(rss), '≤ 200 MB', rss <= TARGET_RSS_KB));
    if (baseRss !== undefined) rows.push(row('  vs. emperor RSS just started, 0 vassals', `${fmtMb(baseRss)} (+${((rss - baseRss) / VASSALS).toFixed(0)} kB per vassal)`));
    const hwm = statusKb(emp.pid, 'VmHWM');
    if (hwm !== undefined) rows.push(row('  emperor peak RSS so far (VmHWM)', fmtMb(hwm)));

    // ---- CPU, nobody polling
    rows.push(await quietRow(SECTION, ctx, 'the CPU window'));
    ctx.progress(`emperor CPU over ${fmtMs(CPU_WINDOW_MS)}`);
    const acc0 = accepted();
    const m0 = machineTicks();
    const c0 = readStat(emp.pid)?.cpuTicks;
    const w0 = now();
    await sleep(CPU_WINDOW_MS);
    const c1 = readStat(emp.pid)?.cpuTicks;
    const w1 = now();
    const busy = machineBusyPct(m0, machineTicks());
    const probes = accepted() - acc0;
    if (c0 === undefined || c1 === undefined) throw new Error('emperor vanished during the CPU window');
    const cpu = cpuPct(c1 - c0, w1 - w0);
    rows.push(check(`emperor CPU, ${VASSALS} TCP checks every ${INTERVAL_MS / 1000} s (utime+stime over ${CPU_WINDOW_MS / 1000} s), % of one core`, `${fmtPct(cpu)} (${c1 - c0} ticks)`, `≤ ${TARGET_CPU_PCT} %`, cpu <= TARGET_CPU_PCT));
    rows.push(row('  probes the listener accepted in the window', `${probes} (${((probes / (w1 - w0)) * 1000).toFixed(1)}/s; expected ${((VASSALS / INTERVAL_MS) * 1000).toFixed(0)}/s)`));
    rows.push(row('  machine CPU busy in the window, % of all cores', fmtPct(busy)));

    // ---- lag, polling status
    ctx.progress(`sampling resultLagMs every ${fmtMs(POLL_EVERY_MS)} until ${MIN_SAMPLES} distinct results`);
    const seen = new Map<string, number>();
    /** When each result was due (wall clock, lastResultAt - lag): to tell apart those a status poll delayed. */
    const dueAt = new Map<string, number>();
    const polls: Array<[number, number]> = [];
    const notPassing = new Map<string, string>();
    const pollMs: number[] = [];
    const l0 = now();
    const lc0 = readStat(emp.pid)?.cpuTicks ?? 0;
    while (seen.size < MIN_SAMPLES || now() - l0 < 2 * INTERVAL_MS) {
      if (now() - l0 > PART_TIMEOUT_MS) throw new Error(`only ${seen.size} distinct results after ${fmtMs(PART_TIMEOUT_MS)}`);
      const p0 = now();
      const wall0 = Date.now();
      const st = await apiStatus(ws);
      polls.push([wall0, Date.now()]);
      pollMs.push(now() - p0);
      for (const [name, r] of readings(st)) {
        if (r.lastResultAt === null || r.lagMs === null) continue;
        const key = `${name}@${r.lastResultAt}`;
        if (!seen.has(key)) {
          seen.set(key, r.lagMs);
          dueAt.set(key, r.lastResultAt - r.lagMs);
        }
        if (r.status !== 'passing') notPassing.set(key, r.status);
      }
      await sleep(Math.max(0, POLL_EVERY_MS - (now() - p0)));
    }
    const lw = now() - l0;
    const lagCpu = cpuPct((readStat(emp.pid)?.cpuTicks ?? 0) - lc0, lw);
    const lag = summary([...seen.values()]);
    rows.push(row(`check result lag (resultLagMs), p50 (n=${lag.n} distinct results over ${fmtMs(lw)})`, fmtMs(lag.p50)));
    rows.push(check('check result lag, p99', fmtMs(lag.p99), `≤ ${TARGET_LAG_P99_MS} ms`, lag.p99 <= TARGET_LAG_P99_MS));
    rows.push(row('check result lag, max', fmtMs(lag.max)));
    // Serving a 1,000-vassal status blocks the emperor's event loop for a few ms; a check due
    // then (or whose connect completed then) runs late. Without the polls nobody would see it.
    const nearPoll = (t: number): boolean => polls.some(([a, b]) => t >= a - POLL_MARGIN_MS && t <= b + POLL_MARGIN_MS);
    const away = summary([...seen].filter(([k]) => !nearPoll(dueAt.get(k)!)).map(([, v]) => v));
    rows.push(row(`  lag of the results not due within ${POLL_MARGIN_MS} ms of a status poll (n=${away.n})`, `p50 ${fmtMs(away.p50)}, p99 ${fmtMs(away.p99)}, max ${fmtMs(away.max)}`));
    rows.push(check('  results that were not passing', String(notPassing.size), '0', notPassing.size === 0));
    const poll = summary(pollMs);
    rows.push(row(`  GET /v1/status with ${VASSALS} vassals (bench side; ${poll.n} polls)`, `p50 ${fmtMs(poll.p50)}, max ${fmtMs(poll.max)}`));
    rows.push(row(`  emperor CPU while polled every ${POLL_EVERY_MS / 1000} s, % of one core`, fmtPct(lagCpu)));
  } catch (err) {
    rows.push(errorRow(`${VASSALS} checked vassals`, err));
  } finally {
    rows.push(...(await stopAndReport(SECTION, emp, 'checks', ctx)));
  }
  return rows;
}

export const checks: Section = {
  name: SECTION,
  title: 'checks: 1,000 periodic TCP checks: emperor CPU, RSS and result lag',
  async run(ctx) {
    const rows: Row[] = [row('machine: load average (1/5/15 min) at start', loadAvg())];
    let dispose: (() => Promise<void>) | undefined;
    try {
      const listener = await startListener();
      dispose = addCleanup('check listener', listener.close);
      rows.push(...(await measure(ctx, listener.port, listener.accepted)));
    } catch (err) {
      rows.push(errorRow('checks', err));
    } finally {
      await dispose?.();
    }
    return rows;
  },
};
