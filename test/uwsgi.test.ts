// uWSGI vassals run unchanged (issue 15): a real uWSGI (Debian's uwsgi + python3 plugin) serving
// a tiny WSGI app from an .ini file, driven over the Emperor protocol, registered in Consul (the
// agent double under test/consul, or a real agent named by EMPEROR_TEST_CONSUL_ADDR) only once it
// sent byte 5 and deregistered before byte 0 reaches it; and a Node vassal speaking the protocol.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { startConsulDouble, type ConsulDouble } from './consul/double.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';
import { isRunning } from './support/proc.js';
import { waitFor } from './support/wait.js';

const APP_PY = fixture('uwsgi/app.py');
const PROTOCOL_JS = fixture('emperor-protocol.js');
const REAL_AGENT = process.env.EMPEROR_TEST_CONSUL_ADDR;
const TOKEN = process.env.EMPEROR_TEST_CONSUL_TOKEN;

const serviceIdOf = (vassalName: string): string => `${os.hostname().replace(/[^A-Za-z0-9_.-]+/g, '-')}-${vassalName}`;

/** GET http://127.0.0.1:port/path → status and body (a fresh connection each time). */
function get(port: number, p = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${p} timed out`)));
    req.on('error', reject);
  });
}

async function agentServices(address: string): Promise<Record<string, { Service: string; Port: number; Tags: string[] }>> {
  const r = await fetch(`http://${address}/v1/agent/services`, { headers: TOKEN ? { 'X-Consul-Token': TOKEN } : {} });
  if (!r.ok) throw new Error(`agent services: ${r.status}`);
  return (await r.json()) as Record<string, { Service: string; Port: number; Tags: string[] }>;
}

/** The .ini a uWSGI user already has, plus the draft's consul-* options. */
function shopIni(o: { port: number; gate?: string; slowStarted?: string; stopHookDump?: string; agent?: string; extra?: string[]; consulAddress?: string }): string {
  const lines = [
    '; a vassal exactly as it runs under the uWSGI Emperor',
    '[uwsgi]',
    'plugin = python3',
    `http-socket = 127.0.0.1:${o.port}`,
    `wsgi-file = ${APP_PY}`,
    'master = true',
    'processes = 2',
    // uWSGI itself asks for no more than this when the emperor says "stop" or "reload".
    'reload-mercy = 20',
    'worker-reload-mercy = 20',
    ...(o.gate ? [`emperor-env = GATE=${o.gate}`] : []),
    ...(o.slowStarted ? [`emperor-env = SLOW_STARTED=${o.slowStarted}`] : []),
    ...(o.stopHookDump && o.consulAddress
      ? [
          // Runs in uWSGI's master the moment byte 0 arrives: what does the agent hold then?
          `hook-emperor-stop = exec:python3 -c "import urllib.request,sys; open(sys.argv[1],'wb').write(urllib.request.urlopen(urllib.request.Request('http://${o.consulAddress}/v1/agent/services', headers={'X-Consul-Token': '${TOKEN ?? ''}'} if '${TOKEN ?? ''}' else {})).read())" ${o.stopHookDump}`,
        ]
      : []),
    ...(o.agent ? [`consul-agent = ${o.agent}`, 'consul-consistency-mode = stale'] : []),
    'consul-service-name = shop-%n',
    'consul-service-tags = v2,blue',
    `consul-service-port = ${o.port}`,
    'emperor-stop-timeout = 60s',
    ...(o.extra ?? []),
  ];
  return `${lines.join('\n')}\n`;
}

describe('uWSGI .ini vassals', () => {
  let consul: ConsulDouble | undefined;
  let address: string;
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  /** The port of the shop vassal of the first test, which the later ones use. */
  let shopPort = 0;
  let slowStarted = '';

  before(async () => {
    if (REAL_AGENT) address = REAL_AGENT;
    else {
      consul = await startConsulDouble();
      address = consul.address;
    }
    ws = await makeWorkspace('emperor-uwsgi-');
    emp = await EmperorUnderTest.start(ws, ['--consul-agent', address, '--consul-check-ttl', '600ms', '--anti-entropy-interval', '300ms']);
  });
  after(async () => {
    await emp?.stop();
    await consul?.stop();
  });

  it('runs uwsgi --ini FILE; ready on byte 5, and registered in Consul only after it', async () => {
    const port = await freePort();
    shopPort = port;
    slowStarted = path.join(ws.root, 'slow.started');
    const gate = path.join(ws.root, 'shop.gate');
    const since = emp.mark();
    await emp.writeVassal('shop.ini', shopIni({ port, gate, slowStarted }));
    const spawned = await emp.waitEvent('shop', 'spawned', since);
    // uWSGI is loading the app (held at the gate): running, not ready, not registered.
    await waitFor(async () => (await emp.vassal('shop')).uptimeMs! > 500, 'uWSGI loading for a while');
    assert.equal((await emp.vassal('shop')).state, 'starting');
    assert.equal((await agentServices(address))[serviceIdOf('shop')], undefined, 'not registered before byte 5');
    await fs.writeFile(gate, '');
    await emp.waitEvent('shop', 'ready', since);
    const status = await emp.vassal('shop');
    assert.equal(status.pid, spawned.pid);
    const res = await get(port);
    assert.equal(res.status, 200);
    assert.equal(res.body, `hello ${spawned.pid as number}`, 'served by the uWSGI master the emperor spawned');
    await waitFor(async () => (await agentServices(address))[serviceIdOf('shop')] !== undefined, 'registered in Consul');
    const svc = (await agentServices(address))[serviceIdOf('shop')]!;
    assert.equal(svc.Service, 'shop-shop', '%n expanded as uWSGI does (the file name without extension)');
    assert.equal(svc.Port, port);
    assert.deepEqual(svc.Tags, ['v2', 'blue']);
  });

  it('touch reloads in place (byte 1) without losing a request in flight, and stays registered', async () => {
    const before = await emp.vassal('shop');
    assert.equal(before.state, 'running');
    const since = emp.mark();
    const inFlight = get(shopPort, '/slow');
    // The request is being served (it sleeps 1.5 s in the worker) when the file is touched.
    await waitFor(async () => fs.access(slowStarted).then(() => true, () => false), 'the slow request being served');
    const now = new Date();
    await fs.utimes(path.join(ws.vassals, 'shop.ini'), now, new Date(now.getTime() + 5_000));
    await emp.waitEvent('shop', 'reloading', since);
    const answered = await inFlight;
    assert.deepEqual(answered, { status: 200, body: 'slow done' }, 'the request in flight was answered');
    await emp.waitEvent('shop', 'reloaded', since);
    const after = await emp.vassal('shop');
    assert.equal(after.pid, before.pid, 'the same uWSGI master, reloaded in place');
    assert.equal(after.state, 'running');
    assert.equal((await get(shopPort)).status, 200);
    assert.equal(emp.events('shop', 'stopping', since).length, 0, 'no stop');
    assert.ok((await agentServices(address))[serviceIdOf('shop')], 'still registered');
    const log = await fs.readFile(path.join(ws.logs, 'shop.log'), 'utf8');
    assert.match(log, /received message 1 from emperor/);
  });

  it('removal deregisters strictly before byte 0 reaches uWSGI, and the stop does not wait for stop.timeout (60 s)', async () => {
    const port = await freePort();
    const dump = path.join(ws.root, 'at-stop.json');
    let since = emp.mark();
    await emp.writeVassal('cart.ini', shopIni({ port, stopHookDump: dump, consulAddress: address }).replace('shop-%n', 'cart'));
    const spawned = await emp.waitEvent('cart', 'ready', since);
    await waitFor(async () => (await agentServices(address))[serviceIdOf('cart')] !== undefined, 'cart registered');
    since = emp.mark();
    await fs.rm(path.join(ws.vassals, 'cart.ini'));
    // Well inside the 60 s stop.timeout: the stop must not have waited for it.
    const stopped = await emp.waitEvent('cart', 'stopped', since, 40_000);
    assert.ok(stopped);
    assert.equal(emp.events('cart', 'killed', since).length, 0, 'no SIGKILL: uWSGI stopped on byte 0');
    const exited = emp.events('cart', 'exited', since)[0];
    assert.equal(exited?.code, 0, 'uWSGI exited by itself');
    assert.equal(isRunning(spawned.pid as number), false);
    const atStop = JSON.parse(await fs.readFile(dump, 'utf8')) as Record<string, unknown>;
    assert.equal(atStop[serviceIdOf('cart')], undefined, 'when byte 0 arrived, Consul no longer had the service');
    assert.ok(atStop[serviceIdOf('shop')], 'the dump is a real view of the agent (it shows the other vassal)');
    const log = await fs.readFile(path.join(ws.logs, 'cart.log'), 'utf8');
    assert.match(log, /received message 0 from emperor/);
  });

  it("uWSGI's heartbeat option keeps it alive; a hung uWSGI (its group SIGSTOPped) is killed and restarted", async () => {
    const port = await freePort();
    let since = emp.mark();
    await emp.writeVassal('beat.ini', shopIni({ port, extra: ['heartbeat = 1', 'emperor-heartbeat-timeout = 3s'] }).replace('shop-%n', 'beat'));
    const first = await emp.waitEvent('beat', 'ready', since);
    // Several heartbeat timeouts pass: uWSGI's heartbeats (byte 26, every second) keep it.
    await waitFor(async () => (await emp.vassal('beat')).uptimeMs! > 8_000, 'up for more than two heartbeat timeouts');
    assert.equal(emp.events('beat', 'heartbeat-lost', since).length, 0);
    await waitFor(async () => (await agentServices(address))[serviceIdOf('beat')] !== undefined, 'beat registered');
    since = emp.mark();
    // uWSGI's workers send the heartbeats (from their accept loop): stop the whole group, as a
    // hang would. heartbeat-lost then proves heartbeats were being received before.
    process.kill(-(first.pid as number), 'SIGSTOP');
    await emp.waitEvent('beat', 'heartbeat-lost', since);
    const again = await emp.waitEvent('beat', 'ready', since);
    assert.notEqual(again.pid, first.pid, 'a new uWSGI');
    assert.match((await emp.vassal('beat')).lastExit?.reason ?? '', /hung: no heartbeat for 3s/);
    await waitFor(async () => (await agentServices(address))[serviceIdOf('beat')] !== undefined, 'registered again');
    assert.equal((await get(port)).status, 200);
    since = emp.mark();
    await fs.rm(path.join(ws.vassals, 'beat.ini'));
    await emp.waitEvent('beat', 'stopped', since);
  });

  it('bad .ini files are refused with the option named, and a running vassal keeps running', async () => {
    const running = await emp.vassal('shop');
    const file = path.join(ws.vassals, 'shop.ini');
    const good = await fs.readFile(file, 'utf8');
    const cases: Array<[string, RegExp]> = [
      ['[server]\nhttp-socket = :1\n', /no \[uwsgi\] section/],
      [good.replace(/consul-service-port = \d+/, 'consul-service-port = 80x'), /consul-service-port: expected a port number from 1 to 65535, got "80x"/],
      [good.replace('consul-service-tags = v2,blue', 'consul-service-tags = v2, blue'), /consul-service-tags: expected a non-empty tag without spaces, got " blue"/],
    ];
    for (const [content, expected] of cases) {
      const since = emp.mark();
      await fs.writeFile(file, content);
      const invalid = await emp.waitEvent('shop', 'invalid', since);
      assert.match(invalid.message, expected);
      assert.match(invalid.message, /shop\.ini/);
      assert.match(invalid.message, /keeps running/);
      const now = await emp.vassal('shop');
      assert.equal(now.pid, running.pid);
      assert.equal(now.state, 'running');
    }
    const since = emp.mark();
    await fs.writeFile(file, good);
    // The same content again, but a new mtime: for an .ini that is a touch, so a reload in place.
    await emp.waitEvent('shop', 'reloaded', since);
    assert.equal((await emp.vassal('shop')).pid, running.pid);
  });
});

describe('the Emperor protocol with any vassal (a Node app speaking it)', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;

  before(async () => {
    ws = await makeWorkspace('emperor-protocol-');
    emp = await EmperorUnderTest.start(ws, ['--uwsgi-bin', path.join(os.tmpdir(), 'no-such-uwsgi-here')]);
  });
  after(async () => {
    await emp?.stop();
  });

  const protocolVassal = (env: Record<string, string>, extra: Record<string, unknown> = {}): object => ({
    command: [process.execPath, PROTOCOL_JS],
    env,
    emperor_protocol: true,
    backoff: { initial: '50ms', max: '200ms', max_retries: 20 },
    ...extra,
  });

  it('ready on byte 5 (not before), stopped with byte 0 although it ignores SIGTERM', async () => {
    const readyFile = path.join(ws.root, 'node.ready');
    const stopLog = path.join(ws.root, 'node.stop');
    let since = emp.mark();
    await emp.writeVassal('node.yaml', protocolVassal({ READY_FILE: readyFile, STOP_LOG: stopLog }, { stop: { timeout: '60s' } }));
    await emp.waitEvent('node', 'spawned', since);
    await waitFor(async () => (await emp.vassal('node')).uptimeMs! > 500, 'up for a while');
    assert.equal((await emp.vassal('node')).state, 'starting', 'no byte 5 yet');
    await fs.writeFile(readyFile, '');
    await emp.waitEvent('node', 'ready', since);
    since = emp.mark();
    await fs.rm(path.join(ws.vassals, 'node.yaml'));
    await emp.waitEvent('node', 'stopped', since, 40_000);
    assert.equal(await fs.readFile(stopLog, 'utf8'), 'stop message\n');
    assert.equal(emp.events('node', 'killed', since).length, 0);
  });

  it('a vassal that stops heartbeating (byte 26) is hung: killed and restarted', async () => {
    const since = emp.mark();
    await emp.writeVassal('beat.yaml', protocolVassal({ HEARTBEAT_MS: '100', HEARTBEATS: '3' }, { heartbeat_timeout: '1s' }));
    const first = await emp.waitEvent('beat', 'ready', since);
    const lost = await emp.waitEvent('beat', 'heartbeat-lost', since);
    assert.ok(lost);
    const respawned = await emp.waitFor((e) => e.vassal === 'beat' && e.event === 'spawned' && e.pid !== first.pid, 'a new process', since);
    assert.notEqual(respawned.pid, first.pid);
    const status = await emp.vassal('beat');
    assert.match(status.lastExit?.reason ?? '', /hung: no heartbeat for 1s/);
    await fs.rm(path.join(ws.vassals, 'beat.yaml'));
    await emp.waitEvent('beat', 'stopped', emp.mark());
  });

  it('without heartbeats at all nothing is expected of it (as with uWSGI)', async () => {
    const since = emp.mark();
    await emp.writeVassal('quiet.yaml', protocolVassal({}, { heartbeat_timeout: '200ms' }));
    const ready = await emp.waitEvent('quiet', 'ready', since);
    // Several heartbeat timeouts later it still runs, the same process.
    await waitFor(async () => (await emp.vassal('quiet')).uptimeMs! > 1500, 'up for many heartbeat timeouts');
    assert.equal((await emp.vassal('quiet')).pid, ready.pid);
    assert.equal(emp.events('quiet', 'heartbeat-lost', since).length, 0);
    await fs.rm(path.join(ws.vassals, 'quiet.yaml'));
    await emp.waitEvent('quiet', 'stopped', emp.mark());
  });

  it('byte 22 (voluntary shutdown) stops it, and it stays stopped', async () => {
    const since = emp.mark();
    await emp.writeVassal('done.yaml', protocolVassal({ SHUTDOWN_AFTER_MS: '300' }));
    await emp.waitEvent('done', 'ready', since);
    await emp.waitEvent('done', 'voluntary-shutdown', since);
    await emp.waitEvent('done', 'stopped', since);
    assert.equal((await emp.vassal('done')).state, 'stopped');
    assert.equal(emp.events('done', 'spawned', since).length, 1);
  });

  it('an .ini vassal whose uWSGI binary is missing fails to start with an error naming the file', async () => {
    const since = emp.mark();
    const file = await emp.writeVassal('nouwsgi.ini', '[uwsgi]\nhttp-socket = 127.0.0.1:1\n');
    const failed = await emp.waitEvent('nouwsgi', 'spawn-failed', since);
    assert.ok(failed.message.includes(file), failed.message);
    assert.match(failed.message, /uWSGI binary .*no-such-uwsgi-here.* was not found.*--uwsgi-bin/);
    await fs.rm(file);
  });
});

describe("the file's consul-agent (the uWSGI–Consul draft)", () => {
  const doubles: ConsulDouble[] = [];
  const emperors: EmperorUnderTest[] = [];
  after(async () => {
    for (const e of emperors) await e.stop();
    for (const d of doubles) await d.stop();
  });
  const double = async (opts: Parameters<typeof startConsulDouble>[0] = {}): Promise<ConsulDouble> => {
    const d = await startConsulDouble(opts);
    doubles.push(d);
    return d;
  };

  it('is enough to register: no --consul-agent needed; removal deregisters before byte 0', async () => {
    const address = REAL_AGENT ?? (await double()).address;
    const ws = await makeWorkspace('emperor-uwsgi-agent-');
    // A real agent with ACLs needs the token, which the emperor sends only to its own agents.
    const own = TOKEN ? ['--consul-agent', address] : [];
    const emp = await EmperorUnderTest.start(ws, [...own, '--anti-entropy-interval', '300ms'], TOKEN ? { ...process.env, EMPEROR_CONSUL_TOKEN: TOKEN } : process.env);
    emperors.push(emp);
    const port = await freePort();
    const dump = path.join(ws.root, 'at-stop.json');
    let since = emp.mark();
    await emp.writeVassal('solo.ini', shopIni({ port, agent: address, stopHookDump: dump, consulAddress: address }));
    await emp.waitEvent('solo', 'ready', since);
    await waitFor(async () => (await agentServices(address))[serviceIdOf('solo')] !== undefined, 'registered through the agent the file names');
    assert.equal((await agentServices(address))[serviceIdOf('solo')]?.Service, 'shop-solo');
    const status = await emp.status();
    assert.ok(status.registries.some((r) => r.registry === 'consul' && r.description.includes(address)), JSON.stringify(status.registries));
    since = emp.mark();
    await fs.rm(path.join(ws.vassals, 'solo.ini'));
    await emp.waitEvent('solo', 'stopped', since);
    const atStop = JSON.parse(await fs.readFile(dump, 'utf8')) as Record<string, unknown>;
    assert.equal(atStop[serviceIdOf('solo')], undefined, 'deregistered before byte 0');
    assert.equal((await agentServices(address))[serviceIdOf('solo')], undefined);
  });

  it("wins over --consul-agent for its vassal, and never receives the emperor's token", async () => {
    const mine = await double({ aclToken: 'emperor-secret' });
    const theirs = await double();
    const ws = await makeWorkspace('emperor-uwsgi-agents-');
    const emp = await EmperorUnderTest.start(ws, ['--consul-agent', mine.address, '--anti-entropy-interval', '300ms'], { ...process.env, EMPEROR_CONSUL_TOKEN: 'emperor-secret' });
    emperors.push(emp);
    const [p1, p2] = [await freePort(), await freePort()];
    let since = emp.mark();
    await emp.writeVassal('theirs.ini', shopIni({ port: p1, agent: theirs.address }));
    await emp.writeVassal('plain.ini', shopIni({ port: p2 }));
    await emp.waitEvent('theirs', 'ready', since);
    await emp.waitEvent('plain', 'ready', since);
    await waitFor(() => theirs.services().some((s) => s.ID === serviceIdOf('theirs')), "registered in the file's agent");
    await waitFor(() => mine.services().some((s) => s.ID === serviceIdOf('plain')), "the other vassal in the emperor's agent");
    assert.equal(mine.services().find((s) => s.ID === serviceIdOf('theirs')), undefined, "not in the emperor's agent");
    assert.equal(theirs.services().find((s) => s.ID === serviceIdOf('plain')), undefined);
    assert.ok(mine.requests.some((r) => r.headers['x-consul-token'] === 'emperor-secret'), 'the emperor does send its token to its own agent');
    const leaked = theirs.requests.filter((r) => JSON.stringify(r.headers).includes('emperor-secret') || r.query.toString().includes('emperor-secret'));
    assert.deepEqual(leaked, [], 'the token never went to an agent a vassal file named');
    since = emp.mark();
    await fs.rm(path.join(ws.vassals, 'theirs.ini'));
    await emp.waitEvent('theirs', 'stopped', since);
    assert.equal(theirs.services().find((s) => s.ID === serviceIdOf('theirs')), undefined);
  });
});
