// The dashboard (--http): one page, its JSON API, server-sent events, and POST actions that go
// through the same control path as the CLI (Emperor.control, its per-vassal queue). Loaded only
// when --http is given, so an emperor without it carries none of this.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { clientErrorHandler, keepListening } from '../api/hardening.js';
import { BadRequest, allow, parseTarget, vassalName } from '../api/request.js';
import { LogSession, MAX_QUEUED_BYTES, parseLogRequest } from '../api/log-session.js';
import { ControlError, type Action, type Emperor } from '../emperor/emperor.js';
import type { Logger } from '../log/logger.js';
import { Access, SECURITY_HEADERS, type Verdict } from './access.js';
import { EventHub } from './events.js';
import { emperorFacts } from './facts.js';
import { LoginLimiter } from './login-limit.js';
import type { DashboardOptions } from './options.js';
import { redactSpec } from './redact.js';

const ACTIONS: ReadonlySet<string> = new Set<Action>(['start', 'stop', 'restart', 'reload']);

/** The page's files, shipped in the package (no build step, no CDN). */
export const STATIC_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'dashboard');
const STATIC: Readonly<Record<string, string>> = {
  '/': 'index.html',
  '/app.js': 'app.js',
  '/app.css': 'app.css',
  '/login': 'login.html',
};
const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

export interface DashboardServer {
  readonly url: string;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: string, type: string, headers: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { ...SECURITY_HEADERS, 'cache-control': 'no-store', ...headers, 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const sendJson = (res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void =>
  send(res, status, JSON.stringify(body), 'application/json', headers);

function check(v: Verdict): void {
  if (!v.ok) throw new BadRequest(v.status, v.message);
}

/** A small urlencoded form (the login): at most 4 KiB. */
function readForm(req: http.IncomingMessage): Promise<URLSearchParams> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 4096) {
        reject(new BadRequest(413, 'form too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

export async function startDashboard(emperor: Emperor, opts: DashboardOptions, logger: Logger): Promise<DashboardServer> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const [route, file] of Object.entries(STATIC)) {
    files.set(route, { body: fs.readFileSync(path.join(STATIC_DIR, file)), type: TYPES[path.extname(file)]! });
  }
  const access = new Access(opts, opts.token);
  const limiter = new LoginLimiter();
  const hub = new EventHub(emperor);
  const logReaders = new Set<LogSession>();

  const serveFile = (res: http.ServerResponse, route: string): void => {
    const f = files.get(route)!;
    if (res.headersSent) return;
    res.writeHead(200, { ...SECURITY_HEADERS, 'cache-control': 'no-cache', 'content-type': f.type, 'content-length': f.body.length });
    res.end(f.body);
  };

  /** Refused (429) while this client is locked out for failed sign-ins; its key otherwise. */
  async function notLocked(req: http.IncomingMessage): Promise<string> {
    const client = await access.client(req);
    const wait = limiter.waitMs(client);
    if (wait > 0) {
      const seconds = Math.ceil(wait / 1000);
      throw new BadRequest(429, `too many failed sign-ins from this client (${client}): try again in ${seconds} s`, { 'retry-after': String(seconds) });
    }
    return client;
  }

  function signInFailed(client: string, how: string): void {
    const lock = limiter.failed(client);
    if (lock > 0) logger.warn(`dashboard: failed sign-in (${how}) from ${client}; it must wait ${Math.ceil(lock / 1000)} s before the next try`, { event: 'dashboard-login-locked' });
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    check(access.host(req));
    const method = req.method ?? '';
    const { url, parts } = parseTarget(req.url ?? '/');
    const route = url.pathname;
    if (access.needsLogin && req.headers.authorization !== undefined) {
      // A bearer token is a guess like the login form's: limited the same way.
      const client = await notLocked(req);
      if (access.wrongBearer(req)) {
        signInFailed(client, 'bearer token');
        throw new BadRequest(401, 'wrong bearer token');
      }
    }

    if (route === '/app.js' || route === '/app.css') {
      allow(method, 'GET', 'HEAD');
      return serveFile(res, route);
    }
    if (route === '/login') {
      if (!access.needsLogin) return send(res, 303, '', 'text/plain', { location: '/' });
      if (method === 'GET' || method === 'HEAD') return serveFile(res, '/login');
      allow(method, 'GET', 'POST');
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== `http://${req.headers.host ?? ''}`) throw new BadRequest(403, 'cross-origin login refused');
      const client = await notLocked(req);
      const form = await readForm(req);
      const cookie = access.login(form.get('token') ?? '');
      if (!cookie) {
        signInFailed(client, 'login form');
        return send(res, 303, '', 'text/plain', { location: '/login?failed=1' });
      }
      limiter.succeeded(client);
      return send(res, 303, '', 'text/plain', { location: '/', 'set-cookie': cookie });
    }
    if (route === '/') {
      allow(method, 'GET', 'HEAD');
      if (!access.authenticated(req)) return send(res, 303, '', 'text/plain', { location: '/login' });
      return serveFile(res, '/');
    }
    if (parts[0] !== 'api') throw new BadRequest(404, 'not found');
    // Everything below needs the request to carry no body except where read on purpose.
    if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) {
      throw new BadRequest(413, 'request bodies are not accepted', { connection: 'close' });
    }
    if (!access.authenticated(req)) throw new BadRequest(401, 'sign in first (bearer token or the login form at /login)');

    if (parts.length === 2 && parts[1] === 'session') {
      allow(method, 'GET');
      const priv = await access.privileged(req);
      return sendJson(res, 200, { csrf: access.csrf, privileged: priv.ok, why: priv.ok ? null : priv.message, login: access.needsLogin });
    }
    if (parts.length === 2 && parts[1] === 'logout') {
      allow(method, 'POST');
      check(access.sameOrigin(req));
      return sendJson(res, 200, { ok: true }, { 'set-cookie': 'emperor_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0' });
    }
    if (parts.length === 2 && parts[1] === 'status') {
      allow(method, 'GET');
      return sendJson(res, 200, { ...emperor.status(), facts: emperorFacts(emperor), fleetWorld: emperor.fleetWorld() ?? null });
    }
    if (parts.length === 2 && parts[1] === 'events') {
      allow(method, 'GET');
      hub.add(res, SECURITY_HEADERS);
      return;
    }
    if (parts[1] === 'vassals' && parts[2] !== undefined) {
      const name = vassalName(parts[2]);
      if (parts.length === 3) {
        allow(method, 'GET');
        check(await access.privileged(req));
        const d = emperor.vassalDetail(name);
        return sendJson(res, 200, { ...d, spec: d.spec ? redactSpec(d.spec) : null });
      }
      if (parts.length === 4 && parts[3] === 'log') {
        allow(method, 'GET');
        check(await access.privileged(req));
        return streamLog(name, url, res);
      }
      if (parts.length === 4 && ACTIONS.has(parts[3]!)) {
        allow(method, 'POST');
        check(access.sameOrigin(req));
        check(await access.privileged(req));
        logger.info(`${parts[3]} requested from the dashboard (${req.socket.remoteAddress ?? '?'})`, { vassal: name, event: 'dashboard-action' });
        const answer = await emperor.control(name, parts[3] as Action);
        return sendJson(res, 200, answer.status, { 'x-emperor-seq': String(answer.seq) });
      }
    }
    throw new BadRequest(404, 'not found');
  }

  /** The live log tail: the last lines, then new ones, as server-sent events. */
  async function streamLog(name: string, url: URL, res: http.ServerResponse): Promise<void> {
    const parsed = parseLogRequest(new URLSearchParams({ name, lines: url.searchParams.get('lines') ?? '100', follow: '1' }));
    if (typeof parsed === 'string') throw new BadRequest(400, parsed);
    let skipped = 0;
    const session = new LogSession(emperor, parsed, (_vassal, line) => {
      if (res.writableLength > MAX_QUEUED_BYTES) {
        skipped++;
        return;
      }
      if (skipped > 0) res.write(`event: skipped\ndata: ${skipped}\n\n`);
      skipped = 0;
      res.write(`data: ${JSON.stringify(line)}\n\n`);
    });
    logReaders.add(session);
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    res.write('retry: 2000\n\n');
    res.on('close', () => {
      session.close();
      logReaders.delete(session);
    });
    await session.start();
  }

  const server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof BadRequest) return sendJson(res, err.status, { error: err.message }, err.headers);
      if (err instanceof ControlError) return sendJson(res, err.status, { error: err.message }, err.seq === undefined ? {} : { 'x-emperor-seq': String(err.seq) });
      logger.error(`dashboard error: ${String(err)}`, { event: 'dashboard-error' });
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10000;
  server.maxHeadersCount = 50;
  server.on(
    'clientError',
    clientErrorHandler((status) => ({ type: 'application/json', text: JSON.stringify({ error: `malformed HTTP request (${status})` }) })),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', keepListening('dashboard', (m) => logger.warn(m, { event: 'dashboard-error' })));
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${host}:${opts.port}/`,
    close: async () => {
      hub.close();
      for (const s of logReaders) s.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
