// The vassal lifecycle, modelled on supervisord's process states. This table is the whole
// truth about which moves are legal; Vassal refuses (and reports) any move not listed here,
// so a bug shows up as a loud error instead of a vassal silently stuck in a wrong state.

export type VassalState = 'stopped' | 'starting' | 'running' | 'backoff' | 'stopping' | 'exited' | 'fatal';

export type VassalEvent =
  | 'start' //          asked to run (file dropped, manual start, retry after a failed stop-for-restart)
  | 'ready' //          readiness passed
  | 'exit' //           the leader exited on its own
  | 'start-timeout' //  not ready within start.timeout: kill the group, count a failure
  | 'stop' //           asked to stop (file removed, manual stop, shutdown, reload)
  | 'stopped' //        the whole process group is gone after a stop
  | 'retry'; //         back-off delay elapsed

type Table = Record<VassalState, Partial<Record<VassalEvent, readonly VassalState[]>>>;

export const TRANSITIONS: Table = {
  stopped: { start: ['starting'] },
  starting: {
    ready: ['running'],
    exit: ['backoff', 'fatal', 'exited'],
    'start-timeout': ['stopping'],
    stop: ['stopping', 'stopped'],
  },
  running: { exit: ['backoff', 'fatal', 'exited'], stop: ['stopping'] },
  backoff: { retry: ['starting'], start: ['starting'], stop: ['stopped'] },
  // After a stop the next state depends on why we stopped: a plain stop, a restart/reload,
  // or a start that timed out (which counts as a failure and may back off or give up).
  stopping: { stopped: ['stopped', 'starting', 'backoff', 'fatal'] },
  exited: { start: ['starting'] },
  fatal: { start: ['starting'] },
};

/** States in which the vassal has no process and nothing is pending. */
export const SETTLED: ReadonlySet<VassalState> = new Set(['stopped', 'exited', 'fatal']);

export function isLegal(from: VassalState, event: VassalEvent, to: VassalState): boolean {
  return TRANSITIONS[from][event]?.includes(to) ?? false;
}
