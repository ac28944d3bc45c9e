// A vassal's output, for the vassal's whole life (across restarts): its pipes go into its log
// file, and optionally, rate-limited, into the emperor's log. Owns the counters that status and
// metrics show (dropped bytes, mirror-suppressed bytes).
import type { Readable } from 'node:stream';
import type { Logger } from '../log/logger.js';
import type { OutputSink, StreamName } from '../process/types.js';
import { formatSize } from '../config/size.js';
import { LogFile, type LogOwner, type LogPolicy } from './logfile.js';
import { MirrorTap, type MirrorLimit } from './mirror.js';

export interface OutputStats {
  /** Output that could not be written to the log file (disk full, file not openable...). */
  readonly droppedBytes: number;
  /** Output not copied into the emperor's log because of the per-vassal mirror rate limit. */
  readonly mirrorSuppressedBytes: number;
}

export interface VassalOutputOptions {
  readonly name: string;
  readonly file: string;
  readonly policy: LogPolicy;
  readonly logger: Logger;
  /** Mirror lines into the emperor's log, at most this fast; undefined = no mirroring. */
  readonly mirror?: MirrorLimit | undefined;
}

export class VassalOutput implements OutputSink {
  readonly log: LogFile;
  private readonly mirror: MirrorTap | undefined;
  private attached = 0;
  private readonly paused = new Set<Readable>();

  constructor(private readonly opts: VassalOutputOptions) {
    const { name, logger } = opts;
    this.log = new LogFile(opts.file, opts.policy);
    this.log.on('dropping', (reason) =>
      logger.warn(`dropping output: ${reason}; dropped bytes are counted in status and metrics`, { vassal: name, event: 'output-dropped', reason }),
    );
    this.log.on('resumed', (bytes, reason) =>
      logger.warn(`writing output again; ${bytes} bytes (${formatSize(bytes)}) were dropped (${reason})`, {
        vassal: name,
        event: 'output-resumed',
        dropped_bytes: bytes,
      }),
    );
    this.log.on('drain', () => {
      for (const s of this.paused) s.resume();
      this.paused.clear();
    });
    const limit = opts.mirror;
    this.mirror = limit
      ? new MirrorTap(limit, {
          line: (line, stream) => logger.info(line, { vassal: name, event: 'output', stream }),
          suppressing: () =>
            logger.warn(`mirroring limited to ${limit.linesPerSec} lines/s for this vassal; the rest of its output is only in ${opts.file}`, {
              vassal: name,
              event: 'mirror-suppressed',
            }),
          resumed: (bytes) =>
            logger.info(`mirroring again; ${bytes} bytes of output were not mirrored (all of it is in ${opts.file})`, {
              vassal: name,
              event: 'mirror-resumed',
              suppressed_bytes: bytes,
            }),
        })
      : undefined;
  }

  /** Log settings of the spec about to run, and who owns the file. */
  configure(policy: LogPolicy, owner: LogOwner | undefined): void {
    this.log.configure(policy, owner);
  }

  stats(): OutputStats {
    return { droppedBytes: this.log.droppedBytes, mirrorSuppressedBytes: this.mirror?.suppressedBytes ?? 0 };
  }

  reopen(): void {
    this.log.reopen();
  }

  attach(streams: ReadonlyArray<readonly [Readable | undefined, StreamName]>): void {
    for (const [stream, name] of streams) {
      if (!stream) continue;
      this.attached++;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        this.paused.delete(stream);
        this.mirror?.end(name);
        if (--this.attached === 0) this.log.release();
      };
      stream.on('data', (chunk: Buffer) => {
        // Back-pressure: a log that cannot keep up pauses the pipe, so the app waits (as it
        // would writing to a slow disk itself) and the emperor's memory stays flat.
        if (!this.log.write(chunk)) {
          stream.pause();
          this.paused.add(stream);
        }
        this.mirror?.push(chunk, name);
      });
      stream.once('end', finish);
      stream.once('close', finish);
      stream.on('error', finish);
    }
  }
}
