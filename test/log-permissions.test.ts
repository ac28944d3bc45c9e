// Logs are not world-readable (issue 9, class 7): an app's secrets printed to its own output
// must not be readable by another local user. Played as that user: a throwaway account that
// tries to read another vassal's log, rotated logs and pid records.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { waitFor } from './support/wait.js';
import { removeUser, throwawayUser, type Account } from './support/accounts.js';

/** What `cat FILE` as this user gives: the text, or the error. */
function readAs(who: Account, file: string): { ok: true; text: string } | { ok: false; error: string } {
  try {
    return { ok: true, text: execFileSync('cat', [file], { uid: who.uid, gid: who.gid, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (err) {
    return { ok: false, error: String((err as { stderr?: string }).stderr ?? err) };
  }
}

describe('log permissions', { skip: process.getuid?.() !== 0 ? 'needs root to create users and run tyrant mode' : false }, () => {
  const tag = `eo${process.pid}`;
  let owner: Account;
  let other: Account;
  let emp: EmperorUnderTest | undefined;
  before(() => {
    owner = throwawayUser(`${tag}a`);
    other = throwawayUser(`${tag}b`);
  });
  after(async () => {
    await emp?.stop();
    for (const u of [owner, other]) if (u) removeUser(u.name);
  });

  it("another user cannot read a vassal's log, rotated logs or pid records; the vassal's user owns its logs", async () => {
    const ws = await makeWorkspace();
    // The vassal's cwd is its file's directory, and the other user must be able to reach the
    // logs directory's parent: only the logs directory's own mode may stop them.
    fs.chmodSync(ws.root, 0o755);
    fs.chmodSync(ws.vassals, 0o755);
    emp = await EmperorUnderTest.start(ws, ['--tyrant']);
    // 3 KiB of output with max_size 1K: two rotations, every file holding the secret.
    const script = 'for i in 1 2 3 4 5 6; do printf "secret-token-%0500d\\n" $i; done; exec sleep 1000';
    const file = path.join(ws.vassals, 'private.json');
    fs.writeFileSync(`${file}.tmp`, JSON.stringify({ command: ['/bin/sh', '-c', script], logs: { max_size: '1K', keep: 3 }, start: { ready: { delay: '10ms' } } }));
    fs.chownSync(`${file}.tmp`, owner.uid, owner.gid);
    fs.renameSync(`${file}.tmp`, file);
    await emp.waitEvent('private', 'ready', 0, 30_000);
    const log = path.join(ws.logs, 'private.log');
    // The emperor may be rotating right now: the current log is then briefly missing (renamed to
    // .1 before the new one is opened), which is a "not yet", not a failure.
    const current = (): string => {
      try {
        return fs.readFileSync(log, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
        throw err;
      }
    };
    await waitFor(() => fs.existsSync(`${log}.2`) && current().includes('secret-token'), 'the log rotated twice', 30_000);

    assert.equal(fs.statSync(ws.logs).mode & 0o777, 0o750, 'logs directory 0750');
    for (const f of [log, `${log}.1`, `${log}.2`]) {
      const st = fs.statSync(f);
      assert.equal(st.mode & 0o777, 0o640, `${f} is 0640`);
      assert.equal(st.uid, owner.uid, `${f} belongs to the vassal's user`);
      assert.equal(st.gid, owner.gid);
      const attempt = readAs(other, f);
      assert.equal(attempt.ok, false, `${other.name} read ${f}`);
      assert.match(attempt.ok ? '' : attempt.error, /Permission denied/);
    }
    // Listing the directory is refused too.
    assert.throws(() => execFileSync('ls', [ws.logs], { uid: other.uid, gid: other.gid, stdio: 'pipe' }), /Permission denied/);

    // Pid records: not readable by others either (they carry argv).
    const pids = path.join(ws.state, 'pids');
    await waitFor(() => fs.existsSync(path.join(pids, 'private.json')), 'the pid record', 30_000);
    assert.equal(fs.statSync(pids).mode & 0o077, 0, 'pids/ has no group or other access');
    assert.equal(fs.statSync(path.join(pids, 'private.json')).mode & 0o077, 0, 'the record has no group or other access');
  });

  it('a logs directory left 0755 by an older version is tightened at start, and a 0644 log is tightened when opened', async () => {
    const ws = await makeWorkspace();
    fs.mkdirSync(ws.logs, { mode: 0o755 });
    fs.chmodSync(ws.logs, 0o755);
    fs.writeFileSync(path.join(ws.logs, 'old.log'), 'from an older version\n', { mode: 0o644 });
    fs.chmodSync(path.join(ws.logs, 'old.log'), 0o644);
    const e2 = await EmperorUnderTest.start(ws);
    try {
      const warned = await e2.waitFor((e) => e.event === 'logs-dir', 'the tightening is reported', 0, 30_000);
      assert.match(warned.message, /tightened to 0750/);
      assert.equal(fs.statSync(ws.logs).mode & 0o777, 0o750);
      await e2.writeVassal('old.json', { command: ['/bin/sh', '-c', 'echo new line; exec sleep 1000'], start: { ready: { delay: '10ms' } } });
      await waitFor(() => fs.readFileSync(path.join(ws.logs, 'old.log'), 'utf8').includes('new line'), 'appended to the old log', 30_000);
      assert.equal(fs.statSync(path.join(ws.logs, 'old.log')).mode & 0o777, 0o640);
    } finally {
      await e2.stop();
    }
  });
});
