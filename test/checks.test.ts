import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from './support/test.js';
import {
  CheckRunner,
  MAX_OUTPUT_BYTES,
  TtlCheck,
  readyProbeTimeoutMs,
  runProbe,
  waitReady,
  worstStatus,
  type CheckState,
  type ProbeResult,
  type ResultInfo,
} from '../src/checks/index.js';
import type { CheckSpec, CheckStatus, ProbeTarget } from '../src/config/index.js';
import { isRunning } from './support/proc.js';
import { waitFor } from './support/wait.js';

const ENV: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined),
);

let dir = '';

/** Writes an executable sh script into the temp dir and returns its path. */
async function script(name: string, body: string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
  return file;
}

const probeCtx = (timeoutMs = 5_000, signal?: AbortSignal) => ({ timeoutMs, cwd: dir, env: ENV, ...(signal ? { signal } : {}) });

const exec = (...argv: string[]): ProbeTarget => ({ kind: 'exec', argv });

function checkSpec(probe: CheckSpec['probe'], overrides: Partial<CheckSpec> = {}): CheckSpec {
  return { name: 'test', probe, intervalMs: 10, timeoutMs: 5_000, successesBeforePassing: 1, failuresBeforeCritical: 1, ...overrides };
}

/** Reads "<pid>\n" files written by scripts, waiting until they are complete. */
async function readPid(file: string): Promise<number> {
  let pid = 0;
  await waitFor(async () => {
    if (!existsSync(file)) return false;
    const text = await readFile(file, 'utf8');
    if (!text.endsWith('\n')) return false;
    pid = Number(text.trim());
    return pid > 0;
  }, `pid in ${file}`);
  return pid;
}

// ---- an HTTP server whose answers the tests choose ---------------------------------------

let server: http.Server;
let base = '';
/** Statuses for /scripted, one per request; 200 once empty. */
const scripted: number[] = [];
let scriptedRequests = 0;

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  const code = /^\/(\d{3})$/.exec(url)?.[1];
  if (code !== undefined) {
    const status = Number(code);
    if (status === 301) res.writeHead(301, { location: '/200' }).end('moved');
    else if (status === 299) res.writeHead(299, 'Custom').end('odd but fine');
    else if (status === 204) res.writeHead(204).end();
    else res.writeHead(status).end(`body of ${status}`);
    return;
  }
  switch (url) {
    case '/moved-to-404':
      res.writeHead(301, { location: '/404' }).end();
      return;
    case '/loop':
      res.writeHead(302, { location: '/loop' }).end();
      return;
    case '/hang':
      return; // never answers
    case '/big':
      res.writeHead(200).end(`${'a'.repeat(10_000)}TAIL`);
      return;
    case '/user-agent':
      res.writeHead(200).end(req.headers['user-agent'] ?? '');
      return;
    case '/scripted': {
      scriptedRequests += 1;
      const status = scripted.shift() ?? 200;
      res.writeHead(status).end(`answer ${scriptedRequests}: ${status}`);
      return;
    }
    default:
      res.writeHead(404).end('no such route');
  }
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'emperor-checks-'));
  server = http.createServer(handle);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address() as net.AddressInfo;
  base = `http://127.0.0.1:${address.port}`;
});

after(async () => {
  server.closeAllConnections();
  server.close();
  await rm(dir, { recursive: true, force: true });
});

/** A port that was just free: bound, then released. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  probe.close();
  await once(probe, 'close');
  return port;
}

// ---- probes -------------------------------------------------------------------------------

void describe('runProbe: http', () => {
  const get = (route: string, timeoutMs?: number) => runProbe({ kind: 'http', url: `${base}${route}` }, probeCtx(timeoutMs));

  void it('maps 2xx to passing, 429 to warning and everything else to critical, in Consul\'s output format', async () => {
    const cases: Array<[string, CheckStatus, string]> = [
      ['/200', 'passing', '200 OK Output: body of 200'],
      ['/204', 'passing', '204 No Content Output: '],
      ['/299', 'passing', '299 Custom Output: odd but fine'],
      ['/404', 'critical', '404 Not Found Output: body of 404'],
      ['/429', 'warning', '429 Too Many Requests Output: body of 429'],
      ['/500', 'critical', '500 Internal Server Error Output: body of 500'],
      ['/503', 'critical', '503 Service Unavailable Output: body of 503'],
    ];
    for (const [route, status, tail] of cases) {
      const result = await get(route);
      assert.deepEqual(result, { status, output: `HTTP GET ${base}${route}: ${tail}` }, route);
    }
  });

  void it('follows redirects like Consul, judging the final answer', async () => {
    assert.deepEqual(await get('/301'), { status: 'passing', output: `HTTP GET ${base}/301: 200 OK Output: body of 200` });
    const toMissing = await get('/moved-to-404');
    assert.equal(toMissing.status, 'critical');
    assert.match(toMissing.output, /: 404 Not Found Output: body of 404$/);
    const loop = await get('/loop');
    assert.equal(loop.status, 'critical');
    assert.match(loop.output, new RegExp(`^HTTP GET ${base}/loop: .*redirect`));
  });

  void it('keeps the last 4 KiB of a large body', async () => {
    const result = await get('/big');
    assert.equal(result.status, 'passing');
    const body = result.output.slice(result.output.indexOf(' Output: ') + ' Output: '.length);
    assert.equal(Buffer.byteLength(body), MAX_OUTPUT_BYTES);
    assert.ok(body.endsWith('aTAIL'));
  });

  void it('identifies itself', async () => {
    assert.match((await get('/user-agent')).output, /Output: Emperor Health Check$/);
  });

  void it('is critical on timeout, on a refused connection and on abort', async () => {
    assert.deepEqual(await get('/hang', 200), { status: 'critical', output: `HTTP GET ${base}/hang: timed out after 200ms` });

    const port = await closedPort();
    const refused = await runProbe({ kind: 'http', url: `http://127.0.0.1:${port}/` }, probeCtx());
    assert.equal(refused.status, 'critical');
    assert.match(refused.output, new RegExp(`^HTTP GET http://127\\.0\\.0\\.1:${port}/: connect ECONNREFUSED`));

    const controller = new AbortController();
    const pending = runProbe({ kind: 'http', url: `${base}/hang` }, probeCtx(60_000, controller.signal));
    controller.abort();
    assert.deepEqual(await pending, { status: 'critical', output: `HTTP GET ${base}/hang: aborted` });
  });
});

void describe('runProbe: tcp', () => {
  void it('is passing when the port accepts a connection', async () => {
    const listener = net.createServer((socket) => socket.destroy());
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const { port } = listener.address() as net.AddressInfo;
    try {
      assert.deepEqual(await runProbe({ kind: 'tcp', host: '127.0.0.1', port }, probeCtx()), {
        status: 'passing',
        output: `TCP connect 127.0.0.1:${port}: Success`,
      });
    } finally {
      listener.close();
    }
  });

  void it('is critical with the error when the port is closed', async () => {
    const port = await closedPort();
    const result = await runProbe({ kind: 'tcp', host: '127.0.0.1', port }, probeCtx());
    assert.equal(result.status, 'critical');
    assert.match(result.output, new RegExp(`^TCP connect 127\\.0\\.0\\.1:${port}: connect ECONNREFUSED`));
  });

  void it('brackets IPv6 hosts in its output and is critical when aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    assert.deepEqual(await runProbe({ kind: 'tcp', host: '::1', port: 1 }, probeCtx(1_000, controller.signal)), {
      status: 'critical',
      output: 'aborted',
    });
    const result = await runProbe({ kind: 'tcp', host: '::1', port: await closedPort() }, probeCtx());
    assert.equal(result.status, 'critical');
    assert.match(result.output, /^TCP connect \[::1\]:\d+: /);
  });
});

void describe('runProbe: exec', () => {
  void it('maps exit 0, 1 and 2 to passing, warning and critical, with the output', async () => {
    const cases: Array<[number, CheckStatus]> = [
      [0, 'passing'],
      [1, 'warning'],
      [2, 'critical'],
      [3, 'critical'],
    ];
    for (const [code, status] of cases) {
      const file = await script(`exit${code}.sh`, `echo "exiting with ${code}"\nexit ${code}`);
      assert.deepEqual(await runProbe(exec(file), probeCtx()), { status, output: `exiting with ${code}\n` }, String(code));
    }
  });

  void it('interleaves stdout and stderr in the order written', async () => {
    const file = await script('mixed.sh', 'echo one\necho two >&2\necho three\necho four >&2');
    assert.deepEqual(await runProbe(exec(file, 'ignored-arg'), probeCtx()), { status: 'passing', output: 'one\ntwo\nthree\nfour\n' });
  });

  void it('runs in the given cwd with the given environment and passes arguments unchanged', async () => {
    await script('where.sh', 'pwd\necho "$PROBE_VAR"\nfor a in "$@"; do echo "[$a]"; done');
    const result = await runProbe(exec('./where.sh', 'a b', '', '$HOME'), { ...probeCtx(), env: { ...ENV, PROBE_VAR: 'from env' } });
    assert.deepEqual(result, { status: 'passing', output: `${dir}\nfrom env\n[a b]\n[]\n[$HOME]\n` });
  });

  void it('keeps the last 4 KiB of output with Consul\'s "Captured" header', async () => {
    const file = await script('big.sh', `head -c 10000 /dev/zero | tr '\\0' a\necho TAIL >&2\nexit 2`);
    const result = await runProbe(exec(file), probeCtx());
    assert.equal(result.status, 'critical');
    const header = `Captured ${MAX_OUTPUT_BYTES} of 10005 bytes\n...\n`;
    assert.ok(result.output.startsWith(header), result.output.slice(0, 60));
    assert.equal(Buffer.byteLength(result.output) - header.length, MAX_OUTPUT_BYTES);
    assert.ok(result.output.endsWith('aaaTAIL\n'));
  });

  void it('explains silent failures, missing programs and missing working directories', async () => {
    const silent = await script('silent.sh', 'exit 7');
    assert.deepEqual(await runProbe(exec(silent), probeCtx()), { status: 'critical', output: 'exit status 7' });
    const killed = await script('killed.sh', 'kill -TERM $$');
    assert.deepEqual(await runProbe(exec(killed), probeCtx()), { status: 'critical', output: 'killed by SIGTERM' });

    const missing = await runProbe(exec('./no-such-check.sh'), probeCtx());
    assert.equal(missing.status, 'critical');
    assert.match(missing.output, /no-such-check\.sh.*not found/);
    assert.deepEqual(await runProbe(exec('true'), { ...probeCtx(), cwd: path.join(dir, 'nope') }), {
      status: 'critical',
      output: `working directory does not exist: ${path.join(dir, 'nope')}`,
    });
  });

  void it('kills the whole process group on timeout, grandchildren included', async () => {
    const pidFile = path.join(dir, 'hang-timeout.pid');
    const file = await script('hang.sh', 'echo started\nsh -c \'sleep 1000 & echo $! > "$1"; wait\' sh "$1"');
    const result = await runProbe(exec(file, pidFile), probeCtx(1_500));
    assert.deepEqual(result, { status: 'critical', output: 'timed out after 1.5s\n\nstarted\n' });
    const grandchild = await readPid(pidFile);
    await waitFor(() => !isRunning(grandchild), `grandchild ${grandchild} to be gone`);
  });

  void it('a probe that exits leaving a background process behind: its whole group is killed once the result is in', async () => {
    const pidFile = path.join(dir, 'leftover.pid');
    // The background child lets go of the output, so nothing holds the result back.
    const file = await script('leftover.sh', 'sleep 1000 >/dev/null 2>&1 &\necho $! > "$1"\necho done');
    assert.deepEqual(await runProbe(exec(file, pidFile), probeCtx()), { status: 'passing', output: 'done\n' });
    const leftover = await readPid(pidFile);
    await waitFor(() => !isRunning(leftover), `the probe's background process ${leftover} to be gone`);
  });

  void it('kills the whole process group when aborted, and only returns once the probe is reaped', async () => {
    const pidFile = path.join(dir, 'hang-abort.pid');
    const leaderFile = path.join(dir, 'hang-abort.leader');
    const file = await script('hang-abort.sh', 'echo $$ > "$2"\nsh -c \'sleep 1000 & echo $! > "$1"; wait\' sh "$1"');
    const controller = new AbortController();
    const pending = runProbe(exec(file, pidFile, leaderFile), probeCtx(60_000, controller.signal));
    const grandchild = await readPid(pidFile);
    const leader = await readPid(leaderFile);
    controller.abort();
    assert.deepEqual(await pending, { status: 'critical', output: 'aborted' });
    assert.equal(isRunning(leader), false, 'the leader is reaped before the result');
    await waitFor(() => !isRunning(grandchild), `grandchild ${grandchild} to be gone`);
  });

  void it('does not start anything when already aborted', async () => {
    const marker = path.join(dir, 'must-not-exist');
    const controller = new AbortController();
    controller.abort();
    assert.deepEqual(await runProbe(exec('touch', marker), probeCtx(1_000, controller.signal)), { status: 'critical', output: 'aborted' });
    assert.equal(existsSync(marker), false);
  });
});

// ---- runner -------------------------------------------------------------------------------

/** Collects a runner's events until `count` results, then stops it. */
async function collect(runner: CheckRunner | TtlCheck, count: number) {
  const results: Array<{ state: CheckState; info: ResultInfo }> = [];
  const changes: Array<{ from: CheckStatus; to: CheckStatus; output: string }> = [];
  runner.on('change', (state, previous) => changes.push({ from: previous, to: state.status, output: state.output }));
  await new Promise<void>((resolve) => {
    runner.on('result', (state, info) => {
      results.push({ state, info });
      if (results.length === count) {
        if (runner instanceof CheckRunner) void runner.stop().then(resolve);
        else {
          runner.stop();
          resolve();
        }
      }
    });
    runner.start();
  });
  return { results, changes };
}

void describe('CheckRunner', () => {
  void it('starts critical with "no result yet"', () => {
    const runner = new CheckRunner(checkSpec({ kind: 'tcp', host: '127.0.0.1', port: 1 }, { name: 'db' }), { cwd: dir, env: ENV });
    assert.deepEqual(runner.state(), { name: 'db', kind: 'tcp', status: 'critical', output: 'no result yet', lastResultAt: null, lastChangeAt: null, startLagMs: null, runs: 0 });
    assert.throws(() => new CheckRunner(checkSpec({ kind: 'ttl', ttlMs: 1_000 }), { cwd: dir, env: ENV }), /TtlCheck/);
  });

  void it('runs the first probe at once, then repeatedly, emitting change only when the status changes', async () => {
    const runner = new CheckRunner(checkSpec({ kind: 'http', url: `${base}/200` }), { cwd: dir, env: ENV });
    const { results, changes } = await collect(runner, 4);
    assert.deepEqual(changes, [{ from: 'critical', to: 'passing', output: `HTTP GET ${base}/200: 200 OK Output: body of 200` }]);
    assert.deepEqual(
      results.map(({ state }) => state.status),
      ['passing', 'passing', 'passing', 'passing'],
    );
    for (const { state, info } of results) {
      assert.equal(info.applied, true);
      assert.ok(info.lagMs >= 0 && info.durationMs >= 0);
      assert.equal(typeof state.lastResultAt, 'number');
    }
    const first = results[0]?.state;
    const last = results[3]?.state;
    assert.equal(last?.lastChangeAt, first?.lastChangeAt, 'no change after the first result');
    assert.ok((last?.lastResultAt ?? 0) >= (first?.lastResultAt ?? Infinity));
  });

  void it('never runs two probes of a check at once, even when they overrun the interval', async () => {
    const log = path.join(dir, 'overlap.log');
    const file = await script('overlap.sh', 'echo "start $$" >> "$1"\nsleep 0.2\necho "end $$" >> "$1"');
    const runner = new CheckRunner(checkSpec(exec(file, log), { intervalMs: 10 }), { cwd: dir, env: ENV });
    const { results } = await collect(runner, 4);
    assert.equal(results.length, 4);
    const lines = (await readFile(log, 'utf8')).trim().split('\n');
    let open: string | undefined;
    let maxConcurrent = 0;
    let starts = 0;
    for (const line of lines) {
      const [what, pid] = line.split(' ');
      if (what === 'start') {
        assert.equal(open, undefined, `run ${pid} started while ${open} was running: ${lines.join(', ')}`);
        open = pid;
        starts += 1;
      } else {
        assert.equal(pid, open, `unexpected end of ${pid}`);
        open = undefined;
      }
      maxConcurrent = Math.max(maxConcurrent, open === undefined ? 0 : 1);
    }
    assert.equal(maxConcurrent, 1);
    // The four reported runs, plus possibly a fifth that stop() aborted.
    assert.ok(starts === 4 || starts === 5, `starts: ${starts}`);
  });

  void it("applies successes_before_passing and failures_before_critical like Consul's StatusHandler", async () => {
    // Answers for each run, in order, and the status expected after it (S = 2, F = 3).
    const plan: Array<[number, CheckStatus, boolean]> = [
      [200, 'passing', true], // the first result always applies (Consul starts the counters at the thresholds)
      [500, 'passing', false],
      [500, 'passing', false],
      [200, 'passing', false], // one success: not enough, but the status is passing anyway
      [500, 'passing', false],
      [500, 'passing', false],
      [500, 'critical', true], // third failure in a row
      [200, 'critical', false],
      [200, 'passing', true], // second success in a row
      [429, 'warning', true], // warnings count as successes, so this one applies at once
      [500, 'warning', false],
      [200, 'warning', false], // the failure reset the success count
      [200, 'passing', true],
      [500, 'passing', false],
      [500, 'passing', false],
      [500, 'critical', true],
      [429, 'critical', false], // from critical, a warning also needs two successes in a row
      [429, 'warning', true],
    ];
    scripted.splice(0, scripted.length, ...plan.map(([code]) => code));
    scriptedRequests = 0;
    const spec = checkSpec({ kind: 'http', url: `${base}/scripted` }, { successesBeforePassing: 2, failuresBeforeCritical: 3 });
    const runner = new CheckRunner(spec, { cwd: dir, env: ENV });
    const { results, changes } = await collect(runner, plan.length);

    assert.deepEqual(
      results.map(({ state, info }) => [info.result.status, state.status, info.applied]),
      plan.map(([code, status, applied]) => [code === 200 ? 'passing' : code === 429 ? 'warning' : 'critical', status, applied]),
    );
    assert.deepEqual(
      changes.map(({ from, to }) => `${from}->${to}`),
      ['critical->passing', 'passing->critical', 'critical->passing', 'passing->warning', 'warning->passing', 'passing->critical', 'critical->warning'],
    );
    // A result that does not apply leaves the output of the last one that did.
    assert.match(results[1]?.state.output ?? '', /answer 1: 200$/);
    assert.match(results[6]?.state.output ?? '', /answer 7: 500$/);
    assert.match(results[7]?.state.output ?? '', /answer 7: 500$/);
    // lastChangeAt moves only with the status.
    assert.equal(results[5]?.state.lastChangeAt, results[0]?.state.lastChangeAt);
  });

  void it('stop() aborts the in-flight probe, kills its group and silences the runner', async () => {
    const pidFile = path.join(dir, 'runner-stop.pid');
    const leaderFile = path.join(dir, 'runner-stop.leader');
    const file = await script('runner-stop.sh', 'echo $$ > "$2"\nsh -c \'sleep 1000 & echo $! > "$1"; wait\' sh "$1"');
    const runner = new CheckRunner(checkSpec(exec(file, pidFile, leaderFile), { intervalMs: 60_000, timeoutMs: 60_000 }), { cwd: dir, env: ENV });
    let events = 0;
    runner.on('result', () => events++);
    runner.on('change', () => events++);
    runner.start();
    const grandchild = await readPid(pidFile);
    const leader = await readPid(leaderFile);
    await runner.stop();
    assert.equal(isRunning(leader), false, 'stop() resolves after the probe is reaped');
    await waitFor(() => !isRunning(grandchild), `grandchild ${grandchild} to be gone`);
    assert.equal(events, 0);
    assert.equal(runner.state().output, 'no result yet');
    assert.equal(runner.isRunning, false);
  });

  void it('can be started again after stop()', async () => {
    const runner = new CheckRunner(checkSpec({ kind: 'http', url: `${base}/429` }), { cwd: dir, env: ENV });
    await collect(runner, 1);
    const { results, changes } = await collect(runner, 1);
    assert.equal(results[0]?.state.status, 'warning');
    assert.deepEqual(changes, []);
  });
});

// ---- ttl ----------------------------------------------------------------------------------

void describe('TtlCheck', () => {
  const ttlSpec = (ttlMs: number): CheckSpec => checkSpec({ kind: 'ttl', ttlMs }, { name: 'heartbeat' });

  void it('starts critical and takes pushed statuses with their notes', () => {
    const check = new TtlCheck(ttlSpec(60_000));
    assert.deepEqual(check.state(), { name: 'heartbeat', kind: 'ttl', status: 'critical', output: 'no update yet', lastResultAt: null, lastChangeAt: null, startLagMs: null, runs: 0 });
    const changes: string[] = [];
    const results: string[] = [];
    check.on('change', (state, previous) => changes.push(`${previous}->${state.status}`));
    check.on('result', (state) => results.push(`${state.status}:${state.output}`));
    check.start();
    assert.equal(check.push('passing', 'all good'), true);
    assert.equal(check.push('passing', 'still good'), true);
    check.push('warning', 'disk 91%');
    check.push('critical', 'db down');
    check.push('critical');
    check.stop();
    assert.deepEqual(changes, ['critical->passing', 'passing->warning', 'warning->critical']);
    assert.deepEqual(results, ['passing:all good', 'passing:still good', 'warning:disk 91%', 'critical:db down', 'critical:']);
    assert.equal(check.push('passing', 'too late'), false);
    assert.equal(check.state().output, '');
    assert.throws(() => new TtlCheck(checkSpec({ kind: 'tcp', host: 'a', port: 1 })), /CheckRunner/);
  });

  void it('truncates long notes like Consul', () => {
    const check = new TtlCheck(ttlSpec(60_000));
    check.start();
    check.push('passing', 'x'.repeat(5_000));
    check.stop();
    assert.equal(check.state().output, `${'x'.repeat(MAX_OUTPUT_BYTES)} ... (captured ${MAX_OUTPUT_BYTES} of 5000 bytes)`);
  });

  void it('turns critical when no push comes within the TTL, keeping the last note', async () => {
    const check = new TtlCheck(ttlSpec(50));
    check.start();
    check.push('passing', 'ok');
    const [state, previous] = (await once(check, 'change')) as [CheckState, CheckStatus];
    check.stop();
    assert.equal(previous, 'passing');
    assert.equal(state.status, 'critical');
    assert.equal(state.output, 'TTL expired (last output before timeout follows): ok');
  });

  void it('reports an expiry without a change when it never got a push', async () => {
    const check = new TtlCheck(ttlSpec(20));
    let changes = 0;
    check.on('change', () => changes++);
    check.start();
    const [state] = (await once(check, 'result')) as [CheckState];
    check.stop();
    assert.deepEqual([state.status, state.output, changes], ['critical', 'TTL expired', 0]);
  });
});

void describe('worstStatus', () => {
  void it('is the worst of the statuses, passing for none', () => {
    assert.equal(worstStatus([]), 'passing');
    assert.equal(worstStatus(['passing', 'passing']), 'passing');
    assert.equal(worstStatus(['passing', 'warning', 'passing']), 'warning');
    assert.equal(worstStatus(['warning', 'critical', 'passing']), 'critical');
  });
});

// ---- readiness ----------------------------------------------------------------------------

const isAbort = (err: unknown): boolean => err instanceof Error && err.name === 'AbortError';

void describe('waitReady: probe', () => {
  void it('retries a tcp probe until the port starts listening', async () => {
    const port = await closedPort();
    const listener = net.createServer((socket) => socket.destroy());
    const failures: ProbeResult[] = [];
    try {
      await waitReady(
        { kind: 'probe', probe: { kind: 'tcp', host: '127.0.0.1', port }, intervalMs: 10 },
        {
          cwd: dir,
          env: ENV,
          signal: new AbortController().signal,
          onAttempt: (result) => {
            failures.push(result);
            // Start listening only once the probe has seen the port closed.
            if (failures.length === 2) listener.listen(port, '127.0.0.1');
          },
        },
      );
      assert.ok(failures.length >= 2);
      for (const failure of failures) assert.equal(failure.status, 'critical');
    } finally {
      listener.close();
    }
  });

  void it('needs passing: http warnings and errors are retried', async () => {
    scripted.splice(0, scripted.length, 503, 429);
    scriptedRequests = 0;
    const attempts: CheckStatus[] = [];
    await waitReady(
      { kind: 'probe', probe: { kind: 'http', url: `${base}/scripted` }, intervalMs: 5 },
      { cwd: dir, env: ENV, signal: new AbortController().signal, onAttempt: (result) => attempts.push(result.status) },
    );
    assert.deepEqual(attempts, ['critical', 'warning']);
    assert.equal(scriptedRequests, 3);
  });

  void it('retries an exec probe until it exits 0', async () => {
    const flag = path.join(dir, 'ready.flag');
    const file = await script('ready.sh', 'test -e "$1"');
    let attempts = 0;
    await waitReady(
      { kind: 'probe', probe: exec(file, flag), intervalMs: 5 },
      {
        cwd: dir,
        env: ENV,
        signal: new AbortController().signal,
        onAttempt: () => {
          attempts += 1;
          if (attempts === 3) void writeFile(flag, '');
        },
      },
    );
    assert.ok(attempts >= 3);
  });

  void it('rejects with an AbortError on abort, after killing the in-flight probe', async () => {
    const pidFile = path.join(dir, 'ready-abort.pid');
    const leaderFile = path.join(dir, 'ready-abort.leader');
    const file = await script('ready-hang.sh', 'echo $$ > "$2"\nsh -c \'sleep 1000 & echo $! > "$1"; wait\' sh "$1"');
    const controller = new AbortController();
    const pending = waitReady({ kind: 'probe', probe: exec(file, pidFile, leaderFile), intervalMs: 100 }, { cwd: dir, env: ENV, signal: controller.signal });
    const grandchild = await readPid(pidFile);
    const leader = await readPid(leaderFile);
    controller.abort(new Error('start timeout'));
    await assert.rejects(pending, (err: unknown) => isAbort(err) && (err as Error).cause instanceof Error);
    assert.equal(isRunning(leader), false);
    await waitFor(() => !isRunning(grandchild), `grandchild ${grandchild} to be gone`);
  });

  void it('gives each attempt a timeout between 5s and 10s', () => {
    assert.equal(readyProbeTimeoutMs(100), 5_000);
    assert.equal(readyProbeTimeoutMs(7_000), 7_000);
    assert.equal(readyProbeTimeoutMs(60_000), 10_000);
  });
});

/** Lets stream events already queued run (not a wait for anything in particular). */
const drain = async (): Promise<void> => {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
};

void describe('waitReady: notify', () => {
  const notify = (stream: NodeJS.ReadableStream, signal = new AbortController().signal) =>
    waitReady({ kind: 'notify' }, { cwd: dir, env: ENV, signal, notify: stream });

  void it('resolves on READY=1 after other lines, split across writes', async () => {
    const stream = new PassThrough();
    let resolved = false;
    const pending = notify(stream).then(() => {
      resolved = true;
    });
    stream.write('STATUS=loading\nMAINPID=12');
    stream.write('3\nREA');
    await drain();
    assert.equal(resolved, false);
    stream.write('DY=1');
    await drain();
    assert.equal(resolved, false, 'READY=1 counts only once its line is complete');
    stream.write('\nSTATUS=serving\n');
    await pending;
    // Later writes must not block the app: the stream keeps flowing.
    assert.equal(stream.readableFlowing, true);
  });

  void it('resolves with several lines in one write, and tolerates CRLF', async () => {
    const stream = new PassThrough();
    const pending = notify(stream);
    stream.write('A=1\r\nREADY=1\r\nB=2\n');
    await pending;
  });

  void it('accepts a final READY=1 without newline at end of stream', async () => {
    const stream = new PassThrough();
    const pending = notify(stream);
    stream.end('X=1\nREADY=1');
    await pending;
  });

  void it('rejects when the stream closes without READY=1, ignoring near misses', async () => {
    const stream = new PassThrough();
    const pending = notify(stream);
    stream.end('READY=10\n READY=1\nREADY=0\nready=1\n');
    await assert.rejects(pending, /closed NOTIFY_FD without READY=1/);
  });

  void it('skips over-long lines', async () => {
    const stream = new PassThrough();
    const pending = notify(stream);
    stream.write(`${'x'.repeat(5_000)}`);
    stream.end('READY=1\n');
    await assert.rejects(pending, /closed NOTIFY_FD without READY=1/);
  });

  void it('reads READY=1 from a real child process writing to fd 3', async () => {
    // exec: the shell becomes sleep, so killing the child leaves nothing holding the pipe.
    const child = spawn('/bin/sh', ['-c', 'echo STATUS=up >&3; echo READY=1 >&3; exec sleep 1000'], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
    const stream = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
    try {
      await notify(stream);
    } finally {
      child.kill('SIGKILL');
      stream.destroy();
    }
  });

  void it('rejects with an AbortError on abort', async () => {
    const stream = new PassThrough();
    const controller = new AbortController();
    const pending = notify(stream, controller.signal);
    stream.write('STATUS=loading\n');
    controller.abort();
    await assert.rejects(pending, isAbort);
    // Its listeners are gone.
    assert.equal(stream.listenerCount('data'), 0);
  });

  void it('rejects without a stream', async () => {
    await assert.rejects(waitReady({ kind: 'notify' }, { cwd: dir, env: ENV, signal: new AbortController().signal }), /NOTIFY_FD/);
  });
});

void describe('waitReady: delay', () => {
  void it('resolves after the delay', async () => {
    await waitReady({ kind: 'delay', ms: 10 }, { cwd: dir, env: ENV, signal: new AbortController().signal });
  });

  void it('rejects with an AbortError on abort, before or during the wait', async () => {
    const controller = new AbortController();
    const pending = waitReady({ kind: 'delay', ms: 600_000 }, { cwd: dir, env: ENV, signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, isAbort);
    await assert.rejects(waitReady({ kind: 'delay', ms: 0 }, { cwd: dir, env: ENV, signal: controller.signal }), isAbort);
  });
});
