import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { ControlError, type Action, type Emperor } from '../emperor/emperor.js';
import type { Logger } from '../log/logger.js';
import type { CheckStatus } from '../config/spec.js';

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

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The control API: HTTP on a unix socket that only the emperor's user can open (mode 0600 in a
 * 0700 state directory), so no token is needed and nothing listens on the network.
 */
export async function startControlServer(emperor: Emperor, socketPath: string, logger: Logger): Promise<ControlServer> {
  if (await socketAnswers(socketPath)) {
    throw new Error(`another emperor is already running with control socket ${socketPath}; stop it, or give this one its own --state-dir`);
  }
  await fs.rm(socketPath, { force: true });

  const server = http.createServer((req, res) => {
    handle(emperor, req, res).catch((err: unknown) => {
      logger.error(`control API error: ${String(err)}`, { event: 'api-error' });
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  // Slow or stuck clients must not pile up: bound how long a request may take to arrive.
  server.headersTimeout = 5000;
  server.requestTimeout = 10000;
  server.maxHeadersCount = 50;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await fs.chmod(socketPath, 0o600);
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

async function handle(emperor: Emperor, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  // Requests carry no body; refuse one rather than buffer it.
  if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding']) {
    req.resume();
    return send(res, 413, { error: 'request bodies are not accepted' });
  }
  const url = new URL(req.url ?? '/', 'http://emperor');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] !== 'v1') return send(res, 404, { error: `no such endpoint: ${url.pathname}` });
    if (parts.length === 2 && parts[1] === 'status') {
      if (req.method !== 'GET') return send(res, 405, { error: 'use GET' });
      return send(res, 200, emperor.status());
    }
    if (parts.length === 2 && parts[1] === 'reload') {
      if (req.method !== 'POST') return send(res, 405, { error: 'use POST' });
      await emperor.reloadAll();
      return send(res, 200, emperor.status());
    }
    if (parts[1] === 'vassals' && parts.length === 3 && parts[2]) {
      if (req.method !== 'GET') return send(res, 405, { error: 'use GET' });
      return send(res, 200, emperor.vassalStatus(parts[2]));
    }
    // POST /v1/vassals/NAME/check/{pass,warn,fail}?check=CHECK&note=TEXT — a ttl check report.
    if (parts[1] === 'vassals' && parts.length === 5 && parts[2] && parts[3] === 'check' && parts[4]) {
      if (req.method !== 'POST') return send(res, 405, { error: 'use POST' });
      const status = TTL_VERBS[parts[4]];
      if (!status) return send(res, 404, { error: `unknown check result "${parts[4]}" (expected pass, warn or fail)` });
      const note = url.searchParams.get('note') ?? undefined;
      if (note !== undefined && note.length > 4096) return send(res, 400, { error: 'note: at most 4096 characters' });
      return send(res, 200, emperor.pushCheck(parts[2], url.searchParams.get('check') ?? undefined, status, note));
    }
    if (parts[1] === 'vassals' && parts.length === 4 && parts[2] && parts[3]) {
      if (req.method !== 'POST') return send(res, 405, { error: 'use POST' });
      if (!ACTIONS.has(parts[3])) return send(res, 404, { error: `unknown action "${parts[3]}" (expected start, stop, restart or reload)` });
      return send(res, 200, await emperor.control(parts[2], parts[3] as Action));
    }
    return send(res, 404, { error: `no such endpoint: ${url.pathname}` });
  } catch (err) {
    if (err instanceof ControlError) return send(res, err.status, { error: err.message });
    throw err;
  }
}
