// Section "dashboard" (issue 16): with 1,000 vassals and --http,
//   1. a change → the page's event stream: a vassal's state change (stateSince) until the
//      'changes' event carrying it arrives at a client on loopback (target ≤ 100 ms);
//   2. the first snapshot (size, time) and GET /api/status;
//   3. in Debian's chromium (when present): page load until 1,000 rows are shown, and typing a
//      filter until the table shows its result;
//   4. the emperor's RSS with the dashboard loaded and one page open.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { callApi } from '../src/api/client.js';
import { PART_TIMEOUT_MS, WRITE_CONCURRENCY, pad, quietRow, rowsFor, stopAndReport, summary, until } from './common.js';
import { BenchEmperor, makeWorkspace } from './harness.js';
import type { Row, Section, SectionContext } from './types.js';
import { fmtMb, fmtMs, now, pool, statusKb, withTimeout } from './util.js';

const SECTION = 'dashboard';
const { row, check, errorRow } = rowsFor(SECTION);
const N = 1000;
const CHANGES = 60;
const TARGET_MS = 100;

interface SseClient {
  events: Array<{ event: string; data: string; at: number }>;
  close(): void;
}

/** A bare event-stream reader, timing each event's arrival (Date.now: comparable with stateSince). */
function subscribe(port: number): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const events: SseClient['events'] = [];
    const req = http.get({ host: '127.0.0.1', port, path: '/api/events' }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        const at = Date.now();
        buf += d;
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const event = /^event: (.*)$/m.exec(frame)?.[1] ?? 'message';
          const data = /^data: (.*)$/m.exec(frame)?.[1] ?? '';
          events.push({ event, data, at });
        }
      });
      resolve({ events, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

function chromium(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

async function browserRows(ctx: SectionContext, port: number): Promise<Row[]> {
  const exe = chromium();
  if (!exe) return [row('page with 1,000 vassals', 'not measured: no chromium (bash scripts/setup.sh installs it)')];
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({ executablePath: exe, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    const t0 = now();
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForFunction(`document.querySelectorAll('#vassals tbody tr').length === ${N}`, { timeout: 60_000 });
    const loadMs = now() - t0;
    ctx.progress(`page shows ${N} rows after ${fmtMs(loadMs)}`);
    // EMPEROR_BENCH_TRACE=FILE: a Chrome trace of the filter and the sort (open it in chrome://tracing or DevTools).
    const trace = process.env.EMPEROR_BENCH_TRACE;
    if (trace) await page.tracing.start({ path: trace, screenshots: false });
    // Typing a filter that leaves v-0900 … v-0999, until the table shows just those.
    const f0 = now();
    await page.type('#filter', 'v-09');
    await page.waitForFunction(`document.querySelectorAll('#vassals tbody tr:not([hidden])').length === 100`, { timeout: 60_000 });
    const filterMs = now() - f0;
    const c0 = now();
    await page.evaluate(`(() => { const i = document.getElementById('filter'); i.value = ''; i.dispatchEvent(new Event('input')); })()`);
    await page.waitForFunction(`document.querySelectorAll('#vassals tbody tr:not([hidden])').length === ${N}`, { timeout: 60_000 });
    const clearMs = now() - c0;
    // Sorting: a click on "name" (sorted ascending) reverses the table, until v-0999 is first.
    const o0 = now();
    await page.click('#vassals th[data-key="name"]');
    await page.waitForFunction(`document.querySelector('#vassals tbody tr:not([hidden])')?.dataset.name === 'v-${pad(N - 1)}'`, { timeout: 60_000 });
    const sortMs = now() - o0;
    if (trace) await page.tracing.stop();
    // In the page, without puppeteer's round trips: a filter applied (and cleared), and a sort by
    // another column, each until the next frame is painted; the median of 5.
    const inPage = (await page.evaluate(`(async () => {
      const painted = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
      const pause = () => new Promise((r) => setTimeout(r, 150));
      const input = document.getElementById('filter');
      const filter = async (v) => { const t = performance.now(); input.value = v; input.dispatchEvent(new Event('input')); await painted(); return performance.now() - t; };
      const filters = [];
      const sorts = [];
      for (let i = 0; i < 5; i++) { await pause(); filters.push(await filter('v-09')); await pause(); await filter(''); }
      for (let i = 0; i < 5; i++) {
        await pause();
        const t = performance.now();
        document.querySelector('#vassals th[data-key="' + (i % 2 ? 'name' : 'pid') + '"]').click();
        await painted();
        sorts.push(performance.now() - t);
      }
      const median = (a) => a.sort((x, y) => x - y)[2];
      return { filter: median(filters), sort: median(sorts) };
    })()`)) as { filter: number; sort: number };
    const heap = (await page.metrics()).JSHeapUsedSize ?? 0;
    return [
      row(`page load until ${N} rows shown`, fmtMs(loadMs)),
      row(`typing a filter until ${N / 10} of ${N} rows shown`, fmtMs(filterMs)),
      row(`clearing the filter until all ${N} rows shown`, fmtMs(clearMs)),
      row(`clicking a column header until the ${N} rows are sorted`, fmtMs(sortMs)),
      row(`in the page: a filter of ${N} rows until painted, median of 5`, fmtMs(inPage.filter)),
      row(`in the page: a sort of ${N} rows by another column until painted, median of 5`, fmtMs(inPage.sort)),
      row('page JS heap with 1,000 rows', fmtMb(heap / 1024)),
    ];
  } finally {
    await browser.close();
  }
}

export const dashboard: Section = {
  name: SECTION,
  title: 'the dashboard with 1,000 vassals: change → event stream, snapshot, page in chromium',
  async run(ctx) {
    const rows: Row[] = [await quietRow(SECTION, ctx, 'dashboard')];
    const ws = await makeWorkspace();
    const port = await new Promise<number>((resolve) => {
      const s = http.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const emp = await BenchEmperor.start('dashboard', ws, ['--http', `127.0.0.1:${port}`]);
    const socket = path.join(ws.state, 'emperor.sock');
    try {
      await withTimeout(
        pool(
          Array.from({ length: N }, (_, i) => i),
          WRITE_CONCURRENCY,
          async (i) => fs.promises.writeFile(path.join(ws.vassals, `v-${pad(i)}.json`), JSON.stringify({ command: ['sleep', '1000'] })),
        ),
        PART_TIMEOUT_MS,
        'writing vassal files',
      );
      await until(() => emp.count('ready') >= N, () => `${emp.count('ready')} of ${N} ready`, PART_TIMEOUT_MS);

      // 2. snapshot and status.
      const s0 = now();
      const client = await subscribe(port);
      await until(() => client.events.some((e) => e.event === 'snapshot'), 'the first snapshot', 30_000);
      const snap = client.events.find((e) => e.event === 'snapshot')!;
      rows.push(row(`first event-stream snapshot with ${N} vassals`, `${fmtMs(now() - s0)}, ${fmtMb(Buffer.byteLength(snap.data) / 1024)}`));
      const g0 = now();
      await new Promise<void>((resolve, reject) => http.get({ host: '127.0.0.1', port, path: '/api/status' }, (res) => res.resume().on('end', resolve)).on('error', reject));
      rows.push(row(`GET /api/status with ${N} vassals`, fmtMs(now() - g0)));

      // 1. change → event: stop and start vassals one after the other, through the control socket.
      const lat: number[] = [];
      for (let i = 0; i < CHANGES / 2; i++) {
        const name = `v-${pad(i)}`;
        for (const [action, target] of [
          ['stop', 'stopped'],
          ['start', 'running'],
        ] as const) {
          const before = client.events.length;
          const answer = await callApi<{ stateSince: number }>(socket, 'POST', `/v1/vassals/${name}/${action}`, { timeoutMs: 30_000 });
          const carries = (e: SseClient['events'][number]): boolean => e.event === 'changes' && e.data.includes(`"name":"${name}","state":"${target}"`);
          await until(() => client.events.slice(before).some(carries), `${name} ${target} in the event stream`, 30_000);
          lat.push(client.events.slice(before).find(carries)!.at - answer.stateSince);
        }
      }
      const s = summary(lat);
      rows.push(check(`state change → 'changes' event at a loopback client, p50 / p99 (n=${s.n})`, `${fmtMs(s.p50)} / ${fmtMs(s.p99)}`, `p99 ≤ ${TARGET_MS} ms`, s.p99 <= TARGET_MS));

      // 3. the page.
      try {
        rows.push(...(await browserRows(ctx, port)));
      } catch (err) {
        rows.push(errorRow('page in chromium', err));
      }
      client.close();
      // 4. memory.
      const rss = statusKb(emp.pid, 'VmRSS');
      if (rss !== undefined) rows.push(row(`emperor RSS with ${N} vassals and the dashboard loaded`, fmtMb(rss)));
    } catch (err) {
      rows.push(errorRow('dashboard', err));
    }
    rows.push(...(await stopAndReport(SECTION, emp, 'dashboard', ctx)));
    return rows;
  },
};
