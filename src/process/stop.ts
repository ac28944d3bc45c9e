// Stopping a vassal's whole process group, and cleaning up after a leader that died on its own.
import { pollUntil, settlesWithin } from './timing.js';
import type { VassalProcess } from './types.js';

/** There is no event for "the last process of a group is gone" (a cgroup has one), so it is polled. */
const POLL_MS = 20;
/** After SIGKILL only an uninterruptible sleep (D state) can keep a process around. */
const KILL_WAIT_MS = 5000;

export interface StopResult {
  /** SIGKILL was needed because the group outlived timeoutMs. */
  readonly forced: boolean;
  /** Something was still alive even after SIGKILL and KILL_WAIT_MS (stuck in D state?). */
  readonly lingering: boolean;
}

export interface ReapResult {
  /** Live processes were left in the group and got SIGKILL. */
  readonly killed: boolean;
  readonly lingering: boolean;
}

/** Resolves true once the leader has exited and no live process is left in its group. */
async function groupGone(proc: VassalProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  if (!(await settlesWithin(proc.exited, timeoutMs))) return false;
  if (proc.whenGone) return proc.whenGone(Math.max(0, deadline - Date.now()));
  return pollUntil(() => !proc.groupAlive(), deadline, POLL_MS);
}

/**
 * Send signal to the group (null: the caller asked it to stop another way) and wait (at most
 * timeoutMs) for the leader to exit and the group to empty; otherwise SIGKILL the group. Fine
 * to call after the leader already exited.
 */
export async function stopGroup(proc: VassalProcess, signal: NodeJS.Signals | null, timeoutMs: number): Promise<StopResult> {
  if (signal !== null) proc.signalGroup(signal);
  if (await groupGone(proc, timeoutMs)) return { forced: false, lingering: false };
  proc.signalGroup('SIGKILL');
  return { forced: true, lingering: !(await groupGone(proc, KILL_WAIT_MS)) };
}

/**
 * After an unexpected leader exit: orphaned grandchildren would keep running (and holding
 * ports) next to the next start, so whatever is left of the group gets SIGKILL.
 */
export async function reapGroupAfterExit(proc: VassalProcess): Promise<ReapResult> {
  // Called before the leader exited, this takes the leader down too, which is what a caller
  // that thinks it is gone wants.
  if (!proc.groupAlive()) return { killed: false, lingering: false };
  proc.signalGroup('SIGKILL');
  return { killed: true, lingering: !(await groupGone(proc, KILL_WAIT_MS)) };
}
