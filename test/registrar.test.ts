// The registrar against a fake adapter the test answers by hand: batching, retry, removal
// priority, the one-removal-per-vassal rule, anti-entropy, slow versus down. Retry timers and
// the clock are node:test's mock timers, moved by the test; nothing races a real timer.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, it, type TestContext } from './support/test.js';
import { Registrar, type RegistrarOptions } from '../src/registrar/registrar.js';
import type { Change, Observed, Registration, RegistryAdapter } from '../src/registrar/types.js';

const OPTS: RegistrarOptions = {
  antiEntropyMs: 3_600_000,
  deregisterBoundMs: 2000,
  retryMinMs: 5000,
  retryMaxMs: 5000,
  downLogEveryMs: 600_000,
  slowIsDownAfterMs: 3000,
};

function reg(vassal: string, more: Partial<Registration> = {}): Registration {
  return {
    id: `host-${vassal}`,
    vassal,
    type: 'http',
    name: vassal,
    location: '127.0.0.1:8080',
    address: '127.0.0.1',
    port: 8080,
    tags: [],
    meta: {},
    health: 'passing',
    checks: [],
    pid: 1,
    deregisterWhenCritical: false,
    nativeChecks: [],
    ...more,
  };
}

interface Call {
  readonly changes: readonly Change[];
  ok(): void;
  fail(err: Error): void;
}

/** A registry that holds id → fingerprint and answers each apply() when the test says so. */
class FakeAdapter extends EventEmitter implements RegistryAdapter {
  readonly kind = 'etcd' as const;
  readonly description = 'fake registry';
  readonly store = new Map<string, Observed>();
  readonly calls: Call[] = [];
  /** Answer every call at once with this (undefined: leave it to the test). */
  auto: 'ok' | Error | undefined = 'ok';
  private reset: Array<() => void> = [];

  fingerprint(r: Registration): string {
    return `${r.type}/${r.name} ${r.location} ${r.health}`;
  }

  apply(changes: readonly Change[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const call: Call = {
        changes,
        ok: () => {
          for (const c of changes) {
            if (c.op === 'put') this.store.set(c.reg.id, { key: { id: c.reg.id, type: c.reg.type, name: c.reg.name }, fingerprint: this.fingerprint(c.reg) });
            else this.store.delete(c.key.id);
          }
          resolve();
        },
        fail: reject,
      };
      this.calls.push(call);
      this.emit('call', call);
      const auto = this.auto;
      if (auto === 'ok') call.ok();
      else if (auto) call.fail(auto);
    });
  }

  /** When set, snapshot() answers (with what the store held when asked) only once this resolves. */
  snapshotGate: Promise<void> | undefined;

  async snapshot(): Promise<Map<string, Observed>> {
    const seen = new Map(this.store);
    await this.snapshotGate;
    return seen;
  }

  onReset(listener: () => void): void {
    this.reset.push(listener);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The n-th call (1-based), once it has been made. */
  async call(n: number): Promise<Call> {
    while (this.calls.length < n) await new Promise((r) => this.once('call', r));
    return this.calls[n - 1]!;
  }
}

const ops = (c: Call): string[] => c.changes.map((ch) => (ch.op === 'put' ? `put ${ch.reg.id}` : `delete ${ch.key.id}`));

/** Let queued immediates and promise callbacks run (the registrar batches per tick). */
async function settleTicks(): Promise<void> {
  for (let i = 0; i < 5; i++) await tick();
}

class SlowError extends Error {
  readonly slow = true;
}

function setup(t: TestContext, auto: FakeAdapter['auto'] = 'ok') {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  const adapter = new FakeAdapter();
  adapter.auto = auto;
  const logs: Array<{ level: string; message: string; event?: unknown }> = [];
  const registrar = new Registrar([adapter], (level, message, fields) => logs.push({ level, message, event: fields?.event }), OPTS);
  t.after(() => registrar.close());
  return { adapter, registrar, logs };
}

/** a registered; then the registry refuses, and b's registration is its first failed call. */
async function aRegisteredThenBFailing(t: TestContext) {
  const ctx = setup(t);
  ctx.registrar.ready('a', reg('a'));
  await ctx.registrar.settled();
  ctx.adapter.auto = new Error('connection refused');
  ctx.registrar.ready('b', reg('b'));
  await ctx.adapter.call(2);
  return ctx;
}

describe('registrar (fake adapter)', () => {
  it('batches what arrives in one tick into one call', async (t) => {
    const { adapter, registrar } = setup(t);
    registrar.ready('a', reg('a'));
    registrar.ready('b', reg('b'));
    registrar.ready('c', reg('c'));
    await registrar.settled();
    assert.equal(adapter.calls.length, 1);
    assert.deepEqual(ops(adapter.calls[0]!), ['put host-a', 'put host-b', 'put host-c']);
    assert.equal(registrar.registrationOf('b')?.id, 'host-b');
  });

  it('retries after a failure with back-off, and says when the registry is back', async (t) => {
    const { adapter, registrar, logs } = setup(t, new Error('connection refused'));
    registrar.ready('a', reg('a'));
    await adapter.call(1);
    await settleTicks();
    assert.deepEqual(registrar.status()[0]!.up, false);
    assert.ok(logs.some((l) => l.level === 'error' && l.event === 'registry-down'));
    adapter.auto = 'ok';
    assert.equal(adapter.calls.length, 1, 'no retry before the delay');
    t.mock.timers.tick(OPTS.retryMinMs);
    await registrar.settled();
    assert.equal(adapter.calls.length, 2);
    assert.ok(adapter.store.has('host-a'));
    assert.ok(logs.some((l) => l.event === 'registry-up'));
    assert.equal(registrar.status()[0]!.up, true);
  });

  it('a crash is deregistered at once, not behind a pending retry timer', async (t) => {
    const { adapter, registrar } = await aRegisteredThenBFailing(t);
    // The registry failed once: registering b now waits for a retry timer.
    adapter.auto = 'ok';
    await settleTicks();
    // a crashes: its removal goes out now, without the clock moving.
    registrar.gone('a');
    await settleTicks();
    assert.ok(adapter.calls.length >= 3, 'the removal was sent without waiting for the retry delay');
    assert.deepEqual(ops(adapter.calls[2]!), ['delete host-a']);
    assert.ok(!adapter.store.has('host-a'));
  });

  it('back after an outage: the first call is the pending removal, even when a registration was due to retry first', async (t) => {
    // b's registration fails first, so its retry is due first...
    const { adapter, registrar } = await aRegisteredThenBFailing(t);
    await settleTicks();
    t.mock.timers.tick(1000);
    // ...and a's removal, sent at once and failing too, is due a second later.
    registrar.gone('a');
    await adapter.call(3);
    await settleTicks();
    assert.deepEqual(ops(adapter.calls[2]!), ['delete host-a']);
    adapter.auto = 'ok';
    t.mock.timers.tick(OPTS.retryMinMs - 1000);
    await registrar.settled();
    // Registering b first would show b and the stopped a side by side in the registry.
    assert.deepEqual(ops(adapter.calls[3]!), ['delete host-a'], 'the removal is the first call once the registry is tried again');
    assert.deepEqual(ops(adapter.calls[4]!), ['put host-b']);
    assert.ok(!adapter.store.has('host-a') && adapter.store.has('host-b'));
  });

  it('removals go first, in their own call, and do not wait behind a slow registration', async (t) => {
    const { adapter, registrar } = setup(t);
    registrar.ready('a', reg('a'));
    registrar.ready('c', reg('c'));
    await registrar.settled();
    adapter.auto = undefined;
    registrar.ready('b', reg('b'));
    registrar.gone('a');
    const first = await adapter.call(2);
    assert.deepEqual(ops(first), ['delete host-a'], 'the removal is sent before the registration');
    first.ok();
    const put = await adapter.call(3);
    assert.deepEqual(ops(put), ['put host-b']);
    // b's registration hangs; c crashes meanwhile: its removal does not wait for that call.
    registrar.gone('c');
    const removeC = await adapter.call(4);
    assert.deepEqual(ops(removeC), ['delete host-c']);
    removeC.ok();
    put.ok();
    await registrar.settled();
    assert.deepEqual([...adapter.store.keys()], ['host-b']);
  });

  it('one removal per vassal: a stop awaits the removal a crash or state change already started', async (t) => {
    const { adapter, registrar } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    adapter.auto = undefined;
    registrar.gone('a');
    let stopped = false;
    const stop = registrar.stopping('a').then(() => (stopped = true));
    const call = await adapter.call(2);
    await settleTicks();
    assert.equal(stopped, false, 'the stop waits for the removal that is in flight');
    call.ok();
    await stop;
    assert.equal(adapter.calls.length, 2, 'one delete, not two');
  });

  it('a stop goes ahead after deregister_timeout when the registry never answers', async (t) => {
    const { adapter, registrar, logs } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    adapter.auto = undefined;
    let stopped = false;
    const stop = registrar.stopping('a').then(() => (stopped = true));
    await adapter.call(2);
    t.mock.timers.tick(OPTS.deregisterBoundMs - 1);
    await settleTicks();
    assert.equal(stopped, false);
    t.mock.timers.tick(1);
    await stop;
    assert.ok(logs.some((l) => l.event === 'deregister-timeout'));
  });

  it('a health change after the vassal left does not register it again', async (t) => {
    const { adapter, registrar } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    await registrar.stopping('a');
    registrar.healthChanged('a', reg('a', { health: 'critical' }));
    await registrar.settled();
    assert.equal(adapter.store.size, 0);
    assert.equal(registrar.registrationOf('a'), undefined);
  });

  it('ready again while the old removal is in flight: registered after it lands', async (t) => {
    const { adapter, registrar } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    adapter.auto = undefined;
    registrar.gone('a');
    const del = await adapter.call(2);
    registrar.ready('a', reg('a', { pid: 2 }));
    await settleTicks();
    assert.equal(adapter.calls.length, 2, 'the put waits for the delete at the same spot');
    adapter.auto = 'ok';
    del.ok();
    await registrar.settled();
    assert.deepEqual(ops(adapter.calls[2]!), ['put host-a']);
    assert.ok(adapter.store.has('host-a'));
  });

  it('a reload that renames the service removes the old registration', async (t) => {
    const { adapter, registrar } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    registrar.ready('a', reg('a', { id: 'host-a2', name: 'a2' }));
    await registrar.settled();
    assert.deepEqual([...adapter.store.keys()], ['host-a2']);
  });

  it('anti-entropy repairs a hand-deleted registration and removes a leftover', async (t) => {
    const { adapter, registrar, logs } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    adapter.store.delete('host-a');
    adapter.store.set('host-ghost', { key: { id: 'host-ghost', type: 'http', name: 'ghost' }, fingerprint: 'x' });
    await registrar.compareNow();
    await registrar.settled();
    assert.deepEqual([...adapter.store.keys()], ['host-a']);
    assert.ok(logs.some((l) => l.event === 'registry-drift' && /repairing 2/.test(l.message)));
  });

  it('a removal goes out during an anti-entropy snapshot, which then does not count it as drift', async (t) => {
    const { adapter, registrar, logs } = setup(t);
    registrar.ready('a', reg('a'));
    await registrar.settled();
    let release!: () => void;
    adapter.snapshotGate = new Promise((r) => (release = r));
    const comparing = registrar.compareNow();
    await settleTicks();
    registrar.gone('a');
    const del = await adapter.call(2);
    assert.deepEqual(ops(del), ['delete host-a'], 'the removal did not wait for the snapshot');
    // The snapshot was taken before the delete and still shows host-a.
    release();
    await comparing;
    await registrar.settled();
    assert.equal(adapter.calls.length, 2, 'no second delete');
    assert.ok(!logs.some((l) => l.event === 'registry-drift'), 'no drift reported');
  });

  it('a call that times out is "slow" (a warning); down only when it keeps failing', async (t) => {
    const { adapter, registrar, logs } = setup(t, new SlowError('no answer within 1500 ms'));
    registrar.ready('a', reg('a'));
    await adapter.call(1);
    await settleTicks();
    assert.deepEqual(
      logs.map((l) => [l.level, l.event]),
      [['warn', 'registry-slow']],
    );
    assert.deepEqual({ up: registrar.status()[0]!.up, slow: registrar.status()[0]!.slow }, { up: true, slow: true });
    // Still timing out after slowIsDownAfterMs: now it is down.
    t.mock.timers.tick(OPTS.retryMinMs);
    await adapter.call(2);
    await settleTicks();
    assert.equal(registrar.status()[0]!.up, false);
    assert.ok(logs.some((l) => l.level === 'error' && l.event === 'registry-down' && /unreachable \(failing for 5s\)/.test(l.message)));
  });

  it('a refused call is down at once', async (t) => {
    const { adapter, registrar, logs } = setup(t, new Error('connection refused'));
    registrar.ready('a', reg('a'));
    await adapter.call(1);
    await settleTicks();
    assert.deepEqual(
      logs.map((l) => [l.level, l.event]),
      [['error', 'registry-down']],
    );
  });
});
