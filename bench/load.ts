// Section "load": is the control API still responsive while many exec checks are due, do the
// checks keep their rate, and is every one of many concurrent control requests answered?
//
// 200 vassals (`sleep 1000`, ready 10 ms after spawn), each with one exec check (`true`) every
// 1 s, timeout 1 s. Once every check has a result:
//   1. GET /v1/status, one after another for 10 s: p50 / p99 (bench side, connect included);
//   2. 500 GET /v1/status at once: how many answered within 5 s, time to the last answer;
//   3. check result lag (resultLagMs in status: actual start minus due time, plus run time) and
//      the rate checks actually ran at (distinct results per second, against 200/s), over 10 s;
//   4. 500 mixed start/stop/restart/reload requests at once over the 200 vassals: how many were
//      answered (200 or 409) within 60 s, time to the last answer.
import type { EmperorStatus } from '../src/emperor/emperor.js';
import { requestApi } from '../src/api/client.js';
import { PART_TIMEOUT_MS, WRITE_CONCURRENCY, pad, quietRow, rowsFor, stage, stopAndReport, summary, until } from './common.js';
import { BenchEmperor, makeWorkspace, type Workspace } from './harness.js';
import path from 'node:path';
import type { Row, Section, SectionContext } from './types.js';
import { cpuPct, fmtMs, loadAvg, now, pool, readStat, sleep } from './util.js';

const SECTION = 'load';
const { row, check, errorRow } = rowsFor(SECTION);

const VASSALS = 200;
const INTERVAL_MS = 1000;
const WINDOW_MS = 10_000;
const CONCURRENT_STATUS = 500;
const STATUS_TIMEOUT_MS = 5000;
const CONCURRENT_CONTROL = 500;
const CONTROL_TIMEOUT_MS = 60_000;
const TARGET_STATUS_P99_MS = 100;
const TARGET_LAG_P99_MS = 1000;

const sock = (ws: Workspace): string => path.join(ws.state, 'emperor.sock');

async function status(ws: Workspace, timeoutMs = STATUS_TIMEOUT_MS): Promise<EmperorStatus> {
  const a = await requestApi(sock(ws), 'GET', '/v1/status', { timeoutMs });
  if (a.status !== 200) throw new Error(`GET /v1/status: ${a.status}`);
  return a.body as EmperorStatus;
}

/** Fire `n` requests at once; how many got an answer (any status) in time, and when the last did. */
async function burst(n: number, send: (i: number) => Promise<number>): Promise<{ answered: number; byStatus: Map<number, number>; lastMs: number; errors: string[] }> {
  const t0 = now();
  let last = 0;
  const byStatus = new Map<number, number>();
  const errors: string[] = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      try {
        const st = await send(i);
        byStatus.set(st, (byStatus.get(st) ?? 0) + 1);
        last = Math.max(last, now() - t0);
      } catch (err) {
        if (errors.length < 3) errors.push((err as Error).message);
      }
    }),
  );
  const answered = [...byStatus.values()].reduce((a, b) => a + b, 0);
  return { answered, byStatus, lastMs: last, errors };
}

async function measure(ctx: SectionContext): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('load emperor', ws);
  const names = Array.from({ length: VASSALS }, (_, i) => `e${pad(i)}`);
  const content = JSON.stringify({
    command: ['sleep', '1000'],
    start: { ready: { delay: '10ms' } },
    stop: { timeout: '5s' },
    checks: [{ exec: ['true'], interval: `${INTERVAL_MS}ms`, timeout: '1s' }],
  });
  try {
    const ready = emp.collect('ready', new Set(names), PART_TIMEOUT_MS);
    ready.catch(() => undefined);
    await pool(names, WRITE_CONCURRENCY, async (name) => (await stage(ws.vassals, name, content))());
    await ready;
    await until(
      async () => (await status(ws, 30_000)).vassals.every((v) => v.checks[0]?.lastResultAt != null),
      `a result of every one of ${VASSALS} checks`,
      PART_TIMEOUT_MS,
      500,
    );
    ctx.progress(`${VASSALS} vassals ready, every exec check has a result`);
    rows.push(await quietRow(SECTION, ctx, 'the status window'));

    // ---- 1 and 3: sequential status polls; results seen meanwhile
    const lat: number[] = [];
    const seen = new Map<string, number>();
    const c0 = readStat(emp.pid)?.cpuTicks ?? 0;
    const w0 = now();
    let timeouts = 0;
    while (now() - w0 < WINDOW_MS) {
      const p0 = now();
      try {
        const st = await status(ws);
        lat.push(now() - p0);
        for (const v of st.vassals) {
          const c = v.checks[0];
          if (c?.lastResultAt != null && c.resultLagMs !== null) seen.set(`${v.name}@${c.lastResultAt}`, c.resultLagMs);
        }
      } catch {
        timeouts++;
      }
    }
    const w = now() - w0;
    const cpu = cpuPct((readStat(emp.pid)?.cpuTicks ?? 0) - c0, w);
    const s = summary(lat);
    rows.push(row(`GET /v1/status, ${VASSALS} vassals × exec check every ${INTERVAL_MS / 1000} s, one after another for ${WINDOW_MS / 1000} s: p50 (n=${s.n})`, fmtMs(s.p50)));
    rows.push(check('  GET /v1/status p99', fmtMs(s.p99), `≤ ${TARGET_STATUS_P99_MS} ms`, s.p99 <= TARGET_STATUS_P99_MS));
    rows.push(row('  GET /v1/status max; timed out (5 s)', `${fmtMs(s.max)}; ${timeouts}`));
    rows.push(row('  status answers per second', (s.n / (w / 1000)).toFixed(1)));
    rows.push(row('  emperor CPU meanwhile, % of one core', cpu.toFixed(1)));
    const lag = summary([...seen.values()]);
    // Results are seen only by polling: each result is visible until the next one replaces it,
    // so with polls slower than 1 s some are missed; the rate comes from the emperor's counter
    // when there is one (checks[].runs), else from distinct results seen.
    rows.push(row(`check result lag (resultLagMs), p50 (n=${lag.n})`, fmtMs(lag.p50)));
    rows.push(check('check result lag p99', fmtMs(lag.p99), `≤ ${fmtMs(TARGET_LAG_P99_MS)}`, lag.p99 <= TARGET_LAG_P99_MS));
    const runs = await checkRuns(ws, WINDOW_MS);
    rows.push(check(`  exec checks run per second (due: ${(VASSALS * 1000) / INTERVAL_MS}/s)`, runs.toFixed(1), `≥ ${((VASSALS * 1000) / INTERVAL_MS) * 0.9}/s`, runs >= ((VASSALS * 1000) / INTERVAL_MS) * 0.9));

    // ---- 2: many status requests at once
    const sb = await burst(CONCURRENT_STATUS, async () => (await requestApi(sock(ws), 'GET', '/v1/status', { timeoutMs: STATUS_TIMEOUT_MS })).status);
    rows.push(check(`${CONCURRENT_STATUS} GET /v1/status at once: answered within ${STATUS_TIMEOUT_MS / 1000} s`, `${sb.answered}${sb.errors[0] ? ` (${sb.errors[0]})` : ''}`, `${CONCURRENT_STATUS}`, sb.answered === CONCURRENT_STATUS));
    rows.push(row('  time to the last answer', fmtMs(sb.lastMs)));

    // ---- 4: mixed control requests at once
    const actions = ['start', 'stop', 'restart', 'reload'] as const;
    let x = 4242;
    const rnd = (k: number): number => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return x % k;
    };
    const plan = Array.from({ length: CONCURRENT_CONTROL }, () => ({ name: names[rnd(VASSALS)]!, action: actions[rnd(actions.length)]! }));
    const cb = await burst(CONCURRENT_CONTROL, async (i) => {
      const p = plan[i]!;
      return (await requestApi(sock(ws), 'POST', `/v1/vassals/${p.name}/${p.action}`, { timeoutMs: CONTROL_TIMEOUT_MS })).status;
    });
    const by = [...cb.byStatus].map(([k, v]) => `${v}× ${k}`).join(', ');
    rows.push(check(`${CONCURRENT_CONTROL} mixed start/stop/restart/reload at once over ${VASSALS} vassals: answered within ${CONTROL_TIMEOUT_MS / 1000} s`, `${cb.answered} (${by || 'none'})${cb.errors[0] ? `; ${cb.errors[0]}` : ''}`, `${CONCURRENT_CONTROL}`, cb.answered === CONCURRENT_CONTROL));
    rows.push(row('  time to the last answer', fmtMs(cb.lastMs)));
  } catch (err) {
    rows.push(errorRow(`${VASSALS} vassals with exec checks`, err));
  } finally {
    rows.push(...(await stopAndReport(SECTION, emp, 'load', ctx, ['exited', 'stopping', 'killed'])));
  }
  return rows;
}

/**
 * Checks run per second over `ms`: from status counters when the emperor reports them
 * (checks[].runs), else from how lastResultAt moved (a lower bound: one result per poll).
 */
async function checkRuns(ws: Workspace, ms: number): Promise<number> {
  type C = { lastResultAt: number | null; runs?: number };
  const total = (st: EmperorStatus): number | undefined => {
    let sum = 0;
    for (const v of st.vassals) {
      const c = v.checks[0] as C | undefined;
      if (c?.runs === undefined) return undefined;
      sum += c.runs;
    }
    return sum;
  };
  const a = await status(ws, 30_000);
  const t0 = now();
  const ra = total(a);
  if (ra !== undefined) {
    await sleep(ms);
    const b = await status(ws, 30_000);
    return ((total(b) ?? 0) - ra) / ((now() - t0) / 1000);
  }
  const seen = new Set<string>();
  while (now() - t0 < ms) {
    const st = await status(ws, 30_000);
    for (const v of st.vassals) {
      const c = v.checks[0] as C | undefined;
      if (c?.lastResultAt != null) seen.add(`${v.name}@${c.lastResultAt}`);
    }
    await sleep(200);
  }
  return seen.size / ((now() - t0) / 1000);
}

export const load: Section = {
  name: SECTION,
  title: `load: ${VASSALS} vassals × exec check every 1 s: status latency, check lag and rate, ${CONCURRENT_CONTROL} concurrent control requests`,
  async run(ctx) {
    const rows: Row[] = [row('machine: load average (1/5/15 min) at start', loadAvg())];
    rows.push(...(await measure(ctx)));
    return rows;
  },
};
