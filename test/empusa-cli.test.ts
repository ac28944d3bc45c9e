// `emperor service register|unregister|list` (empusa's CLI) run as a real process against a real
// etcd: flags, empusa's environment variables, --ttl, --refresh-every, and its error messages.
import { describe, test, before, after } from './support/test.js';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3, type IKeyValue } from 'etcd3';
import { freePort, startEtcd, type EtcdServer } from './support/etcd.js';
import { runBin, runCli, type CliResult } from './support/emperor.js';
import { binEmperor, repoRoot } from './support/paths.js';
import { accessSync, constants as fsConstants } from 'node:fs';
import { waitFor } from './support/wait.js';

// bin/emperor runs dist/src/cli/main.js; until main.ts calls addServiceCommands (or when this
// test is built into another outDir ahead of dist/), run the same commands through a tiny
// entry that mounts only them, built next to this file.
const mainJs = path.join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const wired = existsSync(mainJs) && readFileSync(mainJs, 'utf8').includes('addServiceCommands');
const entry = wired ? binEmperor : fileURLToPath(new URL('./fixtures/service-cli.js', import.meta.url));

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  if (wired) return runCli(args, env);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The environment without anything that could configure etcd or a service behind our back. */
function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(EMPUSA|EMPEROR)_/.test(k)) env[k] = v;
  return { ...env, ...extra };
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** A `service register --refresh-every` process left running; its output as it comes. */
function keepRunning(bin: string, args: string[]): { child: ChildProcess; exited: Promise<number | null>; stdout: string; stderr: string } {
  const child = spawn(process.execPath, [bin, ...args], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const out = { child, exited: new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code))), stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  return out;
}

/** A unique tree root per test so tests never see each other's keys. */
let rootCounter = 0;
const freshRoot = (): string => `/empusa-cli/t${++rootCounter}`;

/** No stack traces, one line per message. */
function assertCleanError(r: CliResult, flag: RegExp): void {
  assert.notEqual(r.code, 0, `expected failure, got ${JSON.stringify(r)}`);
  assert.match(r.stderr, flag);
  assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr);
}

const binEmpusa = path.join(repoRoot, 'bin', 'empusa');

const empusa = (args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> => runBin(binEmpusa, args, env);

void describe('emperor service (empusa CLI)', () => {
  let etcd: EtcdServer;
  let raw: Etcd3;
  before(async () => {
    etcd = await startEtcd();
    raw = new Etcd3({ hosts: etcd.clientUrl });
  });
  after(async () => {
    raw?.close();
    await etcd?.dispose();
  });

  const get = async (key: string): Promise<IKeyValue | undefined> => (await raw.get(key).exec()).kvs[0];
  const flags = (root: string): string[] => ['--etcd-endpoint', etcd.endpoint, '--tree-root', root];

  void test('register, list (table, --json, --service-type), unregister', async () => {
    const root = freshRoot();
    const env = baseEnv();
    let r = await cli(['service', 'register', ...flags(root), '--service-type', 'http', '--service-name', 'web1', '--service-location', '10.0.0.1:80'], env);
    assert.equal(r.code, 0, r.stderr);
    // The etcd options also work on `service` itself, before the subcommand.
    r = await cli(['service', ...flags(root), 'register', '--service-type', 'http', '--service-name', 'web2', '--service-location', '10.0.0.2:80'], env);
    assert.equal(r.code, 0, r.stderr);
    r = await cli(['service', 'register', ...flags(root), '--service-type', 'smtp', '--service-name', 'mx', '--service-location', 'mail.example.com:25'], env);
    assert.equal(r.code, 0, r.stderr);

    const kv = await get(`${root}/services/http/web1`);
    assert.equal(kv?.value.toString(), '10.0.0.1:80');
    assert.equal(kv?.lease, '0', 'without --ttl the key has no lease');

    r = await cli(['service', 'list', ...flags(root)], env);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
    assert.deepEqual(rows, [
      ['TYPE', 'NAME', 'LOCATION'],
      ['http', 'web1', '10.0.0.1:80'],
      ['http', 'web2', '10.0.0.2:80'],
      ['smtp', 'mx', 'mail.example.com:25'],
    ]);

    r = await cli(['service', 'list', ...flags(root), '--service-type', 'http', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [
      { type: 'http', name: 'web1', location: '10.0.0.1:80' },
      { type: 'http', name: 'web2', location: '10.0.0.2:80' },
    ]);

    r = await cli(['service', 'unregister', ...flags(root), '--service-type', 'http', '--service-name', 'web1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await get(`${root}/services/http/web1`), undefined);
    // Unregistering what is not registered: exit 0, and say so.
    r = await cli(['service', 'unregister', ...flags(root), '--service-type', 'http', '--service-name', 'web1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /nothing was registered as http\/web1/);
  });

  void test('list shows health and vassal of services an emperor registered', async () => {
    const root = freshRoot();
    const lease = raw.lease(30);
    await lease.put(`${root}/services/http/app`).value('127.0.0.1:8080');
    await lease.put(`${root}/instances/http/app`).value(JSON.stringify({ id: 'h-app', vassal: 'app', location: '127.0.0.1:8080', host: 'h', emperor: { pid: 1, host: 'h' }, health: 'warning' }));
    try {
      const r = await cli(['service', 'list', ...flags(root), '--json'], baseEnv());
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), [{ type: 'http', name: 'app', location: '127.0.0.1:8080', vassal: 'app', health: 'warning', host: 'h' }]);
      const u = await cli(['service', 'unregister', ...flags(root), '--service-type', 'http', '--service-name', 'app'], baseEnv());
      assert.equal(u.code, 0, u.stderr);
      assert.match(u.stderr, /managed by an emperor on h \(pid 1\)/);
    } finally {
      await lease.revoke();
    }
  });

  void test("environment variables only, exactly as in empusa's README", async () => {
    const root = freshRoot();
    const env = baseEnv({
      EMPUSA_ETCD_ENDPOINT: etcd.endpoint,
      EMPUSA_TREE_ROOT: root,
      EMPUSA_SERVICE_TYPE: 'type-of-service',
      EMPUSA_SERVICE_NAME: 'name-of-the-service-instance',
      EMPUSA_SERVICE_LOCATION: 'baz:1235',
    });
    const r = await cli(['service', 'register'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await get(`${root}/services/type-of-service/name-of-the-service-instance`))?.value.toString(), 'baz:1235');
    // EMPEROR_* variables override empusa's.
    const r2 = await cli(['service', 'register'], { ...env, EMPEROR_SERVICE_LOCATION: 'qux:1' });
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal((await get(`${root}/services/type-of-service/name-of-the-service-instance`))?.value.toString(), 'qux:1');
    const u = await cli(['service', 'unregister'], env);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(await get(`${root}/services/type-of-service/name-of-the-service-instance`), undefined);
    // --ttl from the environment too.
    const t = await cli(['service', 'register'], { ...env, EMPUSA_SERVICE_TTL: '30' });
    assert.equal(t.code, 0, t.stderr);
    const kv = await get(`${root}/services/type-of-service/name-of-the-service-instance`);
    assert.equal((await raw.leaseClient.leaseTimeToLive({ ID: kv!.lease })).grantedTTL, '30');
    await raw.leaseClient.leaseRevoke({ ID: kv!.lease });
  });

  void test('--ttl attaches a lease with that TTL; the key is gone after it', async () => {
    const root = freshRoot();
    const key = `${root}/services/http/short`;
    const r = await cli(['service', 'register', ...flags(root), '--service-type', 'http', '--service-name', 'short', '--service-location', '10.0.0.3:80', '--ttl', '2'], baseEnv());
    assert.equal(r.code, 0, r.stderr);
    const kv = await get(key);
    assert.ok(kv, 'registered');
    assert.notEqual(kv.lease, '0');
    const ttl = await raw.leaseClient.leaseTimeToLive({ ID: kv.lease });
    assert.equal(ttl.grantedTTL, '2');
    assert.ok(Number(ttl.TTL) <= 2 && Number(ttl.TTL) >= 0, `remaining ${ttl.TTL}`);
    await waitFor(async () => (await get(key)) === undefined, 'the key to expire', 8000);
  });

  void test('--refresh-every keeps the key alive past its TTL; SIGTERM unregisters and exits 0', async () => {
    const root = freshRoot();
    const key = `${root}/services/http/kept`;
    const kept = keepRunning(entry, ['service', 'register', ...flags(root), '--service-type', 'http', '--service-name', 'kept', '--service-location', '10.0.0.4:80', '--ttl', '2', '--refresh-every', '1']);
    const { child, exited } = kept;

    const watcher = await raw.watch().key(key).create();
    let deletes = 0;
    watcher.on('delete', () => deletes++);
    try {
      await waitFor(() => kept.stdout.includes('registered'), `registration (stderr: ${kept.stderr})`);
      const lease = (await get(key))!.lease;
      // Count refreshes: each one raises the lease's remaining TTL back up.
      let refreshes = 0;
      let lastTtl = Infinity;
      await waitFor(
        async () => {
          const t = Number((await raw.leaseClient.leaseTimeToLive({ ID: lease })).TTL);
          if (t > lastTtl) refreshes++;
          lastTtl = t;
          return refreshes >= 3;
        },
        'three refreshes (past the 2 s TTL)',
        15_000,
      );
      assert.equal(deletes, 0, 'never expired');
      assert.equal((await get(key))?.value.toString(), '10.0.0.4:80');

      child.kill('SIGTERM');
      assert.equal(await exited, 0, kept.stderr);
      await waitFor(() => deletes === 1, 'the delete event');
      assert.equal(await get(key), undefined);
      assert.match(kept.stdout, /unregistered http\/kept/);
    } finally {
      await watcher.cancel();
      child.kill('SIGKILL');
      children.delete(child);
    }
  });

  void test('bad flags: exit non-zero naming the flag', async () => {
    const env = baseEnv();
    const base = ['--service-type', 'http', '--service-name', 'x', '--service-location', '1.2.3.4:80'];
    const cases: Array<[string[], RegExp]> = [
      [['service', 'register', '--etcd-endpoint', etcd.endpoint, ...base], /--tree-root is required/],
      [['service', 'register', '--tree-root', '/x', ...base], /--tree-root is set but no etcd endpoint/],
      [['service', 'register', ...flags('/x'), '--service-type', 'http', '--service-name', 'x', '--service-location', 'nope'], /--service-location: expected host:port/],
      [['service', 'register', ...flags('/x'), '--service-type', 'http', '--service-name', '../etc', '--service-location', '1.2.3.4:80'], /--service-name: the service name must not contain "\/"/],
      [['service', 'register', ...flags('/x'), '--service-type', '..', '--service-name', 'x', '--service-location', '1.2.3.4:80'], /--service-type: the service type must not be "\.\."/],
      [['service', 'register', ...flags('/x'), '--service-type', 'http', '--service-name', 'a b', '--service-location', '1.2.3.4:80'], /--service-name: .*whitespace/],
      [['service', 'register', ...flags('/x'), '--service-type', 'http', '--service-location', '1.2.3.4:80'], /--service-name is required/],
      [['service', 'register', ...flags('/x'), ...base, '--ttl', '0.5'], /--ttl: expected at least 1 second/],
      [['service', 'register', ...flags('/x'), ...base, '--ttl', 'soon'], /--ttl: expected a number of seconds \(at least 1\) or a duration/],
      [['service', 'register', ...flags('/x'), ...base, '--ttl', '5', '--refresh-every', '5'], /--refresh-every \(5s\) must be shorter than --ttl \(5s\)/],
      [['service', 'register', ...flags('/x'), ...base, '--refresh-every', '5'], /--refresh-every needs --ttl/],
      [['service', 'register', '--etcd-endpoint', 'localhost', '--tree-root', '/x', ...base], /--etcd-endpoint: expected host:port/],
      [['service', 'list', '--etcd-endpoint', etcd.endpoint, '--tree-root', 'relative'], /--tree-root: expected an absolute key path/],
      [['service', 'list', ...flags('/x'), '--service-type', 'a/b'], /--service-type: the service type must not contain "\/"/],
    ];
    for (const [args, message] of cases) assertCleanError(await cli(args, env), message);
    assertCleanError(await cli(['service', 'register', ...base], baseEnv({ EMPUSA_TREE_ROOT: '/x', EMPUSA_ETCD_ENDPOINT: 'nope' })), /EMPUSA_ETCD_ENDPOINT: expected host:port/);
  });

  void test('etcd down: one clear line on stderr, exit code 1', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const env = baseEnv();
    for (const args of [
      ['service', 'register', '--etcd-endpoint', dead, '--tree-root', '/x', '--service-type', 'http', '--service-name', 'x', '--service-location', '1.2.3.4:80'],
      ['service', 'unregister', '--etcd-endpoint', dead, '--tree-root', '/x', '--service-type', 'http', '--service-name', 'x'],
      ['service', 'list', '--etcd-endpoint', dead, '--tree-root', '/x'],
    ]) {
      const r = await cli(args, env);
      assert.equal(r.code, 1, JSON.stringify(r));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`etcd unreachable at ${dead.replace(/\./g, '\\.')} \\(connection refused\\)`));
      assertCleanError(r, /emperor service (register|unregister|list):/);
    }
  });

  // (Inside the suite above: the same etcd.)
  void describe("empusa's command line, unchanged", () => {
    const value = async (key: string): Promise<string | undefined> => (await raw.get(key).exec()).kvs[0]?.value.toString();
    const leaseOf = async (key: string): Promise<string> => (await raw.get(key).exec()).kvs[0]?.lease ?? '0';

    void test('emperor: the etcd options before the command (as empusa documents), after it, or both', async () => {
      const root = freshRoot();
      const env = baseEnv();
      const e = etcd.endpoint;
      const svc = ['--service-type', 'http', '--service-name', 'web-1', '--service-location', 'web-1:8080'];
      let r = await runCli(['--etcd-endpoint', e, '--tree-root', root, 'service', 'register', ...svc], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(`${root}/services/http/web-1`), 'web-1:8080');
      // The --opt=value spelling, and the options split around the command name.
      r = await runCli([`--etcd-endpoint=${e}`, 'service', `--tree-root=${root}`, 'register', '--service-type', 'http', '--service-name', 'web-2', '--service-location', 'web-2:8080'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(`${root}/services/http/web-2`), 'web-2:8080');
      r = await runCli(['--etcd-endpoint', e, '--tree-root', root, 'service', 'list', '--json'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual((JSON.parse(r.stdout) as Array<{ name: string }>).map((x) => x.name), ['web-1', 'web-2']);
      r = await runCli(['--etcd-endpoint', e, '--tree-root', root, 'service', 'unregister', '--service-type', 'http', '--service-name', 'web-1'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(`${root}/services/http/web-1`), undefined);
      // --ttl 30: seconds, as empusa takes it.
      r = await runCli(['--etcd-endpoint', e, '--tree-root', root, 'service', 'register', ...svc, '--ttl', '30'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await raw.leaseClient.leaseTimeToLive({ ID: await leaseOf(`${root}/services/http/web-1`) })).grantedTTL, '30');
      // A mistake is reported by the service command, not by `run` asking for --vassals.
      r = await runCli(['--etcd-endpoint', e, '--tree-root', root, 'service', 'register', '--service-type', 'http'], env);
      assert.equal(r.code, 2, JSON.stringify(r));
      assert.match(r.stderr, /^emperor service register: --service-name is required/);
      assert.doesNotMatch(r.stderr, /--vassals/);
      r = await runCli(['--etcd-endpoint', e, '--tree-root', root, 'service', '--bogus', 'list'], env);
      assertCleanError(r, /unknown option '--bogus'/);
    });

    void test('the empusa command: a bin entry of the package, with empusa\'s usage and its service command', async () => {
      const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> };
      assert.equal(pkg.bin.empusa, 'bin/empusa');
      accessSync(binEmpusa, fsConstants.X_OK);
      const help = await empusa(['--help'], baseEnv());
      assert.equal(help.code, 0, help.stderr);
      const lines = help.stdout.split('\n').map((l) => l.trim());
      assert.equal(lines[0], 'Usage: empusa [OPTIONS] COMMAND [ARGS]...');
      for (const term of [/^--etcd-endpoint HOST:PORT\s+\[required\]/, /^--etcd-protocol TEXT\b/, /^--tree-root TEXT\s+\[required\]/, /^--help\s+Show this message and exit\.$/, /^Commands:$/, /^service\b/]) {
        assert.ok(lines.some((l) => term.test(l)), `${term} in:\n${help.stdout}`);
      }
      const sub = await empusa(['service', '--help'], baseEnv());
      assert.equal(sub.code, 0, sub.stderr);
      assert.match(sub.stdout, /^\s+register\b/m);
      assert.match(sub.stdout, /^\s+unregister\b/m);
    });

    void test("the empusa command runs every form of empusa's README", async () => {
      const root = freshRoot();
      const e = etcd.endpoint;
      const key = `${root}/services/type-of-service/name-of-the-service-instance`;
      const svc = ['--service-type', 'type-of-service', '--service-name', 'name-of-the-service-instance'];
      // Options before the command, exactly as documented.
      let r = await empusa(['--etcd-endpoint', e, '--tree-root', root, 'service', 'register', ...svc, '--service-location', 'baz:1235'], baseEnv());
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(key), 'baz:1235');
      r = await empusa(['--etcd-endpoint', e, '--tree-root', root, 'service', 'unregister', ...svc], baseEnv());
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(key), undefined);
      // After the command.
      r = await empusa(['service', 'register', ...svc, '--service-location', 'baz:1236', '--etcd-endpoint', e, '--tree-root', root], baseEnv());
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(key), 'baz:1236');
      // The environment only (EMPUSA_*), then unregister with flags and the connection from the environment.
      const env = baseEnv({
        EMPUSA_ETCD_ENDPOINT: e,
        EMPUSA_TREE_ROOT: root,
        EMPUSA_SERVICE_TYPE: 'type-of-service',
        EMPUSA_SERVICE_NAME: 'name-of-the-service-instance',
        EMPUSA_SERVICE_LOCATION: 'baz:1237',
      });
      r = await empusa(['service', 'register'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(key), 'baz:1237');
      r = await empusa(['service', 'unregister', ...svc], baseEnv({ EMPUSA_ETCD_ENDPOINT: e, EMPUSA_TREE_ROOT: root }));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await value(key), undefined);
      // --ttl 30 (seconds).
      r = await empusa(['service', 'register', '--ttl', '30'], env);
      assert.equal(r.code, 0, r.stderr);
      const lease = await leaseOf(key);
      assert.equal((await raw.leaseClient.leaseTimeToLive({ ID: lease })).grantedTTL, '30');
      await raw.leaseClient.leaseRevoke({ ID: lease });
      // Errors speak as empusa.
      r = await empusa(['--etcd-endpoint', e, 'service', 'register', ...svc, '--service-location', 'baz:1'], baseEnv());
      assert.equal(r.code, 2, JSON.stringify(r));
      assert.match(r.stderr, /^empusa service register: --tree-root is required/);
    });

    void test('empusa --ttl 30 --refresh-every 20 keeps running and unregisters on SIGTERM', async () => {
      const root = freshRoot();
      const key = `${root}/services/http/kept`;
      const kept = keepRunning(binEmpusa, ['--etcd-endpoint', etcd.endpoint, '--tree-root', root, 'service', 'register', '--service-type', 'http', '--service-name', 'kept', '--service-location', 'k:1', '--ttl', '30', '--refresh-every', '20']);
      const { child, exited } = kept;
      try {
        await waitFor(() => kept.stdout.includes('registered'), `registration (stderr: ${kept.stderr})`, 30_000);
        assert.match(kept.stdout, /ttl 30s, refreshed every 20s/);
        assert.equal((await raw.leaseClient.leaseTimeToLive({ ID: await leaseOf(key) })).grantedTTL, '30');
        child.kill('SIGTERM');
        assert.equal(await exited, 0, kept.stderr);
        assert.equal(await value(key), undefined);
      } finally {
        child.kill('SIGKILL');
        children.delete(child);
      }
    });
  });
});

void describe('emperor service with etcd auth', () => {
  const password = 'cli-secret-pw';
  let etcd: EtcdServer;
  before(async () => {
    etcd = await startEtcd({ auth: { rootPassword: 'root-pw' } });
    await etcd.addUser({ name: 'svc', password, prefix: '/auth-cli/' });
  });
  after(async () => {
    await etcd?.dispose();
  });

  void test('the password comes from the environment and is never printed', async () => {
    const base = ['--etcd-endpoint', etcd.endpoint, '--tree-root', '/auth-cli', '--etcd-user', 'svc'];
    let r = await cli(['service', 'register', ...base, '--service-type', 'http', '--service-name', 'a', '--service-location', '1.2.3.4:80'], baseEnv({ EMPUSA_ETCD_PASSWORD: password }));
    assert.equal(r.code, 0, r.stderr);
    r = await cli(['service', 'list', ...base], baseEnv({ EMPEROR_ETCD_PASSWORD: password }));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /http\s+a\s+1\.2\.3\.4:80/);

    const wrong = 'wrong-cli-secret';
    r = await cli(['service', 'list', ...base], baseEnv({ EMPEROR_ETCD_PASSWORD: wrong }));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /authentication failed for etcd user "svc"/);
    assert.ok(!(r.stderr + r.stdout).includes(wrong));

    r = await cli(['service', 'list', '--etcd-endpoint', etcd.endpoint, '--tree-root', '/auth-cli'], baseEnv());
    assert.equal(r.code, 1);
    assert.match(r.stderr, /etcd requires authentication/);

    r = await cli(['service', 'list', ...base], baseEnv());
    assertCleanError(r, /--etcd-user needs a password: set EMPEROR_ETCD_PASSWORD or pass --etcd-password-file/);
    r = await cli(['service', 'list', ...base, '--etcd-password', password], baseEnv());
    assertCleanError(r, /unknown option '--etcd-password'/);
  });
});
