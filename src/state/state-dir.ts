// One emperor per state directory, enforced by a lock held for the emperor's whole life, not by
// the presence of the socket file (which anyone with access can delete, after which a second
// emperor would kill the first one's live vassals as "leftovers").
import fs from 'node:fs';
import path from 'node:path';
import { checkSocketPath } from '../api/socket-path.js';
import { tryFlock } from './flock.js';
import { trustedDir, UntrustedDirError } from './trusted-dir.js';

export const LOCK_FILE = 'emperor.lock';
export const SOCKET_FILE = 'emperor.sock';
export const PIDS_DIR = 'pids';

export class StateDirBusyError extends Error {
  override readonly name = 'StateDirBusyError';
}

export interface StateDir {
  /** Real path: checked once, used for everything after. */
  readonly dir: string;
  readonly socketPath: string;
  readonly pidsDir: string;
  /** Let go of the lock (a clean exit does it anyway). */
  release(): void;
}

/** The holder's pid, as it wrote it into the lock file: for the message only, never trusted. */
function holderOf(fd: number): string {
  try {
    const text = fs.readFileSync(fd, 'utf8').trim();
    return /^\d+$/.test(text) ? ` (pid ${text})` : '';
  } catch {
    return '';
  }
}

/**
 * Check the state directory (owner, mode, parents), make sure its socket path fits, and take
 * its lock; throws with what is wrong and what to do. Holding the lock means no other emperor
 * uses this directory: a socket file or pid records found in it were left by a dead one.
 */
export async function claimStateDir(requested: string): Promise<StateDir> {
  // Before anything is created, and again for the real path (symbolic links resolved).
  checkSocketPath(path.join(path.resolve(requested), SOCKET_FILE));
  const dir = await trustedDir(path.resolve(requested), 'state directory');
  const socketPath = path.join(dir, SOCKET_FILE);
  checkSocketPath(socketPath);
  const lockPath = path.join(dir, LOCK_FILE);
  // O_NOFOLLOW: nothing in the directory is followed anywhere else.
  let fd: number;
  try {
    fd = fs.openSync(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600);
  } catch (err) {
    throw new UntrustedDirError(`cannot open the lock file ${lockPath}: ${(err as Error).message}; expected a regular file (remove whatever is there)`);
  }
  try {
    const st = fs.fstatSync(fd);
    const euid = process.geteuid?.() ?? 0;
    if (!st.isFile() || st.uid !== euid) {
      throw new UntrustedDirError(`${lockPath} is not a regular file owned by uid ${euid}: remove it`);
    }
    if (!tryFlock(fd, lockPath)) {
      throw new StateDirBusyError(
        `another emperor is already running with state directory ${dir}${holderOf(fd)}, holding its lock ${lockPath}; stop it, or give this one its own --state-dir`,
      );
    }
    fs.ftruncateSync(fd);
    fs.writeSync(fd, `${process.pid}\n`, 0);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  let held = true;
  return {
    dir,
    socketPath,
    pidsDir: path.join(dir, PIDS_DIR),
    release: () => {
      if (!held) return;
      held = false;
      fs.closeSync(fd);
    },
  };
}
