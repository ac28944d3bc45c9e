// Checks the real-etcd test harness (test/support/etcd.ts) and how the etcd3 client behaves against
// Debian's etcd (3.4 on bookworm): KV, outage/recovery on the same ports and data, leases, and auth.
import { describe, test, before, after } from './support/test.js';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, type IOptions } from 'etcd3';
import { startEtcd, type EtcdServer } from './support/etcd.js';

const clients: Etcd3[] = [];
/** A client whose unary calls time out after `timeoutMs` (streams are left alone). */
function client(server: EtcdServer, extra: Partial<IOptions> = {}, timeoutMs = 2_000): Etcd3 {
  const c = new Etcd3({
    hosts: server.clientUrl,
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    ...extra,
  });
  clients.push(c);
  return c;
}

after(() => {
  for (const c of clients.splice(0)) c.close();
});

void describe('etcd harness: plain server', () => {
  let etcd: EtcdServer;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.dispose();
  });

  void test('listens on a loopback endpoint and serves put/get', async () => {
    assert.match(etcd.endpoint, /^127\.0\.0\.1:\d+$/);
    assert.equal(etcd.clientUrl, `http://${etcd.endpoint}`);
    assert.ok(existsSync(etcd.dataDir));
    assert.ok(etcd.pid);
    const c = new Etcd3({ hosts: 'http://' + etcd.endpoint });
    clients.push(c);
    await c.put('/harness/hello').value('world');
    assert.equal(await c.get('/harness/hello').string(), 'world');
  });

  void test('a leased key disappears when its lease is revoked', async () => {
    const c = client(etcd);
    const lease = c.lease(1);
    await lease.put('/harness/leased').value('alive');
    const id = await lease.grant();
    const res = await c.get('/harness/leased').exec();
    assert.equal(res.kvs[0]?.value.toString(), 'alive');
    assert.equal(res.kvs[0]?.lease, id);
    // etcd raises TTLs below its minimum (1.5 election timeouts, rounded up to whole seconds):
    // the harness' short election timeout keeps 1 s leases at 1 s.
    const ka = await lease.keepaliveOnce();
    assert.equal(ka.TTL, '1');
    await lease.revoke();
    assert.equal(lease.revoked(), true);
    assert.equal(await c.get('/harness/leased').string(), null);
  });

  void test('stop makes calls fail; start brings it back on the same port with the same data', async () => {
    const c = client(etcd, {}, 1_000);
    await c.put('/harness/durable').value('kept');
    const { endpoint, dataDir } = etcd;

    await etcd.stop();
    assert.equal(etcd.pid, undefined);
    // Connection refused fails fast (GRPCUnavailableError); further calls from the same client get
    // cockatiel's BrokenCircuitError for 5 s (etcd3's default per-host circuit breaker).
    await assert.rejects(c.get('/harness/durable').string());
    await assert.rejects(c.get('/harness/durable').string());

    await etcd.start();
    assert.ok(etcd.pid);
    assert.equal(etcd.endpoint, endpoint);
    assert.equal(etcd.dataDir, dataDir);
    // A fresh client: the old one's circuit breaker stays open for up to 5 s after the failures.
    const fresh = client(etcd);
    assert.equal(await fresh.get('/harness/durable').string(), 'kept');
    assert.equal(await fresh.get('/harness/hello').string(), 'world');
  });

  void test('kill (SIGKILL) and start: committed writes survive the crash', async () => {
    const c = client(etcd);
    await c.put('/harness/crash').value('survives');
    await etcd.kill();
    assert.equal(etcd.pid, undefined);
    await etcd.start();
    const fresh = client(etcd);
    assert.equal(await fresh.get('/harness/crash').string(), 'survives');
  });
});

void describe('etcd harness: user/password auth', () => {
  const rootPassword = 'root-pw';
  let etcd: EtcdServer;
  before(async () => {
    etcd = await startEtcd({ auth: { rootPassword } });
  });
  after(async () => {
    await etcd?.dispose();
  });

  void test('unauthenticated requests are refused, root is allowed', async () => {
    const anon = client(etcd);
    // etcd 3.4 answers INVALID_ARGUMENT "user name is empty" (etcd3: GRPCInvalidArgumentError).
    await assert.rejects(anon.put('/auth/k').value('v').exec(), /user name is empty/);
    await assert.rejects(anon.get('/auth/k').string(), /user name is empty/);

    const root = client(etcd, { auth: { username: 'root', password: rootPassword } });
    await root.put('/auth/k').value('v');
    assert.equal(await root.get('/auth/k').string(), 'v');

    const wrong = client(etcd, { auth: { username: 'root', password: 'wrong' } });
    await assert.rejects(wrong.get('/auth/k').string(), (err) => err instanceof EtcdAuthenticationFailedError);
  });

  void test('addUser grants a key prefix and nothing else', async () => {
    await etcd.addUser({ name: 'emperor', password: 'emperor-pw', prefix: '/emperor/' });
    const emp = client(etcd, { auth: { username: 'emperor', password: 'emperor-pw' } });
    await emp.put('/emperor/apps/a').value('1');
    assert.equal(await emp.get('/emperor/apps/a').string(), '1');
    await assert.rejects(emp.put('/elsewhere').value('1').exec(), (err) => err instanceof EtcdPermissionDeniedError);
    await assert.rejects(emp.get('/auth/k').string(), (err) => err instanceof EtcdPermissionDeniedError);
  });
});

void describe('etcd harness: lifecycle', () => {
  void test('dispose stops etcd and removes its data dir', async () => {
    const etcd = await startEtcd();
    const pid = etcd.pid;
    assert.ok(pid);
    await etcd.dispose();
    assert.equal(etcd.pid, undefined);
    assert.equal(existsSync(etcd.dataDir), false);
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
    await etcd.dispose(); // idempotent
  });
});
