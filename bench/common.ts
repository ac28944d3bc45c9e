// Helpers shared by the sections after `core`: rows, the quiet-machine wait, stopping an
// emperor with a report, reading its status over the control socket, and latency summaries.
import fs from 'node:fs/promises';
import path from 'node:path';
import { callApi } from '../src/api/client.js';
import type { EmperorStatus } from '../src/emperor/emperor.js';
import type { BenchEmperor, Workspace } from './harness.js';
import type { Row, RowStatus, SectionContext } from './types.js';
import { fmtMs, fmtPct, now, percentile, sleep, waitForQuiet } from './util.js';

/** Row builders bound to one section name. */
export function rowsFor(section: string): {
  row: (metric: string, value: string, target?: string, status?: RowStatus) => Row;
  check: (metric: string, value: string, target: string, ok: boolean) => Row;
  errorRow: (metric: string, err: unknown) => Row;
} {
  const row = (metric: string, value: string, target = '—', status: RowStatus = 'info'): Row => ({ section, metric, value, target, status });
  return {
    row,
    check: (metric, value, target, ok) => row(metric, value, target, ok ? 'ok' : 'MISS'),
    errorRow: (metric, err) => row(metric, `bench failed: ${err instanceof Error ? err.message.split('\n')[0]! : String(err)}`, '—', 'error'),
  };
}

/** Budget of each part; past it the part fails instead of hanging. */
export const PART_TIMEOUT_MS = 120_000;
/** One vassal's step (drop → ready → registered, kill → deregistered) may take this long. */
export const STEP_TIMEOUT_MS = 15_000;
export const WRITE_CONCURRENCY = 8;

const QUIET_BUSY_PCT = 25;
const QUIET_MAX_WAIT_MS = ((v) => (Number.isFinite(v) && v >= 0 ? v : 30_000))(Number(process.env.BENCH_QUIET_WAIT_MS ?? 30_000));

export const pad = (i: number): string => String(i).padStart(4, '0');

/** Give other work on the host a chance to finish, and say how busy the machine was. */
export async function quietRow(section: string, ctx: SectionContext, part: string): Promise<Row> {
  const q = await waitForQuiet(QUIET_BUSY_PCT, QUIET_MAX_WAIT_MS);
  const quiet = q.busyPct < QUIET_BUSY_PCT;
  const msg = `machine CPU busy before ${part}: ${fmtPct(q.busyPct)} of all cores over 1 s${q.waitedMs > 1500 ? ` (after waiting ${fmtMs(q.waitedMs)} for quiet)` : ''}`;
  ctx.progress(quiet ? msg : `${msg}: NOT quiet, figures will be noisy`);
  return rowsFor(section).row(`machine CPU busy just before ${part}, % of all cores`, `${fmtPct(q.busyPct)}${quiet ? '' : ` (not quiet after ${fmtMs(q.waitedMs)})`}`);
}

/**
 * SIGTERM the emperor; rows: how long it took, its warn/error lines, what outlived it.
 * `expected` names warn/error events the section caused on purpose (e.g. "exited" and "backoff"
 * after its own SIGKILLs): they are reported apart and do not count against the row.
 */
export async function stopAndReport(section: string, emp: BenchEmperor, what: string, ctx: SectionContext, expected: readonly string[] = []): Promise<Row[]> {
  const { row, check } = rowsFor(section);
  const n = emp.vassalPids.size;
  ctx.progress(`${what}: SIGTERM to ${emp.label} (pid ${emp.pid})`);
  const res = await emp.stop();
  const exit = res.signal ? `killed by ${res.signal}` : `exit ${res.code}`;
  if (res.code !== 0) emp.leftovers.push(`${emp.label}: ${exit} after SIGTERM; stderr: ${emp.stderr.trim().slice(-300)}`);
  const expectedCount = expected.reduce((sum, ev) => sum + (emp.complaintsByEvent.get(ev) ?? 0), 0);
  const unexpected = emp.complaintCount - expectedCount;
  const sample = emp.complaints
    .filter((e) => !expected.includes(e.event ?? e.level ?? '?'))
    .slice(0, 3)
    .map((e) => `${e.event ?? e.level ?? '?'}${e.vassal ? `[${e.vassal}]` : ''}: ${String(e.message ?? '').slice(0, 120)}`)
    .join('; ');
  return [
    row(`${what}: SIGTERM → emperor exited (${n} vassal processes in its life)`, `${fmtMs(res.ms)} (${exit})`),
    check(
      `${what}: emperor warn/error log lines${expected.length ? ` (besides the expected ${expected.join(', ')}: ${expectedCount})` : ''}`,
      unexpected > 0 ? `${unexpected}${sample ? ` (${sample})` : ''}` : '0',
      '0',
      unexpected === 0,
    ),
    check(`${what}: processes outliving the emperor`, emp.leftovers.length === 0 ? '0' : emp.leftovers.join('; '), '0', emp.leftovers.length === 0),
  ];
}

/** GET /v1/status on the control socket (no CLI process: cheap enough to poll). */
export function apiStatus(ws: Workspace): Promise<EmperorStatus> {
  return callApi<EmperorStatus>(path.join(ws.state, 'emperor.sock'), 'GET', '/v1/status');
}

/** p50 / p99 / max of samples, and which sample was the max. */
export function summary(samples: readonly number[]): { p50: number; p99: number; max: number; min: number; n: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN, min: s[0] ?? NaN, n: s.length };
}

/** Write the file under a dot-temp name the emperor ignores; the returned function renames it into place. */
export async function stage(dir: string, name: string, content: string): Promise<() => Promise<void>> {
  const tmp = path.join(dir, `.${name}.json.tmp`);
  await fs.writeFile(tmp, content);
  return () => fs.rename(tmp, path.join(dir, `${name}.json`));
}

/** Poll cond every intervalMs until it holds; throws after timeoutMs naming what was awaited. */
export async function until(cond: () => boolean | Promise<boolean>, what: string | (() => string), timeoutMs: number, intervalMs = 50): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (now() > deadline) throw new Error(`timed out after ${fmtMs(timeoutMs)} waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(intervalMs);
  }
}

/** A promise whose rejection is observed (so an abandoned wait never crashes the bench). */
export function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
