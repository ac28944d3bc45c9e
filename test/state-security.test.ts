// Issue 9, classes 5, 6, 8 and 9 (part): the state directory, pid records, one emperor per
// state directory and per vassals directory, boolean environment variables, and small input
// gaps. Each attack is played by a throwaway non-root user created here (where a user matters)
// against a root emperor, as the product runs in tyrant mode.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { removeUser, throwawayName, throwawayUser, type Account } from './support/accounts.js';
import { after, before, describe, it } from './support/test.js';
import { newSpawnId, SPAWN_ID_VAR } from '../src/process/records.js';
import { readStatSync } from '../src/process/procfs.js';
import { EmperorUnderTest, makeWorkspace, type CliResult } from './support/emperor.js';
import { readableEmperorBin } from './support/install.js';
import { binEmperor } from './support/paths.js';
import { isRunning } from './support/proc.js';
import { waitFor } from './support/wait.js';

type Workspace = Awaited<ReturnType<typeof makeWorkspace>>;

type User = Account;

/** The CLI, bounded: an emperor that starts when it should refuse is killed and reported. */
function runBounded(args: string[], opts: { env?: NodeJS.ProcessEnv; as?: User; ms?: number } = {}): Promise<CliResult & { timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    // Another user gets a copy of the emperor it can reach wherever the checkout lives.
    const child = spawn(process.execPath, [opts.as ? readableEmperorBin() : binEmperor, ...args], {
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.as ? { uid: opts.as.uid, gid: opts.as.gid } : {}),
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.ms ?? 15000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

const emperorArgs = (ws: Workspace, state = ws.state): string[] => ['--vassals', ws.vassals, '--state-dir', state, '--logs-dir', ws.logs, '--log-format', 'json'];

/** A process in a group of its own, as a leftover or a stranger would be. */
function startGroup(t: { after(fn: () => void): void }, env: Record<string, string> = {}, as?: User): ChildProcess {
  const child = spawn('sh', ['-c', 'sleep 600 & exec sleep 600'], {
    detached: true,
    stdio: 'ignore',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    ...(as ? { uid: as.uid, gid: as.gid } : {}),
  });
  child.unref();
  t.after(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  return child;
}

/** A record exactly as an emperor writes one, for the process group led by `pid`. */
function recordFor(pid: number, extra: Record<string, unknown> = {}): string {
  const stat = readStatSync(pid);
  assert.ok(stat, `process ${pid} runs`);
  const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return JSON.stringify({ pid, pgid: pid, startTime: stat.startTime, argv: ['sleep', '600'], emperorPid: 999999999, bootId, ...extra });
}

const immediate = { start: { ready: { delay: '0s' } } };

describe('state directory, pid records and locks (root emperor, throwaway attacker)', { skip: process.getuid?.() !== 0 ? 'needs root to create users' : false }, () => {
  let attacker: User;
  before(() => {
    attacker = throwawayUser(throwawayName('esa'));
  });
  after(() => {
    if (attacker) removeUser(attacker.name);
  });

  it('refuses a state directory the attacker created, and never acts on the records planted in it', async (t) => {
    const ws = await makeWorkspace();
    await fs.chmod(ws.root, 0o1777); // like /tmp: anyone may create entries, nobody may replace others'
    // A root process the attacker would like dead, and a record for it, in a state dir of theirs.
    const victim = startGroup(t);
    await waitFor(() => readStatSync(victim.pid!) !== undefined, 'victim started');
    const state = path.join(ws.root, 'state');
    await fs.mkdir(path.join(state, 'pids'), { recursive: true });
    await fs.writeFile(path.join(state, 'pids', 'web.json'), recordFor(victim.pid!));
    execFileSync('chown', ['-R', `${attacker.uid}:${attacker.gid}`, state]);

    const r = await runBounded(emperorArgs(ws, state));
    assert.equal(r.timedOut, false, 'the emperor started on a state directory another user owns');
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`state directory ${state} is owned by uid ${attacker.uid}, not by the user the emperor runs as \\(uid 0\\)`));
    assert.ok(isRunning(victim.pid!), 'a planted record killed a process');
  });

  it('refuses a state directory or pids/ writable by group or others, and one under a parent another user owns', async () => {
    const ws = await makeWorkspace();
    await fs.mkdir(ws.state, { mode: 0o700 });
    await fs.chmod(ws.state, 0o777);
    let r = await runBounded(emperorArgs(ws));
    assert.equal(r.timedOut, false, 'the emperor started on a world-writable state directory');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /state directory .* is writable by group and others \(mode 0777\).*expected mode 0700: chmod 700/);

    await fs.chmod(ws.state, 0o700);
    await fs.mkdir(path.join(ws.state, 'pids'));
    await fs.chmod(path.join(ws.state, 'pids'), 0o773);
    r = await runBounded(emperorArgs(ws));
    assert.equal(r.timedOut, false, 'the emperor started with a group-writable pids/');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /pid records directory .*pids is writable by group and others \(mode 0773\)/);

    // The attacker owns a parent: they could rename the state directory away and put theirs.
    const theirs = path.join(ws.root, 'theirs');
    await fs.mkdir(theirs);
    await fs.chown(theirs, attacker.uid, attacker.gid);
    r = await runBounded(emperorArgs(ws, path.join(theirs, 'state')));
    assert.equal(r.timedOut, false, 'the emperor started under a parent another user owns');
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${theirs}, a parent of the state directory .* is owned by uid ${attacker.uid}`));
    await assert.rejects(fs.stat(path.join(theirs, 'state')), { code: 'ENOENT' }, 'nothing is created in a refused place');
  });

  it('a record file the attacker owns, or one for a process not started with its spawn id, kills nothing', async (t) => {
    const ws = await makeWorkspace();
    const pids = path.join(ws.state, 'pids');
    await fs.mkdir(pids, { recursive: true, mode: 0o700 });
    // Two strangers, both with the right pid, start time and boot in their records.
    const planted = startGroup(t, {}, attacker);
    const stranger = startGroup(t, { [SPAWN_ID_VAR]: newSpawnId() });
    await waitFor(() => readStatSync(planted.pid!) !== undefined && readStatSync(stranger.pid!) !== undefined, 'strangers started');
    // Left by an attacker while the directory was open to them (or by a confused chown).
    await fs.writeFile(path.join(pids, 'planted.json'), recordFor(planted.pid!, { spawnId: newSpawnId() }), { mode: 0o600 });
    await fs.chown(path.join(pids, 'planted.json'), attacker.uid, attacker.gid);
    // Ours in every way but the spawn id: the stranger was started with another one.
    await fs.writeFile(path.join(pids, 'stranger.json'), recordFor(stranger.pid!, { spawnId: newSpawnId() }), { mode: 0o600 });

    const emp = await EmperorUnderTest.start(ws);
    t.after(() => emp.stop());
    // Leftovers are reaped before "started": whatever would have been killed is dead by now.
    assert.ok(isRunning(planted.pid!), 'a record the attacker planted killed its target');
    assert.ok(isRunning(stranger.pid!), 'a process not started with the spawn id was killed');
    assert.deepEqual(emp.entries.filter((e) => e.event === 'leftover'), [], 'nothing was killed');
    const untrusted = await emp.waitFor((e) => e.event === 'leftover-skipped' && e.vassal === 'planted', 'planted record skipped');
    assert.match(untrusted.message, new RegExp(`record not trusted: the file is owned by uid ${attacker.uid}`));
    assert.deepEqual(await fs.readdir(pids), [], 'the records are gone');
  });

  it("a record copied from a live emperor's state directory never kills that emperor's vassal", async (t) => {
    const wsA = await makeWorkspace();
    const a = await EmperorUnderTest.start(wsA);
    t.after(() => a.stop());
    await a.writeVassal('web.yaml', { command: ['sleep', '600'], ...immediate });
    const ready = await a.waitEvent('web', 'ready');
    const record = path.join(wsA.state, 'pids', 'web.json');
    await waitFor(async () => (await fs.readFile(record, 'utf8').catch(() => '')).includes(`"pid":${ready.pid as number}`), 'the record to be written');
    const wsB = await makeWorkspace();
    await fs.mkdir(path.join(wsB.state, 'pids'), { recursive: true, mode: 0o700 });
    await fs.copyFile(record, path.join(wsB.state, 'pids', 'web.json'));

    const b = await EmperorUnderTest.start(wsB);
    t.after(() => b.stop());
    assert.ok(isRunning(ready.pid as number), "the live emperor's vassal was killed");
    const skipped = await b.waitFor((e) => e.event === 'leftover-skipped' && e.vassal === 'web', 'copied record skipped');
    assert.match(skipped.message, new RegExp(`emperor that wrote it \\(pid ${a.pid}\\) is still running`));
    assert.ok(isRunning(ready.pid as number), "the live emperor's vassal survives");
    assert.equal((await a.vassal('web')).pid, ready.pid);
  });

  it('after emperor and guardian are SIGKILLed, the next emperor gets the lock and reaps what carries the spawn id', async (t) => {
    const ws = await makeWorkspace();
    const first = await EmperorUnderTest.start(ws);
    t.after(() => first.stop());
    // The background sleep escapes the leader's parent-death signal; only the guardian or the
    // next emperor can stop it. In a cgroup the leader has no parent-death signal (spawn.ts), so
    // it is left over too.
    const cgroupMode = (await first.status()).containment.mode === 'cgroup';
    await first.writeVassal('fam.yaml', { command: ['sh', '-c', 'sleep 600 & echo $! > ../fam.gc; exec sleep 600'], ...immediate });
    const leader = (await first.waitEvent('fam', 'ready')).pid as number;
    let grandchild = 0;
    await waitFor(async () => (grandchild = Number(await fs.readFile(path.join(ws.root, 'fam.gc'), 'utf8').catch(() => '0'))) > 0, 'grandchild pid');
    t.after(() => {
      for (const pid of [grandchild, leader]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone, as it should be
        }
      }
    });
    const guardians = execFileSync('pgrep', ['-P', String(first.pid), '-x', 'sh'], { encoding: 'utf8' }).trim().split('\n').map(Number);
    for (const g of guardians) process.kill(g, 'SIGKILL');
    await first.stop('SIGKILL');
    assert.ok(isRunning(grandchild), 'the grandchild outlived emperor and guardian');

    const next = await EmperorUnderTest.start(ws);
    t.after(() => next.stop());
    const left = await next.waitFor((e) => e.event === 'leftover' && e.vassal === 'fam', 'leftover reaped');
    assert.match(left.message, cgroupMode ? /killed 2 leftover/ : /killed 1 leftover/);
    await waitFor(() => !isRunning(grandchild) && !isRunning(leader), 'the grandchild and the leader to be gone');
  });

  it('deleting the socket does not let a second emperor in: it refuses, and the first one keeps its vassal', async (t) => {
    const ws = await makeWorkspace();
    const first = await EmperorUnderTest.start(ws);
    t.after(() => first.stop());
    await first.writeVassal('web.yaml', { command: ['sleep', '600'], ...immediate });
    const ready = await first.waitEvent('web', 'ready');
    await fs.rm(first.socket);
    const ws2 = await makeWorkspace();
    const r = await runBounded(['--vassals', ws2.vassals, '--state-dir', ws.state, '--logs-dir', ws2.logs]);
    assert.equal(r.timedOut, false, 'a second emperor started on a state directory in use');
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`another emperor is already running with state directory ${ws.state} \\(pid ${first.pid}\\)`));
    assert.ok(isRunning(ready.pid as number), "the first emperor's vassal was killed as a leftover");
    assert.equal(first.events('web', 'exited').length, 0);
  });

  it('a second root emperor on the same vassals directory refuses; an attacker holding its lock does not stop the emperor', async (t) => {
    const ws = await makeWorkspace();
    await fs.chmod(ws.root, 0o755);
    await fs.chmod(ws.vassals, 0o755);
    const first = await EmperorUnderTest.start(ws);
    t.after(() => first.stop());
    const r = await runBounded(emperorArgs(ws, path.join(ws.root, 'state2')));
    assert.equal(r.timedOut, false, 'a second emperor started on the same vassals directory');
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`vassals directory ${ws.vassals} is locked by pid ${first.pid} \\(uid 0\\): another emperor already supervises it`));
    await first.stop();

    // Anyone who can read the directory can lock it: that must only be worth a warning.
    const holder = spawn('flock', ['--exclusive', ws.vassals, 'sleep', '600'], { uid: attacker.uid, gid: attacker.gid, stdio: 'ignore', detached: true });
    t.after(() => process.kill(-holder.pid!, 'SIGKILL'));
    await waitFor(() => readFileSync('/proc/locks', 'utf8').includes(`:${execFileSync('stat', ['-c', '%i', ws.vassals], { encoding: 'utf8' }).trim()} `), 'the attacker to hold the lock');
    const emp = await EmperorUnderTest.start(ws);
    t.after(() => emp.stop());
    const warning = await emp.waitFor((e) => e.event === 'vassals-dir-locked', 'loud warning');
    assert.match(warning.message, new RegExp(`locked by pid \\d+ \\(uid ${attacker.uid}\\)(, pid \\d+ \\(uid ${attacker.uid}\\))*, not by an emperor of this user or root; starting anyway`));
    await emp.writeVassal('web.yaml', { command: ['sleep', '600'], ...immediate });
    await emp.waitEvent('web', 'ready');
  });

  it('permission denied on the control socket has its own message and exit code, not "no emperor"', async (t) => {
    const ws = await makeWorkspace();
    await fs.chmod(ws.root, 0o755);
    const emp = await EmperorUnderTest.start(ws);
    t.after(() => emp.stop());
    const r = await runBounded(['status', '--state-dir', ws.state], { as: attacker });
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, new RegExp(`permission denied on ${ws.state}/emperor.sock \\(owned by uid 0\\): only the user the emperor runs as`));
    assert.doesNotMatch(r.stderr, /no emperor/);
  });
});

describe('strict boolean environment variables', { skip: process.getuid?.() !== 0 ? 'tyrant mode needs root' : false }, () => {
  it('EMPEROR_TYRANT_ALLOW_ROOT=false keeps root-owned files refused; a value that is not a boolean is an error naming the variable', async (t) => {
    const ws = await makeWorkspace();
    await fs.chmod(ws.root, 0o755);
    await fs.chmod(ws.vassals, 0o755);
    const emp = await EmperorUnderTest.start(ws, [], { ...process.env, EMPEROR_TYRANT: 'YES', EMPEROR_TYRANT_ALLOW_ROOT: 'false' });
    t.after(() => emp.stop());
    await emp.writeVassal('rooty.yaml', { command: ['sleep', '600'], ...immediate });
    const refused = await emp.waitFor((e) => e.vassal === 'rooty' && (e.event === 'invalid' || e.event === 'ready'), 'root-owned file decided');
    assert.equal(refused.event, 'invalid', 'EMPEROR_TYRANT_ALLOW_ROOT=false let a root-owned file run');
    assert.match(refused.message, /owned by root/);

    // A --no-X option's variable: false keeps X on (commander took any value as "set").
    const cg = await EmperorUnderTest.start(await makeWorkspace(), [], { ...process.env, EMPEROR_NO_CGROUPS: 'False' });
    t.after(() => cg.stop());
    assert.doesNotMatch((await cg.status()).containment.reason ?? '', /turned off/, 'EMPEROR_NO_CGROUPS=False turned cgroups off');

    for (const [name, value] of [
      ['EMPEROR_TYRANT_ALLOW_ROOT', 'flase'],
      ['EMPEROR_TYRANT', ''],
      ['EMPEROR_MIRROR_OUTPUT', 'on'],
      ['EMPEROR_NO_CGROUPS', 'nope'],
    ] as const) {
      const r = await runBounded(emperorArgs(await makeWorkspace()), { env: { ...process.env, EMPEROR_TYRANT: '1', [name]: value } });
      assert.equal(r.timedOut, false, `${name}=${JSON.stringify(value)} was accepted`);
      assert.equal(r.code, 2);
      assert.equal(r.stderr, `emperor: ${name}: expected true or false (also 1/0, yes/no), got ${JSON.stringify(value)}\n`);
    }
  });
});

describe('small input gaps', () => {
  it('a tree root with ".." or whitespace is refused, naming the flag or variable', async () => {
    const ws = await makeWorkspace();
    for (const [args, env, source] of [
      [['--tree-root', '/services/../other'], {}, '--tree-root'],
      [['--tree-root', '/my services'], {}, '--tree-root'],
      [[], { EMPEROR_TREE_ROOT: '/a/./b' }, 'EMPEROR_TREE_ROOT'],
    ] as const) {
      const r = await runBounded([...emperorArgs(ws), '--etcd-endpoint', '127.0.0.1:9', ...args], { env: { ...process.env, ...env }, ms: 10000 });
      assert.equal(r.timedOut, false, `${JSON.stringify(args)} ${JSON.stringify(env)} was accepted`);
      assert.equal(r.code, 2);
      assert.match(r.stderr, new RegExp(`^emperor: ${source}: expected an absolute key path such as /services; each part between "/" must not`));
    }
  });

  it('a state directory too long for a unix socket is refused up front, saying what to do', async () => {
    const ws = await makeWorkspace();
    const long = path.join(ws.root, 'x'.repeat(100));
    const r = await runBounded(emperorArgs(ws, long));
    assert.equal(r.timedOut, false, 'the emperor started with a socket path the kernel cannot take');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /path is too long for a unix socket: .*emperor\.sock is \d+ bytes, the limit is 107; choose a shorter --state-dir/);
    await assert.rejects(fs.stat(long), { code: 'ENOENT' }, 'nothing was created');
    assert.deepEqual((await fs.readdir(ws.root)).sort(), ['vassals'], 'no socket was created anywhere else either');
    const s = await runBounded(['status', '--state-dir', long]);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /too long for a unix socket/);
  });
});
