// Reading a vassal's output back: the last lines of its log file, then (following) every line as
// the emperor writes it. Following listens to the LogFile itself rather than re-reading the file,
// so a rotation or a reopen (logrotate) is invisible to a follower and nothing is polled.
import fs from 'node:fs';
import { LineSplitter } from '../process/lines.js';
import type { LogFile } from './logfile.js';

/** Most bytes read back from a log for one tail (a file of huge lines must not fill memory). */
const MAX_TAIL_BYTES = 4 * 1024 * 1024;
const BLOCK = 64 * 1024;

const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

/** Where a read of the log stopped: the file (inode) and how far into it. */
interface Cut {
  readonly ino: number;
  readonly size: number;
}

const readAt = (fd: number, buf: Buffer, pos: number): Promise<number> =>
  new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, pos, (err, n) => (err ? reject(err) : resolve(n))));

/** An open log file: one segment of the stream read back (the current file, NAME.log.1, …). */
interface Segment {
  readonly fd: number;
  readonly ino: number;
  readonly size: number;
}

const openSegment = async (file: string): Promise<Segment | undefined> => {
  let fd: number;
  try {
    // Never follow a link nor block on a FIFO planted where the log should be.
    fd = await new Promise<number>((resolve, reject) => fs.open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, (err, f) => (err ? reject(err) : resolve(f))));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENXIO') return undefined;
    throw err;
  }
  const st = await new Promise<fs.Stats>((resolve, reject) => fs.fstat(fd, (err, s) => (err ? reject(err) : resolve(s)))).catch((err: unknown) => {
    fs.close(fd, () => undefined);
    throw err;
  });
  if (!st.isFile()) {
    fs.close(fd, () => undefined);
    return undefined;
  }
  return { fd, ino: st.ino, size: st.size };
};

/** Rotated files looked at, at most (NAME.log.1 … NAME.log.MAX_ROTATED): logs.keep is far below. */
const MAX_ROTATED = 1000;

/**
 * The bytes holding the last `lines` lines of `file` (from a line start; a last line still
 * without its newline included), and where the read stopped. When the file holds fewer lines,
 * the read goes on back into the rotated files (`file.1`, then `file.2`, …), which are, in that
 * order, the stream's earlier parts. A missing file is empty.
 */
export async function readTail(file: string, lines: number): Promise<{ bytes: Buffer; cut: Cut }> {
  const current = await openSegment(file);
  if (!current) return { bytes: Buffer.alloc(0), cut: { ino: 0, size: 0 } };
  const opened: Segment[] = [current];
  const cut = { ino: current.ino, size: current.size };
  try {
    if (lines <= 0) return { bytes: Buffer.alloc(0), cut };
    /** Blocks read so far, oldest first: the stream's tail. */
    const blocks: Buffer[] = [];
    const seen = new Set([current.ino]);
    let seg: Segment = current;
    let next = 1;
    let pos = current.size;
    let have = 0;
    let newlines = 0;
    // The stream's last byte ends the last line: it is not a boundary before one.
    let last = true;
    for (;;) {
      if (have >= MAX_TAIL_BYTES) {
        // Cut short: start at the first whole line.
        const all = Buffer.concat(blocks);
        const nl = all.indexOf(0x0a);
        return { bytes: nl < 0 ? Buffer.alloc(0) : all.subarray(nl + 1), cut };
      }
      if (pos === 0) {
        // This file's start: the previous rotated one holds what came before. A rotation
        // meanwhile shifts the names by one: a file already read shows up again, and is skipped.
        let older: Segment | undefined;
        while (next <= MAX_ROTATED) {
          older = await openSegment(`${file}.${next++}`);
          if (!older) break;
          opened.push(older);
          if (!seen.has(older.ino)) break;
          older = undefined;
        }
        if (!older) return { bytes: Buffer.concat(blocks), cut };
        seen.add(older.ino);
        seg = older;
        pos = older.size;
        continue;
      }
      const len = Math.min(BLOCK, pos);
      pos -= len;
      const buf = Buffer.alloc(len);
      const n = await readAt(seg.fd, buf, pos);
      const block = buf.subarray(0, n);
      blocks.unshift(block);
      have += n;
      for (let i = block.length - 1; i >= 0; i--) {
        const lastByte = last;
        last = false;
        if (block[i] !== 0x0a || lastByte) continue;
        if (++newlines === lines) {
          const all = Buffer.concat(blocks);
          return { bytes: all.subarray(i + 1), cut };
        }
      }
    }
  } finally {
    for (const s of opened) fs.close(s.fd, () => undefined);
  }
}

/**
 * One vassal's lines: the last `lines` of its log, then (with `follow`) each new line as it is
 * written, until close(). Lines are split as the capture splits them (at most MAX_LINE chars).
 */
export class LogFollower {
  private readonly splitter: LineSplitter;
  private buffered: Array<[Buffer, number, number]> | undefined;
  private cut: Cut | undefined;
  private closed = false;
  private readonly onWritten = (bytes: Buffer, ino: number, end: number): void => {
    if (this.buffered) this.buffered.push([bytes, ino, end]);
    else this.live(bytes, ino, end);
  };

  constructor(
    private readonly log: LogFile,
    sink: (line: string) => void,
  ) {
    this.splitter = new LineSplitter(sink);
  }

  /** Sends the last `lines` lines; resolves once they are sent (following goes on after). */
  async start(lines: number, follow: boolean): Promise<void> {
    if (follow) {
      // Listen before reading, so nothing written meanwhile is missed; what the read already
      // saw is recognised by its place in the file and skipped.
      this.buffered = [];
      this.log.on('written', this.onWritten);
    }
    const { bytes, cut } = await readTail(this.log.file, lines);
    if (this.closed) return;
    this.splitter.push(bytes);
    if (!follow) {
      this.splitter.end();
      return;
    }
    this.cut = cut;
    const pending = this.buffered ?? [];
    this.buffered = undefined;
    for (const [b, ino, end] of pending) this.live(b, ino, end);
  }

  close(): void {
    this.closed = true;
    this.log.off('written', this.onWritten);
  }

  private live(bytes: Buffer, ino: number, end: number): void {
    let b = bytes;
    const cut = this.cut;
    if (cut && ino === cut.ino) {
      const start = end - b.length;
      if (end <= cut.size) return;
      if (start < cut.size) b = b.subarray(cut.size - start);
    } else if (cut) {
      // Another file (rotated): everything in it is new.
      this.cut = undefined;
    }
    this.splitter.push(b);
  }
}
