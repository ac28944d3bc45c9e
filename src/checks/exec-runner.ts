// The emperor's side of the exec-probe thread (exec-worker.ts): one worker, started on the
// first exec probe, re-started if it ever dies (its in-flight probes then fail as critical).
import { Worker } from 'node:worker_threads';
import type { Identity } from '../process/identity.js';
import type { ProbeContext, ProbeResult } from './probe.js';

export interface ExecRequest {
  readonly type: 'run';
  readonly id: number;
  readonly argv: readonly string[];
  readonly timeoutMs: number;
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly identity: Identity | undefined;
}
export type ExecMessage = ExecRequest | { readonly type: 'abort'; readonly id: number };
export interface ExecReply {
  readonly id: number;
  readonly result: ProbeResult;
}

let worker: Worker | undefined;
let nextId = 1;
const pending = new Map<number, (r: ProbeResult) => void>();

function failAll(why: string): void {
  worker = undefined;
  for (const [id, done] of pending) {
    pending.delete(id);
    done({ status: 'critical', output: `exec probe thread failed: ${why}` });
  }
}

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./exec-worker.js', import.meta.url));
  w.on('message', (reply: ExecReply) => {
    const done = pending.get(reply.id);
    pending.delete(reply.id);
    if (pending.size === 0) w.unref();
    done?.(reply.result);
  });
  w.on('error', (err) => failAll(err.message));
  w.on('exit', (code) => {
    if (worker === w) failAll(`exited with code ${code}`);
  });
  // Idle, it must not keep the process alive; while a probe runs it does, as a spawned child
  // would (unref'd after the listeners, since adding them refs it).
  w.unref();
  worker = w;
  return w;
}

/** Run an exec probe on the probe thread; same contract as runProbe (never throws). */
export function runExecInThread(argv: readonly string[], ctx: ProbeContext): Promise<ProbeResult> {
  if (ctx.signal?.aborted === true) return Promise.resolve({ status: 'critical', output: 'aborted' });
  const w = thread();
  const id = nextId++;
  return new Promise<ProbeResult>((resolve) => {
    const onAbort = (): void => w.postMessage({ type: 'abort', id } satisfies ExecMessage);
    pending.set(id, (r) => {
      ctx.signal?.removeEventListener('abort', onAbort);
      resolve(r);
    });
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
    if (pending.size === 1) w.ref();
    const req: ExecRequest = { type: 'run', id, argv: [...argv], timeoutMs: ctx.timeoutMs, cwd: ctx.cwd, env: { ...ctx.env }, identity: ctx.identity };
    w.postMessage(req);
  });
}
