// The probe budget with real exec probes: never more probes at once than the budget allows
// (measured by the probes themselves), waiting shows up as lag, and falling behind is reported
// once. Then a real emperor under many exec checks: every status request is answered, and the
// lag is in status and metrics.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from './support/test.js';
import { ProbeBudget } from '../src/checks/budget.js';
import { CheckRunner } from '../src/checks/runner.js';
import type { CheckSpec } from '../src/config/index.js';
import { requestApi } from '../src/api/client.js';
import type { EmperorStatus } from '../src/emperor/emperor.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { waitFor } from './support/wait.js';

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

describe('probe budget', () => {
  it('is never exceeded by real exec probes; the wait is reported as lag, and falling behind once', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'emperor-budget-'));
    const slots = path.join(dir, 'running');
    await fs.mkdir(slots);
    const seen = path.join(dir, 'seen');
    // Each probe marks itself running, records how many are running, then leaves.
    const script = path.join(dir, 'probe.sh');
    await fs.writeFile(script, `#!/bin/sh\ntouch "${slots}/$$"\nls "${slots}" | wc -l >> "${seen}"\nsleep 0.05\nrm -f "${slots}/$$"\n`, { mode: 0o755 });
    const budget = new ProbeBudget(3);
    const behind: number[] = [];
    budget.on('behind', (i) => behind.push(i.lagMs));
    const spec = (i: number): CheckSpec => ({
      name: `c${i}`,
      probe: { kind: 'exec', argv: [script] },
      intervalMs: 50,
      timeoutMs: 5000,
      successesBeforePassing: 1,
      failuresBeforeCritical: 1,
    });
    // 12 checks every 50 ms with 3 slots: far more is due than can run, on any machine.
    const runners = Array.from({ length: 12 }, (_, i) => new CheckRunner(spec(i), { cwd: dir, env: ENV, budget }));
    try {
      for (const r of runners) r.start();
      await waitFor(() => runners.every((r) => r.state().runs >= 3), 'three runs of every check', 45_000);
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
    }
    const counts = (await fs.readFile(seen, 'utf8')).split('\n').filter(Boolean).map(Number);
    assert.ok(counts.length >= 36, `every run recorded itself (${counts.length})`);
    assert.ok(Math.max(...counts) <= 3, `at most 3 probes at once, saw ${Math.max(...counts)}`);
    const snap = budget.snapshot();
    assert.ok(snap.peak <= 3 && snap.peak >= 1, `peak ${snap.peak}`);
    assert.equal(snap.running, 0);
    assert.equal(snap.waiting, 0);
    // Runs waited for slots: their lag is in their state, and "behind" was reported once.
    const lags = runners.map((r) => r.state().startLagMs ?? -1);
    assert.ok(
      lags.some((l) => l >= 50),
      `some run started at least an interval late: ${lags.join(', ')}`,
    );
    assert.ok(snap.lateRuns > 0 && snap.behind);
    assert.equal(behind.length, 1, 'falling behind is reported once, not per late run');
  });

  it('an aborted wait gives up its place: the slot goes to the next in line', async () => {
    const budget = new ProbeBudget(1);
    const release = await budget.acquire();
    const abort = new AbortController();
    const gaveUp = budget.acquire(abort.signal);
    const next = budget.acquire();
    assert.equal(budget.snapshot().waiting, 2);
    abort.abort();
    (await gaveUp)();
    assert.equal(budget.snapshot().waiting, 1);
    release();
    const r2 = await next;
    assert.equal(budget.snapshot().running, 1);
    r2();
    assert.equal(budget.snapshot().running, 0);
  });
});

describe('an emperor with many exec checks', () => {
  let emp: EmperorUnderTest | undefined;
  after(async () => {
    await emp?.stop();
  });

  it('answers every one of many concurrent status requests, and reports check lag in status and metrics', async () => {
    const ws = await makeWorkspace();
    const port = await freePort();
    // Two slots for 40 checks every 100 ms: the checks must fall behind, and say so.
    emp = await EmperorUnderTest.start(ws, ['--check-concurrency', '2', '--metrics', `127.0.0.1:${port}`]);
    const names = Array.from({ length: 40 }, (_, i) => `x${i}`);
    for (const n of names) {
      await emp.writeVassal(`${n}.json`, { command: ['sleep', '1000'], start: { ready: { delay: '10ms' } }, checks: [{ exec: ['sleep', '0.05'], interval: '100ms', timeout: '100ms' }] });
    }
    await emp.waitFor((e) => e.event === 'checks-behind', 'the checks-behind warning', 0, 60_000);

    const answers = await Promise.all(
      Array.from({ length: 300 }, () =>
        requestApi(emp!.socket, 'GET', '/v1/status', { timeoutMs: 60_000 }).then(
          (a) => a.status,
          (err: unknown) => (err as Error).message,
        ),
      ),
    );
    const bad = answers.filter((a) => a !== 200);
    assert.equal(bad.length, 0, `unanswered or failed: ${bad.slice(0, 3).join('; ')}`);

    const st = (await requestApi(emp.socket, 'GET', '/v1/status', { timeoutMs: 60_000 })).body as EmperorStatus;
    assert.equal(st.probes.limit, 2);
    assert.ok(st.probes.peak <= 2, `peak ${st.probes.peak}`);
    assert.equal(st.probes.behind, true);
    assert.ok(st.probes.lateRuns > 0);
    assert.ok(st.probes.maxLagMs >= 100, `status shows runs an interval late: ${JSON.stringify(st.probes)}`);
    // Each check shows its own latest start lag: some check is seen an interval late.
    await waitFor(async () => {
      const now = (await requestApi(emp!.socket, 'GET', '/v1/status', { timeoutMs: 60_000 })).body as EmperorStatus;
      return now.vassals.some((v) => v.checks.some((c) => (c.startLagMs ?? 0) >= 100));
    }, 'a check whose startLagMs shows it started an interval late', 60_000);

    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^emperor_checks_behind 1$/m);
    assert.match(metrics, /^emperor_probe_slots 2$/m);
    assert.match(metrics, /^emperor_check_start_lag_seconds\{vassal="x\d+",check="exec:sleep_0\.05"\} \d/m);
    assert.equal(emp.entries.filter((e) => e.event === 'checks-behind').length, 1, 'the warning is given once');
  });
});
