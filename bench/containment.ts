// Section "containment": stopping a vassal that has 20 descendants, 10 of them escaped from its
// process group and session with setsid, as daemonizing code does.
//
// Each round: POST start, wait for `ready` (sent by the app once all 20 are forked), then t0,
// POST stop, t1 when the request returns (a stop returns once the vassal's cgroup is empty), and
// an independent /proc scan (an environment marker every descendant inherits) counts what is
// left. The app's own shutdown is nothing: every process dies of SIGTERM at once. Then one round
// with --no-cgroups shows what process groups alone leave behind.
import fs from 'node:fs';
import path from 'node:path';
import { callApi } from '../src/api/client.js';
import { PART_TIMEOUT_MS, STEP_TIMEOUT_MS, apiStatus, quietRow, rowsFor, stopAndReport, summary } from './common.js';
import { BenchEmperor, makeWorkspace, type Workspace } from './harness.js';
import type { Row, Section, SectionContext } from './types.js';
import { fmtMs, now, withTimeout } from './util.js';

const SECTION = 'containment';
const { row, check, errorRow } = rowsFor(SECTION);

const ROUNDS = 40;
const TARGET_P99_MS = 100;

/** 10 children in the app's group, 10 that setsid away; ready once all 20 are forked. */
const TREE = [
  'i=0; while [ $i -lt 10 ]; do sleep 3600 & setsid sleep 3600 & i=$((i + 1)); done',
  'eval "echo READY=1 >&$NOTIFY_FD"',
  'exec sleep 3600',
].join('\n');

/** Live processes carrying BENCH_MARK=mark in their environment: the independent count. */
function marked(mark: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      if (fs.readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(`BENCH_MARK=${mark}`)) found.push(Number(name));
    } catch {
      // gone, or not readable
    }
  }
  return found;
}

function killAll(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

const control = (ws: Workspace, name: string, action: 'start' | 'stop'): Promise<unknown> =>
  callApi(path.join(ws.state, 'emperor.sock'), 'POST', `/v1/vassals/${encodeURIComponent(name)}/${action}`, { timeoutMs: STEP_TIMEOUT_MS });

async function deployTree(emp: BenchEmperor, ws: Workspace, name: string, mark: string): Promise<void> {
  const ready = emp.waitFor((e) => e.event === 'ready' && e.vassal === name, `${name} ready`, STEP_TIMEOUT_MS);
  fs.writeFileSync(
    path.join(ws.vassals, `${name}.json`),
    JSON.stringify({ command: TREE, shell: true, env: { BENCH_MARK: mark }, start: { ready: { notify: true } }, stop: { timeout: '5s' } }),
  );
  await ready;
}

async function measure(ctx: SectionContext): Promise<Row[]> {
  const rows: Row[] = [];
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('containment', ws);
  const status = await apiStatus(ws);
  rows.push(row('containment of this emperor', `${status.containment.mode}${status.containment.cgroup ? ` (${status.containment.cgroup})` : ''}`));
  const mark = `cg-${process.pid}-${Date.now()}`;
  const samples: number[] = [];
  let left = 0;
  let descendants = 0;
  try {
    await deployTree(emp, ws, 'tree', mark);
    for (let round = 0; round < ROUNDS; round++) {
      if (round > 0) {
        const ready = emp.waitFor((e) => e.event === 'ready' && e.vassal === 'tree', 'tree ready', STEP_TIMEOUT_MS);
        await control(ws, 'tree', 'start');
        await ready;
      }
      descendants = Math.max(descendants, marked(mark).length - 1);
      const t0 = now();
      await control(ws, 'tree', 'stop');
      samples.push(now() - t0);
      const survivors = marked(mark);
      left += survivors.length;
      killAll(survivors);
      if (round % 10 === 9) ctx.progress(`${round + 1} of ${ROUNDS} stops`);
    }
  } finally {
    killAll(marked(mark));
  }
  const s = summary(samples);
  rows.push(row('descendants of the vassal when stopped (half setsid)', String(descendants)));
  rows.push(check(`stop → all ${descendants + 1} processes gone, p50 (${s.n} stops)`, fmtMs(s.p50), `≤ ${TARGET_P99_MS} ms`, s.p50 <= TARGET_P99_MS));
  rows.push(check(`stop → all processes gone, p99 (max ${fmtMs(s.max)})`, fmtMs(s.p99), `≤ ${TARGET_P99_MS} ms`, s.p99 <= TARGET_P99_MS));
  rows.push(check('processes left after the stops returned (independent /proc scan)', String(left), '0', left === 0));
  rows.push(...(await stopAndReport(SECTION, emp, 'cgroups', ctx)));
  return rows;
}

/** The same vassal under process groups only: what setsid takes out of reach. */
async function fallback(ctx: SectionContext): Promise<Row[]> {
  const ws = await makeWorkspace();
  const emp = await BenchEmperor.start('no-cgroups', ws, ['--no-cgroups']);
  const mark = `pg-${process.pid}-${Date.now()}`;
  try {
    await deployTree(emp, ws, 'tree', mark);
    const t0 = now();
    await control(ws, 'tree', 'stop');
    const ms = now() - t0;
    const survivors = marked(mark);
    return [
      row('--no-cgroups: stop of the same vassal returned after', fmtMs(ms)),
      row('--no-cgroups: processes left after that stop (the setsid ones; killed by the bench)', String(survivors.length)),
      ...(await stopAndReport(SECTION, emp, 'no-cgroups', ctx, ['containment'])),
    ];
  } finally {
    killAll(marked(mark));
  }
}

export const containment: Section = {
  name: SECTION,
  title: 'stop of a vassal with 20 descendants, 10 escaped with setsid',
  async run(ctx) {
    const rows: Row[] = [await quietRow(SECTION, ctx, 'containment')];
    try {
      rows.push(...(await withTimeout(measure(ctx), PART_TIMEOUT_MS, 'cgroup stops')));
    } catch (err) {
      rows.push(errorRow('cgroup stops', err));
    }
    try {
      rows.push(...(await withTimeout(fallback(ctx), PART_TIMEOUT_MS, 'process-group stop')));
    } catch (err) {
      rows.push(errorRow('process-group stop', err));
    }
    return rows;
  },
};
