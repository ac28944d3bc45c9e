// Small helpers: timing, statistics, formatting, and /proc readings of other processes.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export const now = (): number => performance.now();

/** The absolute path of a program on PATH, or undefined. */
export const which = (bin: string): string | undefined => {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
};

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Nearest-rank percentile of an ascending array (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a';
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export const fmtMb = (kb: number): string => `${(kb / 1024).toFixed(1)} MB`;

export const fmtPct = (pct: number): string => `${pct.toFixed(2)} %`;

/** Rejects with a clear message when p does not settle within ms. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${fmtMs(ms)}: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Run fn over items with at most `concurrency` in flight; rejects on the first failure. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

// ---- /proc ----------------------------------------------------------------------------------

export interface Stat {
  readonly pid: number;
  readonly comm: string;
  readonly state: string;
  readonly ppid: number;
  readonly pgid: number;
  /** Clock ticks of user + system time (own, not children's). */
  readonly cpuTicks: number;
  /** Field 22, ticks since boot: with the pid, identifies one process even if the pid is reused. */
  readonly startTime: string;
}

export function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < 0) return undefined;
  // f[0] is field 3 (state): field N is at index N - 3.
  const f = text.slice(close + 2).split(' ');
  return {
    pid,
    comm: text.slice(open + 1, close),
    state: f[0] ?? '?',
    ppid: Number(f[1]),
    pgid: Number(f[2]),
    cpuTicks: Number(f[11]) + Number(f[12]),
    startTime: f[19] ?? '',
  };
}

/** A kB field of /proc/<pid>/status (VmRSS, VmHWM...), or undefined. */
export function statusKb(pid: number, field: string): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Gone = no such process, a zombie (it runs nothing), or the pid now belongs to another process. */
export function isGone(pid: number, startTime?: string): boolean {
  const st = readStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return true;
  return startTime !== undefined && startTime !== '' && st.startTime !== startTime;
}

/** Direct children of pid (one pass over /proc). */
export function childrenOf(pid: number): Stat[] {
  const out: Stat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st && st.ppid === pid) out.push(st);
  }
  return out;
}

let clkTck: number | undefined;
/** Clock ticks per second (utime/stime unit); 100 on every Linux we know, but asked anyway. */
export function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** CPU used by pid between two tick readings over wallMs, as % of one core. */
export const cpuPct = (ticks: number, wallMs: number): number => (ticks / ticksPerSecond() / (wallMs / 1000)) * 100;

/** Whole-machine CPU counters (all cores) from /proc/stat, in ticks. */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Share of the machine's total CPU time that was busy between two readings. */
export const machineBusyPct = (a: { busy: number; total: number }, b: { busy: number; total: number }): number =>
  b.total > a.total ? ((b.busy - a.busy) / (b.total - a.total)) * 100 : 0;

export function loadAvg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/** Nanoseconds pid has spent on a CPU (/proc/<pid>/schedstat): precise even for short-lived work that utime/stime ticks miss. */
export function cpuNs(pid: number): number | undefined {
  try {
    const v = Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Wait until the machine is quiet (busy below maxBusyPct of all cores over 1 s), at most maxWaitMs.
 * Returns the last 1-s reading. Other work on the host (builds, tests) skews every figure here.
 */
export async function waitForQuiet(maxBusyPct: number, maxWaitMs: number): Promise<{ busyPct: number; waitedMs: number }> {
  const t0 = now();
  for (;;) {
    const a = machineTicks();
    await sleep(1000);
    const busyPct = machineBusyPct(a, machineTicks());
    const waitedMs = now() - t0;
    if (busyPct < maxBusyPct || waitedMs >= maxWaitMs) return { busyPct, waitedMs };
  }
}
