// The machine's floor: what a bare spawner needs to start processes on this machine, in this
// run. Not a supervisor and never a target: a figure that sits below every supervisor's, shown
// beside the emperor's so that a target the machine cannot reach reads as such.
//
// The spawner is one python3 process (FLOOR_LAUNCHER) that posix_spawns a command for every name
// it reads on stdin (glibc's posix_spawn is a vfork-style clone, no page tables copied: the
// cheapest start there is; it returns once the child has exec'd) and does nothing else: no files
// read, no logs, no process groups, no records. Section `peers` feeds it one app at a time;
// `core` and `scale` hand it a whole burst (burstFloor below).
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import readline from 'node:readline';
import { addCleanup } from './harness.js';
import type { Row, RowStatus } from './types.js';
import { fmtMs, readStat, which, withTimeout } from './util.js';

/**
 * argv: the program's path, then its argv; an argument `{}` is replaced by the name. stdin: one
 * line of words at a time; a word NAME spawns the command for NAME, `-NAME` sends SIGTERM to it.
 * stdout: `ready` once started, then one line per input line, `T_READ T_DONE SPAWNED`: the
 * CLOCK_MONOTONIC ns when the line was read and when the last of its posix_spawn calls returned.
 * End of stdin or SIGTERM: SIGKILL every child, wait until the kernel has reaped them all, exit.
 *
 * Children are reaped only between lines (and at the end), so a pid in `pids` always belongs to
 * a child of ours, alive or a zombie, never to a recycled pid. At the end the children are found
 * in /proc (ppid), not in `pids`: a SIGTERM can land between a posix_spawn and its bookkeeping.
 */
const FLOOR_LAUNCHER = `
import os, signal, sys, time
prog, argv, me = sys.argv[1], sys.argv[2:], os.getpid()
pids, names = {}, {}
def reap():
    while True:
        try: pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError: return
        if pid == 0: return
        pids.pop(names.pop(pid, None), None)
def finish(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            with open('/proc/' + p + '/stat') as f: ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            if ppid == me: os.kill(int(p), signal.SIGKILL)
        except (OSError, ValueError, IndexError): pass
    try:
        while True: os.wait()
    except ChildProcessError: pass
    os._exit(0)
signal.signal(signal.SIGTERM, finish)
print('ready', flush=True)
for line in sys.stdin:
    t_read, n = time.monotonic_ns(), 0
    for w in line.split():
        if w.startswith('-'):
            p = pids.pop(w[1:], None)
            if p is not None: os.kill(p, signal.SIGTERM)
        else:
            p = os.posix_spawn(prog, [w if a == '{}' else a for a in argv], os.environ)
            pids[w], names[p], n = p, w, n + 1
    print(t_read, time.monotonic_ns(), n, flush=True)
    reap()
finish()
`;

/** What the spawner reports for one line it was sent. */
export interface SpawnReport {
  /** CLOCK_MONOTONIC ns (comparable with process.hrtime.bigint()) when it read the line. */
  readonly readNs: bigint;
  /** ... and when the last posix_spawn of that line returned (that child exists and has exec'd). */
  readonly doneNs: bigint;
  readonly spawned: number;
}

/**
 * One floor spawner. It runs in a process group (and session) of its own, which its children
 * inherit: leftovers() finds everything it started, and a stop that times out SIGKILLs the group.
 */
export class FloorSpawner {
  private readonly reports: SpawnReport[] = [];
  private waiters: Array<() => void> = [];
  private readonly dispose: () => Promise<void>;
  private readonly ready: Promise<void>;
  readonly pid: number;

  private constructor(private readonly child: ChildProcess) {
    this.pid = child.pid!;
    this.dispose = addCleanup(`floor spawner ${this.pid}`, () => this.kill());
    // A write to a spawner that died fails the write's callback; the stream must not throw too.
    child.stdin!.on('error', () => undefined);
    let ready!: () => void;
    this.ready = new Promise((resolve) => (ready = resolve));
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const [a, b, n] = line.trim().split(' ');
      if (a === 'ready') return ready();
      this.reports.push({ readNs: BigInt(a!), doneNs: BigInt(b!), spawned: Number(n) });
      for (const w of this.waiters.splice(0)) w();
    });
    child.once('exit', () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Why the floor cannot run here, or undefined. */
  static missing(): string | undefined {
    return which('python3') ? undefined : 'python3 not installed';
  }

  /**
   * Start a spawner for `prog argv...` and wait until it is ready to read names (python3 alone
   * takes seconds to start on a busy machine: that is not part of any figure).
   */
  static async start(prog: string, argv: readonly string[]): Promise<FloorSpawner> {
    const python = which('python3');
    if (!python) throw new Error('python3 not installed');
    const child = spawn(python, ['-u', '-c', FLOOR_LAUNCHER, prog, ...argv], { stdio: ['pipe', 'pipe', 'inherit'], detached: true });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    const s = new FloorSpawner(child);
    const died = new Promise<never>((_, reject) => child.once('exit', (code, signal) => reject(new Error(`floor spawner exited (${signal ?? code}) before it was ready`))));
    died.catch(() => undefined);
    try {
      await withTimeout(Promise.race([s.ready, died]), 60_000, 'floor spawner to start');
    } catch (err) {
      await s.stop();
      throw err;
    }
    return s;
  }

  /** Hand it one line of words (NAME spawns, -NAME kills); resolves once written. */
  send(words: readonly string[]): Promise<void> {
    return new Promise((resolve, reject) => this.child.stdin!.write(`${words.join(' ')}\n`, (err) => (err ? reject(err) : resolve())));
  }

  /** The report for the n-th line sent (0-based), once the spawner has handled it. */
  async report(n: number, timeoutMs: number): Promise<SpawnReport> {
    const has = (): boolean => this.reports.length > n || this.child.exitCode !== null || this.child.signalCode !== null;
    await withTimeout(
      new Promise<void>((resolve) => (has() ? resolve() : this.waiters.push(() => has() && resolve()))),
      timeoutMs,
      `floor spawner ${this.pid}: report of line ${n + 1}`,
    );
    const r = this.reports[n];
    if (!r) throw new Error(`floor spawner ${this.pid} exited (${this.child.signalCode ?? this.child.exitCode}) before it reported line ${n + 1}`);
    return r;
  }

  /** End its stdin: it SIGKILLs its children, waits until they are reaped, and exits. */
  async stop(): Promise<void> {
    await this.dispose();
  }

  private async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin!.end();
    await withTimeout(exited, 30_000, `floor spawner ${this.pid} to exit`).catch(() => {
      try {
        process.kill(-this.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    });
  }

  /** Processes in its group (itself and whatever it started), zombies included. */
  leftovers(): number[] {
    return processGroups([this.pid]).get(this.pid) ?? [];
  }
}

/** pgid → pids in that group, for the given groups (one pass over /proc). */
function processGroups(pgids: readonly number[]): Map<number, number[]> {
  const out = new Map<number, number[]>(pgids.map((g) => [g, []]));
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) out.get(st.pgid)?.push(st.pid);
  }
  return out;
}

/** One burst on `spawners` spawners, in ms from the go to the last posix_spawn return. */
interface BurstRound {
  readonly spawners: number;
  readonly ms: number;
}

/**
 * Start `count` processes of `command` with `spawners` bare spawners splitting them: each spawner
 * is started and ready first; t0 is taken just before the names are written to the first one;
 * the figure ends at the latest of the spawners' own timestamps taken after their last
 * posix_spawn returned. Then /proc must show all `count` running `command[0]` in their groups,
 * and after the stop nothing of theirs may be left (killed and reaped).
 */
async function burstRound(command: readonly string[], count: number, spawners: number, timeoutMs: number): Promise<BurstRound> {
  const prog = which(command[0]!);
  if (!prog) throw new Error(`${command[0]} not found`);
  const started: FloorSpawner[] = [];
  let result: BurstRound | undefined;
  let failure: unknown;
  try {
    for (let i = 0; i < spawners; i++) started.push(await FloorSpawner.start(prog, command));
    const share = (i: number): string[] => {
      const from = Math.floor((count * i) / spawners);
      const to = Math.floor((count * (i + 1)) / spawners);
      return Array.from({ length: to - from }, (_, k) => `f${from + k}`);
    };
    const lines = started.map((_, i) => share(i));
    const t0 = process.hrtime.bigint();
    await Promise.all(started.map((s, i) => s.send(lines[i]!)));
    const reports = await Promise.all(started.map((s) => s.report(0, timeoutMs)));
    const spawned = reports.reduce((a, r) => a + r.spawned, 0);
    if (spawned !== count) throw new Error(`the floor spawners reported ${spawned} of ${count} spawns`);
    const done = reports.reduce((a, r) => (r.doneNs > a ? r.doneNs : a), 0n);
    // The spawners' word checked against /proc: every one of them running the command.
    const groups = processGroups(started.map((s) => s.pid));
    const running = started.reduce((a, s) => a + (groups.get(s.pid) ?? []).filter((p) => p !== s.pid && readStat(p)?.comm === command[0]).length, 0);
    if (running !== count) throw new Error(`/proc shows ${running} of the floor's ${count} \`${command[0]}\` processes`);
    result = { spawners, ms: Number(done - t0) / 1e6 };
  } catch (err) {
    failure = err;
  }
  // Every spawner stopped (it kills and reaps what it started), then nothing of theirs may remain.
  for (const s of started) await s.stop();
  const left = started.flatMap((s) => s.leftovers());
  if (left.length > 0) throw new Error(`${left.length} processes of the floor left after its stop (e.g. ${left.slice(0, 5).join(', ')})`);
  if (result === undefined) throw failure;
  return result;
}

/** Rounds of each floor burst: BENCH_FLOOR_ROUNDS, else the section's default (0 skips the floor). */
export function floorRounds(dflt: number): number {
  const v = Number(process.env.BENCH_FLOOR_ROUNDS ?? dflt);
  return Number.isInteger(v) && v >= 0 ? v : dflt;
}

export interface BurstFloorOptions {
  readonly section: string;
  /** The same command the section's vassals run. */
  readonly command: readonly string[];
  readonly count: number;
  /** Added to the spawn figure for the "ready" comparison (the vassals' readiness delay). */
  readonly readyAfterMs: number;
  /** The ready row's target, to name in the floor + ready row. */
  readonly target: string;
  readonly rounds: number;
  readonly timeoutMs: number;
  readonly progress: (msg: string) => void;
}

/**
 * The floor of a burst: `rounds` × (one spawner, two spawners splitting the count: this machine
 * has 2 cores), alternating, each round on fresh spawners. Rows: the median and range of each,
 * and the same plus the readiness delay; informative only, never a target.
 */
export async function burstFloorRows(o: BurstFloorOptions): Promise<Row[]> {
  const row = (metric: string, value: string, status: RowStatus = 'info'): Row => ({ section: o.section, metric, value, target: '—', status });
  const n = o.count.toLocaleString('en-US');
  const cmd = o.command.join(' ');
  if (o.rounds === 0) return [];
  const why = FloorSpawner.missing();
  if (why !== undefined) return [row(`floor (not a target): ${n} \`${cmd}\` by a bare posix_spawn loop`, `skipped, ${why}`)];
  const one: number[] = [];
  const two: number[] = [];
  try {
    for (let r = 0; r < o.rounds; r++) {
      for (const spawners of [1, 2]) {
        const res = await burstRound(o.command, o.count, spawners, o.timeoutMs);
        (spawners === 1 ? one : two).push(res.ms);
        o.progress(`floor round ${r + 1}/${o.rounds}: ${n} \`${cmd}\` by ${spawners} spawner${spawners > 1 ? 's' : ''} in ${fmtMs(res.ms)}`);
      }
    }
  } catch (err) {
    return [row(`floor: ${n} \`${cmd}\` by a bare posix_spawn loop`, `bench failed: ${err instanceof Error ? err.message.split('\n')[0]! : String(err)}`, 'error')];
  }
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const spread = (xs: number[]): string => `${fmtMs(Math.min(...xs))}-${fmtMs(Math.max(...xs))}`;
  const of = o.rounds > 1 ? `median of ${o.rounds}` : '1 round';
  const ranges = o.rounds > 1 ? `; ranges ${spread(one)} / ${spread(two)}` : '';
  const plus = (xs: number[]): number => median(xs) + o.readyAfterMs;
  return [
    row(
      `floor, the machine's, not a target: ${n} \`${cmd}\` started by a bare posix_spawn loop → ${n}th spawned, 1 python3 process / 2 processes splitting them`,
      `${fmtMs(median(one))} / ${fmtMs(median(two))} (${of}${ranges}; ${(median(one) / o.count).toFixed(2)} ms per spawn in one process)`,
    ),
    row(
      `floor + ${o.readyAfterMs / 1000} s (ready = up ${o.readyAfterMs / 1000} s): the ${n}th-ready row's best case here, its target is ${o.target}`,
      `${fmtMs(plus(one))} / ${fmtMs(plus(two))}`,
    ),
  ];
}
