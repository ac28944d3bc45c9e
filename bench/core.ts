// Section "core": how fast files become processes, what 1,000 vassals cost, how fast they go.
//
//   1. drop → spawned latency, one file at a time (fresh emperor A)
//   2. 1,000 files at once → all spawned / all ready (fresh emperor B)
//   3. emperor (and guardian) RSS and idle CPU with those 1,000 running (B)
//   4. delete all 1,000 → all stopped and every pid gone (B)
//   5. the same burst with rescans off: do watcher events alone find every file? (fresh emperor C)
import fs from 'node:fs/promises';
import path from 'node:path';
import type { EmperorStatus } from '../src/emperor/emperor.js';
import { PARSER_IDLE_MS } from '../src/config/parse-pool.js';
import { runCli } from '../test/support/emperor.js';
import { burstFloorRows, floorRounds } from './floor.js';
import { BenchEmperor, makeWorkspace, type Arrival } from './harness.js';
import type { Row, RowStatus, Section, SectionContext } from './types.js';
import { cpuNs, cpuPct, fmtMb, fmtMs, fmtPct, isGone, loadAvg, machineBusyPct, machineTicks, now, percentile, pool, readStat, sleep, statusKb, ticksPerSecond, waitForQuiet } from './util.js';

const SECTION = 'core';
/** A cheap app: the figure is the emperor's, not the app's start-up. */
const COMMAND = ['sleep', '1000'];
const VASSAL = JSON.stringify({ command: COMMAND });
/** A vassal without a readiness rule is ready once up this long (the emperor's default). */
const READY_AFTER_MS = 1000;

const DROPS = 200;
const BURST = 1000;
/** Budget of each part; past it the part fails instead of hanging. */
const PART_TIMEOUT_MS = 120_000;
/** One drop may take this long (a missed inotify event is repaired by the 10 s rescan). */
const DROP_TIMEOUT_MS = 15_000;
const WRITE_CONCURRENCY = 8;
const SETTLE_BEFORE_IDLE_MS = 3000;
/** Idle RSS and CPU are taken this long after the last "ready": past the burst's clean-up (part 3). */
const IDLE_AFTER_BURST_MS = 30_000;
/** Part 5 gives up waiting once no new file was reported for this long. */
const EVENTS_IDLE_MS = 5000;
const IDLE_WINDOW_MS = 10_000;

/**
 * Before parts 1 and 2, wait (this long at most) for the rest of the machine to go quiet: other
 * work on the host (a build, a test run) skews every latency. BENCH_QUIET_WAIT_MS=0 skips it.
 */
const QUIET_BUSY_PCT = 25;
const QUIET_MAX_WAIT_MS = ((v) => (Number.isFinite(v) && v >= 0 ? v : 30_000))(Number(process.env.BENCH_QUIET_WAIT_MS ?? 30_000));

// Issue 13's targets: a file moved into place needs no settle delay; 1,000 running within 3 s.
const TARGET_DROP_P99_MS = 25;
const TARGET_ALL_READY_MS = 3_000;
const TARGET_RSS_KB = 120 * 1024;
const TARGET_IDLE_CPU_PCT = 1;

const row = (metric: string, value: string, target = '—', status: RowStatus = 'info'): Row => ({ section: SECTION, metric, value, target, status });
const check = (metric: string, value: string, target: string, ok: boolean): Row => row(metric, value, target, ok ? 'ok' : 'MISS');
const errorRow = (metric: string, err: unknown): Row => row(metric, `bench failed: ${err instanceof Error ? err.message.split('\n')[0]! : String(err)}`, '—', 'error');

const pad = (i: number): string => String(i).padStart(4, '0');

/** Write the content under a dot-temp name the emperor ignores; rename() later drops it atomically. */
async function stage(dir: string, name: string): Promise<{ tmp: string; file: string }> {
  const tmp = path.join(dir, `.${name}.json.tmp`);
  await fs.writeFile(tmp, VASSAL);
  return { tmp, file: path.join(dir, `${name}.json`) };
}

/** Give other work on the host a chance to finish, and say how busy the machine was. */
async function quietRow(ctx: SectionContext, part: string): Promise<Row> {
  const q = await waitForQuiet(QUIET_BUSY_PCT, QUIET_MAX_WAIT_MS);
  const quiet = q.busyPct < QUIET_BUSY_PCT;
  const msg = `machine CPU busy before ${part}: ${fmtPct(q.busyPct)} of all cores over 1 s${q.waitedMs > 1500 ? ` (after waiting ${fmtMs(q.waitedMs)} for quiet)` : ''}`;
  ctx.progress(quiet ? msg : `${msg}: NOT quiet, figures will be noisy`);
  return row(`machine CPU busy just before ${part}, % of all cores`, `${fmtPct(q.busyPct)}${quiet ? '' : ` (not quiet after ${fmtMs(q.waitedMs)})`}`);
}

/** Rows about what the emperor complained about and what outlived it. */
function healthRows(emp: BenchEmperor, what: string): Row[] {
  const rows: Row[] = [];
  const sample = emp.complaints
    .slice(0, 3)
    .map((e) => `${e.event ?? e.level ?? '?'}${e.vassal ? `[${e.vassal}]` : ''}: ${String(e.message ?? '').slice(0, 120)}`)
    .join('; ');
  rows.push(check(`${what}: emperor warn/error log lines`, sample ? `${emp.complaintCount} (${sample})` : '0', '0', emp.complaintCount === 0));
  rows.push(check(`${what}: processes outliving the emperor`, emp.leftovers.length === 0 ? '0' : emp.leftovers.join('; '), '0', emp.leftovers.length === 0));
  return rows;
}

async function stopAndReport(emp: BenchEmperor, what: string, ctx: SectionContext): Promise<Row[]> {
  const n = emp.vassalPids.size;
  ctx.progress(`${what}: SIGTERM to emperor ${emp.pid}`);
  const res = await emp.stop();
  const exit = res.signal ? `killed by ${res.signal}` : `exit ${res.code}`;
  if (res.code !== 0) emp.leftovers.push(`${emp.label}: ${exit} after SIGTERM; stderr: ${emp.stderr.trim().slice(-300)}`);
  return [row(`${what}: SIGTERM → emperor exited (${n} vassals spawned in its life)`, `${fmtMs(res.ms)} (${exit})`), ...healthRows(emp, what)];
}

// ---- 1. drop → spawned ------------------------------------------------------------------

async function dropLatency(ctx: SectionContext): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('emperor A', ws);
  ctx.progress(`[1] drop → spawned: emperor A pid ${emp.pid}, ${DROPS} drops one at a time`);
  try {
    rows.push(await quietRow(ctx, 'part 1'));
    const deadline = now() + PART_TIMEOUT_MS;
    const machine0 = machineTicks();
    const samples: number[] = [];
    const toDeploy: number[] = [];
    const deployToSpawn: number[] = [];
    for (let i = 0; i < DROPS; i++) {
      const name = `d${pad(i)}`;
      const { tmp, file } = await stage(ws.vassals, name);
      const left = deadline - now();
      if (left <= 0) throw new Error(`part 1 exceeded ${fmtMs(PART_TIMEOUT_MS)} after ${i} drops`);
      const timeout = Math.min(DROP_TIMEOUT_MS, left);
      // "deploy" is logged when the watcher hands the parsed file over, just before the spawn.
      const deployed = emp.waitFor((e) => e.event === 'deploy' && e.vassal === name, `"deploy" of ${name}`, timeout);
      const spawned = emp.waitFor((e) => e.event === 'spawned' && e.vassal === name, `"spawned" of ${name}`, timeout);
      // If anything below throws, these are abandoned; their timers reject them, unobserved.
      deployed.catch(() => undefined);
      spawned.catch(() => undefined);
      const t0 = now();
      await fs.rename(tmp, file);
      const { t } = await spawned;
      const tDeploy = (await deployed).t;
      samples.push(t - t0);
      toDeploy.push(tDeploy - t0);
      deployToSpawn.push(t - tDeploy);
      if (t - t0 > 1000) ctx.progress(`[1] drop ${name} took ${fmtMs(t - t0)}`);
      if ((i + 1) % 50 === 0) ctx.progress(`[1] ${i + 1}/${DROPS} drops`);
    }
    const machineBusy = machineBusyPct(machine0, machineTicks());
    const sorted = [...samples].sort((a, b) => a - b);
    const p99 = percentile(sorted, 99);
    rows.push(row(`file dropped → spawned, p50 (n=${DROPS})`, fmtMs(percentile(sorted, 50))));
    rows.push(check('file dropped → spawned, p99', fmtMs(p99), `≤ ${TARGET_DROP_P99_MS} ms`, p99 <= TARGET_DROP_P99_MS));
    rows.push(row('file dropped → spawned, max', `${fmtMs(sorted[sorted.length - 1]!)} (drop #${samples.indexOf(sorted[sorted.length - 1]!) + 1})`));
    const split = (xs: number[]): string => {
      const s = [...xs].sort((a, b) => a - b);
      return `p50 ${fmtMs(percentile(s, 50))}, p99 ${fmtMs(percentile(s, 99))}, max ${fmtMs(s[s.length - 1]!)}`;
    };
    rows.push(row('  of which: dropped → "deploy" line (watcher: settle 20 ms + read)', split(toDeploy)));
    rows.push(row('  of which: "deploy" → "spawned" line (spawn)', split(deployToSpawn)));
    rows.push(row('  machine CPU busy during the drops, % of all cores', fmtPct(machineBusy)));
  } catch (err) {
    rows.push(errorRow('file dropped → spawned', err));
  } finally {
    rows.push(...(await stopAndReport(emp, 'part 1', ctx)));
  }
  return rows;
}

// ---- 2-4. 1,000 at once ---------------------------------------------------------------------

/** Samples the emperor's CPU every second; peak() is the busiest 1-s interval. */
function cpuSampler(pid: number): { stop(): void; peak(): number } {
  let last = readStat(pid)?.cpuTicks ?? 0;
  let lastT = now();
  let peak = 0;
  const timer = setInterval(() => {
    const ticks = readStat(pid)?.cpuTicks;
    if (ticks === undefined) return;
    const t = now();
    peak = Math.max(peak, cpuPct(ticks - last, t - lastT));
    last = ticks;
    lastT = t;
  }, 1000);
  return { stop: () => clearInterval(timer), peak: () => peak };
}

const maxT = (arrivals: Map<string, Arrival>): number => Math.max(...[...arrivals.values()].map((a) => a.t));

/**
 * Longest silence between consecutive arrivals (from t0). A healthy burst streams events every
 * few ms; a pause of seconds means the emperor sat idle with work pending, i.e. it had not heard
 * of those files yet (see the watcher row of part 5).
 */
function longestPause(arrivals: Map<string, Arrival>, t0: number): string {
  const ts = [t0, ...[...arrivals.values()].map((a) => a.t).sort((a, b) => a - b)];
  let best = 0;
  let at = 0;
  for (let i = 1; i < ts.length; i++) {
    if (ts[i]! - ts[i - 1]! > best) {
      best = ts[i]! - ts[i - 1]!;
      at = i - 1;
    }
  }
  return `${fmtMs(best)} (${at === 0 ? 'before the first' : `after the ${at}th, at t0 + ${fmtMs(ts[at]! - t0)}`})`;
}

async function status(ws: { state: string }): Promise<EmperorStatus> {
  const res = await runCli(['status', '--json', '--state-dir', ws.state]);
  if (res.code !== 0) throw new Error(`emperor status exited ${res.code}: ${res.stderr.trim()}`);
  return JSON.parse(res.stdout) as EmperorStatus;
}

async function thousand(ctx: SectionContext): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('emperor B', ws);
  ctx.progress(`[2] ${BURST} at once: emperor B pid ${emp.pid}, guardian ${emp.guardianPid ?? 'not found'}`);
  const baseRss = statusKb(emp.pid, 'VmRSS');
  const names = Array.from({ length: BURST }, (_, i) => `v${pad(i)}`);
  const nameSet = new Set(names);
  try {
    // ---- 2. burst
    // First the machine's floor for the same burst (placed beside the emperor's rows below): a
    // bare posix_spawn loop starting the vassals' command as many times. Run before the burst,
    // while emperor B is idle with an empty directory, and before the burst's own quiet wait, so
    // what it leaves behind (1,000 exits and reaps) is over when the emperor is measured.
    rows.push(await quietRow(ctx, 'the floor'));
    ctx.progress(`[2] floor: ${BURST} \`${COMMAND.join(' ')}\` by a bare posix_spawn loop, 1 and 2 processes`);
    const floorRows = await burstFloorRows({
      section: SECTION,
      command: COMMAND,
      count: BURST,
      readyAfterMs: READY_AFTER_MS,
      target: `≤ ${TARGET_ALL_READY_MS / 1000} s`,
      rounds: floorRounds(3),
      timeoutMs: PART_TIMEOUT_MS,
      progress: (msg) => ctx.progress(`[2] ${msg}`),
    });
    rows.push(await quietRow(ctx, 'part 2'));
    const progress = (what: string) => (n: number) => {
      if (n % 250 === 0) ctx.progress(`[2] ${n}/${BURST} ${what}`);
    };
    const spawned = emp.collect('spawned', nameSet, PART_TIMEOUT_MS, progress('spawned'));
    const ready = emp.collect('ready', nameSet, PART_TIMEOUT_MS, progress('ready'));
    // If the writes fail these are abandoned; their timers reject them later, unobserved.
    spawned.catch(() => undefined);
    ready.catch(() => undefined);
    const cpu0 = readStat(emp.pid)?.cpuTicks ?? 0;
    const guardian0 = emp.guardianPid === undefined ? 0 : (readStat(emp.guardianPid)?.cpuTicks ?? 0);
    const bench0 = process.cpuUsage();
    const machine0 = machineTicks();
    const sampler = cpuSampler(emp.pid);
    const t0 = now();
    let writesDone = 0;
    try {
      await pool(names, WRITE_CONCURRENCY, async (name) => {
        if (now() - t0 > PART_TIMEOUT_MS) throw new Error('writing the files exceeded the part budget');
        const { tmp, file } = await stage(ws.vassals, name);
        await fs.rename(tmp, file);
      });
      writesDone = now();
      ctx.progress(`[2] ${BURST} files written in ${fmtMs(writesDone - t0)}`);
      const allSpawned = maxT(await spawned);
      const readyArrivals = await ready;
      const allReady = maxT(readyArrivals);
      // Where the machine's CPU went between t0 and the last "ready": if "other processes" is
      // high, something else on the host competed with the emperor and the figures are noisy.
      const machine1 = machineTicks();
      const wall = now() - t0;
      const emperorTicks = (readStat(emp.pid)?.cpuTicks ?? 0) - cpu0;
      const guardianTicks = emp.guardianPid === undefined ? 0 : (readStat(emp.guardianPid)?.cpuTicks ?? 0) - guardian0;
      // A vassal's own pid carries its fork + setpriv + exec + start-up time (it is not reaped
      // yet); schedstat, since a ~1 ms start-up rarely catches a utime/stime tick.
      let vassalNs = 0;
      for (const [pid] of emp.vassalPids) vassalNs += cpuNs(pid) ?? 0;
      const vassalTicks = (vassalNs / 1e9) * ticksPerSecond();
      const b = process.cpuUsage(bench0);
      const benchTicks = ((b.user + b.system) / 1e6) * ticksPerSecond();
      const otherTicks = machine1.busy - machine0.busy - emperorTicks - guardianTicks - vassalTicks - benchTicks;
      const pct = (ticks: number): string => fmtPct(cpuPct(ticks, wall));
      rows.push(row(`${BURST} files written (atomic renames, ${WRITE_CONCURRENCY} in flight)`, fmtMs(writesDone - t0)));
      rows.push(row(`${BURST} dropped at once → ${BURST}th spawned`, fmtMs(allSpawned - t0)));
      rows.push(row('  longest pause between two "spawned" lines', longestPause(await spawned, t0)));
      rows.push(check(`${BURST} dropped at once → ${BURST}th ready (ready = up 1 s)`, fmtMs(allReady - t0), `≤ ${TARGET_ALL_READY_MS / 1000} s`, allReady - t0 <= TARGET_ALL_READY_MS));
      rows.push(...floorRows.splice(0));
      rows.push(row('emperor CPU during the burst (t0 → all ready), % of one core', `avg ${pct(emperorTicks)}, busiest 1 s ${fmtPct(sampler.peak())}`));
      rows.push(
        row(
          'other CPU during the burst, % of one core (machine has 2 cores = 200 %)',
          `vassal start-ups ${pct(vassalTicks)}, guardian ${pct(guardianTicks)}, bench ${pct(benchTicks)}, other processes ${pct(Math.max(0, otherTicks))}; machine busy ${fmtPct(machineBusyPct(machine0, machine1))} of all cores`,
        ),
      );
    } finally {
      sampler.stop();
      // The burst failed before its rows: the floor is still worth showing.
      rows.push(...floorRows.splice(0));
    }

    // The state must match the log: every vassal running, with the pid it was spawned with.
    const pidOf = new Map<string, number>();
    for (const [name, a] of await spawned) if (typeof a.entry.pid === 'number') pidOf.set(name, a.entry.pid);
    const st = await status(ws);
    const good = st.vassals.filter((v) => nameSet.has(v.name) && v.state === 'running' && v.pid !== null && v.pid === pidOf.get(v.name) && !isGone(v.pid));
    const bad = st.vassals.filter((v) => !good.includes(v)).map((v) => `${v.name}:${v.state}`);
    rows.push(
      check(
        '`emperor status`: running, with the spawned pid, alive',
        `${good.length}/${BURST}${bad.length ? ` (others: ${bad.slice(0, 5).join(', ')})` : ''}`,
        `${BURST}/${BURST}`,
        good.length === BURST && st.vassals.length === BURST,
      ),
    );

    // ---- 3. memory and idle CPU
    // Idle means the burst's own clean-up is over: the parse worker (~20 MB while it runs) stops
    // PARSER_IDLE_MS after its last file, and V8's memory reducer then collects and returns the
    // burst's garbage over the next 10-20 s. Measured inside that clean-up, the figures were its
    // cost (1,000 vassals, load 9-29: 3 s after the burst 124-127 MB and 2.4 % of a core; 13 s
    // after 100-112 MB and 0.9-2.1 %; 30 s after 83 MB and 0.2 %). So the targets are taken
    // IDLE_AFTER_BURST_MS after the burst, and the earlier readings are shown beside them.
    ctx.progress(`[3] RSS 3 s and ${(SETTLE_BEFORE_IDLE_MS + PARSER_IDLE_MS) / 1000} s after the burst, then RSS and a ${fmtMs(IDLE_WINDOW_MS)} idle CPU window ${IDLE_AFTER_BURST_MS / 1000} s after it`);
    const burstOver = now();
    const cpuWindow = async (): Promise<{ emperor: number; ticks: number; guardian: number | undefined }> => {
      const g0 = emp.guardianPid === undefined ? undefined : readStat(emp.guardianPid)?.cpuTicks;
      const c0 = readStat(emp.pid)?.cpuTicks;
      const w0 = now();
      await sleep(IDLE_WINDOW_MS);
      const c1 = readStat(emp.pid)?.cpuTicks;
      const g1 = emp.guardianPid === undefined ? undefined : readStat(emp.guardianPid)?.cpuTicks;
      const w1 = now();
      if (c0 === undefined || c1 === undefined) throw new Error('emperor vanished during the idle window');
      return { emperor: cpuPct(c1 - c0, w1 - w0), ticks: c1 - c0, guardian: g0 !== undefined && g1 !== undefined ? cpuPct(g1 - g0, w1 - w0) : undefined };
    };
    await sleep(SETTLE_BEFORE_IDLE_MS);
    const rssEarly = statusKb(emp.pid, 'VmRSS');
    if (rssEarly !== undefined) rows.push(row(`emperor RSS ${SETTLE_BEFORE_IDLE_MS / 1000} s after the burst (parse worker still running)`, fmtMb(rssEarly)));
    await sleep(PARSER_IDLE_MS);
    const rssCleanup = statusKb(emp.pid, 'VmRSS');
    const cleanup = await cpuWindow();
    rows.push(
      row(
        `emperor RSS ${(SETTLE_BEFORE_IDLE_MS + PARSER_IDLE_MS) / 1000} s after the burst (parse worker stopped, garbage being returned), then CPU over ${IDLE_WINDOW_MS / 1000} s`,
        `${rssCleanup === undefined ? '?' : fmtMb(rssCleanup)}, ${fmtPct(cleanup.emperor)} (${cleanup.ticks} ticks)`,
      ),
    );
    await sleep(Math.max(0, IDLE_AFTER_BURST_MS - (now() - burstOver)));
    const rss = statusKb(emp.pid, 'VmRSS');
    if (rss === undefined) throw new Error(`cannot read /proc/${emp.pid}/status`);
    rows.push(check(`emperor RSS (VmRSS) with ${BURST} running, idle (${IDLE_AFTER_BURST_MS / 1000} s after the burst)`, fmtMb(rss), `≤ ${TARGET_RSS_KB / 1024} MB`, rss <= TARGET_RSS_KB));
    if (baseRss !== undefined) rows.push(row('  vs. emperor RSS just started, 0 vassals', `${fmtMb(baseRss)} (+${((rss - baseRss) / BURST).toFixed(0)} kB per vassal)`));
    const hwm = statusKb(emp.pid, 'VmHWM');
    if (hwm !== undefined) rows.push(row('emperor peak RSS so far (VmHWM)', fmtMb(hwm)));
    const gRss = emp.guardianPid === undefined ? undefined : statusKb(emp.guardianPid, 'VmRSS');
    rows.push(row(`guardian shell RSS (pid ${emp.guardianPid ?? '?'})`, gRss === undefined ? 'not found' : fmtMb(gRss)));

    const idle = await cpuWindow();
    rows.push(
      check(
        `emperor idle CPU, ${BURST} running (utime+stime over ${IDLE_WINDOW_MS / 1000} s, from ${IDLE_AFTER_BURST_MS / 1000} s after the burst), % of one core`,
        `${fmtPct(idle.emperor)} (${idle.ticks} ticks)`,
        `≤ ${TARGET_IDLE_CPU_PCT} %`,
        idle.emperor <= TARGET_IDLE_CPU_PCT,
      ),
    );
    if (idle.guardian !== undefined) rows.push(row('guardian idle CPU, % of one core', fmtPct(idle.guardian)));

    // ---- 4. delete all
    ctx.progress(`[4] deleting ${BURST} files`);
    const pids = [...emp.vassalPids];
    const stopped = emp.collect('stopped', nameSet, PART_TIMEOUT_MS, (n) => {
      if (n % 250 === 0) ctx.progress(`[4] ${n}/${BURST} stopped`);
    });
    stopped.catch(() => undefined);
    const d0 = now();
    await pool(names, WRITE_CONCURRENCY, async (name) => {
      await fs.unlink(path.join(ws.vassals, `${name}.json`));
    });
    const allStopped = maxT(await stopped);
    let left = pids;
    for (;;) {
      left = left.filter(([pid, startTime]) => !isGone(pid, startTime));
      if (left.length === 0) break;
      if (now() - d0 > PART_TIMEOUT_MS) throw new Error(`${left.length} vassal pids still alive ${fmtMs(PART_TIMEOUT_MS)} after the delete (e.g. ${left.slice(0, 5).map(([p]) => p).join(', ')})`);
      await sleep(5);
    }
    const allGone = now();
    rows.push(row(`delete all ${BURST} → ${BURST}th stopped`, fmtMs(allStopped - d0)));
    rows.push(row('  longest pause between two "stopped" lines', longestPause(await stopped, d0)));
    rows.push(row(`delete all ${BURST} → all stopped and every pid gone`, fmtMs(allGone - d0)));
    const after = await status(ws);
    rows.push(check('`emperor status` after the delete: vassals listed', String(after.vassals.length), '0', after.vassals.length === 0));
  } catch (err) {
    rows.push(errorRow(`${BURST} vassals`, err));
  } finally {
    rows.push(...(await stopAndReport(emp, 'parts 2-4', ctx)));
  }
  return rows;
}

// ---- 5. file events alone ---------------------------------------------------------------------

/**
 * The same burst with the periodic rescan pushed out of the way: does every file reach the
 * emperor through watcher events alone? The rescan is a safety net; if it is what finds the
 * files, a burst takes as long as the next rescan and a missed delete leaves an app running.
 */
async function eventsOnly(ctx: SectionContext): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('emperor C', ws, ['--rescan-interval', '1h']);
  ctx.progress(`[5] ${BURST} at once with --rescan-interval 1h: emperor C pid ${emp.pid}`);
  const names = Array.from({ length: BURST }, (_, i) => `w${pad(i)}`);
  const seen = new Set<string>();
  let last = now();
  const unsubscribe = emp.subscribe((e, t) => {
    if (e.event === 'deploy' && e.vassal !== undefined && !seen.has(e.vassal)) {
      seen.add(e.vassal);
      last = t;
    }
  });
  try {
    const t0 = now();
    await pool(names, WRITE_CONCURRENCY, async (name) => {
      const { tmp, file } = await stage(ws.vassals, name);
      await fs.rename(tmp, file);
    });
    last = Math.max(last, now());
    // Done when all arrived, or nothing new arrived for EVENTS_IDLE_MS.
    while (seen.size < BURST && now() - last < EVENTS_IDLE_MS && now() - t0 < PART_TIMEOUT_MS) await sleep(100);
    if (!emp.running) throw new Error(`emperor C exited: ${emp.stderr.slice(-500)}`);
    const got = seen.size;
    rows.push(
      check(
        `${BURST} dropped at once, rescans off: files the emperor heard of (waited until ${fmtMs(EVENTS_IDLE_MS)} without news)`,
        `${got}/${BURST}`,
        `${BURST}/${BURST}`,
        got === BURST,
      ),
    );
    if (got < BURST) {
      // One more directory event: does the watcher then notice the files it missed?
      const { tmp, file } = await stage(ws.vassals, 'probe');
      await fs.rename(tmp, file);
      const p0 = now();
      last = p0;
      while (seen.size < BURST + 1 && now() - last < EVENTS_IDLE_MS && now() - p0 < PART_TIMEOUT_MS) await sleep(100);
      rows.push(row('  then one more file dropped: files heard of', `${Math.min(BURST, [...seen].filter((n) => n !== 'probe').length)}/${BURST}`));
      ctx.progress(`[5] watcher missed ${BURST - got} of ${BURST} files; after one more drop it knows ${seen.size - (seen.has('probe') ? 1 : 0)}`);
    }
  } catch (err) {
    rows.push(errorRow('events only', err));
  } finally {
    unsubscribe();
    rows.push(...(await stopAndReport(emp, 'part 5', ctx)));
  }
  return rows;
}

export const core: Section = {
  name: SECTION,
  title: 'core: file → process latency, 1,000 vassals',
  async run(ctx) {
    const rows: Row[] = [row('machine: load average (1/5/15 min) at start', loadAvg())];
    for (const part of [dropLatency, thousand, eventsOnly]) {
      try {
        rows.push(...(await part(ctx)));
      } catch (err) {
        // Only the emperor failing to start gets here; the parts report everything else.
        rows.push(errorRow(part.name, err));
      }
    }
    return rows;
  },
};
