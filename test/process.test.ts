// The process layer against real processes, real files and the real /proc.
import { spawn } from 'node:child_process';
import { test, type TestContext } from './support/test.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import {
  Guardian,
  MAX_LINE,
  PidRecords,
  liveGroupMembers,
  readStat,
  readStatSync,
  reapGroupAfterExit,
  setprivPath,
  spawnBackend,
  spawnVassal,
  stopGroup,
  type LeftoverReport,
  type SpawnRequest,
  type VassalProcess,
} from '../src/process/index.js';
import { LineSplitter } from '../src/process/lines.js';
import type { OutputSink, StreamName } from '../src/process/types.js';
import { VassalOutput } from '../src/output/capture.js';
import { MirrorTap } from '../src/output/mirror.js';
import { silentLogger } from '../src/log/logger.js';
import { newSpawnId, SPAWN_ID_VAR } from '../src/process/records.js';
import { fixture } from './support/paths.js';
import { readOwnCgroups, readProcs } from '../src/process/cgroupfs.js';
import { waitFor } from './support/wait.js';

// Fixtures that play the emperor import the compiled module from wherever this build lives.
const processModule = fileURLToPath(new URL('../src/process/index.js', import.meta.url));
const tree = fixture('process/tree.js');
const parentScript = fixture('process/parent.js');
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
/** Above any pid_max Linux allows, so never a live process. */
const NO_SUCH_PID = 4194304;

const gone = (pid: number): boolean => {
  const stat = readStatSync(pid);
  // A zombie is dead; an init that does not reap orphans (common in containers) keeps it listed.
  return stat === undefined || stat.state === 'Z' || stat.state === 'X';
};
const alive = (pid: number): boolean => !gone(pid);
const cmdline = (pid: number): string[] => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return [];
  }
};

interface Scratch {
  readonly dir: string;
  /** SIGKILL this group (and rm the dir) when the test ends, passed or not. */
  killGroup(pgid: number | undefined): void;
  killPid(pid: number | undefined): void;
}

function scratch(t: TestContext): Scratch {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'emperor-process-'));
  const groups = new Set<number>();
  const pids = new Set<number>();
  const kill = (target: number): void => {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  t.after(() => {
    for (const pid of pids) kill(pid);
    for (const pgid of groups) kill(-pgid);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    killGroup: (pgid) => {
      if (pgid !== undefined && pgid > 1) groups.add(pgid);
    },
    killPid: (pid) => {
      if (pid !== undefined && pid > 1) pids.add(pid);
    },
  };
}

/** Bounded await, so a broken implementation fails the test instead of hanging it. */
async function within<T>(p: Promise<T>, what: string, ms = 10000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The emperor's output path (log file, no rotation) plus, when asked, every line unthrottled. */
function logTo(file: string, onLine?: (line: string, stream: StreamName) => void): OutputSink & { out: VassalOutput } {
  const out = new VassalOutput({ name: 'v', file, policy: { maxBytes: 0, keep: 0 }, logger: silentLogger() });
  const lines = onLine ? new MirrorTap({ linesPerSec: 1e9, burst: 1e9 }, { line: onLine, suppressing: () => undefined, resumed: () => undefined }) : undefined;
  return {
    out,
    attach(streams) {
      out.attach(streams);
      for (const [stream, name] of streams) {
        stream?.on('data', (chunk: Buffer) => lines?.push(chunk, name));
        stream?.once('end', () => lines?.end(name));
      }
    },
  };
}

function start(s: Scratch, argv: readonly string[], extra: Partial<SpawnRequest> = {}): VassalProcess {
  const proc = spawnVassal({ name: 'v', argv, cwd: s.dir, env, output: logTo(path.join(s.dir, 'logs', 'v.log')), ...extra });
  s.killGroup(proc.pgid);
  return proc;
}

interface Tree {
  readonly proc: VassalProcess;
  readonly leader: number;
  readonly child: number;
  readonly lines: Array<[string, string]>;
}

/** Starts tree.js and waits until both the leader and its child are up. */
async function startTree(s: Scratch, flags: string[], withOnLine = false): Promise<Tree> {
  const lines: Array<[string, string]> = [];
  const logFile = path.join(s.dir, 'logs', 'v.log');
  const onLine = (line: string, stream: string): void => {
    lines.push([stream, line]);
  };
  const proc = start(s, [process.execPath, tree, 'leader', ...flags], withOnLine ? { output: logTo(logFile, onLine) } : {});
  assert.ok(proc.pid > 0, 'tree.js started');
  let match = null as RegExpExecArray | null;
  await waitFor(() => {
    const text = withOnLine ? lines.map(([, l]) => l).join('\n') : fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
    match = /PIDS (\d+) (\d+)/.exec(text);
    return match !== null;
  }, 'tree.js to report its pids');
  assert.ok(match);
  const [leader, child] = [Number(match[1]), Number(match[2])];
  s.killPid(child);
  return { proc, leader, child, lines };
}

async function firstJsonLine(stream: Readable): Promise<Record<string, unknown>> {
  for await (const line of readline.createInterface({ input: stream })) {
    return JSON.parse(line) as Record<string, unknown>;
  }
  throw new Error('stream ended without a line');
}

/** A pid from parent.js's report; 0 (never a process we would signal) when absent. */
const pidOf = (info: Record<string, unknown>, key: string): number => (typeof info[key] === 'number' ? info[key] : 0);

interface Exitable {
  exitCode: number | null;
  signalCode: NodeJS.Signals | null;
  once(event: 'exit', listener: () => void): unknown;
}
const exitOf = (child: Exitable): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));

/** Runs parent.js (a stand-in emperor) and returns the pids it reports. */
async function startParent(s: Scratch, mode: 'pdeathsig' | 'guardian' | 'exec-fail', parentEnv: Record<string, string> = env) {
  const parent = spawn(process.execPath, [parentScript, processModule, mode, s.dir, tree], {
    env: parentEnv,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  s.killPid(parent.pid);
  const info = await within(firstJsonLine(parent.stdout), `parent.js ${mode} to report`);
  for (const key of ['leader', 'spared', 'guardian']) s.killGroup(pidOf(info, key));
  return { parent, info };
}

// ---- exit reporting -------------------------------------------------------------------

void test('reports the exit code, leads its own group, and leaves no zombie', async (t) => {
  const s = scratch(t);
  const proc = start(s, ['/bin/sh', '-c', 'exit 7']);
  assert.ok(proc.pid > 0);
  assert.equal(proc.pgid, proc.pid);
  assert.match(proc.startTime ?? '', /^\d+$/);
  assert.deepEqual(await within(proc.exited, 'exit'), { code: 7, signal: null });
  assert.equal(fs.existsSync(`/proc/${proc.pid}`), false, 'the leader was reaped');
  assert.equal(proc.groupAlive(), false);
  assert.equal(proc.signalGroup('SIGTERM'), false);
  // Stopping an already exited vassal is a no-op, not an error or a SIGKILL.
  assert.deepEqual(await stopGroup(proc, 'SIGTERM', 1000), { forced: false, lingering: false });
});

void test('reports the signal that killed the leader', async (t) => {
  const s = scratch(t);
  const proc = start(s, ['/bin/sh', '-c', 'kill -USR1 $$']);
  assert.deepEqual(await within(proc.exited, 'exit'), { code: null, signal: 'SIGUSR1' });
});

void test('the pid is the app itself (setpriv execs) and startTime matches /proc', async (t) => {
  const s = scratch(t);
  const proc = start(s, ['sleep', '1000']);
  await waitFor(() => cmdline(proc.pid)[0] === 'sleep', 'the leader to exec sleep');
  const stat = await readStat(proc.pid);
  assert.equal(stat?.pgid, proc.pid);
  assert.equal(stat?.startTime, proc.startTime);
  assert.equal(proc.groupAlive(), true);
  assert.deepEqual(await stopGroup(proc, 'SIGTERM', 10000), { forced: false, lingering: false });
  assert.deepEqual(await proc.exited, { code: null, signal: 'SIGTERM' });
});

void test('a relative command with a slash resolves against cwd', async (t) => {
  const s = scratch(t);
  fs.writeFileSync(path.join(s.dir, 'app.sh'), '#!/bin/sh\nexit 3\n', { mode: 0o755 });
  const proc = start(s, ['./app.sh']);
  assert.deepEqual(await within(proc.exited, 'exit'), { code: 3, signal: null });
});

// ---- output -------------------------------------------------------------------------------

void test('output reaches the log file through the emperor, appended across runs', async (t) => {
  const s = scratch(t);
  const logFile = path.join(s.dir, 'new', 'dir', 'v.log');
  const sink = logTo(logFile);
  const proc = start(s, ['/bin/sh', '-c', 'echo out; echo err >&2'], { output: sink });
  // The child's stdout and stderr lead to the emperor (libuv uses socketpairs), never to the file.
  const fds = ['1', '2'].map((fd) => {
    try {
      return fs.readlinkSync(`/proc/${proc.pid}/fd/${fd}`);
    } catch {
      return 'pipe:gone';
    }
  });
  for (const target of fds) assert.match(target, /^(pipe|socket):/);
  await within(proc.exited, 'exit');
  await waitFor(() => fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').length === 8, 'both lines in the log');
  assert.deepEqual(fs.readFileSync(logFile, 'utf8').split('\n').sort(), ['', 'err', 'out']);
  assert.equal(fs.statSync(logFile).mode & 0o777, 0o640, 'logs are not world-readable');

  const again = start(s, ['/bin/sh', '-c', 'echo second'], { output: sink });
  await within(again.exited, 'exit');
  await waitFor(() => fs.readFileSync(logFile, 'utf8').endsWith('second\n'), 'the second run appended');
  assert.equal(fs.readFileSync(logFile, 'utf8').length, 'out\nerr\nsecond\n'.length);
});

void test('mirrored lines: stdout and stderr, capped; the log file gets every byte', async (t) => {
  const s = scratch(t);
  const logFile = path.join(s.dir, 'v.log');
  const lines: Array<[string, string]> = [];
  const proc = start(s, [process.execPath, fixture('process/output.js')], { output: logTo(logFile, (line, stream) => lines.push([stream, line])) });
  assert.deepEqual(await within(proc.exited, 'exit'), { code: 0, signal: null });
  await waitFor(() => lines.some(([, l]) => l === 'tail without newline'), 'the trailing partial line');

  const of = (stream: string): string[] => lines.filter(([st]) => st === stream).map(([, l]) => l);
  const x = 'x'.repeat(40000);
  assert.deepEqual(of('stderr'), ['err one']);
  assert.deepEqual(of('stdout'), [
    'out one',
    'héllo',
    x.slice(0, MAX_LINE),
    x.slice(MAX_LINE, 2 * MAX_LINE),
    x.slice(2 * MAX_LINE),
    'tail without newline',
  ]);

  const stdoutBytes = `out one\nhéllo\n${x}\ntail without newline`;
  const expectedSize = Buffer.byteLength(stdoutBytes) + Buffer.byteLength('err one\r\n');
  // The sink may not have created the file yet: a missing file is "not yet", not an error.
  await waitFor(() => fs.existsSync(logFile) && fs.statSync(logFile).size === expectedSize, 'the log file to receive all output');
  // stdout and stderr are separate pipes, so only the order within each is defined: the stderr
  // chunk may even land between the two bytes of "é". Hence bytes, not text.
  const content = fs.readFileSync(logFile);
  const at = content.indexOf('err one\r\n');
  assert.ok(at >= 0, 'the stderr line is in the log file');
  const withoutStderr = Buffer.concat([content.subarray(0, at), content.subarray(at + 'err one\r\n'.length)]);
  assert.ok(withoutStderr.equals(Buffer.from(stdoutBytes)), 'the stdout bytes are in the log file, in order');
});

void test('LineSplitter: chunk boundaries, CRLF, multi-byte characters, cap, trailing line', () => {
  const out: string[] = [];
  const split = new LineSplitter((l) => out.push(l), 4);
  split.push(Buffer.from('ab\r'));
  split.push(Buffer.from('\ncd'));
  const e = Buffer.from('é');
  split.push(Buffer.concat([Buffer.from('\n'), e.subarray(0, 1)]));
  split.push(Buffer.concat([e.subarray(1), Buffer.from('\n0123456789\n\nxyz')]));
  assert.deepEqual(out, ['ab', 'cd', 'é', '0123', '4567', '89', '']);
  split.end();
  assert.deepEqual(out.slice(-1), ['xyz']);
});

// ---- not starting ---------------------------------------------------------------------------

void test('a missing command, a missing cwd or a non-executable file give an error without spawning', async (t) => {
  const s = scratch(t);
  const logFile = path.join(s.dir, 'never.log');
  const cases: Array<[Partial<SpawnRequest>, RegExp]> = [
    [{ argv: ['no-such-command-xyz'] }, /^command not found: no-such-command-xyz \(searched PATH\)$/],
    [{ argv: ['./missing.sh'] }, /^command not found: .*\/missing\.sh$/],
    [{ argv: ['sleep', '1'], cwd: path.join(s.dir, 'nope') }, /^working directory does not exist: .*\/nope$/],
    [{ argv: ['./data.txt'] }, /^not an executable file: .*\/data\.txt$/],
    [{ argv: [] }, /^empty command line$/],
  ];
  fs.writeFileSync(path.join(s.dir, 'data.txt'), 'not a program\n', { mode: 0o644 });
  for (const [req, error] of cases) {
    const proc = start(s, req.argv ?? [], { ...req, output: logTo(logFile) });
    assert.equal(proc.pid, 0);
    assert.equal(proc.startTime, undefined);
    const info = await within(proc.exited, 'exited of a vassal that never started');
    assert.equal(info.code, null);
    assert.equal(info.signal, null);
    assert.match(info.error ?? '', error);
    assert.equal(proc.groupAlive(), false);
    assert.equal(proc.signalGroup('SIGKILL'), false, 'pid 0 must never turn into kill(0)');
  }
  assert.equal(fs.existsSync(logFile), false, 'nothing was started, so no log file either');
});

void test('an exec that fails after the checks: exited carries the error, or setpriv exits 127', async (t) => {
  const s = scratch(t);
  // The native start reports a failed exec as the spawn's error, whatever PATH holds: no setpriv
  // stands between it and the app unless it switches users.
  for (const PATH of [path.join(s.dir, 'empty-path'), env.PATH]) {
    const native = (await startParent(s, 'exec-fail', { PATH })).info;
    assert.equal(native.pid, 0);
    assert.equal(native.code, null);
    assert.match(String(native.error), /^spawn failed: spawn \S+\/bad\.sh ENOENT/);
  }
  // child_process without setpriv: Node spawns the file itself and reports an 'error' event.
  const direct = (await startParent(s, 'exec-fail', { PATH: path.join(s.dir, 'empty-path'), EMPEROR_SPAWN: 'fork' })).info;
  assert.equal(direct.pid, 0);
  assert.equal(direct.code, null);
  assert.match(String(direct.error), /^spawn failed: .*ENOENT/);
  if (setprivPath() === undefined) return;
  // child_process through setpriv: the fork succeeded, so it is an ordinary exit, with setpriv's reason in the log.
  const viaSetpriv = (await startParent(s, 'exec-fail', { ...env, EMPEROR_SPAWN: 'fork' })).info;
  assert.ok(pidOf(viaSetpriv, 'pid') > 0);
  assert.equal(viaSetpriv.code, 127);
  assert.equal(viaSetpriv.error, undefined);
  assert.match(fs.readFileSync(path.join(s.dir, 'bad.log'), 'utf8'), /failed to execute/);
});

// ---- how the child is set up: posix_spawn (the addon) and child_process alike --------------

/** What a vassal sees of its own set-up, as one line per fact, printed by the shell it runs. */
const SELF_REPORT = [
  'echo "cwd=$(pwd) arg0=$0 args=$*"',
  // Dispositions and mask: Node ignores SIGPIPE itself; a vassal must start with all defaults.
  // Read by the shell itself, not by a command it forks: dash blocks every signal around its
  // vfork until the child has exec'd, so a grep of the shell's status can catch that moment
  // (one run in four under load, either backend).
  'while IFS= read -r l; do case $l in SigIgn*|SigBlk*) echo "$l";; esac; done < /proc/$$/status',
  // Session and group: fields 5 and 6 of stat, after the command name; each vassal leads both.
  'set -- $(sed "s/.*) //" /proc/$$/stat); echo "pid=$$ pgid=$3 sid=$4"',
  // Every fd the shell holds: 0-4 as asked (dash keeps its own at 10 and up), none of the emperor's.
  'ls /proc/$$/fd > fds.txt; echo "fds=$(sort -n fds.txt | tr "\\n" " ")"',
  'echo "held=$(for f in /proc/$$/fd/*; do readlink "$f"; done | grep -c /held)"',
  'for fd in 0 1 2 3 4; do echo "fd$fd=$(readlink /proc/$$/fd/$fd | cut -d: -f1)"; done',
  'env | grep -v -E "^(PWD|SHLVL|_)=" | sort | tr "\\n" " "; echo',
  'echo END',
].join('; ');

async function selfReport(s: Scratch, backend: 'posix_spawn' | 'fork'): Promise<string> {
  const before = process.env.EMPEROR_SPAWN;
  if (backend === 'fork') process.env.EMPEROR_SPAWN = 'fork';
  else delete process.env.EMPEROR_SPAWN;
  try {
    assert.equal(spawnBackend().backend, backend);
    const logFile = path.join(s.dir, `${backend}.log`);
    const sink = logTo(logFile);
    const proc = start(s, ['sh', '-c', SELF_REPORT, 'zero', 'one', 'two'], { output: sink, notify: true, env: { ...env, EXTRA: 'a b' } });
    assert.deepEqual(await within(proc.exited, 'exit'), { code: 0, signal: null });
    await waitFor(() => fs.existsSync(logFile) && /^END$/m.test(fs.readFileSync(logFile, 'utf8')), 'the last line in the log');
    return fs.readFileSync(logFile, 'utf8').replaceAll(String(proc.pid), 'PID');
  } finally {
    if (before === undefined) delete process.env.EMPEROR_SPAWN;
    else process.env.EMPEROR_SPAWN = before;
  }
}

void test('vassals start through posix_spawn, set up exactly as child_process sets them up', async (t) => {
  const s = scratch(t);
  // The addon is built by `npm run build`; without it starts would silently fork again (issue 13).
  assert.deepEqual(spawnBackend(), { backend: 'posix_spawn' });
  // Descriptors the emperor holds open must not reach the child.
  const held = fs.openSync(path.join(s.dir, 'held'), 'w');
  t.after(() => fs.closeSync(held));
  const native = await selfReport(s, 'posix_spawn');
  const forked = await selfReport(s, 'fork');
  assert.equal(native, forked);
  assert.match(native, /^SigIgn:\s+0+$/m);
  assert.match(native, /^SigBlk:\s+0+$/m);
  assert.match(native, /^pid=PID pgid=PID sid=PID$/m);
  assert.match(native, /^fds=0 1 2 3 4 (1\d|[2-9]\d|\d{3,}| )*$/m);
  assert.match(native, /^held=0$/m);
  assert.match(native, /^fd0=\/dev\/null$/m);
  for (const fd of [1, 2, 3, 4]) assert.match(native, new RegExp(`^fd${fd}=socket$`, 'm'));
  assert.match(native, new RegExp(`^cwd=${s.dir} arg0=zero args=one two$`, 'm'));
  assert.match(native, /^EXTRA=a b PATH=\S+ $/m);
});

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

void test('a quiet running vassal holds three of the emperor\'s descriptors (stdout, stderr, fd 3), none once reaped', async (t) => {
  const s = scratch(t);
  const n = 20;
  // Starts are synchronous: nothing else in this process opens or closes a descriptor between
  // the two counts. The log file is opened only once the app writes (sleep never does). A first
  // start opens what the emperor keeps open for all starts (its /proc/self/limits reader).
  const first = start(s, ['/bin/true']);
  assert.deepEqual(await within(first.exited, 'exit'), { code: 0, signal: null });
  const before = openFds();
  const procs = Array.from({ length: n }, () => start(s, ['sleep', '1000']));
  const held = openFds() - before;
  assert.ok(procs.every((p) => p.pid > 0));
  // 4 per vassal with a pidfd each: 5,000 vassals did not fit in a 20,000 open-files limit.
  assert.equal(held, 3 * n, `descriptors held for ${n} vassals`);
  for (const p of procs) p.signalGroup('SIGKILL');
  for (const p of procs) assert.deepEqual(await within(p.exited, 'exit'), { code: null, signal: 'SIGKILL' });
  await waitFor(() => openFds() <= before, 'every pipe of the reaped vassals closed');
  for (const p of procs) assert.equal(fs.existsSync(`/proc/${p.pid}`), false, 'reaped, not a zombie');
});

void test('native exits and child_process exits at the same moments: each is reported to its own owner, with its code', async (t) => {
  const s = scratch(t);
  // Both reap on SIGCHLD in this process: neither may take the other's children. A reaper that
  // took any exited child would leave child_process waiting forever for its 'exit'.
  for (let round = 0; round < 10; round++) {
    const waits: Array<Promise<unknown>> = [];
    for (let i = 0; i < 10; i++) {
      const c = spawn('/bin/sh', ['-c', `exit ${i + 1}`], { stdio: 'ignore' });
      waits.push(within(new Promise((resolve) => c.once('exit', (code) => resolve(code))), 'a child_process exit').then((code) => assert.equal(code, i + 1)));
      const p = start(s, ['/bin/sh', '-c', `exit ${i + 20}`]);
      waits.push(within(p.exited, 'a native exit').then((info) => assert.deepEqual(info, { code: i + 20, signal: null })));
    }
    await Promise.all(waits);
  }
});

void test('native start: a cgroup it cannot join or an fd limit it cannot set is the start\'s error; nothing runs', async (t) => {
  const s = scratch(t);
  const marker = path.join(s.dir, 'ran');
  const argv = ['/bin/sh', '-c', `touch ${marker}`];
  const unjoinable = start(s, argv, { placement: { procsFiles: [path.join(s.dir, 'no-cgroup', 'cgroup.procs')], cgroup: undefined, oomKills: () => undefined } });
  assert.equal(unjoinable.pid, 0);
  assert.match(String((await within(unjoinable.exited, 'exit')).error), /^spawn failed: cannot move into cgroup: \S+\/no-cgroup\/cgroup\.procs: No such file or directory \(ENOENT\)$/);
  // Above the hard limit an unprivileged process may not go; root may, up to nr_open.
  const tooMany = start(s, argv, { openFiles: 2 ** 40 });
  assert.equal(tooMany.pid, 0);
  assert.match(String((await within(tooMany.exited, 'exit')).error), /^spawn failed: cannot set open_files to 1099511627776: .* \((EPERM|EINVAL)\)$/);
  assert.equal(fs.existsSync(marker), false, 'the app never ran');
  // And the same limit within reach is what the app gets.
  const fine = start(s, ['/bin/sh', '-c', 'grep "Max open files" /proc/$$/limits'], { openFiles: 321, output: logTo(path.join(s.dir, 'ok.log')) });
  assert.deepEqual(await within(fine.exited, 'exit'), { code: 0, signal: null });
  await waitFor(() => fs.existsSync(path.join(s.dir, 'ok.log')) && /321\s+321/.test(fs.readFileSync(path.join(s.dir, 'ok.log'), 'utf8')), 'the limit in the log');
});

// ---- stopping -------------------------------------------------------------------------------

void test('stopGroup reaches a grandchild', async (t) => {
  const s = scratch(t);
  const { proc, leader, child } = await startTree(s, []);
  assert.equal(leader, proc.pid);
  assert.equal(readStatSync(child)?.pgid, proc.pgid, 'the grandchild is in the vassal group');
  assert.deepEqual(await stopGroup(proc, 'SIGTERM', 10000), { forced: false, lingering: false });
  assert.deepEqual(await proc.exited, { code: null, signal: 'SIGTERM' });
  assert.ok(gone(leader) && gone(child), 'leader and grandchild are gone');
  assert.equal(proc.groupAlive(), false);
});

void test('stopGroup escalates to SIGKILL when the leader traps SIGTERM', async (t) => {
  const s = scratch(t);
  const { proc, child } = await startTree(s, ['--leader-trap-term']);
  assert.deepEqual(await stopGroup(proc, 'SIGTERM', 300), { forced: true, lingering: false });
  assert.deepEqual(await proc.exited, { code: null, signal: 'SIGKILL' });
  assert.ok(gone(proc.pid) && gone(child));
});

void test('stopGroup escalates to SIGKILL for a grandchild that ignores SIGTERM after the leader exits', async (t) => {
  const s = scratch(t);
  const { proc, child } = await startTree(s, ['--child-ignore-term']);
  assert.deepEqual(await stopGroup(proc, 'SIGTERM', 300), { forced: true, lingering: false });
  // The leader went with the SIGTERM; only the grandchild needed the SIGKILL.
  assert.deepEqual(await proc.exited, { code: null, signal: 'SIGTERM' });
  assert.ok(gone(child), 'the grandchild is gone');
});

void test('reapGroupAfterExit kills an orphaned grandchild', async (t) => {
  const s = scratch(t);
  const { proc, child } = await startTree(s, ['--leader-exit']);
  assert.deepEqual(await within(proc.exited, 'leader exit'), { code: 0, signal: null });
  assert.ok(alive(child), 'the grandchild outlived its leader');
  assert.equal(proc.groupAlive(), true);
  assert.deepEqual(await reapGroupAfterExit(proc), { killed: true, lingering: false });
  assert.ok(gone(child), 'the grandchild is gone');
  assert.equal(proc.groupAlive(), false);
  assert.deepEqual(await reapGroupAfterExit(proc), { killed: false, lingering: false });
});

void test('exited resolves on the leader exit while a grandchild keeps the stdout pipe open (onLine)', async (t) => {
  const s = scratch(t);
  const { proc, child, lines } = await startTree(s, ['--leader-exit'], true);
  assert.deepEqual(await within(proc.exited, 'leader exit despite the open pipe'), { code: 0, signal: null });
  assert.ok(alive(child));
  assert.match(fs.readlinkSync(`/proc/${child}/fd/1`), /^(pipe|socket):/, 'the grandchild still holds the stdout pipe');
  assert.ok(lines.some(([stream, l]) => stream === 'stdout' && l.startsWith('PIDS ')));
  await reapGroupAfterExit(proc);
  assert.ok(gone(child));
});

// ---- an emperor that dies by SIGKILL ----------------------------------------------------

/** Starts parent.js in pdeathsig mode, waits until its vassal runs the app, SIGKILLs the parent. */
async function orphanLeader(s: Scratch, parentEnv: Record<string, string>): Promise<number> {
  const { parent, info } = await startParent(s, 'pdeathsig', parentEnv);
  const leader = pidOf(info, 'leader');
  assert.ok(leader > 0);
  // The start returns once the child has begun its exec (or setpriv has); the app's argv shows
  // a moment later, and only then is the parent-death signal certainly armed.
  await waitFor(() => cmdline(leader)[0] === process.execPath, 'the app to be exec\'d');
  parent.kill('SIGKILL');
  await within(exitOf(parent), 'parent exit');
  return leader;
}

void test('pdeathsig: the vassal leader dies with its SIGKILLed parent, with or without setpriv on PATH', async (t) => {
  const s = scratch(t);
  // The native start arms the parent-death signal in the child itself, before it execs the app.
  for (const PATH of [env.PATH, path.join(s.dir, 'empty-path')]) {
    const leader = await orphanLeader(s, { PATH });
    await waitFor(() => gone(leader), 'the vassal leader to die with its parent');
  }
});

void test('pdeathsig with child_process: through setpriv; without it on PATH the vassal still starts, unprotected', async (t) => {
  const s = scratch(t);
  if (setprivPath() !== undefined) {
    const leader = await orphanLeader(s, { ...env, EMPEROR_SPAWN: 'fork' });
    await waitFor(() => gone(leader), 'the vassal leader to die with its parent');
  }
  const leader = await orphanLeader(s, { PATH: path.join(s.dir, 'empty-path'), EMPEROR_SPAWN: 'fork' });
  // A parent-death signal is sent before the parent can be reaped, so it would be visible now.
  const status = fs.readFileSync(`/proc/${leader}/status`, 'utf8');
  const pending = [...status.matchAll(/^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/gm)].reduce((acc, m) => acc | BigInt(`0x${m[1]}`), 0n);
  assert.ok(alive(leader), 'the leader survives its parent');
  assert.equal(pending & (1n << 8n), 0n, 'no SIGKILL pending');
});

void test('guardian: a SIGKILLed emperor takes the grandchildren down too, and only listed groups', async (t) => {
  const s = scratch(t);
  const { parent, info } = await startParent(s, 'guardian');
  const [child, spared, guardian] = [pidOf(info, 'child'), pidOf(info, 'spared'), pidOf(info, 'guardian')];
  assert.ok(child && spared && guardian, 'parent.js reported child, spared and guardian pids');
  assert.ok(alive(child) && alive(spared) && alive(guardian));
  parent.kill('SIGKILL');
  await within(exitOf(parent), 'parent exit');
  await waitFor(() => gone(child), 'the guardian to kill the grandchild');
  await waitFor(() => gone(guardian), 'the guardian to exit');
  // The guardian is done, so this is final: a group removed from its list is left alone.
  assert.ok(alive(spared), 'the removed group was spared');
});

void test('guardian: close() (quit) leaves listed groups alone', async (t) => {
  const s = scratch(t);
  const guardian = new Guardian();
  guardian.start();
  const gpid = guardian.pid ?? 0;
  s.killGroup(gpid);
  assert.ok(gpid > 0 && alive(gpid));
  const proc = start(s, ['sleep', '1000']);
  guardian.add(proc.pgid);
  await within(guardian.close(), 'guardian close');
  assert.equal(fs.existsSync(`/proc/${gpid}`), false, 'the guardian exited and was reaped');
  assert.equal(guardian.pid, undefined);
  assert.equal(proc.groupAlive(), true, 'the listed group still runs');
  assert.deepEqual(await stopGroup(proc, 'SIGTERM', 10000), { forced: false, lingering: false });
});

void test('guardian: its death does not hurt the emperor, and it is replaced on the next add', async (t) => {
  const s = scratch(t);
  const guardian = new Guardian();
  guardian.start();
  const first = guardian.pid ?? 0;
  s.killGroup(first);
  assert.ok(first > 0);
  guardian.add(NO_SUCH_PID - 1);
  process.kill(first, 'SIGKILL');
  // Spin without yielding, so Node cannot reap it yet: the write below must then hit EPIPE.
  const deadline = Date.now() + 5000;
  while (readStatSync(first)?.state !== 'Z' && Date.now() < deadline);
  assert.equal(readStatSync(first)?.state, 'Z');
  guardian.remove(NO_SUCH_PID - 1);
  await waitFor(() => guardian.pid === undefined, 'the emperor to notice the guardian exit');
  guardian.add(NO_SUCH_PID - 2);
  const second = guardian.pid ?? 0;
  s.killGroup(second);
  assert.ok(second > 0 && second !== first && alive(second), 'a new guardian runs');
  await within(guardian.close(), 'guardian close');
  assert.ok(gone(second));
});

/** Centiseconds of /proc/uptime from now: the clock of the guardian's fence deadline. */
const uptimeIn = (cs: number): number => Math.round(Number(fs.readFileSync('/proc/uptime', 'latin1').split(' ')[0]) * 100) + cs;

/** Spin without yielding, so nothing queued for a later turn (a batched write, a reap) can happen. */
const spinUntil = (done: () => boolean, ms: number): boolean => {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline);
  return done();
};

void test('guardian: a fleet instance is known to it as soon as addFenced returns, and killed at the deadline', async (t) => {
  const s = scratch(t);
  const guardian = new Guardian();
  guardian.start();
  s.killGroup(guardian.pid);
  t.after(() => guardian.close());
  guardian.setFenceDeadline(uptimeIn(20));
  await new Promise((resolve) => setImmediate(resolve));
  const fenced = start(s, ['sleep', '1000']);
  const spared = start(s, ['sleep', '1000']);
  guardian.add(spared.pgid);
  guardian.addFenced(fenced.pgid, null);
  // An emperor frozen right after the spawn never runs another turn: the line must be out already.
  assert.ok(spinUntil(() => readStatSync(fenced.pid)?.state === 'Z', 10_000), 'the guardian killed the instance while the event loop was blocked');
  assert.deepEqual(await within(fenced.exited, 'exit'), { code: null, signal: 'SIGKILL' });
  assert.ok(spared.groupAlive(), 'a vassal that is not a fleet instance is left alone');
});

void test('guardian: a fleet start announced by its cgroup is fenced even if its pid never reaches the guardian', async (t) => {
  const s = scratch(t);
  const own = readOwnCgroups().v2;
  assert.ok(own !== undefined, 'a cgroup2 hierarchy (the product runs as root with cgroups)');
  const dir = fs.mkdtempSync(path.join(own, 'emperor-test-fence-'));
  assert.ok(fs.existsSync(path.join(dir, 'cgroup.kill')), `${dir} has cgroup.kill (kernel 5.14 or later)`);
  const guardian = new Guardian();
  guardian.start();
  s.killGroup(guardian.pid);
  t.after(async () => {
    await guardian.close();
    await waitFor(() => readProcs(dir).length === 0, 'the test cgroup to empty');
    fs.rmdirSync(dir);
  });
  guardian.expectFenced(dir);
  // Joins the cgroup before exec, as a fleet instance does; the emperor is "frozen" before addFenced.
  const proc = start(s, ['sleep', '1000'], { placement: { procsFiles: [path.join(dir, 'cgroup.procs')], cgroup: undefined, oomKills: () => undefined } });
  assert.deepEqual(readProcs(dir), [proc.pid]);
  guardian.setFenceDeadline(uptimeIn(20));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(await within(proc.exited, 'the guardian to kill the announced cgroup at the deadline'), { code: null, signal: 'SIGKILL' });
  // A start that failed is forgotten: nothing of it is killed at a later deadline.
  guardian.unexpectFenced(dir);
  const later = start(s, ['sleep', '1000'], { placement: { procsFiles: [path.join(dir, 'cgroup.procs')], cgroup: undefined, oomKills: () => undefined } });
  const witness = start(s, ['sleep', '1000']);
  guardian.addFenced(witness.pgid, null);
  guardian.setFenceDeadline(uptimeIn(0));
  assert.deepEqual(await within(witness.exited, 'the fence to run again'), { code: null, signal: 'SIGKILL' });
  assert.ok(later.groupAlive(), 'the cgroup of the forgotten announcement was left alone');
  assert.deepEqual(await stopGroup(later, 'SIGTERM', 10000), { forced: false, lingering: false });
});

// ---- pid records ------------------------------------------------------------------------

void test('PidRecords: write, list and remove, atomically', async (t) => {
  const s = scratch(t);
  const records = new PidRecords(path.join(s.dir, 'state', 'pids'));
  assert.deepEqual(await records.list(), []);
  await records.write('web', { pid: 10, pgid: 10, startTime: '123', argv: ['node', 'app.js'], emperorPid: 5 });
  await records.write('odd/name', { pid: 11, pgid: 11, startTime: undefined, argv: [], emperorPid: 5 });
  await records.write('web', { pid: 12, pgid: 12, startTime: '456', argv: ['node'], emperorPid: 5 });
  const listed = (await records.list()).sort((a, b) => a.name.localeCompare(b.name));
  assert.deepEqual(
    listed.map(({ name, pid, startTime, argv }) => ({ name, pid, startTime, argv })),
    [
      { name: 'odd/name', pid: 11, startTime: undefined, argv: [] },
      { name: 'web', pid: 12, startTime: '456', argv: ['node'] },
    ],
  );
  assert.ok(fs.readdirSync(records.dir).every((f) => f.endsWith('.json')), 'no temp files left');
  await records.remove('web');
  await records.remove('web');
  assert.deepEqual((await records.list()).map((r) => r.name), ['odd/name']);
});

void test('reapLeftovers kills a recorded live group and spares recycled or unverifiable ids', async (t) => {
  const s = scratch(t);
  const records = new PidRecords(path.join(s.dir, 'pids'));
  // Every process of a vassal starts with its spawn id in the environment; the bystander has another.
  const spawnId = newSpawnId();
  const spawnGroup = (script: string, id: string) => {
    const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', [SPAWN_ID_VAR]: id } });
    s.killGroup(child.pid);
    return child.pid ?? 0;
  };
  const victim = spawnGroup('sleep 1000 & exec sleep 1000', spawnId);
  const bystander = spawnGroup('exec sleep 1000', newSpawnId());
  await waitFor(() => liveGroupMembers(victim).length === 2, 'the victim group to have two processes');
  const victimStart = readStatSync(victim)?.startTime ?? '';
  const bystanderStart = readStatSync(bystander)?.startTime ?? '';
  const victims = liveGroupMembers(victim);

  const rec = { argv: ['sleep'], emperorPid: NO_SUCH_PID, spawnId };
  await records.write('victim', { ...rec, pid: victim, pgid: victim, startTime: victimStart });
  // Same pid, other start time: the id now belongs to someone else.
  await records.write('reused', { ...rec, pid: bystander, pgid: bystander, startTime: String(BigInt(bystanderStart) - 1n) });
  await records.write('no-start', { ...rec, pid: bystander, pgid: bystander, startTime: undefined });
  await records.write('nothing-left', { ...rec, pid: NO_SUCH_PID - 3, pgid: NO_SUCH_PID - 3, startTime: '1' });
  // Right pid and start time, but from another boot, where start times mean something else.
  const oldBoot = { ...rec, pid: bystander, pgid: bystander, startTime: bystanderStart, bootId: 'another-boot' };
  fs.writeFileSync(path.join(records.dir, 'old-boot.json'), JSON.stringify(oldBoot), { mode: 0o600 });
  // Right pid and start time, but the bystander was not started with this spawn id.
  await records.write('stranger', { ...rec, pid: bystander, pgid: bystander, startTime: bystanderStart });
  // Right everything, but from a record that predates spawn ids.
  await records.write('no-id', { ...rec, pid: bystander, pgid: bystander, startTime: bystanderStart, spawnId: undefined });
  fs.writeFileSync(path.join(records.dir, 'garbage.json'), '{not json');
  fs.writeFileSync(path.join(records.dir, '.victim.1.1.tmp'), '{');

  const skipped: LeftoverReport[] = [];
  const report = await within(records.reapLeftovers((r) => skipped.push(r)), 'reapLeftovers');
  assert.deepEqual(report, [{ name: 'victim', pid: victim, pgid: victim, killed: 2, reason: `its process group ${victim} was still running` }]);
  const reasons = Object.fromEntries(skipped.map((r) => [r.name, r.reason]));
  assert.deepEqual(Object.keys(reasons).sort(), ['no-id', 'no-start', 'nothing-left', 'old-boot', 'reused', 'stranger']);
  assert.ok(skipped.every((r) => r.killed === 0));
  assert.match(reasons.reused ?? '', /reused/);
  assert.match(reasons['no-start'] ?? '', /no start time/);
  assert.match(reasons['old-boot'] ?? '', /reboot/);
  assert.match(reasons['nothing-left'] ?? '', /nothing/);
  assert.match(reasons.stranger ?? '', /nothing/);
  assert.match(reasons['no-id'] ?? '', /no spawn id/);

  assert.ok(victims.every(gone), 'every process of the recorded group is gone');
  assert.ok(alive(bystander), 'the process behind mismatched records is untouched');
  assert.deepEqual(fs.readdirSync(records.dir), [], 'all records, junk included, are deleted');
});
