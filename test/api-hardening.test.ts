// The control API (HTTP on a unix socket) and the metrics server against malformed, oversized,
// hostile and slow clients, spoken to in raw bytes over net.connect. Every case must get a 4xx
// (JSON {error} from the API), the emperor must stay up and keep serving others, and slow
// clients must be cut off by the server's own header timeout (5 s). Nothing here asserts how
// fast an answer comes; slow cases wait for the server's 'close', bounded by test timeouts.
//
// Bodies: no API request takes one. Any body, JSON or not, well-formed or not, declared by
// Content-Length or sent chunked, is answered 413 without being read, and the connection is
// closed. A body that is "bad JSON" is therefore a 413 too, never a 400 or a 500.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import { after, before, describe, it } from './support/test.js';
import { EmperorUnderTest, appVassal, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';

interface Reply {
  /** Status code of the first response, undefined when the server answered nothing. */
  status: number | undefined;
  headers: Record<string, string>;
  body: string;
  /** Client-side socket errors (EPIPE, ECONNRESET) while it was still sending. */
  errors: string[];
}

type Target = string | { port: number };

function connect(target: Target): net.Socket {
  return typeof target === 'string' ? net.connect(target) : net.connect(target.port, '127.0.0.1');
}

function parseReply(raw: string, errors: string[]): Reply {
  const end = raw.indexOf('\r\n\r\n');
  const head = end < 0 ? raw : raw.slice(0, end);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine)?.[1];
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: status === undefined ? undefined : Number(status), headers, body: end < 0 ? '' : raw.slice(end + 4), errors };
}

/**
 * Writes raw bytes and resolves with what came back once the server closes the connection.
 * Well-formed requests say "Connection: close"; malformed ones are closed by the server itself.
 */
function raw(target: Target, data: string | Buffer): Promise<Reply> {
  return new Promise((resolve) => {
    const socket = connect(target);
    const chunks: Buffer[] = [];
    const errors: string[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
    socket.on('close', () => resolve(parseReply(Buffer.concat(chunks).toString('latin1'), errors)));
    socket.on('connect', () => socket.write(data));
  });
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: emperor\r\n${extra}Connection: close\r\n\r\n`;
const post = (path: string, extra = ''): string => `POST ${path} HTTP/1.1\r\nHost: emperor\r\n${extra}Connection: close\r\n\r\n`;

/** A 4xx with a JSON {error: "..."} body, as every API refusal must be. */
function assertApiError(reply: Reply, status: number, what: string, message?: RegExp): string {
  assert.equal(reply.status, status, `${what}: got ${reply.status ?? 'no answer'}: ${reply.body.slice(0, 300)}`);
  assert.match(reply.headers['content-type'] ?? '', /^application\/json/, `${what}: content-type`);
  const body = JSON.parse(reply.body) as { error?: unknown };
  assert.equal(typeof body.error, 'string', `${what}: body ${reply.body}`);
  const error = body.error as string;
  assert.ok(error.length > 0 && error.length <= 400, `${what}: error of ${error.length} characters`);
  if (message) assert.match(error, message, what);
  return error;
}

/**
 * A slowloris client: sends `request` one byte per second and never finishes the headers.
 * Resolves when the server closes the connection, with whatever the server said and how many
 * bytes were sent.
 */
function slowloris(target: Target, request: string): { closed: Promise<{ reply: Reply; sent: number }> } {
  const socket = connect(target);
  const chunks: Buffer[] = [];
  const errors: string[] = [];
  let sent = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || !socket.writable || sent >= request.length - 1) return; // never the final byte
    socket.write(request[sent] ?? '');
    sent++;
  }, 1000);
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
  const closed = new Promise<{ reply: Reply; sent: number }>((resolve) => {
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ reply: parseReply(Buffer.concat(chunks).toString('latin1'), errors), sent });
    });
  });
  return { closed };
}

/** Streams `declared` bytes of body (64 KiB at a time, never held in memory) until the server hangs up. */
function hugeBody(target: Target, head: string): Promise<{ reply: Reply; sent: number }> {
  return new Promise((resolve) => {
    const socket = connect(target);
    const chunks: Buffer[] = [];
    const errors: string[] = [];
    const chunk = Buffer.alloc(64 * 1024, 0x78);
    const limit = 1024 * 1024 * 1024; // stop feeding after 1 GiB if the server were to read it all
    let sent = 0;
    const pump = (): void => {
      while (!socket.destroyed && socket.writable && sent < limit) {
        sent += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    socket.on('data', (data: Buffer) => chunks.push(data));
    socket.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
    socket.on('close', () => resolve({ reply: parseReply(Buffer.concat(chunks).toString('latin1'), errors), sent }));
    socket.on('connect', () => {
      socket.write(head);
      pump();
    });
  });
}

describe('control API and metrics server: malformed, huge and slow requests', () => {
  let emp: EmperorUnderTest;
  let ws: Awaited<ReturnType<typeof makeWorkspace>>;
  let metrics: { port: number };
  let pid: number;

  before(async () => {
    ws = await makeWorkspace('emperor-api-hard-');
    metrics = { port: await freePort() };
    emp = await EmperorUnderTest.start(ws, ['--metrics', `127.0.0.1:${metrics.port}`]);
    const m = emp.mark();
    await emp.writeVassal('keeper.json', appVassal(fixture('app.js')));
    await emp.waitEvent('keeper', 'ready', m);
    pid = (await emp.vassal('keeper')).pid ?? 0;
  });
  after(async () => {
    await emp.stop();
    await fs.rm(ws.root, { recursive: true, force: true });
  });

  it('answers a well-formed raw request (the baseline for everything below)', async () => {
    const reply = await raw(emp.socket, get('/v1/status'));
    assert.equal(reply.status, 200);
    assert.ok(Array.isArray((JSON.parse(reply.body) as { vassals: unknown[] }).vassals));
  });

  it('refuses request bodies with 413 and closes: Content-Length, bad JSON, chunked', async () => {
    for (const [what, request] of [
      ['a JSON body', post('/v1/reload', 'Content-Type: application/json\r\nContent-Length: 9\r\n') + '{"a": 1}\n'],
      ['a body of bad JSON', post('/v1/vassals/keeper/restart', 'Content-Type: application/json\r\nContent-Length: 6\r\n') + '{"a": '],
      ['a body on a GET', get('/v1/status', 'Content-Length: 3\r\n') + 'abc'],
      ['a chunked body', post('/v1/reload', 'Transfer-Encoding: chunked\r\n') + '5\r\nhello\r\n0\r\n\r\n'],
      ['a chunked body that never ends', post('/v1/reload', 'Transfer-Encoding: chunked\r\n') + 'ffffff\r\nxx'],
    ] as const) {
      const reply = await raw(emp.socket, request);
      assertApiError(reply, 413, what, /request bodies are not accepted/);
      assert.equal(reply.headers['connection'], 'close', what);
    }
    // Refused before being acted on: the vassal was not restarted by the bad-JSON request.
    assert.equal((await emp.vassal('keeper')).pid, pid);
  });

  it('answers a huge body 413 without reading it, and hangs up', async () => {
    const { reply, sent } = await hugeBody(emp.socket, post('/v1/reload', 'Content-Length: 10000000000\r\n'));
    assertApiError(reply, 413, '10 GB body');
    assert.ok(sent < 10_000_000_000, 'the server hung up before the body was sent');
    assert.equal((await emp.status()).pid, emp.pid);
  });

  it('refuses smuggling-style framing with 400: duplicate or conflicting Content-Length, CL with chunked', async () => {
    for (const [what, request] of [
      ['two different Content-Length', `${post('/v1/reload', 'Content-Length: 0\r\nContent-Length: 5\r\n')}hello`],
      ['two equal Content-Length', get('/v1/status', 'Content-Length: 0\r\nContent-Length: 0\r\n')],
      ['a Content-Length list', `${post('/v1/reload', 'Content-Length: 5, 0\r\n')}hello`],
      ['Content-Length and chunked', `${post('/v1/reload', 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n')}0\r\n\r\n`],
      ['a negative Content-Length', get('/v1/status', 'Content-Length: -1\r\n')],
      ['a non-numeric Content-Length', get('/v1/status', 'Content-Length: abc\r\n')],
      ['an obfuscated Transfer-Encoding', `${post('/v1/reload', 'Transfer-Encoding: xchunked\r\n')}0\r\n\r\n`],
    ] as const) {
      const reply = await raw(emp.socket, request);
      assert.ok(reply.status !== undefined && reply.status >= 400 && reply.status < 500, `${what}: ${reply.status ?? 'no answer'} ${reply.body}`);
      assertApiError(reply, reply.status, what);
    }
  });

  it('answers unknown vassals 404, for every endpoint that names one', async () => {
    assertApiError(await raw(emp.socket, get('/v1/vassals/nope')), 404, 'status', /no vassal named "nope"/);
    assertApiError(await raw(emp.socket, post('/v1/vassals/nope/restart')), 404, 'restart');
    assertApiError(await raw(emp.socket, post('/v1/vassals/nope/check/pass?check=x&note=hi')), 404, 'ttl push');
  });

  it('answers unknown endpoints 404 and keeps echoed paths short', async () => {
    for (const path of ['/', '/nope', '/v2/status', '/v1', '/v1/', '/v1/vassals', '/v1/vassals/keeper/check/pass/again', '/v1/a/b/c/d/e/f', '*', '/v1/vassals/keeper/bogus']) {
      const method = path.endsWith('bogus') ? post : get;
      assertApiError(await raw(emp.socket, method(path)), 404, path);
    }
    assertApiError(await raw(emp.socket, 'OPTIONS * HTTP/1.1\r\nHost: emperor\r\nConnection: close\r\n\r\n'), 404, 'OPTIONS *');
    // An 8 KB path still fits Node's header limit; the message does not repeat all of it.
    assertApiError(await raw(emp.socket, get(`/v1/${'a'.repeat(8_000)}`)), 404, '8 KB path');
    assertApiError(await raw(emp.socket, post('/v1/vassals/keeper/check/maybe')), 404, 'unknown ttl verb', /expected pass, warn or fail/);
  });

  it('answers wrong methods 405 with Allow', async () => {
    for (const [method, path, allowed] of [
      ['DELETE', '/v1/status', 'GET'],
      ['POST', '/v1/status', 'GET'],
      ['GET', '/v1/reload', 'POST'],
      ['PUT', '/v1/vassals/keeper', 'GET'],
      ['GET', '/v1/vassals/keeper/restart', 'POST'],
      ['GET', '/v1/vassals/keeper/check/pass', 'POST'],
      ['BREW', '/v1/status', 'GET'],
    ] as const) {
      const reply = await raw(emp.socket, `${method} ${path} HTTP/1.1\r\nHost: emperor\r\nConnection: close\r\n\r\n`);
      // Node's parser knows BREW is no method: that one is a 400 before any route is seen.
      const status = method === 'BREW' ? 400 : 405;
      assertApiError(reply, status, `${method} ${path}`);
      if (status === 405) assert.equal(reply.headers['allow'], allowed, `${method} ${path}`);
    }
    assert.equal((await emp.vassal('keeper')).pid, pid, 'GET .../restart restarted nothing');
  });

  it('answers invalid percent-encoding 400, not 500', async () => {
    for (const path of ['/v1/vassals/%E0%A4%A', '/v1/vassals/%FF', '/v1/%ZZ', '/v1/vassals/keeper/%C0%AF', '/v1/vassals/%', '/v1/vassals/%E0%A4%A/restart']) {
      const method = path.endsWith('restart') ? post : get;
      assertApiError(await raw(emp.socket, method(path)), 400, path, /malformed percent-encoding/);
    }
  });

  it('refuses path-traversal-ish and impossible vassal names with 4xx', async () => {
    assertApiError(await raw(emp.socket, get('/v1/vassals/..%2F..%2Fetc')), 400, '..%2F..%2Fetc', /invalid vassal name/);
    assertApiError(await raw(emp.socket, post('/v1/vassals/..%2F..%2Fetc%2Fpasswd/stop')), 400, 'stop ..%2F', /invalid vassal name/);
    assertApiError(await raw(emp.socket, get('/v1/vassals/a%00b')), 400, 'NUL', /invalid vassal name/);
    assertApiError(await raw(emp.socket, get(`/v1/vassals/${'n'.repeat(1_000)}`)), 400, '1,000-character name', /invalid vassal name/);
    // Dot segments are resolved by URL parsing before routing: nothing is ever read from disk.
    for (const path of ['/v1/vassals/..', '/v1/vassals/%2E%2E', '/v1/vassals/../../../etc/passwd', '/v1/vassals/%2e%2e%2fetc']) {
      const reply = await raw(emp.socket, get(path));
      assert.ok(reply.status === 400 || reply.status === 404, `${path}: ${reply.status ?? 'no answer'}`);
      assertApiError(reply, reply.status, path);
    }
    assertApiError(await raw(emp.socket, post(`/v1/vassals/keeper/check/pass?check=${'c'.repeat(300)}`)), 400, 'long check name');
  });

  it('answers over-long URLs and headers 431, and closes', async () => {
    for (const [what, request] of [
      ['a 20 KB URL', get(`/v1/vassals/${'a'.repeat(20_000)}`)],
      ['a 20 KB header', get('/v1/status', `X-Big: ${'b'.repeat(20_000)}\r\n`)],
      ['2,000 headers', get('/v1/status', Array.from({ length: 2_000 }, (_, i) => `X-H${i}: ${'v'.repeat(10)}\r\n`).join(''))],
    ] as const) {
      assertApiError(await raw(emp.socket, request), 431, what, /headers too large/);
    }
  });

  it('answers what is not HTTP with 400 and closes the connection', async () => {
    for (const [what, data] of [
      ['text', 'hello there\r\n\r\n'],
      ['binary', Buffer.from([0x00, 0x01, 0x02, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a])],
      ['a TLS client hello', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a])],
      ['an HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      ['a request line without a version', 'GET /v1/status\rHTTP\r\n\r\n'],
      ['a bad HTTP version', 'GET /v1/status HTTP/9.9\r\nHost: x\r\n\r\n'],
      ['a bad header line', 'GET /v1/status HTTP/1.1\r\nno colon here\r\n\r\n'],
      ['a control character in a header', 'GET /v1/status HTTP/1.1\r\nX-A: a\u0000b\r\n\r\n'],
      ['a bare CR in a header value', 'GET /v1/status HTTP/1.1\r\nX-A: a\rb\r\n\r\n'],
    ] as const) {
      const reply = await raw(emp.socket, data);
      assertApiError(reply, 400, what, /malformed HTTP request/);
    }
    assertApiError(await raw(emp.socket, 'GET http://[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 400, 'an unparsable absolute URL', /malformed request target/);
    // A client that goes on sending after its garbage still gets to read the answer.
    assertApiError((await hugeBody(emp.socket, 'NOT HTTP AT ALL\r\n')).reply, 400, 'garbage, then megabytes more', /malformed HTTP request/);
  });

  it('cuts off slowloris clients after the header timeout while answering others', { timeout: 60_000 }, async () => {
    const slow = [
      slowloris(emp.socket, get('/v1/status', `X-Slow: ${'s'.repeat(100)}\r\n`)),
      slowloris(emp.socket, post('/v1/reload', `X-Slow: ${'s'.repeat(100)}\r\n`)),
      slowloris(emp.socket, 'GET /v1/vassals/keeper HTTP/1.1\r\n'.padEnd(200, 'x')),
      slowloris(emp.socket, ''), // connects and never sends a byte
    ];
    // While they trickle, others are served at once (no timing asserted: it must answer at all).
    for (let i = 0; i < 3; i++) {
      const status = await emp.status();
      assert.equal(status.pid, emp.pid);
      assert.equal((await raw(emp.socket, get('/v1/vassals/keeper'))).status, 200);
    }
    const results = await Promise.all(slow.map((s) => s.closed));
    for (const [i, { reply, sent }] of results.entries()) {
      // The server closed them (the 'close' event came), never serving the unfinished request.
      assert.notEqual(reply.status, 200, `slow client ${i} got an answer`);
      if (reply.status !== undefined) assertApiError(reply, 408, `slow client ${i}`);
      assert.ok(sent < 100, `slow client ${i} sent ${sent} bytes before being cut off`);
    }
  });

  it('serves metrics and refuses bad paths, bad methods, bodies and garbage with 4xx', async () => {
    const ok = await raw(metrics, get('/metrics'));
    assert.equal(ok.status, 200);
    assert.match(ok.body, /emperor_vassal_up\{vassal="keeper"\} 1/);
    const head = await raw(metrics, 'HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    for (const path of ['/', '/metric', '/metrics/x', '/v1/status', '/%E0%A4%A', '//metrics', '/metrics/../etc/passwd']) {
      assert.equal((await raw(metrics, get(path))).status, 404, path);
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
      const reply = await raw(metrics, `${method} /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(reply.status, 405, method);
      assert.equal(reply.headers['allow'], 'GET, HEAD', method);
    }
    assert.equal((await raw(metrics, `${post('/metrics', 'Content-Length: 4\r\n')}abcd`)).status, 413);
    assert.equal((await hugeBody(metrics, post('/metrics', 'Content-Length: 10000000000\r\n'))).reply.status, 413);
    for (const data of ['hello\r\n\r\n', Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x0d, 0x0a, 0x0d, 0x0a]), `${post('/metrics', 'Content-Length: 1\r\nContent-Length: 2\r\n')}ab`]) {
      const reply = await raw(metrics, data);
      assert.equal(reply.status, 400, `garbage ${JSON.stringify(data.toString().slice(0, 20))}`);
    }
    assert.equal((await raw(metrics, get(`/metrics?${'q'.repeat(20_000)}`))).status, 431);
    assert.equal((await hugeBody(metrics, 'NOT HTTP AT ALL\r\n')).reply.status, 400);
  });

  it('cuts off slowloris clients of the metrics server while answering scrapes', { timeout: 60_000 }, async () => {
    const slow = [slowloris(metrics, get('/metrics', `X-Slow: ${'s'.repeat(100)}\r\n`)), slowloris(metrics, '')];
    assert.equal((await raw(metrics, get('/metrics'))).status, 200);
    const results = await Promise.all(slow.map((s) => s.closed));
    for (const [i, { reply }] of results.entries()) {
      assert.ok(reply.status === undefined || reply.status === 408, `slow metrics client ${i}: ${reply.status ?? ''}`);
    }
  });

  it('is still up afterwards: status works, the vassal kept its pid, and no request was a 500', async () => {
    assert.equal(emp.child.exitCode, null);
    const cli = await emp.cli(['status']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /keeper/);
    const keeper = await emp.vassal('keeper');
    assert.equal(keeper.state, 'running');
    assert.equal(keeper.pid, pid);
    assert.deepEqual(
      emp.entries.filter((e) => e.event === 'api-error').map((e) => e.message),
      [],
      'the control API logged internal errors',
    );
    assert.equal((await raw(metrics, get('/metrics'))).status, 200);
  });
});
