import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { callApi } from '../../src/api/client.js';
import type { EmperorStatus, VassalStatus } from '../../src/emperor/emperor.js';
import { readableEmperorBin } from './install.js';
import { binEmperor } from './paths.js';
import { after } from './test.js';

/**
 * How long a wait for a log event lasts by default. Generous: on a busy machine starting a node
 * app alone can take seconds, and a wait that ends too early is a flaky test, not a finding.
 */
const WAIT_MS = 30_000;

export interface LogEntry {
  level: string;
  message: string;
  event?: string;
  vassal?: string;
  pid?: number;
  [k: string]: unknown;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A temp workspace: vassals, state and logs directories for one emperor. */
export async function makeWorkspace(prefix = 'emperor-test-'): Promise<{ root: string; vassals: string; state: string; logs: string }> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  const ws = { root, vassals: path.join(root, 'vassals'), state: path.join(root, 'state'), logs: path.join(root, 'logs') };
  await fs.mkdir(ws.vassals);
  return ws;
}

/** bin/emperor, or for another user a copy that user can reach wherever the checkout lives. */
const binFor = (as: { uid: number; gid: number } | undefined): string => (as === undefined ? binEmperor : readableEmperorBin());

/** Longest a CLI command or an emperor's exit is waited for before it is killed and the wait fails. */
const PROCESS_DEADLINE_MS = 60_000;

/** Run the real CLI (bin/emperor) and collect its output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = process.env, as?: { uid: number; gid: number }): Promise<CliResult> {
  return runBin(binFor(as), args, env, as);
}

/** Run one of the package's commands (a bin/ file) and collect its output; killed, and failing, if it hangs. */
export function runBin(bin: string, args: string[], env: NodeJS.ProcessEnv = process.env, as?: { uid: number; gid: number }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], ...(as ?? {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(bin)} ${args.join(' ')} did not finish within ${PROCESS_DEADLINE_MS} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, PROCESS_DEADLINE_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * A real emperor process under test. Its JSON log lines are parsed into entries so tests can
 * await the very event they need ("spawned", "ready", "exited"...) instead of sleeping.
 */
export class EmperorUnderTest extends EventEmitter {
  readonly entries: LogEntry[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';

  private constructor(
    readonly child: ChildProcess,
    readonly ws: { root: string; vassals: string; state: string; logs: string },
  ) {
    super();
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: LogEntry;
      try {
        entry = JSON.parse(line) as LogEntry;
      } catch {
        entry = { level: 'raw', message: line };
      }
      this.entries.push(entry);
      this.emit('entry', entry);
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  static async start(
    ws: { root: string; vassals: string; state: string; logs: string },
    extraArgs: string[] = [],
    env: NodeJS.ProcessEnv = process.env,
    as?: { uid: number; gid: number },
  ): Promise<EmperorUnderTest> {
    const child = spawn(
      process.execPath,
      [binFor(as), '--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--log-format', 'json', ...extraArgs],
      { env, stdio: ['ignore', 'pipe', 'pipe'], ...(as ?? {}) },
    );
    const emp = new EmperorUnderTest(child, ws);
    emp.as = as;
    running.add(emp);
    void emp.exited.then(() => running.delete(emp));
    await emp.waitFor((e) => e.event === 'started', 'emperor started', 0);
    return emp;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Position in the log, to wait only for what happens after an action. */
  mark(): number {
    return this.entries.length;
  }

  /** Resolve with the first log entry at index ≥ since that matches. */
  waitFor(pred: (e: LogEntry) => boolean, what: string, since = 0, timeoutMs = WAIT_MS): Promise<LogEntry> {
    const hit = this.entries.slice(since).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const onEntry = (e: LogEntry): void => {
        if (pred(e)) {
          cleanup();
          resolve(e);
        }
      };
      const onExit = (): void => {
        cleanup();
        reject(new Error(`emperor exited while waiting for ${what}\nstderr: ${this.stderr}\nlog tail:\n${this.tail()}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\nlog tail:\n${this.tail()}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('entry', onEntry);
        this.child.off('exit', onExit);
      };
      this.on('entry', onEntry);
      this.child.once('exit', onExit);
    });
  }

  /** Wait for `event` of vassal `name` (after `since`). */
  waitEvent(name: string, event: string, since = 0, timeoutMs?: number): Promise<LogEntry> {
    return this.waitFor((e) => e.vassal === name && e.event === event, `${name}: ${event}`, since, timeoutMs);
  }

  /** All entries of one vassal with one event kind. */
  events(name: string, event: string, since = 0): LogEntry[] {
    return this.entries.slice(since).filter((e) => e.vassal === name && e.event === event);
  }

  tail(n = 25): string {
    return this.entries
      .slice(-n)
      .map((e) => JSON.stringify(e))
      .join('\n');
  }

  get socket(): string {
    return path.join(this.ws.state, 'emperor.sock');
  }

  status(): Promise<EmperorStatus> {
    return callApi<EmperorStatus>(this.socket, 'GET', '/v1/status');
  }

  vassal(name: string): Promise<VassalStatus> {
    return callApi<VassalStatus>(this.socket, 'GET', `/v1/vassals/${encodeURIComponent(name)}`);
  }

  cli(args: string[]): Promise<CliResult> {
    return runCli([...args, '--state-dir', this.ws.state], process.env, this.as);
  }

  /** The user the emperor runs as (tests of non-root emperors). */
  as: { uid: number; gid: number } | undefined;

  async writeVassal(file: string, content: string | object): Promise<string> {
    const p = path.join(this.ws.vassals, file);
    await fs.writeFile(p, typeof content === 'string' ? content : JSON.stringify(content));
    return p;
  }

  /** SIGTERM (or another signal) and wait for the process to exit; SIGKILL and fail if it does not. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`emperor did not exit within ${PROCESS_DEADLINE_MS} ms of ${signal}\nstderr: ${this.stderr}\nlog tail:\n${this.tail()}`));
      }, PROCESS_DEADLINE_MS);
    });
    let exit;
    try {
      exit = await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
    // A move the vassal state table refused is a bug, whatever the test was looking at.
    const bugs = this.entries.filter((e) => e.event === 'bug');
    if (bugs.length > 0) throw new Error(`the emperor logged ${bugs.length} bug(s):\n${bugs.map((e) => `[${e.vassal ?? '-'}] ${e.message}`).join('\n')}`);
    return exit;
  }
}

const running = new Set<EmperorUnderTest>();
// A failed test must not leave emperors (and their vassals) running into the next test file.
process.on('exit', () => {
  for (const e of running) e.child.kill('SIGKILL');
});
// Nor keep this file's process alive: a test that failed before stopping its emperor left the
// emperor's pipes holding the event loop, and the file then hung until --test-timeout (30 min)
// instead of reporting the failure. Runs once every test of the file is done; only under the
// test runner (the bench imports this module too).
if (process.env.NODE_TEST_CONTEXT !== undefined) {
  after(() => {
    for (const e of running) e.child.kill('SIGKILL');
  });
}

/** A vassal spec for the test app with the given env overrides. */
export function appVassal(appJs: string, env: Record<string, string> = {}, extra: Record<string, unknown> = {}): object {
  return { command: [process.execPath, appJs], env, ...extra };
}
