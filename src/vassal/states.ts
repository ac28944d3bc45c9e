// The vassal lifecycle, modelled on supervisord's process states. This table decides every
// move: the vassal asks it where an event leads and goes there, and a move the table does not
// list is refused (the vassal stays where it is and reports a bug) instead of being taken.

export type VassalState = 'stopped' | 'starting' | 'running' | 'backoff' | 'stopping' | 'exited' | 'fatal';

export type VassalEvent =
  | 'start' //    asked to run (file dropped, manual start, restart after a stop)
  | 'ready' //    readiness passed
  | 'exit' //     the leader exited and the restart policy says it is done (never, clean on-failure)
  | 'crash' //    a failure the restart policy retries after a back-off delay
  | 'give-up' //  a failure past max_retries or max_restarts: wait for a manual start
  | 'fail' //     not ready in time, readiness failed, or health critical: stop it, then count a failure
  | 'stop' //     asked to stop (file removed, manual stop, shutdown, reload)
  | 'stopped' //  the whole process group is gone after a stop, and it stays stopped
  | 'retry'; //   back-off delay elapsed

type Table = Record<VassalState, Partial<Record<VassalEvent, VassalState>>>;

export const TRANSITIONS: Table = {
  stopped: { start: 'starting' },
  starting: { ready: 'running', exit: 'exited', crash: 'backoff', 'give-up': 'fatal', fail: 'stopping', stop: 'stopping' },
  running: { exit: 'exited', crash: 'backoff', 'give-up': 'fatal', fail: 'stopping', stop: 'stopping' },
  backoff: { retry: 'starting', start: 'starting', stop: 'stopped' },
  // After a stop the next move depends on why it stopped: a plain stop, a restart or reload
  // (start), or a failure (a start that timed out, critical health) that backs off or gives up.
  stopping: { stopped: 'stopped', start: 'starting', crash: 'backoff', 'give-up': 'fatal' },
  exited: { start: 'starting' },
  fatal: { start: 'starting' },
};

/** States in which the vassal has no process and nothing is pending. */
export const SETTLED: ReadonlySet<VassalState> = new Set(['stopped', 'exited', 'fatal']);

/** Where `event` leads from `from`; undefined when the table refuses the move. */
export function nextState(from: VassalState, event: VassalEvent): VassalState | undefined {
  return TRANSITIONS[from][event];
}

/** A move the table refuses: a bug in the caller, reported with both ends. */
export class IllegalTransition extends Error {
  constructor(
    readonly from: VassalState,
    readonly event: VassalEvent,
  ) {
    super(`illegal transition: ${from} --${event}--> (the state table has no such move)`);
    this.name = 'IllegalTransition';
  }
}
