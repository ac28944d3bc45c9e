// Checks the Consul agent test double (test/consul/double.ts) over real HTTP. Every assertion is
// written in terms of Consul's documented behaviour (status codes, bodies, field names), so the same
// expectations would hold against a real dev agent; the deliberate differences are in DOUBLE.md.
// The contract of its checks (IDs, statuses, TTL updates and expiry, registration and
// deregistration of checks) is also held against a real agent when EMPEROR_TEST_CONSUL_ADDR names
// one (EMPEROR_TEST_CONSUL_TOKEN its token): that suite then talks to the agent instead, touching
// only the service IDs web, web-1, web-2 and the node check IDs disk and web-extra.
import { describe, test, before, after, beforeEach, type TestContext } from '../support/test.js';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { startConsulDouble, type ConsulDouble, type RecordedRequest } from './double.js';
import { waitFor } from '../support/wait.js';

// ----- helpers ---------------------------------------------------------------------------------

interface Res {
  status: number;
  text: string;
  headers: Headers;
  json<T>(): T;
}

interface CallOptions {
  body?: unknown;
  headers?: Record<string, string>;
}

/** A real agent to hold the contract against, or undefined (the double). */
const REAL_AGENT = process.env.EMPEROR_TEST_CONSUL_ADDR || undefined;
const REAL_TOKEN = process.env.EMPEROR_TEST_CONSUL_TOKEN || undefined;

/** What the helpers talk to: the double (its url), or a real agent with its token. */
interface Target {
  readonly url: string;
  readonly token?: string;
}

async function call(c: Target, method: string, path: string, opts: CallOptions = {}): Promise<Res> {
  let body: string | Buffer | undefined;
  if (typeof opts.body === 'string' || Buffer.isBuffer(opts.body)) body = opts.body;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  const headers = { ...(c.token ? { 'X-Consul-Token': c.token } : {}), ...opts.headers };
  const r = await fetch(`${c.url}${path}`, { method, body, headers });
  const text = await r.text();
  return { status: r.status, text, headers: r.headers, json: <T>() => JSON.parse(text) as T };
}

function indexOf(r: Res): number {
  const raw = r.headers.get('x-consul-index');
  assert.ok(raw !== null, 'X-Consul-Index header present');
  return Number(raw);
}

/** Resolves when the double has received (and started handling) a matching request. */
function nextRequest(c: ConsulDouble, match: (r: RecordedRequest) => boolean): Promise<RecordedRequest> {
  return new Promise((resolve) => {
    const on = (r: RecordedRequest): void => {
      if (!match(r)) return;
      c.events.off('request', on);
      resolve(r);
    };
    c.events.on('request', on);
  });
}

interface AgentService {
  ID: string;
  Service: string;
  Tags: string[];
  Meta: Record<string, string>;
  Port: number;
  Address: string;
  Weights: { Passing: number; Warning: number };
  EnableTagOverride: boolean;
  TaggedAddresses?: Record<string, { Address: string; Port: number }>;
  Datacenter: string;
  ContentHash?: string;
}

interface Check {
  Node: string;
  CheckID: string;
  Name: string;
  Status: string;
  Notes: string;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[];
  Type: string;
  CreateIndex: number;
  ModifyIndex: number;
}

interface HealthEntry {
  Node: { ID: string; Node: string; Address: string; Datacenter: string; TaggedAddresses: Record<string, string> };
  Service: { ID: string; Service: string; Tags: string[]; Address: string; Port: number; Meta: Record<string, string> | null };
  Checks: Check[];
}

interface CatalogEntry {
  Node: string;
  Address: string;
  Datacenter: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[];
  ServiceAddress: string;
  ServicePort: number;
  ServiceMeta: Record<string, string> | null;
  ServiceEnableTagOverride: boolean;
  ServiceWeights: { Passing: number; Warning: number };
  CreateIndex: number;
  ModifyIndex: number;
}

interface KVPair {
  Key: string;
  Value: string | null;
  Flags: number;
  LockIndex: number;
  Session?: string;
  CreateIndex: number;
  ModifyIndex: number;
}

interface Session {
  ID: string;
  Name: string;
  Node: string;
  LockDelay: number;
  Behavior: string;
  TTL: string;
  NodeChecks: string[];
  ServiceChecks: { ID: string; Namespace: string }[] | null;
  Checks?: string[];
  CreateIndex: number;
  ModifyIndex: number;
}

async function register(c: Target, def: Record<string, unknown>, query = ''): Promise<void> {
  const r = await call(c, 'PUT', `/v1/agent/service/register${query}`, { body: def });
  assert.equal(r.status, 200, r.text);
}

async function agentChecks(c: Target): Promise<Record<string, Check>> {
  const r = await call(c, 'GET', '/v1/agent/checks');
  assert.equal(r.status, 200);
  return r.json<Record<string, Check>>();
}

async function checkStatus(c: Target, id: string): Promise<string | undefined> {
  return (await agentChecks(c))[id]?.Status;
}

async function createSession(c: Target, body?: Record<string, unknown>): Promise<string> {
  const r = await call(c, 'PUT', '/v1/session/create', body === undefined ? {} : { body });
  assert.equal(r.status, 200, r.text);
  return r.json<{ ID: string }>().ID;
}

async function kvGet(c: Target, key: string): Promise<KVPair | undefined> {
  const r = await call(c, 'GET', `/v1/kv/${key}`);
  if (r.status === 404) return undefined;
  assert.equal(r.status, 200, r.text);
  return r.json<KVPair[]>()[0];
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

// ----- the suites ------------------------------------------------------------------------------

void describe('consul double: agent basics', () => {
  let consul: ConsulDouble;
  before(async () => {
    consul = await startConsulDouble({ nodeName: 'node-a', datacenter: 'dc7' });
  });
  after(async () => {
    await consul.stop();
  });
  beforeEach(() => consul.reset());

  void test('listens on a loopback address and /v1/agent/self names the node and datacenter', async () => {
    assert.match(consul.address, /^127\.0\.0\.1:\d+$/);
    assert.equal(consul.url, `http://${consul.address}`);
    const r = await call(consul, 'GET', '/v1/agent/self');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    const self = r.json<{ Config: { NodeName: string; Datacenter: string; Server: boolean }; Member: { Name: string } }>();
    assert.equal(self.Config.NodeName, 'node-a');
    assert.equal(self.Config.Datacenter, 'dc7');
    assert.equal(self.Member.Name, 'node-a');
    assert.equal(r.headers.get('x-consul-default-acl-policy'), 'allow');
  });

  void test('unknown paths are 404 with Consul\'s text, wrong methods 405 with Allow, OPTIONS lists methods', async () => {
    const unknown = await call(consul, 'GET', '/v1/status/leader');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.text, 'Invalid URL path: not a recognized HTTP API endpoint\n');
    const notApi = await call(consul, 'GET', '/agent/self');
    assert.equal(notApi.status, 404);
    assert.match(notApi.text, /ensure the path starts with '\/v1\/'/);
    const wrong = await call(consul, 'GET', '/v1/agent/service/register');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.text, 'method GET not allowed');
    assert.equal(wrong.headers.get('allow'), 'OPTIONS,PUT');
    const del = await call(consul, 'POST', '/v1/kv/x');
    assert.equal(del.status, 405);
    const opts = await call(consul, 'OPTIONS', '/v1/kv/x');
    assert.equal(opts.status, 200);
    assert.equal(opts.headers.get('allow'), 'OPTIONS,GET,PUT,DELETE');
  });

  void test('?pretty indents the JSON', async () => {
    const r = await call(consul, 'GET', '/v1/catalog/services?pretty');
    assert.equal(r.status, 200);
    assert.match(r.text, /^\{\n {4}"consul": \[\]\n\}\n$/);
  });
});

void describe('consul double: service registration', () => {
  let consul: ConsulDouble;
  before(async () => {
    consul = await startConsulDouble({ nodeName: 'node-a' });
  });
  after(async () => {
    await consul.stop();
  });
  beforeEach(() => consul.reset());

  void test('a minimal registration gets Consul\'s defaults (ID = Name, empty Tags/Meta, weights 1/1)', async () => {
    await register(consul, { Name: 'web' });
    const r = await call(consul, 'GET', '/v1/agent/services');
    assert.equal(r.status, 200);
    const services = r.json<Record<string, AgentService>>();
    assert.deepEqual(Object.keys(services), ['web']);
    const web = services.web;
    assert.ok(web);
    assert.equal(web.ID, 'web');
    assert.equal(web.Service, 'web');
    assert.deepEqual(web.Tags, []);
    assert.deepEqual(web.Meta, {});
    assert.equal(web.Port, 0);
    assert.equal(web.Address, '');
    assert.deepEqual(web.Weights, { Passing: 1, Warning: 1 });
    assert.equal(web.EnableTagOverride, false);
    assert.equal(web.Datacenter, 'dc1');
  });

  void test('a full registration is returned with Consul\'s field names, keys matched case-insensitively', async () => {
    await register(consul, {
      id: 'web-1',
      name: 'web',
      Tags: ['primary', 'v1'],
      Address: '127.0.0.1',
      Port: 8080,
      Meta: { version: '1.2.3' },
      EnableTagOverride: true,
      Weights: { Passing: 10, Warning: 1 },
    });
    const r = await call(consul, 'GET', '/v1/agent/service/web-1');
    assert.equal(r.status, 200);
    const svc = r.json<AgentService>();
    assert.equal(svc.ID, 'web-1');
    assert.equal(svc.Service, 'web');
    assert.deepEqual(svc.Tags, ['primary', 'v1']);
    assert.equal(svc.Address, '127.0.0.1');
    assert.equal(svc.Port, 8080);
    assert.deepEqual(svc.Meta, { version: '1.2.3' });
    assert.equal(svc.EnableTagOverride, true);
    assert.deepEqual(svc.Weights, { Passing: 10, Warning: 1 });
    assert.deepEqual(svc.TaggedAddresses?.lan_ipv4, { Address: '127.0.0.1', Port: 8080 });
    assert.ok(svc.ContentHash && svc.ContentHash.length > 0);
    assert.equal(r.headers.get('x-consul-contenthash'), svc.ContentHash);
  });

  void test('GET /v1/agent/service/:id is 404 for an unknown ID', async () => {
    const r = await call(consul, 'GET', '/v1/agent/service/nope');
    assert.equal(r.status, 404);
    assert.match(r.text, /unknown service ID: nope/);
  });

  void test('hash-based blocking on /v1/agent/service/:id returns when the definition changes', async () => {
    await register(consul, { Name: 'web', Port: 1 });
    const first = await call(consul, 'GET', '/v1/agent/service/web');
    const hash = first.json<AgentService>().ContentHash ?? '';
    const inFlight = nextRequest(consul, (r) => r.path === '/v1/agent/service/web' && r.query.has('hash'));
    const blocked = call(consul, 'GET', `/v1/agent/service/web?hash=${hash}&wait=5s`);
    await inFlight;
    await register(consul, { Name: 'web', Port: 2 });
    const r = await blocked;
    assert.equal(r.json<AgentService>().Port, 2);
    assert.notEqual(r.headers.get('x-consul-contenthash'), hash);
  });

  void test('registration errors: missing name, bad JSON, 0.0.0.0, weights, reserved meta, bad check', async () => {
    const cases: [unknown, RegExp][] = [
      [{ Port: 80 }, /^Missing service name$/],
      ['{not json', /^Request decode failed: /],
      ['', /^Request decode failed: EOF$/],
      [{ Name: 'web', Port: '80' }, /^Request decode failed: /],
      [{ Name: 'web', Address: '0.0.0.0' }, /^Invalid service address$/],
      [{ Name: 'web', Weights: { Passing: 0, Warning: 1 } }, /^Invalid Weights: Passing must be greater than 0$/],
      [{ Name: 'web', Meta: { 'consul-x': 'y' } }, /^Invalid Service Meta: Key prefix 'consul-' is reserved/],
      [{ Name: 'web', Check: { HTTP: 'http://127.0.0.1:1/' } }, /^Invalid check: Interval must be > 0/],
      [{ Name: 'web', Check: { Notes: 'no type' } }, /^Invalid check: TTL must be > 0 for TTL checks$/],
      [{ Name: 'web', Check: { TTL: '10s', Interval: '10s' } }, /^Invalid check: Interval and TTL cannot both be specified$/],
      [{ Name: 'web', Check: { TTL: 'soon' } }, /^Request decode failed: time: invalid duration "soon"$/],
      [{ Name: 'web', Check: { TTL: '10s', Status: 'ok' } }, /^Status for checks must 'passing', 'warning', 'critical'$/],
    ];
    for (const [body, message] of cases) {
      const r = await call(consul, 'PUT', '/v1/agent/service/register', { body });
      assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.text}`);
      assert.match(r.text, message);
    }
    const script = await call(consul, 'PUT', '/v1/agent/service/register', {
      body: { Name: 'web', Check: { Args: ['/bin/true'], Interval: '10s' } },
    });
    assert.equal(script.status, 500);
    assert.match(script.text, /Scripts are disabled on this agent/);
    assert.deepEqual(consul.services(), []);
  });

  void test('deregistration removes the service and its checks; an unknown ID is 404', async () => {
    await register(consul, { Name: 'web', Checks: [{ TTL: '10s' }, { TTL: '10s' }] });
    assert.equal(consul.checks().length, 2);
    const r = await call(consul, 'PUT', '/v1/agent/service/deregister/web');
    assert.equal(r.status, 200);
    assert.deepEqual(consul.services(), []);
    assert.deepEqual(consul.checks(), []);
    assert.deepEqual(await agentChecks(consul), {});
    const again = await call(consul, 'PUT', '/v1/agent/service/deregister/web');
    assert.equal(again.status, 404);
    assert.equal(again.text, 'Unknown service ID "web". Ensure that the service ID is passed, not the service name.');
  });

  void test('accessors and the request log show what was registered, with the token and body sent', async () => {
    const seen: RecordedRequest[] = [];
    const onRequest = (r: RecordedRequest): void => {
      seen.push(r);
    };
    consul.events.on('request', onRequest);
    const before = Date.now();
    await call(consul, 'PUT', '/v1/agent/service/register?replace-existing-checks', {
      body: { Name: 'api', ID: 'api-1', Tags: ['x'], Check: { TTL: '30s' } },
      headers: { 'X-Consul-Token': 'tok' },
    });
    consul.events.off('request', onRequest);
    const [svc] = consul.services();
    assert.ok(svc);
    assert.equal(svc.ID, 'api-1');
    assert.deepEqual(svc.CheckIDs, ['service:api-1']);
    assert.ok(svc.registeredAt >= before && svc.registeredAt <= Date.now());
    const req = consul.requests.at(-1);
    assert.ok(req);
    assert.equal(req.method, 'PUT');
    assert.equal(req.path, '/v1/agent/service/register');
    assert.ok(req.query.has('replace-existing-checks'));
    assert.equal(req.headers['x-consul-token'], 'tok');
    assert.deepEqual(JSON.parse(req.body), { Name: 'api', ID: 'api-1', Tags: ['x'], Check: { TTL: '30s' } });
    assert.deepEqual(seen, [req]);
  });

  void test('reset() forgets services, KV, sessions and the request log', async () => {
    await register(consul, { Name: 'web' });
    await call(consul, 'PUT', '/v1/kv/k', { body: 'v' });
    await createSession(consul);
    consul.reset();
    assert.deepEqual(consul.services(), []);
    assert.deepEqual(consul.kv(), []);
    assert.deepEqual(consul.sessions(), []);
    assert.deepEqual(consul.requests, []);
    assert.equal((await call(consul, 'GET', '/v1/kv/k')).status, 404);
  });
});

void describe(`consul double: checks${REAL_AGENT ? ` (held against the agent at ${REAL_AGENT})` : ''}`, () => {
  /** The double, or undefined when the suite runs against a real agent. */
  let double: ConsulDouble | undefined;
  let consul: Target;
  let nodeName = 'node-a';
  /** Double only, with a reason: a real agent cannot show or do this. */
  const doubleOnly = (t: TestContext, why: string): ConsulDouble | undefined => {
    if (!double) t.skip(`needs the double: ${why}`);
    return double;
  };
  /** What these tests create on a real agent (the double is reset instead). */
  const clean = async (): Promise<void> => {
    for (const id of ['web', 'web-1', 'web-2']) await call(consul, 'PUT', `/v1/agent/service/deregister/${id}`);
    for (const id of ['disk', 'web-extra']) await call(consul, 'PUT', `/v1/agent/check/deregister/${id}`);
  };
  before(async () => {
    if (REAL_AGENT) {
      consul = { url: `http://${REAL_AGENT}`, token: REAL_TOKEN };
      nodeName = (await call(consul, 'GET', '/v1/agent/self')).json<{ Config: { NodeName: string } }>().Config.NodeName;
    } else {
      double = await startConsulDouble({ nodeName });
      consul = double;
    }
  });
  after(async () => {
    if (double) await double.stop();
    else await clean();
  });
  beforeEach(async () => {
    if (double) double.reset();
    else await clean();
  });

  void test('a TTL check starts critical; IDs default to service:<id> and service:<id>:<n>', async () => {
    await register(consul, { ID: 'web-1', Name: 'web', Tags: ['t'], Check: { TTL: '10s' } });
    await register(consul, { ID: 'web-2', Name: 'web', Checks: [{ TTL: '10s' }, { TTL: '10s', Name: 'second', CheckID: 'own-id' }] });
    const checks = await agentChecks(consul);
    assert.deepEqual(Object.keys(checks).filter((k) => k === 'own-id' || k.startsWith('service:web')).sort(), ['own-id', 'service:web-1', 'service:web-2:1']);
    const c = checks['service:web-1'];
    assert.ok(c);
    assert.equal(c.Status, 'critical');
    assert.equal(c.Name, "Service 'web' check");
    assert.equal(c.Node, nodeName);
    assert.equal(c.ServiceID, 'web-1');
    assert.equal(c.ServiceName, 'web');
    assert.deepEqual(c.ServiceTags, ['t']);
    assert.equal(c.Type, 'ttl');
    assert.equal(checks['own-id']?.Name, 'second');
  });

  void test('Status given at registration is the initial status', async () => {
    await register(consul, { Name: 'web', Check: { TTL: '10s', Status: 'passing' } });
    assert.equal(await checkStatus(consul, 'service:web'), 'passing');
  });

  void test('pass/warn/fail set the status and ?note becomes the Output; update takes Status and Output', async () => {
    await register(consul, { Name: 'web', Check: { TTL: '10s' } });
    for (const [verb, status] of [
      ['pass', 'passing'],
      ['warn', 'warning'],
      ['fail', 'critical'],
    ] as const) {
      const r = await call(consul, 'PUT', `/v1/agent/check/${verb}/service:web?note=${verb}-note`);
      assert.equal(r.status, 200, r.text);
      const c = (await agentChecks(consul))['service:web'];
      assert.equal(c?.Status, status);
      assert.equal(c?.Output, `${verb}-note`);
    }
    const u = await call(consul, 'PUT', '/v1/agent/check/update/service:web', { body: { Status: 'passing', Output: 'all good' } });
    assert.equal(u.status, 200);
    const c = (await agentChecks(consul))['service:web'];
    assert.equal(c?.Status, 'passing');
    assert.equal(c?.Output, 'all good');
    const bad = await call(consul, 'PUT', '/v1/agent/check/update/service:web', { body: { Status: 'ok' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.text, "Invalid check status: 'ok'");
  });

  void test('updating an unknown check is 404; updating a non-TTL check is 500 "does not have associated TTL"', async () => {
    const unknown = await call(consul, 'PUT', '/v1/agent/check/pass/nope');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.text, 'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.');
    await register(consul, { Name: 'web', Check: { TCP: '127.0.0.1:1', Interval: '1h' } });
    const notTtl = await call(consul, 'PUT', '/v1/agent/check/pass/service:web');
    assert.equal(notTtl.status, 500);
    assert.equal(notTtl.text, 'CheckID "service:web" does not have associated TTL');
  });

  void test('a TTL check not updated within its TTL goes critical with "TTL expired"', async () => {
    const start = Date.now();
    await register(consul, { Name: 'web', Check: { TTL: '200ms', Status: 'passing' } });
    await waitFor(async () => (await checkStatus(consul, 'service:web')) === 'critical', 'TTL expiry');
    const c = (await agentChecks(consul))['service:web'];
    assert.equal(c?.Output, 'TTL expired');
    // When it expired, only the double can say.
    const snap = double?.checks()[0];
    if (double) assert.ok(snap && snap.statusChangedAt - start >= 195, `expired after ${snap ? snap.statusChangedAt - start : NaN} ms`);
  });

  void test('after a pass with a note, expiry keeps the last output', async () => {
    // The pass is seen in the double's own events: a status read after it could already find the
    // 200 ms TTL run out on a busy machine.
    // (A real agent shows only the end state.)
    const statuses: string[] = [];
    const onStatus = (e: { CheckID: string; Status: string; Output: string }): void => {
      if (e.CheckID === 'service:web') statuses.push(`${e.Status}: ${e.Output}`);
    };
    double?.events.on('check-status', onStatus);
    try {
      await register(consul, { Name: 'web', Check: { TTL: '200ms' } });
      await call(consul, 'PUT', '/v1/agent/check/pass/service:web?note=ok');
      await waitFor(async () => (await checkStatus(consul, 'service:web')) === 'critical', 'TTL expiry');
    } finally {
      double?.events.off('check-status', onStatus);
    }
    if (double) assert.deepEqual(statuses.slice(-2), ['passing: ok', 'critical: TTL expired (last output before timeout follows): ok']);
    assert.equal((await agentChecks(consul))['service:web']?.Output, 'TTL expired (last output before timeout follows): ok');
  });

  void test('PUT /v1/agent/check/register: node-level and service checks, defaults and errors', async () => {
    const node = await call(consul, 'PUT', '/v1/agent/check/register', { body: { Name: 'disk', TTL: '10s', Notes: 'n' } });
    assert.equal(node.status, 200, node.text);
    await register(consul, { Name: 'web' });
    const svc = await call(consul, 'PUT', '/v1/agent/check/register', {
      body: { ID: 'web-extra', Name: 'extra', ServiceID: 'web', TTL: '10s', Status: 'warning' },
    });
    assert.equal(svc.status, 200, svc.text);
    const checks = await agentChecks(consul);
    assert.equal(checks.disk?.Name, 'disk');
    assert.equal(checks.disk?.ServiceID, '');
    assert.equal(checks.disk?.Notes, 'n');
    assert.equal(checks.disk?.Status, 'critical');
    assert.equal(checks['web-extra']?.ServiceName, 'web');
    assert.equal(checks['web-extra']?.Status, 'warning');

    const errors: [unknown, number, RegExp][] = [
      [{ TTL: '10s' }, 400, /^Missing check name$/],
      [{ Name: 'x', TTL: '10s', Status: 'bad' }, 400, /^Bad check status$/],
      [{ Name: 'x' }, 400, /^Invalid check: TTL must be > 0 for TTL checks$/],
      [{ Name: 'x', TTL: '10s', ServiceID: 'ghost' }, 404, /^ServiceID "ghost" does not exist$/],
    ];
    for (const [body, status, message] of errors) {
      const r = await call(consul, 'PUT', '/v1/agent/check/register', { body });
      assert.equal(r.status, status, `${JSON.stringify(body)} -> ${r.text}`);
      assert.match(r.text, message);
    }
  });

  void test('PUT /v1/agent/check/deregister/:id removes a check; unknown is 404', async () => {
    await call(consul, 'PUT', '/v1/agent/check/register', { body: { Name: 'disk', TTL: '10s' } });
    const r = await call(consul, 'PUT', '/v1/agent/check/deregister/disk');
    assert.equal(r.status, 200);
    assert.equal((await agentChecks(consul)).disk, undefined);
    const again = await call(consul, 'PUT', '/v1/agent/check/deregister/disk');
    assert.equal(again.status, 404);
  });

  void test('re-registering keeps existing checks (and their status) unless ?replace-existing-checks', async () => {
    await register(consul, { Name: 'web', Checks: [{ CheckID: 'a', TTL: '10s' }, { CheckID: 'b', TTL: '10s' }] });
    await call(consul, 'PUT', '/v1/agent/check/pass/a');
    await register(consul, { Name: 'web', Checks: [{ CheckID: 'a', TTL: '10s' }] });
    const ours = (all: Record<string, Check>): string[] => Object.keys(all).filter((k) => k === 'a' || k === 'b').sort();
    let checks = await agentChecks(consul);
    assert.deepEqual(ours(checks), ['a', 'b']);
    assert.equal(checks.a?.Status, 'passing', 're-registration does not reset the status');
    await register(consul, { Name: 'web', Checks: [{ CheckID: 'a', TTL: '10s' }] }, '?replace-existing-checks=true');
    checks = await agentChecks(consul);
    assert.deepEqual(ours(checks), ['a']);
  });

  void test('DeregisterCriticalServiceAfter removes the service once its check stayed critical that long', async (t) => {
    // Double only: a real agent raises the window to its 1m minimum and reaps every 30 s; the
    // agent.go rule these follow is quoted in DOUBLE.md.
    const d = doubleOnly(t, 'a sub-minute DeregisterCriticalServiceAfter');
    if (!d) return;
    const start = Date.now();
    const gone = new Promise<{ ID: string; reason: string; at: number }>((resolve) => {
      d.events.on('service-deregistered', (e: { ID: string; reason: string }) => resolve({ ...e, at: Date.now() }));
    });
    await register(consul, { Name: 'web', Check: { TTL: '10s', DeregisterCriticalServiceAfter: '300ms' } });
    assert.equal(d.services().length, 1);
    const e = await gone;
    d.events.removeAllListeners('service-deregistered');
    assert.equal(e.ID, 'web');
    assert.equal(e.reason, 'critical');
    assert.ok(e.at - start >= 295, `reaped after ${e.at - start} ms`);
    assert.equal((await call(consul, 'GET', '/v1/agent/service/web')).status, 404);
    assert.deepEqual((await call(consul, 'GET', '/v1/health/service/web')).json<HealthEntry[]>(), []);
  });

  void test('DeregisterCriticalServiceAfter leaves a passing service alone', async (t) => {
    // Double only: a real agent raises the window to its 1m minimum and reaps every 30 s; the
    // agent.go rule these follow is quoted in DOUBLE.md.
    const d = doubleOnly(t, 'a sub-minute DeregisterCriticalServiceAfter');
    if (!d) return;
    await register(consul, { Name: 'web', Check: { TTL: '10s', Status: 'passing', DeregisterCriticalServiceAfter: '200ms' } });
    const first = await call(consul, 'GET', '/v1/health/service/web');
    const index = indexOf(first);
    // A blocking query that times out unchanged is the proof that nothing happened meanwhile.
    const blocked = await call(consul, 'GET', `/v1/health/service/web?index=${index}&wait=600ms`);
    assert.equal(indexOf(blocked), index);
    assert.equal(blocked.json<HealthEntry[]>().length, 1);
    assert.equal(d.services().length, 1);
  });

  // agent.go reapServicesInternal: a service is removed when a check *that carries a timeout* has
  // been critical longer than it; other critical checks of the service never remove it.
  void test('only the check carrying DeregisterCriticalServiceAfter removes the service; other critical checks never do', async (t) => {
    // Double only: a real agent raises the window to its 1m minimum and reaps every 30 s; the
    // agent.go rule these follow is quoted in DOUBLE.md.
    const d = doubleOnly(t, 'a sub-minute DeregisterCriticalServiceAfter');
    if (!d) return;
    await register(consul, {
      Name: 'web',
      Checks: [
        { CheckID: 'health', TTL: '10s', Status: 'critical' },
        { CheckID: 'live', TTL: '10s', Status: 'passing', DeregisterCriticalServiceAfter: '200ms' },
      ],
    });
    const index = indexOf(await call(consul, 'GET', '/v1/health/service/web'));
    // Unchanged for three times the window while "health" is critical: nothing was removed.
    const blocked = await call(consul, 'GET', `/v1/health/service/web?index=${index}&wait=600ms`);
    assert.equal(indexOf(blocked), index);
    assert.equal(d.services().length, 1);
    const gone = new Promise<{ ID: string; reason: string; CheckID?: string }>((resolve) => d.events.once('service-deregistered', resolve));
    await call(consul, 'PUT', '/v1/agent/check/fail/live');
    const e = await gone;
    assert.deepEqual({ ID: e.ID, reason: e.reason, CheckID: e.CheckID }, { ID: 'web', reason: 'critical', CheckID: 'live' });
  });

  // agent.go addCheck: a check registered again without the timeout loses it (delete(checkReapAfter)).
  void test('re-registering a check without DeregisterCriticalServiceAfter drops the timeout', async (t) => {
    // Double only: a real agent raises the window to its 1m minimum and reaps every 30 s; the
    // agent.go rule these follow is quoted in DOUBLE.md.
    const d = doubleOnly(t, 'a sub-minute DeregisterCriticalServiceAfter');
    if (!d) return;
    await register(consul, { Name: 'web', Check: { CheckID: 'a', TTL: '10s', Status: 'passing', DeregisterCriticalServiceAfter: '200ms' } });
    await register(consul, { Name: 'web', Check: { CheckID: 'a', TTL: '10s' } }, '?replace-existing-checks');
    await call(consul, 'PUT', '/v1/agent/check/fail/a');
    const index = indexOf(await call(consul, 'GET', '/v1/health/service/web'));
    const blocked = await call(consul, 'GET', `/v1/health/service/web?index=${index}&wait=600ms`);
    assert.equal(indexOf(blocked), index);
    assert.equal(d.services().length, 1);
  });
});

void describe('consul double: HTTP and TCP checks are really run', () => {
  let consul: ConsulDouble;
  let target: http.Server;
  let code = 200;
  let port = 0;
  before(async () => {
    consul = await startConsulDouble();
    target = http.createServer((_req, res) => {
      res.writeHead(code);
      res.end('ok');
    });
    target.listen(0, '127.0.0.1');
    await once(target, 'listening');
    const addr = target.address();
    port = addr !== null && typeof addr === 'object' ? addr.port : 0;
  });
  after(async () => {
    await consul.stop();
    target.closeAllConnections();
    await new Promise((resolve) => target.close(resolve));
  });

  // checks.CheckHTTP.run: the first request waits lib.RandomStagger(Interval); until then the
  // check has its registered status and no output. (Interval 1h: that run is not due in this test.)
  void test('an HTTP check keeps its registered status and an empty output until its first run', async () => {
    await register(consul, { Name: 'later', Checks: [{ CheckID: 'h1', HTTP: `http://127.0.0.1:${port}/health`, Interval: '1h' }, { CheckID: 'h2', HTTP: `http://127.0.0.1:${port}/health`, Interval: '1h', Status: 'passing' }] });
    const checks = await agentChecks(consul);
    assert.deepEqual([checks.h1?.Status, checks.h1?.Output], ['critical', '']);
    assert.deepEqual([checks.h2?.Status, checks.h2?.Output], ['passing', '']);
    await call(consul, 'PUT', '/v1/agent/service/deregister/later');
  });

  void test('HTTP: 2xx passing, 429 warning, anything else critical, refused connection critical', async () => {
    const url = `http://127.0.0.1:${port}/health`;
    await register(consul, { Name: 'web', Check: { HTTP: url, Interval: '50ms', Timeout: '1s' } });
    await waitFor(async () => (await checkStatus(consul, 'service:web')) === 'passing', 'HTTP check passing');
    const passing = (await agentChecks(consul))['service:web'];
    assert.equal(passing?.Output, `HTTP GET ${url}: 200 OK Output: ok`);
    assert.equal(passing?.Type, 'http');
    code = 429;
    await waitFor(async () => (await checkStatus(consul, 'service:web')) === 'warning', 'HTTP check warning on 429');
    code = 503;
    await waitFor(async () => (await checkStatus(consul, 'service:web')) === 'critical', 'HTTP check critical on 503');
    code = 200;
    await waitFor(async () => (await checkStatus(consul, 'service:web')) === 'passing', 'HTTP check passing again');

    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const addr = closed.address();
    const deadPort = addr !== null && typeof addr === 'object' ? addr.port : 0;
    await new Promise((resolve) => closed.close(resolve));
    await register(consul, { Name: 'dead', Check: { HTTP: `http://127.0.0.1:${deadPort}/`, Interval: '50ms', Status: 'passing' } });
    await waitFor(async () => (await checkStatus(consul, 'service:dead')) === 'critical', 'refused HTTP check critical');
    assert.match((await agentChecks(consul))['service:dead']?.Output ?? '', /connection refused/);
  });

  void test('TCP: a successful connect is passing, a refused one critical', async () => {
    await register(consul, { Name: 'tcp', Check: { TCP: `127.0.0.1:${port}`, Interval: '50ms' } });
    await waitFor(async () => (await checkStatus(consul, 'service:tcp')) === 'passing', 'TCP check passing');
    assert.equal((await agentChecks(consul))['service:tcp']?.Output, `TCP connect 127.0.0.1:${port}: Success`);
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const addr = closed.address();
    const deadPort = addr !== null && typeof addr === 'object' ? addr.port : 0;
    await new Promise((resolve) => closed.close(resolve));
    await register(consul, { Name: 'tcp-dead', Check: { TCP: `127.0.0.1:${deadPort}`, Interval: '50ms', Status: 'passing' } });
    await waitFor(async () => (await checkStatus(consul, 'service:tcp-dead')) === 'critical', 'TCP check critical');
    assert.match((await agentChecks(consul))['service:tcp-dead']?.Output ?? '', /connection refused/);
  });
});

void describe('consul double: catalog and health', () => {
  let consul: ConsulDouble;
  before(async () => {
    consul = await startConsulDouble({ nodeName: 'node-a' });
  });
  after(async () => {
    await consul.stop();
  });
  beforeEach(async () => {
    consul.reset();
    await register(consul, { ID: 'web-1', Name: 'web', Tags: ['primary', 'v1'], Port: 8001, Check: { TTL: '10s', Status: 'passing' } });
    await register(consul, { ID: 'web-2', Name: 'web', Tags: ['v1'], Port: 8002, Check: { TTL: '10s', Status: 'warning' } });
    await register(consul, { ID: 'db-1', Name: 'db', Address: '127.0.0.2', Port: 5432, Meta: { engine: 'pg' } });
  });

  void test('GET /v1/catalog/services maps names to all their tags, including the server\'s "consul"', async () => {
    const r = await call(consul, 'GET', '/v1/catalog/services');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json<Record<string, string[]>>(), { consul: [], db: [], web: ['primary', 'v1'] });
    assert.ok(indexOf(r) > 0);
    assert.equal(r.headers.get('x-consul-knownleader'), 'true');
    assert.equal(r.headers.get('x-consul-lastcontact'), '0');
    assert.equal(r.headers.get('x-consul-effective-consistency'), 'leader');
  });

  void test('GET /v1/catalog/service/:name lists instances with Consul\'s field names; ?tag filters', async () => {
    const r = await call(consul, 'GET', '/v1/catalog/service/web');
    assert.equal(r.status, 200);
    const all = r.json<CatalogEntry[]>();
    assert.deepEqual(all.map((e) => e.ServiceID), ['web-1', 'web-2']);
    const one = all[0];
    assert.ok(one);
    assert.equal(one.Node, 'node-a');
    assert.equal(one.Address, '127.0.0.1');
    assert.equal(one.Datacenter, 'dc1');
    assert.equal(one.ServiceName, 'web');
    assert.deepEqual(one.ServiceTags, ['primary', 'v1']);
    assert.equal(one.ServicePort, 8001);
    assert.equal(one.ServiceAddress, '');
    assert.deepEqual(one.ServiceWeights, { Passing: 1, Warning: 1 });
    assert.ok(one.CreateIndex > 0 && one.ModifyIndex >= one.CreateIndex);
    const db = (await call(consul, 'GET', '/v1/catalog/service/db')).json<CatalogEntry[]>();
    assert.deepEqual(db[0]?.ServiceMeta, { engine: 'pg' });
    assert.equal(db[0]?.ServiceAddress, '127.0.0.2');
    const primary = (await call(consul, 'GET', '/v1/catalog/service/web?tag=primary')).json<CatalogEntry[]>();
    assert.deepEqual(primary.map((e) => e.ServiceID), ['web-1']);
    const both = (await call(consul, 'GET', '/v1/catalog/service/web?tag=V1&tag=primary')).json<CatalogEntry[]>();
    assert.deepEqual(both.map((e) => e.ServiceID), ['web-1'], 'every tag must match, case-insensitively');
    const none = await call(consul, 'GET', '/v1/catalog/service/ghost');
    assert.equal(none.status, 200);
    assert.deepEqual(none.json<CatalogEntry[]>(), []);
  });

  void test('GET /v1/health/service/:name returns Node/Service/Checks entries including serfHealth', async () => {
    const r = await call(consul, 'GET', '/v1/health/service/web');
    assert.equal(r.status, 200);
    const entries = r.json<HealthEntry[]>();
    assert.equal(entries.length, 2);
    const e = entries[0];
    assert.ok(e);
    assert.equal(e.Node.Node, 'node-a');
    assert.equal(e.Node.Datacenter, 'dc1');
    assert.equal(e.Node.Address, '127.0.0.1');
    assert.equal(e.Service.ID, 'web-1');
    assert.equal(e.Service.Service, 'web');
    assert.equal(e.Service.Port, 8001);
    assert.deepEqual(
      e.Checks.map((c) => [c.CheckID, c.Status]),
      [
        ['serfHealth', 'passing'],
        ['service:web-1', 'passing'],
      ],
    );
    assert.equal(e.Checks[0]?.Name, 'Serf Health Status');
    assert.ok((e.Checks[1]?.ModifyIndex ?? 0) > 0);
  });

  void test('?passing keeps only entries whose checks all pass; ?tag is repeatable; bad ?passing is 400', async () => {
    const passing = (await call(consul, 'GET', '/v1/health/service/web?passing')).json<HealthEntry[]>();
    assert.deepEqual(passing.map((e) => e.Service.ID), ['web-1'], 'warning is not passing');
    const explicitFalse = (await call(consul, 'GET', '/v1/health/service/web?passing=false')).json<HealthEntry[]>();
    assert.equal(explicitFalse.length, 2);
    const tagged = (await call(consul, 'GET', '/v1/health/service/web?tag=v1&tag=primary')).json<HealthEntry[]>();
    assert.deepEqual(tagged.map((e) => e.Service.ID), ['web-1']);
    const bad = await call(consul, 'GET', '/v1/health/service/web?passing=maybe');
    assert.equal(bad.status, 400);
    assert.equal(bad.text, 'Invalid value for ?passing');
    const unknown = await call(consul, 'GET', '/v1/health/service/ghost');
    assert.deepEqual(unknown.json<HealthEntry[]>(), []);
  });

  void test('GET /v1/health/checks/:service lists the service\'s checks (not the node\'s)', async () => {
    const r = await call(consul, 'GET', '/v1/health/checks/web');
    assert.equal(r.status, 200);
    const checks = r.json<Check[]>();
    assert.deepEqual(
      checks.map((c) => [c.CheckID, c.Status, c.ServiceID]),
      [
        ['service:web-1', 'passing', 'web-1'],
        ['service:web-2', 'warning', 'web-2'],
      ],
    );
    assert.ok(indexOf(r) > 0);
    assert.deepEqual((await call(consul, 'GET', '/v1/health/checks/db')).json<Check[]>(), []);
  });

  void test('?dc: the own datacenter works, another one is 500 "No path to datacenter"', async () => {
    assert.equal((await call(consul, 'GET', '/v1/catalog/services?dc=dc1')).status, 200);
    for (const path of [
      '/v1/catalog/services?dc=dc9',
      '/v1/catalog/service/web?dc=dc9',
      '/v1/health/service/web?dc=dc9',
      '/v1/health/checks/web?dc=dc9',
      '/v1/kv/x?dc=dc9',
      '/v1/session/list?dc=dc9',
    ]) {
      const r = await call(consul, 'GET', path);
      assert.equal(r.status, 500, path);
      assert.equal(r.text, 'No path to datacenter');
    }
    assert.equal((await call(consul, 'GET', '/v1/agent/services?dc=dc9')).status, 200, 'agent endpoints ignore ?dc');
  });

  void test('?stale and ?consistent are accepted alone and reported; together they are 400', async () => {
    const stale = await call(consul, 'GET', '/v1/health/service/web?stale');
    assert.equal(stale.status, 200);
    assert.equal(stale.headers.get('x-consul-effective-consistency'), 'stale');
    const consistent = await call(consul, 'GET', '/v1/catalog/service/web?consistent');
    assert.equal(consistent.status, 200);
    assert.equal(consistent.headers.get('x-consul-effective-consistency'), 'consistent');
    for (const path of ['/v1/health/service/web?stale&consistent', '/v1/kv/x?stale&consistent', '/v1/catalog/services?consistent&stale']) {
      const both = await call(consul, 'GET', path);
      assert.equal(both.status, 400, path);
      assert.equal(both.text, 'Cannot specify ?stale with ?consistent, conflicting semantics.');
    }
  });

  void test('a blocking health query returns as soon as a check changes, with a higher index', async () => {
    const first = await call(consul, 'GET', '/v1/health/service/web');
    const index = indexOf(first);
    const inFlight = nextRequest(consul, (r) => r.path === '/v1/health/service/web' && r.query.has('index'));
    // A wait longer than this test's deadline: an answer at all is one before the wait ran out.
    const blocked = call(consul, 'GET', `/v1/health/service/web?index=${index}&wait=5m`);
    await inFlight;
    await call(consul, 'PUT', '/v1/agent/check/pass/service:web-2');
    const r = await blocked;
    assert.ok(indexOf(r) > index);
    const web2 = r.json<HealthEntry[]>().find((e) => e.Service.ID === 'web-2');
    assert.equal(web2?.Checks.find((c) => c.CheckID === 'service:web-2')?.Status, 'passing');
  });

  void test('a blocking query with nothing to report returns the same index after ?wait', async () => {
    const index = indexOf(await call(consul, 'GET', '/v1/health/service/db'));
    const started = Date.now();
    const r = await call(consul, 'GET', `/v1/health/service/db?index=${index}&wait=300ms`);
    assert.equal(r.status, 200);
    assert.equal(indexOf(r), index);
    assert.ok(Date.now() - started >= 290, 'it waited');
  });

  void test('?wait and ?index must parse', async () => {
    const wait = await call(consul, 'GET', '/v1/health/service/web?index=1&wait=forever');
    assert.equal(wait.status, 400);
    assert.equal(wait.text, 'Invalid wait time');
    const index = await call(consul, 'GET', '/v1/health/service/web?index=-3');
    assert.equal(index.status, 400);
    assert.equal(index.text, 'Invalid index');
  });

  void test('one Raft-like index: every write raises X-Consul-Index and stamps ModifyIndex', async () => {
    const a = indexOf(await call(consul, 'GET', '/v1/catalog/services'));
    await register(consul, { Name: 'cache' });
    const b = indexOf(await call(consul, 'GET', '/v1/catalog/services'));
    assert.ok(b > a);
    await call(consul, 'PUT', '/v1/kv/one', { body: '1' });
    const one = await kvGet(consul, 'one');
    assert.ok(one && one.ModifyIndex > b);
    assert.ok(consul.index >= one.ModifyIndex);
  });
});

void describe('consul double: KV', () => {
  let consul: ConsulDouble;
  before(async () => {
    consul = await startConsulDouble();
  });
  after(async () => {
    await consul.stop();
  });
  beforeEach(() => consul.reset());

  void test('PUT then GET: base64 Value, Flags, indexes; PUT answers true', async () => {
    const put = await call(consul, 'PUT', '/v1/kv/app/config?flags=42', { body: 'hello' });
    assert.equal(put.status, 200);
    assert.equal(put.text, 'true');
    const r = await call(consul, 'GET', '/v1/kv/app/config');
    assert.equal(r.status, 200);
    const [e] = r.json<KVPair[]>();
    assert.ok(e);
    assert.equal(e.Key, 'app/config');
    assert.equal(e.Value, b64('hello'));
    assert.equal(e.Flags, 42);
    assert.equal(e.LockIndex, 0);
    assert.equal(e.Session, undefined);
    assert.equal(e.CreateIndex, e.ModifyIndex);
    assert.equal(indexOf(r), e.ModifyIndex);
    await call(consul, 'PUT', '/v1/kv/app/config', { body: 'again' });
    const updated = await kvGet(consul, 'app/config');
    assert.equal(updated?.CreateIndex, e.CreateIndex);
    assert.ok((updated?.ModifyIndex ?? 0) > e.ModifyIndex);
    assert.equal(updated?.Flags, 0, 'a PUT without ?flags writes flags 0');
  });

  void test('an empty value is null; ?raw returns the bytes as text/plain', async () => {
    await call(consul, 'PUT', '/v1/kv/empty');
    assert.equal((await kvGet(consul, 'empty'))?.Value, null);
    await call(consul, 'PUT', '/v1/kv/bin', { body: Buffer.from([0, 1, 2, 255]) });
    const raw = await fetch(`${consul.url}/v1/kv/bin?raw`);
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get('content-type'), 'text/plain');
    assert.equal(raw.headers.get('x-content-type-options'), 'nosniff');
    assert.deepEqual(Buffer.from(await raw.arrayBuffer()), Buffer.from([0, 1, 2, 255]));
  });

  void test('a missing key is 404 with an empty body and an X-Consul-Index', async () => {
    const r = await call(consul, 'GET', '/v1/kv/missing');
    assert.equal(r.status, 404);
    assert.equal(r.text, '');
    assert.ok(indexOf(r) >= 1);
  });

  void test('?recurse lists a prefix in key order; ?keys with and without ?separator', async () => {
    for (const k of ['web/foo', 'web/bar', 'web/subdir/a', 'web/subdir/b', 'other']) await call(consul, 'PUT', `/v1/kv/${k}`, { body: k });
    const rec = await call(consul, 'GET', '/v1/kv/web/?recurse');
    assert.deepEqual(rec.json<KVPair[]>().map((e) => e.Key), ['web/bar', 'web/foo', 'web/subdir/a', 'web/subdir/b']);
    assert.equal(indexOf(rec), Math.max(...rec.json<KVPair[]>().map((e) => e.ModifyIndex)));
    const keys = await call(consul, 'GET', '/v1/kv/web/?keys');
    assert.deepEqual(keys.json<string[]>(), ['web/bar', 'web/foo', 'web/subdir/a', 'web/subdir/b']);
    const sep = await call(consul, 'GET', '/v1/kv/web/?keys&separator=/');
    assert.deepEqual(sep.json<string[]>(), ['web/bar', 'web/foo', 'web/subdir/']);
    const root = await call(consul, 'GET', '/v1/kv/?keys&separator=/');
    assert.deepEqual(root.json<string[]>(), ['other', 'web/']);
    assert.equal((await call(consul, 'GET', '/v1/kv/nothing/?keys')).status, 404);
    assert.equal((await call(consul, 'GET', '/v1/kv/nothing/?recurse')).status, 404);
    consul.reset();
    const emptyRoot = await call(consul, 'GET', '/v1/kv/?keys');
    assert.equal(emptyRoot.status, 200);
    assert.deepEqual(emptyRoot.json<string[]>(), []);
  });

  void test('?cas=0 creates only; ?cas=<ModifyIndex> updates only that version', async () => {
    assert.equal((await call(consul, 'PUT', '/v1/kv/c?cas=0', { body: '1' })).text, 'true');
    assert.equal((await call(consul, 'PUT', '/v1/kv/c?cas=0', { body: '2' })).text, 'false');
    const e = await kvGet(consul, 'c');
    assert.ok(e);
    assert.equal((await call(consul, 'PUT', `/v1/kv/c?cas=${e.ModifyIndex + 1000}`, { body: '3' })).text, 'false');
    assert.equal((await call(consul, 'PUT', `/v1/kv/c?cas=${e.ModifyIndex}`, { body: '4' })).text, 'true');
    assert.equal((await kvGet(consul, 'c'))?.Value, b64('4'));
    assert.equal((await call(consul, 'PUT', '/v1/kv/absent?cas=5', { body: 'x' })).text, 'false');
  });

  void test('DELETE: single key, ?cas, ?recurse; errors for a missing key name and conflicting flags', async () => {
    await call(consul, 'PUT', '/v1/kv/d', { body: '1' });
    const e = await kvGet(consul, 'd');
    assert.ok(e);
    assert.equal((await call(consul, 'DELETE', '/v1/kv/d?cas=0')).text, 'false', 'cas=0 never deletes an existing key');
    assert.equal((await call(consul, 'DELETE', `/v1/kv/d?cas=${e.ModifyIndex + 1}`)).text, 'false');
    assert.equal((await call(consul, 'DELETE', `/v1/kv/d?cas=${e.ModifyIndex}`)).text, 'true');
    assert.equal(await kvGet(consul, 'd'), undefined);
    for (const k of ['t/a', 't/b', 'u']) await call(consul, 'PUT', `/v1/kv/${k}`, { body: k });
    const before = indexOf(await call(consul, 'GET', '/v1/kv/t/?recurse'));
    assert.equal((await call(consul, 'DELETE', '/v1/kv/t/?recurse')).text, 'true');
    assert.deepEqual(consul.kv().map((x) => x.Key), ['u']);
    const after = await call(consul, 'GET', '/v1/kv/t/?keys');
    assert.equal(after.status, 404);
    assert.ok(indexOf(after) > before, 'a deletion under the prefix raises the prefix index');
    assert.equal((await call(consul, 'DELETE', '/v1/kv/u')).text, 'true');
    const noKey = await call(consul, 'DELETE', '/v1/kv/');
    assert.equal(noKey.status, 400);
    assert.equal(noKey.text, 'Missing key name');
    const conflict = await call(consul, 'DELETE', '/v1/kv/x?recurse&cas=1');
    assert.equal(conflict.status, 400);
    assert.match(conflict.text, /^Conflicting flags: /);
    const putConflict = await call(consul, 'PUT', '/v1/kv/x?cas=1&acquire=abc');
    assert.equal(putConflict.status, 400);
    assert.equal((await call(consul, 'PUT', '/v1/kv/', { body: 'x' })).text, 'Missing key name');
    assert.equal((await call(consul, 'GET', '/v1/kv/')).status, 400);
  });

  void test('non-numeric ?flags is rejected', async () => {
    const r = await call(consul, 'PUT', '/v1/kv/f?flags=abc', { body: 'x' });
    assert.equal(r.status, 500);
    assert.match(r.text, /invalid syntax/);
    assert.deepEqual(consul.kv(), []);
  });

  void test('a value larger than 512 KiB is 413', async () => {
    const r = await call(consul, 'PUT', '/v1/kv/big', { body: Buffer.alloc(512 * 1024 + 1, 97) });
    assert.equal(r.status, 413);
    assert.match(r.text, /too large, max size: 524288 bytes/);
  });

  void test('a blocking KV read wakes on a write to the key', async () => {
    await call(consul, 'PUT', '/v1/kv/watched', { body: 'v1' });
    const index = indexOf(await call(consul, 'GET', '/v1/kv/watched'));
    const inFlight = nextRequest(consul, (r) => r.path === '/v1/kv/watched' && r.query.has('index'));
    const blocked = call(consul, 'GET', `/v1/kv/watched?index=${index}&wait=10s`);
    await inFlight;
    await call(consul, 'PUT', '/v1/kv/watched', { body: 'v2' });
    const r = await blocked;
    assert.ok(indexOf(r) > index);
    assert.equal(r.json<KVPair[]>()[0]?.Value, b64('v2'));
  });

  void test('a blocking recursive read wakes when a key under the prefix is deleted', async () => {
    await call(consul, 'PUT', '/v1/kv/p/a', { body: 'a' });
    await call(consul, 'PUT', '/v1/kv/p/b', { body: 'b' });
    const index = indexOf(await call(consul, 'GET', '/v1/kv/p/?recurse'));
    const inFlight = nextRequest(consul, (r) => r.path === '/v1/kv/p/' && r.query.has('index'));
    const blocked = call(consul, 'GET', `/v1/kv/p/?recurse&index=${index}&wait=10s`);
    await inFlight;
    await call(consul, 'DELETE', '/v1/kv/p/a');
    const r = await blocked;
    assert.ok(indexOf(r) > index);
    assert.deepEqual(r.json<KVPair[]>().map((e) => e.Key), ['p/b']);
  });
});

void describe('consul double: sessions and locks', () => {
  let consul: ConsulDouble;
  before(async () => {
    consul = await startConsulDouble({ nodeName: 'node-a' });
  });
  after(async () => {
    await consul.stop();
  });
  beforeEach(() => consul.reset());

  void test('create with no body: this node, serfHealth, 15s lock delay, release, no TTL', async () => {
    const id = await createSession(consul);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const r = await call(consul, 'GET', `/v1/session/info/${id}`);
    assert.equal(r.status, 200);
    const [s] = r.json<Session[]>();
    assert.ok(s);
    assert.equal(s.ID, id);
    assert.equal(s.Node, 'node-a');
    assert.equal(s.Name, '');
    assert.equal(s.LockDelay, 15e9);
    assert.equal(s.Behavior, 'release');
    assert.equal(s.TTL, '');
    assert.deepEqual(s.NodeChecks, ['serfHealth']);
    assert.equal(s.ServiceChecks, null);
    assert.equal(s.Checks, undefined);
    assert.equal(indexOf(r), s.CreateIndex);
  });

  void test('info/node/list and the Name, LockDelay, Behavior and TTL fields', async () => {
    const id = await createSession(consul, { Name: 'leader', LockDelay: '5s', Behavior: 'delete', TTL: '30s' });
    const other = await createSession(consul, { LockDelay: 3 });
    const [s] = (await call(consul, 'GET', `/v1/session/info/${id}`)).json<Session[]>();
    assert.equal(s?.Name, 'leader');
    assert.equal(s?.LockDelay, 5e9);
    assert.equal(s?.Behavior, 'delete');
    assert.equal(s?.TTL, '30s');
    const [o] = (await call(consul, 'GET', `/v1/session/info/${other}`)).json<Session[]>();
    assert.equal(o?.LockDelay, 3e9, 'a small number is taken as seconds');
    const list = (await call(consul, 'GET', '/v1/session/list')).json<Session[]>();
    assert.deepEqual(list.map((x) => x.ID).sort(), [id, other].sort());
    const node = (await call(consul, 'GET', '/v1/session/node/node-a')).json<Session[]>();
    assert.equal(node.length, 2);
    assert.deepEqual((await call(consul, 'GET', '/v1/session/node/elsewhere')).json<Session[]>(), []);
    const unknown = await call(consul, 'GET', '/v1/session/info/00000000-0000-0000-0000-000000000000');
    assert.equal(unknown.status, 200);
    assert.deepEqual(unknown.json<Session[]>(), []);
  });

  void test('renew returns the session in a list; an unknown session is 404', async () => {
    const id = await createSession(consul, { TTL: '10s' });
    const r = await call(consul, 'PUT', `/v1/session/renew/${id}`);
    assert.equal(r.status, 200);
    assert.equal(r.json<Session[]>()[0]?.ID, id);
    const ghost = 'b0c5b5c9-0000-4000-8000-000000000000';
    const missing = await call(consul, 'PUT', `/v1/session/renew/${ghost}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.text, `Session id '${ghost}' not found`);
  });

  void test('destroy answers true, also for an unknown session', async () => {
    const id = await createSession(consul);
    const r = await call(consul, 'PUT', `/v1/session/destroy/${id}`);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'true');
    assert.deepEqual((await call(consul, 'GET', `/v1/session/info/${id}`)).json<Session[]>(), []);
    assert.equal((await call(consul, 'PUT', `/v1/session/destroy/${id}`)).text, 'true');
  });

  void test('create errors: TTL out of range, bad Behavior, unknown node, missing or critical checks', async () => {
    await call(consul, 'PUT', '/v1/agent/check/register', { body: { Name: 'bad', TTL: '10s' } });
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ TTL: '10ms' }, /^Invalid Session TTL '10000000', must be between \[100ms=24h0m0s\]$/],
      [{ TTL: '86401s' }, /^Invalid Session TTL '86401000000000', must be between/],
      [{ TTL: 'soon' }, /^Session TTL 'soon' invalid: time: invalid duration "soon"$/],
      [{ Behavior: 'explode' }, /^Invalid Behavior setting 'explode'$/],
      [{ Node: 'elsewhere' }, /^Missing node registration$/],
      [{ NodeChecks: ['serfHealth', 'ghost'] }, /^Missing check 'ghost' registration$/],
      [{ NodeChecks: ['bad'] }, /^Check 'bad' is in critical state$/],
    ];
    for (const [body, message] of cases) {
      const r = await call(consul, 'PUT', '/v1/session/create', { body });
      assert.equal(r.status, 500, `${JSON.stringify(body)} -> ${r.text}`);
      assert.match(r.text, message);
    }
    assert.deepEqual(consul.sessions(), []);
  });

  void test('Checks: [] removes serfHealth; a session on a service check is invalidated when it goes critical', async () => {
    const bare = await createSession(consul, { Checks: [] });
    const [b] = (await call(consul, 'GET', `/v1/session/info/${bare}`)).json<Session[]>();
    assert.deepEqual(b?.NodeChecks, []);
    await register(consul, { Name: 'web', Check: { TTL: '10s', Status: 'passing' } });
    const id = await createSession(consul, { ServiceChecks: [{ ID: 'service:web' }] });
    const [s] = (await call(consul, 'GET', `/v1/session/info/${id}`)).json<Session[]>();
    assert.deepEqual(s?.ServiceChecks, [{ ID: 'service:web', Namespace: '' }]);
    await call(consul, 'PUT', `/v1/kv/held?acquire=${id}`, { body: 'x' });
    await call(consul, 'PUT', '/v1/agent/check/fail/service:web');
    assert.deepEqual((await call(consul, 'GET', `/v1/session/info/${id}`)).json<Session[]>(), []);
    assert.equal((await kvGet(consul, 'held'))?.Session, undefined, 'its lock was released');
  });

  void test('a TTL session is invalidated after its TTL (Consul allows up to 2 x TTL) unless renewed', async () => {
    // A TTL long enough that the session is surely still live for the acquire on a busy machine;
    // the acquire's answer is the proof that it was.
    const id = await createSession(consul, { TTL: '2s', LockDelay: '0s' });
    const created = Date.now();
    assert.equal((await call(consul, 'PUT', `/v1/kv/ttl-lock?acquire=${id}`, { body: 'x' })).text, 'true');
    await waitFor(async () => (await call(consul, 'GET', `/v1/session/info/${id}`)).json<Session[]>().length === 0, 'session TTL');
    const elapsed = Date.now() - created;
    assert.ok(elapsed >= 2000, `not before the TTL (${elapsed} ms)`);
    const lock = await kvGet(consul, 'ttl-lock');
    assert.equal(lock?.Session, undefined);
    assert.equal(lock?.LockIndex, 1);
  });

  void test('acquire/release: LockIndex and Session, contention answers false', async () => {
    const a = await createSession(consul);
    const b = await createSession(consul);
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?acquire=${a}`, { body: 'a' })).text, 'true');
    let e = await kvGet(consul, 'lock');
    assert.equal(e?.Session, a);
    assert.equal(e?.LockIndex, 1);
    assert.equal(e?.Value, b64('a'));
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?acquire=${b}`, { body: 'b' })).text, 'false');
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?acquire=${a}`, { body: 'a2' })).text, 'true', 'the holder may re-acquire');
    e = await kvGet(consul, 'lock');
    assert.equal(e?.LockIndex, 1, 're-acquiring by the holder does not bump LockIndex');
    assert.equal(e?.Value, b64('a2'));
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?release=${b}`)).text, 'false', 'only the holder releases');
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?release=${a}`, { body: 'a2' })).text, 'true');
    e = await kvGet(consul, 'lock');
    assert.equal(e?.Session, undefined);
    assert.equal(e?.LockIndex, 1, 'release keeps LockIndex');
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?acquire=${b}`, { body: 'b' })).text, 'true');
    assert.equal((await kvGet(consul, 'lock'))?.LockIndex, 2);
    assert.equal((await call(consul, 'PUT', '/v1/kv/lock', { body: 'plain' })).text, 'true', 'a plain PUT ignores the lock');
    e = await kvGet(consul, 'lock');
    assert.equal(e?.Session, b, 'and keeps the holder');
    assert.equal(e?.Value, b64('plain'));
    assert.equal((await call(consul, 'PUT', `/v1/kv/lock?release=${b}`)).text, 'true');
    assert.equal((await kvGet(consul, 'lock'))?.Value, null, 'release writes the (empty) body');
    const invalid = await call(consul, 'PUT', '/v1/kv/other?acquire=not-a-session', { body: 'x' });
    assert.equal(invalid.status, 500);
    assert.equal(invalid.text, 'invalid session "not-a-session"');
  });

  void test('destroying a session releases its locks and lock-delay blocks re-acquisition for that long', async () => {
    // Long enough that the first acquire below surely falls inside it, even on a busy machine.
    const a = await createSession(consul, { LockDelay: '2s' });
    const b = await createSession(consul);
    await call(consul, 'PUT', `/v1/kv/leader?acquire=${a}`, { body: 'a' });
    const destroyedAt = Date.now();
    await call(consul, 'PUT', `/v1/session/destroy/${a}`);
    const released = await kvGet(consul, 'leader');
    assert.equal(released?.Session, undefined);
    assert.equal(released?.Value, b64('a'), 'behavior release keeps the key');
    assert.equal((await call(consul, 'PUT', `/v1/kv/leader?acquire=${b}`, { body: 'b' })).text, 'false', 'lock-delay in force');
    await waitFor(async () => (await call(consul, 'PUT', `/v1/kv/leader?acquire=${b}`, { body: 'b' })).text === 'true', 'lock-delay');
    assert.ok(Date.now() - destroyedAt >= 2000, 'not before the lock delay');
    assert.equal((await kvGet(consul, 'leader'))?.Session, b);
  });

  void test('Behavior delete removes the held keys when the session is invalidated', async () => {
    const id = await createSession(consul, { Behavior: 'delete', LockDelay: '0s' });
    await call(consul, 'PUT', `/v1/kv/ephemeral?acquire=${id}`, { body: 'x' });
    await call(consul, 'PUT', `/v1/session/destroy/${id}`);
    assert.equal(await kvGet(consul, 'ephemeral'), undefined);
  });
});

void describe('consul double: ACLs', () => {
  let consul: ConsulDouble;
  const token = 'root-secret';
  before(async () => {
    consul = await startConsulDouble({ aclToken: token });
  });
  after(async () => {
    await consul.stop();
  });
  beforeEach(() => consul.reset());

  const endpoints: [string, string, unknown?][] = [
    ['GET', '/v1/agent/self'],
    ['GET', '/v1/agent/services'],
    ['PUT', '/v1/agent/service/register', { Name: 'web' }],
    ['GET', '/v1/agent/checks'],
    ['PUT', '/v1/agent/check/register', { Name: 'disk', TTL: '10s' }],
    ['GET', '/v1/catalog/services'],
    ['GET', '/v1/catalog/service/web'],
    ['GET', '/v1/health/service/web'],
    ['GET', '/v1/health/checks/web'],
    ['GET', '/v1/kv/k'],
    ['PUT', '/v1/kv/k', 'v'],
    ['DELETE', '/v1/kv/k'],
    ['PUT', '/v1/session/create'],
    ['GET', '/v1/session/list'],
  ];

  void test('without a token every endpoint is 403 "Permission denied"', async () => {
    for (const [method, path, body] of endpoints) {
      const r = await call(consul, method, path, { body });
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.match(r.text, /^Permission denied/, `${method} ${path}`);
      assert.equal(r.headers.get('x-consul-default-acl-policy'), 'deny');
    }
    assert.deepEqual(consul.services(), []);
    assert.deepEqual(consul.kv(), []);
  });

  void test('an unknown token is 403 "ACL not found"', async () => {
    const r = await call(consul, 'GET', '/v1/agent/services', { headers: { 'X-Consul-Token': 'wrong' } });
    assert.equal(r.status, 403);
    assert.equal(r.text, 'ACL not found');
  });

  void test('the token is accepted from X-Consul-Token, Authorization: Bearer and ?token=', async () => {
    for (const [method, path, body] of endpoints) {
      const r = await call(consul, method, path, { body, headers: { 'X-Consul-Token': token } });
      assert.ok(r.status < 400 || (method === 'GET' && r.status === 404), `${method} ${path}: ${r.status} ${r.text}`);
    }
    const bearer = await call(consul, 'GET', '/v1/agent/services', { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(bearer.status, 200);
    assert.deepEqual(Object.keys(bearer.json<Record<string, AgentService>>()), ['web']);
    const query = await call(consul, 'PUT', `/v1/kv/q?token=${token}`, { body: 'x' });
    assert.equal(query.status, 200);
    assert.equal(query.text, 'true');
  });

  void test('unknown paths stay 404 without a token', async () => {
    const r = await call(consul, 'GET', '/v1/nope');
    assert.equal(r.status, 404);
  });
});

void describe('consul double: agent restart', () => {
  let consul: ConsulDouble;
  before(async () => {
    consul = await startConsulDouble();
  });
  after(async () => {
    await consul.stop();
  });

  void test('stop() refuses connections; start() comes back on the same port without local services', async () => {
    await register(consul, { Name: 'web', Check: { TTL: '10s' } });
    await call(consul, 'PUT', '/v1/kv/kept', { body: 'yes' });
    const session = await createSession(consul);
    const kvBefore = await kvGet(consul, 'kept');
    const address = consul.address;

    await consul.stop();
    assert.equal(consul.running, false);
    await assert.rejects(fetch(`${consul.url}/v1/agent/self`));
    assert.equal(consul.services().length, 1, 'state is kept while stopped');

    await consul.start();
    assert.equal(consul.address, address);
    assert.deepEqual((await call(consul, 'GET', '/v1/agent/services')).json<Record<string, AgentService>>(), {});
    assert.deepEqual(await agentChecks(consul), {});
    assert.deepEqual((await call(consul, 'GET', '/v1/health/service/web')).json<HealthEntry[]>(), []);
    assert.deepEqual(await kvGet(consul, 'kept'), kvBefore, 'KV is held by the servers');
    assert.equal((await call(consul, 'GET', `/v1/session/info/${session}`)).json<Session[]>().length, 1, 'so are sessions');
    await register(consul, { Name: 'web' });
    assert.equal(consul.services().length, 1);
  });
});
