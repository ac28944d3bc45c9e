// Where this process sits in the cgroup hierarchies, found from /proc/self/mountinfo and
// /proc/self/cgroup rather than assumed: hybrid hosts mount cgroup2 below /sys/fs/cgroup
// (e.g. /sys/fs/cgroup/unified) next to v1 controller hierarchies, pure v2 hosts mount it at
// /sys/fs/cgroup, and containers or systemd services see only a delegated subtree.
import fs from 'node:fs';
import path from 'node:path';

export interface CgroupMount {
  /** Path inside the hierarchy that is visible at `mountPoint` (not always "/": containers). */
  readonly root: string;
  readonly mountPoint: string;
  /** 'cgroup2', or 'cgroup' (v1) with the controllers it carries. */
  readonly version: 1 | 2;
  readonly controllers: readonly string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));

export function parseMountinfo(text: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of text.split('\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const head = line.slice(0, sep).split(' ');
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    const root = head[3];
    const mountPoint = head[4];
    if (root === undefined || mountPoint === undefined) continue;
    if (fstype === 'cgroup2') {
      mounts.push({ root: unescape(root), mountPoint: unescape(mountPoint), version: 2, controllers: [] });
    } else if (fstype === 'cgroup') {
      const controllers = superOptions.split(',').filter((o) => o !== 'rw' && o !== 'ro' && !o.includes('='));
      mounts.push({ root: unescape(root), mountPoint: unescape(mountPoint), version: 1, controllers });
    }
  }
  return mounts;
}

/** /proc/self/cgroup: "0::/path" for v2, "4:memory:/path" or "1:cpu,cpuacct:/" for v1. */
export function parseProcCgroup(text: string): { v2: string | undefined; v1: Map<string, string> } {
  let v2: string | undefined;
  const v1 = new Map<string, string>();
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const where = line.slice(second + 1);
    if (line.slice(0, first) === '0' && controllers === '') v2 = where;
    else for (const c of controllers.split(',')) if (c !== '') v1.set(c, where);
  }
  return { v2, v1 };
}

/**
 * The directory of `own` (a path inside the hierarchy) under a mount, or undefined when the
 * mount does not show it (our cgroup lies outside the part of the hierarchy mounted there).
 */
export function dirFor(mount: CgroupMount, own: string): string | undefined {
  // A cgroup namespace shows "/.." style paths for cgroups outside it.
  if (own.split('/').includes('..')) return undefined;
  const root = mount.root.replace(/\/+$/, '');
  if (own !== root && !own.startsWith(root + '/') && root !== '') return undefined;
  return path.join(mount.mountPoint, own.slice(root.length));
}

export interface OwnCgroups {
  /** Our cgroup in the unified (v2) hierarchy, when one is mounted and shows it. */
  readonly v2: string | undefined;
  /** Our cgroup in each v1 hierarchy, keyed by controller (memory, pids, cpu...). */
  readonly v1: ReadonlyMap<string, string>;
}

/** Where this process's cgroups are, as directories (nothing is created or checked here). */
export function findOwnCgroups(mountinfo: string, procCgroup: string): OwnCgroups {
  const mounts = parseMountinfo(mountinfo);
  const own = parseProcCgroup(procCgroup);
  let v2: string | undefined;
  const v1 = new Map<string, string>();
  for (const m of mounts) {
    if (m.version === 2 && own.v2 !== undefined && v2 === undefined) v2 = dirFor(m, own.v2);
    if (m.version === 1) {
      for (const c of m.controllers) {
        const where = own.v1.get(c);
        const dir = where === undefined ? undefined : dirFor(m, where);
        if (dir !== undefined && !v1.has(c)) v1.set(c, dir);
      }
    }
  }
  return { v2, v1 };
}

export function readOwnCgroups(): OwnCgroups {
  try {
    return findOwnCgroups(fs.readFileSync('/proc/self/mountinfo', 'utf8'), fs.readFileSync('/proc/self/cgroup', 'utf8'));
  } catch {
    return { v2: undefined, v1: new Map() };
  }
}

/** Write a cgroup control file; false when the kernel (or a missing file) refused. */
export function tryWrite(file: string, text: string): boolean {
  try {
    fs.writeFileSync(file, text);
    return true;
  } catch {
    return false;
  }
}

/** Pids listed in a cgroup.procs file (empty when the cgroup is gone). */
export function readProcs(dir: string): number[] {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8');
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const line of text.split('\n')) if (/^\d+$/.test(line)) pids.push(Number(line));
  return pids;
}

/** "key value" lines (cgroup.events, memory.events, memory.oom_control) → key → number. */
export function readKeyed(file: string): Map<string, number> {
  const out = new Map<string, number>();
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const [key, value] = line.split(' ');
    if (key && value !== undefined && /^\d+$/.test(value)) out.set(key, Number(value));
  }
  return out;
}

/** Child cgroup directories of dir (control files are plain files). */
export function childCgroups(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => path.join(dir, e.name));
  } catch {
    return [];
  }
}
