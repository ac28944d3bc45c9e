// The emperor's side of the exec-probe helpers (exec-helper.ts): small child processes that
// spawn every exec probe, started when needed (one per 16 probe slots, see poolSize), replaced
// if one dies (its in-flight probes then fail as critical, and their process groups are killed
// here).
//
// Why a process: spawn() forks the calling process and returns only once the child has exec'd.
// fork() copies the page tables of the whole process and write-protects its memory; with 200
// vassals the emperor holds ~150 MB, which made each spawn cost ~10 ms and capped exec probes
// at ~100/s on a busy two-core machine (and the copy-on-write faults slowed its main thread).
// The helper holds a few MB of heap, so its forks are cheap, and the emperor's main thread only
// passes small messages. (Before, one worker thread of the emperor spawned the probes: off the
// event loop, but still forking the whole emperor.)
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Identity } from '../process/identity.js';
import { probeBudget } from './budget.js';
import { killGroup } from './exec-probe.js';
import type { ProbeContext, ProbeResult } from './probe-common.js';

export type HelperRequest =
  | {
      readonly type: 'run';
      readonly id: number;
      readonly argv: readonly string[];
      readonly timeoutMs: number;
      readonly cwd: string;
      readonly env: Readonly<Record<string, string>>;
      readonly identity: Identity | null;
      readonly cgroupProcs: readonly string[];
    }
  | { readonly type: 'abort'; readonly id: number };
export type HelperReply = { readonly type: 'started'; readonly id: number; readonly pid: number } | { readonly type: 'result'; readonly id: number; readonly result: ProbeResult };

const HELPER = fileURLToPath(new URL('./exec-helper.js', import.meta.url));
/**
 * A small young generation: the helper's garbage is short-lived buffers and messages, and every
 * megabyte it holds is copied by each fork (V8 would otherwise grow it to tens of MB).
 */
const HELPER_FLAGS = ['--max-semi-space-size=1'];

/** How long a helper whose channel closed may take to exit before it is SIGKILLed. */
const LINGER_MS = 5000;

interface Pending {
  readonly done: (r: ProbeResult) => void;
  pgid: number | undefined;
}

class Helper {
  readonly child: ChildProcess;
  readonly pending = new Map<number, Pending>();
  private dead = false;

  constructor(onDeath: (h: Helper) => void /* no new probes for it; called again is harmless */) {
    // Its own process group: a Ctrl-C meant for the emperor must not kill in-flight probes
    // behind its back; the emperor's exit (the IPC channel closing) ends it instead.
    // Where it listens for probes' output sockets (output-pairs.ts); made here so that it is
    // removed even when the helper is SIGKILLed. Without it probes go through a shell.
    let dir: string | undefined;
    try {
      dir = mkdtempSync(path.join(os.tmpdir(), 'emperor-probes-'));
    } catch {
      dir = undefined;
    }
    this.child = spawn(process.execPath, [...HELPER_FLAGS, HELPER, dir ?? ''], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], detached: true, serialization: 'json' });
    const fail = (why: string): void => {
      if (this.dead) return;
      this.dead = true;
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      onDeath(this);
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        // Its probes lost their parent and whoever would have timed them out.
        if (p.pgid !== undefined) killGroup(p.pgid);
        p.done({ status: 'critical', output: `exec probe helper failed: ${why}` });
      }
    };
    this.child.on('message', (reply: HelperReply) => {
      const p = this.pending.get(reply.id);
      if (p === undefined) return;
      if (reply.type === 'started') {
        p.pgid = reply.pid;
        return;
      }
      this.pending.delete(reply.id);
      if (this.pending.size === 0) this.idle(true);
      p.done(reply.result);
    });
    this.child.on('error', (err) => fail(err.message));
    // Comes before 'exit': from here on new probes go to a new helper. This one is dying (it
    // exits when its channel closes); its 'exit' fails its probes, with the reason. Should it
    // linger, it is killed.
    this.child.on('disconnect', () => {
      onDeath(this);
      setTimeout(() => this.child.kill('SIGKILL'), LINGER_MS).unref();
    });
    this.child.on('exit', (code, signal) => fail(signal !== null ? `killed by ${signal}` : `exited with code ${code}`));
    // Idle, it must not keep the emperor alive; while a probe runs it does, as a spawned child
    // would.
    this.idle(true);
  }

  idle(yes: boolean): void {
    if (yes) {
      this.child.unref();
      this.child.channel?.unref();
    } else {
      this.child.ref();
      this.child.channel?.ref();
    }
  }

  send(msg: HelperRequest): void {
    if (!this.dead && this.child.connected) this.child.send(msg);
  }
}

/**
 * Helpers per probe slot, and at most. Each spawn blocks its helper until the child has exec'd:
 * profiled at 200 probes/s on a busy two-core host, one helper spent three quarters of its time
 * there, mostly waiting for the new child to get a CPU. A second helper overlaps those waits
 * (separate processes: forks of one process would also serialize on its memory map). Each costs
 * ~20 MB, so there is one per 16 slots of --check-concurrency (2 by default), started only
 * when probes overlap.
 */
const SLOTS_PER_HELPER = 16;
const MAX_HELPERS = 4;

const helpers: Helper[] = [];
let nextId = 1;

function poolSize(): number {
  return Math.max(1, Math.min(MAX_HELPERS, Math.ceil(probeBudget.slots / SLOTS_PER_HELPER)));
}

/** The helper with the fewest probes in flight; a new one when all are busy and the pool has room. */
function helper(): Helper {
  let best: Helper | undefined;
  for (const h of helpers) if (best === undefined || h.pending.size < best.pending.size) best = h;
  if (best !== undefined && (best.pending.size === 0 || helpers.length >= poolSize())) return best;
  const h = new Helper((gone) => {
    const i = helpers.indexOf(gone);
    if (i >= 0) helpers.splice(i, 1);
  });
  helpers.push(h);
  return h;
}

/** Run an exec probe in a helper process; same contract as runProbe (never throws). */
export function runExecProbe(argv: readonly string[], ctx: ProbeContext): Promise<ProbeResult> {
  if (ctx.signal?.aborted === true) return Promise.resolve({ status: 'critical', output: 'aborted' });
  const h = helper();
  const id = nextId++;
  return new Promise<ProbeResult>((resolve) => {
    const onAbort = (): void => h.send({ type: 'abort', id });
    h.pending.set(id, {
      pgid: undefined,
      done: (r) => {
        ctx.signal?.removeEventListener('abort', onAbort);
        resolve(r);
      },
    });
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
    if (h.pending.size === 1) h.idle(false);
    h.send({ type: 'run', id, argv: [...argv], timeoutMs: ctx.timeoutMs, cwd: ctx.cwd, env: { ...ctx.env }, identity: ctx.identity ?? null, cgroupProcs: [...(ctx.cgroupProcs ?? [])] });
  });
}
