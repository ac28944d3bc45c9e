// uWSGI .ini vassal files (issue 15): what the emperor reads from them, how uWSGI's magic
// variables expand, and the per-file errors, in the file's own terms (option names).
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from './support/test.js';
import { ConfigError, VassalParser, changeKey, parseVassal, type VassalParseResult, type VassalSpec } from '../src/config/index.js';
import { expandMagic, magicTable, parseIni } from '../src/config/ini.js';

const DIR = '/srv/vassals';
const ini = (content: string, name = 'shop.ini'): VassalParseResult => parseVassal(content, path.join(DIR, name));

function ok(result: VassalParseResult): VassalSpec {
  if (!result.ok) assert.fail(`expected a valid vassal, got: ${result.error.message}`);
  return result.spec;
}

function fails(result: VassalParseResult): ConfigError {
  if (result.ok) assert.fail(`expected an error, got a spec: ${JSON.stringify(result.spec)}`);
  assert.ok(!result.error.message.includes('\n'));
  return result.error;
}

/** The example, as a uWSGI user has it. */
const SHOP = `; vassals/shop.ini — exactly what runs under the uWSGI Emperor today
[uwsgi]
http-socket = 127.0.0.1:8300
wsgi-file = /srv/shop/app.py
processes = 2
master = true
; from the uWSGI–Consul draft
consul-agent = 127.0.0.1:8500
consul-consistency-mode = stale
consul-service-name = shop
consul-service-id = shop-1
consul-service-tags = v2,blue
consul-service-port = 8300
`;

void describe('.ini vassals: what the emperor reads', () => {
  void it('runs the file with uwsgi --ini, over the Emperor protocol, registered as the consul-* options say', () => {
    const spec = ok(ini(SHOP));
    assert.equal(spec.kind, 'uwsgi');
    assert.equal(spec.name, 'shop');
    assert.deepEqual(spec.argv, ['uwsgi', '--ini', '/srv/vassals/shop.ini']);
    assert.equal(spec.emperorProtocol, true);
    assert.equal(spec.stop.signal, 'SIGINT', 'SIGTERM would mean "reload" to uWSGI 2.0');
    assert.deepEqual(spec.consul, { agents: ['127.0.0.1:8500'], consistency: 'stale' });
    assert.equal(spec.service?.name, 'shop');
    assert.equal(spec.service?.id, 'shop-1');
    assert.equal(spec.service?.port, 8300);
    assert.deepEqual(spec.service?.tags, ['v2', 'blue']);
    assert.equal(spec.cwd, DIR);
    assert.equal(spec.heartbeatTimeoutMs, 30_000);
  });

  void it('reads only the [uwsgi] section, skips comments, and takes CRLF files', () => {
    const spec = ok(ini('[other]\nconsul-service-name = nope\nemperor-bogus = 1\n[uwsgi]\r\n# a comment\r\n;another\r\nmaster\r\nemperor-restart = on-failure\r\n'));
    assert.equal(spec.restart, 'on-failure');
    assert.equal(spec.service, null, 'the other section is not read');
  });

  void it('mirrors the YAML fields as emperor-* options', () => {
    const spec = ok(
      ini(
        [
          '[uwsgi]',
          'emperor-stop-timeout = 10s',
          'emperor-stop-drain = 2s',
          'emperor-start-timeout = 1m',
          'emperor-restart = on-failure',
          'emperor-check-http = http://127.0.0.1:8300/health',
          'emperor-check-http = http://127.0.0.1:8300/ready',
          'emperor-check-tcp = 127.0.0.1:8300',
          'emperor-check-interval = 2s',
          'emperor-env = A=1',
          'emperor-env = B=x=y',
          'emperor-heartbeat-timeout = 5s',
          'emperor-backoff-max-retries = 3',
          'emperor-limits-memory = 256M',
          'emperor-limits-required = yes',
          'emperor-logs-keep = 2',
          'emperor-on-critical-restart-after = 3',
        ].join('\n'),
      ),
    );
    assert.deepEqual(spec.stop, { signal: 'SIGINT', timeoutMs: 10_000, drainMs: 2_000 });
    assert.equal(spec.start.timeoutMs, 60_000);
    assert.equal(spec.restart, 'on-failure');
    assert.deepEqual(
      spec.checks.map((c) => [c.name, c.intervalMs]),
      [
        ['http:http://127.0.0.1:8300/health', 2000],
        ['http:http://127.0.0.1:8300/ready', 2000],
        ['tcp:127.0.0.1:8300', 2000],
      ],
    );
    assert.equal(spec.service, null);
    assert.deepEqual(spec.env, { A: '1', B: 'x=y' });
    assert.equal(spec.heartbeatTimeoutMs, 5_000);
    assert.equal(spec.backoff.maxRetries, 3);
    assert.equal(spec.limits?.memoryBytes, 256 * 1024 * 1024);
    assert.equal(spec.limitsRequired, true);
    assert.equal(spec.logs.keep, 2);
    assert.deepEqual(spec.onCritical, { restartAfter: 3 });
  });

  void it('registers in etcd with emperor-service-type (name: the vassal), and takes several consul-agent lines', () => {
    const spec = ok(ini('[uwsgi]\nemperor-service-type = http\nconsul-service-name = shop\nconsul-service-port = 8300\nconsul-agent = 10.0.0.1:8500,10.0.0.2:8500\nconsul-agent = [::1]:8500\n'));
    assert.equal(spec.service?.type, 'http');
    assert.equal(spec.service?.location, '127.0.0.1:8300');
    assert.deepEqual(spec.consul?.agents, ['10.0.0.1:8500', '10.0.0.2:8500', '[::1]:8500']);
    assert.equal(spec.consul?.consistency, 'default');
  });

  void it('a change is content for YAML, and content or mtime for .ini (touch = reload)', () => {
    const yaml = ok(parseVassal('command: [a]\n', '/srv/vassals/a.yaml'));
    const spec = ok(ini(SHOP));
    assert.equal(changeKey(yaml, { mtimeMs: 1 }), changeKey(yaml, { mtimeMs: 2 }));
    assert.notEqual(changeKey(spec, { mtimeMs: 1 }), changeKey(spec, { mtimeMs: 2 }));
  });

  void it('is parsed by the parse worker like any vassal file', async () => {
    const parser = new VassalParser();
    try {
      const result = await parser.parse(Buffer.from(SHOP), '/srv/vassals/shop.ini');
    assert.equal(ok(result).kind, 'uwsgi');
      const bad = await parser.parse(Buffer.from('[uwsgi]\nconsul-service-name = a\nconsul-service-port = 80x\n'), '/srv/vassals/bad.ini');
      assert.equal(fails(bad).field, 'consul-service-port');
    } finally {
      await parser.close();
    }
  });
});

void describe('.ini vassals: uWSGI magic variables in the options the emperor reads', () => {
  void it('expands %n %s %e %p %d %c %0.. %% as uWSGI fills them for a config file', () => {
    const t = magicTable('/srv/vassals/shop.ini');
    const x = (v: string): string => {
      const r = expandMagic(v, t);
      assert.ok(r.ok, v);
      return r.value;
    };
    assert.equal(x('%n'), 'shop');
    assert.equal(x('%s'), 'shop.ini');
    assert.equal(x('%e'), 'ini');
    assert.equal(x('%p'), '/srv/vassals/shop.ini');
    assert.equal(x('%d'), '/srv/vassals/');
    assert.equal(x('%c'), 'vassals');
    assert.equal(x('%0-%1-%2'), 'srv-vassals-');
    assert.equal(x('100%%-%n'), '100%-shop');
    assert.equal(x('trailing %'), 'trailing %');
  });

  void it('uses them in consul-* values, and refuses the ones it cannot know', () => {
    assert.equal(ok(ini('[uwsgi]\nconsul-service-name = %c-%n\nconsul-service-port = 1\n')).service?.name, 'vassals-shop');
    assert.match(fails(ini('[uwsgi]\nconsul-service-name = %j\nconsul-service-port = 1\n')).message, /consul-service-name: line 2: the magic variable %j cannot be used here/);
    assert.match(fails(ini('[uwsgi]\nconsul-service-name = %(name)\nconsul-service-port = 1\n')).message, /option references like %\(name\) cannot be used here/);
  });
});

void describe('.ini vassals: bad input, named in the file\'s terms', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['no [uwsgi] section', '[app]\nmaster = true\n', /shop\.ini: no \[uwsgi\] section/],
    ['an empty file', '', /file is empty/],
    ['a header without "]"', '[uwsgi\n', /line 1: a section header must end with "\]"/],
    ['a port that is not a port', '[uwsgi]\nconsul-service-name = a\nconsul-service-port = 80x\n', /consul-service-port: expected a port number from 1 to 65535, got "80x"/],
    ['a port out of range', '[uwsgi]\nconsul-service-name = a\nconsul-service-port = 70000\n', /consul-service-port: expected a port number/],
    ['tags with spaces', '[uwsgi]\nconsul-service-name = a\nconsul-service-port = 1\nconsul-service-tags = v2, blue\n', /consul-service-tags: expected a non-empty tag without spaces, got " blue"/],
    ['a misspelt option', '[uwsgi]\nemperor-stop-timout = 10s\n', /emperor-stop-timout: unknown option at line 2 .*did you mean emperor-stop-timeout\?/],
    ['an option given twice', '[uwsgi]\nemperor-restart = never\nemperor-restart = always\n', /emperor-restart: given twice \(lines 2 and 3\)/],
    ['service options without a name', '[uwsgi]\nconsul-service-port = 80\n', /consul-service-port: needs consul-service-name/],
    ['an agent without a service', '[uwsgi]\nconsul-agent = 127.0.0.1:8500\n', /consul-agent: needs consul-service-name/],
    ['a bad agent', '[uwsgi]\nconsul-service-name = a\nconsul-service-port = 1\nconsul-agent = nowhere\n', /consul-agent: expected host:port/],
    ['a bad consistency mode', '[uwsgi]\nconsul-service-name = a\nconsul-service-port = 1\nconsul-consistency-mode = eventual\n', /consul-consistency-mode: expected one of default, consistent, stale/],
    ['a bad duration', '[uwsgi]\nemperor-stop-timeout = ten\n', /emperor-stop-timeout: expected a duration/],
    ['a check interval without checks', '[uwsgi]\nemperor-check-interval = 1s\n', /emperor-check-interval: applies to emperor-check-http/],
    ['a bad check URL', '[uwsgi]\nemperor-check-http = ftp://x\n', /emperor-check-http: expected an http:\/\/ or https:\/\/ URL/],
    ['env without =', '[uwsgi]\nemperor-env = JUSTNAME\n', /emperor-env: line 2: expected NAME=value/],
    ['a bad env name', '[uwsgi]\nemperor-env = 1X=2\n', /emperor-env: invalid variable name/],
    ['a bad boolean', '[uwsgi]\nemperor-limits-required = maybe\n', /emperor-limits-required: expected true or false, got "maybe"/],
  ];
  for (const [what, content, expected] of cases) {
    void it(`refuses ${what}`, () => {
      assert.match(fails(ini(content)).message, expected);
    });
  }

  void it('parses a 64 KiB file of options in one pass (no quadratic work, no recursion)', () => {
    const line = 'consul-x = %n%n%n%n%n%n%n%n\n';
    const many = `[uwsgi]\n${'processes = 2\n'.repeat(Math.floor((60 * 1024) / 14))}`;
    assert.equal(ok(ini(many)).kind, 'uwsgi');
    const parsed = parseIni(`[uwsgi]\n${line.repeat(2000)}`);
    assert.ok(parsed.ok);
    assert.equal(parsed.options.length, 2000);
    assert.match(fails(ini(`[uwsgi]\n${'x'.repeat(63 * 1024)}\nemperor-oops = 1\n`)).message, /emperor-oops: unknown option at line 3/);
    // A long run of blanks inside a line: a trimming regex would backtrack over it quadratically
    // (seconds for 60 KiB); the parse worker's time limit would refuse the file, this asserts the
    // content is understood instead.
    const blanks = ok(ini(`[uwsgi]\nemperor-restart = never\na${' \t'.repeat(30 * 1024)}b = 1\n`));
    assert.equal(blanks.restart, 'never');
  });
});
