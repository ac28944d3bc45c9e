import { probeBudget } from '../checks/budget.js';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { startControlServer } from '../api/server.js';
import { Emperor } from '../emperor/emperor.js';
import { createLogger, type LogFormat, type Logger } from '../log/logger.js';
import { DEFAULT_REGISTRAR_OPTIONS, Registrar, type RegistrarLog } from '../registrar/registrar.js';
import type { RegistryAdapter } from '../registrar/types.js';
import type { EtcdConfig } from '../registries/etcd/options.js';
import type { ConsulConfig } from '../registries/consul/options.js';
import { claimStateDir } from '../state/state-dir.js';
import { lockVassalsDir, type VassalsDirLock } from '../state/vassals-lock.js';
import { usualTiering } from './tiering.js';
import type { MetricsServer } from '../metrics/metrics.js';
import type { FleetNode } from '../fleet/node.js';
import type { DashboardOptions } from '../dashboard/options.js';
import type { DashboardServer } from '../dashboard/server.js';

export interface RunOptions {
  vassals: string;
  stateDir: string;
  logsDir: string;
  logFormat: LogFormat;
  logLevel: string;
  mirrorOutput: boolean;
  /** Mirrored lines per second per vassal. */
  mirrorRate: number;
  settleMs: number;
  rescanMs: number;
  useEvents: boolean;
  /** Where to serve /metrics; undefined = off. */
  metrics: { host: string; port: number } | undefined;
  /** The live dashboard (--http); undefined = off, and its code is never loaded. */
  dashboard: DashboardOptions | undefined;
  etcd: EtcdConfig | undefined;
  consul: ConsulConfig | undefined;
  antiEntropyMs: number;
  deregisterTimeoutMs: number;
  /** Most probes running at once over all vassals (the probe budget). */
  checkConcurrency: number;
  tyrant: boolean;
  tyrantAllowRoot: boolean;
  /** false: process groups only (--no-cgroups). */
  cgroups: boolean;
  /** Runs .ini vassals (--uwsgi-bin). */
  uwsgiBin?: string;
  /** Fleet mode (--fleet): this node's name and --fleet-allow-root; undefined = not a fleet node. */
  fleet?: { node: string; allowRoot: boolean } | undefined;
}

/**
 * Marks this emperor's Consul services, stable across restarts of the same emperor (host +
 * state directory), so a restarted emperor takes over and cleans up its own leftovers.
 */
function emperorId(stateDir: string): string {
  return `${os.hostname()}-${createHash('sha256').update(stateDir).digest('hex').slice(0, 12)}`;
}

/** One registry adapter per configured registry; none is a valid, first-class setup. */
async function createRegistrar(o: RunOptions, logger: Logger, stateDir: string): Promise<{ registrar: Registrar; consulAddress: string | undefined }> {
  const log: RegistrarLog = (level, message, fields) => logger.log(level, message, fields ?? {});
  const adapters: RegistryAdapter[] = [];
  if (o.etcd) {
    // Loaded only when configured: etcd's client (gRPC, protobuf) is a third of an idle emperor's memory.
    const { EtcdAdapter } = await import('../registries/etcd/adapter.js');
    adapters.push(await EtcdAdapter.connect(o.etcd, log));
    logger.info(`registering ready vassals in ${o.etcd.description}`, { event: 'registry', registry: 'etcd' });
  }
  // Always there, since a vassal file may name its own Consul agent (consul-agent) without
  // --consul-agent; it talks to nothing until a registration needs an agent.
  const { ConsulAdapter } = await import('../registries/consul/adapter.js');
  const { ConsulRouter } = await import('../registries/consul/router.js');
  const id = emperorId(stateDir);
  const consul = new ConsulRouter(o.consul, (cfg) => {
    const adapter = ConsulAdapter.create(cfg, { emperorId: id, log });
    if (cfg !== o.consul) logger.info(`registering vassals that name this agent in ${adapter.description}`, { event: 'registry', registry: 'consul' });
    return adapter;
  });
  const consulAddress = consul.agentAddress;
  adapters.push(consul);
  if (o.consul) logger.info(`registering ready vassals in ${consul.description}`, { event: 'registry', registry: 'consul' });
  const registrar = new Registrar(adapters, log, { ...DEFAULT_REGISTRAR_OPTIONS, antiEntropyMs: o.antiEntropyMs, deregisterBoundMs: o.deregisterTimeoutMs });
  return { registrar, consulAddress };
}

/** A vassal quiet for this long may then mirror this many seconds' worth of lines at once. */
const MIRROR_BURST_SECONDS = 5;

/** The vassals directory's lock; a missing directory gets the same message Emperor.start gives. */
function lockVassals(vassalsDir: string): VassalsDirLock {
  try {
    return lockVassalsDir(vassalsDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new Error(`vassals directory ${vassalsDir} does not exist or is not a directory (--vassals / EMPEROR_VASSALS)`);
    throw err;
  }
}

/** `emperor run`: supervise a vassals directory until SIGTERM/SIGINT. */
export async function runEmperor(o: RunOptions): Promise<void> {
  const logger = createLogger({ format: o.logFormat, level: o.logLevel, colors: process.stdout.isTTY });
  const isRoot = process.getuid?.() === 0;
  if (o.tyrant && !isRoot) throw new Error('--tyrant needs the emperor to run as root (it runs each vassal as the owner of its file)');
  if (o.tyrantAllowRoot && !o.tyrant) throw new Error('--tyrant-allow-root only makes sense with --tyrant');
  if (o.fleet && !o.etcd) throw new Error('--fleet needs etcd: add --etcd-endpoint HOST:PORT and --tree-root PATH (or set EMPEROR_ETCD_ENDPOINT and EMPEROR_TREE_ROOT)');
  const vassalsDir = path.resolve(o.vassals);
  // Checked (owner, mode, parents) and locked for the emperor's whole life before anything in it
  // is used: the control socket inside is the emperor's whole authority.
  const state = await claimStateDir(o.stateDir);
  const stateDir = state.dir;
  const vassalsLock = lockVassals(vassalsDir);
  if (vassalsLock.warning) logger.warn(vassalsLock.warning, { event: 'vassals-dir-locked' });

  probeBudget.setLimit(o.checkConcurrency);
  // Consul IDs hash the directory as given, so they stay what they were before it was resolved.
  const { registrar, consulAddress } = await createRegistrar(o, logger, path.resolve(o.stateDir));
  const emperor = new Emperor({
    registrar,
    consulAddress,
    identity: { isRoot, tyrant: o.tyrant, tyrantAllowRoot: o.tyrantAllowRoot },
    vassalsDir,
    stateDir,
    logsDir: path.resolve(o.logsDir),
    logger,
    mirrorOutput: o.mirrorOutput,
    mirrorLimit: { linesPerSec: o.mirrorRate, burst: o.mirrorRate * MIRROR_BURST_SECONDS },
    settleMs: o.settleMs,
    invalidGraceMs: Math.max(300, o.settleMs * 5),
    rescanMs: o.rescanMs,
    useEvents: o.useEvents,
    containment: o.cgroups ? 'auto' : 'process-group',
    ...(o.uwsgiBin ? { uwsgiBin: o.uwsgiBin } : {}),
    ...(o.fleet ? { fleet: o.fleet } : {}),
  });
  // Loaded only in fleet mode, as the etcd client itself is (an idle emperor stays light).
  let fleet: FleetNode | undefined;
  if (o.fleet && o.etcd) {
    const [{ FleetNode }, { createEtcdClient }] = await Promise.all([import('../fleet/node.js'), import('../registries/etcd/client.js')]);
    fleet = new FleetNode(emperor.fleetHost(), { node: o.fleet.node, etcd: o.etcd, client: createEtcdClient(o.etcd), leaseClient: createEtcdClient(o.etcd) });
    emperor.useFleet(fleet);
  }
  const server = await startControlServer(emperor, state.socketPath, logger);
  let metrics: MetricsServer | undefined;
  if (o.metrics) {
    try {
      // prom-client only with --metrics.
      const { createMetricsRegistry, startMetricsServer } = await import('../metrics/metrics.js');
      metrics = await startMetricsServer(createMetricsRegistry(() => emperor.status()), o.metrics, (m) => logger.warn(m, { event: 'metrics-error' }));
    } catch (err) {
      await server.close();
      throw new Error(`--metrics: cannot listen on ${o.metrics.host}:${o.metrics.port}: ${(err as Error).message}`);
    }
    logger.info(`metrics at ${metrics.url}`, { event: 'metrics', url: metrics.url });
  }
  let dashboard: DashboardServer | undefined;
  if (o.dashboard) {
    const d = o.dashboard;
    try {
      // Loaded only when asked for: an emperor without --http carries none of it.
      const { startDashboard } = await import('../dashboard/server.js');
      dashboard = await startDashboard(emperor, d, logger);
    } catch (err) {
      await server.close();
      await metrics?.close();
      throw new Error(`--http: cannot listen on ${d.host}:${d.port}: ${(err as Error).message}`);
    }
    logger.info(`dashboard at ${dashboard.url}${d.token ? ' (token required)' : ''}`, { event: 'dashboard', url: dashboard.url });
  }

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      logger.warn(`already shutting down (${signal} ignored; SIGKILL forces, vassals die with the emperor)`, { event: 'shutdown' });
      return;
    }
    stopping = true;
    logger.info(`${signal}: stopping all vassals`, { event: 'shutdown' });
    void emperor
      .shutdown()
      .then(() => Promise.all([server.close(), metrics?.close(), dashboard?.close()]))
      .then(() => {
        logger.info('emperor stopped', { event: 'exit' });
        // Every line out before leaving.
        void logger.flush().then(() => process.exit(0));
        setTimeout(() => process.exit(0), 500).unref();
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    if (!stopping) void emperor.reloadAll();
  });
  // For an external logrotate's postrotate (or `emperor reopen-logs`).
  process.on('SIGUSR1', () => {
    if (!stopping) emperor.reopenLogs();
  });
  process.on('unhandledRejection', (err) => {
    logger.error(`unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, { event: 'bug' });
  });

  try {
    await emperor.start();
    if (fleet) {
      await fleet.start();
      logger.info(`fleet node ${fleet.node}: taking fleet vassals from ${o.etcd?.description ?? 'etcd'}`, { event: 'fleet', node: fleet.node });
    }
  } catch (err) {
    await server.close();
    await metrics?.close();
    await dashboard?.close();
    await emperor.shutdown();
    throw err;
  }
  // Start-up is over: V8 optimizes at its usual pace again (bin/emperor slowed it; tiering.ts).
  usualTiering();
  logger.info(`emperor ${process.pid} ready; control socket ${server.socketPath}`, { event: 'started', pid: process.pid, socket: server.socketPath });
}
