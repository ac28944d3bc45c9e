// The Vassal state machine driven through its table with a fake process layer: the test says
// when a process is ready, exits or obeys a signal, and moves the clock by hand. No real
// process runs; every wait is for an event, bounded by the test's timeout.
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { afterEach, describe, it } from './support/test.js';
import { parseVassal } from '../src/config/load.js';
import type { VassalSpec } from '../src/config/spec.js';
import { IllegalTransition, nextState, TRANSITIONS, type VassalEvent, type VassalState } from '../src/vassal/states.js';
import { Vassal } from '../src/vassal/vassal.js';
import { FakeProcessLayer, type FakeProcess } from './support/fake-process.js';
import { memoryLogger, type MemoryEntry } from './support/memory-logger.js';

/**
 * A spec from YAML, ready via notify so the test decides when it is ready. `extra` may give
 * its own start: or backoff: line instead of the defaults here.
 */
function spec(extra = ''): VassalSpec {
  const start = /^start:/m.test(extra) ? '' : 'start: { ready: { notify: true }, timeout: 1h }\n';
  const backoff = /^backoff:/m.test(extra) ? '' : 'backoff: { initial: 1ms, max: 1ms }\n';
  const r = parseVassal(`command: ["/bin/app"]\n${start}${backoff}${extra}`, '/srv/vassals/app.yaml');
  if (!r.ok) throw new Error(r.error.message);
  return r.spec;
}

class Harness {
  readonly layer = new FakeProcessLayer();
  readonly log: { entries: MemoryEntry[] };
  readonly states: VassalState[] = [];
  readonly illegal: IllegalTransition[] = [];
  /** What happened around a stop, in order: "deregister" and the signals sent. */
  readonly order: string[] = [];
  clock = 1_000_000;
  readonly vassal: Vassal;

  constructor(s: VassalSpec, opts: { beforeStop?: () => Promise<void> } = {}) {
    const { logger, entries } = memoryLogger();
    this.log = { entries };
    this.vassal = new Vassal(s, {
      logger,
      logsDir: '/nonexistent',
      mirrorOutput: false,
      baseEnv: {},
      guardian: { add: () => undefined, remove: () => undefined },
      records: { write: () => Promise.resolve(), remove: () => Promise.resolve() },
      spawn: (req) => {
        const p = this.layer.spawn(req) as FakeProcess;
        const signal = p.signalGroup.bind(p);
        p.signalGroup = (sig) => {
          this.order.push(sig);
          return signal(sig);
        };
        return p;
      },
      now: () => this.clock,
      beforeStop: async () => {
        this.order.push('deregister');
        await opts.beforeStop?.();
      },
    });
    this.vassal.on('state', (st: VassalState) => this.states.push(st));
    this.vassal.on('illegal', (err: IllegalTransition) => this.illegal.push(err));
  }

  until(state: VassalState): Promise<void> {
    return this.vassal.until((s) => s === state);
  }

  /** Start (or expect a restart) and make the n-th process ready. */
  async running(n: number): Promise<FakeProcess> {
    const p = await this.layer.nth(n);
    p.ready();
    await this.until('running');
    return p;
  }
}

let current: Harness | undefined;
function harness(s: VassalSpec, opts?: { beforeStop?: () => Promise<void> }): Harness {
  current = new Harness(s, opts);
  return current;
}

afterEach(async () => {
  const h = current;
  current = undefined;
  if (!h) return;
  await h.vassal.stop();
  // Every test fails on a move the table refuses, even one the test did not look for.
  assert.deepEqual(
    h.illegal.map((e) => e.message),
    [],
  );
});

describe('vassal state table', () => {
  it('decides exactly one next state for every listed move, and every state can be left', () => {
    for (const [from, events] of Object.entries(TRANSITIONS)) {
      assert.ok(Object.keys(events).length > 0, `${from} is a dead end`);
    }
    assert.equal(nextState('starting', 'ready'), 'running');
    assert.equal(nextState('running', 'crash'), 'backoff');
    assert.equal(nextState('stopping', 'give-up'), 'fatal');
    assert.equal(nextState('stopped', 'ready'), undefined);
    assert.equal(nextState('fatal', 'retry'), undefined, 'fatal waits for a manual start');
    assert.equal(nextState('running', 'ready'), undefined);
  });

  it('refuses an illegal move: the vassal stays where it is and reports the bug', async () => {
    const h = new Harness(spec());
    const move = (h.vassal as unknown as { move(e: VassalEvent): boolean }).move.bind(h.vassal);
    assert.equal(move('ready'), false);
    assert.equal(h.vassal.state, 'stopped');
    assert.deepEqual(h.states, []);
    assert.equal(h.illegal.length, 1);
    assert.equal(h.illegal[0]!.from, 'stopped');
    assert.equal(h.illegal[0]!.event, 'ready');
    await tick();
    assert.ok(h.log.entries.some((e) => e.level === 'error' && e.event === 'bug'));
  });
});

describe('Vassal through its table (fake process layer)', () => {
  it('start → starting → running only when ready', async () => {
    const h = harness(spec());
    h.vassal.start();
    assert.equal(h.vassal.state, 'starting');
    const p = await h.layer.nth(1);
    assert.equal(h.vassal.state, 'starting', 'spawned is not ready');
    assert.equal(p.req.env.NOTIFY_FD, '4');
    assert.equal(p.req.env.UWSGI_EMPEROR_FD, '3', 'every vassal gets the Emperor protocol fd');
    p.ready();
    await h.until('running');
    assert.deepEqual(h.states, ['starting', 'running']);
    assert.equal(h.vassal.snapshot().pid, p.pid);
  });

  it('stop: deregisters before the stop signal, even with drain 0, then stopped', async () => {
    const h = harness(spec('stop: { drain: 0s }\n'));
    h.vassal.start();
    await h.running(1);
    await h.vassal.stop();
    assert.deepEqual(h.order, ['deregister', 'SIGTERM']);
    assert.deepEqual(h.states, ['starting', 'running', 'stopping', 'stopped']);
  });

  it('a stop waits for a slow deregistration before signalling', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const h = harness(spec(), { beforeStop: () => gate });
    h.vassal.start();
    const p = await h.running(1);
    const stopped = h.vassal.stop();
    await tick();
    assert.equal(h.vassal.state, 'stopping');
    assert.deepEqual(p.signals, [], 'no signal while deregistration is pending');
    release();
    await stopped;
    assert.deepEqual(p.signals, ['SIGTERM']);
  });

  it('a group that ignores the stop signal gets SIGKILL after stop.timeout', async () => {
    const h = harness(spec('stop: { timeout: 20ms }\n'));
    h.vassal.start();
    const p = await h.running(1);
    p.obeys = false;
    await h.vassal.stop();
    assert.deepEqual(p.signals, ['SIGTERM', 'SIGKILL']);
    assert.equal(h.vassal.state, 'stopped');
  });

  it('crash while running → backoff → retry → running again', async () => {
    const h = harness(spec());
    h.vassal.start();
    const first = await h.running(1);
    first.exit({ code: 1, signal: null });
    await h.until('backoff');
    assert.equal(h.vassal.snapshot().lastExit?.reason, 'exited with code 1');
    assert.equal(h.vassal.snapshot().failures, 1);
    await h.running(2);
    assert.deepEqual(h.states, ['starting', 'running', 'backoff', 'starting', 'running']);
    assert.equal(h.vassal.snapshot().restarts, 1);
  });

  it('restart: never → exited; on-failure with a clean exit → exited', async () => {
    for (const policy of ['never', 'on-failure']) {
      const h = new Harness(spec(`restart: ${policy}\n`));
      h.vassal.start();
      (await h.running(1)).exit({ code: 0, signal: null });
      await h.until('exited');
      assert.deepEqual(h.states, ['starting', 'running', 'exited']);
      assert.deepEqual(h.illegal, []);
    }
  });

  it('a spawn that fails backs off and then gives up after max_retries', async () => {
    const h = harness(spec('backoff: { initial: 1ms, max: 1ms, max_retries: 2 }\n'));
    h.layer.spawnFails = 'spawn failed: ENOENT';
    h.vassal.start();
    await h.until('fatal');
    assert.deepEqual(h.states, ['starting', 'backoff', 'starting', 'backoff', 'starting', 'fatal']);
    assert.match(h.vassal.snapshot().fatalReason ?? '', /after 2 failed restarts in a row \(backoff\.max_retries\); last: spawn failed: ENOENT/);
    // A manual start forgets it all.
    h.layer.spawnFails = undefined;
    h.vassal.start({ manual: true });
    await h.running(4);
    assert.equal(h.vassal.snapshot().fatalReason, null);
  });

  it('not ready within start.timeout → stopping → backoff, reason kept', async () => {
    const h = harness(spec('start: { ready: { notify: true }, timeout: 30ms }\n'));
    h.vassal.start();
    const p = await h.layer.nth(1);
    await h.until('backoff');
    assert.deepEqual(h.states, ['starting', 'stopping', 'backoff']);
    assert.deepEqual(p.signals, ['SIGTERM']);
    assert.equal(h.vassal.snapshot().lastExit?.reason, 'not ready within 30ms');
    assert.deepEqual(h.order, ['deregister', 'SIGTERM']);
  });

  it('restart: stopping → starting → running, forgetting failures', async () => {
    const h = harness(spec());
    h.vassal.start();
    (await h.running(1)).exit({ code: 1, signal: null });
    await h.running(2);
    assert.equal(h.vassal.snapshot().failures, 1);
    const done = h.vassal.restart();
    await h.running(3);
    await done;
    assert.deepEqual(h.states.slice(-4), ['running', 'stopping', 'starting', 'running']);
    assert.equal(h.vassal.snapshot().failures, 0);
  });

  it('a reload swaps the spec only when the new process starts', async () => {
    const h = harness(spec());
    h.vassal.start();
    await h.running(1);
    const next = spec('env: { V: "2" }\n');
    const done = h.vassal.restart(next);
    assert.equal(h.vassal.spec, next);
    assert.notEqual(h.vassal.runningSpec, next);
    (await h.layer.nth(2)).ready();
    await done;
    assert.equal(h.vassal.runningSpec, next);
    assert.equal(h.layer.spawned[1]!.req.env.V, '2');
  });

  it('stop during backoff → stopped, and the retry never comes', async (t) => {
    // The retry timer is the only timer here; the test moves time past it by hand.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const h = harness(spec('backoff: { initial: 50ms, max: 50ms }\n'));
    h.vassal.start();
    (await h.running(1)).exit({ code: 1, signal: null });
    await h.until('backoff');
    await h.vassal.stop();
    assert.equal(h.vassal.state, 'stopped');
    t.mock.timers.tick(60_000);
    await tick();
    assert.equal(h.layer.spawned.length, 1, 'nothing spawns after the back-off delay');
    assert.deepEqual(h.states, ['starting', 'running', 'backoff', 'stopped']);
  });

  it('a stop asked while stopping for a restart wins: it stays stopped', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const h = harness(spec(), { beforeStop: () => gate });
    h.vassal.start();
    await h.running(1);
    void h.vassal.restart();
    const stopped = h.vassal.stop();
    release();
    await stopped;
    assert.equal(h.vassal.state, 'stopped');
    assert.equal(h.layer.spawned.length, 1);
  });

  it('health critical for restart_after results restarts it as a failure', async () => {
    const h = harness(spec('checks: [{ name: beat, ttl: 1h }]\non_critical: { restart_after: 1 }\n'));
    h.vassal.start();
    await h.running(1);
    h.vassal.pushTtl('beat', 'critical', 'down');
    await h.until('backoff');
    assert.deepEqual(h.states, ['starting', 'running', 'stopping', 'backoff']);
    assert.match(h.vassal.snapshot().lastExit?.reason ?? '', /health critical for 1 check result/);
  });
});

describe('restart intensity (backoff.max_restarts)', () => {
  it('an app that crashes just past reset_after goes fatal once max_restarts is exceeded, and says why', async () => {
    const h = harness(spec('backoff: { initial: 1ms, max: 1ms, reset_after: 30s, max_retries: 3, max_restarts: { count: 4, within: 5m } }\n'));
    h.vassal.start();
    for (let n = 1; n <= 5; n++) {
      const p = await h.running(n);
      // Each run lasts 31 s: long enough that max_retries starts counting over every time.
      h.clock += 31_000;
      p.exit({ code: 1, signal: null });
      await h.vassal.until((s) => s === 'backoff' || s === 'fatal');
      assert.equal(h.vassal.snapshot().failures, 1, 'reset_after forgives each failure in a row');
    }
    assert.equal(h.vassal.state, 'fatal');
    assert.equal(h.layer.spawned.length, 5, '4 restarts allowed within 5m, the 5th failure gives up');
    const why = h.vassal.snapshot().fatalReason ?? '';
    assert.match(why, /restarted 4 times within 5m \(backoff\.max_restarts\); last: exited with code 1/);
    await tick();
    assert.ok(h.log.entries.some((e) => e.level === 'error' && e.event === 'fatal' && e.message === why), 'the log says why');
  });

  it('restarts older than the window do not count', async () => {
    const h = harness(spec('backoff: { initial: 1ms, max: 1ms, reset_after: 30s, max_restarts: { count: 2, within: 1m } }\n'));
    h.vassal.start();
    for (let n = 1; n <= 6; n++) {
      const p = await h.running(n);
      h.clock += 40_000; // two restarts never fit in one minute
      p.exit({ code: 1, signal: null });
      await h.until('backoff');
    }
    await h.running(7);
  });
});
