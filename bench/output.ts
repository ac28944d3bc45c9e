// Section "output": what a vassal writing 50 MB/s costs the emperor, which reads its pipes and
// writes (and rotates) its log (issue 10: RSS flat, CPU ≤ 25 % of a core without mirroring).
//
// The writer paces itself to 50 MiB/s in 1 MiB writes of 100-byte lines (every 20 ms, waiting
// for the pipe when it is full) for WRITE_S seconds and records the bytes it wrote. Meanwhile
// the bench samples the emperor's CPU (schedstat), RSS, and the size of the vassal's logs.
import fs from 'node:fs';
import path from 'node:path';
import { PART_TIMEOUT_MS, STEP_TIMEOUT_MS, apiStatus, quietRow, rowsFor, stopAndReport } from './common.js';
import { BenchEmperor, makeWorkspace } from './harness.js';
import type { Row, Section, SectionContext } from './types.js';
import { cpuNs, fmtMb, fmtPct, now, sleep, statusKb, withTimeout } from './util.js';

const SECTION = 'output';
const { row, check, errorRow } = rowsFor(SECTION);

const RATE_MIB_S = 50;
const WRITE_S = 10;
const MAX_SIZE = 10 * 1024 * 1024;
const KEEP = 2;
const TARGET_CPU_PCT = 25;

/** argv: seconds, MiB/s, file to record the total in. */
const WRITER = `
const [secs, rate, out] = process.argv.slice(1).map((v, i) => (i < 2 ? Number(v) : v));
const line = 'x'.repeat(99) + '\\n';
const chunk = Buffer.from(line.repeat(Math.floor(1048576 / 100)));
const perTick = (rate * 1048576) / 50;
let written = 0, due = 0;
const t0 = Date.now();
let waiting = false;
const tick = () => {
  const elapsed = Date.now() - t0;
  if (elapsed >= secs * 1000) {
    fs.writeFileSync(out, JSON.stringify({ written, ms: elapsed }));
    clearInterval(timer);
    return;
  }
  due += perTick;
  while (!waiting && due >= chunk.length) {
    due -= chunk.length;
    written += chunk.length;
    if (!process.stdout.write(chunk)) { waiting = true; process.stdout.once('drain', () => { waiting = false; }); }
  }
};
const fs = require('node:fs');
const timer = setInterval(tick, 20);
`;

function logBytes(dir: string, name: string): number {
  let total = 0;
  for (const f of fs.readdirSync(dir)) {
    if (f !== `${name}.log` && !f.startsWith(`${name}.log.`)) continue;
    try {
      total += fs.statSync(path.join(dir, f)).size;
    } catch {
      // rotated away meanwhile
    }
  }
  return total;
}

async function run(ctx: SectionContext, mirror: boolean): Promise<Row[]> {
  const label = mirror ? 'with --mirror-output' : 'no mirroring';
  const rows: Row[] = [await quietRow(SECTION, ctx, label)];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start(`output-${mirror ? 'mirror' : 'plain'}`, ws, mirror ? ['--mirror-output'] : []);
  const result = path.join(ws.root, 'written.json');
  const spawned = emp.waitFor((e) => e.event === 'spawned' && e.vassal === 'flood', 'flood spawned', STEP_TIMEOUT_MS);
  fs.writeFileSync(
    path.join(ws.vassals, 'flood.json'),
    JSON.stringify({ command: [process.execPath, '-e', WRITER, String(WRITE_S), String(RATE_MIB_S), result], restart: 'never', logs: { max_size: '10M', keep: KEEP } }),
  );
  await spawned;
  const rss0 = statusKb(emp.pid, 'VmRSS') ?? NaN;
  const cpu0 = cpuNs(emp.pid) ?? NaN;
  const t0 = now();
  let rssMax = rss0;
  let dirMax = 0;
  let rssAt2s: number | undefined;
  while (!fs.existsSync(result)) {
    await sleep(100);
    rssMax = Math.max(rssMax, statusKb(emp.pid, 'VmRSS') ?? 0);
    if (rssAt2s === undefined && now() - t0 > 2000) rssAt2s = statusKb(emp.pid, 'VmRSS');
    dirMax = Math.max(dirMax, logBytes(ws.logs, 'flood'));
    if (now() - t0 > WRITE_S * 1000 + 30_000) throw new Error('the writer did not finish');
  }
  const ms = now() - t0;
  const cpu = ((cpuNs(emp.pid) ?? NaN) - cpu0) / 1e6;
  const rss1 = statusKb(emp.pid, 'VmRSS') ?? NaN;
  const { written } = JSON.parse(fs.readFileSync(result, 'utf8')) as { written: number };
  const status = await apiStatus(ws);
  const flood = status.vassals.find((v) => v.name === 'flood');
  const cpuPct = (cpu / ms) * 100;
  const bound = MAX_SIZE * (KEEP + 1);
  rows.push(row(`${label}: written by the vassal`, `${(written / 1048576).toFixed(0)} MiB in ${(ms / 1000).toFixed(1)} s = ${(written / 1048576 / (ms / 1000)).toFixed(1)} MiB/s (paced to ${RATE_MIB_S})`));
  rows.push(
    mirror
      ? row(`${label}: emperor CPU while it writes, % of one core`, fmtPct(cpuPct))
      : check(`${label}: emperor CPU while it writes, % of one core`, fmtPct(cpuPct), `≤ ${TARGET_CPU_PCT} %`, cpuPct <= TARGET_CPU_PCT),
  );
  const growth = rss1 - (rssAt2s ?? rss0);
  rows.push(
    check(
      `${label}: emperor RSS at spawn / after 2 s / max / end`,
      `${fmtMb(rss0)} / ${fmtMb(rssAt2s ?? NaN)} / ${fmtMb(rssMax)} / ${fmtMb(rss1)}`,
      'flat: end ≤ after 2 s + 10 MB',
      growth <= 10 * 1024,
    ),
  );
  rows.push(check(`${label}: vassal logs, most seen at once (max_size 10M, keep ${KEEP})`, fmtMb(dirMax / 1024), `≤ ${fmtMb(bound / 1024)}`, dirMax <= bound));
  rows.push(check(`${label}: dropped bytes`, String(flood?.output.droppedBytes ?? '?'), '0', flood?.output.droppedBytes === 0));
  if (mirror) rows.push(row(`${label}: bytes not mirrored (--mirror-rate 100)`, String(flood?.output.mirrorSuppressedBytes ?? '?')));
  rows.push(...(await stopAndReport(SECTION, emp, label, ctx, mirror ? ['mirror-suppressed'] : [])));
  return rows;
}

export const output: Section = {
  name: SECTION,
  title: 'a vassal writing 50 MB/s: emperor CPU, RSS, log size',
  async run(ctx) {
    const rows: Row[] = [];
    for (const mirror of [false, true]) {
      try {
        rows.push(...(await withTimeout(run(ctx, mirror), PART_TIMEOUT_MS, `output ${mirror ? 'mirror' : 'plain'}`)));
      } catch (err) {
        rows.push(errorRow(mirror ? 'with --mirror-output' : 'no mirroring', err));
      }
    }
    return rows;
  },
};
