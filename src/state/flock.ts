// flock(2) for Node, which has none. The emperor opens the file itself (libuv opens with
// O_CLOEXEC, so no vassal, probe or guardian ever inherits it) and hands a duplicate of the
// descriptor to util-linux `flock FD` for one call. A flock belongs to the open file
// description, which the duplicate shares: when the helper exits the lock stays, held by the
// emperor's descriptor alone. It is released exactly when that descriptor closes: when the
// emperor exits, however it dies (SIGKILL included), and never while it lives.
// (A long-lived `flock FILE cat` child was the other option; it could be killed on its own and
// drop the lock under a live emperor. The native fs-ext package would need a compiler here.)
import { spawnSync } from 'node:child_process';
import { findExecutable } from '../process/launch.js';

export class FlockError extends Error {
  override readonly name = 'FlockError';
}

/** Exclusive and non-blocking: true when taken, false when another open file holds it. */
export function tryFlock(fd: number, what: string): boolean {
  const flock = findExecutable('flock', '/', process.env.PATH) ?? findExecutable('flock', '/', undefined);
  if (flock === undefined) throw new FlockError(`cannot lock ${what}: the util-linux \`flock\` program is not installed (apt-get install util-linux)`);
  const res = spawnSync(flock, ['--exclusive', '--nonblock', '3'], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
    env: {},
    timeout: 10_000,
    encoding: 'utf8',
  });
  if (res.status === 0) return true;
  // flock's "already locked" with --nonblock is exit 1 and says nothing.
  if (res.status === 1 && !res.stderr.trim()) return false;
  const why = res.error?.message ?? (res.stderr.trim() || `flock exited with ${res.status ?? res.signal}`);
  throw new FlockError(`cannot lock ${what}: ${why}`);
}
