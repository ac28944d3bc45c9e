// Issue 9, the vassal-file classes: a hostile local user who may write into a tyrant-mode vassals
// directory attacks a root emperor. The attacker is a throwaway user created here, acting through
// test/fixtures/attacker.ts run as that user; a second throwaway user is the victim whose files
// share the directory (group-writable, as a shared deploy directory is). Each test fails on the
// code before the fix: the owner race ran the attacker's content as the victim, FIFOs and
// directories were silently ignored, a sparse file was retried in a hot loop and never reported,
// a symlink's target (a file only root may read) was quoted in the error, a repeated JSON key
// silently took the last value.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { MAX_VASSAL_FILE_BYTES } from '../src/config/read.js';
import { reportingVassal } from './fixtures/attacker.js';
import { EmperorUnderTest, makeWorkspace, type LogEntry } from './support/emperor.js';
import { after, before, describe, it } from './support/test.js';
import { removeGroup, removeUser, throwawayGroup, throwawayUser, type Account } from './support/accounts.js';
import { waitFor } from './support/wait.js';

/** Uid of a live process and the WHO its environment names, or undefined once it is gone. */
function whoRuns(pid: number): { uid: number; who: string | undefined; comm: string } | undefined {
  try {
    // Name and Uid from one read: read apart, the uid could be the launcher's (root, before
    // setpriv switched) and the name the final program's, a mismatch of the test's own making.
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    const comm = /^Name:\s+(.*)$/m.exec(status)?.[1]?.trim() ?? '';
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const who = env.find((kv) => kv.startsWith('WHO='))?.slice(4);
    return { uid, who, comm };
  } catch {
    return undefined;
  }
}

const isRoot = process.getuid?.() === 0;

describe('tyrant mode against a hostile user of the vassals directory', { skip: isRoot ? false : 'needs root (the product needs root for tyrant mode)' }, () => {
  const tag = process.pid.toString(36);
  const groupName = `emp-g-${tag}`;
  let attacker: Account;
  let victim: Account;
  let groupGid: number;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  let stash: string;
  let report: string;
  let script: string;
  let emp: EmperorUnderTest;
  /** Processes seen running one WHO's content as another uid: the owner race won. */
  const wrongUid: string[] = [];
  const uidOf = (who: string | undefined): number | undefined => (who === 'attacker' ? attacker.uid : who === 'victim' ? victim.uid : undefined);

  /** Runs the attacker fixture as the attacker (primary group: the shared one). */
  function attack(mode: string, args: object, timeoutMs = 60_000): Promise<{ names?: string[]; attempts?: number }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [script, mode, JSON.stringify(args)], { uid: attacker.uid, gid: groupGid, cwd: ws.root, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code !== 0) reject(new Error(`attacker ${mode} exited ${code}: ${err}`));
        else resolve(JSON.parse(out) as { names?: string[] });
      });
    });
  }

  /** Every vassal process: once it has exec'd its final program, its uid must be its content's owner's. */
  function watchSpawns(e: LogEntry): void {
    if (e.event !== 'spawned' || typeof e.pid !== 'number') return;
    const pid = e.pid;
    void (async () => {
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        const seen = whoRuns(pid);
        if (seen === undefined) return; // gone before it exec'd; its report file still tells
        if (seen.comm === 'sleep') {
          const expected = uidOf(seen.who);
          if (expected !== undefined && seen.uid !== expected) wrongUid.push(`${e.vassal} pid ${pid}: ${seen.who}'s content runs as uid ${seen.uid}`);
          return;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
  }

  before(async () => {
    groupGid = throwawayGroup(groupName);
    attacker = throwawayUser(`emp-a-${tag}`, { groups: [groupName], shell: '/usr/sbin/nologin' });
    victim = throwawayUser(`emp-v-${tag}`, { shell: '/usr/sbin/nologin' });
    ws = await makeWorkspace('emperor-attack-');
    await fs.chmod(ws.root, 0o755);
    // A shared deploy directory: group-writable, not world-writable (tyrant mode refuses that).
    await fs.chown(ws.vassals, 0, groupGid);
    await fs.chmod(ws.vassals, 0o775);
    stash = path.join(ws.root, 'stash');
    await fs.mkdir(stash);
    await fs.chown(stash, 0, (await fs.stat(ws.vassals)).gid);
    await fs.chmod(stash, 0o775);
    report = path.join(ws.root, 'report');
    await fs.mkdir(report);
    await fs.chmod(report, 0o1777);
    // The attacker cannot read the checkout: a copy of the fixture where he can.
    script = path.join(ws.root, 'attacker.mjs');
    copyFileSync(fileURLToPath(new URL('./fixtures/attacker.js', import.meta.url)), script);
    await fs.chmod(script, 0o644);
    emp = await EmperorUnderTest.start(ws, ['--tyrant', '--rescan-interval', '1s']);
    emp.on('entry', watchSpawns);
  });

  after(async () => {
    if (emp && emp.child.exitCode === null) await emp.stop();
    for (const account of [attacker, victim]) if (account) removeUser(account.name);
    removeGroup(groupName);
    if (ws) await fs.rm(ws.root, { recursive: true, force: true });
  });

  // About one attempt in ten won the race before the fix (the owner came from an lstat after the
  // parse), so 60 attempts miss it with a probability under 0.2 %.
  it("never runs the attacker's content as the owner of a file renamed over it (owner race, 60 attempts)", { timeout: 150_000 }, async () => {
    const attempts = 60;
    for (let i = 0; i < attempts; i++) {
      const file = path.join(stash, `race.${i}.yaml`);
      await fs.writeFile(file, reportingVassal('victim', report, { ATTEMPT: String(i) }));
      await fs.chown(file, victim.uid, victim.gid);
    }
    const m = emp.mark();
    const contents = Array.from({ length: attempts }, (_, i) => reportingVassal('victim', report, { ATTEMPT: String(i) }));
    const result = await attack('owner-race', { vassals: ws.vassals, stash, report, name: 'race', attempts, deadlineMs: 60_000 }, 90_000);
    // The last file in place is the victim's: once it runs, every earlier read has been acted on.
    const last = createHash('sha256').update(contents[(result.attempts ?? attempts) - 1] ?? '').digest('hex');
    await waitFor(async () => {
      const v = await emp.vassal('race');
      return v.hash === last && v.state === 'running';
    }, 'the last victim file running');
    const reports = await fs.readdir(report);
    for (const r of reports) {
      const [who, uid] = r.split('.');
      if (Number(uid) !== uidOf(who)) wrongUid.push(`report ${r}: ${who}'s content ran as uid ${uid}`);
    }
    assert.deepEqual(wrongUid, [], `the owner race was won ${wrongUid.length} times`);
    // The race was run, both kinds of content ran, each as its owner.
    assert.ok((result.attempts ?? 0) >= 10, `only ${result.attempts} attempts`);
    assert.ok(reports.some((r) => r.startsWith(`attacker.${attacker.uid}.`)), `no attacker content ran: ${reports.join(' ')}`);
    assert.ok(emp.events('race', 'spawned', m).length >= 2);
  });

  it('shows FIFOs, a directory, a socket and files swapped for FIFOs as invalid, once each, and never blocks', { timeout: 120_000 }, async () => {
    const m = emp.mark();
    const { names = [] } = await attack('specials', { vassals: ws.vassals, prefix: 'sp', swaps: 24 });
    await waitFor(async () => {
      const status = await emp.status();
      return names.every((n) => /FIFO|directory|socket/.test(status.vassals.find((v) => v.name === n)?.fileError ?? ''));
    }, `${names.join(', ')} shown as invalid`);
    // Not blocked: a new file is still deployed (a FIFO opened for reading used to hang a thread
    // of libuv's pool for good, and with four of them nothing was read any more).
    const ok = path.join(ws.vassals, 'after-specials.yaml');
    await fs.writeFile(ok, reportingVassal('victim', report));
    await fs.chown(ok, victim.uid, victim.gid);
    await emp.waitEvent('after-specials', 'spawned', m, 30_000);
    for (const n of ['spfifo0', 'spfifo1', 'spfifo2', 'spdir', 'spsock']) {
      assert.equal(emp.events(n, 'invalid', m).length, 1, `${n}: ${JSON.stringify(emp.events(n, 'invalid', m))}`);
      assert.equal((await emp.vassal(n)).state, 'invalid');
    }
  });

  it('refuses a sparse 4 GiB file and a file over the cap by their size, once; parses a hostile but valid file', { timeout: 120_000 }, async () => {
    const m = emp.mark();
    const { names = [] } = await attack('sizes', { vassals: ws.vassals, prefix: 'sz', cap: MAX_VASSAL_FILE_BYTES });
    const [sparse, over, hostile] = names;
    assert.match((await emp.waitEvent(sparse!, 'invalid', m, 30_000)).message, /too large \(4294967296 bytes; the limit is 64 KiB\)/);
    assert.match((await emp.waitEvent(over!, 'invalid', m, 30_000)).message, /too large/);
    // Valid: it runs, as its owner.
    await emp.waitEvent(hostile!, 'spawned', m, 30_000);
    // A marker after a few rescans: the refused files were not reported again meanwhile.
    for (let i = 0; i < 3; i++) {
      const mark = emp.mark();
      await fs.writeFile(path.join(ws.vassals, `sz-marker${i}.yaml`), 'x');
      await emp.waitEvent(`sz-marker${i}`, 'invalid', mark, 30_000);
    }
    assert.equal(emp.events(sparse!, 'invalid', m).length, 1);
    assert.equal(emp.events(over!, 'invalid', m).length, 1);
    assert.deepEqual(wrongUid, []);
  });

  it("refuses symlinks without opening them and never quotes what they point at, even when a file flips to a link", { timeout: 120_000 }, async () => {
    const secret = path.join(ws.root, 'root-only.txt');
    const marker = `TOPSECRET${tag}`;
    await fs.writeFile(secret, `${marker}: 1\nline2: 2\n`, { mode: 0o600 });
    const m = emp.mark();
    const { names = [] } = await attack('symlinks', { vassals: ws.vassals, prefix: 'ln', secret, flips: 20 });
    const [link, flip] = names;
    const fileError = async (name: string): Promise<string> => (await emp.status()).vassals.find((v) => v.name === name)?.fileError ?? '';
    await waitFor(async () => (await fileError(link!)) !== '' && (await fileError(flip!)) !== '', `${link} and ${flip} (a link by now) refused`);
    const leaked = emp.entries.slice(m).filter((e) => JSON.stringify(e).includes(marker));
    assert.deepEqual(leaked, [], 'a log line quotes the root-only file');
    assert.ok(!JSON.stringify(await emp.status()).includes(marker), 'status quotes the root-only file');
    await waitFor(async () => /symbolic link/.test(await fileError(link!)) && /symbolic link/.test(await fileError(flip!)), 'both refused as symbolic links');
  });

  it('refuses a JSON vassal with a key given twice', async () => {
    const m = emp.mark();
    const { names = [] } = await attack('json-dup', { vassals: ws.vassals, prefix: 'js' });
    const invalid = await emp.waitEvent(names[0]!, 'invalid', m, 30_000);
    assert.match(invalid.message, /invalid JSON at line 1, column \d+: duplicate key "command"/);
    assert.equal(emp.events(names[0]!, 'spawned', m).length, 0);
  });

  it('after all that, still answers and stops cleanly on SIGTERM', { timeout: 60_000 }, async () => {
    const status = await emp.status();
    assert.ok(status.vassals.length > 10);
    const exit = await emp.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, emp.stderr);
    assert.deepEqual(wrongUid, []);
  });
});
