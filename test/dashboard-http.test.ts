// The dashboard over real HTTP (issue 16), played by an attacker: a DNS-rebinding page (wrong
// Host), a cross-site form or script (no CSRF header, foreign Origin), another local user on the
// loopback port, a network client without the token, and a hunt for secrets in every answer.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { addressKey } from '../src/dashboard/login-limit.js';
import { startConsulDouble, type ConsulDouble } from './consul/double.js';
import { removeUser, throwawayName, throwawayUser } from './support/accounts.js';
import { EmperorUnderTest, makeWorkspace, runCli } from './support/emperor.js';
import { startEtcd } from './support/etcd.js';
import { freePort } from './support/net.js';
import { after, before, describe, it } from './support/test.js';
import { waitFor } from './support/wait.js';

const node = process.execPath;
const IDLE = 'setInterval(() => {}, 1 << 30)';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request; `host` overrides the Host header. An event stream is read until `until` matches. */
function request(port: number, method: string, urlPath: string, headers: Record<string, string> = {}, body?: string, until?: RegExp): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
        if (until?.test(text)) {
          clearTimeout(timer);
          res.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text });
        }
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text });
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer to ${method} ${urlPath} within 30 s`)), 30_000);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}

const json = <T>(a: Answer): T => JSON.parse(a.body) as T;

/** The dashboard's event stream, read as it arrives: every event so far, parsed. */
function openEvents(port: number): { events: Array<{ event: string; data: unknown }>; close(): void } {
  const events: Array<{ event: string; data: unknown }> = [];
  let buf = '';
  const req = http.get({ host: '127.0.0.1', port, path: '/api/events', headers: { host: `127.0.0.1:${port}` } }, (res) => {
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      buf += d;
      for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const event = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (event !== undefined && data !== undefined) events.push({ event, data: JSON.parse(data) as unknown });
      }
    });
  });
  req.on('error', () => undefined);
  return { events, close: () => req.destroy() };
}

/** Requests made by a process of another user: status codes of each, in order. */
function requestsAs(
  user: { uid: number; gid: number },
  port: number,
  reqs: Array<{ method: string; path: string; csrf?: boolean; headers?: Record<string, string>; body?: string }>,
): Promise<number[]> {
  const script = `
const http = require('node:http');
const port = ${port};
const one = (method, path, headers, body) => new Promise((resolve) => {
  const req = http.request({ host: '127.0.0.1', port, method, path, headers }, (res) => { res.resume(); res.destroy(); resolve(res.statusCode); });
  req.on('error', () => resolve(-1));
  req.end(body);
});
(async () => {
  const s = await new Promise((resolve) => http.get({ host: '127.0.0.1', port, path: '/api/session' }, (res) => { let t = ''; res.on('data', (d) => (t += d)); res.on('end', () => resolve(JSON.parse(t))); }));
  const out = [];
  for (const r of ${JSON.stringify(reqs)}) out.push(await one(r.method, r.path, { ...(r.headers || {}), ...(r.csrf ? { 'x-emperor-csrf': s.csrf } : {}) }, r.body));
  console.log(JSON.stringify(out));
})();`;
  return new Promise((resolve, reject) => {
    const child = spawn(node, ['-e', script], { uid: user.uid, gid: user.gid, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out) as number[]);
      } catch {
        reject(new Error(`the other user's requests failed: ${err}${out}`));
      }
    });
  });
}

describe('dashboard over HTTP', { timeout: 300_000 }, () => {
  const emperors: EmperorUnderTest[] = [];
  const cleanups: Array<() => unknown> = [];
  after(async () => {
    await Promise.all(emperors.map((e) => e.stop()));
    for (const c of cleanups) await c();
  });
  const start = async (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<EmperorUnderTest> => {
    const emp = await EmperorUnderTest.start(await makeWorkspace('emperor-dash-'), args, env);
    emperors.push(emp);
    return emp;
  };

  it('refuses to start on a non-loopback address without a token, and with a token file others can read', async () => {
    const ws = await makeWorkspace('emperor-dash-');
    const port = await freePort();
    const bare = await runCli(['--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--http', `0.0.0.0:${port}`]);
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /--http 0\.0\.0\.0:\d+ is not a loopback address.*--http-token-file/);

    const tokenFile = path.join(ws.root, 'token');
    await fs.writeFile(tokenFile, 'a-long-enough-dashboard-token\n', { mode: 0o644 });
    const loose = await runCli(['--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--http', `0.0.0.0:${port}`, '--http-token-file', tokenFile]);
    assert.equal(loose.code, 2);
    assert.match(loose.stderr, /--http-token-file .*readable or writable by every user.*chmod 600/);

    await fs.writeFile(path.join(ws.root, 'short'), 'short', { mode: 0o600 });
    const short = await runCli(['--vassals', ws.vassals, '--state-dir', ws.state, '--logs-dir', ws.logs, '--http', `127.0.0.1:${port}`, '--http-token-file', path.join(ws.root, 'short')]);
    assert.equal(short.code, 2);
    assert.match(short.stderr, /at least 16 characters/);
  });

  it('on loopback: serves the page with a strict CSP, refuses foreign Hosts, and acts only with the CSRF header from its own origin', async () => {
    const port = await freePort();
    const emp = await start(['--http', `127.0.0.1:${port}`]);
    await emp.waitFor((e) => e.event === 'dashboard', 'dashboard listening', 0);
    await emp.writeVassal('web.json', { command: [node, '-e', IDLE] });
    await emp.waitEvent('web', 'ready');
    const pid = (await emp.vassal('web')).pid;

    const page = await request(port, 'GET', '/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.doesNotMatch(page.body, /<script>|<script [^s]|\son\w+=/, 'no inline script in the page');

    const status = json<{ vassals: Array<{ name: string }> }>(await request(port, 'GET', '/api/status'));
    assert.deepEqual(
      status.vassals.map((v) => v.name),
      ['web'],
    );

    // DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends its own Host.
    for (const p of ['/', '/api/status', '/api/events', '/api/session']) {
      const rebound = await request(port, 'GET', p, { host: `evil.example:${port}` });
      assert.equal(rebound.status, 400, `${p} with a foreign Host`);
      assert.doesNotMatch(rebound.body, /"vassals"|csrf"/);
    }
    assert.equal((await request(port, 'GET', '/api/status', { host: `localhost:${port}` })).status, 200);

    const { csrf } = json<{ csrf: string }>(await request(port, 'GET', '/api/session'));
    assert.ok(csrf.length >= 32);
    // A cross-site form cannot set headers: no CSRF header, refused.
    const forged = await request(port, 'POST', '/api/vassals/web/restart', { origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(forged.status, 403);
    assert.match(json<{ error: string }>(forged).error, /CSRF/);
    const wrongToken = await request(port, 'POST', '/api/vassals/web/restart', { 'x-emperor-csrf': csrf.slice(0, -2) + 'xx' });
    assert.equal(wrongToken.status, 403);
    const foreign = await request(port, 'POST', '/api/vassals/web/restart', { 'x-emperor-csrf': csrf, origin: 'http://evil.example' });
    assert.equal(foreign.status, 403);
    assert.match(json<{ error: string }>(foreign).error, /cross-origin/);
    assert.equal((await request(port, 'GET', '/api/vassals/web/restart', { 'x-emperor-csrf': csrf })).status, 405);
    assert.equal((await emp.vassal('web')).pid, pid, 'no refused request restarted it');

    const ok = await request(port, 'POST', '/api/vassals/web/restart', { 'x-emperor-csrf': csrf, origin: `http://127.0.0.1:${port}` });
    assert.equal(ok.status, 200, ok.body);
    const after = json<{ state: string; pid: number }>(ok);
    assert.equal(after.state, 'running');
    assert.notEqual(after.pid, pid, 'restarted: a new pid');
    assert.ok(Number(ok.headers['x-emperor-seq']) >= 1, 'taken in the control queue like the CLI');
    assert.equal((await request(port, 'POST', '/api/vassals/nope/stop', { 'x-emperor-csrf': csrf })).status, 404);
    assert.equal((await request(port, 'POST', '/api/vassals/web/explode', { 'x-emperor-csrf': csrf })).status, 404);
  });

  it('on loopback without a token: another local user sees status, but not logs or specs, and cannot act', async () => {
    const port = await freePort();
    const emp = await start(['--http', `127.0.0.1:${port}`]);
    await emp.writeVassal('web.json', { command: [node, '-e', `console.log('private line'); ${IDLE}`] });
    await emp.waitEvent('web', 'ready');
    const pid = (await emp.vassal('web')).pid;
    const mallory = throwawayUser(throwawayName('emp-dash-'));
    cleanups.push(() => removeUser(mallory.name));

    const codes = await requestsAs(mallory, port, [
      { method: 'GET', path: '/api/status' },
      { method: 'GET', path: '/api/vassals/web' },
      { method: 'GET', path: '/api/vassals/web/log' },
      { method: 'POST', path: '/api/vassals/web/stop', csrf: true },
      { method: 'POST', path: '/api/vassals/web/restart', csrf: true },
    ]);
    assert.deepEqual(codes, [200, 403, 403, 403, 403]);
    const v = await emp.vassal('web');
    assert.equal(v.state, 'running');
    assert.equal(v.pid, pid);
    // The emperor's own user (root here) may.
    assert.equal((await request(port, 'GET', '/api/vassals/web')).status, 200);
    const log = await request(port, 'GET', '/api/vassals/web/log?lines=5', {}, undefined, /private line/);
    assert.match(log.body, /data: "private line"/);
  });

  /** An emperor whose dashboard (on loopback) has a token file. */
  const startWithToken = async (): Promise<{ emp: EmperorUnderTest; port: number; token: string }> => {
    const port = await freePort();
    const ws = await makeWorkspace('emperor-dash-');
    const token = 'dashboard-token-0123456789abcdef';
    const tokenFile = path.join(ws.root, 'token');
    await fs.writeFile(tokenFile, token + '\n', { mode: 0o600 });
    const emp = await EmperorUnderTest.start(ws, ['--http', `127.0.0.1:${port}`, '--http-token-file', tokenFile]);
    emperors.push(emp);
    return { emp, port, token };
  };

  it('with --http-token-file: bearer or login cookie (HttpOnly, SameSite=Strict, not the token), nothing without', async () => {
    const { emp, port, token } = await startWithToken();
    await emp.writeVassal('web.json', { command: [node, '-e', IDLE] });
    await emp.waitEvent('web', 'ready');

    for (const p of ['/api/status', '/api/events', '/api/session', '/api/vassals/web']) assert.equal((await request(port, 'GET', p)).status, 401, p);
    assert.equal((await request(port, 'GET', '/api/status', { authorization: `Bearer ${token}x` })).status, 401);
    assert.equal((await request(port, 'GET', '/api/status', { authorization: `Bearer ${token}` })).status, 200);
    const home = await request(port, 'GET', '/');
    assert.equal(home.status, 303);
    assert.equal(home.headers.location, '/login');
    assert.equal((await request(port, 'GET', '/login')).status, 200);

    const form = { 'content-type': 'application/x-www-form-urlencoded', origin: `http://127.0.0.1:${port}` };
    const bad = await request(port, 'POST', '/login', form, 'token=wrong-token-wrong-token');
    assert.equal(bad.status, 303);
    assert.equal(bad.headers.location, '/login?failed=1');
    assert.equal(bad.headers['set-cookie'], undefined);
    assert.equal((await request(port, 'POST', '/login', { ...form, origin: 'http://evil.example' }, `token=${token}`)).status, 403);

    const good = await request(port, 'POST', '/login', form, `token=${encodeURIComponent(token)}`);
    assert.equal(good.status, 303);
    const cookie = good.headers['set-cookie']?.[0] ?? '';
    assert.match(cookie, /^emperor_session=[^;]+; HttpOnly; SameSite=Strict; Path=\//);
    assert.ok(!cookie.includes(token), 'the cookie does not carry the token itself');
    const session = cookie.split(';')[0]!;
    assert.equal((await request(port, 'GET', '/api/status', { cookie: session })).status, 200);
    assert.equal((await request(port, 'GET', '/', { cookie: session })).status, 200);
    assert.equal((await request(port, 'GET', '/api/status', { cookie: `${session}x` })).status, 401);
    const { csrf } = json<{ csrf: string }>(await request(port, 'GET', '/api/session', { cookie: session }));
    const pid = (await emp.vassal('web')).pid;
    const restarted = await request(port, 'POST', '/api/vassals/web/restart', { cookie: session, 'x-emperor-csrf': csrf });
    assert.equal(restarted.status, 200);
    assert.notEqual(json<{ pid: number }>(restarted).pid, pid);
    // Signed in or not, the CSRF header is still needed.
    assert.equal((await request(port, 'POST', '/api/vassals/web/restart', { cookie: session })).status, 403);
  });

  it('rate-limits failed sign-ins per client (429, Retry-After, doubling), and another local user cannot lock out the operator', async () => {
    const { emp, port, token } = await startWithToken();
    const form = { 'content-type': 'application/x-www-form-urlencoded', origin: `http://127.0.0.1:${port}` };
    const login = (t: string): Promise<Answer> => request(port, 'POST', '/login', form, `token=${encodeURIComponent(t)}`);

    // Another local user guessing on the same loopback address locks only itself.
    const mallory = throwawayUser(throwawayName('emp-dash-'));
    cleanups.push(() => removeUser(mallory.name));
    const guess = { method: 'POST', path: '/login', headers: form, body: 'token=not-the-token-0123456789' };
    const codes = await requestsAs(mallory, port, Array.from({ length: 8 }, () => guess));
    assert.deepEqual(codes, [303, 303, 303, 303, 303, 429, 429, 429], "the other user's guesses: five refused (the fifth locks), then locked out");
    await emp.waitFor((e) => e.event === 'dashboard-login-locked', 'the lock is logged', 0);
    const operator = await login(token);
    assert.equal(operator.status, 303, 'the operator (another uid) is not locked out');
    assert.match(operator.headers['set-cookie']?.[0] ?? '', /^emperor_session=/);

    // The operator's own failures: five refused (the fifth locks), and then even the right token
    // (form or bearer) is refused until the lock ends.
    for (let i = 0; i < 5; i++) assert.equal((await login(`wrong-guess-${i}-0123456789`)).status, 303);
    const locked = await login(token);
    assert.equal(locked.status, 429);
    const first = Number(locked.headers['retry-after']);
    assert.ok(first >= 1 && first <= 5, `Retry-After ${first}`);
    assert.match(json<{ error: string }>(locked).error, /too many failed sign-ins/);
    assert.equal((await request(port, 'GET', '/api/status', { authorization: `Bearer ${token}` })).status, 429);

    // After the lock, the next failure locks twice as long.
    let again: Answer | undefined;
    await waitFor(async () => {
      again = await login('still-wrong-0123456789');
      return again.status !== 429;
    }, 'the first lock ends');
    assert.equal(again!.status, 303);
    const longer = Number((await login(token)).headers['retry-after']);
    assert.ok(longer > 5 && longer <= 10, `the second lock is twice the first (Retry-After ${longer})`);
  });

  it('pushes registrar changes (registered, deregistered, failed) into the event stream as they happen', async () => {
    const etcd = await startEtcd();
    cleanups.push(() => etcd.dispose());
    const port = await freePort();
    const emp = await start(['--http', `127.0.0.1:${port}`, '--etcd-endpoint', etcd.endpoint, '--tree-root', '/dash']);
    await emp.waitFor((e) => e.event === 'dashboard', 'dashboard listening', 0);
    const stream = openEvents(port);
    cleanups.push(() => stream.close());
    await waitFor(() => stream.events.some((e) => e.event === 'snapshot'), 'the snapshot');
    type RegistryEvent = { changes: Array<{ vassal: string; registry: string; state: string; error?: string }>; registeredIn: Record<string, string[]> };
    /** The first `registry` event (after `from`) with a change of `vassal` to `state`. */
    const registryEvent = async (from: number, vassal: string, state: string): Promise<RegistryEvent> => {
      let found: RegistryEvent | undefined;
      await waitFor(() => {
        found = stream.events.slice(from).find((e) => e.event === 'registry' && (e.data as RegistryEvent).changes.some((c) => c.vassal === vassal && c.state === state))?.data as RegistryEvent | undefined;
        return found !== undefined;
      }, `a registry event: ${vassal} ${state}`);
      return found!;
    };

    // A service is ready once its port answers.
    const listening = (appPort: number): object => ({
      command: [node, '-e', `require('node:http').createServer((q, s) => s.end('ok')).listen(${appPort}, '127.0.0.1')`],
      service: { port: appPort, address: '127.0.0.1' },
    });
    const mark = stream.events.length;
    await emp.writeVassal('web.json', listening(await freePort()));
    const registered = await registryEvent(mark, 'web', 'registered');
    assert.deepEqual(registered.registeredIn, { web: ['etcd'] }, 'the registries column of web, in the same event');
    assert.ok((await etcd.etcdctl(['get', '--prefix', '/dash/'])).includes('web'), 'etcd holds it');

    const beforeStop = stream.events.length;
    const stopped = await emp.cli(['stop', 'web']);
    assert.equal(stopped.code, 0, stopped.stderr);
    const gone = await registryEvent(beforeStop, 'web', 'not registered');
    assert.deepEqual(gone.registeredIn, { web: [] });
    assert.equal(await etcd.etcdctl(['get', '--prefix', '/dash/', '--keys-only']), '', 'etcd no longer holds it');

    // etcd down: a registration that cannot be written is a `failed` event with the reason.
    await etcd.stop();
    const beforeFail = stream.events.length;
    await emp.writeVassal('api.json', listening(await freePort()));
    const failed = await registryEvent(beforeFail, 'api', 'failed');
    assert.ok(failed.changes.find((c) => c.vassal === 'api')!.error, 'the failure says why');
    assert.deepEqual(failed.registeredIn, { api: [] });
    stream.close();
  });

  it('counts an IPv6 client by its /64 (one host holds all of it), an IPv4 one by its address', () => {
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(addressKey('192.0.2.7'), '192.0.2.7');
  });

  describe('secrets', () => {
    const REAL_AGENT = process.env.EMPEROR_TEST_CONSUL_ADDR;
    const consulToken = 'dashboard-test-consul-token-5ecret';
    let consul: ConsulDouble | undefined;
    before(async () => {
      if (!REAL_AGENT) consul = await startConsulDouble({ aclToken: consulToken });
    });
    after(() => consul?.stop());

    it('no secret appears in the page, its API, its event stream or its log tail', async () => {
      const port = await freePort();
      const etcdPassword = 'etcd-pa55word-never-shown';
      const appSecret = 'app-db-pa55word-never-shown';
      const emp = await start(['--http', `127.0.0.1:${port}`, '--consul-agent', REAL_AGENT ?? consul!.address], {
        ...process.env,
        CONSUL_HTTP_TOKEN: consulToken,
        EMPEROR_ETCD_PASSWORD: etcdPassword,
      });
      const appPort = await freePort();
      await emp.writeVassal('secretive.json', {
        command: [node, '-e', `require('node:http').createServer((q, s) => s.end('ok')).listen(${appPort}, '127.0.0.1'); console.log('started')`],
        env: { DB_PASSWORD: appSecret, PLAIN: appSecret },
        service: { port: appPort, address: '127.0.0.1' },
        start: { ready: { tcp: `127.0.0.1:${appPort}` } },
        checks: [{ http: `http://127.0.0.1:${appPort}/`, interval: '1s' }],
      });
      await emp.waitEvent('secretive', 'ready');
      const answers = [
        await request(port, 'GET', '/'),
        await request(port, 'GET', '/api/status'),
        await request(port, 'GET', '/api/session'),
        await request(port, 'GET', '/api/events', {}, undefined, /event: snapshot\ndata: .*\n\n/),
      ];
      let detail = await request(port, 'GET', '/api/vassals/secretive');
      await waitFor(async () => {
        detail = await request(port, 'GET', '/api/vassals/secretive');
        return /"state":"registered"/.test(detail.body);
      }, 'the detail shows the Consul registration');
      answers.push(detail, await request(port, 'GET', '/api/vassals/secretive/log', {}, undefined, /started/));
      const everything = answers.map((a) => JSON.stringify(a.headers) + a.body).join('\n');
      for (const secret of [consulToken, etcdPassword, appSecret]) assert.ok(!everything.includes(secret), `a secret leaked: ${secret}`);
      assert.match(detail.body, /"DB_PASSWORD":"\(hidden\)"/, 'env names are shown, values hidden');
      assert.match(detail.body, /"registry":"consul"/);
    });
  });
});
