// The emperor registering vassals in Consul (the agent double under test/consul, or a real
// agent named by EMPEROR_TEST_CONSUL_ADDR), together with etcd.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from './support/test.js';
import { Etcd3 } from 'etcd3';
import { startConsulDouble, type ConsulDouble } from './consul/double.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { startEtcd, type EtcdServer } from './support/etcd.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';
import { isRunning, signalWhenArmed } from './support/proc.js';
import { waitFor } from './support/wait.js';

const HTTP_APP = fixture('http-app.js');
const REAL_AGENT = process.env.EMPEROR_TEST_CONSUL_ADDR;
const needsDouble = (t: TestContext, why: string): boolean => {
  if (!REAL_AGENT) return false;
  t.skip(`needs the double: ${why}`);
  return true;
};

interface AgentService {
  ID: string;
  Service: string;
  Port: number;
  Tags: string[];
  Meta: Record<string, string>;
}
interface AgentCheck {
  CheckID: string;
  ServiceID: string;
  Status: string;
  Output: string;
}

/** A read-only view of the agent through its HTTP API (works with the double and a real agent). */
function agent(address: string, token?: string) {
  const headers: Record<string, string> = token ? { 'X-Consul-Token': token } : {};
  const get = async <T>(p: string): Promise<T> => {
    const r = await fetch(`http://${address}${p}`, { headers });
    if (!r.ok) throw new Error(`${p}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
  return {
    services: () => get<Record<string, AgentService>>('/v1/agent/services'),
    checks: () => get<Record<string, AgentCheck>>('/v1/agent/checks'),
    health: (name: string, query = '') => get<unknown[]>(`/v1/health/service/${encodeURIComponent(name)}${query}`),
  };
}

function vassal(port: number, service: Record<string, unknown>, env: Record<string, string> = {}, extra: Record<string, unknown> = {}): object {
  return {
    command: [process.execPath, HTTP_APP],
    env: { PORT: String(port), ...env },
    service: { port, ...service },
    backoff: { initial: '50ms', max: '200ms', max_retries: 20 },
    ...extra,
  };
}

const serviceId = (vassalName: string): string => `${os.hostname().replace(/[^A-Za-z0-9_.-]+/g, '-')}-${vassalName}`;

describe('Consul registration', () => {
  let consul: ConsulDouble | undefined;
  let address: string;
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  let view: ReturnType<typeof agent>;

  before(async () => {
    if (REAL_AGENT) address = REAL_AGENT;
    else {
      consul = await startConsulDouble();
      address = consul.address;
    }
    view = agent(address, process.env.EMPEROR_TEST_CONSUL_TOKEN);
    ws = await makeWorkspace();
    emp = await EmperorUnderTest.start(ws, [
      '--consul-agent',
      address,
      '--consul-check-ttl',
      '600ms',
      '--consul-deregister-critical-after',
      '1m',
      '--anti-entropy-interval',
      '300ms',
    ]);
  });
  after(async () => {
    await emp?.stop();
    await consul?.stop();
  });

  it('registers on ready with a health check and a liveness check carrying DeregisterCriticalServiceAfter, and heartbeats them', async () => {
    const port = await freePort();
    const envDump = path.join(ws.root, 'consul-env.json');
    await emp.writeVassal(
      'web.yaml',
      vassal(port, { name: 'web', tags: ['v1'], meta: { version: '3' } }, { APP_WAIT_SIGNAL: '1', ENV_DUMP: envDump, APP_ARMED: path.join(ws.root, 'web.armed') }, { start: { ready: { tcp: `127.0.0.1:${port}`, interval: '50ms' } } }),
    );
    const spawned = await emp.waitEvent('web', 'spawned');
    await waitFor(async () => (await emp.vassal('web')).uptimeMs! > 400, 'starting for a while');
    assert.equal((await view.services())[serviceId('web')], undefined, 'not registered before ready');
    await signalWhenArmed(path.join(ws.root, 'web.armed'), spawned.pid as number);
    await emp.waitEvent('web', 'ready');
    await waitFor(async () => (await view.services())[serviceId('web')] !== undefined, 'registered');
    const svc = (await view.services())[serviceId('web')]!;
    assert.equal(svc.Service, 'web');
    assert.equal(svc.Port, port);
    assert.deepEqual(svc.Tags, ['v1']);
    assert.equal(svc.Meta.version, '3');
    await waitFor(async () => (await view.checks())[`service:${serviceId('web')}`]?.Status === 'passing', 'health check passing');
    await waitFor(async () => (await view.checks())[`service:${serviceId('web')}:liveness`]?.Status === 'passing', 'liveness check passing');
    if (consul) {
      const check = consul.checks().find((c) => c.CheckID === `service:${serviceId('web')}`)!;
      assert.equal(check.DeregisterCriticalServiceAfter, '', 'the health check never deregisters');
      assert.ok(check.TTL);
      const live = consul.checks().find((c) => c.CheckID === `service:${serviceId('web')}:liveness`)!;
      assert.equal(live.DeregisterCriticalServiceAfter, '1m0s');
      assert.ok(live.TTL);
      // Heartbeats keep it passing across several TTLs: count them, and watch for any lapse.
      const checkId = `service:${serviceId('web')}`;
      const statuses: string[] = [];
      const onStatus = (ev: { CheckID: string; Status: string }): void => {
        if (ev.CheckID === checkId) statuses.push(ev.Status);
      };
      consul.events.on('check-status', onStatus);
      const beats = (): number => consul!.requests.filter((r) => r.path === `/v1/agent/check/update/${checkId}`).length;
      const before = beats();
      await waitFor(() => beats() >= before + 6, 'six heartbeats (about three TTLs)');
      consul.events.off('check-status', onStatus);
      assert.ok(!statuses.includes('critical'), `lapsed: ${statuses.join(',')}`);
      assert.equal(consul.checks().find((c) => c.CheckID === checkId)!.Status, 'passing');
    }
    const env = JSON.parse(await fs.readFile(envDump, 'utf8')) as Record<string, string>;
    assert.equal(env.CONSUL_HTTP_ADDR, address);
    assert.equal(env.EMPEROR_SERVICE_ID, serviceId('web'));
  });

  it('feeds the health check from health changes, with status and output; a critical app stays listed but not ?passing', async () => {
    const port = await freePort();
    await emp.writeVassal('ttlfed.yaml', vassal(port, {}, {}, { checks: [{ name: 'beat', ttl: '1m' }] }));
    await emp.waitEvent('ttlfed', 'ready');
    const id = `service:${serviceId('ttlfed')}`;
    await waitFor(async () => (await view.checks())[id]?.Status === 'critical', 'critical at first (ttl checks start critical)');
    assert.equal((await view.checks())[`${id}:liveness`]?.Status, 'passing', 'alive while critical');
    assert.equal((await view.health('ttlfed')).length, 1, 'listed while critical');
    assert.deepEqual(await view.health('ttlfed', '?passing'), [], 'not offered to ?passing consumers');
    await emp.cli(['check', 'warn', 'ttlfed', '--note', 'disk 91%']);
    await waitFor(async () => (await view.checks())[id]?.Status === 'warning', 'warning reported');
    assert.match((await view.checks())[id]!.Output, /disk 91%/);
    await emp.cli(['check', 'pass', 'ttlfed', '--note', 'fine']);
    await waitFor(async () => (await view.checks())[id]?.Status === 'passing', 'passing reported');
    assert.equal((await view.health('ttlfed', '?passing')).length, 1, 'offered again once passing');
  });

  it('deregisters before the stop signal; a crash deregisters at once', async () => {
    const port = await freePort();
    const probeOut = path.join(ws.root, 'consul-probe');
    const termAt = path.join(ws.root, 'consul-term-at');
    await emp.writeVassal(
      'leaving.yaml',
      vassal(port, {}, { PROBE_CONSUL_URL: `http://${address}`, PROBE_SERVICE_ID: serviceId('leaving'), PROBE_OUT: probeOut, SIGTERM_AT: termAt }),
    );
    await emp.waitEvent('leaving', 'ready');
    await waitFor(async () => (await view.services())[serviceId('leaving')] !== undefined, 'registered');
    let deregisteredAt = 0;
    const onDereg = (ev: { ID: string }): void => {
      if (ev.ID === serviceId('leaving')) deregisteredAt = Date.now();
    };
    consul?.events.on('service-deregistered', onDereg);
    const r = await emp.cli(['stop', 'leaving']);
    consul?.events.off('service-deregistered', onDereg);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await fs.readFile(probeOut, 'utf8'), 'absent', 'the app saw itself deregistered when SIGTERM arrived');
    if (consul) {
      // Causal order, default drain 0: the agent had deregistered it before the app got SIGTERM.
      assert.ok(deregisteredAt > 0, 'deregistration observed');
      assert.ok(deregisteredAt <= Number(await fs.readFile(termAt, 'utf8')), 'deregistered before the stop signal');
    }

    await emp.cli(['start', 'leaving']);
    const again = await emp.vassal('leaving');
    await waitFor(async () => (await view.services())[serviceId('leaving')] !== undefined, 'registered again');
    process.kill(again.pid!, 'SIGKILL');
    await waitFor(async () => (await view.services())[serviceId('leaving')] === undefined, 'gone after the crash', 3000);
  });

  it('an agent restart, or a service removed behind its back, is repaired by anti-entropy', async (t) => {
    // Double only: the fault is an agent restart, which a test cannot do to a real agent.
    if (needsDouble(t, 'restarts the agent')) return;
    const port = await freePort();
    await emp.writeVassal('survivor.yaml', vassal(port, {}));
    await emp.waitEvent('survivor', 'ready');
    await waitFor(async () => (await view.services())[serviceId('survivor')] !== undefined, 'registered');
    await consul!.stop();
    await consul!.start();
    assert.equal((await view.services())[serviceId('survivor')], undefined, 'the restart lost it');
    await waitFor(async () => (await view.services())[serviceId('survivor')] !== undefined, 're-registered after the agent restart', 5000);
    await fetch(`http://${address}/v1/agent/service/deregister/${serviceId('survivor')}`, { method: 'PUT' });
    await waitFor(async () => (await view.services())[serviceId('survivor')] !== undefined, 're-registered after a hand deregistration', 5000);
  });
});

describe('Consul and etcd together', () => {
  it('registers in both, fails over between agents, and a SIGKILLed emperor is cleaned up by Consul', async (t) => {
    // Double only: the fault is the first of two agents being down, and Consul's reaping
    // (DeregisterCriticalServiceAfter, at least 1m on a real agent) is asserted with a short window.
    // (consul-adapter.test's SIGKILL test covers the removal against a real agent too.)
    if (needsDouble(t, 'stops an agent and needs a short DeregisterCriticalServiceAfter')) return;
    const consulA = await startConsulDouble();
    const consulB = await startConsulDouble();
    const etcd: EtcdServer = await startEtcd();
    const client = new Etcd3({ hosts: etcd.clientUrl });
    try {
      await consulA.stop(); // the first agent is down from the start
      const emp = await EmperorUnderTest.start(await makeWorkspace(), [
        '--consul-agent',
        `${consulA.address},${consulB.address}`,
        '--consul-check-ttl',
        '300ms',
        '--consul-deregister-critical-after',
        '500ms',
        '--etcd-endpoint',
        etcd.endpoint,
        '--tree-root',
        '/both',
        '--lease-ttl',
        '1s',
      ]);
      const port = await freePort();
      await emp.writeVassal('dual.yaml', vassal(port, {}));
      const ready = await emp.waitEvent('dual', 'ready');
      await waitFor(() => consulB.services().some((s) => s.ID === serviceId('dual')), 'registered with the second agent');
      await waitFor(async () => (await client.get('/both/services/default/dual').string()) !== null, 'registered in etcd');
      await emp.stop('SIGKILL');
      await waitFor(() => !isRunning(ready.pid as number), 'vassal died with the emperor');
      const removed = await new Promise<{ reason: string; CheckID?: string }>((resolve) => {
        const check = (): void => {
          if (!consulB.services().some((s) => s.ID === serviceId('dual'))) resolve({ reason: 'already' });
        };
        consulB.events.on('service-deregistered', (e: { ID: string; reason: string; CheckID?: string }) => {
          if (e.ID === serviceId('dual')) resolve(e);
        });
        check();
      });
      assert.ok(['critical', 'already'].includes(removed.reason), removed.reason);
      if (removed.reason === 'critical') assert.equal(removed.CheckID, `service:${serviceId('dual')}:liveness`, 'removed because the liveness check lapsed');
      await waitFor(async () => (await client.get('/both/services/default/dual').string()) === null, 'etcd key gone with the lease', 15000);
    } finally {
      client.close();
      await etcd.dispose();
      await consulB.stop();
    }
  });

  it('a Consul token is sent to the agent and never shows in logs, status or vassal env', async (t) => {
    // Double only: the token must be one the agent enforces, i.e. an agent whose ACLs the test set up.
    if (needsDouble(t, 'needs an agent with a known ACL token')) return;
    const token = 'b1gs3cret-consul-token';
    const consul = await startConsulDouble({ aclToken: token });
    try {
      const ws = await makeWorkspace();
      const envDump = path.join(ws.root, 'env.json');
      const metricsPort = await freePort();
      const emp = await EmperorUnderTest.start(ws, ['--consul-agent', consul.address, '--metrics', `127.0.0.1:${metricsPort}`], { ...process.env, CONSUL_HTTP_TOKEN: token });
      const port = await freePort();
      await emp.writeVassal('secretive.yaml', vassal(port, {}, { ENV_DUMP: envDump }));
      await emp.waitEvent('secretive', 'ready');
      await waitFor(() => consul.services().some((s) => s.ID === serviceId('secretive')), 'registered with the token');
      assert.ok(consul.requests.filter((r) => r.path.startsWith('/v1/agent/service/register')).every((r) => r.headers['x-consul-token'] === token));
      const status = await emp.cli(['status', '--json']);
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      assert.match(metrics, /emperor_vassal_up\{vassal="secretive"\} 1/);
      const childEnv = await fs.readFile(envDump, 'utf8');
      const childArgv = await fs.readFile(`/proc/${(await emp.vassal('secretive')).pid}/cmdline`, 'utf8');
      await emp.stop();
      const everything = [JSON.stringify(emp.entries), emp.stderr, status.stdout, metrics, childEnv, childArgv].join('\n');
      assert.ok(!everything.includes(token), 'the token leaked');
    } finally {
      await consul.stop();
    }
  });
});
