// The Consul router (issue 15): which agent a registration goes to when vassal files name their
// own (consul-agent), and who gets the emperor's token. Adapters are fakes that record what they
// were asked (the real adapter is tested against the Consul double in consul-adapter.test.ts and
// through real uWSGI vassals in uwsgi.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from './support/test.js';
import { ConsulRouter, fileAgentConfig } from '../src/registries/consul/router.js';
import type { ConsulAdapter } from '../src/registries/consul/adapter.js';
import type { ConsulConfig } from '../src/registries/consul/options.js';
import type { Change, Observed, Registration } from '../src/registrar/types.js';
import { Secret } from '../src/net/endpoints.js';

const BASE: ConsulConfig = {
  agents: ['10.0.0.1:8500', '10.0.0.2:8500'],
  scheme: 'http',
  ca: undefined,
  token: new Secret('emperor-token'),
  basicAuth: undefined,
  dc: undefined,
  consistency: 'default',
  checkTtlMs: 5_000,
  deregisterCriticalAfterMs: 60_000,
  description: 'consul 10.0.0.1:8500,10.0.0.2:8500 (token set)',
};

function reg(id: string, agents: string[] = []): Registration {
  return {
    id,
    vassal: id,
    type: 'default',
    name: id,
    location: '127.0.0.1:1',
    address: '127.0.0.1',
    port: 1,
    tags: [],
    meta: {},
    health: 'passing',
    checks: [],
    pid: 1,
    deregisterWhenCritical: false,
    nativeChecks: [],
    consulAgents: agents,
  };
}

class Fake {
  readonly applied: Change[] = [];
  held = new Map<string, Observed>();
  constructor(readonly cfg: ConsulConfig) {}
  get description(): string {
    return this.cfg.description;
  }
  get agentAddress(): string {
    return this.cfg.agents[0] ?? '';
  }
  fingerprint(r: Registration): string {
    return `fp-${r.id}`;
  }
  apply(changes: readonly Change[]): Promise<void> {
    this.applied.push(...changes);
    return Promise.resolve();
  }
  snapshot(): Promise<Map<string, Observed>> {
    return Promise.resolve(new Map(this.held));
  }
  onReset(): void {}
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function router(base: ConsulConfig | undefined): { r: ConsulRouter; fakes: Fake[] } {
  const fakes: Fake[] = [];
  const r = new ConsulRouter(base, (cfg) => {
    const f = new Fake(cfg);
    fakes.push(f);
    return f as unknown as ConsulAdapter;
  });
  return { r, fakes };
}

const ops = (f: Fake | undefined): string[] => (f?.applied ?? []).map((c) => `${c.op} ${c.op === 'put' ? c.reg.id : c.key.id}`);

describe('ConsulRouter', () => {
  it('without --consul-agent takes only registrations whose file names an agent, and is idle until then', async () => {
    const { r, fakes } = router(undefined);
    assert.equal(r.active, false);
    assert.equal(r.accepts(reg('plain')), false);
    assert.equal(r.accepts(reg('own', ['127.0.0.1:8500'])), true);
    await r.apply([{ op: 'put', reg: reg('plain') }, { op: 'put', reg: reg('own', ['127.0.0.1:8500']) }]);
    assert.equal(fakes.length, 1);
    assert.deepEqual(fakes[0]!.cfg.agents, ['127.0.0.1:8500']);
    assert.deepEqual(ops(fakes[0]), ['put own']);
    assert.equal(r.active, true);
  });

  it("sends the file's vassal to the file's agents, the others to the emperor's", async () => {
    const { r, fakes } = router(BASE);
    await r.apply([{ op: 'put', reg: reg('a') }, { op: 'put', reg: reg('b', ['10.9.9.9:8500']) }, { op: 'put', reg: reg('c', [...BASE.agents]) }]);
    const [base, other] = fakes;
    assert.deepEqual(ops(base), ['put a', 'put c'], "the same agents as the emperor's: its own adapter");
    assert.deepEqual(ops(other), ['put b']);
    await r.apply([{ op: 'delete', key: { id: 'b', type: 'default', name: 'b' } }]);
    assert.deepEqual(ops(other), ['put b', 'delete b']);
  });

  it('moves a registration whose file now names other agents (the old one is deleted)', async () => {
    const { r, fakes } = router(BASE);
    await r.apply([{ op: 'put', reg: reg('m', ['10.9.9.9:8500']) }]);
    await r.apply([{ op: 'put', reg: reg('m') }]);
    const [base, other] = fakes;
    assert.deepEqual(ops(other), ['put m', 'delete m']);
    assert.deepEqual(ops(base), ['put m']);
  });

  it('answers a snapshot from every adapter and removes a leftover through the adapter that holds it', async () => {
    const { r, fakes } = router(BASE);
    await r.apply([{ op: 'put', reg: reg('x', ['10.9.9.9:8500']) }]);
    const [base, other] = fakes;
    const seen = (id: string): Observed => ({ key: { id, type: 'default', name: id }, fingerprint: `fp-${id}` });
    base!.held.set('left', seen('left'));
    other!.held.set('x', seen('x'));
    other!.held.set('left2', seen('left2'));
    const snap = await r.snapshot();
    assert.deepEqual([...snap.keys()].sort(), ['left', 'left2', 'x']);
    await r.apply([{ op: 'delete', key: seen('left2').key }, { op: 'delete', key: seen('left').key }]);
    assert.deepEqual(ops(other), ['put x', 'delete left2']);
    assert.deepEqual(ops(base), ['delete left']);
  });

  it("gives the emperor's token only to agents that are all among its own", () => {
    assert.equal(fileAgentConfig(BASE, ['10.0.0.2:8500'], 'stale').token?.reveal(), 'emperor-token');
    assert.equal(fileAgentConfig(BASE, ['10.0.0.2:8500', '10.6.6.6:8500'], 'default').token, undefined);
    assert.equal(fileAgentConfig(BASE, ['10.6.6.6:8500'], 'default').token, undefined);
    assert.equal(fileAgentConfig(undefined, ['127.0.0.1:8500'], 'default').token, undefined);
    const cfg = fileAgentConfig(BASE, ['10.6.6.6:8500'], 'stale');
    assert.equal(cfg.consistency, 'stale');
    assert.equal(cfg.checkTtlMs, BASE.checkTtlMs, "the emperor's registration settings");
    assert.ok(!cfg.description.includes('token'));
  });
});
