// The emperor's own life: clean shutdown, SIGKILL, leftovers from a previous run, output
// mirroring, and the rescan that repairs missed events.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from './support/test.js';
import { newSpawnId, PidRecords, SPAWN_ID_VAR } from '../src/process/records.js';
import { readStat } from '../src/process/procfs.js';
import { EmperorUnderTest, makeWorkspace, appVassal } from './support/emperor.js';
import { fixture } from './support/paths.js';
import { waitFor } from './support/wait.js';
import { isRunning } from './support/proc.js';

const APP = fixture('app.js');

const alive = isRunning;

async function deployFamilies(emp: EmperorUnderTest, n: number): Promise<number[]> {
  const pids: number[] = [];
  for (let i = 0; i < n; i++) {
    await emp.writeVassal(`fam${i}.yaml`, appVassal(APP, { APP_GRANDCHILD: path.join(emp.ws.root, `fam${i}.gc`) }));
  }
  for (let i = 0; i < n; i++) {
    const ready = await emp.waitEvent(`fam${i}`, 'ready');
    pids.push(ready.pid as number);
    // "ready" is "up 1 s": on a loaded machine Node may not have reached the grandchild by then.
    const gc = path.join(emp.ws.root, `fam${i}.gc`);
    let gcPid = 0;
    await waitFor(async () => (gcPid = Number(await fs.readFile(gc, 'utf8').catch(() => ''))) > 0, `fam${i} to report its grandchild`);
    pids.push(gcPid);
  }
  return pids;
}

/** Direct children of `pid` that are zombies (state Z). */
async function zombiesOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' && Number(fields[1]) === pid) out.push(Number(name));
  }
  return out;
}

describe('emperor lifecycle', () => {
  it('SIGTERM stops every vassal and grandchild, removes the socket, exits 0', async () => {
    const ws = await makeWorkspace();
    const emp = await EmperorUnderTest.start(ws);
    const pids = await deployFamilies(emp, 3);
    assert.ok(pids.every(alive));
    assert.deepEqual(await zombiesOf(emp.pid), []);
    const { code } = await emp.stop('SIGTERM');
    assert.equal(code, 0);
    // Stop is complete before exit: nothing may be left, without waiting.
    assert.deepEqual(pids.filter(alive), []);
    await assert.rejects(fs.stat(emp.socket), { code: 'ENOENT' });
    assert.deepEqual(await fs.readdir(path.join(ws.state, 'pids')).catch(() => []), []);
  });

  it('SIGKILL of the emperor leaves no vassal or grandchild behind', async () => {
    const emp = await EmperorUnderTest.start(await makeWorkspace());
    const pids = await deployFamilies(emp, 3);
    await emp.stop('SIGKILL');
    for (const pid of pids) await waitFor(() => !alive(pid), `pid ${pid} gone after the emperor was SIGKILLed`);
  });

  it('the next start kills leftovers recorded by a previous run, and spares a reused PID', async () => {
    const ws = await makeWorkspace();
    const records = new PidRecords(path.join(ws.state, 'pids'));
    // A leftover group: a detached sleep with a grandchild-like member in its group.
    const spawnId = newSpawnId();
    const leftover = spawn('sh', ['-c', 'sleep 600 & sleep 600; wait'], { detached: true, stdio: 'ignore', env: { ...process.env, [SPAWN_ID_VAR]: spawnId } });
    leftover.unref();
    const pid = leftover.pid!;
    await waitFor(async () => (await readStat(pid)) !== undefined, 'leftover started');
    const st = await readStat(pid);
    await records.write('ghost', { pid, pgid: pid, startTime: st!.startTime, argv: ['sh'], emperorPid: 1, spawnId });
    // A record whose PID now belongs to someone else (start time differs): must not be touched.
    const bystander = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    bystander.unref();
    const bpid = bystander.pid!;
    await records.write('reused', { pid: bpid, pgid: bpid, startTime: '1', argv: ['sleep'], emperorPid: 1, spawnId });
    try {
      const emp = await EmperorUnderTest.start(ws);
      const entry = await emp.waitFor((e) => e.event === 'leftover' && e.vassal === 'ghost', 'leftover reported', 0);
      assert.equal(entry.pid, pid);
      await waitFor(() => !alive(pid), 'leftover group killed');
      assert.ok(alive(bpid), 'a process with a reused PID must be spared');
      assert.equal(emp.entries.filter((e) => e.event === 'leftover' && e.vassal === 'reused').length, 0);
      await emp.stop();
    } finally {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      process.kill(bpid, 'SIGKILL');
    }
  });

  it('--mirror-output copies vassal output into the emperor log, labelled', async () => {
    const emp = await EmperorUnderTest.start(await makeWorkspace(), ['--mirror-output']);
    await emp.writeVassal('chatty.yaml', appVassal(APP));
    const line = await emp.waitFor((e) => e.event === 'output' && e.vassal === 'chatty' && e.stream === 'stderr', 'mirrored stderr');
    assert.equal(line.message, 'a line on stderr');
    await emp.waitFor((e) => e.event === 'output' && e.vassal === 'chatty' && /app chatty up/.test(e.message), 'mirrored stdout');
    await emp.stop();
  });

  it('with file events off, the periodic rescan alone deploys, reloads and removes', async () => {
    const emp = await EmperorUnderTest.start(await makeWorkspace(), ['--no-watch', '--rescan-interval', '150ms']);
    const file = await emp.writeVassal('polled.yaml', appVassal(APP, { APP_VERSION: '1' }));
    await emp.waitEvent('polled', 'ready');
    let m = emp.mark();
    await emp.writeVassal('polled.yaml', appVassal(APP, { APP_VERSION: '2' }));
    await emp.waitEvent('polled', 'reload', m);
    await emp.waitEvent('polled', 'ready', m);
    m = emp.mark();
    await fs.rm(file);
    await emp.waitEvent('polled', 'stopped', m);
    await emp.stop();
  });

  it('the human log format is readable and tagged with the vassal', async () => {
    const ws = await makeWorkspace();
    const { binEmperor } = await import('./support/paths.js');
    await fs.writeFile(path.join(ws.vassals, 'human.yaml'), JSON.stringify(appVassal(APP)));
    const child = spawn(process.execPath, [binEmperor, '--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/\[human\] ready/.test(out)) resolve();
      });
    });
    child.kill('SIGTERM');
    await new Promise((r) => child.on('exit', r));
    assert.match(out, /^\S+Z info \[human\] spawned pid \d+/m);
    assert.doesNotMatch(out, /^\{/m);
  });
});
