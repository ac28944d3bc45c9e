// `emperor discover|kv|session …` (the Consul helpers) run as a real process against the Consul
// agent double (test/consul/double.ts) — or a real agent when EMPEROR_TEST_CONSUL_ADDR=host:port
// is set (EMPEROR_TEST_CONSUL_TOKEN for its token; tests that need the double are skipped, saying
// so) — plus the typed library (src/consul) those commands are built on.
import { describe, test, after, before, type TestContext } from './support/test.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli, type CliResult } from './support/emperor.js';
import { Consul, ConsulError } from '../src/consul/index.js';
import { startConsulDouble, type ConsulDouble, type ConsulDoubleOptions } from './consul/double.js';
import { freePort } from './support/net.js';

// The CLI under test: the real binary, through runCli (test/fixtures/consul-cli.ts mounts only
// these commands, for debugging them in isolation).

const REAL_AGENT = process.env.EMPEROR_TEST_CONSUL_ADDR || undefined;
const REAL_TOKEN = process.env.EMPEROR_TEST_CONSUL_TOKEN || undefined;
const RUN = `emptest-cli-${process.pid}-${Date.now().toString(36)}`;

/** The environment without anything that could configure Consul behind the test's back. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(CONSUL|EMPEROR)_/.test(k)) env[k] = v;
  return env;
}

/** The CLI with a clean environment (runCli: killed, and failing, if it hangs). */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(args, { ...baseEnv(), ...env });
}

function ok(r: CliResult, what = 'expected success'): CliResult {
  assert.equal(r.code, 0, `${what}: ${JSON.stringify(r)}`);
  return r;
}

/** Exit 1, one line on stderr, no stack trace. */
function failed(r: CliResult, message: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1: ${JSON.stringify(r)}`);
  assert.match(r.stderr.trimEnd(), message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr);
}

interface Agent {
  readonly address: string;
  readonly double: ConsulDouble | undefined;
  readonly token: string | undefined;
  /** CONSUL_HTTP_ADDR (+ token) for the CLI. */
  readonly env: Record<string, string>;
}

const doubles: ConsulDouble[] = [];
const closers: Array<() => void | Promise<void>> = [];

async function agent(opts: ConsulDoubleOptions = {}): Promise<Agent> {
  if (REAL_AGENT) {
    return { address: REAL_AGENT, double: undefined, token: REAL_TOKEN, env: { CONSUL_HTTP_ADDR: REAL_AGENT, ...(REAL_TOKEN ? { CONSUL_HTTP_TOKEN: REAL_TOKEN } : {}) } };
  }
  const d = await startConsulDouble(opts);
  doubles.push(d);
  return { address: d.address, double: d, token: opts.aclToken, env: { CONSUL_HTTP_ADDR: d.address, ...(opts.aclToken ? { CONSUL_HTTP_TOKEN: opts.aclToken } : {}) } };
}

async function doubleFor(t: TestContext, why: string, opts: ConsulDoubleOptions = {}): Promise<Agent | undefined> {
  if (REAL_AGENT) {
    t.skip(`needs the double: ${why}`);
    return undefined;
  }
  return agent(opts);
}

async function raw(ag: Agent, method: string, p: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`http://${ag.address}${p}`, { method, headers: ag.token ? { 'X-Consul-Token': ag.token } : {}, body: body === undefined ? undefined : JSON.stringify(body) });
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${await res.clone().text()}`);
  const text = await res.text();
  return text === '' ? undefined : (JSON.parse(text) as unknown);
}

const registered: Array<{ ag: Agent; id: string }> = [];
async function register(ag: Agent, def: Record<string, unknown>): Promise<void> {
  await raw(ag, 'PUT', '/v1/agent/service/register', def);
  registered.push({ ag, id: def.ID as string });
}

/** A fresh KV prefix per test. */
let prefixCounter = 0;
const freshPrefix = (): string => `${RUN}/t${++prefixCounter}`;

after(async () => {
  for (const { ag, id } of registered.splice(0)) await fetch(`http://${ag.address}/v1/agent/service/deregister/${encodeURIComponent(id)}`, { method: 'PUT', headers: ag.token ? { 'X-Consul-Token': ag.token } : {} });
  if (REAL_AGENT) {
    const ag = await agent();
    await fetch(`http://${ag.address}/v1/kv/${RUN}?recurse`, { method: 'DELETE', headers: ag.token ? { 'X-Consul-Token': ag.token } : {} });
  }
  for (const c of closers.splice(0)) await c();
  await Promise.all(doubles.splice(0).map((d) => d.stop()));
});

// --- discovery ---------------------------------------------------------------------------------------

void describe('emperor discover', () => {
  let ag: Agent;
  const web = `${RUN}-web`;
  let nodeAddress = '';
  before(async () => {
    ag = await agent();
    await register(ag, { ID: `${web}-1`, Name: web, Address: '10.0.0.1', Port: 80, Tags: ['v1', 'blue'], Meta: { zone: 'a' } });
    await register(ag, { ID: `${web}-2`, Name: web, Port: 81, Tags: ['v2'], Check: { TTL: '10m', Status: 'critical' } });
    await register(ag, { ID: `${web}-3`, Name: web, Address: '::1', Port: 82, Tags: ['v1'] });
    const entries = (await raw(ag, 'GET', `/v1/health/service/${web}`)) as Array<{ Node: { Address: string } }>;
    nodeAddress = entries[0]!.Node.Address;
  });

  void test('discover services: every catalog service with its tags; --json', async () => {
    const r = ok(await cli(['discover', 'services'], ag.env));
    const rows = new Map(
      r.stdout
        .trimEnd()
        .split('\n')
        .map((l): [string, string | undefined] => [l.split(/\s+/)[0]!, l.split(/\s+/)[1]]),
    );
    assert.ok(rows.has('consul'), r.stdout);
    assert.deepEqual(rows.get(web)?.split(',').sort(), ['blue', 'v1', 'v2']);
    const json = JSON.parse(ok(await cli(['discover', 'services', '--json'], ag.env)).stdout) as Array<{ name: string; tags: string[] }>;
    assert.deepEqual(json.find((s) => s.name === web)?.tags.sort(), ['blue', 'v1', 'v2']);
  });

  void test('discover service: address:port per instance, the node address when the service has none', async () => {
    const r = ok(await cli(['discover', 'service', web], ag.env));
    assert.deepEqual(r.stdout.trimEnd().split('\n').sort(), ['10.0.0.1:80', `${nodeAddress}:81`, '[::1]:82'].sort());
  });

  void test('discover service --tag (repeatable, all must match) and --passing', async () => {
    assert.deepEqual(ok(await cli(['discover', 'service', web, '--tag', 'v1'], ag.env)).stdout.trimEnd().split('\n').sort(), ['10.0.0.1:80', '[::1]:82']);
    assert.equal(ok(await cli(['discover', 'service', web, '--tag', 'v1', '--tag', 'blue'], ag.env)).stdout, '10.0.0.1:80\n');
    const none = ok(await cli(['discover', 'service', web, '--tag', 'v1', '--tag', 'v2'], ag.env));
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /no instances of/);
    const passing = ok(await cli(['discover', 'service', web, '--passing'], ag.env));
    assert.deepEqual(passing.stdout.trimEnd().split('\n').sort(), ['10.0.0.1:80', '[::1]:82'], 'the critical instance is left out');
    const missing = ok(await cli(['discover', 'service', `${RUN}-nothing`, '--passing'], ag.env));
    assert.match(missing.stderr, /no passing instances of/);
  });

  void test('discover service --json', async () => {
    const list = JSON.parse(ok(await cli(['discover', 'service', web, '--json', '--tag', 'blue'], ag.env)).stdout) as Array<Record<string, unknown>>;
    assert.equal(list.length, 1);
    assert.deepEqual(
      { id: list[0]!.id, name: list[0]!.name, address: list[0]!.address, port: list[0]!.port, location: list[0]!.location, tags: list[0]!.tags, meta: list[0]!.meta, status: list[0]!.status },
      { id: `${web}-1`, name: web, address: '10.0.0.1', port: 80, location: '10.0.0.1:80', tags: ['v1', 'blue'], meta: { zone: 'a' }, status: 'passing' },
    );
    const all = JSON.parse(ok(await cli(['discover', 'service', web, '--json'], ag.env)).stdout) as Array<{ id: string; status: string }>;
    assert.equal(all.find((i) => i.id === `${web}-2`)?.status, 'critical');
  });
});

// --- KV ---------------------------------------------------------------------------------------------

void describe('emperor kv', () => {
  let ag: Agent;
  before(async () => {
    ag = await agent();
  });

  void test('set, get (decoded, --raw, --json), --recurse, del', async () => {
    const p = freshPrefix();
    const text = 'héllo ✓ world';
    ok(await cli(['kv', 'set', `${p}/a`, text], ag.env));
    ok(await cli(['kv', 'set', `${p}/b/c`, 'second'], ag.env));
    ok(await cli(['kv', 'set', `${p}/empty`, ''], ag.env));
    assert.equal(ok(await cli(['kv', 'get', `${p}/a`], ag.env)).stdout, `${text}\n`);
    assert.equal(ok(await cli(['kv', 'get', `/${p}/a`], ag.env)).stdout, `${text}\n`, 'a leading slash is dropped');
    assert.equal(ok(await cli(['kv', 'get', `${p}/a`, '--raw'], ag.env)).stdout, text, 'the bytes exactly, no newline');
    assert.equal(ok(await cli(['kv', 'get', `${p}/empty`], ag.env)).stdout, '\n');
    const entry = JSON.parse(ok(await cli(['kv', 'get', `${p}/a`, '--json'], ag.env)).stdout) as Record<string, unknown>;
    assert.equal(entry.Key, `${p}/a`);
    assert.equal(entry.Value, text);
    assert.equal(entry.Flags, 0);
    assert.equal(typeof entry.ModifyIndex, 'number');
    assert.equal(ok(await cli(['kv', 'get', p, '--recurse'], ag.env)).stdout, `${p}/a:${text}\n${p}/b/c:second\n${p}/empty:\n`);
    const listed = JSON.parse(ok(await cli(['kv', 'get', p, '--recurse', '--json'], ag.env)).stdout) as Array<{ Key: string }>;
    assert.deepEqual(listed.map((e) => e.Key), [`${p}/a`, `${p}/b/c`, `${p}/empty`]);

    ok(await cli(['kv', 'del', `${p}/a`], ag.env));
    failed(await cli(['kv', 'get', `${p}/a`], ag.env), new RegExp(`^emperor kv get: no key "${p}/a"$`));
    ok(await cli(['kv', 'del', `${p}/a`], ag.env), 'deleting a missing key is fine');
    ok(await cli(['kv', 'del', p, '--recurse'], ag.env));
    failed(await cli(['kv', 'get', p, '--recurse'], ag.env), /^emperor kv get: no keys under /);
    failed(await cli(['kv', 'get', `${p}/a`, '--raw'], ag.env), /no key/);
  });

  void test('--flags keeps a full uint64', async () => {
    const p = freshPrefix();
    ok(await cli(['kv', 'set', `${p}/f`, 'v', '--flags', '18446744073709551615'], ag.env));
    assert.match(ok(await cli(['kv', 'get', `${p}/f`, '--json'], ag.env)).stdout, /"Flags": 18446744073709551615,/);
    failed(await cli(['kv', 'set', `${p}/f`, 'v', '--flags', '-1'], ag.env), /^emperor kv set: --flags: expected a whole number/);
  });

  void test('--cas: exit 1 when it does not take', async () => {
    const p = freshPrefix();
    ok(await cli(['kv', 'set', `${p}/k`, 'one', '--cas', '0'], ag.env));
    failed(await cli(['kv', 'set', `${p}/k`, 'again', '--cas', '0'], ag.env), /"[^"]+\/k" was not written: it already exists \(--cas 0\)/);
    const index = (JSON.parse(ok(await cli(['kv', 'get', `${p}/k`, '--json'], ag.env)).stdout) as { ModifyIndex: number }).ModifyIndex;
    failed(await cli(['kv', 'set', `${p}/k`, 'two', '--cas', String(index + 1000)], ag.env), /was not written: its ModifyIndex is not \d+ \(it changed\)/);
    ok(await cli(['kv', 'set', `${p}/k`, 'two', '--cas', String(index)], ag.env));
    assert.equal(ok(await cli(['kv', 'get', `${p}/k`], ag.env)).stdout, 'two\n');
    const index2 = (JSON.parse(ok(await cli(['kv', 'get', `${p}/k`, '--json'], ag.env)).stdout) as { ModifyIndex: number }).ModifyIndex;
    failed(await cli(['kv', 'del', `${p}/k`, '--cas', String(index)], ag.env), /was not deleted: its ModifyIndex is not/);
    ok(await cli(['kv', 'del', `${p}/k`, '--cas', String(index2)], ag.env));
    failed(await cli(['kv', 'get', `${p}/k`], ag.env), /no key/);
  });

  void test('usage mistakes: one line, exit 1', async () => {
    const p = freshPrefix();
    failed(await cli(['kv', 'set', `${p}/k`, 'v', '--cas', 'x'], ag.env), /^emperor kv set: --cas: expected a whole number \(0 or more\), got "x"$/);
    failed(await cli(['kv', 'set', `${p}/k`, 'v', '--cas', '0', '--acquire', 's'], ag.env), /--cas and --acquire cannot be combined/);
    failed(await cli(['kv', 'del', p, '--recurse', '--cas', '3'], ag.env), /--recurse and --cas cannot be combined/);
    failed(await cli(['kv', 'get', p, '--raw', '--recurse'], ag.env), /--raw cannot be combined with --recurse/);
    failed(await cli(['kv', 'get', '/'], ag.env), /expected a key name/);
  });

  void test('locks: --acquire and --release with sessions; exit 1 when they do not take', async () => {
    const p = freshPrefix();
    const s1 = ok(await cli(['session', 'create', '--name', `${RUN}-one`], ag.env)).stdout.trim();
    const s2 = ok(await cli(['session', 'create', '--name', `${RUN}-two`], ag.env)).stdout.trim();
    assert.match(s1, /^[0-9a-f-]{36}$/);
    ok(await cli(['kv', 'set', `${p}/lock`, 'leader-1', '--acquire', s1], ag.env));
    let e = JSON.parse(ok(await cli(['kv', 'get', `${p}/lock`, '--json'], ag.env)).stdout) as { Session?: string; LockIndex: number; Value: string };
    assert.equal(e.Session, s1);
    assert.equal(e.LockIndex, 1);
    failed(await cli(['kv', 'set', `${p}/lock`, 'leader-2', '--acquire', s2], ag.env), /lock on "[^"]+" not acquired: another session holds it/);
    failed(await cli(['kv', 'set', `${p}/lock`, 'x', '--release', s2], ag.env), new RegExp(`not released: session ${s2} does not hold it`));
    ok(await cli(['kv', 'set', `${p}/lock`, 'free', '--release', s1], ag.env));
    e = JSON.parse(ok(await cli(['kv', 'get', `${p}/lock`, '--json'], ag.env)).stdout) as { Session?: string; LockIndex: number; Value: string };
    assert.equal(e.Session, undefined);
    assert.equal(e.Value, 'free');
    ok(await cli(['session', 'destroy', s1], ag.env));
    ok(await cli(['session', 'destroy', s2], ag.env));
  });
});

// --- sessions ---------------------------------------------------------------------------------------

void describe('emperor session', () => {
  let ag: Agent;
  let node = '';
  before(async () => {
    ag = await agent();
    node = ((await raw(ag, 'GET', '/v1/agent/self')) as { Config: { NodeName: string } }).Config.NodeName;
  });

  void test('create (all options), info, node, list, renew, destroy', async () => {
    // A TTL that outlives this test however busy the machine (a dozen CLI runs took over a
    // minute there, and a 30 s session had expired before its renew).
    const id = ok(
      await cli(['session', 'create', '--name', `${RUN}-s`, '--node', node, '--ttl', '1h', '--lock-delay', '2s', '--behavior', 'delete', '--checks', ''], ag.env),
    ).stdout.trim();
    const info = JSON.parse(ok(await cli(['session', 'info', id, '--json'], ag.env)).stdout) as Record<string, unknown>;
    assert.deepEqual(
      { id: info.id, name: info.name, node: info.node, behavior: info.behavior, ttl: info.ttl, lockDelayMs: info.lockDelayMs, checks: info.checks },
      { id, name: `${RUN}-s`, node, behavior: 'delete', ttl: '3600s', lockDelayMs: 2000, checks: [] },
    );
    const table = ok(await cli(['session', 'info', id], ag.env)).stdout.trimEnd().split('\n');
    assert.deepEqual(table[0]!.split(/\s+/), ['ID', 'NAME', 'NODE', 'BEHAVIOR', 'TTL', 'LOCK-DELAY', 'CHECKS']);
    assert.deepEqual(table[1]!.split(/\s+/), [id, `${RUN}-s`, node, 'delete', '3600s', '2s', '-']);

    const plain = ok(await cli(['session', 'create'], ag.env)).stdout.trim();
    const plainInfo = JSON.parse(ok(await cli(['session', 'info', plain, '--json'], ag.env)).stdout) as { checks: string[]; behavior: string; name: string };
    assert.deepEqual(plainInfo.checks, ['serfHealth']);
    assert.equal(plainInfo.behavior, 'release');

    // Bare numbers are seconds, for every duration option.
    const bare = ok(await cli(['session', 'create', '--ttl', '3600', '--lock-delay', '2'], ag.env)).stdout.trim();
    const bareInfo = JSON.parse(ok(await cli(['session', 'info', bare, '--json'], ag.env)).stdout) as { ttl: string; lockDelayMs: number };
    assert.deepEqual({ ttl: bareInfo.ttl, lockDelayMs: bareInfo.lockDelayMs }, { ttl: '3600s', lockDelayMs: 2000 });
    ok(await cli(['session', 'destroy', bare], ag.env));

    const onNode = JSON.parse(ok(await cli(['session', 'node', node, '--json'], ag.env)).stdout) as Array<{ id: string }>;
    assert.ok(onNode.some((s) => s.id === id) && onNode.some((s) => s.id === plain));
    assert.match(ok(await cli(['session', 'node', node], ag.env)).stdout, new RegExp(`^${id}\\s`, 'm'));
    const all = ok(await cli(['session', 'list'], ag.env)).stdout;
    assert.match(all, /^ID\s+NAME\s+NODE/);
    assert.match(all, new RegExp(`^${plain}\\s+-\\s+${node}\\s+release\\s+-\\s+15s\\s+serfHealth$`, 'm'));
    const listed = JSON.parse(ok(await cli(['session', 'list', '--json'], ag.env)).stdout) as Array<{ id: string }>;
    assert.ok(listed.some((s) => s.id === id));

    const renewed = JSON.parse(ok(await cli(['session', 'renew', id, '--json'], ag.env)).stdout) as { id: string; ttl: string };
    assert.equal(renewed.id, id);
    assert.match(ok(await cli(['session', 'renew', id], ag.env)).stdout, new RegExp(`^${id}\\s`, 'm'));

    ok(await cli(['session', 'destroy', id], ag.env));
    ok(await cli(['session', 'destroy', id], ag.env), 'idempotent');
    failed(await cli(['session', 'info', id], ag.env), new RegExp(`^emperor session info: no session ${id} `));
    failed(await cli(['session', 'renew', id], ag.env), new RegExp(`^emperor session renew: no session ${id} to renew`));
    ok(await cli(['session', 'destroy', plain], ag.env));
    assert.equal(ok(await cli(['session', 'node', `${RUN}-no-such-node`], ag.env)).stdout, '');
  });

  void test('a delete-behavior session takes its locked keys with it', async () => {
    const p = freshPrefix();
    const id = ok(await cli(['session', 'create', '--behavior', 'delete', '--lock-delay', '0s'], ag.env)).stdout.trim();
    ok(await cli(['kv', 'set', `${p}/owned`, 'x', '--acquire', id], ag.env));
    ok(await cli(['session', 'destroy', id], ag.env));
    failed(await cli(['kv', 'get', `${p}/owned`], ag.env), /no key/);
  });

  void test('usage mistakes', async () => {
    failed(await cli(['session', 'create', '--ttl', 'thirty'], ag.env), /^emperor session create: --ttl: expected a duration like 500ms, 10s or 2m, got "thirty"/);
    const r = await cli(['session', 'create', '--behavior', 'keep'], ag.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Allowed choices are release, delete/);
  });
});

// --- connection, datacenter, consistency, token -------------------------------------------------------

void describe('Consul helper connection options', () => {
  void test('--dc and --consistency reach the requests that take them (flags, group flags, environment)', async (t) => {
    // Double only: it asserts on the requests as sent, which only the double records.
    const ag = await doubleFor(t, 'inspects the request log');
    if (!ag) return;
    const d = ag.double!;
    const p = freshPrefix();
    const dc = d.datacenter;
    const seen = (): string[] => d.requests.splice(0).map((q) => `${q.method} ${q.path} ${[...q.query.entries()].map(([k, v]) => (v === '' ? k : `${k}=${v}`)).join('&')}`);
    ok(await cli(['kv', 'set', `${p}/k`, 'v', '--dc', dc, '--consistency', 'stale'], ag.env));
    ok(await cli(['kv', '--dc', dc, '--consistency', 'stale', 'get', `${p}/k`], ag.env));
    ok(await cli(['kv', 'get', `${p}/k`, '--raw'], { ...ag.env, EMPEROR_CONSUL_DC: dc, EMPEROR_CONSUL_CONSISTENCY: 'consistent' }));
    ok(await cli(['discover', 'services', '--consistency', 'consistent'], ag.env));
    ok(await cli(['discover', 'service', 'consul', '--dc', dc, '--passing'], ag.env));
    ok(await cli(['session', 'list', '--dc', dc, '--consistency', 'stale'], ag.env));
    ok(await cli(['kv', 'del', `${p}/k`, '--dc', dc, '--consistency', 'stale'], ag.env));
    assert.deepEqual(seen(), [
      `PUT /v1/kv/${p}/k dc=${dc}`,
      `GET /v1/kv/${p}/k dc=${dc}&stale`,
      `GET /v1/kv/${p}/k raw&dc=${dc}&consistent`,
      'GET /v1/catalog/services consistent',
      `GET /v1/health/service/consul passing&dc=${dc}`,
      `GET /v1/session/list dc=${dc}&stale`,
      `DELETE /v1/kv/${p}/k dc=${dc}`,
    ]);
  });

  void test('the connection options also work before the command, as empusa writes its etcd options', async () => {
    const ag = await agent();
    const tokenEnv: Record<string, string> = ag.token ? { CONSUL_HTTP_TOKEN: ag.token } : {};
    const dc = ((await raw(ag, 'GET', '/v1/agent/self')) as { Config: { Datacenter: string } }).Config.Datacenter;
    const p = freshPrefix();
    // No CONSUL_HTTP_ADDR: without the leading --consul-agent these would go to 127.0.0.1:8500.
    ok(await cli(['--consul-agent', ag.address, 'kv', 'set', `${p}/k`, 'v'], tokenEnv));
    assert.equal(ok(await cli(['--consul-agent', ag.address, '--dc', dc, 'kv', 'get', `${p}/k`], tokenEnv)).stdout, 'v\n');
    assert.equal(ok(await cli([`--consul-agent=${ag.address}`, 'kv', '--consistency', 'stale', 'get', `${p}/k`], tokenEnv)).stdout, 'v\n');
    assert.ok(Array.isArray(JSON.parse(ok(await cli(['--consul-agent', ag.address, 'session', 'list', '--json'], tokenEnv)).stdout)));
    const names = (JSON.parse(ok(await cli(['--consul-agent', ag.address, 'discover', 'services', '--json'], tokenEnv)).stdout) as Array<{ name: string }>).map((x) => x.name);
    assert.ok(names.includes('consul'), names.join(','));
    ok(await cli(['--consul-agent', ag.address, 'kv', 'del', `${p}/k`], tokenEnv));
    // A bad value is reported by the helper command that received it.
    failed(await cli(['--consul-agent', 'nope', 'session', 'list'], {}), /^emperor session list: --consul-agent: expected host:port/);
  });

  void test('an unknown datacenter, an unreachable agent, a bad address: one line, exit 1', async () => {
    const ag = await agent();
    failed(await cli(['kv', 'get', 'x', '--dc', 'nowhere'], ag.env), /^emperor kv get: GET \/v1\/kv\/x on Consul agent [^ ]+: 500 No path to datacenter$/);
    const dead = `127.0.0.1:${await freePort()}`;
    failed(await cli(['discover', 'services'], { CONSUL_HTTP_ADDR: dead }), new RegExp(`^emperor discover services: cannot reach the Consul agent at ${dead}: connection refused$`));
    failed(await cli(['session', 'list', '--consul-agent', 'nope'], {}), /^emperor session list: --consul-agent: expected host:port \(e\.g\. 127\.0\.0\.1:8500\), got "nope"$/);
    failed(await cli(['kv', 'get', 'x'], { CONSUL_HTTP_ADDR: 'unix:///tmp/consul.sock' }), /CONSUL_HTTP_ADDR: unix sockets are not supported/);
    // Failover: the dead agent first, then the live one.
    const p = freshPrefix();
    ok(await cli(['kv', 'set', `${p}/k`, 'v', '--consul-agent', `${dead},${ag.address}`], ag.token ? { CONSUL_HTTP_TOKEN: ag.token } : {}));
    assert.equal(ok(await cli(['kv', 'get', `${p}/k`], { ...ag.env, CONSUL_HTTP_ADDR: 'ignored:1', EMPEROR_CONSUL_AGENT: `${dead},${ag.address}` })).stdout, 'v\n');
  });

  void test('the token: CONSUL_HTTP_TOKEN, EMPEROR_CONSUL_TOKEN, --consul-token-file; a wrong one is never shown', async (t) => {
    const token = '6a1f3b2c-aaaa-bbbb-cccc-0123456789ab';
    // Double only: a wrong token is refused only by an agent whose ACLs the test set up.
    const ag = await doubleFor(t, 'enforces ACLs with a known token', { aclToken: token });
    if (!ag) return;
    const addr = { CONSUL_HTTP_ADDR: ag.address };
    const p = freshPrefix();
    ok(await cli(['kv', 'set', `${p}/k`, 'v'], { ...addr, CONSUL_HTTP_TOKEN: token }));
    ok(await cli(['kv', 'get', `${p}/k`], { ...addr, EMPEROR_CONSUL_TOKEN: token }));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'consul-cli-'));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'token');
    await writeFile(file, `${token}\n`, { mode: 0o600 });
    ok(await cli(['discover', 'services', '--consul-token-file', file], addr));
    ok(await cli(['session', 'list'], { ...addr, CONSUL_HTTP_TOKEN_FILE: file }));
    assert.ok(ag.double!.requests.every((q) => q.headers['x-consul-token'] === token && !q.query.has('token')));

    const wrong = 'wrong-token-4f5e6d7c-secret';
    for (const env of [{ ...addr, CONSUL_HTTP_TOKEN: wrong }, addr]) {
      const r = await cli(['kv', 'get', `${p}/k`], env);
      failed(r, env === addr ? /403 Permission denied: anonymous token lacks permission/ : /403 ACL not found \(check the ACL token/);
      assert.ok(!r.stderr.includes(wrong) && !r.stderr.includes(token) && !r.stdout.includes(wrong));
    }
    const r = await cli(['kv', 'get', `${p}/k`, '--consul-token', wrong], addr);
    failed(r, /403 ACL not found/);
    assert.ok(!r.stderr.includes(wrong));
  });
});

// --- the library --------------------------------------------------------------------------------------

void describe('Consul helper library (src/consul)', () => {
  void test('services, service, kvGet/kvSet/kvDel, sessions', async () => {
    const ag = await agent();
    const consul = Consul.fromEnv({ CONSUL_HTTP_ADDR: ag.address, ...(ag.token ? { CONSUL_HTTP_TOKEN: ag.token } : {}) });
    closers.push(() => consul.close());
    assert.equal(consul.agent, ag.address);
    const name = `${RUN}-lib`;
    await register(ag, { ID: `${name}-1`, Name: name, Address: '10.1.0.1', Port: 7000, Tags: ['x'] });
    await register(ag, { ID: `${name}-2`, Name: name, Port: 7001, Tags: ['y'], Check: { TTL: '10m', Status: 'warning' } });

    const svc = await consul.services();
    assert.deepEqual(svc.find((s) => s.name === name)?.tags.sort(), ['x', 'y']);
    assert.deepEqual((await consul.service(name, { tag: 'x' })).map((i) => i.location), ['10.1.0.1:7000']);
    assert.deepEqual((await consul.service(name, { passing: true })).map((i) => i.id), [`${name}-1`]);
    const two = (await consul.service(name)).find((i) => i.id === `${name}-2`);
    assert.equal(two?.status, 'warning');
    assert.equal(two?.address, two?.nodeAddress, 'falls back to the node address');

    const p = freshPrefix();
    assert.equal(await consul.kvGet(`${p}/a`), undefined);
    assert.equal(await consul.kvSet(`${p}/a`, Buffer.from([0, 1, 2, 255]), { flags: 2n ** 64n - 1n }), true);
    const a = await consul.kvGet(`${p}/a`);
    assert.deepEqual(a?.value, Buffer.from([0, 1, 2, 255]));
    assert.equal(a?.flags, 2n ** 64n - 1n);
    assert.deepEqual(await consul.kvGetRaw(`${p}/a`), Buffer.from([0, 1, 2, 255]));
    assert.equal(await consul.kvSet(`${p}/a`, 'nope', { cas: a.modifyIndex + 1000 }), false);
    assert.equal(await consul.kvSet(`${p}/a`, 'yes', { cas: a.modifyIndex }), true);
    assert.equal((await consul.kvGet(`${p}/a`))?.text, 'yes');
    await consul.kvSet(`${p}/b`, 'b');
    assert.deepEqual((await consul.kvGet(p, { recurse: true })).map((e) => e.key), [`${p}/a`, `${p}/b`]);
    assert.deepEqual(await consul.kvGet(`${p}/none/`, { recurse: true }), []);

    const sid = await consul.sessionCreate({ name: 'lib', ttl: 30_000, lockDelay: '1s' });
    assert.equal((await consul.sessionInfo(sid))?.ttl, '30s');
    assert.equal((await consul.sessionInfo(sid))?.lockDelayMs, 1000);
    assert.equal(await consul.kvSet(`${p}/lock`, 'me', { acquire: sid }), true);
    assert.equal((await consul.kvGet(`${p}/lock`))?.session, sid);
    assert.equal(await consul.kvSet(`${p}/lock`, 'me', { release: sid }), true);
    const info = await consul.sessionInfo(sid);
    assert.ok((await consul.sessionNode(info!.node)).some((s) => s.id === sid));
    assert.ok((await consul.sessionList()).some((s) => s.id === sid));
    assert.equal((await consul.sessionRenew(sid))?.id, sid);
    assert.equal(await consul.sessionDestroy(sid), true);
    assert.equal(await consul.sessionInfo(sid), undefined);
    assert.equal(await consul.sessionRenew(sid), undefined);

    assert.equal(await consul.kvDel(`${p}/b`, { cas: 1 }), false);
    assert.equal(await consul.kvDel(p, { recurse: true }), true);
    assert.deepEqual(await consul.kvGet(p, { recurse: true }), []);
  });

  void test('errors are ConsulErrors: one line, with the status and Consul\'s message', async () => {
    const dead = new Consul({ agent: `127.0.0.1:${await freePort()}`, timeoutMs: 500 });
    closers.push(() => dead.close());
    await assert.rejects(dead.services(), (err: unknown) => err instanceof ConsulError && err.kind === 'unreachable' && /connection refused/.test(err.message));
    const ag = await agent();
    const consul = new Consul({ agent: ag.address, token: ag.token });
    closers.push(() => consul.close());
    await assert.rejects(consul.sessionCreate({ behavior: 'keep' as 'release' }), (err: unknown) => {
      assert.ok(err instanceof ConsulError);
      assert.equal(err.kind, 'http');
      assert.equal(err.status, 500);
      assert.match(err.body, /Invalid Behavior setting 'keep'/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
  });
});
