import http from 'node:http';
import { clientErrorHandler, keepListening, lingeringClose } from '../api/hardening.js';
import client from 'prom-client';
import type { EmperorStatus } from '../emperor/emperor.js';

export { parseListen } from './listen.js';

const STATES = ['invalid', 'stopped', 'starting', 'running', 'backoff', 'stopping', 'exited', 'fatal'] as const;
const STATUSES = ['passing', 'warning', 'critical'] as const;

/**
 * Metrics are computed from a status snapshot at scrape time (collect callbacks), so nothing is
 * updated on the hot path and a vassal that disappears disappears from the output too.
 */
export function createMetricsRegistry(status: () => EmperorStatus): client.Registry {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  // prom-client names these gauges *_total, which Prometheus reserves for counters (promtool
  // flags them); the same figures are in nodejs_active_*_total's siblings and process_*.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  let snap: EmperorStatus | undefined;
  // One snapshot per scrape, shared by every metric's collect.
  const current = (): EmperorStatus => (snap ??= status());
  const registers = [registry];

  new client.Gauge({
    name: 'emperor_vassal_state',
    help: 'Current state of each vassal (1 for the state it is in, 0 for the others)',
    labelNames: ['vassal', 'state'],
    registers,
    collect() {
      snap = undefined;
      this.reset();
      for (const v of current().vassals) for (const s of STATES) this.set({ vassal: v.name, state: s }, v.state === s ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'emperor_vassal_up',
    help: '1 while the vassal is running (ready), else 0',
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) this.set({ vassal: v.name }, v.state === 'running' ? 1 : 0);
    },
  });
  new client.Counter({
    name: 'emperor_vassal_restarts_total',
    help: 'Times the vassal was started again (automatic and manual) since it was deployed',
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) this.inc({ vassal: v.name }, v.restarts);
    },
  });
  new client.Counter({
    name: 'emperor_vassal_oom_kills_total',
    help: "Runs of the vassal ended by the kernel's OOM killer (limits.memory) since it was deployed",
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) this.inc({ vassal: v.name }, v.oomKills);
    },
  });
  new client.Gauge({
    name: 'emperor_vassal_last_exit_oom_killed',
    help: '1 when the last exit of the vassal was an OOM kill, else 0',
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) this.set({ vassal: v.name }, v.lastExit?.oomKilled ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'emperor_vassal_last_exit_code',
    help: 'Exit code of the last exit of the vassal (absent until it exited with a code)',
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) if (v.lastExit?.code != null) this.set({ vassal: v.name }, v.lastExit.code);
    },
  });
  new client.Gauge({
    name: 'emperor_vassal_ready_seconds',
    help: 'Seconds from spawn to ready for the current process',
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) if (v.readyAfterMs !== null) this.set({ vassal: v.name }, v.readyAfterMs / 1000);
    },
  });
  new client.Gauge({
    name: 'emperor_vassal_health',
    help: 'Aggregate health of a running vassal (1 for its status, 0 for the others)',
    labelNames: ['vassal', 'status'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) {
        if (v.health === null) continue;
        for (const s of STATUSES) this.set({ vassal: v.name, status: s }, v.health === s ? 1 : 0);
      }
    },
  });
  new client.Gauge({
    name: 'emperor_check_status',
    help: 'Status of each check of a running vassal (1 for its status, 0 for the others)',
    labelNames: ['vassal', 'check', 'status'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) {
        for (const c of v.checks) for (const s of STATUSES) this.set({ vassal: v.name, check: c.name, status: s }, c.status === s ? 1 : 0);
      }
    },
  });
  new client.Counter({
    name: 'emperor_vassal_output_dropped_bytes_total',
    help: 'Output bytes of the vassal that could not be written to its log file (disk full, file not openable)',
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) this.inc({ vassal: v.name }, v.output.droppedBytes);
    },
  });
  new client.Counter({
    name: 'emperor_vassal_mirror_suppressed_bytes_total',
    help: "Output bytes of the vassal not copied into the emperor's log because of the --mirror-rate limit (they are in its log file)",
    labelNames: ['vassal'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) this.inc({ vassal: v.name }, v.output.mirrorSuppressedBytes);
    },
  });
  new client.Gauge({
    name: 'emperor_check_start_lag_seconds',
    help: 'How late the latest run of each periodic check started (actual start minus due time: waiting for a probe slot, or a busy emperor)',
    labelNames: ['vassal', 'check'],
    registers,
    collect() {
      this.reset();
      for (const v of current().vassals) for (const c of v.checks) if (c.startLagMs !== null) this.set({ vassal: v.name, check: c.name }, c.startLagMs / 1000);
    },
  });
  new client.Gauge({
    name: 'emperor_probes_running',
    help: 'Health and readiness probes running now, over all vassals',
    registers,
    collect() {
      this.set(current().probes.running);
    },
  });
  new client.Gauge({
    name: 'emperor_probes_waiting',
    help: 'Probes that are due and wait for a slot of the probe budget',
    registers,
    collect() {
      this.set(current().probes.waiting);
    },
  });
  new client.Gauge({
    name: 'emperor_probe_slots',
    help: 'Probes allowed to run at once (--check-concurrency)',
    registers,
    collect() {
      this.set(current().probes.limit);
    },
  });
  new client.Counter({
    name: 'emperor_probe_runs_total',
    help: 'Periodic check runs started since the emperor started',
    registers,
    collect() {
      this.reset();
      this.inc(current().probes.runs);
    },
  });
  new client.Counter({
    name: 'emperor_probe_late_runs_total',
    help: 'Periodic check runs that started a whole interval (or more) after they were due',
    registers,
    collect() {
      this.reset();
      this.inc(current().probes.lateRuns);
    },
  });
  new client.Gauge({
    name: 'emperor_checks_behind',
    help: '1 while checks fall behind (a run started a whole interval late within the last 30 s), else 0',
    registers,
    collect() {
      this.set(current().probes.behind ? 1 : 0);
    },
  });
  return registry;
}

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

const clientError = clientErrorHandler((_status, reason) => ({ type: 'text/plain', text: `${reason.toLowerCase()}: try GET /metrics\n` }));

function answer(res: http.ServerResponse, status: number, text: string, headers: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { ...headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) }).end(text);
}

export async function startMetricsServer(
  registry: client.Registry,
  listen: { host: string; port: number },
  report: (message: string) => void = () => undefined,
): Promise<MetricsServer> {
  // Slow clients are cut off: bounds on how long a request may take, checked every second.
  const server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    // Scrapes have no body; one is refused unread, and the connection closed.
    if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) {
      const socket = req.socket;
      socket.destroySoon = () => lingeringClose(socket);
      answer(res, 413, 'request bodies are not accepted: try GET /metrics\n', { connection: 'close' });
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      answer(res, 404, 'not found: try GET /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      answer(res, 405, 'method not allowed: try GET /metrics\n', { allow: 'GET, HEAD' });
      return;
    }
    registry.metrics().then(
      (text) => {
        if (res.destroyed) return;
        res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => answer(res, 500, `metrics failed: ${String(err)}\n`),
    );
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10000;
  server.maxHeadersCount = 50;
  server.on('clientError', clientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', keepListening('metrics server', report));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : listen.port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  return {
    url: `http://${host}:${port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
