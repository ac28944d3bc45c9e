import fs from 'node:fs/promises';
import path from 'node:path';
import { startControlServer } from '../api/server.js';
import { Emperor } from '../emperor/emperor.js';
import { createLogger, type LogFormat } from '../log/logger.js';
import { socketPathIn } from './defaults.js';

export interface RunOptions {
  vassals: string;
  stateDir: string;
  logsDir: string;
  logFormat: LogFormat;
  logLevel: string;
  mirrorOutput: boolean;
  settleMs: number;
  rescanMs: number;
  useEvents: boolean;
}

/** `emperor run`: supervise a vassals directory until SIGTERM/SIGINT. */
export async function runEmperor(o: RunOptions): Promise<void> {
  const logger = createLogger({ format: o.logFormat, level: o.logLevel, colors: process.stdout.isTTY });
  const vassalsDir = path.resolve(o.vassals);
  const stateDir = path.resolve(o.stateDir);
  // 0700: the control socket inside is the emperor's whole authority.
  await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });

  const emperor = new Emperor({
    vassalsDir,
    stateDir,
    logsDir: path.resolve(o.logsDir),
    logger,
    mirrorOutput: o.mirrorOutput,
    settleMs: o.settleMs,
    invalidGraceMs: Math.max(300, o.settleMs * 5),
    rescanMs: o.rescanMs,
    useEvents: o.useEvents,
  });
  const server = await startControlServer(emperor, socketPathIn(stateDir), logger);

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
      .then(() => server.close())
      .then(() => {
        logger.info('emperor stopped', { event: 'exit' });
        // Let winston flush before leaving.
        logger.on('finish', () => process.exit(0));
        logger.end();
        setTimeout(() => process.exit(0), 500).unref();
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    if (!stopping) void emperor.reloadAll();
  });
  process.on('unhandledRejection', (err) => {
    logger.error(`unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, { event: 'bug' });
  });

  try {
    await emperor.start();
  } catch (err) {
    await server.close();
    await emperor.shutdown();
    throw err;
  }
  logger.info(`emperor ${process.pid} ready; control socket ${server.socketPath}`, { event: 'started', pid: process.pid, socket: server.socketPath });
}
