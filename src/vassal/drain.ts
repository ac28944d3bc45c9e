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
    log('info', 'stopping', `stopping pid ${proc.pid} with ${stop.signal}`, { pid: proc.pid, signal: stop.signal });
    const { forced } = await stopGroup(proc, stop.signal, stop.timeoutMs);
    if (forced) log('warn', 'killed', `process group did not stop within ${formatDuration(stop.timeoutMs)}; sent SIGKILL`, { pid: proc.pid });
  } catch (err) {
    log('error', 'stop-failed', `stopping failed: ${String(err)}`);
  }
}
