// The emperor registering vassals in a real etcd: only when ready, gone before stop, repaired
// after outages and hand edits, vanishing with the lease when the emperor is SIGKILLed.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { Etcd3 } from 'etcd3';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { startEtcd, type EtcdServer } from './support/etcd.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';
import { isRunning, signalWhenArmed } from './support/proc.js';
import { waitFor } from './support/wait.js';

const HTTP_APP = fixture('http-app.js');

interface InstanceDoc {
  id: string;
  vassal: string;
  location: string;
  pid: number;
  health: string;
  checks: Array<{ name: string; status: string }>;
  tags: string[];
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

describe('etcd registration', () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  const root = '/reg-test';
  const loc = (type: string, name: string): string => `${root}/services/${type}/${name}`;
  const doc = (type: string, name: string): string => `${root}/instances/${type}/${name}`;
  const get = (key: string): Promise<string | null> => client.get(key).string();
  const getDoc = async (type: string, name: string): Promise<InstanceDoc | null> => {
    const text = await get(doc(type, name));
    return text === null ? null : (JSON.parse(text) as InstanceDoc);
  };

  before(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.clientUrl });
    ws = await makeWorkspace();
    emp = await EmperorUnderTest.start(ws, [
      '--etcd-endpoint',
      etcd.endpoint,
      '--tree-root',
      root,
      '--lease-ttl',
      '2s',
      '--anti-entropy-interval',
      '300ms',
    ]);
  });
  after(async () => {
    await emp?.stop();
    client?.close();
    await etcd?.dispose();
  });

  it('registers only after ready, with the empusa location and a JSON instance document', async () => {
    const port = await freePort();
    const puts: string[] = [];
    const watcher = await client.watch().key(loc('http', 'gated')).create();
    watcher.on('put', () => puts.push('put'));
    try {
      await emp.writeVassal(
        'gated.yaml',
        vassal(port, { type: 'http', tags: ['v1'] }, { APP_WAIT_SIGNAL: '1', APP_ARMED: path.join(ws.root, 'gated.armed') }, { start: { ready: { tcp: `127.0.0.1:${port}`, interval: '50ms' } } }),
      );
      const spawned = await emp.waitEvent('gated', 'spawned');
      await waitFor(async () => (await emp.vassal('gated')).uptimeMs! > 500, 'starting for a while');
      assert.equal(await get(loc('http', 'gated')), null, 'not registered before ready');
      assert.deepEqual(puts, []);
      await signalWhenArmed(path.join(ws.root, 'gated.armed'), spawned.pid as number);
      await emp.waitEvent('gated', 'ready');
      await waitFor(async () => (await get(loc('http', 'gated'))) === `127.0.0.1:${port}`, 'location key');
      const d = await getDoc('http', 'gated');
      assert.equal(d?.vassal, 'gated');
      assert.equal(d?.location, `127.0.0.1:${port}`);
      assert.equal(d?.pid, spawned.pid);
      assert.equal(d?.health, 'passing');
      assert.deepEqual(d?.tags, ['v1']);
      // Both keys hang on the emperor's lease.
      const raw = await client.get(loc('http', 'gated')).exec();
      assert.notEqual(raw.kvs[0]?.lease, '0');
    } finally {
      await watcher.cancel();
    }
  });

  it('a vassal that never becomes ready is never registered', async () => {
    const port = await freePort();
    const puts: string[] = [];
    const watcher = await client.watch().prefix(`${root}/`).create();
    watcher.on('put', (kv) => puts.push(kv.key.toString()));
    try {
      await emp.writeVassal('unready.yaml', vassal(port, {}, { APP_WAIT_SIGNAL: '1' }, { start: { timeout: '300ms' }, backoff: { initial: '50ms', max_retries: 1 } }));
      await emp.waitEvent('unready', 'fatal');
      assert.deepEqual(
        puts.filter((k) => k.includes('unready')),
        [],
      );
      assert.equal(await get(loc('default', 'unready')), null);
    } finally {
      await watcher.cancel();
    }
  });

  it('deregisters before the stop signal, then drains, then signals', async () => {
    const port = await freePort();
    const probeOut = path.join(ws.root, 'probe-out');
    const key = loc('default', 'graceful');
    await emp.writeVassal(
      'graceful.yaml',
      vassal(port, {}, { PROBE_ETCD_URL: etcd.clientUrl, PROBE_KEY: key, PROBE_OUT: probeOut }, { stop: { drain: '200ms' } }),
    );
    await emp.waitEvent('graceful', 'ready');
    await waitFor(async () => (await get(key)) !== null, 'registered');
    const events: string[] = [];
    const watcher = await client.watch().key(key).create();
    watcher.on('delete', () => events.push('delete'));
    try {
      const m = emp.mark();
      const r = await emp.cli(['stop', 'graceful']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await fs.readFile(probeOut, 'utf8'), 'absent', 'the app saw its key already gone when it got SIGTERM');
      await waitFor(() => events.includes('delete'), 'watcher saw the delete');
      // The log is a channel of its own: the CLI's answer can arrive before the lines that precede
      // it in the emperor. Once "stopped" is read, everything logged before it has been read too.
      await emp.waitEvent('graceful', 'stopped', m);
      const order = emp.entries.slice(m).filter((e) => e.vassal === 'graceful').map((e) => e.event);
      assert.ok(order.indexOf('draining') >= 0 && order.indexOf('draining') < order.indexOf('stopping'), order.join(','));
      assert.equal(await get(doc('default', 'graceful')), null);
    } finally {
      await watcher.cancel();
    }
  });

  it('a crash deregisters at once; the restart registers the new pid', async () => {
    const port = await freePort();
    await emp.writeVassal('crashy.yaml', vassal(port, {}));
    const ready = await emp.waitEvent('crashy', 'ready');
    await waitFor(async () => (await getDoc('default', 'crashy'))?.pid === ready.pid, 'registered');
    const deletes: string[] = [];
    const watcher = await client.watch().key(loc('default', 'crashy')).create();
    watcher.on('delete', () => deletes.push('delete'));
    try {
      const m = emp.mark();
      process.kill(ready.pid as number, 'SIGKILL');
      await waitFor(() => deletes.length > 0, 'deleted after the crash');
      const again = await emp.waitEvent('crashy', 'ready', m);
      await waitFor(async () => (await getDoc('default', 'crashy'))?.pid === again.pid, 're-registered with the new pid');
    } finally {
      await watcher.cancel();
    }
  });

  it('a changed file re-registers under the new name and drops the old key', async () => {
    const port = await freePort();
    await emp.writeVassal('renamed.yaml', vassal(port, { name: 'before' }));
    await emp.waitEvent('renamed', 'ready');
    await waitFor(async () => (await get(loc('default', 'before'))) !== null, 'old name registered');
    const m = emp.mark();
    await emp.writeVassal('renamed.yaml', vassal(port, { name: 'after' }));
    await emp.waitEvent('renamed', 'ready', m);
    await waitFor(async () => (await get(loc('default', 'after'))) !== null, 'new name registered');
    assert.equal(await get(loc('default', 'before')), null);
  });

  it('health changes reach the JSON document; deregister_when_critical hides the location', async () => {
    const port = await freePort();
    await emp.writeVassal('sick.yaml', vassal(port, { deregister_when_critical: true }, {}, { checks: [{ name: 'beat', ttl: '1m' }] }));
    await emp.waitEvent('sick', 'ready');
    // ttl checks start critical: the document is there, the location is not.
    await waitFor(async () => (await getDoc('default', 'sick'))?.health === 'critical', 'critical document');
    assert.equal(await get(loc('default', 'sick')), null);
    assert.equal((await emp.cli(['check', 'pass', 'sick'])).code, 0);
    await waitFor(async () => (await get(loc('default', 'sick'))) === `127.0.0.1:${port}`, 'location back when passing');
    const d = await getDoc('default', 'sick');
    assert.equal(d?.health, 'passing');
    assert.deepEqual(
      d?.checks.map((c) => [c.name, c.status]),
      [['beat', 'passing']],
    );
    assert.equal((await emp.cli(['check', 'warn', 'sick'])).code, 0);
    await waitFor(async () => (await getDoc('default', 'sick'))?.health === 'warning', 'warning document');
    assert.notEqual(await get(loc('default', 'sick')), null, 'warning keeps the location');
    assert.equal((await emp.cli(['check', 'fail', 'sick'])).code, 0);
    await waitFor(async () => (await get(loc('default', 'sick'))) === null, 'location hidden again');
  });

  it('anti-entropy restores a key deleted by hand, and never touches another tree root', async () => {
    await client.put('/reg-testing/services/x/y').value('keep');
    await client.put('/other/services/x/y').value('keep');
    const port = await freePort();
    await emp.writeVassal('restored.yaml', vassal(port, {}));
    await emp.waitEvent('restored', 'ready');
    await waitFor(async () => (await get(loc('default', 'restored'))) !== null, 'registered');
    await client.delete().key(loc('default', 'restored'));
    await emp.waitFor((e) => e.event === 'registry-drift', 'drift repaired');
    await waitFor(async () => (await get(loc('default', 'restored'))) !== null, 'restored');
    assert.equal(await get('/reg-testing/services/x/y'), 'keep');
    assert.equal(await get('/other/services/x/y'), 'keep');
  });

  it('etcd down: vassals keep running, stops are bounded; back up: the ready set is registered again', async () => {
    const portA = await freePort();
    const portB = await freePort();
    const portC = await freePort();
    const fileA = await emp.writeVassal('out-a.yaml', vassal(portA, {}));
    await emp.writeVassal('out-b.yaml', vassal(portB, {}));
    const readyB = await emp.waitEvent('out-b', 'ready');
    await emp.waitEvent('out-a', 'ready');
    await waitFor(async () => (await get(loc('default', 'out-a'))) !== null && (await get(loc('default', 'out-b'))) !== null, 'both registered');

    const m = emp.mark();
    await etcd.stop();
    // Removing A must not hang on the dead registry (bounded deregistration).
    await fs.rm(fileA);
    await emp.waitEvent('out-a', 'stopped', m, 20000);
    await emp.writeVassal('out-c.yaml', vassal(portC, {}));
    await emp.waitEvent('out-c', 'ready', m);
    assert.ok(isRunning(readyB.pid as number), 'B kept running during the outage');
    await etcd.start();
    const back = Date.now();
    await waitFor(
      async () => (await get(loc('default', 'out-b'))) !== null && (await get(loc('default', 'out-c'))) !== null,
      'B and C registered again after etcd came back',
      10000,
    );
    const recoveredMs = Date.now() - back;
    assert.equal(await get(loc('default', 'out-a')), null, 'A was stopped meanwhile and must not come back');
    // The keys being back in etcd says nothing about how far the test has read the emperor's log
    // (another channel): wait for the line itself, then count what came before it.
    await emp.waitFor((e) => e.event === 'registry-up', 'registry-up logged', m);
    // One "down" report, not a flood.
    assert.ok(emp.entries.slice(m).filter((e) => e.event === 'registry-down').length <= 2, 'registry-down logged at most twice');
    process.stderr.write(`# etcd recovery: registrations back ${recoveredMs} ms after etcd started\n`);
  });
});

describe('etcd registration: lease, endpoints and auth', () => {
  it('a lease lost behind its back (revoked by hand) is replaced and everything re-registered', async () => {
    const etcd = await startEtcd();
    const client = new Etcd3({ hosts: etcd.clientUrl });
    try {
      const emp = await EmperorUnderTest.start(await makeWorkspace(), ['--etcd-endpoint', etcd.endpoint, '--tree-root', '/lost', '--lease-ttl', '2s']);
      const port = await freePort();
      await emp.writeVassal('leased.yaml', vassal(port, {}));
      await emp.waitEvent('leased', 'ready');
      await waitFor(async () => (await client.get('/lost/services/default/leased').string()) !== null, 'registered');
      const before = (await client.get('/lost/services/default/leased').exec()).kvs[0]!.lease;
      const m = emp.mark();
      await client.leaseClient.leaseRevoke({ ID: before });
      await emp.waitFor((e) => e.event === 'registry-reset', 'reset noticed', m);
      await waitFor(async () => {
        const kv = (await client.get('/lost/services/default/leased').exec()).kvs[0];
        return kv !== undefined && kv.lease !== before;
      }, 're-registered on a new lease');
      await emp.stop();
    } finally {
      client.close();
      await etcd.dispose();
    }
  });

  it('a SIGKILLed emperor leaves no registration behind once its lease expires', async () => {
    const etcd = await startEtcd();
    const client = new Etcd3({ hosts: etcd.clientUrl });
    try {
      const ws = await makeWorkspace();
      const emp = await EmperorUnderTest.start(ws, ['--etcd-endpoint', etcd.endpoint, '--tree-root', '/kill', '--lease-ttl', '1s']);
      const port = await freePort();
      await emp.writeVassal('doomed.yaml', vassal(port, {}));
      const ready = await emp.waitEvent('doomed', 'ready');
      await waitFor(async () => (await client.get('/kill/services/default/doomed').string()) !== null, 'registered');
      await emp.stop('SIGKILL');
      await waitFor(async () => (await client.getAll().prefix('/kill/').keys()).length === 0, 'keys gone with the lease', 15000);
      await waitFor(() => !isRunning(ready.pid as number), 'vassal gone too');
    } finally {
      client.close();
      await etcd.dispose();
    }
  });

  it('works with the first of two endpoints dead', async () => {
    const etcd = await startEtcd();
    const client = new Etcd3({ hosts: etcd.clientUrl });
    try {
      const dead = await freePort();
      const emp = await EmperorUnderTest.start(await makeWorkspace(), ['--etcd-endpoint', `127.0.0.1:${dead},${etcd.endpoint}`, '--tree-root', '/two']);
      const port = await freePort();
      await emp.writeVassal('twice.yaml', vassal(port, {}));
      await emp.waitEvent('twice', 'ready');
      await waitFor(async () => (await client.get('/two/services/default/twice').string()) !== null, 'registered through the live endpoint');
      await emp.stop();
      assert.equal(await client.get('/two/services/default/twice').string(), null, 'a clean shutdown deregisters');
    } finally {
      client.close();
      await etcd.dispose();
    }
  });

  it('authenticates with a password from the environment that never shows in logs, status or vassal env', async () => {
    const password = 'S3cret-pw-for-etcd';
    const etcd = await startEtcd({ auth: { rootPassword: password } });
    const client = new Etcd3({ hosts: etcd.clientUrl, auth: { username: 'root', password } });
    try {
      const ws = await makeWorkspace();
      const envDump = path.join(ws.root, 'env.json');
      const emp = await EmperorUnderTest.start(ws, ['--etcd-endpoint', etcd.endpoint, '--tree-root', '/auth', '--etcd-user', 'root'], {
        ...process.env,
        EMPEROR_ETCD_PASSWORD: password,
      });
      const port = await freePort();
      await emp.writeVassal('authed.yaml', vassal(port, {}, { ENV_DUMP: envDump }));
      await emp.waitEvent('authed', 'ready');
      await waitFor(async () => (await client.get('/auth/services/default/authed').string()) !== null, 'registered with auth');
      const status = await emp.cli(['status', '--json']);
      const childEnv = await fs.readFile(envDump, 'utf8');
      await emp.stop();
      const everything = [JSON.stringify(emp.entries), emp.stderr, status.stdout, status.stderr, childEnv].join('\n');
      assert.ok(!everything.includes(password), 'the password leaked');
      assert.ok(!('EMPEROR_ETCD_PASSWORD' in (JSON.parse(childEnv) as Record<string, string>)));
    } finally {
      client.close();
      await etcd.dispose();
    }
  });

  it('bad etcd flags are refused with the flag named, before anything starts', async () => {
    const { runCli } = await import('./support/emperor.js');
    const ws = await makeWorkspace();
    const r = await runCli(['--vassals', ws.vassals, '--state-dir', ws.state, '--etcd-endpoint', '127.0.0.1:2379']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /tree-root/);
  });
});
