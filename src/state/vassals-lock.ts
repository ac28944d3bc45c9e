// Two emperors with different state directories on the same vassals directory would each run
// every vassal. The directory is the one object they share (whoever runs them, whatever their
// state directories), so each emperor holds a flock on the directory itself for its life.
//
// Anyone who can read the directory can also lock it, though, and in tyrant mode that includes
// the hostile users the emperor protects against: a lock alone must not be able to stop the
// emperor from starting. So on conflict the holder is looked up (/proc/PID/fdinfo lists the
// locks each open file holds): held by root or by the emperor's own user, it is another emperor
// and this one refuses; held by anyone else, or by a process we cannot see, the emperor starts
// and says loudly that something holds the lock and how to find out what.
import fs from 'node:fs';
import { tryFlock } from './flock.js';

export class VassalsDirBusyError extends Error {
  override readonly name = 'VassalsDirBusyError';
}

export interface VassalsDirLock {
  /** Set when the lock could not be taken but starting anyway was the safe choice. */
  readonly warning: string | undefined;
  release(): void;
}

interface Holder {
  readonly pid: number;
  readonly uid: number;
}

/** Processes with an open file on (dev, ino) that holds a flock on it, among those we can see. */
function lockHolders(dev: number, ino: number): Holder[] {
  const holders: Holder[] = [];
  const self = String(process.pid);
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n) && n !== self);
  } catch {
    return holders;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to look at
    }
    for (const fd of fds) {
      try {
        const st = fs.statSync(`/proc/${pid}/fd/${fd}`);
        if (st.dev !== dev || st.ino !== ino) continue;
        if (!/^lock:\s.*\bFLOCK\b/m.test(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))) continue;
        holders.push({ pid: Number(pid), uid: fs.statSync(`/proc/${pid}`).uid });
        break;
      } catch {
        // Closed meanwhile, or not visible: skip it.
      }
    }
  }
  return holders;
}

export function lockVassalsDir(dir: string): VassalsDirLock {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  let held = true;
  const release = (): void => {
    if (!held) return;
    held = false;
    fs.closeSync(fd);
  };
  try {
    if (tryFlock(fd, `vassals directory ${dir}`)) return { warning: undefined, release };
    const st = fs.fstatSync(fd);
    const euid = process.geteuid?.() ?? 0;
    const holders = lockHolders(st.dev, st.ino);
    const emperor = holders.find((h) => h.uid === 0 || h.uid === euid);
    if (emperor) {
      throw new VassalsDirBusyError(
        `vassals directory ${dir} is locked by pid ${emperor.pid} (uid ${emperor.uid}): another emperor already supervises it, and a second one would run every vassal twice. ` +
          'Stop that emperor first, or give this one its own vassals directory',
      );
    }
    const who = holders.length > 0 ? holders.map((h) => `pid ${h.pid} (uid ${h.uid})`).join(', ') : 'a process this user cannot see';
    return {
      warning:
        `vassals directory ${dir} is locked by ${who}, not by an emperor of this user or root; starting anyway (another user's lock must not stop the emperor). ` +
        `If that is another emperor, every vassal runs twice: stop one of them (\`lslocks\` or \`fuser ${dir}\` shows the holders)`,
      release,
    };
  } catch (err) {
    release();
    throw err;
  }
}
