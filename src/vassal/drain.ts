// Taking a vassal out of service: deregister, let in-flight requests finish, then signal the
// whole group and wait for it to go (SIGKILL after stop.timeout).
import type { VassalSpec } from '../config/spec.js';
import { formatDuration } from '../config/duration.js';
import { stopGroup } from '../process/stop.js';
import type { VassalProcess } from '../process/types.js';
import type { VassalLog } from './types.js';

export interface DrainSteps {
  /** Deregistration; awaited, a failure is logged and the stop goes ahead. */
  readonly deregister?: () => Promise<void>;
  /** Only a vassal that was serving has requests to drain. */
  readonly drain: boolean;
  /**
   * Asks the vassal to stop over the Emperor protocol (byte 0) instead of stop.signal; returns
   * false when it cannot (the vassal closed its end), and then the signal is sent.
   */
  readonly stopMessage?: () => boolean;
  /** The vassal is hung (no heartbeat): nothing graceful would be answered, SIGKILL at once. */
  readonly hung?: boolean;
}

/** Resolves once the group is gone (or stopping it failed, which is logged); never rejects. */
export async function drainAndStop(proc: VassalProcess, stop: VassalSpec['stop'], steps: DrainSteps, log: VassalLog): Promise<void> {
  try {
    await steps.deregister?.();
  } catch (err) {
    log('warn', 'deregister-failed', `deregistration failed: ${String(err)}; stopping anyway`);
  }
  const drainMs = steps.drain ? stop.drainMs : 0;
  if (drainMs > 0) {
    log('info', 'draining', `draining for ${formatDuration(drainMs)} before the stop signal`);
    await new Promise((r) => setTimeout(r, drainMs));
  }
  try {
    if (steps.hung) {
      log('warn', 'stopping', `killing pid ${proc.pid} and its group with SIGKILL`, { pid: proc.pid, signal: 'SIGKILL' });
      await stopGroup(proc, 'SIGKILL', 0);
      return;
    }
    const byMessage = steps.stopMessage?.() === true;
    const how = byMessage ? 'the Emperor protocol stop message (byte 0)' : stop.signal;
    log('info', 'stopping', `stopping pid ${proc.pid} with ${how}`, { pid: proc.pid, signal: byMessage ? 'emperor-stop' : stop.signal });
    const { forced } = await stopGroup(proc, byMessage ? null : stop.signal, stop.timeoutMs);
    if (forced) log('warn', 'killed', `process group did not stop within ${formatDuration(stop.timeoutMs)}; sent SIGKILL`, { pid: proc.pid });
  } catch (err) {
    log('error', 'stop-failed', `stopping failed: ${String(err)}`);
  }
}
