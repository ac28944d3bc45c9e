// Reading a vassal file: everything the emperor decides about a file (is it one at all, its
// size, its owner, its bytes) comes from ONE open descriptor. Asking the path again later (stat,
// lstat, readFile) would ask about whatever is at the path by then: renaming another user's file
// over one's own between the read and a later lstat made one user's content run as the other.
import fs, { constants as fsConstants } from 'node:fs';
import { withTransientFd } from '../process/fdbudget.js';

// The callback API on a plain descriptor: the same system calls as a FileHandle, with less work
// on the main thread per call (no FileHandle object to track and close through promises), which
// counted in a burst of 1,000 files (issue 13).
const openFd = (file: string, flags: number): Promise<number> => new Promise((resolve, reject) => fs.open(file, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
const fstatFd = (fd: number): Promise<fs.Stats> => new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
const readFd = (fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<number> =>
  new Promise((resolve, reject) => fs.read(fd, buffer, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
const closeFd = (fd: number): Promise<void> => new Promise((resolve) => fs.close(fd, () => resolve()));

/** Largest vassal file accepted, in bytes. Real ones are a few hundred bytes. */
export const MAX_VASSAL_FILE_BYTES = 64 * 1024;

/** What fstat said about the descriptor the bytes were read from. */
export interface FileFacts {
  readonly uid: number;
  readonly gid: number;
  /** Permission bits (mode & 0o7777). */
  readonly mode: number;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

export type FileRead =
  | { kind: 'read'; bytes: Buffer; facts: FileFacts }
  /** Nothing at the path (ENOENT, or a dangling link when links are followed). */
  | { kind: 'gone' }
  /** Something is there but it is not read: not a regular file, too large, a link, no access. */
  | { kind: 'refused'; problem: string; facts: FileFacts | undefined; code?: string }
  /** Its size or times changed while it was read: a write in progress. */
  | { kind: 'changing'; facts: FileFacts };

export interface ReadOptions {
  /**
   * false: a symbolic link is refused before anything is opened through it (O_NOFOLLOW). Tyrant
   * mode needs this, as the link's owner says nothing about its target's.
   */
  readonly followSymlinks: boolean;
}

export function tooLarge(bytes: number): string {
  return `file is too large (${bytes} bytes; the limit is ${MAX_VASSAL_FILE_BYTES / 1024} KiB)`;
}

type Signature = { readonly ino: number; readonly size: number; readonly mtimeMs: number; readonly ctimeMs: number };

/**
 * Change detector: inode, size and times (a rename over the path changes the inode). Compared
 * field by field: the periodic rescan asks it for every file every 10 s, and a string of the
 * four numbers was one more allocation each time (issue 13).
 */
export const sameSignature = (a: Signature, b: Signature): boolean => a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;

const FS_PROBLEMS: Readonly<Record<string, string>> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'a parent of this path is not a directory',
  ENXIO: 'not a regular file (a socket or a device without a reader)',
  ENAMETOOLONG: 'the path is too long',
};

function fsProblem(error: unknown, followSymlinks: boolean): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  // With O_NOFOLLOW, ELOOP is the kernel's way of saying "this is a symbolic link".
  if (code === 'ELOOP') return followSymlinks ? 'too many levels of symbolic links (ELOOP)' : 'is a symbolic link; tyrant mode refuses links, since the owner of the link and of its target may differ';
  const known = code === undefined ? undefined : FS_PROBLEMS[code];
  if (known !== undefined) return `${known} (${code})`;
  return `cannot read the file: ${error instanceof Error ? error.message : String(error)}`;
}

function factsOf(st: { uid: number; gid: number; mode: number; ino: number; size: number; mtimeMs: number; ctimeMs: number }): FileFacts {
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

function kindOf(st: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'something else';
}

/**
 * Reads the `size` bytes fstat announced, at most MAX_VASSAL_FILE_BYTES + 1: a file that grew
 * past the cap costs nothing more. Once `size` bytes are in, no read for end of file: a file
 * that changed meanwhile has another size or mtime in the second fstat (readVassalFile), and a
 * buffer sized by fstat spares allocating and zeroing 64 KiB for each read of a small file.
 */
async function readCapped(fd: number, size: number): Promise<Buffer | undefined> {
  const buffer = Buffer.allocUnsafe(Math.min(size, MAX_VASSAL_FILE_BYTES) + 1);
  let total = 0;
  while (total < buffer.length) {
    const bytesRead = await readFd(fd, buffer, total, buffer.length - total, total);
    if (bytesRead === 0) break;
    total += bytesRead;
    if (total === size) break;
  }
  return total > MAX_VASSAL_FILE_BYTES ? undefined : buffer.subarray(0, total);
}

/**
 * Opens `file` once (never blocking: O_NONBLOCK, so a FIFO swapped in cannot stall libuv's
 * thread pool; O_NOFOLLOW unless links are followed), fstats that descriptor and reads from it.
 * Never throws.
 */
export function readVassalFile(file: string, opts: ReadOptions): Promise<FileRead> {
  // A burst of new files must not take the descriptors kept for the control socket.
  return withTransientFd(() => readThroughOneFd(file, opts));
}

async function readThroughOneFd(file: string, opts: ReadOptions): Promise<FileRead> {
  const flags = fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY | (opts.followSymlinks ? 0 : fsConstants.O_NOFOLLOW);
  let fd: number;
  try {
    fd = await openFd(file, flags);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    if (code === 'ENOENT') return { kind: 'gone' };
    return { kind: 'refused', problem: fsProblem(error, opts.followSymlinks), facts: undefined, ...(code ? { code } : {}) };
  }
  try {
    const st = await fstatFd(fd);
    const facts = factsOf(st);
    if (!st.isFile()) return { kind: 'refused', problem: `is ${kindOf(st)}, not a regular file`, facts, code: st.isDirectory() ? 'EISDIR' : 'ENOTREG' };
    // From fstat, before reading: a sparse 100 GB file is refused without touching its pages.
    if (st.size > MAX_VASSAL_FILE_BYTES) return { kind: 'refused', problem: tooLarge(st.size), facts, code: 'EFBIG' };
    const bytes = await readCapped(fd, st.size);
    const after = factsOf(await fstatFd(fd));
    if (bytes === undefined) return { kind: 'refused', problem: tooLarge(after.size), facts: after, code: 'EFBIG' };
    if (!sameSignature(after, facts) || after.uid !== facts.uid || after.mode !== facts.mode) return { kind: 'changing', facts: after };
    return { kind: 'read', bytes, facts };
  } catch (error) {
    return { kind: 'refused', problem: fsProblem(error, opts.followSymlinks), facts: undefined };
  } finally {
    await closeFd(fd);
  }
}
