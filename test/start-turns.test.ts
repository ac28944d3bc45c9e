// Vassal starts spread over turns of the event loop (src/vassal/start-turns.ts, issue 13): in a
// burst, the rest of the emperor (timers, I/O, control requests, log writes) runs between starts
// instead of after hundreds of them.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from './support/test.js';
import { queueStart, TURN_BUDGET_MS } from '../src/vassal/start-turns.js';

/** Stands in for a start's synchronous main-thread work (the spawn): busy, not sleeping. */
function work(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spinning on purpose: a start holds the thread
  }
}

describe('queueStart', () => {
  it('runs starts in the order they were queued', async () => {
    const ran: number[] = [];
    await new Promise<void>((resolve) => {
      for (let i = 0; i < 50; i++) queueStart(() => ran.push(i));
      queueStart(resolve);
    });
    assert.deepEqual(ran, Array.from({ length: 50 }, (_, i) => i));
  });

  it('lets a timer that falls due during a long run of starts fire before the run is over', async () => {
    const events: string[] = [];
    const count = 5;
    await new Promise<void>((resolve) => {
      for (let i = 0; i < count; i++) {
        queueStart(() => {
          events.push(`start ${i}`);
          // Due as soon as this start is done.
          if (i === 0) setTimeout(() => events.push('timer'), 0);
          // Each start outlasts a turn's budget: the loop must get a turn after each one.
          work(TURN_BUDGET_MS + 5);
          if (i === count - 1) resolve();
        });
      }
    });
    const timerAt = events.indexOf('timer');
    assert.ok(timerAt > 0 && timerAt < count, `the timer fired between starts, not after all of them: ${events.join(', ')}`);
  });
});
