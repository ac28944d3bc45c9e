import fs from 'node:fs/promises';
import http from 'node:http';
import { clientErrorHandler, keepListening, lingeringClose } from './hardening.js';
import { checkSocketPath } from './socket-path.js';
import net from 'node:net';
import { ControlError, type Action, type Emperor } from '../emperor/emperor.js';
import type { Logger } from '../log/logger.js';
import type { CheckStatus } from '../config/spec.js';
import { LogSession, MAX_QUEUED_BYTES, parseLogRequest } from './log-session.js';
import { BadRequest, allow, parseTarget, shown, vassalName } from './request.js';

const ACTIONS: ReadonlySet<string> = new Set<Action>(['start', 'stop', 'restart', 'reload']);
const TTL_VERBS: Readonly<Record<string, CheckStatus>> = { pass: 'passing', warn: 'warning', fail: 'critical' };

export interface ControlServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Is something answering on this socket? Distinguishes a live emperor from a stale file. */
function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  sendText(res, status, JSON.stringify(body), headers);
}

function sendText(res: http.ServerResponse, status: number, text: string, headers: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const TTL_CHECK_NAME_MAX = 256;

// Node's parser errors are answered in JSON like every other error of this API.
const clientError = clientErrorHandler((status, _reason, code) => ({
  type: 'application/json',
  text: JSON.stringify({
    error: status === 431 ? 'request headers too large' : status === 408 ? 'request not received in time' : `malformed HTTP request (${code ?? 'parse error'})`,
  }),
}));

/**
 * The control API: HTTP on a unix socket that only the emperor's user can open (mode 0600 in a
 * 0700 state directory), so no token is needed and nothing listens on the network.
 */
export async function startControlServer(emperor: Emperor, socketPath: string, logger: Logger): Promise<ControlServer> {
  checkSocketPath(socketPath);
  if (await socketAnswers(socketPath)) {
    throw new Error(`another emperor is already running with control socket ${socketPath}; stop it, or give this one its own --state-dir`);
  }
  await fs.rm(socketPath, { force: true });

  // Slow or stuck clients must not pile up: bound how long a request may take to arrive, and
  // check those bounds every second (Node's default is every 30 s).
  // No Host header needed: this is a unix socket, and Host names nothing here.
  const server = http.createServer({ connectionsCheckingInterval: 1000, requireHostHeader: false }, (req, res) => {
    handle(emperor, req, res).catch((err: unknown) => {
      if (err instanceof BadRequest) {
        send(res, err.status, { error: err.message }, err.headers);
        return;
      }
      logger.error(`control API error: ${String(err)}`, { event: 'api-error' });
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10000;
  server.maxHeadersCount = 50;
  server.on('clientError', clientError);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A deep accept queue: a burst of scripts connecting at once (hundreds) waits its turn
    // instead of failing with EAGAIN (the kernel caps it at net.core.somaxconn).
    server.listen({ path: socketPath, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await fs.chmod(socketPath, 0o600);
  server.on('error', keepListening('control socket', (m) => logger.warn(m, { event: 'api-error' })));
  return {
    socketPath,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await fs.rm(socketPath, { force: true });
    },
  };
}


/**
 * The full status, serialized once per turn of the event loop: a burst of status requests (a
 * dashboard, monitoring, 500 scripts at once) arrives in the same turn and shares one snapshot,
 * instead of each building and serializing every vassal again. Never older than that turn.
 */
const statusCache = new WeakMap<Emperor, string>();
function statusText(emperor: Emperor): string {
  let text = statusCache.get(emperor);
  if (text === undefined) {
    text = JSON.stringify(emperor.status());
    statusCache.set(emperor, text);
    setImmediate(() => statusCache.delete(emperor));
  }
  return text;
}

/** NDJSON lines of vassal output; a reader that falls behind is told how many lines it lost. */
async function streamLogs(emperor: Emperor, url: URL, res: http.ServerResponse): Promise<void> {
  const req = parseLogRequest(url.searchParams);
  if (typeof req === 'string') throw new BadRequest(400, req);
  for (const name of req.names) vassalName(name);
  let skipped = 0;
  const session = new LogSession(emperor, req, (vassal, line) => {
    if (res.writableLength > MAX_QUEUED_BYTES) {
      skipped++;
      return;
    }
    if (skipped > 0) res.write(JSON.stringify({ skipped }) + '\n');
    skipped = 0;
    res.write(JSON.stringify({ vassal, line }) + '\n');
  });
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  res.on('close', () => session.close());
  await session.start();
  if (!req.follow) {
    session.close();
    res.end();
  }
}

async function handle(emperor: Emperor, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  // Requests carry no body (JSON or otherwise): refuse one rather than read it, and close the
  // connection once answered so the rest of a large body is never read.
  if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) {
    // Node closes a "Connection: close" response's socket once it is written: make that a
    // lingering close, so a client still sending its body gets to read the 413.
    const socket = req.socket;
    socket.destroySoon = () => lingeringClose(socket);
    return send(res, 413, { error: 'request bodies are not accepted: every request is a bare GET or POST, parameters go in the URL' }, { connection: 'close' });
  }
  const { url, parts } = parseTarget(req.url ?? '/');
  const method = req.method ?? '';
  const notFound = (): void => send(res, 404, { error: `no such endpoint: ${shown(url.pathname)}` });
  try {
    if (parts[0] !== 'v1') return notFound();
    if (parts.length === 2 && parts[1] === 'status') {
      allow(method, 'GET');
      return sendText(res, 200, statusText(emperor));
    }
    // GET /v1/logs?name=A&name=B&lines=N&follow=1 — one JSON object per line: {"vassal","line"}.
    if (parts.length === 2 && parts[1] === 'logs') {
      allow(method, 'GET');
      await streamLogs(emperor, url, res);
      return;
    }
    if (parts.length === 2 && parts[1] === 'reopen-logs') {
      allow(method, 'POST');
      return send(res, 200, { reopened: emperor.reopenLogs() });
    }
    if (parts.length === 2 && parts[1] === 'reload') {
      allow(method, 'POST');
      await emperor.reloadAll();
      return send(res, 200, emperor.status());
    }
    if (parts[1] === 'vassals' && parts.length === 3 && parts[2]) {
      allow(method, 'GET');
      return send(res, 200, emperor.vassalStatus(vassalName(parts[2])));
    }
    // POST /v1/vassals/NAME/check/{pass,warn,fail}?check=CHECK&note=TEXT — a ttl check report.
    if (parts[1] === 'vassals' && parts.length === 5 && parts[2] && parts[3] === 'check' && parts[4]) {
      allow(method, 'POST');
      const status = TTL_VERBS[parts[4]];
      if (!status) return send(res, 404, { error: `unknown check result "${shown(parts[4])}" (expected pass, warn or fail)` });
      const note = url.searchParams.get('note') ?? undefined;
      if (note !== undefined && note.length > 4096) return send(res, 400, { error: 'note: at most 4096 characters' });
      const check = url.searchParams.get('check') ?? undefined;
      if (check !== undefined && check.length > TTL_CHECK_NAME_MAX) return send(res, 400, { error: `check: at most ${TTL_CHECK_NAME_MAX} characters` });
      return send(res, 200, emperor.pushCheck(vassalName(parts[2]), check, status, note));
    }
    if (parts[1] === 'vassals' && parts.length === 4 && parts[2] && parts[3]) {
      allow(method, 'POST');
      if (!ACTIONS.has(parts[3])) return send(res, 404, { error: `unknown action "${shown(parts[3])}" (expected start, stop, restart or reload)` });
      // X-Emperor-Seq: the order this request was taken in, among all control requests.
      const answer = await emperor.control(vassalName(parts[2]), parts[3] as Action);
      return send(res, 200, answer.status, { 'x-emperor-seq': String(answer.seq) });
    }
    return notFound();
  } catch (err) {
    if (err instanceof ControlError) return send(res, err.status, { error: err.message }, err.seq === undefined ? {} : { 'x-emperor-seq': String(err.seq) });
    throw err;
  }
}
