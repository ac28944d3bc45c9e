import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import {
  CHECK_NAME,
  ConfigError,
  DEFAULTS,
  MAX_VASSAL_FILE_BYTES,
  classifyVassalFile,
  formatDuration,
  loadVassalFile,
  parseDuration,
  parseVassal,
  type VassalParseResult,
  type VassalSpec,
} from '../src/config/index.js';

const DIR = '/srv/vassals';
const MINIMAL_YAML = 'command: [node, server.js]\n';

function ok(result: VassalParseResult): VassalSpec {
  if (!result.ok) assert.fail(`expected a valid vassal, got: ${result.error.message}`);
  return result.spec;
}

function fails(result: VassalParseResult): ConfigError {
  if (result.ok) assert.fail(`expected an error, got a spec: ${JSON.stringify(result.spec)}`);
  assert.ok(result.error instanceof ConfigError);
  assert.ok(!result.error.message.includes('\n'), `message must be one line: ${JSON.stringify(result.error.message)}`);
  return result.error;
}

const yaml = (content: string, name = 'web.yaml'): VassalParseResult => parseVassal(content, path.join(DIR, name));
const json = (value: unknown, name = 'web.json'): VassalParseResult => parseVassal(JSON.stringify(value), path.join(DIR, name));
/** YAML document with `command` plus extra lines. */
const withCommand = (extra: string): VassalParseResult => yaml(`${MINIMAL_YAML}${extra}`);

const BILLION_LAUGHS = [
  'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
  'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
  'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
  'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
  'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
  'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
  'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]',
  'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]',
  'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]',
].join('\n');

void describe('parseVassal: formats and defaults', () => {
  void it('fills every default for a minimal YAML file', () => {
    const spec = ok(yaml(MINIMAL_YAML));
    const { hash, ...rest } = spec;
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.deepEqual(rest, {
      name: 'web',
      file: '/srv/vassals/web.yaml',
      argv: ['node', 'server.js'],
      shell: false,
      cwd: DIR,
      env: {},
      restart: 'always',
      backoff: { initialMs: 1_000, maxMs: 60_000, resetAfterMs: 30_000, maxRetries: 5, maxRestarts: { count: 10, withinMs: 600_000 } },
      start: { timeoutMs: 30_000, ready: { kind: 'default' } },
      checks: [],
      onCritical: null,
      stop: { signal: 'SIGTERM', timeoutMs: 10_000, drainMs: 0 },
      service: null,
      consul: null,
      emperorProtocol: false,
      heartbeatTimeoutMs: 30_000,
      kind: 'command',
      user: null,
      group: null,
      logs: { maxBytes: 10 * 1024 * 1024, keep: 5 },
      limits: null,
      limitsRequired: false,
      placement: null,
    });
  });

  void it('logs: sizes like 10M or 512K, keep, 0 to never rotate; bad values named', () => {
    assert.deepEqual(ok(withCommand(`logs: { max_size: 512K, keep: 2 }\n`)).logs, { maxBytes: 512 * 1024, keep: 2 });
    assert.deepEqual(ok(withCommand(`logs: { max_size: 1.5M }\n`)).logs, { maxBytes: 1.5 * 1024 * 1024, keep: 5 });
    assert.deepEqual(ok(withCommand(`logs: { max_size: 0, keep: 0 }\n`)).logs, { maxBytes: 0, keep: 0 });
    assert.deepEqual(ok(withCommand(`logs: { max_size: 2048 }\n`)).logs, { maxBytes: 2048, keep: 5 });
    assert.match(fails(withCommand(`logs: { max_size: ten }\n`)).message, /logs\.max_size: expected a size like 10M/);
    assert.match(fails(withCommand(`logs: { max_size: 100 }\n`)).message, /logs\.max_size: expected .*at least 1K/);
    assert.match(fails(withCommand(`logs: { keep: -1 }\n`)).message, /logs\.keep: expected a whole number from 0 to 100/);
    assert.match(fails(withCommand(`logs: { size: 1M }\n`)).message, /logs\.size: unknown field \(allowed: max_size, keep\)/);
  });

  void it('exports defaults that match what an empty document gets', () => {
    const spec = ok(yaml(MINIMAL_YAML));
    assert.equal(spec.shell, DEFAULTS.shell);
    assert.equal(spec.restart, DEFAULTS.restart);
    assert.deepEqual(spec.backoff, DEFAULTS.backoff);
    assert.deepEqual(spec.start, DEFAULTS.start);
    assert.deepEqual(spec.stop, DEFAULTS.stop);
    assert.ok(Object.isFrozen(DEFAULTS.backoff));
  });

  void it('reads JSON files and gives the same spec as the equivalent YAML', () => {
    const fromJson = ok(json({ command: ['node', 'server.js'] }, 'web.json'));
    const fromYaml = ok(yaml(MINIMAL_YAML));
    assert.equal(fromJson.name, 'web');
    assert.equal(fromJson.file, '/srv/vassals/web.json');
    const strip = ({ hash: _h, file: _f, ...rest }: VassalSpec) => rest;
    assert.deepEqual(strip(fromJson), strip(fromYaml));
  });

  void it('reads .yml files', () => {
    const spec = ok(yaml(MINIMAL_YAML, 'api.yml'));
    assert.equal(spec.name, 'api');
    assert.deepEqual(spec.argv, ['node', 'server.js']);
  });

  void it('takes every field when all are given', () => {
    const spec = ok(
      yaml(
        [
          'command: [python3, -m, http.server, "8000"]',
          'shell: false',
          'cwd: /opt/app',
          'env: {MODE: prod}',
          'restart: on-failure',
          'backoff: {initial: 500ms, max: 2m, reset_after: 1h, max_retries: 9, max_restarts: {count: 3, within: 5m}}',
          'start: {timeout: 5s}',
          'stop: {signal: SIGINT, timeout: 1.5s, drain: 2s}',
        ].join('\n'),
      ),
    );
    assert.deepEqual(spec.argv, ['python3', '-m', 'http.server', '8000']);
    assert.equal(spec.cwd, '/opt/app');
    assert.deepEqual(spec.env, { MODE: 'prod' });
    assert.equal(spec.restart, 'on-failure');
    assert.deepEqual(spec.backoff, { initialMs: 500, maxMs: 120_000, resetAfterMs: 3_600_000, maxRetries: 9, maxRestarts: { count: 3, withinMs: 300_000 } });
    assert.deepEqual(spec.start, { timeoutMs: 5_000, ready: { kind: 'default' } });
    assert.deepEqual(spec.stop, { signal: 'SIGINT', timeoutMs: 1_500, drainMs: 2_000 });
  });

  void it('accepts a UTF-8 byte order mark in both formats', () => {
    assert.deepEqual(ok(parseVassal(`\uFEFF${MINIMAL_YAML}`, '/v/a.yaml')).argv, ['node', 'server.js']);
    assert.deepEqual(ok(parseVassal('\uFEFF{"command":["x"]}', '/v/a.json')).argv, ['x']);
  });
});

void describe('durations', () => {
  void it('parses values with units', () => {
    const cases: Array<[string, number]> = [
      ['500ms', 500],
      ['10s', 10_000],
      ['2m', 120_000],
      ['1h', 3_600_000],
      ['0s', 0],
      ['1.5s', 1_500],
      [' 10s ', 10_000],
      ['3 minutes', 180_000],
    ];
    for (const [text, expected] of cases) assert.equal(parseDuration(text), expected, text);
  });

  void it('reads a bare number as seconds, as systemd and empusa do', () => {
    const cases: Array<[string | number, number]> = [
      ['30', 30_000],
      [' 30 ', 30_000],
      [30, 30_000],
      ['1.5', 1_500],
      [0.25, 250],
      ['0', 0],
      [0, 0],
      ['.5', 500],
    ];
    for (const [value, expected] of cases) assert.equal(parseDuration(value), expected, JSON.stringify(value));
  });

  void it('rejects negatives, garbage and absurd lengths', () => {
    for (const value of [-10, '-10', '-1s', 'ten', '', '10 parsecs', '1e3', '0x10', Number.NaN, Number.POSITIVE_INFINITY, null, undefined, true, ['1s'], '30d', 2_592_000, '2592000']) {
      assert.throws(() => parseDuration(value), /expected a duration like 500ms, 10s or 2m/, String(value));
    }
  });

  void it('formats for status output', () => {
    assert.equal(formatDuration(1_500), '1.5s');
    assert.equal(formatDuration(120_000), '2m');
    assert.equal(formatDuration(300), '300ms');
    assert.equal(formatDuration(0), '0ms');
    assert.equal(formatDuration(59_990), '1m');
    assert.equal(formatDuration(5_400_000), '1.5h');
    assert.equal(formatDuration(2 * 86_400_000), '2d');
    assert.equal(formatDuration(-2_000), '-2s');
    assert.equal(formatDuration(Number.NaN), 'n/a');
  });

  void it('reports a bad duration in a file with the field and what was found', () => {
    const error = fails(withCommand('stop:\n  timeout: ten\n'));
    assert.equal(error.message, '/srv/vassals/web.yaml: stop.timeout: expected a duration like 500ms, 10s or 2m, got "ten"');
    assert.equal(error.file, '/srv/vassals/web.yaml');
    assert.equal(error.field, 'stop.timeout');
  });

  void it('names the field of a bad backoff.max_restarts', () => {
    const zero = fails(withCommand('backoff: {max_restarts: {count: 0, within: 5m}}\n'));
    assert.equal(zero.field, 'backoff.max_restarts.count');
    assert.match(zero.message, /a whole number of at least 1/);
    const missing = fails(withCommand('backoff: {max_restarts: {count: 3}}\n'));
    assert.equal(missing.field, 'backoff.max_restarts.within');
    const typo = fails(withCommand('backoff: {max_restarts: {count: 3, within: 5m, per: 1}}\n'));
    assert.equal(typo.field, 'backoff.max_restarts.per');
    assert.match(typo.message, /allowed: count, within/);
  });

  void it('reads a bare number in a file as seconds (YAML number or string)', () => {
    const spec = ok(parseVassal(`${MINIMAL_YAML}backoff: {reset_after: 45}\nstop: {timeout: "2.5"}\n`, '/v/a.yaml'));
    assert.equal(spec.backoff.resetAfterMs, 45_000);
    assert.equal(spec.stop.timeoutMs, 2_500);
    const negative = fails(withCommand('backoff: {reset_after: -3}\n'));
    assert.equal(negative.field, 'backoff.reset_after');
    assert.match(negative.message, /got -3 \(durations cannot be negative\)/);
  });

  void it('requires start.timeout to be positive but allows stop.timeout: 0s', () => {
    const error = fails(withCommand('start: {timeout: 0s}\n'));
    assert.equal(error.field, 'start.timeout');
    assert.match(error.message, /greater than 0/);
    assert.equal(ok(withCommand('stop: {timeout: 0s}\n')).stop.timeoutMs, 0);
  });
});

void describe('command and shell', () => {
  void it('refuses a string command without shell: true and says how to fix it', () => {
    const error = fails(yaml('command: node server.js\n'));
    assert.equal(error.field, 'command');
    assert.match(error.message, /list/);
    assert.match(error.message, /shell: true/);
  });

  void it('wraps a string command with /bin/sh -c when shell: true', () => {
    const spec = ok(yaml('command: "exec node server.js > /tmp/log 2>&1"\nshell: true\n'));
    assert.equal(spec.shell, true);
    assert.deepEqual(spec.argv, ['/bin/sh', '-c', 'exec node server.js > /tmp/log 2>&1']);
  });

  void it('refuses a list command with shell: true', () => {
    const error = fails(yaml('command: [node, server.js]\nshell: true\n'));
    assert.equal(error.field, 'command');
    assert.match(error.message, /expected a string/);
  });

  void it('requires command', () => {
    const error = fails(yaml('restart: never\n'));
    assert.equal(error.field, 'command');
    assert.match(error.message, /required field is missing/);
  });

  void it('refuses empty commands and non-string or empty arguments, naming the index', () => {
    assert.match(fails(yaml('command: []\n')).message, /command: .*got an empty list/);
    assert.match(fails(yaml('command: ""\nshell: true\n')).message, /command: expected a non-empty command/);

    const numeric = fails(yaml('command: [server, --port, 8080]\n'));
    assert.equal(numeric.field, 'command[2]');
    assert.match(numeric.message, /expected a string, got 8080 \(quote it: "8080"\)/);

    assert.equal(fails(yaml('command: ["", x]\n')).field, 'command[0]');
    // An empty argument after the program is a real argument (ssh-keygen -N "").
    const withEmpty = parseVassal('command: [ssh-keygen, -N, ""]\n', '/v/web.yaml');
    assert.ok(withEmpty.ok);
    assert.deepEqual(withEmpty.spec.argv, ['ssh-keygen', '-N', '']);
    assert.equal(fails(json({ command: ['node', 'a\u0000b'] })).field, 'command[1]');
  });

  void it('refuses a non-boolean shell', () => {
    const error = fails(yaml('command: ls\nshell: "yes"\n'));
    assert.equal(error.field, 'shell');
    assert.match(error.message, /expected true or false, got "yes"/);
  });
});

void describe('env', () => {
  void it('converts numbers and booleans to strings, keeping YAML numbers as written', () => {
    const spec = ok(withCommand('env:\n  PORT: 8080\n  DEBUG: true\n  UMASK: 0022\n  VERSION: 1.10\n  NAME: web\n'));
    assert.deepEqual(spec.env, { PORT: '8080', DEBUG: 'true', UMASK: '0022', VERSION: '1.10', NAME: 'web' });
    assert.deepEqual(ok(json({ command: ['x'], env: { PORT: 8080, ON: false } })).env, { PORT: '8080', ON: 'false' });
  });

  void it('rejects bad variable names', () => {
    for (const name of ['1PORT', 'MY-VAR', 'A=B', 'MY VAR', '']) {
      const error = fails(json({ command: ['x'], env: { [name]: 'v' } }));
      assert.equal(error.field, `env[${JSON.stringify(name)}]`, name);
      assert.match(error.message, /invalid variable name/);
    }
  });

  void it('rejects null, lists and mappings as values, and env that is not a mapping', () => {
    const nullValue = fails(withCommand('env:\n  PORT:\n'));
    assert.equal(nullValue.field, 'env.PORT');
    assert.match(nullValue.message, /expected a string, number or boolean, got null/);
    assert.equal(fails(json({ command: ['x'], env: { A: [1] } })).field, 'env.A');
    assert.equal(fails(json({ command: ['x'], env: { A: { b: 1 } } })).field, 'env.A');
    assert.match(fails(json({ command: ['x'], env: ['A=1'] })).message, /env: expected a mapping/);
  });

  void it('keeps a variable named __proto__ as data without touching any prototype', () => {
    const spec = ok(parseVassal('{"command":["x"],"env":{"__proto__":"yes"}}', '/v/p.json'));
    assert.ok(Object.hasOwn(spec.env, '__proto__'));
    assert.equal(Object.getPrototypeOf(spec.env), Object.prototype);
    assert.equal(({} as Record<string, unknown>)['yes'], undefined);
  });
});

void describe('strictness and messages', () => {
  void it('words every refusal itself, never with a generic schema-library message', () => {
    // One bad value per field: each must name its field and say what was expected.
    const cases: Array<[string, string]> = [
      ['user: -1', 'user'],
      ['group: 1.5', 'group'],
      ['shell: 1', 'shell'],
      ['restart: 3', 'restart'],
      ['cwd: ""', 'cwd'],
      ['env: {A: [1]}', 'env.A'],
      ['backoff: {max_retries: 9007199254740992}', 'backoff.max_retries'],
      ['start: {ready: {notify: 1}}', 'start.ready.notify'],
      ['start: {ready: {exec: {a: 1}}}', 'start.ready.exec'],
      ['stop: {signal: []}', 'stop.signal'],
      ['checks: [{tcp: 5}]', 'checks[0].tcp'],
      ['checks: [{name: "a b", ttl: 1s}]', 'checks[0].name'],
      ['service: {port: 70000}', 'service.port'],
      ['service: {port: 1, tags: [1]}', 'service.tags[0]'],
      ['service: {port: 1, meta: []}', 'service.meta'],
      ['service: {port: 1, id: "a/b"}', 'service.id'],
      ['service: {port: 1, address: ""}', 'service.address'],
      ['service: {port: 1, consul: {native_checks: "yes"}}', 'service.consul.native_checks'],
    ];
    for (const [line, field] of cases) {
      const error = fails(withCommand(`${line}\n`));
      assert.equal(error.field, field, line);
      assert.match(error.problem, /^expected .+, got /, line);
    }
  });

  void it('names an unknown top-level field and lists the allowed ones', () => {
    const error = fails(withCommand('restrat: never\n'));
    assert.ok(
      error.message.startsWith(
        '/srv/vassals/web.yaml: restrat: unknown field (allowed: command, shell, cwd, env, restart, backoff, start, stop, checks, on_critical, service, consul, emperor_protocol, heartbeat_timeout, user, group, logs, limits, limits_required, placement)',
      ),
      error.message,
    );
    assert.match(error.message, /did you mean restart\?/);
    assert.equal(error.field, 'restrat');
  });

  void it('names an unknown nested field with its dotted path', () => {
    const error = fails(withCommand('stop:\n  sginal: TERM\n'));
    assert.equal(error.field, 'stop.sginal');
    assert.match(error.message, /stop\.sginal: unknown field \(allowed: signal, timeout, drain\)/);
    assert.equal(fails(withCommand('backoff: {inital: 1s}\n')).field, 'backoff.inital');
    assert.equal(fails(withCommand('start: {timeout: 1s, grace: 1s}\n')).field, 'start.grace');
  });

  void it('reports a misspelt key before the missing field it causes, and counts the rest', () => {
    const error = fails(yaml('comand: [node]\n'));
    assert.equal(error.field, 'comand');
    assert.match(error.message, /\(and 1 more problem\)$/);
    const many = fails(yaml('command: [node]\nrestart: sometimes\nshell: 1\nfoo: 1\n'));
    assert.match(many.message, /\(and 2 more problems\)$/);
  });

  void it('lists the allowed values for a bad enum', () => {
    const error = fails(withCommand('restart: sometimes\n'));
    assert.equal(error.field, 'restart');
    assert.match(error.message, /expected one of always, on-failure, never, got "sometimes"/);
  });

  void it('rejects mappings where lists or values belong', () => {
    assert.match(fails(withCommand('backoff: [1s]\n')).message, /backoff: expected a mapping, got a list/);
    assert.match(fails(withCommand('stop:\n')).message, /stop: expected a mapping, got null/);
  });

  void it('keeps messages on one line even when values contain newlines', () => {
    const error = fails(json({ command: ['x'], restart: 'never\nFAKE LOG LINE' }));
    assert.match(error.message, /never\\nFAKE LOG LINE/);
  });

  void it('rejects __proto__ as a field in JSON', () => {
    assert.equal(fails(parseVassal('{"command":["x"],"__proto__":{"shell":true}}', '/v/p.json')).field, '__proto__');
  });
});

void describe('stop.signal', () => {
  void it('normalizes names with or without SIG, in any case', () => {
    const cases: Array<[string, string]> = [
      ['SIGTERM', 'SIGTERM'],
      ['term', 'SIGTERM'],
      ['sigint', 'SIGINT'],
      ['Hup', 'SIGHUP'],
      ['SIGKILL', 'SIGKILL'],
      ['QUIT', 'SIGQUIT'],
    ];
    for (const [written, expected] of cases) {
      assert.equal(ok(withCommand(`stop: {signal: ${written}}\n`)).stop.signal, expected, written);
    }
  });

  void it('rejects unknown signals, numbers and SIGSTOP', () => {
    const unknown = fails(withCommand('stop: {signal: SIGFOO}\n'));
    assert.equal(unknown.field, 'stop.signal');
    assert.match(unknown.message, /expected a signal name like SIGTERM, SIGINT or HUP, got "SIGFOO"/);
    assert.equal(fails(withCommand('stop: {signal: 15}\n')).field, 'stop.signal');
    assert.equal(fails(withCommand('stop: {signal: SIG}\n')).field, 'stop.signal');
    assert.match(fails(withCommand('stop: {signal: stop}\n')).message, /SIGSTOP cannot be used/);
  });
});

void describe('backoff', () => {
  void it('rejects max below initial, blaming the field that was written', () => {
    const both = fails(withCommand('backoff: {initial: 2m, max: 1m}\n'));
    assert.equal(both.field, 'backoff.max');
    assert.match(both.message, /at least backoff\.initial \(2m\), got 1m/);
    const defaultMax = fails(withCommand('backoff: {initial: 2m}\n'));
    assert.equal(defaultMax.field, 'backoff.initial');
    assert.match(defaultMax.message, /backoff\.max/);
  });

  void it('accepts max equal to initial', () => {
    assert.equal(ok(withCommand('backoff: {initial: 5s, max: 5s}\n')).backoff.maxMs, 5_000);
  });

  void it('requires max_retries to be a whole number of at least 1', () => {
    for (const value of ['0', '-1', '1.5', '"5"', 'null']) {
      const error = fails(withCommand(`backoff: {max_retries: ${value}}\n`));
      assert.equal(error.field, 'backoff.max_retries', value);
      assert.match(error.message, /expected a whole number of at least 1/);
    }
    assert.equal(ok(withCommand('backoff: {max_retries: 1}\n')).backoff.maxRetries, 1);
  });
});

void describe('file-level problems', () => {
  void it('refuses empty and whitespace-only files', () => {
    for (const content of ['', '   \n\t\n']) {
      assert.match(fails(yaml(content)).message, /: file is empty$/);
      assert.match(fails(parseVassal(content, '/v/web.json')).message, /: file is empty$/);
    }
    assert.match(fails(yaml('# nothing here yet\n')).message, /file is empty/);
  });

  void it('refuses binary content and invalid UTF-8', () => {
    assert.match(fails(parseVassal(Buffer.from([0x63, 0x00, 0x01, 0xff]), '/v/web.yaml')).message, /binary/);
    assert.match(fails(parseVassal(Buffer.from([0x61, 0x3a, 0x20, 0xc3, 0x28]), '/v/web.yaml')).message, /not valid UTF-8/);
  });

  void it('refuses content over the 64 KiB cap but accepts a file of exactly 64 KiB', () => {
    const padding = (size: number) => `${MINIMAL_YAML}#${'x'.repeat(size - MINIMAL_YAML.length - 1)}`;
    assert.match(fails(yaml(padding(MAX_VASSAL_FILE_BYTES + 1))).message, /too large/);
    assert.equal(Buffer.byteLength(padding(MAX_VASSAL_FILE_BYTES)), MAX_VASSAL_FILE_BYTES);
    assert.equal(ok(yaml(padding(MAX_VASSAL_FILE_BYTES))).name, 'web');
  });

  void it('stops a "billion laughs" alias bomb', () => {
    // Expanded, it is a billion values: a parser that did not cut it off early would not finish
    // before this file's deadline (--test-timeout). How fast it is cut off is a bench matter.
    const error = fails(yaml(BILLION_LAUGHS));
    assert.match(error.message, /alias/);
  });

  void it('survives 10,000 levels of nesting in JSON and YAML', () => {
    const arrays = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
    const documents: Array<[string, string]> = [
      ['deep.json', arrays],
      ['deep.json', `{"command": ${arrays}}`],
      ['deep.yaml', arrays],
      ['deep.yaml', `command: ${arrays}`],
      ['deep.yaml', `${'{a: '.repeat(10_000)}1${'}'.repeat(10_000)}`],
      ['deep.yaml', `${'- '.repeat(10_000)}x`],
    ];
    for (const [name, content] of documents) {
      const error = fails(parseVassal(content, `/v/${name}`));
      assert.match(error.message, /nested more than 32 levels/, `${name}: ${content.slice(0, 20)}`);
    }
  });

  void it('does not loop on a self-referencing YAML alias', () => {
    assert.match(fails(yaml('command: &x [*x]\n')).message, /nested more than 32 levels/);
  });

  void it('refuses a top level that is not a mapping', () => {
    assert.match(fails(yaml('- node\n- server.js\n')).message, /top level.*got a list/);
    assert.match(fails(yaml('just a string\n')).message, /top level.*got "just a string"/);
    assert.match(fails(parseVassal('42', '/v/web.json')).message, /top level.*got 42/);
    assert.match(fails(parseVassal('null', '/v/web.json')).message, /top level.*got null/);
  });

  void it('reports YAML syntax errors with line and column', () => {
    const error = fails(yaml('command: [node, server.js]\nenv:\n  A: [1, 2\nrestart: never\n'));
    assert.match(error.message, /invalid YAML at line \d+, column \d+: /);
    assert.match(fails(yaml('command: [a]\ncommand: [b]\n')).message, /line 2, column 1: duplicate key "command"/);
    assert.match(fails(yaml('command: [a]\n---\ncommand: [b]\n')).message, /more than one YAML document/);
    assert.match(fails(yaml('command: !custom [a]\n')).message, /Unresolved tag/);
    assert.match(fails(yaml('command: [a]\nenv: {A: !!binary aGk=}\n')).message, /Unresolved tag/);
  });

  void it('refuses a JSON key given twice in one object, as YAML does', () => {
    assert.equal(fails(parseVassal('{"command":["x"],"command":["y"]}', '/v/web.json')).message, '/v/web.json: invalid JSON at line 1, column 18: duplicate key "command"');
    // Compared decoded: an escaped spelling is the same key.
    assert.match(fails(parseVassal('{"command":["x"],\n "env": {"A": "1", "\\u0041": "2"}}', '/v/web.json')).message, /line 2, column 20: duplicate key "A"/);
    // The same key in different objects, or as a value, is fine.
    assert.deepEqual(ok(parseVassal('{"command":["env"],"env":{"env":"command"}}', '/v/web.json')).env, { env: 'command' });
  });

  void it('reports JSON syntax errors with line and column', () => {
    assert.match(fails(parseVassal('{"command": [node]}', '/v/web.json')).message, /invalid JSON at line 1, column 14: /);
    assert.match(fails(parseVassal('{\n  "command": ["x"],\n}', '/v/web.json')).message, /invalid JSON at line 3, column 1: /);
    assert.match(fails(parseVassal('{"command": [', '/v/web.json')).message, /invalid JSON at line 1, column 14: unexpected end of file/);
  });

  void it('refuses file names that are not vassals or not safe', () => {
    assert.match(fails(parseVassal(MINIMAL_YAML, '/v/.web.yaml')).message, /not a vassal file/);
    assert.match(fails(parseVassal(MINIMAL_YAML, '/v/web.conf')).message, /not a vassal file/);
    assert.match(fails(parseVassal(MINIMAL_YAML, '/v/my app.yaml')).message, /invalid vassal name "my app": .*space/);
  });
});

void describe('classifyVassalFile', () => {
  void it('ignores hidden files, editor leftovers and other extensions', () => {
    for (const basename of ['.web.yaml', '.hidden', 'web.yaml~', 'web.yaml.swp', '.web.yaml.swp', 'web.tmp', 'web.yaml.tmp', 'web.txt', 'web', 'README.md', 'web.YAML', '#web.yaml#', 'web.yaml.bak']) {
      assert.deepEqual(classifyVassalFile(basename), { kind: 'ignored' }, basename);
    }
  });

  void it('accepts safe names and strips the extension', () => {
    const cases: Array<[string, string]> = [
      ['web.yaml', 'web'],
      ['api.yml', 'api'],
      ['worker.json', 'worker'],
      ['web.v2.yaml', 'web.v2'],
      ['queue@3.yaml', 'queue@3'],
      ['A_b-C.9.yml', 'A_b-C.9'],
      ['9lives.json', '9lives'],
      [`${'a'.repeat(128)}.yaml`, 'a'.repeat(128)],
    ];
    for (const [basename, name] of cases) {
      assert.deepEqual(classifyVassalFile(basename), { kind: 'vassal', name }, basename);
    }
  });

  void it('flags unsafe names with a reason', () => {
    const cases: Array<[string, RegExp]> = [
      ['my app.yaml', /space/],
      ['tab\there.yaml', /control character/],
      ['café.yaml', /non-ASCII/],
      ['a..b.yaml', /"\.\."/],
      ['-web.yaml', /start with a letter or a digit/],
      ['_web.yaml', /start with a letter or a digit/],
      ['web:1.yaml', /":"/],
      ['a/b.yaml', /"\/"/],
      [`${'a'.repeat(129)}.yaml`, /129 characters/],
    ];
    for (const [basename, reason] of cases) {
      const result = classifyVassalFile(basename);
      assert.equal(result.kind, 'bad-name', basename);
      if (result.kind === 'bad-name') {
        assert.equal(result.name, basename.slice(0, basename.lastIndexOf('.')));
        assert.match(result.reason, reason, basename);
      }
    }
  });
});

void describe('start.ready', () => {
  const ready = (text: string) => ok(withCommand(`start:\n  ready: ${text}\n`)).start.ready;
  const readyError = (text: string) => fails(withCommand(`start:\n  ready: ${text}\n`));

  void it('defaults to the "default" gate when start or start.ready is absent', () => {
    assert.deepEqual(ok(yaml(MINIMAL_YAML)).start.ready, { kind: 'default' });
    assert.deepEqual(ok(withCommand('start: {timeout: 5s}\n')).start, { timeoutMs: 5_000, ready: { kind: 'default' } });
    assert.deepEqual(DEFAULTS.start.ready, { kind: 'default' });
  });

  void it('takes a tcp probe, with IPv4, hostnames and bracketed IPv6, retried every 100ms by default', () => {
    assert.deepEqual(ready('{tcp: "127.0.0.1:8080"}'), { kind: 'probe', probe: { kind: 'tcp', host: '127.0.0.1', port: 8080 }, intervalMs: 100 });
    assert.deepEqual(ready('{tcp: "localhost:1"}'), { kind: 'probe', probe: { kind: 'tcp', host: 'localhost', port: 1 }, intervalMs: 100 });
    assert.deepEqual(ready('{tcp: "[::1]:65535", interval: 250ms}'), {
      kind: 'probe',
      probe: { kind: 'tcp', host: '::1', port: 65_535 },
      intervalMs: 250,
    });
    assert.equal(DEFAULTS.readyIntervalMs, 100);
  });

  void it('takes http and https probes', () => {
    assert.deepEqual(ready('{http: "http://127.0.0.1:8080/health"}'), {
      kind: 'probe',
      probe: { kind: 'http', url: 'http://127.0.0.1:8080/health' },
      intervalMs: 100,
    });
    assert.deepEqual(ready('{http: "https://example.com/ready?deep=1", interval: 1s}'), {
      kind: 'probe',
      probe: { kind: 'http', url: 'https://example.com/ready?deep=1' },
      intervalMs: 1_000,
    });
  });

  void it('takes an exec probe as an argv list, empty later arguments included', () => {
    assert.deepEqual(ready('{exec: [./ready.sh, --quick, ""]}'), {
      kind: 'probe',
      probe: { kind: 'exec', argv: ['./ready.sh', '--quick', ''] },
      intervalMs: 100,
    });
  });

  void it('takes notify: true and delay', () => {
    assert.deepEqual(ready('{notify: true}'), { kind: 'notify' });
    assert.deepEqual(ready('{delay: 2s}'), { kind: 'delay', ms: 2_000 });
    assert.deepEqual(ready('{delay: 0s}'), { kind: 'delay', ms: 0 });
  });

  void it('reads the same from JSON', () => {
    const spec = ok(json({ command: ['x'], start: { timeout: '5s', ready: { tcp: '127.0.0.1:80', interval: '50ms' } } }));
    assert.deepEqual(spec.start, { timeoutMs: 5_000, ready: { kind: 'probe', probe: { kind: 'tcp', host: '127.0.0.1', port: 80 }, intervalMs: 50 } });
  });

  void it('requires exactly one kind', () => {
    const none = readyError('{}');
    assert.equal(none.field, 'start.ready');
    assert.match(none.message, /expected exactly one of tcp, http, exec, notify, delay or emperor, got an empty mapping/);
    assert.match(readyError('{interval: 1s}').message, /start\.ready: expected exactly one of .*, got only interval/);
    const two = readyError('{tcp: "a:1", http: "http://a/"}');
    assert.equal(two.field, 'start.ready.http');
    assert.match(two.message, /got both tcp and http; keep one/);
    assert.equal(fails(withCommand('start: {ready: tcp}\n')).field, 'start.ready');
  });

  void it('refuses notify: false and other notify values', () => {
    const error = readyError('{notify: false}');
    assert.equal(error.field, 'start.ready.notify');
    assert.match(error.message, /expected true, got false/);
    assert.match(readyError('{notify: "yes"}').message, /start\.ready\.notify: expected true, got "yes"/);
  });

  void it('refuses interval with notify and delay, and a zero interval', () => {
    for (const kind of ['notify: true', 'delay: 1s']) {
      const error = readyError(`{${kind}, interval: 1s}`);
      assert.equal(error.field, 'start.ready.interval', kind);
      assert.match(error.message, /interval only applies to tcp, http or exec probes/);
    }
    const zero = readyError('{tcp: "a:1", interval: 0s}');
    assert.equal(zero.field, 'start.ready.interval');
    assert.match(zero.message, /greater than 0/);
    assert.equal(readyError('{delay: ten}').field, 'start.ready.delay');
  });

  void it('refuses malformed tcp targets with a hint', () => {
    const cases: Array<[string, RegExp]> = [
      ['"8080"', /the port is missing/],
      ['"localhost"', /the port is missing/],
      ['":8080"', /the host is missing/],
      ['"host:0"', /between 1 and 65535/],
      ['"host:65536"', /between 1 and 65535/],
      ['"host:http"', /the port must be a number/],
      ['"host:"', /the port must be a number/],
      ['"::1:8080"', /put IPv6 addresses in brackets/],
      ['"[::1]8080"', /expected host:port/],
      ['"[nothost]:80"', /expected host:port/],
      ['"a b:80"', /expected host:port/],
      ['8080', /expected host:port.*got 8080/],
    ];
    for (const [value, problem] of cases) {
      const error = readyError(`{tcp: ${value}}`);
      assert.equal(error.field, 'start.ready.tcp', value);
      assert.match(error.message, problem, value);
    }
  });

  void it('refuses URLs that are not http(s)', () => {
    for (const value of ['"ftp://example.com/"', '"example.com/health"', '"http://"', '"/health"', '42']) {
      const error = readyError(`{http: ${value}}`);
      assert.equal(error.field, 'start.ready.http', value);
      assert.match(error.message, /expected an http:\/\/ or https:\/\/ URL/, value);
    }
    assert.match(readyError('{http: "file:///etc/passwd"}').message, /\(the scheme is file\)/);
  });

  void it('applies the command rules to exec, but refuses a string', () => {
    assert.match(readyError('{exec: "./ready.sh --quick"}').message, /start\.ready\.exec: expected a list of strings .*got a string/);
    assert.match(readyError('{exec: []}').message, /start\.ready\.exec: .*got an empty list/);
    assert.equal(readyError('{exec: ["", x]}').field, 'start.ready.exec[0]');
    const numeric = readyError('{exec: [./ready.sh, 5]}');
    assert.equal(numeric.field, 'start.ready.exec[1]');
    assert.match(numeric.message, /quote it: "5"/);
  });

  void it('names unknown fields in start.ready', () => {
    const error = readyError('{tpc: "a:1"}');
    assert.equal(error.field, 'start.ready.tpc');
    assert.match(error.message, /unknown field \(allowed: tcp, http, exec, notify, emperor, delay, interval\); did you mean tcp\?$/);
    assert.match(fails(withCommand('start: {redy: {tcp: "a:1"}}\n')).message, /start\.redy: unknown field \(allowed: timeout, ready\)/);
  });
});

void describe('checks', () => {
  const checksOf = (text: string) => ok(withCommand(`checks:\n${text}`)).checks;
  const checksError = (text: string) => fails(withCommand(`checks:\n${text}`));

  void it('is an empty list when absent', () => {
    assert.deepEqual(ok(yaml(MINIMAL_YAML)).checks, []);
    assert.deepEqual(ok(withCommand('checks: []\n')).checks, []);
  });

  void it('fills defaults for every kind, with names derived from kind and target', () => {
    const specs = checksOf(
      [
        '  - http: http://127.0.0.1:8080/health',
        '  - tcp: "127.0.0.1:8080"',
        '  - exec: [./check.sh, --x]',
        '  - ttl: 30s',
      ].join('\n'),
    );
    const periodic = { intervalMs: 10_000, timeoutMs: 10_000, successesBeforePassing: 1, failuresBeforeCritical: 1 };
    assert.deepEqual(specs, [
      { name: 'http:http://127.0.0.1:8080/health', probe: { kind: 'http', url: 'http://127.0.0.1:8080/health' }, ...periodic },
      { name: 'tcp:127.0.0.1:8080', probe: { kind: 'tcp', host: '127.0.0.1', port: 8080 }, ...periodic },
      { name: 'exec:./check.sh_--x', probe: { kind: 'exec', argv: ['./check.sh', '--x'] }, ...periodic },
      {
        name: 'ttl',
        probe: { kind: 'ttl', ttlMs: 30_000 },
        intervalMs: 30_000,
        timeoutMs: 30_000,
        successesBeforePassing: 1,
        failuresBeforeCritical: 1,
      },
    ]);
  });

  void it('takes every field when given', () => {
    const [spec] = checksOf(
      [
        '  - http: https://example.com/health',
        '    name: health',
        '    interval: 5s',
        '    timeout: 1s',
        '    successes_before_passing: 3',
        '    failures_before_critical: 2',
      ].join('\n'),
    );
    assert.deepEqual(spec, {
      name: 'health',
      probe: { kind: 'http', url: 'https://example.com/health' },
      intervalMs: 5_000,
      timeoutMs: 1_000,
      successesBeforePassing: 3,
      failuresBeforeCritical: 2,
    });
  });

  void it('defaults the timeout to min(interval, 10s) and accepts timeout equal to interval', () => {
    const [short, long, equal] = checksOf(
      ['  - {tcp: "a:1", interval: 2s}', '  - {tcp: "a:2", interval: 1m}', '  - {tcp: "a:3", interval: 3s, timeout: 3s}'].join('\n'),
    );
    assert.equal(short?.timeoutMs, 2_000);
    assert.equal(long?.timeoutMs, 10_000);
    assert.equal(equal?.timeoutMs, 3_000);
  });

  void it('sanitises default names to the allowed alphabet', () => {
    const specs = checksOf(
      [
        '  - exec: [/bin/sh, -c, "curl -f localhost"]',
        '  - http: "http://127.0.0.1:8080/health?full=1&x"',
        '  - tcp: "[::1]:8080"',
        '  - http: "http://[::1]:8080/"',
      ].join('\n'),
    );
    assert.deepEqual(
      specs.map((spec) => spec.name),
      ['exec:/bin/sh_-c_curl_-f_localhost', 'http:http://127.0.0.1:8080/health_full_1_x', 'tcp:_::1_:8080', 'http:http://_::1_:8080/'],
    );
    for (const spec of specs) assert.match(spec.name, CHECK_NAME);
  });

  void it('accepts names in the allowed alphabet and refuses others', () => {
    assert.equal(checksOf('  - {name: "db.primary:5432@eu/1+2_x-y", tcp: "a:1"}')[0]?.name, 'db.primary:5432@eu/1+2_x-y');
    for (const name of ['"my check"', '"-x"', '"_x"', '""', '"a,b"', '5', 'null']) {
      const error = checksError(`  - {name: ${name}, tcp: "a:1"}`);
      assert.equal(error.field, 'checks[0].name', name);
      assert.match(error.message, /expected a name of letters, digits/, name);
    }
  });

  void it('refuses duplicate names, explicit or defaulted, naming both checks', () => {
    const explicit = checksError(['  - {name: web, tcp: "a:1"}', '  - {name: other, tcp: "a:2"}', '  - {name: web, ttl: 5s}'].join('\n'));
    assert.equal(explicit.field, 'checks[2].name');
    assert.match(explicit.message, /duplicate check name "web": checks\[0\] and checks\[2\] both use it/);
    const defaulted = checksError(['  - tcp: "a:1"', '  - tcp: "a:1"'].join('\n'));
    assert.equal(defaulted.field, 'checks[1].name');
    assert.match(defaulted.message, /duplicate check name "tcp:a:1": checks\[0\] and checks\[1\]/);
    assert.match(checksError(['  - ttl: 5s', '  - ttl: 9s'].join('\n')).message, /duplicate check name "ttl"/);
    // An explicit name may equal another check's default name only if that check is named differently.
    assert.equal(checksOf(['  - {name: "tcp:a:1", tcp: "a:2"}', '  - {name: other, tcp: "a:1"}'].join('\n')).length, 2);
  });

  void it('requires exactly one kind per check', () => {
    const none = checksError('  - {name: x, interval: 1s}');
    assert.equal(none.field, 'checks[0]');
    assert.match(none.message, /expected exactly one of http, tcp, exec or ttl, got none of them/);
    const two = checksError('  - {ttl: 1s}\n  - {http: "http://a/", exec: [x]}');
    assert.equal(two.field, 'checks[1].exec');
    assert.match(two.message, /got both http and exec/);
  });

  void it('refuses interval, timeout and thresholds on ttl checks', () => {
    for (const field of ['interval: 1s', 'timeout: 1s', 'successes_before_passing: 2', 'failures_before_critical: 2']) {
      const error = checksError(`  - {ttl: 5s, ${field}}`);
      assert.equal(error.field, `checks[0].${field.slice(0, field.indexOf(':'))}`, field);
      assert.match(error.message, /not allowed with ttl/, field);
    }
    assert.match(checksError('  - {ttl: 0s}').message, /checks\[0\]\.ttl: expected a duration greater than 0/);
  });

  void it('refuses a timeout longer than the interval, blaming the timeout', () => {
    const explicit = checksError('  - {tcp: "a:1", interval: 5s, timeout: 6s}');
    assert.equal(explicit.field, 'checks[0].timeout');
    assert.match(explicit.message, /expected at most interval \(5s\), got 6s/);
    const defaulted = checksError('  - {tcp: "a:1", timeout: 20s}');
    assert.equal(defaulted.field, 'checks[0].timeout');
    assert.match(defaulted.message, /\(10s by default\), got 20s; lower it or raise interval/);
  });

  void it('refuses bad intervals, timeouts and thresholds, naming the check by index', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['interval: 0s', 'checks[1].interval', /greater than 0/],
      ['interval: five', 'checks[1].interval', /expected a duration like 500ms, 10s or 2m, got "five"/],
      ['timeout: 0s', 'checks[1].timeout', /greater than 0/],
      ['successes_before_passing: 0', 'checks[1].successes_before_passing', /whole number of at least 1, got 0/],
      ['successes_before_passing: 1.5', 'checks[1].successes_before_passing', /whole number of at least 1, got 1.5/],
      ['failures_before_critical: "2"', 'checks[1].failures_before_critical', /whole number of at least 1, got "2"/],
    ];
    for (const [field, path, problem] of cases) {
      const error = checksError(`  - {ttl: 5s}\n  - {tcp: "a:1", ${field}}`);
      assert.equal(error.field, path, field);
      assert.match(error.message, problem, field);
    }
  });

  void it('validates the probe target of each check', () => {
    assert.equal(checksError('  - {tcp: "a"}').field, 'checks[0].tcp');
    assert.equal(checksError('  - {http: "ftp://a/"}').field, 'checks[0].http');
    assert.equal(checksError('  - {exec: [x, 1]}').field, 'checks[0].exec[1]');
    assert.equal(checksError('  - {exec: "x"}').field, 'checks[0].exec');
  });

  void it('names unknown fields with their index and lists the allowed ones', () => {
    const error = checksError('  - {ttl: 5s}\n  - {tcp: "a:1", intervall: 1s}');
    assert.equal(error.field, 'checks[1].intervall');
    assert.match(
      error.message,
      /unknown field \(allowed: name, http, tcp, exec, ttl, interval, timeout, successes_before_passing, failures_before_critical\); did you mean interval\?$/,
    );
  });

  void it('refuses checks that are not a list of mappings', () => {
    assert.match(fails(withCommand('checks: {tcp: "a:1"}\n')).message, /checks: expected a list, got a mapping/);
    assert.match(checksError('  - "tcp:a:1"').message, /checks\[0\]: expected a mapping, got "tcp:a:1"/);
  });
});

void describe('on_critical', () => {
  void it('is null when absent and takes restart_after', () => {
    assert.equal(ok(yaml(MINIMAL_YAML)).onCritical, null);
    assert.deepEqual(ok(withCommand('on_critical: {restart_after: 3}\n')).onCritical, { restartAfter: 3 });
  });

  void it('requires restart_after to be a whole number of at least 1', () => {
    const missing = fails(withCommand('on_critical: {}\n'));
    assert.equal(missing.field, 'on_critical.restart_after');
    assert.match(missing.message, /required field is missing/);
    for (const value of ['0', '-1', '2.5', '"3"', 'null']) {
      const error = fails(withCommand(`on_critical: {restart_after: ${value}}\n`));
      assert.equal(error.field, 'on_critical.restart_after', value);
      assert.match(error.message, /expected a whole number of at least 1/, value);
    }
    assert.match(fails(withCommand('on_critical:\n')).message, /on_critical: expected a mapping, got null/);
    assert.match(fails(withCommand('on_critical: {restart: 3}\n')).message, /on_critical\.restart: unknown field \(allowed: restart_after\)/);
  });
});

void describe('spec properties', () => {
  void it('hashes the raw bytes: stable for equal content, different for any change', () => {
    const first = ok(yaml(MINIMAL_YAML)).hash;
    assert.equal(ok(yaml(MINIMAL_YAML)).hash, first);
    assert.equal(ok(parseVassal(Buffer.from(MINIMAL_YAML), '/elsewhere/web.yaml')).hash, first);
    assert.equal(first, createHash('sha256').update(MINIMAL_YAML).digest('hex'));
    assert.notEqual(ok(yaml(`${MINIMAL_YAML}\n`)).hash, first);
    assert.notEqual(ok(yaml(`# comment\n${MINIMAL_YAML}`)).hash, first);
  });

  void it('resolves cwd against the vassal file directory', () => {
    assert.equal(ok(yaml(MINIMAL_YAML)).cwd, DIR);
    assert.equal(ok(withCommand('cwd: app\n')).cwd, '/srv/vassals/app');
    assert.equal(ok(withCommand('cwd: ../app\n')).cwd, '/srv/app');
    assert.equal(ok(withCommand('cwd: /opt/app\n')).cwd, '/opt/app');
    assert.equal(fails(withCommand('cwd: ""\n')).field, 'cwd');
    assert.equal(fails(withCommand('cwd: 5\n')).field, 'cwd');
  });

  void it('is deeply frozen', () => {
    const spec = ok(withCommand('env: {A: b}\nstart: {ready: {exec: [x]}}\nchecks: [{exec: [y]}]\non_critical: {restart_after: 1}\n'));
    const { ready } = spec.start;
    assert.equal(ready.kind, 'probe');
    const parts = [spec, spec.argv, spec.env, spec.backoff, spec.start, spec.stop, ready, spec.checks, spec.checks[0], spec.checks[0]?.probe, spec.onCritical];
    if (ready.kind === 'probe') parts.push(ready.probe);
    for (const part of parts) assert.ok(Object.isFrozen(part));
    assert.throws(() => (spec.argv as string[]).push('--evil'), TypeError);
    assert.throws(() => {
      (spec.env as Record<string, string>)['A'] = 'changed';
    }, TypeError);
    assert.throws(() => {
      (spec.stop as { timeoutMs: number }).timeoutMs = 0;
    }, TypeError);
  });
});

void describe('loadVassalFile', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'emperor-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  void it('loads a real file and matches parseVassal', async () => {
    const file = path.join(dir, 'web.yaml');
    await writeFile(file, MINIMAL_YAML);
    const spec = ok(await loadVassalFile(file));
    assert.equal(spec.file, file);
    assert.equal(spec.cwd, dir);
    assert.deepEqual(spec, ok(parseVassal(MINIMAL_YAML, file)));
  });

  void it('turns a missing file into a ConfigError', async () => {
    const file = path.join(dir, 'missing.yaml');
    const error = fails(await loadVassalFile(file));
    assert.equal(error.file, file);
    assert.match(error.message, /file does not exist \(ENOENT\)/);
  });

  void it('turns a directory into a ConfigError', async () => {
    const sub = path.join(dir, 'adir.yaml');
    await mkdir(sub);
    assert.match(fails(await loadVassalFile(sub)).message, /is a directory/);
  });

  void it('refuses an oversized file without parsing it', async () => {
    const file = path.join(dir, 'big.yaml');
    await writeFile(file, Buffer.alloc(MAX_VASSAL_FILE_BYTES + 10, 0x20));
    assert.match(fails(await loadVassalFile(file)).message, /too large/);
  });

  void it('reports content errors with the file path', async () => {
    const file = path.join(dir, 'broken.json');
    await writeFile(file, '{"command": "x"}');
    const error = fails(await loadVassalFile(file));
    assert.equal(error.file, file);
    assert.equal(error.field, 'command');
  });

  void it('with followSymlinks false, refuses a link without reading its target, and says nothing of it', async () => {
    const secret = path.join(dir, 'secret.txt');
    await writeFile(secret, 'TOP-SECRET-LINE: 42\n');
    const link = path.join(dir, 'link.yaml');
    await symlink(secret, link);
    const refused = await loadVassalFile(link, { followSymlinks: false });
    assert.match(fails(refused).message, /is a symbolic link; tyrant mode refuses links/);
    assert.ok(!fails(refused).message.includes('TOP-SECRET'));
    assert.equal(refused.ok ? undefined : refused.facts, undefined, 'nothing was opened');
    // Followed (the default outside tyrant mode), it is the target's content that is judged.
    assert.match(fails(await loadVassalFile(link)).message, /TOP-SECRET-LINE.*unknown field/);
  });

  void it('takes the owner, size and bytes from one descriptor, and refuses a sparse file by its size alone', async () => {
    const file = path.join(dir, 'owned.yaml');
    await writeFile(file, MINIMAL_YAML);
    const loaded = await loadVassalFile(file);
    assert.ok(loaded.ok);
    const st = await stat(file);
    assert.deepEqual([loaded.facts.uid, loaded.facts.gid, loaded.facts.ino, loaded.facts.size], [st.uid, st.gid, st.ino, st.size]);
    // 8 GiB of holes: fstat says how big it is; reading it would take gigabytes.
    const sparse = path.join(dir, 'sparse.yaml');
    await writeFile(sparse, '');
    await truncate(sparse, 8 * 1024 ** 3);
    const refused = await loadVassalFile(sparse);
    assert.match(fails(refused).message, /too large \(8589934592 bytes; the limit is 64 KiB\)/);
  });

  void it('lets a trust check refuse a file before its content is parsed', async () => {
    const file = path.join(dir, 'distrusted.yaml');
    await writeFile(file, 'SECRET-CONTENT: [\n');
    const seen: number[] = [];
    const refused = await loadVassalFile(file, {
      trust: (_file, facts) => {
        seen.push(facts.size);
        return 'not trusted';
      },
    });
    assert.equal(fails(refused).message, `${file}: not trusted`);
    assert.deepEqual(seen, [Buffer.byteLength('SECRET-CONTENT: [\n')]);
  });

  void it('does not block on a FIFO named like a vassal', async (t) => {
    const fifo = path.join(dir, 'pipe.yaml');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      t.skip('mkfifo is not available');
      return;
    }
    assert.match(fails(await loadVassalFile(fifo)).message, /not a regular file/);
  });
});

void describe('service', () => {
  const svc = (body: string) => parseVassal(`command: [node, server.js]\nservice: ${body}\n`, '/srv/vassals/web.yaml');

  void it('defaults name to the vassal, type to "default", address to 127.0.0.1', () => {
    const r = svc('{port: 8080}');
    assert.ok(r.ok);
    assert.deepEqual(r.spec.service, {
      name: 'web',
      type: 'default',
      id: null,
      address: '127.0.0.1',
      port: 8080,
      location: '127.0.0.1:8080',
      tags: [],
      meta: {},
      deregisterWhenCritical: false,
      consulNativeChecks: false,
    });
  });

  void it('takes every field, and location instead of address/port', () => {
    const r = svc('{name: api, type: http, id: api-1, address: 10.0.0.5, port: 81, tags: [v1, blue], meta: {version: 3}, deregister_when_critical: true, consul: {native_checks: true}}');
    assert.ok(r.ok);
    assert.equal(r.spec.service?.location, '10.0.0.5:81');
    assert.deepEqual(r.spec.service?.meta, { version: '3' });
    assert.equal(r.spec.service?.deregisterWhenCritical, true);
    assert.equal(r.spec.service?.consulNativeChecks, true);
    const loc = svc('{location: "[::1]:9000"}');
    assert.ok(loc.ok);
    assert.equal(loc.spec.service?.address, '::1');
    assert.equal(loc.spec.service?.port, 9000);
    assert.equal(loc.spec.service?.location, '[::1]:9000');
  });

  void it('refuses names unsafe in a registry key, naming the field', () => {
    for (const bad of ['"a/b"', '".."', '"a..b"', '""', '"x\\ty"', '"with space"']) {
      const r = svc(`{name: ${bad}, port: 1}`);
      assert.ok(!r.ok, bad);
      assert.equal(r.error.field, 'service.name', bad);
      assert.match(r.error.message, /registry key/);
    }
    const t = svc('{type: "../etc", port: 1}');
    assert.ok(!t.ok);
    assert.equal(t.error.field, 'service.type');
  });

  void it('needs a port or a location, not both', () => {
    const none = svc('{name: web}');
    assert.ok(!none.ok);
    assert.match(none.error.message, /service\.port: a service needs a port/);
    const both = svc('{port: 1, location: "h:2"}');
    assert.ok(!both.ok);
    assert.match(both.error.message, /either location or address\/port/);
    const badPort = svc('{port: 70000}');
    assert.ok(!badPort.ok);
    assert.equal(badPort.error.field, 'service.port');
  });

  void it('checks meta keys and tags as Consul would', () => {
    const reserved = svc('{port: 1, meta: {consul-x: y}}');
    assert.ok(!reserved.ok);
    assert.match(reserved.error.message, /consul-/);
    const ours = svc('{port: 1, meta: {emperor_id: y}}');
    assert.ok(!ours.ok);
    assert.match(ours.error.message, /reserved/);
    const tag = svc('{port: 1, tags: ["two words"]}');
    assert.ok(!tag.ok);
    assert.equal(tag.error.field, 'service.tags[0]');
    const unknown = svc('{port: 1, consul: {native: true}}');
    assert.ok(!unknown.ok);
    assert.match(unknown.error.message, /service\.consul\.native: unknown field \(allowed: native_checks\)/);
  });
});

void describe('user and group', () => {
  const f = (body: string) => parseVassal(`command: [id]\n${body}\n`, '/srv/vassals/web.yaml');
  void it('take names and numeric ids', () => {
    const r = f('user: www-data\ngroup: 33');
    assert.ok(r.ok);
    assert.equal(r.spec.user, 'www-data');
    assert.equal(r.spec.group, '33');
  });
  void it('refuse anything else, naming the field', () => {
    for (const bad of ['"a b"', '"../x"', '-1', '"root;id"']) {
      const r = f(`user: ${bad}`);
      assert.ok(!r.ok, bad);
      assert.equal(r.error.field, 'user');
    }
  });
});

void describe('fleet vassals (placement)', () => {
  const fleet = (doc: object, name = 'web') => parseVassal(JSON.stringify(doc), 'etcd:/root/fleet/vassals/web', { fleetName: name });

  void it('reads the three placements, names the vassal by the fleet, and defaults cwd to /', () => {
    const one = fleet({ command: ['sleep', '1'], placement: { replicas: 1 } });
    assert.ok(one.ok);
    assert.deepEqual(one.spec.placement, { kind: 'replicas', replicas: 1 });
    assert.equal(one.spec.name, 'web');
    assert.equal(one.spec.cwd, '/');
    assert.equal(one.spec.file, 'etcd:/root/fleet/vassals/web');
    const named = fleet({ command: ['/bin/sleep', '1'], cwd: '/srv', placement: { nodes: ['web-1', 'web-2'] } });
    assert.ok(named.ok);
    assert.deepEqual(named.spec.placement, { kind: 'nodes', nodes: ['web-1', 'web-2'] });
    assert.equal(named.spec.cwd, '/srv');
    const all = fleet({ command: ['sleep', '1'], placement: { all: true } });
    assert.ok(all.ok);
    assert.deepEqual(all.spec.placement, { kind: 'all' });
  });

  void it('refuses what a fleet spec cannot mean, naming the field', () => {
    const cases: Array<[object, string, RegExp]> = [
      [{ command: ['sleep', '1'] }, 'placement', /needs a placement block/],
      [{ command: ['sleep', '1'], placement: {} }, 'placement', /expected one of replicas, nodes or all/],
      [{ command: ['sleep', '1'], placement: { replicas: 1, nodes: ['a'] } }, 'placement', /only one of replicas, nodes or all, got replicas and nodes/],
      [{ command: ['sleep', '1'], placement: { all: false } }, 'placement.all', /expected true/],
      [{ command: ['sleep', '1'], placement: { nodes: ['a', 'a'] } }, 'placement.nodes', /listed twice/],
      [{ command: ['sleep', '1'], placement: { nodes: ['../x'] } }, 'placement.nodes[0]', /node name/],
      [{ command: ['sleep', '1'], placement: { replicas: 1001 } }, 'placement.replicas', /at most 1000/],
      [{ command: ['sleep', '1'], cwd: 'rel', placement: { replicas: 1 } }, 'cwd', /absolute directory/],
      [{ command: ['bin/app'], placement: { replicas: 1 } }, 'command[0]', /absolute or a bare program name/],
      [{ command: ['app'], checks: [{ exec: ['./check'] }], placement: { replicas: 1 } }, 'checks[0].exec[0]', /absolute or a bare program name/],
      [{ command: ['app'], user: 0, placement: { replicas: 1 } }, 'user', /never runs as root/],
    ];
    for (const [doc, field, message] of cases) {
      const r = fleet(doc);
      assert.ok(!r.ok, JSON.stringify(doc));
      assert.equal(r.error.field, field, JSON.stringify(doc));
      assert.match(r.error.message, message, JSON.stringify(doc));
    }
    const badName = fleet({ command: ['a'], placement: { replicas: 1 } }, '../x');
    assert.ok(!badName.ok);
    assert.match(badName.error.message, /invalid fleet vassal name/);
  });

  void it('refuses a placement in a local vassal file', () => {
    const r = parseVassal(JSON.stringify({ command: ['a'], placement: { replicas: 1 } }), '/srv/vassals/web.json');
    assert.ok(!r.ok);
    assert.equal(r.error.field, 'placement');
    assert.match(r.error.message, /only fleet vassals are placed/);
  });
});
