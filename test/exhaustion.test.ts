// Resource exhaustion never kills the emperor (issue 10): out of file descriptors, a vassal
// start fails and backs off like any failed start, the control API keeps answering, and
// everything starts once descriptors are available again.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { after, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { waitFor } from './support/wait.js';

/**
 * Set the emperor's soft RLIMIT_NOFILE while it runs: a low `ulimit -n`, exactly where we want
 * it. The hard limit stays, so it can be raised again without CAP_SYS_RESOURCE.
 */
const limitFds = (pid: number, n: number): void => void execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`]);
const softFdLimit = (pid: number): number => Number(/^Max open files\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1]);

describe('file descriptor exhaustion', { timeout: 120_000 }, () => {
  let emp: EmperorUnderTest | undefined;
  after(async () => {
    await emp?.stop();
  });

  it('with --mirror-output and a low ulimit -n: failed starts, status answers, recovery when fds return', async () => {
    const ws = await makeWorkspace();
    // Rescans every second: a file that could not even be parsed for lack of fds is read again soon.
    emp = await EmperorUnderTest.start(ws, ['--mirror-output', '--rescan-interval', '1s']);
    // One vassal first, so the parser thread is up (loading it takes descriptors of its own).
    await emp.writeVassal('warm.json', { command: ['/bin/sh', '-c', 'exec sleep 1000'], start: { ready: { delay: '10ms' } } });
    await emp.waitEvent('warm', 'ready');
    const inUse = fs.readdirSync(`/proc/${emp.pid}/fd`).length;
    const original = softFdLimit(emp.pid);
    // Room for a handful of vassals (each takes its output pipes and its log file), not 40.
    const limit = inUse + 60;
    limitFds(emp.pid, limit);

    // While the burst below is read, spawned and refused, the operator keeps asking: every
    // request is answered (out of descriptors, libuv accepts a connection only to close it),
    // and the emperor never reaches its limit (its reserve is for exactly this).
    const pid = emp.pid;
    let mostFds = 0;
    const sampler = setInterval(() => {
      try {
        mostFds = Math.max(mostFds, fs.readdirSync(`/proc/${pid}/fd`).length);
      } catch {
        // Gone: the assertions on the emperor below say so.
      }
    }, 1);
    let asking = true;
    const unanswered: string[] = [];
    const asker = (async () => {
      while (asking) {
        try {
          await emp.status();
        } catch (err) {
          unanswered.push((err as Error).message);
        }
      }
    })();

    const count = 40;
    for (let i = 0; i < count; i++) {
      await emp.writeVassal(`fd${i}.json`, {
        command: ['/bin/sh', '-c', `echo up ${i}; exec sleep 1000`],
        start: { ready: { delay: '10ms' } },
        // Short, and never fatal, so recovery is quick and certain once fds return.
        backoff: { initial: '100ms', max: '300ms', max_retries: 1000 },
      });
    }
    const refused = await emp.waitFor(
      (e) => e.event === 'spawn-failed' && /file descriptors|EMFILE/.test(e.message),
      'a start refused for lack of file descriptors',
      0,
      30_000,
    );
    assert.match(refused.message, /file descriptors/);
    await emp.waitFor((e) => e.event === 'backoff' && e.vassal === refused.vassal, 'the refused vassal backs off', 0, 10_000);

    await waitFor(async () => (await emp!.status()).vassals.length === count + 1, 'every vassal file seen', 30_000);
    asking = false;
    await asker;
    clearInterval(sampler);
    assert.deepEqual(unanswered, [], 'every status request during the burst was answered');
    // Reaching the limit is the failure: then any accept or open may fail.
    assert.ok(mostFds < limit, `the emperor kept its reserve (held up to ${mostFds} of ${limit} descriptors)`);
    // Under pressure the control API answers, every time, and shows the failed starts.
    for (let i = 0; i < 10; i++) {
      const st = await emp.status();
      assert.equal(st.vassals.length, count + 1);
    }
    const under = await emp.status();
    const running = under.vassals.filter((v) => v.state === 'running').length;
    assert.ok(running < count + 1, `only some vassals can run under the limit (running: ${running})`);
    assert.ok(
      under.vassals.some((v) => /file descriptors|EMFILE/.test(v.lastExit?.reason ?? '')),
      'status shows why the starts failed',
    );
    assert.equal(emp.child.exitCode, null, 'the emperor is alive');

    // Descriptors come back: every vassal starts, no restart of the emperor needed.
    limitFds(emp.pid, original);
    await waitFor(async () => (await emp!.status()).vassals.every((v) => v.state === 'running'), 'every vassal running once fds are back', 60_000);
    assert.equal(emp.child.exitCode, null);
    assert.equal(emp.child.signalCode, null);
    assert.ok(emp.entries.some((e) => e.event === 'output' && /^up \d+$/.test(e.message)), 'output is mirrored');
  });
});
