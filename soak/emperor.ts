// The real emperor (bin/emperor) as a child of the soak. Unlike test/support's
// EmperorUnderTest it keeps no log history (a long soak writes hundreds of thousands of lines),
// only counts per event kind, the "bug" events, and a short tail for reports.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { callApi } from '../src/api/client.js';
import type { EmperorStatus } from '../src/emperor/emperor.js';

/**
 * The CLI compiled next to this file (what bin/emperor imports from dist/): a soak built into
 * another outDir (`tsc --outDir dist-soak`) runs the emperor of that same build, so a long run
 * is not affected by someone rebuilding dist/ meanwhile.
 */
export const EMPEROR_MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface LogEntry {
  level?: string;
  message?: string;
  event?: string;
  vassal?: string;
  [k: string]: unknown;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const TAIL = 60;

/** Every emperor ever started, so an aborted run can still SIGKILL them. */
const all = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of all) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export class EmperorProc {
  readonly exited: Promise<ExitInfo>;
  readonly startedAt = Date.now();
  readonly events = new Map<string, number>();
  readonly bugs: LogEntry[] = [];
  readonly tail: string[] = [];
  stderr = '';
  /** Set by whoever kills it on purpose, so an exit is not taken for a crash. */
  expectExit = false;
  private startedResolve!: () => void;
  private readonly started: Promise<void>;
  private readonly listeners: Array<(e: LogEntry) => void> = [];

  private constructor(
    readonly child: ChildProcess,
    readonly socket: string,
  ) {
    all.add(child);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        all.delete(child);
        resolve({ code, signal });
      }),
    );
    this.started = new Promise((resolve) => (this.startedResolve = resolve));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(line));
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      if (this.stderr.length > 64 * 1024) this.stderr = this.stderr.slice(-32 * 1024);
    });
  }

  /** Start and wait for its "started" line; `onEntry` sees every log line from the first one. */
  static async start(args: readonly string[], env: NodeJS.ProcessEnv, socket: string, onEntry?: (e: LogEntry, emp: EmperorProc) => void, timeoutMs = 20_000): Promise<EmperorProc> {
    const child = spawn(process.execPath, [EMPEROR_MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const emp = new EmperorProc(child, socket);
    if (onEntry) emp.onEntry((e) => onEntry(e, emp));
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      emp.started.then(() => 'started' as const),
      emp.exited.then(() => 'exited' as const),
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (outcome !== 'started') {
      emp.expectExit = true;
      child.kill('SIGKILL');
      await emp.exited;
      throw new Error(`emperor did not start (${outcome}); stderr: ${emp.stderr.slice(-2000)}\nlog tail:\n${emp.tail.join('\n')}`);
    }
    return emp;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  onEntry(fn: (e: LogEntry) => void): void {
    this.listeners.push(fn);
  }

  private onLine(line: string): void {
    this.tail.push(line.length > 600 ? `${line.slice(0, 600)}…` : line);
    if (this.tail.length > TAIL) this.tail.shift();
    let entry: LogEntry;
    try {
      entry = JSON.parse(line) as LogEntry;
    } catch {
      entry = { level: 'raw', message: line, event: 'raw-output' };
    }
    const ev = entry.event ?? '(none)';
    this.events.set(ev, (this.events.get(ev) ?? 0) + 1);
    if (ev === 'bug') this.bugs.push(entry);
    if (ev === 'started') this.startedResolve();
    for (const fn of this.listeners) fn(entry);
  }

  /** GET /v1/status, bounded. */
  async status(timeoutMs = 1000): Promise<EmperorStatus> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        callApi<EmperorStatus>(this.socket, 'GET', '/v1/status'),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`status did not answer within ${timeoutMs} ms`)), timeoutMs))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** POST to the control API, bounded; errors are returned, not thrown. */
  async post(urlPath: string, timeoutMs = 2000): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        callApi<unknown>(this.socket, 'POST', urlPath),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), timeoutMs))),
      ]);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    } finally {
      clearTimeout(timer);
    }
  }

  signal(sig: NodeJS.Signals): void {
    if (this.alive) this.child.kill(sig);
  }

  /** Wait for the exit, at most timeoutMs; undefined when it did not exit in time. */
  async waitExit(timeoutMs: number): Promise<ExitInfo | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited, new Promise<undefined>((res) => (timer = setTimeout(() => res(undefined), timeoutMs)))]);
    clearTimeout(timer);
    return r;
  }
}

/** Emperor memory and descriptors from /proc. */
export function emperorResources(pid: number): { rssKb: number; fds: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return { rssKb: m ? Number(m[1]) : 0, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return undefined;
  }
}
