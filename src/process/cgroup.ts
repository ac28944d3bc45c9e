// One vassal's cgroup: every process it starts, setsid or not, stays in it, so signalling,
// killing and "is anything left?" are questions about the cgroup, not about a process group.
import fs from 'node:fs';
import path from 'node:path';
import { childCgroups, readKeyed, readProcs, tryWrite } from './cgroupfs.js';
import { delay } from './timing.js';

/** inotify on cgroup.events is the signal; this poll only guards against a lost event. */
const SAFETY_POLL_MS = 100;
/** Freeze-and-kill (kernels before 5.14 lack cgroup.kill) waits this long for "frozen 1". */
const FREEZE_WAIT_MS = 1000;

/** Every pid in dir and its descendant cgroups (a root vassal may create sub-cgroups). */
function allProcs(dir: string): number[] {
  const pids = readProcs(dir);
  for (const child of childCgroups(dir)) pids.push(...allProcs(child));
  return pids;
}

const signalPid = (pid: number, signal: NodeJS.Signals): void => {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already, or (EPERM) not ours: nothing better to do for that one process.
  }
};

/**
 * A cgroup-v2 directory. Limits may live elsewhere (v1 controllers on hybrid hosts); this is
 * the containment part: membership, signals, kill, emptiness, memory events.
 */
export class Cgroup {
  constructor(readonly dir: string) {}

  /** True while any live process is in the cgroup or below it. */
  populated(): boolean {
    const events = readKeyed(path.join(this.dir, 'cgroup.events'));
    // A cgroup that vanished (or a kernel without cgroup.events) falls back to the process list.
    const populated = events.get('populated');
    return populated === undefined ? allProcs(this.dir).length > 0 : populated === 1;
  }

  /**
   * Signal every process in the cgroup. A process forked between reading the list and the
   * kill is missed, so the list is read again until it brings nothing new (bounded: a fork
   * bomb is what cgroup.kill is for).
   */
  signalAll(signal: NodeJS.Signals): void {
    const seen = new Set<number>();
    for (let round = 0; round < 5; round++) {
      const fresh = allProcs(this.dir).filter((pid) => !seen.has(pid));
      if (fresh.length === 0) return;
      for (const pid of fresh) {
        seen.add(pid);
        signalPid(pid, signal);
      }
    }
  }

  /** SIGKILL everything in the cgroup, including what forks meanwhile. */
  async kill(): Promise<void> {
    if (tryWrite(path.join(this.dir, 'cgroup.kill'), '1')) return;
    // No cgroup.kill (Linux < 5.14): freeze so nothing can fork, kill the listed, thaw.
    const freeze = path.join(this.dir, 'cgroup.freeze');
    if (tryWrite(freeze, '1')) {
      const deadline = Date.now() + FREEZE_WAIT_MS;
      while (readKeyed(path.join(this.dir, 'cgroup.events')).get('frozen') !== 1 && Date.now() < deadline) await delay(10);
      // SIGKILL reaches frozen tasks in cgroup v2.
      for (const pid of allProcs(this.dir)) signalPid(pid, 'SIGKILL');
      tryWrite(freeze, '0');
      return;
    }
    this.signalAll('SIGKILL');
  }

  /**
   * Resolves true once the cgroup is empty, false at the deadline. The kernel reports
   * "populated 0" through an inotify modify event on cgroup.events, so no fixed polling delay.
   */
  whenEmpty(timeoutMs: number): Promise<boolean> {
    if (!this.populated()) return Promise.resolve(true);
    return new Promise((resolve) => {
      let watcher: fs.FSWatcher | undefined;
      let done = false;
      const finish = (empty: boolean): void => {
        if (done) return;
        done = true;
        watcher?.close();
        clearInterval(poll);
        clearTimeout(timer);
        resolve(empty);
      };
      const check = (): void => {
        if (!this.populated()) finish(true);
      };
      const poll = setInterval(check, SAFETY_POLL_MS);
      const timer = setTimeout(() => finish(!this.populated()), Math.max(0, timeoutMs));
      try {
        watcher = fs.watch(path.join(this.dir, 'cgroup.events'), check);
        watcher.on('error', () => undefined);
      } catch {
        // No inotify (or the file is gone): the poll carries on alone.
      }
      // The state may have changed between the first check and the watch being set up.
      check();
    });
  }

  /** memory.events oom_kill of this cgroup (v2), or undefined without a v2 memory controller. */
  oomKills(): number | undefined {
    return readKeyed(path.join(this.dir, 'memory.events')).get('oom_kill');
  }
}
