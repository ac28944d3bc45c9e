// A real emperor child process for the bench, and the bookkeeping that guarantees clean-up.
//
// Unlike test/support's EmperorUnderTest this keeps no log history (thousands of lines per run)
// and stamps every line with performance.now() the moment it is read from the pipe, so a
// latency includes the emperor's log write and the pipe: conservative, as the brief wants.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { binEmperor } from '../test/support/paths.js';
import { childrenOf, fmtMs, isGone, now, readStat, sleep } from './util.js';
import { readFileSync } from 'node:fs';

/** The node flags bin/emperor's shebang gives it (`#!/usr/bin/env -S node FLAGS`): the bench runs the emperor as installed. */
const NODE_FLAGS = (/^#!\S*env -S node(.*)$/m.exec(readFileSync(binEmperor, 'utf8').split('\n')[0] ?? '')?.[1] ?? '').trim().split(/\s+/).filter(Boolean);

export interface Workspace {
  readonly root: string;
  readonly vassals: string;
  readonly state: string;
  readonly logs: string;
}

export interface LogEntry {
  level?: string;
  message?: string;
  event?: string;
  vassal?: string;
  pid?: number;
  [k: string]: unknown;
}

type Listener = (entry: LogEntry, t: number) => void;

/** A log line and when the bench read it (performance.now()). */
export interface Arrival {
  readonly entry: LogEntry;
  readonly t: number;
}

// ---- clean-up registry ----------------------------------------------------------------------

const emperors = new Set<BenchEmperor>();
const dirs = new Set<string>();
/** Other things a section started (an etcd, a Consul double, a listener), disposed after the emperors. */
const disposers = new Map<symbol, { label: string; fn: () => Promise<void> }>();

/**
 * Register something to dispose in cleanupAll() (after every emperor has stopped, so they can
 * still deregister from it). Returns a function that disposes it now and unregisters it; calling
 * it twice does nothing the second time.
 */
export function addCleanup(label: string, fn: () => Promise<void>): () => Promise<void> {
  const key = Symbol(label);
  disposers.set(key, { label, fn });
  return async () => {
    if (!disposers.delete(key)) return;
    await fn();
  };
}

export async function makeWorkspace(prefix = 'emperor-bench-'): Promise<Workspace> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.add(root);
  const ws = { root, vassals: path.join(root, 'vassals'), state: path.join(root, 'state'), logs: path.join(root, 'logs') };
  await fs.mkdir(ws.vassals);
  return ws;
}

/**
 * Stop every emperor still running (and check nothing of theirs survives), dispose whatever was
 * registered with addCleanup(), then delete every temp directory. Returns what went wrong, empty when all is clean.
 */
export async function cleanupAll(): Promise<string[]> {
  const problems: string[] = [];
  for (const emp of [...emperors]) {
    try {
      await emp.stop();
    } catch (err) {
      problems.push(`${emp.label}: ${(err as Error).message}`);
    }
    problems.push(...emp.leftovers);
  }
  for (const [key, d] of [...disposers]) {
    disposers.delete(key);
    try {
      await d.fn();
    } catch (err) {
      problems.push(`${d.label}: ${(err as Error).message}`);
    }
  }
  for (const dir of [...dirs]) {
    try {
      await fs.rm(dir, { recursive: true, force: true });
      dirs.delete(dir);
    } catch (err) {
      problems.push(`cannot remove ${dir}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** Last resort on a synchronous process exit: SIGKILL what still runs (the guardian then kills the groups). */
export function killAllSync(): void {
  for (const emp of emperors) emp.killHard();
}

// ---- the emperor ------------------------------------------------------------------------------

export class BenchEmperor {
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Count of log lines per event name. */
  readonly counts = new Map<string, number>();
  /** Log lines at level warn/error (capped): anything here under plain load is suspicious. */
  readonly complaints: LogEntry[] = [];
  complaintCount = 0;
  /** warn/error lines per event name (a section may expect some, e.g. "exited" after its own SIGKILL). */
  readonly complaintsByEvent = new Map<string, number>();
  /** Every vassal process the emperor reported spawning: pid → /proc start time. */
  readonly vassalPids = new Map<number, string>();
  /** Problems found after the emperor exited (surviving vassals or guardian). */
  readonly leftovers: string[] = [];
  guardianPid: number | undefined;
  private guardianStart: string | undefined;
  stderr = '';
  private readonly listeners = new Set<Listener>();
  private exitedFlag = false;

  private constructor(
    readonly label: string,
    readonly child: ChildProcess,
    readonly ws: Workspace,
  ) {
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exitedFlag = true;
        resolve({ code, signal });
      }),
    );
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const t = now();
      let entry: LogEntry;
      try {
        entry = JSON.parse(line) as LogEntry;
      } catch {
        entry = { level: 'raw', message: line };
      }
      this.note(entry);
      for (const fn of [...this.listeners]) fn(entry, t);
    });
    child.stderr!.on('data', (d: Buffer) => {
      if (this.stderr.length < 20000) this.stderr += d.toString();
    });
  }

  static async start(label: string, ws: Workspace, extraArgs: string[] = []): Promise<BenchEmperor> {
    const child = spawn(
      process.execPath,
      [...NODE_FLAGS, binEmperor, '--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--log-format', 'json', ...extraArgs],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const emp = new BenchEmperor(label, child, ws);
    emperors.add(emp);
    await emp.waitFor((e) => e.event === 'started', 'emperor "started"', 20000);
    // The guardian is started before the watcher, so it exists by now: a child /bin/sh.
    const sh = childrenOf(emp.pid).find((s) => s.comm === 'sh');
    if (sh) {
      emp.guardianPid = sh.pid;
      emp.guardianStart = sh.startTime;
    }
    return emp;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return !this.exitedFlag;
  }

  count(event: string): number {
    return this.counts.get(event) ?? 0;
  }

  private note(e: LogEntry): void {
    if (e.event) this.counts.set(e.event, this.count(e.event) + 1);
    if (e.event === 'spawned' && typeof e.pid === 'number') {
      // Read at once, while the process surely lives: tells a reused pid apart later.
      this.vassalPids.set(e.pid, readStat(e.pid)?.startTime ?? '');
    }
    if (e.level === 'warn' || e.level === 'error' || e.level === 'raw') {
      this.complaintCount++;
      const ev = e.event ?? e.level ?? '?';
      this.complaintsByEvent.set(ev, (this.complaintsByEvent.get(ev) ?? 0) + 1);
      if (this.complaints.length < 20) this.complaints.push(e);
    }
  }

  /** Subscribe to every log line (with its arrival time); returns the unsubscribe function. */
  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The first line from now on matching pred, with its arrival time. */
  waitFor(pred: (e: LogEntry) => boolean, what: string, timeoutMs: number): Promise<Arrival> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.child.off('exit', onExit);
      };
      const unsubscribe = this.subscribe((entry, t) => {
        if (!pred(entry)) return;
        done();
        resolve({ entry, t });
      });
      const onExit = (): void => {
        done();
        reject(new Error(`${this.label} exited while waiting for ${what}; stderr: ${this.stderr.slice(-2000)}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label}: timed out after ${fmtMs(timeoutMs)} waiting for ${what}`));
      }, timeoutMs);
      this.child.once('exit', onExit);
      if (!this.running) onExit();
    });
  }

  /**
   * The first `event` line (and its arrival time) for every name in `names` (first occurrence from now on).
   * onEach sees the running count (for progress). Rejects on timeout or emperor exit, naming
   * how many arrived and some that did not.
   */
  collect(event: string, names: ReadonlySet<string>, timeoutMs: number, onEach?: (n: number) => void): Promise<Map<string, Arrival>> {
    const times = new Map<string, Arrival>();
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.child.off('exit', onExit);
      };
      const missing = (): string => {
        const left = [...names].filter((n) => !times.has(n));
        return `${times.size} of ${names.size} "${event}" arrived; missing e.g. ${left.slice(0, 5).join(', ')}`;
      };
      const unsubscribe = this.subscribe((entry, t) => {
        if (entry.event !== event || entry.vassal === undefined || !names.has(entry.vassal) || times.has(entry.vassal)) return;
        times.set(entry.vassal, { entry, t });
        onEach?.(times.size);
        if (times.size === names.size) {
          done();
          resolve(times);
        }
      });
      const onExit = (): void => {
        done();
        reject(new Error(`${this.label} exited while waiting: ${missing()}; stderr: ${this.stderr.slice(-2000)}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label}: timed out after ${fmtMs(timeoutMs)}: ${missing()}`));
      }, timeoutMs);
      this.child.once('exit', onExit);
      if (!this.running) onExit();
    });
  }

  /**
   * SIGTERM (the emperor stops every vassal in parallel), SIGKILL if it takes longer than
   * timeoutMs. Then checks that every vassal it ever spawned and its guardian are gone, killing
   * (by pid, start time checked) and reporting any survivor. Resolves with the time to exit.
   */
  async stop(timeoutMs = 60000): Promise<{ ms: number; forced: boolean; code: number | null; signal: NodeJS.Signals | null }> {
    const t0 = now();
    let forced = false;
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        forced = true;
        this.child.kill('SIGKILL');
      }, timeoutMs);
      await this.exited.finally(() => clearTimeout(timer));
    }
    const { code, signal } = await this.exited;
    const ms = now() - t0;
    emperors.delete(this);
    if (forced) this.leftovers.push(`${this.label}: did not exit within ${fmtMs(timeoutMs)} of SIGTERM; SIGKILLed`);
    await this.checkNothingLeft();
    return { ms, forced, code, signal };
  }

  killHard(): void {
    if (this.running) this.child.kill('SIGKILL');
  }

  private async checkNothingLeft(): Promise<void> {
    const alive = (): number[] => [...this.vassalPids].filter(([pid, st]) => !isGone(pid, st)).map(([pid]) => pid);
    const guardianAlive = (): boolean => this.guardianPid !== undefined && !isGone(this.guardianPid, this.guardianStart);
    const deadline = now() + 5000;
    while ((alive().length > 0 || guardianAlive()) && now() < deadline) await sleep(50);
    const left = alive();
    if (left.length > 0) {
      this.leftovers.push(`${this.label}: ${left.length} vassal process(es) outlived the emperor by 5 s (e.g. ${left.slice(0, 5).join(', ')}); SIGKILLed by the bench`);
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    if (guardianAlive()) {
      this.leftovers.push(`${this.label}: guardian shell ${this.guardianPid} outlived the emperor by 5 s; SIGKILLed by the bench`);
      try {
        process.kill(this.guardianPid!, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }
}
