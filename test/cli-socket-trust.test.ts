// The CLI believes only a control socket that the emperor's user (or root) placed: a hostile
// local user who can put a server where the operator's CLI looks (a --state-dir that others can
// write to, or one they own) must not be able to show a made-up status or swallow a `stop`.
// The impostor here is a real server run as a throwaway non-root user.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { removeUser, throwawayName, throwawayUser, type Account } from './support/accounts.js';
import { runCli } from './support/emperor.js';
import { after, before, describe, it } from './support/test.js';
import { waitFor } from './support/wait.js';

/** Answers every request as an emperor would answer `stop web`, and prints what it was asked. */
const IMPOSTOR = `
const fs = require('node:fs'), http = require('node:http'), path = require('node:path');
const [dir, sockMode] = process.argv.slice(1);
const sock = path.join(dir, 'emperor.sock');
const server = http.createServer((req, res) => {
  process.stdout.write('REQUEST ' + req.method + ' ' + req.url + '\\n');
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ name: 'web', state: 'stopped' }));
});
server.listen(sock, () => { fs.chmodSync(sock, parseInt(sockMode, 8)); process.stdout.write('LISTENING\\n'); });
`;

interface Impostor {
  readonly child: ChildProcess;
  requests(): string[];
}

/** A directory made for `owner` (root, or a user's own), then the impostor listening in it as `as`. */
async function startImpostor(as: Account, dir: string, owner: Account | 'root', dirMode: number, sockMode: string): Promise<Impostor> {
  await fs.mkdir(dir);
  if (owner !== 'root') await fs.chown(dir, owner.uid, owner.gid);
  await fs.chmod(dir, dirMode);
  const child = spawn(process.execPath, ['-e', IMPOSTOR, dir, sockMode], { uid: as.uid, gid: as.gid, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('LISTENING') || child.exitCode !== null, 'the impostor listening', 20_000);
  assert.equal(child.exitCode, null, 'the impostor started');
  return { child, requests: () => out.split('\n').filter((l) => l.startsWith('REQUEST ')) };
}

describe('the CLI trusts only a control socket placed by the emperor user or root', { skip: process.getuid?.() !== 0 ? 'needs root to create users' : false }, () => {
  let hostile: Account;
  let victim: Account;
  let root: string;
  const impostors: ChildProcess[] = [];
  before(async () => {
    hostile = throwawayUser(throwawayName('emphost'));
    victim = throwawayUser(throwawayName('empvict'));
    // A root-owned place everyone can traverse, like /run or /srv.
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'emperor-trust-'));
    await fs.chmod(root, 0o755);
  });
  after(async () => {
    for (const c of impostors) c.kill('SIGKILL');
    removeUser(hostile.name);
    removeUser(victim.name);
    await fs.rm(root, { recursive: true, force: true });
  });

  it('root pointed at a directory others can write to: refused, the impostor hears nothing', async () => {
    // The operator's mistake: a shared directory (mode 0777, as /tmp is but without the sticky bit's help here).
    const shared = path.join(root, 'shared');
    const imp = await startImpostor(hostile, shared, 'root', 0o777, '666');
    impostors.push(imp.child);
    const r = await runCli(['stop', 'web', '--state-dir', shared]);
    assert.equal(r.code, 4, `exit code 4 (refused), got ${r.code}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /refusing to talk to .*emperor\.sock: its directory .*shared is writable by group or others \(mode 0777\)/);
    assert.equal(r.stdout, '', 'no made-up answer shown');
    assert.deepEqual(imp.requests(), [], 'the stop never reached the impostor');
  });

  it("a non-root user pointed at another user's directory: refused, even when its socket is open to all", async () => {
    const dir = path.join(root, 'hostile-state');
    const imp = await startImpostor(hostile, dir, hostile, 0o755, '666');
    impostors.push(imp.child);
    const r = await runCli(['stop', 'web', '--state-dir', dir], process.env, victim);
    assert.equal(r.code, 4, `exit code 4 (refused), got ${r.code}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`its directory .*hostile-state is owned by uid ${hostile.uid}, neither you \\(uid ${victim.uid}\\) nor root`));
    assert.deepEqual(imp.requests(), [], 'the stop never reached the impostor');
  });

  it("root may still drive a user's own emperor: a 0700 directory that user owns", async () => {
    const dir = path.join(root, 'user-state');
    const own = await startImpostor(hostile, dir, hostile, 0o700, '600');
    impostors.push(own.child);
    const r = await runCli(['stop', 'web', '--state-dir', dir]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, 'web: stopped\n');
    assert.deepEqual(own.requests(), ['REQUEST POST /v1/vassals/web/stop']);
  });
});
