// Readiness gates, health checks, ttl pushes, restart_after and metrics, end to end through
// the real binary with real servers and scripts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';
import { isRunning, signalWhenArmed } from './support/proc.js';
import { waitFor } from './support/wait.js';

const HTTP_APP = fixture('http-app.js');
const quick = { initial: '50ms', max: '100ms', reset_after: '10s', max_retries: 1 };

function httpVassal(port: number, env: Record<string, string> = {}, extra: Record<string, unknown> = {}): object {
  return { command: [process.execPath, HTTP_APP], env: { PORT: String(port), ...env }, ...extra };
}

describe('readiness gates', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  before(async () => {
    ws = await makeWorkspace();
    emp = await EmperorUnderTest.start(ws);
  });
  after(async () => {
    await emp.stop();
  });

  for (const kind of ['tcp', 'http'] as const) {
    it(`a ${kind} ready probe holds the vassal in starting until the app listens`, async () => {
      const port = await freePort();
      const ready = kind === 'tcp' ? { tcp: `127.0.0.1:${port}`, interval: '50ms' } : { http: `http://127.0.0.1:${port}/health`, interval: '50ms' };
      const name = `ready-${kind}`;
      const armed = path.join(ws.root, `${name}.armed`);
      await emp.writeVassal(`${name}.yaml`, httpVassal(port, { APP_WAIT_SIGNAL: '1', APP_ARMED: armed }, { start: { ready, timeout: '30s' } }));
      const spawned = await emp.waitEvent(name, 'spawned');
      // Several probe rounds fail meanwhile: the app has not been told to listen.
      await waitFor(async () => (await emp.vassal(name)).uptimeMs! > 300, 'a few probe rounds');
      assert.equal((await emp.vassal(name)).state, 'starting');
      assert.equal(emp.events(name, 'ready').length, 0);
      const m = emp.mark();
      await signalWhenArmed(armed, spawned.pid as number);
      await emp.waitEvent(name, 'ready', m);
      assert.equal((await emp.vassal(name)).state, 'running');
    });
  }

  it('an exec ready probe passes when its command exits 0', async () => {
    const flag = path.join(ws.root, 'exec-ready.flag');
    await emp.writeVassal('ready-exec.yaml', {
      command: ['sleep', '600'],
      start: { ready: { exec: ['test', '-e', flag], interval: '50ms' } },
    });
    await emp.waitEvent('ready-exec', 'spawned');
    await waitFor(async () => (await emp.vassal('ready-exec')).uptimeMs! > 300, 'a few probe rounds');
    assert.equal((await emp.vassal('ready-exec')).state, 'starting');
    await fs.writeFile(flag, '');
    await emp.waitEvent('ready-exec', 'ready');
  });

  it('notify: READY=1 on $NOTIFY_FD makes the vassal ready', async () => {
    const port = await freePort();
    const armed = path.join(ws.root, 'notifier.armed');
    await emp.writeVassal('notifier.yaml', httpVassal(port, { APP_NOTIFY: '1', APP_ARMED: armed }, { start: { ready: { notify: true } } }));
    const spawned = await emp.waitEvent('notifier', 'spawned');
    await waitFor(async () => (await emp.vassal('notifier')).uptimeMs! > 300, 'time passes without READY');
    assert.equal((await emp.vassal('notifier')).state, 'starting');
    await signalWhenArmed(armed, spawned.pid as number);
    await emp.waitEvent('notifier', 'ready');
  });

  it('notify: closing the fd without READY=1 fails the start', async () => {
    const port = await freePort();
    await emp.writeVassal('mute.yaml', httpVassal(port, { APP_NOTIFY: 'close' }, { start: { ready: { notify: true } }, backoff: quick }));
    const failed = await emp.waitEvent('mute', 'start-failed');
    assert.match(failed.message, /READY=1/);
    await emp.waitEvent('mute', 'fatal');
  });

  it('not ready within start.timeout: the group is killed and back-off applies, then fatal', async () => {
    const port = await freePort();
    await emp.writeVassal('never-ready.yaml', {
      command: ['sleep', '600'],
      start: { timeout: '400ms', ready: { tcp: `127.0.0.1:${port}`, interval: '50ms' } },
      backoff: quick,
    });
    const first = await emp.waitEvent('never-ready', 'spawned');
    await emp.waitEvent('never-ready', 'start-timeout');
    await waitFor(() => !isRunning(first.pid as number), 'timed-out group killed');
    await emp.waitEvent('never-ready', 'backoff');
    await emp.waitEvent('never-ready', 'fatal');
    const v = await emp.vassal('never-ready');
    assert.equal(v.state, 'fatal');
    assert.equal(v.lastExit?.reason, 'not ready within 400ms');
    assert.equal(emp.events('never-ready', 'ready').length, 0);
  });

  it('default readiness of a vassal with service.port is a TCP probe on that port', async () => {
    const port = await freePort();
    const armed = path.join(ws.root, 'svc-default.armed');
    await emp.writeVassal('svc-default.yaml', httpVassal(port, { APP_WAIT_SIGNAL: '1', APP_ARMED: armed }, { service: { port } }));
    const spawned = await emp.waitEvent('svc-default', 'spawned');
    await waitFor(async () => (await emp.vassal('svc-default')).uptimeMs! > 1300, 'past the 1 s default delay');
    assert.equal((await emp.vassal('svc-default')).state, 'starting');
    await signalWhenArmed(armed, spawned.pid as number);
    await emp.waitEvent('svc-default', 'ready');
  });
});

describe('health checks', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  let metricsPort: number;
  before(async () => {
    ws = await makeWorkspace();
    metricsPort = await freePort();
    emp = await EmperorUnderTest.start(ws, ['--metrics', `127.0.0.1:${metricsPort}`]);
  });
  after(async () => {
    await emp.stop();
  });

  it('http, tcp and exec checks map to Consul statuses; aggregate is the worst; each change logged once', async () => {
    const port = await freePort();
    const healthFile = path.join(ws.root, 'health-code');
    const exitFile = path.join(ws.root, 'exec-code');
    await fs.writeFile(healthFile, '200');
    await fs.writeFile(exitFile, '0');
    await emp.writeVassal(
      'checked.yaml',
      httpVassal(
        port,
        { HEALTH_FILE: healthFile },
        {
          start: { ready: { tcp: `127.0.0.1:${port}`, interval: '50ms' } },
          checks: [
            // Timeouts a busy machine keeps to (a 100 ms one timed out there now and then, and
            // every timeout is a real change to critical and back).
            { name: 'web', http: `http://127.0.0.1:${port}/health`, interval: '1s', timeout: '1s' },
            { name: 'port', tcp: `127.0.0.1:${port}`, interval: '1s', timeout: '1s' },
            { name: 'script', exec: ['sh', '-c', `echo script says hi; exit $(cat ${exitFile})`], interval: '1s', timeout: '1s' },
          ],
        },
      ),
    );
    await emp.waitEvent('checked', 'ready');
    let v = await emp.vassal('checked');
    await waitFor(async () => (v = await emp.vassal('checked')).health === 'passing', 'all checks passing');
    assert.deepEqual(
      v.checks.map((c) => [c.name, c.status]),
      [
        ['web', 'passing'],
        ['port', 'passing'],
        ['script', 'passing'],
      ],
    );
    assert.match(v.checks.find((c) => c.name === 'web')!.output, /health 200/);
    assert.match(v.checks.find((c) => c.name === 'script')!.output, /script says hi/);

    // Several results later, only changes were logged: the first is critical -> passing, and
    // none repeats a status (a probe that times out on a busy machine is a real change, so the
    // count alone is not asserted).
    const seen = v.checks.find((c) => c.name === 'web')!.lastResultAt!;
    await waitFor(async () => (await emp.vassal('checked')).checks.find((c) => c.name === 'web')!.lastResultAt! > seen + 2500, 'more results');
    const logged = emp.events('checked', 'check').filter((e) => e.check === 'web');
    assert.deepEqual([logged[0]?.previous, logged[0]?.status], ['critical', 'passing']);
    for (const [i, e] of logged.entries()) {
      assert.notEqual(e.previous, e.status, `logged without a change: ${JSON.stringify(e)}`);
      if (i > 0) assert.equal(e.previous, logged[i - 1]!.status, `a change logged twice or missed: ${JSON.stringify(logged)}`);
    }

    let m = emp.mark();
    await fs.writeFile(healthFile, '429');
    await emp.waitFor((e) => e.vassal === 'checked' && e.event === 'check' && e.check === 'web' && e.status === 'warning', 'web warning', m);
    await emp.waitFor((e) => e.vassal === 'checked' && e.event === 'health' && e.health === 'warning', 'aggregate warning', m);

    m = emp.mark();
    await fs.writeFile(exitFile, '1');
    await emp.waitFor((e) => e.vassal === 'checked' && e.event === 'check' && e.check === 'script' && e.status === 'warning', 'exec exit 1 = warning', m);
    await fs.writeFile(exitFile, '2');
    await emp.waitFor((e) => e.vassal === 'checked' && e.event === 'check' && e.check === 'script' && e.status === 'critical' && /script says hi/.test(String(e.output)), 'exec exit 2 = critical', m);
    await emp.waitFor((e) => e.vassal === 'checked' && e.event === 'health' && e.health === 'critical', 'aggregate critical', m);
    await fs.writeFile(healthFile, '503');
    await emp.waitFor((e) => e.vassal === 'checked' && e.event === 'check' && e.check === 'web' && e.status === 'critical' && /503/.test(String(e.output)), 'http 503 = critical', m);

    const table = await emp.cli(['status']);
    assert.match(table.stdout, /^checked\s+running\s+critical\s+\d+/m);
    const detail = await emp.cli(['status', 'checked']);
    assert.match(detail.stdout, /^health\s+critical$/m);
    assert.match(detail.stdout, /^CHECK\s+STATUS\s+LAST RESULT\s+SINCE\s+OUTPUT$/m);
    assert.match(detail.stdout, /^web\s+critical\s+.*503 Service Unavailable/m);
    assert.match(detail.stdout, /^port\s+passing\s+/m);
    v = JSON.parse((await emp.cli(['status', 'checked', '--json'])).stdout) as typeof v;
    assert.equal(v.health, 'critical');
  });

  it('ttl checks start critical, take pushed results with notes, and expire', async () => {
    await emp.writeVassal('pushed.yaml', { command: ['sleep', '600'], checks: [{ name: 'beat', ttl: '800ms' }] });
    await emp.waitEvent('pushed', 'ready');
    const v = await emp.vassal('pushed');
    assert.equal(v.checks[0]!.status, 'critical');
    const m = emp.mark();
    // A push is judged by the state it is answered with and by the log, not by a later status
    // read: on a busy machine the 800 ms TTL can run out before that read.
    const r = await emp.cli(['check', 'pass', 'pushed', '--note', 'all good', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const passed = JSON.parse(r.stdout) as { name: string; status: string; output: string };
    assert.deepEqual([passed.name, passed.status, passed.output], ['beat', 'passing', 'all good']);
    await emp.waitFor((e) => e.vassal === 'pushed' && e.event === 'health' && e.health === 'passing', 'health passing', m);
    const r2 = await emp.cli(['check', 'warn', 'pushed', 'beat', '--note', 'slow disk', '--json']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal((JSON.parse(r2.stdout) as { status: string }).status, 'warning');
    const expired = await emp.waitFor((e) => e.vassal === 'pushed' && e.event === 'check' && e.status === 'critical', 'ttl expiry', m);
    assert.match(String(expired.output), /TTL expired/);
    const bad = await emp.cli(['check', 'pass', 'pushed', 'nope']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no ttl check named "nope"/);
  });

  it('on_critical.restart_after restarts a vassal after N critical results in a row', async () => {
    const port = await freePort();
    await emp.writeVassal(
      'sickly.yaml',
      httpVassal(
        port,
        {},
        {
          checks: [{ name: 'dead-port', tcp: `127.0.0.1:${port + 1 === 65536 ? 1 : port + 1}`, interval: '100ms', timeout: '100ms' }],
          on_critical: { restart_after: 3 },
          backoff: { initial: '50ms', max_retries: 10 },
        },
      ),
    );
    const first = await emp.waitEvent('sickly', 'ready');
    const restart = await emp.waitEvent('sickly', 'critical-restart');
    assert.match(restart.message, /3 check result/);
    await waitFor(() => !isRunning(first.pid as number), 'first process stopped');
    await waitFor(() => emp.events('sickly', 'spawned').length >= 2, 'restarted');
  });

  it('serves Prometheus metrics that pass promtool check metrics', async () => {
    await emp.writeVassal('metered.yaml', { command: ['sleep', '600'], checks: [{ name: 'beat', ttl: '1m' }] });
    await emp.waitEvent('metered', 'ready');
    await emp.cli(['check', 'pass', 'metered']);
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /^emperor_vassal_up\{vassal="metered"\} 1$/m);
    assert.match(text, /^emperor_vassal_state\{vassal="metered",state="running"\} 1$/m);
    assert.match(text, /^emperor_check_status\{vassal="metered",check="beat",status="passing"\} 1$/m);
    assert.match(text, /^emperor_vassal_restarts_total\{vassal="metered"\} 0$/m);
    assert.match(text, /^emperor_vassal_ready_seconds\{vassal="metered"\} \d/m);
    assert.match(text, /^process_resident_memory_bytes \d+/m);
    const promtool = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    promtool.stdout.on('data', (d: Buffer) => (out += d.toString()));
    promtool.stderr.on('data', (d: Buffer) => (out += d.toString()));
    promtool.stdin.end(text);
    const code = await new Promise<number | null>((r) => promtool.on('close', r));
    assert.equal(code, 0, out);
    assert.equal(out.trim(), '', `promtool lint findings:\n${out}`);
    const missing = await fetch(`http://127.0.0.1:${metricsPort}/nope`);
    assert.equal(missing.status, 404);
  });
});
