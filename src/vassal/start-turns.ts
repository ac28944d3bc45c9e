// Vassal starts, spread over turns of the event loop.
//
// A start is synchronous work on the main thread (the spawn itself, its pipes, the pid record's
// first step, log lines): ~3-10 ms each on a busy two-core host. In a burst, the cgroups made
// for hundreds of vassals come back from the thread pool together, and Node handles all of those
// completions in one poll phase: 1,000 files dropped at once ran 100-250 starts in one turn
// (1-3 s). Nothing else ran meanwhile: no timer (readiness delays came late), no log line or
// guardian line was written (both go out once per turn), no control request or exit was seen,
// and the bench saw the "spawned" lines pause for 1-2 s, then arrive by the hundred (issue 13).
// So starts queue here and run from setImmediate, for at most TURN_BUDGET_MS per turn; the rest
// of the loop runs in between. Order is kept (FIFO).
import { performance } from 'node:perf_hooks';

/** Main-thread time one turn may spend on starts before the loop gets to run the rest. */
export const TURN_BUDGET_MS = 20;

const queue: Array<() => void> = [];
let scheduled = false;

function runSome(): void {
  const until = performance.now() + TURN_BUDGET_MS;
  // At least one per turn, however long it takes: a slow start must not stall the queue.
  do {
    const start = queue.shift()!;
    try {
      start();
    } catch (err) {
      // A start reports its own failures. One that throws anyway is a bug, reported as one (an
      // unhandled rejection, as when starts ran in a promise chain), and the others still run.
      void Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  } while (queue.length > 0 && performance.now() < until);
  if (queue.length > 0) setImmediate(runSome);
  else scheduled = false;
}

/** Run `start` in a coming turn of the event loop, after the starts queued before it. */
export function queueStart(start: () => void): void {
  queue.push(start);
  if (scheduled) return;
  scheduled = true;
  setImmediate(runSome);
}
