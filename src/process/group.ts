// Process-group signalling and the "is anything left?" question.
import { isLive, liveGroupMembers, readStatSync } from './procfs.js';

/**
 * Signal every process of group pgid. False when the group does not exist.
 * pgid 0 would address OUR group and -1 every process on the host, so anything below 2 is refused.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  if (!Number.isInteger(pgid) || pgid < 2) return false;
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return false;
    // The group exists; we just may not signal (some of) it.
    if (code === 'EPERM') return true;
    throw err;
  }
}

/**
 * kill(-pgid, 0) also succeeds for zombies, and orphaned grandchildren stay zombies forever
 * under an init that does not reap (a container's PID 1, often). So once the leader is known
 * to be gone, a positive answer is double-checked against /proc. To keep polling cheap the
 * members found last time are re-checked first; a full /proc scan only happens when all of
 * them are gone (new members can only be forked by live ones).
 */
export class GroupProbe {
  private known: number[] = [];

  constructor(private readonly pgid: number) {}

  alive(leaderExited: boolean): boolean {
    if (!signalGroup(this.pgid, 0)) return false;
    if (!leaderExited) return true;
    if (this.known.some((pid) => this.isMember(pid))) return true;
    this.known = liveGroupMembers(this.pgid);
    return this.known.length > 0;
  }

  private isMember(pid: number): boolean {
    const stat = readStatSync(pid);
    return isLive(stat) && stat.pgid === this.pgid;
  }
}
