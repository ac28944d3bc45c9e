// --mirror-output: a vassal's lines copied into the emperor's own log, rate-limited per vassal
// so one noisy app cannot flood it (or spend the emperor's CPU on decoding its output). What
// the limit holds back is still in the vassal's log file; here it is only counted.
import { LineSplitter } from '../process/lines.js';
import type { StreamName } from '../process/types.js';

export interface MirrorLimit {
  /** Sustained lines per second per vassal. */
  readonly linesPerSec: number;
  /** Lines that may come at once after a quiet spell (startup banners, a stack trace). */
  readonly burst: number;
}

export const DEFAULT_MIRROR_LIMIT: MirrorLimit = { linesPerSec: 100, burst: 500 };

export interface MirrorEvents {
  line(line: string, stream: StreamName): void;
  /** The first line held back after a run of mirrored ones. */
  suppressing(): void;
  /**
   * A line is mirrored after a quiet spell long enough to refill the whole burst; `bytes` were
   * held back since suppressing(). (Ending an episode at every line that gets through would make
   * a steadily noisy app produce a report pair per token: the very flood this prevents.)
   */
  resumed(bytes: number): void;
}

export class MirrorTap {
  private tokens: number;
  private last = performance.now();
  private readonly splitters: Record<StreamName, LineSplitter>;
  /** Per stream: the held-back part ended inside a line, so skip to the next newline. */
  private readonly skipping: Record<StreamName, boolean> = { stdout: false, stderr: false };
  private episodeBytes: number | undefined;
  private lastSuppressAt = 0;
  /** Bytes not mirrored because of the limit, since this object was made. */
  suppressedBytes = 0;

  constructor(
    private readonly limit: MirrorLimit,
    private readonly on: MirrorEvents,
  ) {
    this.tokens = limit.burst;
    const emitter = (stream: StreamName) => (line: string) => {
      this.tokens -= 1;
      if (this.episodeBytes !== undefined && performance.now() - this.lastSuppressAt >= (this.limit.burst / this.limit.linesPerSec) * 1000) {
        const bytes = this.episodeBytes;
        this.episodeBytes = undefined;
        this.on.resumed(bytes);
      }
      this.on.line(line, stream);
    };
    this.splitters = { stdout: new LineSplitter(emitter('stdout')), stderr: new LineSplitter(emitter('stderr')) };
  }

  push(chunk: Buffer, stream: StreamName): void {
    let data = chunk;
    if (this.skipping[stream]) {
      const nl = data.indexOf(0x0a);
      if (nl < 0) return this.suppress(data.length);
      this.suppress(nl + 1);
      this.skipping[stream] = false;
      data = data.subarray(nl + 1);
    }
    this.refill();
    const allowed = Math.floor(this.tokens);
    if (allowed <= 0) {
      this.holdBack(data, stream);
      return;
    }
    // Only as many lines as there are tokens get decoded; the rest is counted, not looked at.
    let end = 0;
    for (let n = 0; n < allowed && end < data.length; n++) {
      const nl = data.indexOf(0x0a, end);
      if (nl < 0) {
        end = data.length;
        break;
      }
      end = nl + 1;
    }
    this.splitters[stream].push(end === data.length ? data : data.subarray(0, end));
    if (end < data.length) this.holdBack(data.subarray(end), stream);
  }

  /** The stream ended: a trailing line without newline is still a line. */
  end(stream: StreamName): void {
    if (this.skipping[stream]) this.skipping[stream] = false;
    else this.splitters[stream].end();
  }

  private holdBack(data: Buffer, stream: StreamName): void {
    this.splitters[stream].discard();
    this.skipping[stream] = data.length > 0 && data[data.length - 1] !== 0x0a;
    this.suppress(data.length);
  }

  private suppress(bytes: number): void {
    if (bytes <= 0) return;
    this.suppressedBytes += bytes;
    this.lastSuppressAt = performance.now();
    if (this.episodeBytes === undefined) {
      this.episodeBytes = 0;
      this.on.suppressing();
    }
    this.episodeBytes += bytes;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.limit.burst, this.tokens + ((now - this.last) / 1000) * this.limit.linesPerSec);
    this.last = now;
  }
}
