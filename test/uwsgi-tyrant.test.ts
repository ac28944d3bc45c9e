// uWSGI .ini vassals in tyrant mode (issue 15), played by a throwaway non-root user who owns
// files in the vassals directory of a root emperor: an .ini gets the same owner, type and size
// protections as a YAML file (it is read by the same code), runs uWSGI as its owner, and neither
// emperor-* options nor uWSGI's own options in it can make anything run as root.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { after, before, describe, it } from './support/test.js';
import { removeUser, throwawayName, throwawayUser, type Account } from './support/accounts.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';
import { waitFor } from './support/wait.js';

const isRoot = process.getuid?.() === 0;

function uidOf(pid: number): number | undefined {
  try {
    return Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

describe('.ini vassals in tyrant mode, against their owner', { skip: isRoot ? false : 'needs root (the product needs root for tyrant mode)' }, () => {
  let user: Account;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  let emp: EmperorUnderTest;
  let app: string;

  /** A shell command run as the user (the files are theirs, made by them). */
  function asUser(script: string, ...args: string[]): void {
    const r = spawnSync('/bin/sh', ['-c', script, 'sh', ...args], { uid: user.uid, gid: user.gid, cwd: ws.vassals, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`as ${user.name}: ${script}: ${r.stderr}`);
  }

  before(async () => {
    user = throwawayUser(throwawayName('emp-u'), { shell: '/usr/sbin/nologin' });
    ws = await makeWorkspace('emperor-uwsgi-tyrant-');
    await fs.chmod(ws.root, 0o755);
    await fs.chown(ws.vassals, user.uid, user.gid);
    // The app, where the user can read it (the checkout may be in a 0700 home).
    app = path.join(ws.root, 'app.py');
    await fs.copyFile(fixture('uwsgi/app.py'), app);
    await fs.chmod(app, 0o644);
    emp = await EmperorUnderTest.start(ws, ['--tyrant', '--rescan-interval', '1s']);
  });
  after(async () => {
    if (emp && emp.child.exitCode === null) await emp.stop();
    if (user) removeUser(user.name);
    if (ws) await fs.rm(ws.root, { recursive: true, force: true });
  });

  const iniFor = (port: number, extra: string[] = []): string => ['[uwsgi]', 'plugin = python3', `http-socket = 127.0.0.1:${port}`, `wsgi-file = ${app}`, 'master = true', 'processes = 1', ...extra, ''].join('\n');

  /** Writes `content` to `file` in the vassals directory as the user. */
  function userFile(file: string, content: string): void {
    const r = spawnSync('/bin/sh', ['-c', 'cat > "$1.part" && mv "$1.part" "$1"', 'sh', file], { uid: user.uid, gid: user.gid, cwd: ws.vassals, input: content, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`as ${user.name}: writing ${file}: ${r.stderr}`);
  }

  it('runs uWSGI as the owner of the .ini', async () => {
    const port = await freePort();
    const since = emp.mark();
    userFile('mine.ini', iniFor(port));
    const ready = await emp.waitEvent('mine', 'ready', since);
    assert.equal(uidOf(ready.pid as number), user.uid);
    assert.equal(await get(port), 200);
    await fs.rm(path.join(ws.vassals, 'mine.ini'));
    await emp.waitEvent('mine', 'stopped', emp.mark());
  });

  it('refuses emperor-user / emperor-group in a file root does not own', async () => {
    for (const [name, line] of [
      ['asroot', 'emperor-user = root'],
      ['asgroup', 'emperor-group = root'],
    ] as const) {
      const since = emp.mark();
      userFile(`${name}.ini`, iniFor(await freePort(), [line]));
      const invalid = await emp.waitEvent(name, 'invalid', since);
      assert.match(invalid.message, /only root-owned files may set user\/group/);
      assert.equal(emp.events(name, 'spawned', since).length, 0);
    }
  });

  it("uWSGI's own uid = 0 in a user's file cannot make it root", async () => {
    const since = emp.mark();
    const port = await freePort();
    userFile('uid0.ini', iniFor(port, ['uid = 0', 'gid = 0', 'emperor-restart = never']));
    // uWSGI only switches users when started as root; started as the file's owner it keeps that.
    const ready = await emp.waitEvent('uid0', 'ready', since);
    const pid = ready.pid as number;
    assert.equal(uidOf(pid), user.uid);
    const workers = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
    assert.ok(workers.length > 0, 'uWSGI has its worker');
    for (const w of workers) assert.equal(uidOf(w), user.uid, `worker ${w}`);
    assert.equal(await get(port), 200);
    await fs.rm(path.join(ws.vassals, 'uid0.ini'));
    await emp.waitEvent('uid0', 'stopped', emp.mark());
  });

  it('refuses a FIFO, a symbolic link, a world-writable and an oversized .ini, once each, and keeps working', async () => {
    const since = emp.mark();
    asUser('mkfifo fifo.ini && ln -s /etc/shadow link.ini && printf "[uwsgi]\\n" > open.ini && chmod 666 open.ini && head -c 70000 /dev/zero | tr "\\0" "#" > big.ini');
    const expect: Array<[string, RegExp]> = [
      ['fifo', /FIFO/],
      ['link', /symbolic link/],
      ['open', /world-writable/],
      ['big', /too large/],
    ];
    for (const [name, problem] of expect) assert.match((await emp.waitEvent(name, 'invalid', since)).message, problem);
    assert.ok(!emp.entries.slice(since).some((e) => JSON.stringify(e).includes('root:')), 'nothing of /etc/shadow is quoted');
    // Not blocked by any of them: a good file still deploys.
    const port = await freePort();
    userFile('after.ini', iniFor(port));
    await emp.waitEvent('after', 'ready', since);
    // A few markers later (rescans every second meanwhile), each was still reported only once.
    for (let i = 0; i < 3; i++) {
      const mark = emp.mark();
      userFile(`marker${i}.ini`, 'not ini at all');
      await emp.waitEvent(`marker${i}`, 'invalid', mark);
    }
    for (const [name] of expect) assert.equal(emp.events(name, 'invalid', since).length, 1, name);
  });

  it('a vassal flooding its Emperor-protocol channel with any bytes affects only itself', async () => {
    // The owner's own program, not uWSGI: 8 MiB of protocol bytes and junk on fd 3 (never 22,
    // which would only stop itself), then a file saying it is done.
    const done = path.join(ws.root, 'flood-done');
    await fs.mkdir(done);
    await fs.chown(done, user.uid, user.gid);
    const flooder = path.join(ws.root, 'flooder.js');
    await fs.writeFile(
      flooder,
      `const fs = require('node:fs');
const pick = [0, 1, 2, 5, 17, 26, 30, 99, 255];
const buf = Buffer.alloc(65536);
let sent = 0;
function go() {
  for (let i = 0; i < buf.length; i++) buf[i] = pick[Math.floor(Math.random() * pick.length)];
  try { sent += fs.writeSync(3, buf); } catch {} // EAGAIN: the emperor reads at its own pace
  if (sent < 8 * 1024 * 1024) return setImmediate(go);
  fs.writeFileSync(process.argv[2] + '/done', String(sent));
  setInterval(() => {}, 1 << 30);
}
go();
`,
    );
    await fs.chmod(flooder, 0o644);
    const since = emp.mark();
    userFile('neighbour.json', JSON.stringify({ command: ['sleep', '600'], start: { ready: { delay: '10ms' } } }));
    const neighbour = (await emp.waitEvent('neighbour', 'ready', since)).pid as number;
    userFile('flooder.json', JSON.stringify({ command: [process.execPath, flooder, done], start: { ready: { delay: '10ms' } } }));
    await waitFor(async () => (await fs.readdir(done)).includes('done'), 'the flood to be sent', 120_000);
    // Still answering, the neighbour untouched, and no log line per byte.
    const status = await emp.status();
    assert.equal(status.vassals.find((v) => v.name === 'neighbour')?.pid, neighbour);
    assert.equal(uidOf(neighbour), user.uid);
    assert.ok(emp.events('flooder', 'loyal', since).length <= 1, 'loyal is said once');
    const lines = emp.entries.slice(since).filter((e) => e.vassal === 'flooder').length;
    assert.ok(lines < 50, `${lines} log lines for 8 MiB of protocol bytes`);
    assert.equal(emp.child.exitCode, null);
    await fs.rm(path.join(ws.vassals, 'flooder.json'));
    await fs.rm(path.join(ws.vassals, 'neighbour.json'));
    await emp.waitEvent('flooder', 'stopped', since);
  });
});
