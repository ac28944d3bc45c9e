// The short, bounded soak (issue 6): one emperor with a real etcd and the Consul double under a
// minute of seeded chaos (file churn, kill -9, registry outages, SIGHUP, emperor SIGKILLs), judged
// by the invariant checker in soak/. The long version: npm run soak -- --minutes 10 --seed 42.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from './support/test.js';

// Compiled to <outDir>/test/soak.test.js; the soak runner is <outDir>/soak/run.js.
const RUNNER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'soak', 'run.js');
const SEED = 20260601;

function runSoak(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUNNER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // The runner has its own watchdog; this only guards against a runner bug.
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('soak', () => {
  it('survives a minute of seeded chaos with zero invariant violations', { timeout: 180_000 }, async () => {
    // The bounds are how fast the emperor converges on an idle machine (npm run soak judges
    // them); here, on a machine as busy as it may be, ten times that judges that it converges.
    const r = await runSoak(['--minutes', '1', '--seed', String(SEED), '--bound-factor', '10'], 170_000);
    const report = `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr (tail)\n${r.stderr.slice(-4000)}`;
    const steps = /^steps\s+(\d+)$/m.exec(r.stdout);
    const total = /^violations total\s+(\d+)$/m.exec(r.stdout);
    assert.ok(steps && Number(steps[1]) > 0, `no steps reported\n${report}`);
    assert.ok(total, `no violations line\n${report}`);
    assert.equal(Number(total[1]), 0, `violations\n${report}`);
    assert.match(r.stdout, /RESULT: PASS/, report);
    assert.equal(r.code, 0, report);
    process.stderr.write(`# soak: ${steps[1]} steps, 0 violations (seed ${SEED})\n`);
  });
});
