// Section "scale" (`node dist/bench/run.js scale`; not part of a plain run: it takes minutes and
// 5,000 processes): issue 13's largest row. 5,000 vassal files dropped at once (atomic renames)
// → every one spawned and ready; the emperor's RSS and idle CPU with them running; all deleted →
// every pid gone. The same app as `core` (sleep), the same emperor as installed.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { burstFloorRows, floorRounds } from './floor.js';
import { BenchEmperor, makeWorkspace, type Arrival } from './harness.js';
import type { Row, RowStatus, Section, SectionContext } from './types.js';
import { cpuPct, fmtMb, fmtMs, fmtPct, isGone, now, pool, readStat, sleep, statusKb, waitForQuiet } from './util.js';

const SECTION = 'scale';
const COUNT = Number(process.env.BENCH_SCALE_COUNT ?? 5000);
const COMMAND = ['sleep', '1000'];
const VASSAL = JSON.stringify({ command: COMMAND });
/** A vassal without a readiness rule is ready once up this long (the emperor's default). */
const READY_AFTER_MS = 1000;
const WRITE_CONCURRENCY = 8;
/** Past this the part fails instead of hanging (the target is 20 s; 64 s was once measured). */
const PART_TIMEOUT_MS = 180_000;
const TARGET_ALL_RUNNING_MS = 20_000;
/** As `core`: idle is measured once the burst's clean-up (parse worker, GC) is over. */
const IDLE_AFTER_MS = 30_000;
const IDLE_WINDOW_MS = 10_000;

const row = (metric: string, value: string, target = '—', status: RowStatus = 'info'): Row => ({ section: SECTION, metric, value, target, status });
const maxT = (arrivals: Map<string, Arrival>): number => Math.max(...[...arrivals.values()].map((a) => a.t));

/**
 * Each quiet vassal holds 3 of the emperor's descriptors (stdout, stderr, the Emperor protocol
 * socket; a log file too once it writes), so 5,000 need about 15,000: some hosts allow 20,000 by
 * default, others 1,024, where the emperor refuses the last starts with a clear error, as it
 * should. As root the bench raises its own limit (inherited by the emperor it starts), as an
 * operator would with LimitNOFILE=.
 */
function raiseFdLimit(): string {
  const want = COUNT * 4 + 4096;
  if (process.geteuid?.() === 0) {
    try {
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${want}:${want}`], { stdio: 'ignore' });
    } catch {
      // No prlimit, or not allowed: the row below says what the emperor got.
    }
  }
  return /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.slice(1, 3).join(' / ') ?? '?';
}

async function run(ctx: SectionContext): Promise<Row[]> {
  const rows: Row[] = [];
  rows.push(row('open files limit the emperor starts with (soft / hard)', raiseFdLimit()));
  const ws = await makeWorkspace('emperor-scale-');
  const emp = await BenchEmperor.start('emperor S', ws);
  const names = Array.from({ length: COUNT }, (_, i) => `s${String(i).padStart(5, '0')}`);
  const nameSet = new Set(names);
  let floorRows: Row[] = [];
  try {
    // The machine's floor for the same burst, as in `core` (one round of each by default: 5,000
    // spawns take seconds), before the emperor's burst and its quiet wait.
    const fq = await waitForQuiet(25, Number(process.env.BENCH_QUIET_WAIT_MS ?? 30_000));
    rows.push(row('machine CPU busy before the floor, % of all cores', fmtPct(fq.busyPct)));
    ctx.progress(`floor: ${COUNT} \`${COMMAND.join(' ')}\` by a bare posix_spawn loop, 1 and 2 processes`);
    floorRows = await burstFloorRows({
      section: SECTION,
      command: COMMAND,
      count: COUNT,
      readyAfterMs: READY_AFTER_MS,
      target: `≤ ${TARGET_ALL_RUNNING_MS / 1000} s`,
      rounds: floorRounds(1),
      timeoutMs: PART_TIMEOUT_MS,
      progress: (msg) => ctx.progress(msg),
    });
    const q = await waitForQuiet(25, Number(process.env.BENCH_QUIET_WAIT_MS ?? 30_000));
    rows.push(row('machine CPU busy before the burst, % of all cores', fmtPct(q.busyPct)));
    // Staged first, so the measured part is the renames and the emperor's work alone.
    await pool(names, WRITE_CONCURRENCY, (n) => fs.writeFile(path.join(ws.vassals, `.${n}.json.tmp`), VASSAL));
    const progress = (what: string) => (n: number) => {
      if (n % 1000 === 0) ctx.progress(`${n}/${COUNT} ${what}`);
    };
    const spawned = emp.collect('spawned', nameSet, PART_TIMEOUT_MS, progress('spawned'));
    const ready = emp.collect('ready', nameSet, PART_TIMEOUT_MS, progress('ready'));
    spawned.catch(() => undefined);
    ready.catch(() => undefined);
    const cpu0 = readStat(emp.pid)?.cpuTicks ?? 0;
    const t0 = now();
    await pool(names, WRITE_CONCURRENCY, (n) => fs.rename(path.join(ws.vassals, `.${n}.json.tmp`), path.join(ws.vassals, `${n}.json`)));
    const renamed = now() - t0;
    const allSpawned = maxT(await spawned) - t0;
    const allReady = maxT(await ready) - t0;
    const cpu = (readStat(emp.pid)?.cpuTicks ?? 0) - cpu0;
    rows.push(row(`${COUNT} files renamed into place (${WRITE_CONCURRENCY} in flight)`, fmtMs(renamed)));
    rows.push(row(`${COUNT} dropped at once → ${COUNT}th spawned`, fmtMs(allSpawned)));
    rows.push(
      row(`${COUNT} dropped at once → ${COUNT}th ready (ready = up 1 s)`, fmtMs(allReady), `≤ ${TARGET_ALL_RUNNING_MS / 1000} s`, allReady <= TARGET_ALL_RUNNING_MS ? 'ok' : 'MISS'),
    );
    rows.push(...floorRows.splice(0));
    rows.push(row('emperor CPU during the burst, % of one core', fmtPct(cpuPct(cpu, allReady))));

    await sleep(IDLE_AFTER_MS);
    const rss = statusKb(emp.pid, 'VmRSS');
    const c0 = readStat(emp.pid)?.cpuTicks ?? 0;
    const w0 = now();
    await sleep(IDLE_WINDOW_MS);
    const idle = cpuPct((readStat(emp.pid)?.cpuTicks ?? 0) - c0, now() - w0);
    rows.push(row(`emperor RSS with ${COUNT} running, idle (${IDLE_AFTER_MS / 1000} s after the burst)`, rss === undefined ? 'n/a' : fmtMb(rss)));
    rows.push(row(`emperor idle CPU with ${COUNT} running (${IDLE_WINDOW_MS / 1000} s window), % of one core`, fmtPct(idle)));

    const pids = [...(await spawned).values()].map((a) => a.entry.pid).filter((p): p is number => typeof p === 'number');
    const stopped = emp.collect('stopped', nameSet, PART_TIMEOUT_MS, progress('stopped'));
    stopped.catch(() => undefined);
    const d0 = now();
    await pool(names, WRITE_CONCURRENCY, (n) => fs.unlink(path.join(ws.vassals, `${n}.json`)));
    const allStopped = maxT(await stopped) - d0;
    rows.push(row(`delete all ${COUNT} → ${COUNT}th stopped`, fmtMs(allStopped)));
    const left = pids.filter((p) => !isGone(p));
    rows.push(row('pids left after the last "stopped"', String(left.length), '0', left.length === 0 ? 'ok' : 'MISS'));
  } catch (err) {
    rows.push(...floorRows.splice(0));
    rows.push(row(`${COUNT} at once`, `bench failed: ${err instanceof Error ? err.message.split('\n')[0]! : String(err)}`, '—', 'error'));
  } finally {
    const res = await emp.stop();
    rows.push(row(`SIGTERM → emperor exited (${emp.vassalPids.size} vassals spawned in its life)`, `${fmtMs(res.ms)} (exit ${res.code ?? res.signal})`));
    rows.push(row('processes outliving the emperor', emp.leftovers.length === 0 ? '0' : emp.leftovers.join('; ').slice(0, 300), '0', emp.leftovers.length === 0 ? 'ok' : 'MISS'));
  }
  return rows;
}

export const scale: Section = {
  name: SECTION,
  title: `${COUNT} vassals dropped at once: all running, RSS and idle CPU, all removed`,
  run,
};
