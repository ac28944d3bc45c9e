// A logger whose entries land in an array, for unit tests that read log lines.
import { entryLogger, type Logger, type LogEntry } from '../../src/log/logger.js';

export type MemoryEntry = LogEntry & { readonly event?: string };

export function memoryLogger(): { logger: Logger; entries: MemoryEntry[] } {
  const entries: MemoryEntry[] = [];
  return { logger: entryLogger((entry) => entries.push(entry), 'debug'), entries };
}
