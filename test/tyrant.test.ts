// Tyrant mode (each vassal runs as its file's owner, as the uWSGI Emperor's tyrant mode does)
// and user:/group: switching. Needs root, as the product does; the tests create their own
// users and groups with useradd/groupadd.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace, runCli } from './support/emperor.js';
import { removeGroup, removeUser, throwawayGroup, throwawayName, throwawayUser } from './support/accounts.js';

// Named after this process, so a concurrent run neither shares nor deletes them.
const USER = throwawayName('emp-t-');
const GROUP = throwawayName('emp-x-');

let accounts: { uid: number; gid: number; extraGid: number; home: string } | undefined;
/** The test user (with a home and a supplementary group), made once for this file. */
function ensureAccounts(): { uid: number; gid: number; extraGid: number; home: string } {
  if (!accounts) {
    const extraGid = throwawayGroup(GROUP);
    const u = throwawayUser(USER, { groups: [GROUP], home: `/home/${USER}` });
    accounts = { uid: u.uid, gid: u.gid, extraGid, home: u.home };
  }
  return accounts;
}
after(() => {
  if (!accounts) return;
  removeUser(USER);
  removeGroup(GROUP);
});

/** Uid, Gid and Groups lines of a running process. */
function ids(pid: number): { uid: number; gid: number; groups: number[] } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => /^(\w+):\s*(.*)$/m.exec(status.split('\n').find((l) => l.startsWith(`${name}:`)) ?? '')?.[2] ?? '';
  return {
    uid: Number(field('Uid').split(/\s+/)[0]),
    gid: Number(field('Gid').split(/\s+/)[0]),
    groups: field('Groups').split(/\s+/).filter(Boolean).map(Number),
  };
}

function environ(pid: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

/** Write a vassal file owned by uid:gid with `mode`, atomically (temp name, then rename). */
async function placeOwned(dir: string, file: string, content: object, uid: number, gid: number, mode = 0o644): Promise<string> {
  const tmp = path.join(dir, `.${file}.tmp`);
  await fs.writeFile(tmp, JSON.stringify(content));
  await fs.chown(tmp, uid, gid);
  await fs.chmod(tmp, mode);
  const dest = path.join(dir, file);
  await fs.rename(tmp, dest);
  return dest;
}

async function tyrantWorkspace() {
  const ws = await makeWorkspace();
  // The vassal's cwd is its file's directory: the owner must be able to enter it.
  await fs.chmod(ws.root, 0o755);
  await fs.chmod(ws.vassals, 0o755);
  return ws;
}

describe('tyrant mode', { skip: process.getuid?.() !== 0 ? 'needs root (the product needs root for this too)' : false }, () => {
  let acct: ReturnType<typeof ensureAccounts>;
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof tyrantWorkspace>>;
  before(async () => {
    acct = ensureAccounts();
    ws = await tyrantWorkspace();
    emp = await EmperorUnderTest.start(ws, ['--tyrant']);
  });
  after(async () => {
    await emp?.stop();
  });

  it("runs a vassal as its file's owner, with that user's groups, HOME and USER; its exec probes too", async () => {
    const probeIds = path.join('/tmp', `emperor-tyrant-probe-${process.pid}`);
    await placeOwned(ws.vassals, 'owned.yaml', { command: ['sleep', '600'], checks: [{ name: 'whoami', exec: ['sh', '-c', `id -u > ${probeIds}.tmp && mv -f ${probeIds}.tmp ${probeIds}`], interval: '100ms' }] }, acct.uid, acct.gid);
    const ready = await emp.waitEvent('owned', 'ready');
    const pid = ready.pid as number;
    const who = ids(pid);
    assert.equal(who.uid, acct.uid);
    assert.equal(who.gid, acct.gid);
    assert.ok(who.groups.includes(acct.extraGid), `groups ${who.groups.join(',')} lack ${GROUP}`);
    assert.ok(!who.groups.includes(0), 'root group must not leak');
    const env = environ(pid);
    assert.equal(env.USER, USER);
    assert.equal(env.HOME, acct.home);
    await emp.waitFor((e) => e.vassal === 'owned' && e.event === 'check' && e.status === 'passing', 'probe ran');
    assert.equal((await fs.readFile(probeIds, 'utf8')).trim(), String(acct.uid));
    await fs.rm(probeIds, { force: true });
    await fs.rm(`${probeIds}.tmp`, { force: true });
  });

  it('refuses root-owned files unless --tyrant-allow-root', async () => {
    await emp.writeVassal('rooty.yaml', { command: ['sleep', '600'] });
    const err = await emp.waitFor((e) => e.vassal === 'rooty' && e.event === 'invalid', 'root-owned refused');
    assert.match(err.message, /owned by root.*--tyrant-allow-root/);
    assert.equal((await emp.vassal('rooty')).state, 'invalid');

    const ws2 = await tyrantWorkspace();
    const emp2 = await EmperorUnderTest.start(ws2, ['--tyrant', '--tyrant-allow-root']);
    await emp2.writeVassal('rooty.yaml', { command: ['sleep', '600'], user: USER });
    const ready = await emp2.waitEvent('rooty', 'ready');
    assert.equal(ids(ready.pid as number).uid, acct.uid, 'a root-owned file may choose its user');
    await emp2.stop();
  });

  it('refuses world-writable files, files in a world-writable directory without the sticky bit, and user: in a non-root file', async () => {
    await placeOwned(ws.vassals, 'loose.yaml', { command: ['sleep', '600'] }, acct.uid, acct.gid, 0o666);
    const loose = await emp.waitFor((e) => e.vassal === 'loose' && e.event === 'invalid', 'world-writable refused');
    assert.match(loose.message, /world-writable files \(mode 666\)/);

    await placeOwned(ws.vassals, 'chooser.yaml', { command: ['sleep', '600'], user: 'root' }, acct.uid, acct.gid);
    const chose = await emp.waitFor((e) => e.vassal === 'chooser' && e.event === 'invalid' && /only root-owned files may set user/.test(e.message), 'user: refused');
    assert.ok(chose);

    const ws3 = await tyrantWorkspace();
    await fs.chmod(ws3.vassals, 0o777);
    const emp3 = await EmperorUnderTest.start(ws3, ['--tyrant']);
    await placeOwned(ws3.vassals, 'open.yaml', { command: ['sleep', '600'] }, acct.uid, acct.gid);
    const open = await emp3.waitFor((e) => e.vassal === 'open' && e.event === 'invalid' && /world-writable directory without the sticky bit/.test(e.message), 'open dir refused');
    assert.ok(open);
    // With the sticky bit (like /tmp) the directory is fine.
    await fs.chmod(ws3.vassals, 0o1777);
    await placeOwned(ws3.vassals, 'open.yaml', { command: ['sleep', '604'] }, acct.uid, acct.gid);
    await emp3.waitEvent('open', 'ready');
    await emp3.stop();
  });
});

describe('user:/group: without tyrant mode', { skip: process.getuid?.() !== 0 ? 'needs root to create users' : false }, () => {
  it('are honoured when the emperor runs as root', async () => {
    const acct = ensureAccounts();
    const emp = await EmperorUnderTest.start(await tyrantWorkspace());
    await emp.writeVassal('asuser.yaml', { command: ['sleep', '600'], user: USER, group: GROUP });
    const ready = await emp.waitEvent('asuser', 'ready');
    const who = ids(ready.pid as number);
    assert.equal(who.uid, acct.uid);
    assert.equal(who.gid, acct.extraGid);
    await emp.writeVassal('ghost.yaml', { command: ['sleep', '600'], user: 'no-such-user-xyz' });
    const err = await emp.waitFor((e) => e.vassal === 'ghost' && e.event === 'invalid', 'unknown user refused');
    assert.match(err.message, /user: no such user "no-such-user-xyz"/);
    await emp.stop();
  });

  it('are refused with a clear error when the emperor is not root; --tyrant needs root', async () => {
    const acct = ensureAccounts();
    const ws = await tyrantWorkspace();
    execFileSync('chown', ['-R', `${acct.uid}:${acct.gid}`, ws.root]);
    const as = { uid: acct.uid, gid: acct.gid };
    const r = await runCli(['--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--tyrant'], process.env, as);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--tyrant needs the emperor to run as root/);

    const emp = await EmperorUnderTest.start(ws, [], { ...process.env, HOME: acct.home }, as);
    await emp.writeVassal('wants-root.yaml', { command: ['sleep', '600'], user: 'root' });
    const err = await emp.waitFor((e) => e.vassal === 'wants-root' && e.event === 'invalid', 'refused');
    assert.match(err.message, /user: only an emperor running as root can switch users/);
    await emp.writeVassal('plain.yaml', { command: ['sleep', '600'] });
    const ready = await emp.waitEvent('plain', 'ready');
    assert.equal(ids(ready.pid as number).uid, acct.uid, 'runs as the (non-root) emperor');
    await emp.stop();
  });
});
