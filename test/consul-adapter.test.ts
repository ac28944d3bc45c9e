// The Consul registry adapter against the Consul agent double (test/consul/double.ts), or against
// a real agent when EMPEROR_TEST_CONSUL_ADDR=host:port is set (EMPEROR_TEST_CONSUL_TOKEN for its
// ACL token); tests that need the double itself (restarting the agent, its request log, ACLs with
// a known token) are skipped then, saying so, each with a comment on why. Against a real agent the
// SIGKILL test waits for Consul's own minimum deregistration window (1m, reaped every 30 s).
// Covers: registration and its TTL check, health updates, heartbeats, deregistration, snapshots
// (ownership, agent restart, hand-made changes), onReset, failover, tokens, ?dc / consistency,
// native checks, the "emperor was SIGKILLed" path, TLS, and the connection options.
import { describe, test, after, type TestContext } from './support/test.js';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { Command } from 'commander';
import { ConsulAdapter, healthOutput, type ConsulLog } from '../src/registries/consul/adapter.js';
import { ConsulError, goDuration, type AgentCheck, type AgentService } from '../src/consul/client.js';
import { ConsulConfigError } from '../src/consul/connection.js';
import {
  addConsulOptions,
  resolveConsulClientConfig,
  resolveConsulConfig,
  type ConsulCliOptions,
  type ConsulConfig,
} from '../src/registries/consul/options.js';
import { Consul } from '../src/consul/index.js';
import { Registrar } from '../src/registrar/registrar.js';
import type { Change, Registration } from '../src/registrar/types.js';
import { startConsulDouble, type ConsulDouble, type ConsulDoubleOptions, type RecordedRequest } from './consul/double.js';
import { freePort } from './support/net.js';
import { waitFor } from './support/wait.js';

// --- harness ---------------------------------------------------------------------------------------

const REAL_AGENT = process.env.EMPEROR_TEST_CONSUL_ADDR || undefined;
const REAL_TOKEN = process.env.EMPEROR_TEST_CONSUL_TOKEN || undefined;
/** Prefix of every service ID and name this run creates (a real agent is shared). */
const RUN = `emptest-${process.pid}-${Date.now().toString(36)}`;

interface Agent {
  /** host:port */
  readonly address: string;
  /** The double, or undefined against a real agent. */
  readonly double: ConsulDouble | undefined;
  readonly token: string | undefined;
  readonly dc: string;
}

const doubles: ConsulDouble[] = [];
const adapters: ConsulAdapter[] = [];
const closers: Array<() => Promise<void> | void> = [];

/** The agent to test against: a fresh double, or the real agent. */
async function agent(opts: ConsulDoubleOptions = {}): Promise<Agent> {
  if (REAL_AGENT) {
    const self = (await raw({ address: REAL_AGENT, double: undefined, token: REAL_TOKEN, dc: '' }, 'GET', '/v1/agent/self')).json as { Config: { Datacenter: string } };
    return { address: REAL_AGENT, double: undefined, token: REAL_TOKEN, dc: self.Config.Datacenter };
  }
  const d = await startConsulDouble(opts);
  doubles.push(d);
  return { address: d.address, double: d, token: opts.aclToken, dc: d.datacenter };
}

/** A fresh double for a test that needs it, or undefined after skipping the test (real agent). */
async function doubleFor(t: TestContext, why: string, opts: ConsulDoubleOptions = {}): Promise<{ ag: Agent; d: ConsulDouble } | undefined> {
  if (REAL_AGENT) {
    t.skip(`needs the double: ${why}`);
    return undefined;
  }
  const ag = await agent(opts);
  return { ag, d: ag.double! };
}

async function raw(ag: Agent, method: string, p: string, body?: unknown): Promise<{ status: number; text: string; json: unknown }> {
  const res = await fetch(`http://${ag.address}${p}`, {
    method,
    headers: ag.token ? { 'X-Consul-Token': ag.token } : {},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

const services = async (ag: Agent): Promise<Record<string, AgentService>> => (await raw(ag, 'GET', '/v1/agent/services')).json as Record<string, AgentService>;
const checks = async (ag: Agent): Promise<Record<string, AgentCheck>> => (await raw(ag, 'GET', '/v1/agent/checks')).json as Record<string, AgentCheck>;

function config(ag: Agent | readonly string[], extra: ConsulCliOptions = {}, env: Record<string, string> = {}): ConsulConfig {
  const agents = Array.isArray(ag) ? [...(ag as readonly string[])] : [(ag as Agent).address];
  const token = Array.isArray(ag) ? undefined : (ag as Agent).token;
  const cfg = resolveConsulConfig({ consulAgent: agents, ...extra }, { ...(token ? { CONSUL_HTTP_TOKEN: token } : {}), ...env });
  assert.ok(cfg);
  return cfg;
}

interface LogLine {
  level: string;
  message: string;
}

let emperorCounter = 0;
function adapter(cfg: ConsulConfig, emperorId = `${RUN}-emperor-${++emperorCounter}`): { a: ConsulAdapter; lines: LogLine[]; emperorId: string } {
  const lines: LogLine[] = [];
  const log: ConsulLog = (level, message) => lines.push({ level, message });
  const a = ConsulAdapter.create(cfg, { emperorId, log, timeoutMs: 1000 });
  adapters.push(a);
  return { a, lines, emperorId };
}

let regCounter = 0;
function reg(extra: Partial<Registration> = {}): Registration {
  const n = ++regCounter;
  return {
    id: `${RUN}-host-app${n}`,
    vassal: `app${n}`,
    type: 'http',
    name: `${RUN}-app${n}`,
    location: '127.0.0.1:8080',
    address: '127.0.0.1',
    port: 8080,
    tags: ['v1', 'blue'],
    meta: { team: 'core', version: '1.2.3' },
    health: 'passing',
    checks: [{ name: 'tcp:127.0.0.1:8080', status: 'passing', output: 'TCP connect 127.0.0.1:8080: Success' }],
    pid: 4242,
    deregisterWhenCritical: false,
    nativeChecks: [],
    ...extra,
  };
}

const put = (r: Registration): Change => ({ op: 'put', reg: r });
const del = (r: Registration): Change => ({ op: 'delete', key: { id: r.id, type: r.type, name: r.name } });
/** The health check (fed from the vassal's checks; never deregisters). */
const ttlId = (r: Registration): string => `service:${r.id}`;
/** The liveness check (heartbeated while the emperor lives; carries DeregisterCriticalServiceAfter). */
const liveId = (r: Registration): string => `service:${r.id}:liveness`;

/** Resolves with the next `event` matching `pred` (listen before acting); rejects after timeoutMs. */
function nextEvent<T>(emitter: EventEmitter, event: string, pred: (payload: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const on = (payload: T): void => {
      if (!pred(payload)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(payload);
    };
    emitter.on(event, on);
  });
}

const registerRequests = (d: ConsulDouble, id: string): RecordedRequest[] =>
  d.requests.filter((r) => r.path === '/v1/agent/service/register' && (JSON.parse(r.body) as { ID: string }).ID === id);

after(async () => {
  await Promise.all(adapters.splice(0).map((a) => a.close()));
  for (const c of closers.splice(0)) await c();
  if (REAL_AGENT) {
    const ag: Agent = { address: REAL_AGENT, double: undefined, token: REAL_TOKEN, dc: '' };
    for (const id of Object.keys(await services(ag))) if (id.startsWith(RUN)) await raw(ag, 'PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`);
  }
  await Promise.all(doubles.splice(0).map((d) => d.stop()));
});

// --- registration ------------------------------------------------------------------------------------

void describe('ConsulAdapter: registration', () => {
  void test('registers the service with all its fields, a health TTL check and a liveness TTL check carrying DeregisterCriticalServiceAfter', async () => {
    const ag = await agent();
    const { a, emperorId } = adapter(config(ag));
    const r = reg({
      health: 'warning',
      checks: [
        { name: 'tcp:127.0.0.1:8080', status: 'passing', output: 'TCP connect 127.0.0.1:8080: Success' },
        { name: 'http:/healthz', status: 'warning', output: 'HTTP 429 Too Many Requests\nretry later' },
      ],
    });
    await a.apply([put(r)]);

    const s = (await services(ag))[r.id];
    assert.ok(s, 'registered');
    assert.equal(s.Service, r.name);
    assert.deepEqual(s.Tags, ['v1', 'blue']);
    assert.equal(s.Address, '127.0.0.1');
    assert.equal(s.Port, 8080);
    assert.equal(s.Meta?.team, 'core');
    assert.equal(s.Meta?.version, '1.2.3');
    assert.equal(s.Meta?.emperor_id, emperorId);
    assert.equal(s.Meta?.emperor_vassal, r.vassal);
    assert.equal(s.Meta?.emperor_type, 'http');

    const c = (await checks(ag))[ttlId(r)];
    assert.ok(c, 'the TTL check service:<id> exists');
    assert.equal(c.ServiceID, r.id);
    assert.equal(c.Status, 'warning', 'initial status from the aggregate health');
    assert.equal(c.Output, healthOutput(r));
    assert.match(c.Output, /^warning: vassal app\d+ \(pid 4242\), 2 checks \(1 passing, 1 warning\)/);
    assert.match(c.Output, /\ntcp:127\.0\.0\.1:8080: passing - TCP connect 127\.0\.0\.1:8080: Success/);
    assert.match(c.Output, /\nhttp:\/healthz: warning - HTTP 429 Too Many Requests$/, 'one line per check');
    const live = (await checks(ag))[liveId(r)];
    assert.ok(live, 'the liveness check service:<id>:liveness exists');
    assert.equal(live.ServiceID, r.id);
    assert.equal(live.Status, 'passing', 'alive however healthy the vassal is');
    assert.match(live.Output, new RegExp(`^vassal ${r.vassal} \\(pid 4242\\) is supervised by emperor ${emperorId}$`));

    const d = ag.double;
    if (d) {
      const [register] = registerRequests(d, r.id);
      assert.ok(register);
      assert.ok(register.query.has('replace-existing-checks'));
      const body = JSON.parse(register.body) as { Checks: Array<Record<string, unknown>> };
      assert.deepEqual(body.Checks[0], {
        CheckID: ttlId(r),
        Name: `emperor: vassal ${r.vassal}`,
        Notes: body.Checks[0]!.Notes,
        TTL: '30s',
        Status: 'warning',
      });
      assert.deepEqual(body.Checks[1], {
        CheckID: liveId(r),
        Name: `emperor: vassal ${r.vassal} is supervised`,
        Notes: body.Checks[1]!.Notes,
        TTL: '30s',
        DeregisterCriticalServiceAfter: '60s',
        Status: 'passing',
      });
      const snap = d.checks().find((x) => x.CheckID === ttlId(r));
      assert.equal(snap?.TTL, '30s');
      assert.equal(snap?.DeregisterCriticalServiceAfter, '', 'the health check never deregisters');
      const liveSnap = d.checks().find((x) => x.CheckID === liveId(r));
      assert.equal(liveSnap?.TTL, '30s');
      assert.equal(liveSnap?.DeregisterCriticalServiceAfter, '1m0s');
    }
    const seen = await a.snapshot();
    assert.deepEqual(seen.get(r.id), { key: { id: r.id, type: 'http', name: r.name }, fingerprint: a.fingerprint(r) });
  });

  void test('health changes update the check (status and output) without re-registering; definition changes re-register', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const r1 = reg();
    await a.apply([put(r1)]);
    const r2: Registration = { ...r1, health: 'critical', checks: [{ name: 'tcp:127.0.0.1:8080', status: 'critical', output: 'dial tcp 127.0.0.1:8080: connection refused' }] };
    assert.notEqual(a.fingerprint(r2), a.fingerprint(r1));
    await a.apply([put(r2)]);
    let c = (await checks(ag))[ttlId(r1)];
    assert.equal(c?.Status, 'critical');
    assert.match(c?.Output ?? '', /tcp:127\.0\.0\.1:8080: critical - dial tcp 127\.0\.0\.1:8080: connection refused/);
    assert.equal((await a.snapshot()).get(r1.id)?.fingerprint, a.fingerprint(r2));

    const r3: Registration = { ...r2, health: 'passing', checks: [{ name: 'tcp:127.0.0.1:8080', status: 'passing', output: 'back' }] };
    await a.apply([put(r3)]);
    c = (await checks(ag))[ttlId(r1)];
    assert.equal(c?.Status, 'passing');
    if (ag.double) {
      assert.equal(registerRequests(ag.double, r1.id).length, 1, 'status changes are check updates only');
      const updates = ag.double.requests.filter((q) => q.path === `/v1/agent/check/update/${ttlId(r1)}`).map((q) => (JSON.parse(q.body) as { Status: string }).Status);
      assert.deepEqual(updates.slice(0, 3), ['passing', 'critical', 'passing']);
    }

    const r4: Registration = { ...r3, tags: ['v2'], port: 9090 };
    await a.apply([put(r4)]);
    const s = (await services(ag))[r1.id];
    assert.deepEqual(s?.Tags, ['v2']);
    assert.equal(s?.Port, 9090);
    if (ag.double) assert.equal(registerRequests(ag.double, r1.id).length, 2);
    assert.equal((await a.snapshot()).get(r1.id)?.fingerprint, a.fingerprint(r4));
  });

  void test('a vassal without checks is reported passing while it runs', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const r = reg({ checks: [], health: 'passing', port: null, tags: [], meta: {} });
    await a.apply([put(r)]);
    const c = (await checks(ag))[ttlId(r)];
    assert.equal(c?.Status, 'passing');
    assert.equal(c?.Output, `passing: vassal ${r.vassal} (pid 4242) is running; it has no checks`);
    assert.equal((await services(ag))[r.id]?.Port, 0);
    assert.equal((await a.snapshot()).get(r.id)?.fingerprint, a.fingerprint(r));
  });

  void test('long outputs are cut below what Consul keeps, so snapshots still match', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const many = Array.from({ length: 40 }, (_, i) => ({ name: `check-${i}`, status: 'passing' as const, output: `ok ${'é'.repeat(400)}` }));
    const r = reg({ checks: many });
    await a.apply([put(r)]);
    const out = (await checks(ag))[ttlId(r)]?.Output ?? '';
    assert.ok(Buffer.byteLength(out) <= 4096, `${Buffer.byteLength(out)} bytes`);
    assert.doesNotMatch(out, /captured \d+ of \d+ bytes/, 'not cut by the agent');
    assert.equal((await a.snapshot()).get(r.id)?.fingerprint, a.fingerprint(r));
  });

  void test('meta Consul would refuse is dropped with a warning; a bind-all address is left to the node', async () => {
    const ag = await agent();
    const { a, lines, emperorId } = adapter(config(ag));
    const r = reg({
      address: '0.0.0.0',
      meta: { good_key: 'yes', 'bad.key': 'x', 'consul-reserved': 'x', emperor_id: 'spoofed', long: 'v'.repeat(600), ['k'.repeat(129)]: 'x' },
    });
    await a.apply([put(r)]);
    const s = (await services(ag))[r.id];
    assert.ok(s);
    assert.equal(s.Address, '');
    assert.equal(s.Meta?.good_key, 'yes');
    assert.equal(s.Meta?.emperor_id, emperorId, 'our marker cannot be overridden');
    for (const k of ['bad.key', 'consul-reserved', 'long', 'k'.repeat(129)]) assert.equal(s.Meta?.[k], undefined, k);
    const warnings = lines.filter((l) => l.level === 'warn').map((l) => l.message);
    assert.equal(warnings.length, 6, warnings.join('\n'));
    assert.ok(warnings.some((w) => /"bad\.key".*letters, digits/.test(w)));
    assert.ok(warnings.some((w) => /"consul-reserved".*reserved by Consul/.test(w)));
    assert.ok(warnings.some((w) => /address 0\.0\.0\.0/.test(w)));
    // Warned once each, however often the registration is fingerprinted or applied.
    a.fingerprint({ ...r });
    await a.apply([put({ ...r, health: 'warning' })]);
    assert.equal(lines.filter((l) => l.level === 'warn').length, 6);
    assert.equal((await a.snapshot()).get(r.id)?.fingerprint, a.fingerprint({ ...r, health: 'warning' }), 'what was dropped does not count as drift');
  });

  void test('deregistration removes the service and its checks, and is idempotent', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const r = reg();
    const other = reg();
    await a.apply([put(r), put(other)]);
    await a.apply([del(r)]);
    assert.equal((await services(ag))[r.id], undefined);
    assert.equal((await checks(ag))[ttlId(r)], undefined);
    assert.ok((await services(ag))[other.id], 'only that one');
    await a.apply([del(r)]);
    assert.deepEqual([...(await a.snapshot()).keys()], [other.id]);
    // The last change for an id wins within one apply.
    await a.apply([put(r), del(r)]);
    assert.equal((await services(ag))[r.id], undefined);
  });

  void test('native checks: the vassal http/tcp checks are registered for the agent to run', async () => {
    const ag = await agent();
    const server = http.createServer((_req, res) => res.end('fine'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const tcp = net.createServer((s) => s.end());
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    closers.push(() => new Promise<void>((resolve) => tcp.close(() => resolve())));
    const httpPort = (server.address() as net.AddressInfo).port;
    const tcpPort = (tcp.address() as net.AddressInfo).port;
    const url = `http://127.0.0.1:${httpPort}/healthz`;
    const { a } = adapter(config(ag));
    const r = reg({
      checks: [
        { name: 'web', status: 'passing', output: 'HTTP 200' },
        { name: `tcp:127.0.0.1:${tcpPort}`, status: 'passing', output: 'ok' },
      ],
      nativeChecks: [
        { name: 'web', probe: { kind: 'http', url }, intervalMs: 1000, timeoutMs: 500, successesBeforePassing: 1, failuresBeforeCritical: 2 },
        { name: `tcp:127.0.0.1:${tcpPort}`, probe: { kind: 'tcp', host: '127.0.0.1', port: tcpPort }, intervalMs: 1500, timeoutMs: 1000, successesBeforePassing: 1, failuresBeforeCritical: 1 },
      ],
    });
    await a.apply([put(r)]);
    const all = await checks(ag);
    const httpCheck = all[`service:${r.id}:web`];
    const tcpCheck = all[`service:${r.id}:tcp:127.0.0.1:${tcpPort}`];
    assert.ok(httpCheck && tcpCheck, Object.keys(all).join(', '));
    assert.equal(httpCheck.Type, 'http');
    assert.equal(tcpCheck.Type, 'tcp');
    assert.equal(httpCheck.ServiceID, r.id);
    assert.ok(all[ttlId(r)] && all[liveId(r)], 'the two TTL checks too');
    if (ag.double) {
      const body = JSON.parse(registerRequests(ag.double, r.id)[0]!.body) as { Checks: Array<Record<string, unknown>> };
      assert.equal(body.Checks.length, 4);
      assert.deepEqual(
        { HTTP: body.Checks[2]!.HTTP, Interval: body.Checks[2]!.Interval, Timeout: body.Checks[2]!.Timeout, FailuresBeforeCritical: body.Checks[2]!.FailuresBeforeCritical, Status: body.Checks[2]!.Status },
        { HTTP: url, Interval: '1s', Timeout: '500ms', FailuresBeforeCritical: 2, Status: 'passing' },
      );
      assert.equal(body.Checks[3]!.TCP, `127.0.0.1:${tcpPort}`);
    }
    // The checks start with the vassal's status; the agent runs them only after a random part of
    // their interval, so wait for real results (the outputs the agent writes), not the status.
    await waitFor(async () => {
      const now = await checks(ag);
      const web = now[`service:${r.id}:web`];
      const tcpc = now[`service:${r.id}:tcp:127.0.0.1:${tcpPort}`];
      return web?.Status === 'passing' && /fine/.test(web.Output) && tcpc?.Status === 'passing' && /127\.0\.0\.1/.test(tcpc.Output);
    }, 'the agent to run both native checks');
    assert.equal((await a.snapshot()).get(r.id)?.fingerprint, a.fingerprint(r));
    // Dropping native_checks removes them (replace-existing-checks).
    const plain: Registration = { ...r, nativeChecks: [] };
    await a.apply([put(plain)]);
    assert.deepEqual(Object.keys(await checks(ag)).filter((k) => k.startsWith(ttlId(r))).sort(), [ttlId(r), liveId(r)]);
  });
});

// --- heartbeats, snapshots, resets ------------------------------------------------------------------

void describe('ConsulAdapter: heartbeats and recovery', () => {
  void test('heartbeats keep the check passing well past its TTL', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag, { consulCheckTtl: '600ms' }));
    const r = reg();
    const wrong: string[] = [];
    ag.double?.events.on('check-status', (e: { CheckID: string; Status: string; Output: string }) => {
      if ((e.CheckID === ttlId(r) || e.CheckID === liveId(r)) && e.Status !== 'passing') wrong.push(`${e.CheckID} ${e.Status}: ${e.Output}`);
    });
    await a.apply([put(r)]);
    const before = a.heartbeatsSent;
    // 6 heartbeats at TTL/3 span two TTLs: without them the check would have lapsed twice.
    await waitFor(async () => {
      const all = await checks(ag);
      for (const id of [ttlId(r), liveId(r)]) if (all[id]?.Status !== 'passing') wrong.push(`${id} ${all[id]?.Status}: ${all[id]?.Output}`);
      return a.heartbeatsSent - before >= 6;
    }, 'six heartbeats');
    assert.deepEqual(wrong, []);
    assert.equal((await checks(ag))[ttlId(r)]?.Output, healthOutput(r), 'heartbeats re-send the last output');
    if (ag.double) {
      for (const id of [ttlId(r), liveId(r)]) {
        const updates = ag.double.requests.filter((q) => q.path === `/v1/agent/check/update/${id}`);
        assert.ok(updates.length >= 7, `${id}: ${updates.length} updates`);
        assert.ok(updates.every((q) => (JSON.parse(q.body) as { Status: string }).Status === 'passing'));
      }
    }
  });

  void test('snapshot: only services carrying this emperor\'s marker are ours', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const { a: b } = adapter(config(ag));
    const mine = reg();
    const theirs = reg();
    await a.apply([put(mine)]);
    await b.apply([put(theirs)]);
    const foreign = `${RUN}-foreign`;
    assert.equal((await raw(ag, 'PUT', '/v1/agent/service/register', { ID: foreign, Name: foreign, Port: 1, Meta: { other: 'x' } })).status, 200);
    const seenA = await a.snapshot();
    assert.ok(seenA.has(mine.id));
    assert.ok(!seenA.has(theirs.id), "another emperor's service is not ours");
    assert.ok(!seenA.has(foreign), 'a service without the marker is not ours');
    const seenB = await b.snapshot();
    assert.ok(seenB.has(theirs.id) && !seenB.has(mine.id));
    await raw(ag, 'PUT', `/v1/agent/service/deregister/${foreign}`);
  });

  void test('snapshot reveals an agent restart; the next put registers again', async (t) => {
    // Double only: the fault is an agent restart (stop, then start without its services), which a
    // test cannot do to a real agent it does not own.
    const env = await doubleFor(t, 'restarts the agent');
    if (!env) return;
    const { ag, d } = env;
    const { a } = adapter(config(ag));
    const r = reg();
    await a.apply([put(r)]);
    assert.ok((await a.snapshot()).has(r.id));
    await d.stop();
    await assert.rejects(a.snapshot(), (err: unknown) => err instanceof ConsulError && err.kind === 'unreachable' && /connection refused/.test(err.message));
    await assert.rejects(a.apply([put(r)]), (err: unknown) => err instanceof ConsulError && err.kind === 'unreachable');
    await d.start();
    assert.equal((await a.snapshot()).has(r.id), false, 'the restarted agent lost it');
    await a.apply([put(r)]);
    assert.ok((await services(ag))[r.id]);
    assert.equal((await a.snapshot()).get(r.id)?.fingerprint, a.fingerprint(r));
  });

  void test('snapshot reveals a hand-deregistered service and a hand-changed one', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const gone = reg();
    const changed = reg();
    await a.apply([put(gone), put(changed)]);
    await raw(ag, 'PUT', `/v1/agent/service/deregister/${gone.id}`);
    await raw(ag, 'PUT', `/v1/agent/check/update/${ttlId(changed)}`, { Status: 'critical', Output: 'set by hand' });
    const seen = await a.snapshot();
    assert.equal(seen.has(gone.id), false);
    assert.notEqual(seen.get(changed.id)?.fingerprint, a.fingerprint(changed));
    // What the registrar then does: put both again.
    await a.apply([put(gone), put(changed)]);
    const after = await a.snapshot();
    assert.equal(after.get(gone.id)?.fingerprint, a.fingerprint(gone));
    assert.equal(after.get(changed.id)?.fingerprint, a.fingerprint(changed));
  });

  void test('a put for a service that vanished behind our back registers it again at once', async () => {
    const ag = await agent();
    const { a } = adapter(config(ag));
    const r = reg();
    await a.apply([put(r)]);
    await raw(ag, 'PUT', `/v1/agent/service/deregister/${r.id}`);
    // No snapshot or heartbeat has noticed yet: the check update gets 404, then it registers.
    const r2: Registration = { ...r, health: 'warning', checks: [{ name: 'tcp:127.0.0.1:8080', status: 'warning', output: 'slow' }] };
    await a.apply([put(r2)]);
    assert.ok((await services(ag))[r.id]);
    assert.equal((await checks(ag))[ttlId(r)]?.Status, 'warning');
    assert.equal((await a.snapshot()).get(r.id)?.fingerprint, a.fingerprint(r2));
  });

  void test('a heartbeat answered "unknown check" calls the onReset listeners; the next put registers again', async () => {
    const ag = await agent();
    const { a, lines } = adapter(config(ag, { consulCheckTtl: '300ms' }));
    const r = reg();
    let resets = 0;
    a.onReset(() => resets++);
    await a.apply([put(r)]);
    await raw(ag, 'PUT', `/v1/agent/service/deregister/${r.id}`);
    await waitFor(() => resets > 0, 'onReset after a heartbeat got 404');
    assert.ok(lines.some((l) => l.level === 'warn' && /no longer has the check of/.test(l.message)), JSON.stringify(lines));
    await a.apply([put(r)]);
    assert.equal((await checks(ag))[ttlId(r)]?.Status, 'passing');
  });

  void test('with the registrar: an agent restart is repaired by the heartbeat path', async (t) => {
    // Double only: the fault is an agent restart, which a test cannot do to a real agent.
    const env = await doubleFor(t, 'restarts the agent');
    if (!env) return;
    const { ag, d } = env;
    const { a } = adapter(config(ag, { consulCheckTtl: '600ms' }));
    // Anti-entropy far away: the repair must come from the heartbeat's 404.
    const registrar = new Registrar([a], () => undefined, { antiEntropyMs: 600_000, deregisterBoundMs: 2000, retryMinMs: 20, retryMaxMs: 200, downLogEveryMs: 600_000, slowIsDownAfterMs: 5000 });
    closers.push(() => registrar.close());
    const r = reg({ health: 'warning', checks: [{ name: 'x', status: 'warning', output: 'slow' }] });
    registrar.ready(r.vassal, r);
    await registrar.settled();
    assert.ok((await services(ag))[r.id]);
    const back = nextEvent<{ ID: string }>(d.events, 'service-registered', (e) => e.ID === r.id, 'the service to be registered again');
    await d.stop();
    await d.start();
    assert.equal((await services(ag))[r.id], undefined, 'lost by the restart');
    await back;
    await waitFor(async () => (await checks(ag))[ttlId(r)]?.Output === healthOutput(r), 'the check output to be restored');
    assert.equal((await checks(ag))[ttlId(r)]?.Status, 'warning');
  });

  void test('SIGKILL semantics: without heartbeats the liveness check lapses critical and Consul removes the service', async () => {
    const ag = await agent();
    const d = ag.double;
    // A real agent raises the window to its minimum (1m) and reaps every 30 s: up to 90 s more.
    const windowMs = d ? 300 : 60_000;
    const { a } = adapter(config(ag, { consulCheckTtl: '300ms', consulDeregisterCriticalAfter: `${windowMs}ms` }));
    const r = reg();
    await a.apply([put(r)]);
    const lapsed = d && nextEvent<{ CheckID: string; Status: string; Output: string }>(d.events, 'check-status', (e) => e.CheckID === liveId(r) && e.Status === 'critical', 'the liveness check to lapse');
    const removed = d && nextEvent<{ ID: string; reason: string; CheckID?: string }>(d.events, 'service-deregistered', (e) => e.ID === r.id, 'Consul to remove the service');
    // What a SIGKILL does to the emperor: no more heartbeats, and no deregistration.
    await a.close();
    if (d && lapsed && removed) {
      const e = await lapsed;
      assert.match(e.Output, /^TTL expired \(last output before timeout follows\): vassal app\d+ \(pid 4242\) is supervised by emperor/);
      const gone = await removed;
      assert.equal(gone.reason, 'critical');
      assert.equal(gone.CheckID, liveId(r), 'removed because the liveness check lapsed');
      assert.equal(d.requests.filter((q) => q.path.startsWith('/v1/agent/service/deregister/')).length, 0, 'the emperor deregistered nothing');
    } else {
      await waitFor(async () => (await checks(ag))[liveId(r)]?.Status === 'critical', 'the liveness check to lapse', 30_000);
      assert.match((await checks(ag))[liveId(r)]?.Output ?? '', /^TTL expired/);
      await waitFor(async () => (await services(ag))[r.id] === undefined, 'Consul to remove the service', windowMs + 60_000);
    }
    assert.equal((await services(ag))[r.id], undefined);
  });
});

void describe('ConsulAdapter: liveness apart from health', () => {
  interface HealthEntry {
    Service: { ID: string };
    Checks: Array<{ CheckID: string; Status: string }>;
  }
  const healthOf = async (ag: Agent, name: string, query = ''): Promise<HealthEntry[]> => (await raw(ag, 'GET', `/v1/health/service/${encodeURIComponent(name)}${query}`)).json as HealthEntry[];

  void test('a critical vassal stays registered, visible as critical, and ?passing consumers skip it', async () => {
    const ag = await agent();
    // Against a real agent, Consul's minimum window (1m) is used and the "stays past the window"
    // part is left to the double, which honours a short one exactly.
    const window = ag.double ? 300 : 60_000;
    // A TTL far above the window: the liveness check must not lapse on a busy machine (that is the
    // SIGKILL test's business); the heartbeats re-send the critical health meanwhile.
    const { a } = adapter(config(ag, { consulCheckTtl: '3s', consulDeregisterCriticalAfter: `${window}ms` }));
    const sick = reg({ health: 'critical', checks: [{ name: 'http:/healthz', status: 'critical', output: 'HTTP 503 Service Unavailable' }] });
    const fine = reg({ name: sick.name });
    const deregistered: string[] = [];
    ag.double?.events.on('service-deregistered', (e: { ID: string; reason: string }) => {
      if (e.ID === sick.id) deregistered.push(e.reason);
    });
    await a.apply([put(sick), put(fine)]);

    const all = await healthOf(ag, sick.name);
    const entry = all.find((x) => x.Service.ID === sick.id);
    assert.ok(entry, 'listed without ?passing');
    assert.equal(entry.Checks.find((c) => c.CheckID === ttlId(sick))?.Status, 'critical');
    assert.equal(entry.Checks.find((c) => c.CheckID === liveId(sick))?.Status, 'passing');
    assert.deepEqual(
      (await healthOf(ag, sick.name, '?passing')).map((x) => x.Service.ID),
      [fine.id],
      '?passing returns only the healthy instance',
    );

    const d = ag.double;
    if (d) {
      // Critical for three windows, and heartbeated as critical twice: Consul must not have removed it.
      const beats = a.heartbeatsSent;
      await waitFor(() => {
        const since = d.checks().find((c) => c.CheckID === ttlId(sick))?.criticalSince;
        return typeof since === 'number' && Date.now() - since >= 3 * window && a.heartbeatsSent >= beats + 4; // two rounds over both services
      }, 'the health check to have been critical for three deregistration windows, with heartbeats');
      assert.deepEqual(deregistered, []);
      assert.ok((await services(ag))[sick.id], 'still registered');
      assert.equal((await checks(ag))[ttlId(sick)]?.Status, 'critical');
    }
    // Healthy again: ?passing lists it again.
    await a.apply([put({ ...sick, health: 'passing', checks: [{ name: 'http:/healthz', status: 'passing', output: 'HTTP 200 OK' }] })]);
    assert.deepEqual((await healthOf(ag, sick.name, '?passing')).map((x) => x.Service.ID).sort(), [sick.id, fine.id].sort());
  });

  void test('migration: a service in the single-check layout is registered again with both checks (on put and on anti-entropy)', async () => {
    const ag = await agent();
    const emperorId = `${RUN}-emperor-migrating`;
    // Heartbeats far away (TTL 1h): the repairs below come from puts and anti-entropy alone.
    const { a } = adapter(config(ag, { consulCheckTtl: '1h' }), emperorId);
    const r = reg({ health: 'warning', checks: [{ name: 'x', status: 'warning', output: 'slow' }] });
    /** What an emperor before the split registered: one TTL check carrying the deregistration. */
    const oldLayout = async (): Promise<void> => {
      const res = await raw(ag, 'PUT', '/v1/agent/service/register?replace-existing-checks', {
        ID: r.id,
        Name: r.name,
        Tags: r.tags,
        Address: r.address,
        Port: r.port,
        Meta: { ...r.meta, emperor_id: emperorId, emperor_vassal: r.vassal, emperor_type: r.type, emperor_def: 'old' },
        Checks: [{ CheckID: ttlId(r), Name: `emperor: vassal ${r.vassal}`, TTL: '30s', DeregisterCriticalServiceAfter: '1m', Status: 'passing' }],
      });
      assert.equal(res.status, 200, res.text);
    };
    await oldLayout();
    const before = await a.snapshot();
    assert.ok(before.has(r.id), 'ours (our marker)');
    assert.notEqual(before.get(r.id)?.fingerprint, a.fingerprint(r), 'the old layout does not count as what we write');

    const registrar = new Registrar([a], () => undefined, { antiEntropyMs: 200, deregisterBoundMs: 2000, retryMinMs: 20, retryMaxMs: 200, downLogEveryMs: 600_000, slowIsDownAfterMs: 5000 });
    closers.push(() => registrar.close());
    registrar.ready(r.vassal, r);
    await registrar.settled();
    const migrated = async (): Promise<boolean> => {
      const now = await checks(ag);
      return now[liveId(r)]?.Status === 'passing' && now[ttlId(r)]?.Status === 'warning' && (await a.snapshot()).get(r.id)?.fingerprint === a.fingerprint(r);
    };
    await waitFor(migrated, 'the ready vassal to be registered in the two-check layout');
    if (ag.double) assert.equal(ag.double.checks().find((c) => c.CheckID === ttlId(r))?.DeregisterCriticalServiceAfter, '', 'the health check lost its deregistration');

    // The old layout written over a live registration (an old emperor sharing the id, a restore):
    // the next anti-entropy pass migrates it.
    await oldLayout();
    assert.equal((await checks(ag))[liveId(r)], undefined);
    await waitFor(migrated, 'anti-entropy to register it again in the two-check layout');
  });
});

// --- connection: failover, tokens, dc/consistency, TLS ---------------------------------------------

void describe('ConsulAdapter: connection', () => {
  void test('failover: a dead first agent is skipped; the agent in use is exposed for CONSUL_HTTP_ADDR', async () => {
    const ag = await agent();
    const dead = `127.0.0.1:${await freePort()}`;
    const { a } = adapter(config([dead, ag.address], {}, ag.token ? { CONSUL_HTTP_TOKEN: ag.token } : {}));
    assert.equal(a.agentAddress, dead, 'before any request: the first');
    const r = reg();
    await a.apply([put(r)]);
    assert.ok((await services(ag))[r.id]);
    assert.equal(a.agentAddress, ag.address);
    assert.ok((await a.snapshot()).has(r.id));
  });

  void test('failover between live agents re-registers everything on the new one (onReset)', async (t) => {
    // Double only: the fault is one of two agents going down mid-run (EMPEROR_TEST_CONSUL_ADDR names one).
    const env = await doubleFor(t, 'stops one of two agents');
    if (!env) return;
    const first = env.ag;
    const second = await agent();
    const { a } = adapter(config([first.address, second.address], { consulCheckTtl: '600ms' }));
    const registrar = new Registrar([a], () => undefined, { antiEntropyMs: 600_000, deregisterBoundMs: 2000, retryMinMs: 20, retryMaxMs: 200, downLogEveryMs: 600_000, slowIsDownAfterMs: 5000 });
    closers.push(() => registrar.close());
    const r = reg();
    registrar.ready(r.vassal, r);
    await registrar.settled();
    assert.ok((await services(first))[r.id]);
    const moved = nextEvent<{ ID: string }>(second.double!.events, 'service-registered', (e) => e.ID === r.id, 'the service on the second agent');
    await env.d.stop();
    await moved;
    assert.equal(a.agentAddress, second.address);
    await waitFor(async () => (await checks(second))[ttlId(r)]?.Status === 'passing', 'its check on the second agent');
  });

  void test('--consul-dc: an agent of another datacenter is registered with, and warned about once', async () => {
    const ag = await agent();
    const { a, lines } = adapter(config(ag, { consulDc: `${ag.dc}-elsewhere` }));
    const r = reg();
    await a.apply([put(r), put(reg())]);
    await a.apply([put({ ...r, tags: ['changed'] })]);
    assert.ok((await services(ag))[r.id]);
    const warnings = lines.filter((l) => l.level === 'warn');
    assert.equal(warnings.length, 1, JSON.stringify(lines));
    assert.match(warnings[0]!.message, new RegExp(`the Consul agent at ${ag.address} is in datacenter ${ag.dc}, not ${ag.dc}-elsewhere \\(--consul-dc\\)`));
    const same = adapter(config(ag, { consulDc: ag.dc }));
    await same.a.apply([put(reg())]);
    assert.deepEqual(same.lines, []);
  });

  void test('an unreachable agent: apply throws a one-line ConsulError naming it', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const { a } = adapter(config([dead]));
    await assert.rejects(
      a.apply([put(reg())]),
      (err: unknown) => err instanceof ConsulError && err.kind === 'unreachable' && err.message === `cannot reach the Consul agent at ${dead}: connection refused`,
    );
    await a.close();
    await assert.rejects(a.apply([put(reg())]), (err: unknown) => err instanceof ConsulError && err.kind === 'closed');
  });

  void test('a frozen agent is slow, not down: a timed-out call is a warning, not "cannot reach"', async (t) => {
    // What a SIGSTOPped agent looks like from here: the kernel takes the connection, nobody answers.
    const held: net.Socket[] = [];
    const frozen = net.createServer((sock) => held.push(sock));
    await new Promise<void>((resolve) => frozen.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      for (const sock of held) sock.destroy();
      frozen.close();
    });
    const address = `127.0.0.1:${(frozen.address() as net.AddressInfo).port}`;
    const { a } = adapter(config([address]));
    await assert.rejects(a.apply([put(reg())]), (err: unknown) => {
      assert.ok(err instanceof ConsulError, String(err));
      assert.equal(err.kind, 'slow', err.message);
      assert.equal(err.slow, true);
      assert.equal(err.message, `the Consul agent at ${address} did not answer in time (within 1000 ms): busy, or frozen`);
      return true;
    });
    // The registrar calls it slow (a warning), not down (an error), on the first failure.
    const logs: Array<{ level: string; event: unknown }> = [];
    const registrar = new Registrar([a], (level, _m, fields) => logs.push({ level, event: fields?.event }), {
      antiEntropyMs: 600_000,
      deregisterBoundMs: 2000,
      retryMinMs: 600_000,
      retryMaxMs: 600_000,
      downLogEveryMs: 600_000,
      slowIsDownAfterMs: 600_000,
    });
    t.after(() => registrar.close());
    registrar.ready('slowpoke', reg());
    await waitFor(() => logs.length > 0, 'the registrar to report the failed call', 20_000);
    assert.deepEqual(logs, [{ level: 'warn', event: 'registry-slow' }]);
    assert.deepEqual(
      registrar.status().map((st) => ({ up: st.up, slow: st.slow })),
      [{ up: true, slow: true }],
    );
  });

  void test('token: every request carries X-Consul-Token; a wrong token fails without showing it', async (t) => {
    // Double only: the faults are a wrong token and no token, refused only by an agent whose ACLs
    // the test set up (a real agent may run without ACLs, and then accepts any token).
    const token = 'b1946ac9-2f3d-4e5b-9c8d-0123456789ab';
    const env = await doubleFor(t, 'enforces ACLs with a known token', { aclToken: token });
    if (!env) return;
    const { ag, d } = env;
    const { a } = adapter(config(ag));
    const r = reg();
    await a.apply([put(r)]);
    await a.snapshot();
    await a.apply([del(r)]);
    assert.ok(d.requests.length >= 5);
    for (const q of d.requests) {
      assert.equal(q.headers['x-consul-token'], token, `${q.method} ${q.path}`);
      assert.equal(q.query.has('token'), false, 'never in the URL');
    }

    const wrong = 'wrong-7d1c9a0e-secret-token';
    const bad = adapter(config([ag.address], {}, { CONSUL_HTTP_TOKEN: wrong }));
    const shown: string[] = [bad.a.description, inspect(config([ag.address], {}, { CONSUL_HTTP_TOKEN: wrong }), { depth: 5 }), JSON.stringify(config([ag.address], {}, { CONSUL_HTTP_TOKEN: wrong }))];
    await assert.rejects(bad.a.apply([put(reg())]), (err: unknown) => {
      assert.ok(err instanceof ConsulError && err.kind === 'http' && err.status === 403, String(err));
      assert.match(err.message, /403 ACL not found \(check the ACL token/);
      shown.push(err.message, err.body, inspect(err), err.stack ?? '');
      return true;
    });
    await assert.rejects(bad.a.snapshot(), (err: unknown) => (shown.push(String(err)), true));
    for (const s of shown) assert.ok(!s.includes(wrong) && !s.includes(token), s);
    assert.match(bad.a.description, /token set/);

    const anonymous = adapter(resolveConsulConfig({ consulAgent: [ag.address] }, {})!);
    await assert.rejects(anonymous.a.apply([put(reg())]), /403 Permission denied: anonymous token lacks permission 'service:write'/);
  });

  void test('?dc and consistency reach the reads that take them; agent endpoints get neither', async (t) => {
    // Double only: it asserts on the requests as sent (query parameters of every call), which only
    // the double records; the answers themselves are the same from a real agent.
    const env = await doubleFor(t, 'inspects the request log');
    if (!env) return;
    const { ag, d } = env;
    const { a } = adapter(config(ag, { consulDc: ag.dc, consulConsistency: 'stale' }));
    await a.apply([put(reg())]);
    await a.snapshot();
    const agentRequests = d.requests.filter((q) => q.path.startsWith('/v1/agent/'));
    assert.ok(agentRequests.length >= 4);
    for (const q of agentRequests) assert.ok(!q.query.has('dc') && !q.query.has('stale') && !q.query.has('consistent'), `${q.method} ${q.path}?${q.query.toString()}`);

    // The same connection settings through the helper library: reads get both, writes ?dc only.
    d.requests.length = 0;
    const consul = new Consul({ agent: ag.address, dc: ag.dc, consistency: 'consistent' });
    closers.push(() => consul.close());
    await consul.services();
    await consul.service('consul', { passing: true });
    await consul.kvSet('k', 'v');
    await consul.kvGet('k');
    const sid = await consul.sessionCreate({ name: 's' });
    await consul.sessionInfo(sid);
    await consul.sessionList();
    await consul.sessionRenew(sid);
    await consul.sessionDestroy(sid);
    await consul.kvDel('k');
    const seen = d.requests.map((q) => `${q.method} ${q.path.replace(sid, 'ID')} ${[...q.query.keys()].sort().join(',')}`);
    assert.deepEqual(seen, [
      'GET /v1/catalog/services consistent,dc',
      'GET /v1/health/service/consul consistent,dc,passing',
      'PUT /v1/kv/k dc',
      'GET /v1/kv/k consistent,dc',
      'PUT /v1/session/create dc',
      'GET /v1/session/info/ID consistent,dc',
      'GET /v1/session/list consistent,dc',
      'PUT /v1/session/renew/ID dc',
      'PUT /v1/session/destroy/ID dc',
      'DELETE /v1/kv/k dc',
    ]);
    assert.ok(d.requests.every((q) => !q.query.has('dc') || q.query.get('dc') === ag.dc));
    const other = new Consul({ agent: ag.address, dc: 'elsewhere' });
    closers.push(() => other.close());
    await assert.rejects(other.services(), /500 No path to datacenter/);
  });

  void test('https with --consul-cacert (a TLS proxy in front of the agent)', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'consul-tls-'));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const ok = await new Promise<boolean>((resolve) =>
      execFile(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        (err) => resolve(!err),
      ),
    );
    if (!ok) {
      t.skip('needs openssl to make a certificate');
      return;
    }
    const ag = await agent();
    const [host, port] = ag.address.split(':') as [string, string];
    const proxy = https.createServer({ key: await readFile(path.join(dir, 'key.pem')), cert: await readFile(path.join(dir, 'cert.pem')) }, (req, res) => {
      const up = http.request({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => (proxy.closeAllConnections(), proxy.close(() => resolve()))));
    const tlsAddr = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    const tokenEnv: Record<string, string> = ag.token ? { CONSUL_HTTP_TOKEN: ag.token } : {};

    const good = adapter(config([`https://${tlsAddr}`], { consulCacert: path.join(dir, 'cert.pem') }, tokenEnv));
    assert.equal(good.a.agentAddress, `https://${tlsAddr}`, 'CONSUL_HTTP_ADDR form keeps the scheme');
    const r = reg();
    await good.a.apply([put(r)]);
    assert.ok((await services(ag))[r.id]);

    const untrusted = adapter(config([tlsAddr], { consulScheme: 'https' }, tokenEnv));
    await assert.rejects(untrusted.a.apply([put(reg())]), (err: unknown) => err instanceof ConsulError && err.kind === 'unreachable' && /TLS failure .*--consul-cacert/.test(err.message));
  });
});

// --- options -----------------------------------------------------------------------------------------

void describe('Consul connection options', () => {
  const parse = (argv: string[], registration = true): ConsulCliOptions => {
    const cmd = addConsulOptions(new Command().exitOverride().configureOutput({ writeErr: () => undefined }), { registration });
    cmd.parse(argv, { from: 'user' });
    return cmd.opts<ConsulCliOptions>();
  };

  void test('registration is off without --consul-agent / EMPEROR_CONSUL_AGENT; CONSUL_HTTP_ADDR alone does not turn it on', () => {
    assert.equal(resolveConsulConfig(parse([]), {}), undefined);
    assert.equal(resolveConsulConfig({}, { CONSUL_HTTP_ADDR: '10.0.0.1:8500', CONSUL_HTTP_TOKEN: 'x' }), undefined);
    const cfg = resolveConsulConfig({}, { EMPEROR_CONSUL_AGENT: '10.0.0.1:8500,10.0.0.2:8500' });
    assert.deepEqual(cfg?.agents, ['10.0.0.1:8500', '10.0.0.2:8500']);
  });

  void test('flags: repeatable agents, defaults, durations', () => {
    const cfg = resolveConsulConfig(parse(['--consul-agent', 'a:8500,b:8500', '--consul-agent', '[::1]:8500', '--consul-dc', 'dc2', '--consul-consistency', 'stale']), {});
    assert.deepEqual(cfg?.agents, ['a:8500', 'b:8500', '[::1]:8500']);
    assert.equal(cfg?.scheme, 'http');
    assert.equal(cfg?.dc, 'dc2');
    assert.equal(cfg?.consistency, 'stale');
    assert.equal(cfg?.checkTtlMs, 30_000);
    assert.equal(cfg?.deregisterCriticalAfterMs, 60_000);
    assert.equal(cfg?.description, 'consul a:8500,b:8500,[::1]:8500 (dc dc2, stale reads)');
    const env = resolveConsulConfig({}, { EMPEROR_CONSUL_AGENT: 'x:1', EMPEROR_CONSUL_CHECK_TTL: '900ms', EMPEROR_CONSUL_DEREGISTER_CRITICAL_AFTER: '0s', EMPEROR_CONSUL_CONSISTENCY: 'consistent' });
    assert.equal(env?.checkTtlMs, 900);
    assert.equal(env?.deregisterCriticalAfterMs, 0);
    assert.equal(env?.consistency, 'consistent');
    // A bare number is seconds.
    const bare = resolveConsulConfig(parse(['--consul-agent', 'a:1', '--consul-check-ttl', '5', '--consul-deregister-critical-after', '90']), {});
    assert.deepEqual([bare?.checkTtlMs, bare?.deregisterCriticalAfterMs], [5_000, 90_000]);
    assert.throws(() => parse(['--consul-consistency', 'eventual']), /Allowed choices are default, consistent, stale/);
    assert.throws(() => parse(['--consul-check-ttl', '1s'], false), /unknown option/);
  });

  void test('errors name the flag or variable and what was expected', () => {
    const bad: Array<[ConsulCliOptions, Record<string, string>, RegExp]> = [
      [{ consulAgent: ['localhost'] }, {}, /--consul-agent: expected host:port \(e\.g\. 127\.0\.0\.1:8500\), got "localhost"/],
      [{ consulAgent: ['a:1,,b:2'] }, {}, /--consul-agent: .*empty entry/],
      [{ consulAgent: ['unix:///var/run/consul.sock'] }, {}, /--consul-agent: unix sockets are not supported/],
      [{ consulAgent: ['ftp://a:1'] }, {}, /--consul-agent: expected an http:\/\/ or https:\/\/ address/],
      [{}, { EMPEROR_CONSUL_AGENT: 'a:99999' }, /EMPEROR_CONSUL_AGENT: expected host:port/],
      [{ consulCheckTtl: '5s' }, {}, /--consul-check-ttl was given but no Consul agent: add --consul-agent/],
      [{ consulTokenFile: '/t' }, {}, /--consul-token-file was given but no Consul agent/],
      [{ consulAgent: ['a:1'], consulCheckTtl: 'five' }, {}, /--consul-check-ttl: expected a duration/],
      [{ consulAgent: ['a:1'], consulCheckTtl: '50ms' }, {}, /--consul-check-ttl: expected at least 100ms/],
      [{ consulAgent: ['a:1'] }, { EMPEROR_CONSUL_DEREGISTER_CRITICAL_AFTER: 'soon' }, /EMPEROR_CONSUL_DEREGISTER_CRITICAL_AFTER: expected a duration/],
      [{ consulAgent: ['a:1'], consulScheme: 'ftp' }, {}, /--consul-scheme: expected http or https/],
      [{ consulAgent: ['https://a:1'], consulScheme: 'http' }, {}, /says https:\/\/ but --consul-scheme is http/],
      [{ consulAgent: ['https://a:1', 'http://b:1'] }, {}, /mix http:\/\/ and https:\/\//],
      [{ consulAgent: ['a:1'], consulCacert: '/ca.pem' }, {}, /--consul-cacert is only used with TLS/],
      [{ consulAgent: ['https://a:1'], consulCacert: '/nonexistent/ca.pem' }, {}, /--consul-cacert: cannot read the CA certificate "\/nonexistent\/ca.pem": no such file/],
      [{ consulAgent: ['a:1'], consulConsistency: 'eventual' }, {}, /--consul-consistency: expected default, consistent or stale/],
      [{ consulAgent: ['a:1'] }, { EMPEROR_CONSUL_DC: 'dc 1' }, /EMPEROR_CONSUL_DC: expected a datacenter name/],
      [{ consulAgent: ['a:1'], consulToken: 'tok-secret', consulTokenFile: '/t' }, {}, /--consul-token and --consul-token-file were both given/],
      [{ consulAgent: ['a:1'], consulTokenFile: '/nonexistent/tok' }, {}, /--consul-token-file: cannot read the token file "\/nonexistent\/tok": no such file/],
      [{ consulAgent: ['a:1'] }, { CONSUL_HTTP_SSL: 'maybe' }, /CONSUL_HTTP_SSL: expected true or false/],
      [{ consulAgent: ['a:1'] }, { CONSUL_HTTP_TOKEN: 'tok-secret\u00e9' }, /CONSUL_HTTP_TOKEN: the token contains characters that cannot be sent in an HTTP header/],
    ];
    for (const [opts, env, message] of bad) {
      assert.throws(
        () => resolveConsulConfig(opts, env),
        (err: unknown) => err instanceof ConsulConfigError && message.test(err.message) && !err.message.includes('tok-secret'),
        `${JSON.stringify(opts)} ${JSON.stringify(env)} should fail with ${message}`,
      );
    }
  });

  void test('the token: flags, then EMPEROR_CONSUL_TOKEN(_FILE), then CONSUL_HTTP_TOKEN(_FILE); never shown', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'consul-opts-'));
    try {
      const file = path.join(dir, 'token');
      await writeFile(file, '  file-token-1\n');
      const token = (opts: ConsulCliOptions, env: Record<string, string>): string | undefined => resolveConsulConfig({ consulAgent: ['a:1'], ...opts }, env)?.token?.reveal();
      assert.equal(token({}, {}), undefined);
      assert.equal(token({ consulTokenFile: file }, { CONSUL_HTTP_TOKEN: 'env-token' }), 'file-token-1', 'trimmed');
      assert.equal(token({ consulToken: 'flag-token' }, { EMPEROR_CONSUL_TOKEN: 'env-token' }), 'flag-token');
      assert.equal(token({}, { EMPEROR_CONSUL_TOKEN: 'ours', CONSUL_HTTP_TOKEN: 'consuls' }), 'ours');
      assert.equal(token({}, { EMPEROR_CONSUL_TOKEN_FILE: file, EMPEROR_CONSUL_TOKEN: 'ours' }), 'file-token-1');
      assert.equal(token({}, { CONSUL_HTTP_TOKEN_FILE: file, CONSUL_HTTP_TOKEN: 'consuls' }), 'file-token-1', "Consul's rule: the file wins");
      assert.equal(token({}, { CONSUL_HTTP_TOKEN: 'consuls', EMPEROR_CONSUL_TOKEN: '' }), 'consuls', 'empty variables are unset');
      const cfg = resolveConsulConfig({ consulAgent: ['a:1'] }, { CONSUL_HTTP_TOKEN: 'consul-secret-xyz', CONSUL_HTTP_AUTH: 'user:pass-secret-xyz' })!;
      const shown = [cfg.description, JSON.stringify(cfg), inspect(cfg, { depth: 5 }), String(cfg.token), `${String(cfg.basicAuth)}`].join('\n');
      assert.ok(!shown.includes('secret-xyz'), shown);
      assert.match(cfg.description, /token set/);
      await writeFile(file, '\n');
      assert.throws(() => token({ consulTokenFile: file }, {}), /--consul-token-file: the token file .* is empty/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  void test('https: from the address, --consul-scheme or CONSUL_HTTP_SSL; CONSUL_CACERT is ignored over http', () => {
    assert.equal(resolveConsulConfig({ consulAgent: ['https://a:8501'] }, {})?.scheme, 'https');
    assert.equal(resolveConsulConfig({ consulAgent: ['a:8501'], consulScheme: 'https' }, {})?.scheme, 'https');
    assert.equal(resolveConsulConfig({ consulAgent: ['a:8501'] }, { CONSUL_HTTP_SSL: 'true' })?.scheme, 'https');
    assert.equal(resolveConsulConfig({ consulAgent: ['a:8500'] }, { CONSUL_CACERT: '/nonexistent/ca.pem' })?.ca, undefined);
    assert.throws(() => resolveConsulConfig({ consulAgent: ['https://a:8501'] }, { CONSUL_CACERT: '/nonexistent/ca.pem' }), /CONSUL_CACERT: cannot read the CA certificate/);
  });

  void test('helpers: --consul-agent, EMPEROR_CONSUL_AGENT, CONSUL_HTTP_ADDR, else 127.0.0.1:8500; --dc and --consistency', () => {
    assert.deepEqual(resolveConsulClientConfig({}, {}).agents, ['127.0.0.1:8500']);
    assert.deepEqual(resolveConsulClientConfig({}, { CONSUL_HTTP_ADDR: 'https://c:8501' }).agents, ['c:8501']);
    assert.equal(resolveConsulClientConfig({}, { CONSUL_HTTP_ADDR: 'https://c:8501' }).scheme, 'https');
    assert.deepEqual(resolveConsulClientConfig({}, { CONSUL_HTTP_ADDR: 'c:1', EMPEROR_CONSUL_AGENT: 'e:1' }).agents, ['e:1']);
    assert.deepEqual(resolveConsulClientConfig(parse(['--consul-agent', 'f:1'], false), { CONSUL_HTTP_ADDR: 'c:1' }).agents, ['f:1']);
    const q = resolveConsulClientConfig({ dc: 'dc3', consistency: 'stale' }, { EMPEROR_CONSUL_DC: 'dc9' });
    assert.equal(q.dc, 'dc3');
    assert.equal(q.consistency, 'stale');
    assert.throws(() => resolveConsulClientConfig({ dc: 'a/b' }, {}), /^ConsulConfigError: --dc: expected a datacenter name/);
    assert.throws(() => resolveConsulClientConfig({}, { CONSUL_HTTP_ADDR: 'nope' }), /CONSUL_HTTP_ADDR: expected host:port/);
  });

  void test('Go durations for Consul', () => {
    assert.equal(goDuration(30_000), '30s');
    assert.equal(goDuration(60_000), '60s');
    assert.equal(goDuration(1500), '1500ms');
    assert.equal(goDuration(0), '0s');
  });
});
