// End-to-end: the real `emperor` binary on a temp vassals directory, real child processes.
// Synchronisation is on the emperor's own JSON log events; where no event exists (a foreign
// process dying) we poll /proc with a deadline.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace, appVassal } from './support/emperor.js';
import { fixture } from './support/paths.js';
import { waitFor } from './support/wait.js';
import { isRunning } from './support/proc.js';

const APP = fixture('app.js');

const alive = isRunning;
const gone = (pid: number, what: string): Promise<void> => waitFor(() => !alive(pid), what);

async function readLines(file: string): Promise<string[]> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean);
}

describe('vassal directory events', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;

  before(async () => {
    ws = await makeWorkspace();
    emp = await EmperorUnderTest.start(ws);
  });
  after(async () => {
    await emp.stop();
  });

  it('drop a file: the app is spawned, becomes ready and shows as running', async () => {
    const m = emp.mark();
    await emp.writeVassal('drop.yaml', appVassal(APP));
    const spawned = await emp.waitEvent('drop', 'spawned', m);
    assert.ok(typeof spawned.pid === 'number' && alive(spawned.pid));
    await emp.waitEvent('drop', 'ready', m);
    const v = await emp.vassal('drop');
    assert.equal(v.state, 'running');
    assert.equal(v.pid, spawned.pid);
    assert.equal(v.restarts, 0);
    // Output goes to the per-vassal log file.
    await waitFor(async () => (await fs.readFile(path.join(ws.logs, 'drop.log'), 'utf8').catch(() => '')).includes('a line on stderr'), 'stderr in drop.log');
    const log = await fs.readFile(path.join(ws.logs, 'drop.log'), 'utf8');
    assert.match(log, /app drop up, pid \d+/);
  });

  it('touch without a change does nothing; a content change reloads gracefully', async () => {
    const appLog = path.join(ws.root, 'touch-starts.log');
    const file = await emp.writeVassal('touch.json', appVassal(APP, { APP_LOG: appLog, APP_VERSION: 'v1' }));
    const first = await emp.waitEvent('touch', 'ready', 0);
    let m = emp.mark();
    const now = new Date();
    await fs.utimes(file, now, new Date(now.getTime() + 5000));
    // A sentinel deployed after the touch: by the time it is ready the touch has been handled.
    await emp.writeVassal('sentinel.yaml', appVassal(APP));
    await emp.waitEvent('sentinel', 'ready', m);
    assert.equal(emp.events('touch', 'reload', m).length, 0);
    assert.equal(emp.events('touch', 'spawned', m).length, 0);
    assert.equal((await emp.vassal('touch')).pid, first.pid);

    m = emp.mark();
    await emp.writeVassal('touch.json', appVassal(APP, { APP_LOG: appLog, APP_VERSION: 'v2' }));
    await emp.waitEvent('touch', 'reload', m);
    const stopped = await emp.waitEvent('touch', 'stopped', m);
    const respawned = await emp.waitEvent('touch', 'spawned', m);
    assert.ok(emp.entries.indexOf(stopped) < emp.entries.indexOf(respawned), 'old process stopped before the new one started');
    await emp.waitEvent('touch', 'ready', m);
    assert.ok(!alive(first.pid as number));
    assert.deepEqual(
      (await readLines(appLog)).map((l) => l.split(' ')[2]),
      ['v1', 'v2'],
    );
  });

  it('delete a file: the app is stopped and leaves status', async () => {
    const file = await emp.writeVassal('del.yaml', appVassal(APP));
    const ready = await emp.waitEvent('del', 'ready');
    const pid = (await emp.vassal('del')).pid!;
    assert.ok(ready);
    const m = emp.mark();
    await fs.rm(file);
    await emp.waitEvent('del', 'stopped', m);
    assert.ok(!alive(pid));
    await waitFor(async () => !(await emp.status()).vassals.some((v) => v.name === 'del'), 'del gone from status');
  });

  it('rename a file: the old name is stopped, the new name started', async () => {
    const file = await emp.writeVassal('old-name.yaml', appVassal(APP));
    await emp.waitEvent('old-name', 'ready');
    const oldPid = (await emp.vassal('old-name')).pid!;
    const m = emp.mark();
    await fs.rename(file, path.join(ws.vassals, 'new-name.yaml'));
    await emp.waitEvent('old-name', 'stopped', m);
    await emp.waitEvent('new-name', 'ready', m);
    assert.ok(!alive(oldPid));
    const names = (await emp.status()).vassals.map((v) => v.name);
    assert.ok(names.includes('new-name') && !names.includes('old-name'), names.join(','));
  });

  it('a file written in several chunks starts once, with the final content', async () => {
    // Chunks count as one write when they come within --settle of each other. On a busy machine
    // the gaps between this test's writes can outlast the default 20 ms (then the emperor rightly
    // reads a prefix), so this emperor settles for 2 s: the property, not the machine, is tested.
    const own = await EmperorUnderTest.start(await makeWorkspace(), ['--settle', '2s']);
    try {
      const appLog = path.join(own.ws.root, 'chunked-starts.log');
      const fh = await fs.open(path.join(own.ws.vassals, 'chunked.yaml'), 'w');
      // Every prefix below is itself a valid vassal file: only settling keeps a partial one out.
      await fh.write(`command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(APP)}]\n`);
      await fh.write(`env:\n  APP_LOG: ${JSON.stringify(appLog)}\n`);
      await fh.write(`  APP_VERSION: final\n`);
      await fh.close();
      await own.waitEvent('chunked', 'ready');
      // "ready" is up 1 s; a loaded machine can take longer to start node and run the app's first line.
      await waitFor(async () => (await readLines(appLog)).length > 0, 'the app to log its start');
      assert.deepEqual((await readLines(appLog)).map((l) => l.split(' ')[2]), ['final']);
      assert.equal(own.events('chunked', 'spawned').length, 1);
    } finally {
      await own.stop();
    }
  });

  it('a file written to a temp name and renamed into place starts once', async () => {
    const appLog = path.join(ws.root, 'atomic-starts.log');
    const tmp = path.join(ws.vassals, '.atomic.yaml.tmp');
    await fs.writeFile(tmp, JSON.stringify(appVassal(APP, { APP_LOG: appLog, APP_VERSION: 'atomic' })));
    await fs.rename(tmp, path.join(ws.vassals, 'atomic.yaml'));
    await emp.waitEvent('atomic', 'ready');
    await waitFor(async () => (await readLines(appLog)).length > 0, 'the app to log its start');
    assert.deepEqual((await readLines(appLog)).map((l) => l.split(' ')[2]), ['atomic']);
    assert.equal(emp.events('atomic', 'spawned').length, 1);
  });

  it('ignores dotfiles, backups, swap and temp files, other extensions and subdirectories', async () => {
    const m = emp.mark();
    for (const name of ['.hidden.yaml', 'backup.yaml~', 'edit.yaml.swp', 'x.tmp', 'notes.txt']) {
      await emp.writeVassal(name, appVassal(APP));
    }
    await fs.mkdir(path.join(ws.vassals, 'sub'));
    await fs.writeFile(path.join(ws.vassals, 'sub', 'nested.yaml'), JSON.stringify(appVassal(APP)));
    await emp.writeVassal('after-ignored.yaml', appVassal(APP));
    await emp.waitEvent('after-ignored', 'ready', m);
    const names = (await emp.status()).vassals.map((v) => v.name).sort();
    for (const n of ['.hidden', 'backup', 'edit.yaml', 'x', 'notes', 'sub', 'nested']) assert.ok(!names.includes(n), `${n} in ${names.join(',')}`);
  });

  it('an invalid new file is reported once, shows as invalid, and the emperor keeps running', async () => {
    const m = emp.mark();
    await emp.writeVassal('bad.yaml', 'command: [node, x.js]\nrestrat: always\n');
    const err = await emp.waitFor((e) => e.vassal === 'bad' && e.event === 'invalid', 'bad: invalid', m);
    assert.match(err.message, /bad\.yaml/);
    assert.match(err.message, /restrat/);
    const v = await emp.vassal('bad');
    assert.equal(v.state, 'invalid');
    assert.match(v.fileError ?? '', /restrat/);
    assert.equal(emp.child.exitCode, null);
    const r = await emp.cli(['start', 'bad']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no valid file/);
  });

  it('a running vassal whose file turns invalid keeps running until the file is fixed', async () => {
    const appLog = path.join(ws.root, 'keeps-starts.log');
    const good = appVassal(APP, { APP_LOG: appLog, APP_VERSION: 'good' });
    await emp.writeVassal('keeps.json', good);
    await emp.waitEvent('keeps', 'ready');
    const pid = (await emp.vassal('keeps')).pid!;
    let m = emp.mark();
    await emp.writeVassal('keeps.json', '{"command": ["node", ');
    const err = await emp.waitFor((e) => e.vassal === 'keeps' && e.event === 'invalid', 'keeps: invalid', m);
    assert.match(err.message, /keeps running/);
    let v = await emp.vassal('keeps');
    assert.equal(v.state, 'running');
    assert.equal(v.pid, pid);
    assert.ok(v.fileError);
    const table = await emp.cli(['status']);
    assert.match(table.stdout, /keeps\.json \(invalid\)/);

    // Fixing it back to the running content changes nothing but the error flag.
    m = emp.mark();
    await emp.writeVassal('keeps.json', good);
    await emp.waitEvent('keeps', 'file-fixed', m);
    v = await emp.vassal('keeps');
    assert.equal(v.fileError, null);
    assert.equal(v.pid, pid);
    assert.equal((await readLines(appLog)).length, 1);
  });

  it('mirrors nothing into the emperor log unless asked', () => {
    assert.equal(emp.entries.filter((e) => e.event === 'output').length, 0);
  });
});

describe('restart policies, back-off and fatal', () => {
  let emp: EmperorUnderTest;

  before(async () => {
    emp = await EmperorUnderTest.start(await makeWorkspace());
  });
  after(async () => {
    await emp.stop();
  });

  const quick = { initial: '50ms', max: '80ms', reset_after: '10s', max_retries: 3 };

  it('restart: never leaves an exited app exited', async () => {
    await emp.writeVassal('never.yaml', appVassal(APP, { APP_EXIT_MS: '10', APP_EXIT_CODE: '3' }, { restart: 'never' }));
    const exited = await emp.waitEvent('never', 'exited');
    assert.equal(exited.code, 3);
    const v = await emp.vassal('never');
    assert.equal(v.state, 'exited');
    assert.equal(v.lastExit?.code, 3);
    assert.equal(v.lastExit?.reason, 'exited with code 3');
    assert.equal(emp.events('never', 'spawned').length, 1);
  });

  it('restart: on-failure leaves a clean exit alone and restarts a failure', async () => {
    await emp.writeVassal('clean.yaml', appVassal(APP, { APP_EXIT_MS: '10', APP_EXIT_CODE: '0' }, { restart: 'on-failure', backoff: quick }));
    await emp.writeVassal('dirty.yaml', appVassal(APP, { APP_EXIT_MS: '10', APP_EXIT_CODE: '2' }, { restart: 'on-failure', backoff: quick }));
    await emp.waitEvent('clean', 'exited');
    await emp.waitEvent('dirty', 'backoff');
    await waitFor(() => emp.events('dirty', 'spawned').length >= 2, 'dirty restarted');
    assert.equal((await emp.vassal('clean')).state, 'exited');
    assert.equal(emp.events('clean', 'spawned').length, 1);
  });

  it('restart: always backs off exponentially, goes fatal, and a manual start clears fatal', async () => {
    const m = emp.mark();
    await emp.writeVassal('crashy.yaml', appVassal(APP, { APP_EXIT_MS: '5', APP_EXIT_CODE: '0' }, { backoff: { initial: '40ms', max: '100ms', reset_after: '10s', max_retries: 3 } }));
    const fatal = await emp.waitEvent('crashy', 'fatal', m);
    assert.match(fatal.message, /giving up after 3 failed restarts/);
    assert.match(fatal.message, /exited with code 0/);
    assert.deepEqual(emp.events('crashy', 'backoff', m).map((e) => e.delay_ms), [40, 80, 100]);
    assert.equal(emp.events('crashy', 'spawned', m).length, 4);
    const v = await emp.vassal('crashy');
    assert.equal(v.state, 'fatal');
    assert.equal(v.lastExit?.reason, 'exited with code 0');

    const m2 = emp.mark();
    const r = await emp.cli(['start', 'crashy']);
    assert.equal(r.code, 0, r.stderr);
    await emp.waitEvent('crashy', 'spawned', m2);
    await emp.waitEvent('crashy', 'fatal', m2);
  });

  it('a command that cannot be spawned is reported with the reason and goes fatal', async () => {
    await emp.writeVassal('nocmd.yaml', { command: ['definitely-not-a-command-xyz'], backoff: quick });
    const failed = await emp.waitEvent('nocmd', 'spawn-failed');
    assert.match(failed.message, /definitely-not-a-command-xyz/);
    await emp.waitEvent('nocmd', 'fatal');
    assert.match((await emp.vassal('nocmd')).lastExit?.reason ?? '', /not found/);
  });
});

describe('process groups and stopping', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;

  before(async () => {
    ws = await makeWorkspace();
    emp = await EmperorUnderTest.start(ws);
  });
  after(async () => {
    await emp.stop();
  });

  it('stopping a vassal kills its grandchildren too', async () => {
    const gc = path.join(ws.root, 'gc.pid');
    const file = await emp.writeVassal('family.yaml', appVassal(APP, { APP_GRANDCHILD: gc }));
    await emp.waitEvent('family', 'ready');
    const leader = (await emp.vassal('family')).pid!;
    const grandchild = Number(await fs.readFile(gc, 'utf8'));
    assert.ok(alive(grandchild));
    await fs.rm(file);
    await emp.waitEvent('family', 'stopped');
    assert.ok(!alive(leader));
    await gone(grandchild, 'grandchild killed with its group');
  });

  it('a vassal that ignores its stop signal is SIGKILLed after stop.timeout', async () => {
    // Ready (notify) only once it ignores SIGTERM: "up for 1 s" may come before node has even
    // installed the handler on a busy machine, and then SIGTERM simply kills it.
    await emp.writeVassal('stubborn.yaml', appVassal(APP, { APP_IGNORE_TERM: '1' }, { stop: { timeout: '300ms' }, start: { ready: { notify: true } } }));
    await emp.waitEvent('stubborn', 'ready');
    const pid = (await emp.vassal('stubborn')).pid!;
    const m = emp.mark();
    const r = await emp.cli(['stop', 'stubborn']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /stubborn: stopped/);
    await emp.waitEvent('stubborn', 'killed', m);
    assert.ok(!alive(pid));
    const exited = await emp.waitEvent('stubborn', 'exited', m);
    assert.equal(exited.signal, 'SIGKILL');
  });

  it('an app that crashes has its orphaned grandchildren killed before the restart', async () => {
    const gc = path.join(ws.root, 'orphan.pid');
    await emp.writeVassal('orphaner.yaml', appVassal(APP, { APP_GRANDCHILD: gc, APP_EXIT_MS: '300' }, { backoff: { initial: '5s' } }));
    await emp.waitEvent('orphaner', 'exited');
    const grandchild = Number(await fs.readFile(gc, 'utf8'));
    await gone(grandchild, 'orphaned grandchild killed');
    await emp.waitEvent('orphaner', 'backoff');
  });
});

describe('control commands and status', () => {
  let emp: EmperorUnderTest;

  before(async () => {
    emp = await EmperorUnderTest.start(await makeWorkspace());
    await emp.writeVassal('web.yaml', appVassal(APP, { PORT: '1' }));
    await emp.writeVassal('job.yaml', appVassal(APP));
    await emp.waitEvent('web', 'ready');
    await emp.waitEvent('job', 'ready');
  });
  after(async () => {
    await emp.stop();
  });

  it('status prints a table with every column', async () => {
    const r = await emp.cli(['status']);
    assert.equal(r.code, 0, r.stderr);
    const [header, ...rows] = r.stdout.trim().split('\n');
    assert.match(header!, /^NAME\s+STATE\s+HEALTH\s+PID\s+UPTIME\s+RESTARTS\s+LAST EXIT\s+FILE$/);
    const web = rows.find((l) => l.startsWith('web '));
    assert.ok(web, r.stdout);
    assert.match(web, /^web\s+running\s+passing\s+\d+\s+\S+\s+0\s+-\s+web\.yaml$/);
  });

  it('status --json has the same data, and status NAME shows one vassal', async () => {
    const r = await emp.cli(['status', '--json']);
    const s = JSON.parse(r.stdout) as { pid: number; vassals: Array<{ name: string; state: string; pid: number; file: string }> };
    assert.equal(s.pid, emp.pid);
    const web = s.vassals.find((v) => v.name === 'web');
    assert.equal(web?.state, 'running');
    assert.ok(web.file.endsWith('web.yaml'));
    const one = await emp.cli(['status', 'web']);
    assert.match(one.stdout, /^state\s+running$/m);
    const oneJson = JSON.parse((await emp.cli(['status', 'web', '--json'])).stdout) as { pid: number };
    assert.equal(oneJson.pid, web.pid);
  });

  it('stop, start, restart and reload go through the socket', async () => {
    const before = (await emp.vassal('web')).pid!;
    let r = await emp.cli(['stop', 'web']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await emp.vassal('web')).state, 'stopped');
    assert.ok(!alive(before));
    r = await emp.cli(['start', 'web']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /web: running/);
    const started = (await emp.vassal('web')).pid!;
    r = await emp.cli(['restart', 'web']);
    assert.equal(r.code, 0, r.stderr);
    const restarted = await emp.vassal('web');
    assert.notEqual(restarted.pid, started);
    assert.equal(restarted.restarts, 2);
    r = await emp.cli(['reload', 'web', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.notEqual((JSON.parse(r.stdout) as { pid: number }).pid, restarted.pid);
  });

  it('a manually stopped vassal stays stopped across SIGHUP; the others are reloaded', async () => {
    await emp.cli(['stop', 'web']);
    const jobPid = (await emp.vassal('job')).pid;
    const m = emp.mark();
    emp.child.kill('SIGHUP');
    await emp.waitEvent('job', 'ready', m);
    assert.notEqual((await emp.vassal('job')).pid, jobPid);
    assert.equal((await emp.vassal('web')).state, 'stopped');
    assert.equal(emp.events('web', 'spawned', m).length, 0);
  });

  it('unknown vassals and unknown actions get clear errors', async () => {
    const r = await emp.cli(['stop', 'nope']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no vassal named "nope"/);
  });

  it('the control socket is mode 0600', async () => {
    const st = await fs.stat(emp.socket);
    assert.equal(st.mode & 0o777, 0o600);
  });

  it('a second emperor on the same state directory refuses to start', async () => {
    const ws2 = await makeWorkspace();
    const r = await (await import('./support/emperor.js')).runCli(['--vassals', ws2.vassals, '--state-dir', emp.ws.state, '--logs-dir', ws2.logs]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /another emperor is already running/);
  });
});

describe('CLI without an emperor, and bad flags', () => {
  it('status says clearly that no emperor is running', async () => {
    const ws = await makeWorkspace();
    const { runCli } = await import('./support/emperor.js');
    const r = await runCli(['status', '--state-dir', ws.state]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /no emperor is running/);
  });

  it('a missing vassals directory and a bad duration flag are refused with the flag named', async () => {
    const ws = await makeWorkspace();
    const { runCli } = await import('./support/emperor.js');
    let r = await runCli(['--vassals', path.join(ws.root, 'missing'), '--state-dir', ws.state, '--logs-dir', ws.logs]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /vassals directory .*missing.* does not exist/);
    r = await runCli(['--vassals', ws.vassals, '--settle', 'soon', '--state-dir', ws.state]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--settle: expected a duration/);
  });
});
