// A real winston logger whose entries land in an array, for unit tests that read log lines.
import { Writable } from 'node:stream';
import winston from 'winston';
import type { Logger } from '../../src/log/logger.js';

export interface MemoryEntry {
  readonly level: string;
  readonly message: string;
  readonly event?: string;
  readonly [k: string]: unknown;
}

export function memoryLogger(): { logger: Logger; entries: MemoryEntry[] } {
  const entries: MemoryEntry[] = [];
  const stream = new Writable({
    objectMode: true,
    write(info: MemoryEntry, _enc, done) {
      entries.push({ ...info });
      done();
    },
  });
  return { logger: winston.createLogger({ level: 'debug', transports: [new winston.transports.Stream({ stream })] }), entries };
}
