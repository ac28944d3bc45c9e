// One vassal's log file. The emperor writes every byte the vassal prints (instead of handing
// the child the file), because that is what makes the log bounded: it rotates at an exact size,
// and output it cannot write (disk full, file not openable) is counted and reported, not lost
// without a trace. Writes are serial, so a rotation can never interleave with a write.
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface LogPolicy {
  /** Rotate when the file would grow past this many bytes; 0 = never (external logrotate). */
  readonly maxBytes: number;
  /** Rotated files kept: NAME.log.1 (newest) … NAME.log.KEEP. */
  readonly keep: number;
}

/** Who owns the file (the vassal's user in tyrant mode or with user:); undefined = the emperor. */
export interface LogOwner {
  readonly uid: number;
  readonly gid: number;
}

/** Log files are never readable by other users: apps print secrets. */
export const LOG_FILE_MODE = 0o640;
export const LOG_DIR_MODE = 0o750;

/** Bytes queued before write() asks the producer to pause (back-pressure onto the app's pipe). */
export const HIGH_WATER = 1024 * 1024;
/** Largest single write (several pipe reads coalesced). */
const MAX_WRITE = 1024 * 1024;
/** While the file cannot be opened or rotated, try again this often and drop in between. */
const RETRY_MS = 1000;

const { O_WRONLY, O_APPEND, O_CREAT, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
// No links (a planted symlink must not redirect a root emperor's writes), and never block on a
// FIFO someone left in its place: a FIFO without reader fails with ENXIO instead.
const OPEN_FLAGS = O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK;

const errText = (err: unknown): string => {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message.replace(/^\w+: /, '')}` : String(err);
};

const write = (fd: number, buf: Buffer): Promise<number> =>
  new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));

export interface LogFileEvents {
  /** First byte dropped after a run of good writes; reported once per episode. */
  dropping: [reason: string];
  /** Writing works again; `bytes` were dropped in the episode that just ended. */
  resumed: [bytes: number, reason: string];
  /** The queue fell below the high-water mark again. */
  drain: [];
  /**
   * Bytes now in the file (only emitted while someone listens: `emperor logs -f`, the
   * dashboard's log tail). `ino` and `end` (the file size after them) let a reader of the file
   * tell which of these it has already read.
   */
  written: [bytes: Buffer, ino: number, end: number];
}

export class LogFile extends EventEmitter<LogFileEvents> {
  private fd: number | undefined;
  private size = 0;
  /** Inode of the open file, so followers can tell a rotated file from this one. */
  private ino = 0;
  private queue: Buffer[] = [];
  private queued = 0;
  private busy = false;
  private reopenWanted = false;
  /** Close the descriptor once the queue is empty (no process is attached). */
  private idleClose = false;
  private retryAt = 0;
  private episode: { bytes: number; reason: string } | undefined;
  private idleWaiters: Array<() => void> = [];
  /** Everything dropped since this object was made (status and metrics show it). */
  droppedBytes = 0;

  constructor(
    readonly file: string,
    private policy: LogPolicy,
    private owner: LogOwner | undefined = undefined,
  ) {
    super();
  }

  /** A new spec (reload) or a new owner applies from the next write on. */
  configure(policy: LogPolicy, owner: LogOwner | undefined): void {
    const ownerChanged = owner?.uid !== this.owner?.uid || owner?.gid !== this.owner?.gid;
    this.policy = policy;
    this.owner = owner;
    if (ownerChanged && this.fd !== undefined) this.reopen();
  }

  /** Queue bytes. False means "pause": wait for 'drain' before writing more. */
  write(chunk: Buffer): boolean {
    if (chunk.length === 0) return true;
    this.idleClose = false;
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.kick();
    return this.queued < HIGH_WATER;
  }

  /** Close and open the path again (after an external logrotate moved the file). */
  reopen(): void {
    this.reopenWanted = true;
    this.retryAt = 0;
    this.kick();
  }

  /** Let go of the descriptor once everything queued is written (the process is gone). */
  release(): void {
    this.idleClose = true;
    this.kick();
  }

  /** Resolves when nothing is queued or being written. */
  idle(): Promise<void> {
    if (!this.busy && this.queued === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private kick(): void {
    if (!this.busy) void this.pump();
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      for (;;) {
        if (this.reopenWanted && this.fd !== undefined) {
          this.reopenWanted = false;
          await this.closeFd();
        }
        if (this.queued === 0) break;
        if (this.fd === undefined && !(await this.open())) {
          this.dropQueue();
          continue;
        }
        await this.writeSome(this.take());
      }
      if (this.idleClose && this.fd !== undefined) await this.closeFd();
    } catch (err) {
      // Only a bug gets here; the output is then lost, but counted and said once.
      this.drop(this.queued, `log writer failed: ${errText(err)}`);
      this.queue = [];
      this.queued = 0;
    } finally {
      this.busy = false;
    }
    if (this.queued > 0 || (this.reopenWanted && this.fd !== undefined)) {
      this.kick();
      return;
    }
    this.emit('drain');
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Up to MAX_WRITE bytes off the queue, as one buffer. */
  private take(): Buffer {
    let n = 0;
    let count = 0;
    for (const b of this.queue) {
      if (count > 0 && n + b.length > MAX_WRITE) break;
      n += b.length;
      count++;
    }
    const parts = this.queue.splice(0, count);
    this.queued -= n;
    if (this.queued < HIGH_WATER && this.queued + n >= HIGH_WATER) queueMicrotask(() => this.emit('drain'));
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  private async writeSome(buf: Buffer): Promise<void> {
    let rest = buf;
    while (rest.length > 0) {
      const { maxBytes } = this.policy;
      const room = maxBytes > 0 ? maxBytes - this.size : Infinity;
      let part = rest;
      if (rest.length > room) {
        // Cut after the last whole line that fits, so lines are not split across two files;
        // a file that holds no complete line yet gets a hard cut (a line longer than max_size).
        const nl = room > 0 ? rest.lastIndexOf(0x0a, room - 1) : -1;
        if (nl >= 0) part = rest.subarray(0, nl + 1);
        else if (this.size > 0) part = rest.subarray(0, 0);
        else part = rest.subarray(0, room);
      }
      if (part.length > 0) {
        await this.writeAll(part);
        rest = rest.subarray(part.length);
      }
      if (rest.length > 0 || (maxBytes > 0 && this.size >= maxBytes)) {
        if (!(await this.rotate())) {
          this.drop(rest.length, this.episode?.reason ?? 'cannot rotate the log');
          return;
        }
      }
    }
  }

  private async writeAll(part: Buffer): Promise<void> {
    let off = 0;
    while (off < part.length) {
      const fd = this.fd;
      if (fd === undefined) break;
      try {
        const n = await write(fd, off === 0 ? part : part.subarray(off));
        off += n;
        this.size += n;
      } catch (err) {
        // ENOSPC, EDQUOT, EFBIG, EIO...: what did not fit is dropped and counted; the next
        // write tries again (space may have been freed).
        this.drop(part.length - off, `cannot write ${this.file}: ${errText(err)}`);
        return;
      }
    }
    if (off < part.length) {
      this.drop(part.length - off, `${this.file} is not open`);
      return;
    }
    if (this.listenerCount('written') > 0) this.emit('written', part, this.ino, this.size);
    this.resumed();
  }

  /** NAME.log → NAME.log.1 → … → NAME.log.KEEP (the oldest is replaced), then a fresh file. */
  private async rotate(): Promise<boolean> {
    if (Date.now() < this.retryAt) return false;
    await this.closeFd();
    const { keep } = this.policy;
    try {
      for (let i = keep - 1; i >= 1; i--) await renameIfExists(`${this.file}.${i}`, `${this.file}.${i + 1}`);
      if (keep > 0) await renameIfExists(this.file, `${this.file}.1`);
      else await fsp.rm(this.file, { force: true });
      // keep was lowered since the last rotation: what is past it would never be replaced.
      for (let i = keep + 1; await removeIfExists(`${this.file}.${i}`); i++);
    } catch (err) {
      this.retryAt = Date.now() + RETRY_MS;
      this.noteDropping(`cannot rotate ${this.file}: ${errText(err)}`);
      return false;
    }
    return this.open();
  }

  private async open(): Promise<boolean> {
    if (Date.now() < this.retryAt) return false;
    let fd: number | undefined;
    try {
      await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: LOG_DIR_MODE });
      fd = await new Promise<number>((resolve, reject) => fs.open(this.file, OPEN_FLAGS, LOG_FILE_MODE, (err, f) => (err ? reject(err) : resolve(f))));
      const st = await fstat(fd);
      if (!st.isFile()) throw new Error(`${this.file} is not a regular file`);
      const owner = this.owner;
      if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) await fchown(fd, owner.uid, owner.gid);
      // Never looser than 0640 (a file from an older version may be 0644); tighter is kept.
      if ((st.mode & 0o777 & ~LOG_FILE_MODE) !== 0) await fchmod(fd, st.mode & LOG_FILE_MODE);
      this.fd = fd;
      this.size = st.size;
      this.ino = st.ino;
      return true;
    } catch (err) {
      if (fd !== undefined) fs.close(fd, () => undefined);
      this.retryAt = Date.now() + RETRY_MS;
      this.noteDropping(`cannot open ${this.file}: ${errText(err)}`);
      return false;
    }
  }

  private async closeFd(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
  }

  private dropQueue(): void {
    this.drop(this.queued, this.episode?.reason ?? `cannot open ${this.file}`);
    this.queue = [];
    this.queued = 0;
  }

  private drop(bytes: number, reason: string): void {
    if (bytes <= 0) return;
    this.droppedBytes += bytes;
    this.noteDropping(reason);
    this.episode!.bytes += bytes;
  }

  private noteDropping(reason: string): void {
    if (this.episode) return;
    this.episode = { bytes: 0, reason };
    this.emit('dropping', reason);
  }

  private resumed(): void {
    const ep = this.episode;
    if (!ep) return;
    this.episode = undefined;
    this.emit('resumed', ep.bytes, ep.reason);
  }
}

const fstat = (fd: number): Promise<fs.Stats> => new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
const fchown = (fd: number, uid: number, gid: number): Promise<void> =>
  new Promise((resolve, reject) => fs.fchown(fd, uid, gid, (err) => (err ? reject(err) : resolve())));
const fchmod = (fd: number, mode: number): Promise<void> => new Promise((resolve, reject) => fs.fchmod(fd, mode, (err) => (err ? reject(err) : resolve())));

async function renameIfExists(from: string, to: string): Promise<void> {
  try {
    await fsp.rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function removeIfExists(file: string): Promise<boolean> {
  try {
    await fsp.unlink(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
