// The watcher in-process: settled, deduplicated file events from a real directory.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, it } from './support/test.js';
import { VassalDirWatcher, type FileVerdict } from '../src/watch/watcher.js';

type Ev = { kind: 'upsert'; file: string; verdict: FileVerdict } | { kind: 'remove'; file: string };

async function setup(opts: Partial<{ settleMs: number; invalidGraceMs: number; rescanMs: number; useEvents: boolean }> = {}) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'emperor-watch-'));
  const w = new VassalDirWatcher(dir, { settleMs: 20, invalidGraceMs: 200, rescanMs: 60_000, ...opts });
  const events: Ev[] = [];
  const waiters: Array<() => void> = [];
  const push = (e: Ev): void => {
    events.push(e);
    for (const f of waiters.splice(0)) f();
  };
  w.on('upsert', (file, verdict) => push({ kind: 'upsert', file, verdict }));
  w.on('remove', (file) => push({ kind: 'remove', file }));
  /** Resolve once `n` events have arrived in total; fail after `timeoutMs`. */
  const until = async (n: number, timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (events.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for event ${n}; got ${JSON.stringify(events.map((e) => `${e.kind} ${path.basename(e.file)}`))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };
  return { dir, w, events, until };
}

const vassal = (v: string): string => `command: [sleep, "60"]\nenv: { V: "${v}" }\n`;
let current: VassalDirWatcher | undefined;
afterEach(async () => {
  await current?.close();
});

describe('VassalDirWatcher', () => {
  it('reports files present at start, then new ones', async () => {
    const s = await setup();
    current = s.w;
    await fs.writeFile(path.join(s.dir, 'a.yaml'), vassal('a'));
    await s.w.start();
    assert.equal(s.events.length, 1);
    await fs.writeFile(path.join(s.dir, 'b.yaml'), vassal('b'));
    await s.until(2);
    assert.deepEqual(
      s.events.map((e) => [e.kind, path.basename(e.file)]),
      [
        ['upsert', 'a.yaml'],
        ['upsert', 'b.yaml'],
      ],
    );
  });

  it('chunked writes give one event with the final content; touch gives none', async () => {
    // Chunks are one write when they come within settleMs of each other: 2 s, so that the gaps
    // between these awaited writes on a busy machine stay inside it.
    const s = await setup({ settleMs: 2000 });
    current = s.w;
    await s.w.start();
    const file = path.join(s.dir, 'c.yaml');
    const fh = await fs.open(file, 'w');
    await fh.write('command: [sleep, "60"]\n');
    await fh.write('env: { V: "1" }\n');
    await fh.write('restart: never\n');
    await fh.close();
    await s.until(1);
    await fs.utimes(file, new Date(), new Date(Date.now() + 10_000));
    // A second file as a barrier: its event comes after the touch has been handled.
    await fs.writeFile(path.join(s.dir, 'z.yaml'), vassal('z'));
    await s.until(2);
    assert.equal(s.events.length, 2);
    const first = s.events[0]!;
    assert.ok(first.kind === 'upsert' && first.verdict.ok);
    assert.equal(first.verdict.spec.restart, 'never');
    assert.equal(path.basename(s.events[1]!.file), 'z.yaml');
  });

  it('a half-written invalid file is given time; a still-invalid one is reported', async () => {
    // The grace must outlast the gap between the two writes, which on a busy machine can be long.
    const s = await setup({ invalidGraceMs: 2000 });
    current = s.w;
    await s.w.start();
    const file = path.join(s.dir, 'slow.json');
    await fs.writeFile(file, '{"command": ["sleep",');
    await fs.appendFile(file, ' "60"]}');
    await s.until(1);
    const ok = s.events[0]!;
    assert.ok(ok.kind === 'upsert' && ok.verdict.ok, 'completed file is valid');
    await fs.writeFile(path.join(s.dir, 'broken.json'), '{"command": ');
    await s.until(2);
    const bad = s.events[1]!;
    assert.ok(bad.kind === 'upsert' && !bad.verdict.ok);
    assert.match(bad.verdict.error.message, /broken\.json/);
  });

  it('delete and rename', async () => {
    const s = await setup();
    current = s.w;
    await fs.writeFile(path.join(s.dir, 'x.yaml'), vassal('x'));
    await s.w.start();
    await fs.rename(path.join(s.dir, 'x.yaml'), path.join(s.dir, 'y.yaml'));
    await s.until(3);
    const kinds = s.events.slice(1).map((e) => `${e.kind}:${path.basename(e.file)}`).sort();
    assert.deepEqual(kinds, ['remove:x.yaml', 'upsert:y.yaml']);
    await fs.rm(path.join(s.dir, 'y.yaml'));
    await s.until(4);
    assert.equal(`${s.events[3]!.kind}:${path.basename(s.events[3]!.file)}`, 'remove:y.yaml');
  });

  it('rescan alone (no events) finds additions, changes and removals', async () => {
    const s = await setup({ useEvents: false, rescanMs: 50 });
    current = s.w;
    await s.w.start();
    await fs.writeFile(path.join(s.dir, 'p.yaml'), vassal('1'));
    await s.until(1);
    await fs.writeFile(path.join(s.dir, 'p.yaml'), vassal('22'));
    await s.until(2);
    await fs.rm(path.join(s.dir, 'p.yaml'));
    await s.until(3);
    assert.deepEqual(
      s.events.map((e) => e.kind),
      ['upsert', 'upsert', 'remove'],
    );
  });
});

describe('VassalDirWatcher: things that are not regular files', () => {
  it('reports a FIFO, a directory and an oversized file as invalid, once each, without blocking on the FIFO', { timeout: 15_000 }, async () => {
    const s = await setup({ invalidGraceMs: 20 });
    current = s.w;
    execFileSync('mkfifo', [path.join(s.dir, 'pipe.yaml')]);
    await fs.mkdir(path.join(s.dir, 'adir.json'));
    await s.w.start();
    await fs.writeFile(path.join(s.dir, 'big.yaml'), Buffer.alloc(64 * 1024 + 1, 0x23));
    await s.until(3);
    // Rescans look at them again; a file written after them is reported, and nothing twice.
    for (let i = 0; i < 3; i++) await s.w.rescan();
    await fs.writeFile(path.join(s.dir, 'ok.yaml'), vassal('ok'));
    await s.until(4);
    const seen = s.events.map((e) => (e.kind === 'upsert' && !e.verdict.ok ? `${path.basename(e.file)}: ${e.verdict.error.problem}` : `${e.kind} ${path.basename(e.file)}`));
    const problems = seen.slice(0, 3).sort();
    assert.match(problems[0] ?? '', /^adir\.json: is a directory, not a regular file$/);
    assert.match(problems[1] ?? '', /^big\.yaml: file is too large \(65537 bytes; the limit is 64 KiB\)$/);
    assert.match(problems[2] ?? '', /^pipe\.yaml: is a FIFO \(named pipe\), not a regular file$/);
    assert.equal(seen[3], 'upsert ok.yaml');
    assert.equal(s.events.length, 4, seen.join('\n'));
  });
});

describe('VassalDirWatcher: no settle delay for a complete file (issue 13)', () => {
  it('a file moved into place is read at once, not after the settle delay; so is a deletion', async () => {
    // Settling for an hour: only the no-delay path can report these within the wait's deadline.
    const s = await setup({ settleMs: 3_600_000 });
    current = s.w;
    await s.w.start();
    const tmp = path.join(s.dir, '.m.yaml.tmp');
    await fs.writeFile(tmp, vassal('moved'));
    await fs.rename(tmp, path.join(s.dir, 'm.yaml'));
    await s.until(1);
    const first = s.events[0]!;
    assert.ok(first.kind === 'upsert' && first.verdict.ok, JSON.stringify(first));
    assert.equal(first.verdict.spec.env.V, 'moved');
    await fs.unlink(path.join(s.dir, 'm.yaml'));
    await s.until(2);
    assert.deepEqual([s.events[1]!.kind, path.basename(s.events[1]!.file)], ['remove', 'm.yaml']);
  });

  it('a file created and then written in place is never reported half-written', async () => {
    // Its creation is read at once (it could have been moved in); the writes that follow must
    // send it down the settled path. Each writer leaves a valid first half alone for 300 ms, in
    // which the read of its creation happens (settling for 5 s: a busy machine must not stretch
    // that moment past the settle delay, which would be a torn write no watcher can see).
    const s = await setup({ settleMs: 5000 });
    current = s.w;
    await s.w.start();
    const names = Array.from({ length: 30 }, (_, i) => `w${i}.yaml`);
    await Promise.all(
      names.map(async (name) => {
        // Synchronous: the creation and the first write are both queued before the watcher's
        // thread (this one) looks, so the read of the creation sees the first half.
        const fd = openSync(path.join(s.dir, name), 'wx');
        writeSync(fd, 'command: [sleep, "60"]\n');
        await new Promise((resolve) => setTimeout(resolve, 300)); // a slow writer, not a wait for the watcher
        writeSync(fd, 'env: { V: "whole" }\n');
        closeSync(fd);
      }),
    );
    const whole = (): number => new Set(s.events.filter((e) => e.kind === 'upsert' && e.verdict.ok && e.verdict.spec.env.V === 'whole').map((e) => e.file)).size;
    while (whole() < names.length) await s.until(s.events.length + 1);
    const torn = s.events.filter((e) => e.kind === 'upsert' && e.verdict.ok && e.verdict.spec.env.V !== 'whole');
    assert.deepEqual(torn.map((e) => path.basename(e.file)), []);
  });
});

// The periodic rescan is the safety net for what inotify does not report (issue 13 made it
// cheaper: see rescan() and statLocal()). Each change below makes no event in the watched
// directory at all, so only a rescan that stats every file, following links, can find it.
describe('VassalDirWatcher: the periodic rescan finds what inotify never reports', () => {
  it('a file written in place through a shared mapping (mmap writes make no inotify event)', async () => {
    const s = await setup({ rescanMs: 100 });
    current = s.w;
    const file = path.join(s.dir, 'mapped.yaml');
    await fs.writeFile(file, vassal('1'));
    await s.w.start();
    assert.equal(s.events.length, 1);
    // Same size, other bytes: the kernel updates the file's times, but the directory's mtime and
    // the inotify watch see nothing. python3 (on every machine of this project) maps it.
    const mapWrite = 'import mmap, sys\nwith open(sys.argv[1], "r+b") as f:\n    m = mmap.mmap(f.fileno(), 0)\n    m[:] = sys.argv[2].encode()\n    m.flush()\n    m.close()\n';
    execFileSync('python3', ['-c', mapWrite, file, vassal('2')]);
    await s.until(2);
    const changed = s.events[1]!;
    assert.ok(changed.kind === 'upsert' && changed.verdict.ok, JSON.stringify(changed));
    assert.equal(changed.verdict.spec.env.V, '2');
  });

  it('a symlinked vassal file whose target is replaced outside the watched directory', async () => {
    const s = await setup({ rescanMs: 100 });
    current = s.w;
    const elsewhere = await fs.mkdtemp(path.join(os.tmpdir(), 'emperor-watch-target-'));
    try {
      const target = path.join(elsewhere, 'app.yaml');
      await fs.writeFile(target, vassal('1'));
      await fs.symlink(target, path.join(s.dir, 'app.yaml'));
      await s.w.start();
      assert.equal(s.events.length, 1);
      await fs.writeFile(path.join(elsewhere, 'next.yaml'), vassal('two'));
      await fs.rename(path.join(elsewhere, 'next.yaml'), target);
      await s.until(2);
      const changed = s.events[1]!;
      assert.ok(changed.kind === 'upsert' && changed.verdict.ok && path.basename(changed.file) === 'app.yaml', JSON.stringify(changed));
      assert.equal(changed.verdict.spec.env.V, 'two');
    } finally {
      await fs.rm(elsewhere, { recursive: true, force: true });
    }
  });
});
