// Control requests for one vassal, one at a time. Without this, a stop and a start arriving
// together raced inside the vassal: the start turned the stop into a restart, and the stop's
// caller waited forever for a "stopped" that never came.
//
// The rule (README, "Control requests"): requests for one vassal are carried out in the order
// the emperor takes them, one at a time. While one is carried out, at most one more waits:
//   - a request for the same action as the waiting one joins it (one run, one answer for both);
//   - any other request replaces the waiting one, which is answered at once with 409
//     "superseded" (it was never carried out).
// So the last request taken is always carried out, nothing queues without bound, and every
// request is answered within the time of the action under way plus its own.

export class SupersededError extends Error {}

interface Waiting<K extends string, T> {
  readonly kind: K;
  run: () => Promise<T>;
  readonly callers: Array<{ resolve: (v: T) => void; reject: (e: unknown) => void }>;
}

export class ControlQueue<K extends string, T> {
  private busy = false;
  private waiting: Waiting<K, T> | undefined;

  /** True while nothing is carried out or waiting (the queue can be dropped). */
  get idle(): boolean {
    return !this.busy && this.waiting === undefined;
  }

  /**
   * Carry out `run` for a request of kind `kind` taken as number `seq`, after the request under
   * way. Rejects with SupersededError when a later request of another kind replaced it first.
   */
  submit(kind: K, seq: number, run: () => Promise<T>): Promise<T> {
    if (!this.busy) {
      this.busy = true;
      return this.carryOut(run);
    }
    return new Promise<T>((resolve, reject) => {
      const w = this.waiting;
      if (w?.kind === kind) {
        // The later request's run is the one carried out: it reflects the latest ask.
        w.run = run;
        w.callers.push({ resolve, reject });
        return;
      }
      for (const c of w?.callers ?? []) c.reject(new SupersededError(`superseded by a later ${kind} request (#${seq}) before it was carried out`));
      this.waiting = { kind, run, callers: [{ resolve, reject }] };
    });
  }

  private async carryOut(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } finally {
      this.next();
    }
  }

  private next(): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (!w) {
      this.busy = false;
      return;
    }
    this.carryOut(w.run).then(
      (v) => {
        for (const c of w.callers) c.resolve(v);
      },
      (err: unknown) => {
        for (const c of w.callers) c.reject(err);
      },
    );
  }
}

/** What waitState needs of a vassal: its state and its state events. */
export interface StateSource<S> {
  readonly state: S;
  on(event: 'state', fn: (s: S) => void): unknown;
  off(event: 'state', fn: (s: S) => void): unknown;
}

export type WaitOutcome = 'done' | 'interrupted' | 'timeout';

/**
 * Wait until `done(state)` holds ('done'), or `interrupted(state)` does ('interrupted': someone
 * else, e.g. a file change, took the vassal elsewhere), or `ms` pass ('timeout'). Checked now and
 * at every state change; no listener or timer is left behind.
 */
export function waitState<S>(v: StateSource<S>, done: (s: S) => boolean, interrupted: (s: S) => boolean, ms: number): Promise<WaitOutcome> {
  if (done(v.state)) return Promise.resolve('done');
  return new Promise((resolve) => {
    const finish = (o: WaitOutcome): void => {
      clearTimeout(timer);
      v.off('state', onState);
      resolve(o);
    };
    const onState = (s: S): void => {
      if (done(s)) finish('done');
      else if (interrupted(s)) finish('interrupted');
    };
    const timer = setTimeout(() => finish('timeout'), ms);
    v.on('state', onState);
  });
}
