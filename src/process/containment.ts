// The emperor's cgroups: one parent per emperor instance, one child per vassal. The parent is
// named after the state directory, so the next emperor on the same state directory (one at a
// time: the state directory is locked) finds what a SIGKILLed predecessor left and kills it.
//
// Containment needs a writable cgroup2 hierarchy (cgroup.events, cgroup.kill). Limits use the
// v2 controllers enabled for the parent, or on hybrid hosts the v1 memory/pids/cpu hierarchies.
// Where neither can be created (not root, nothing delegated), vassals fall back to process
// groups and limits other than open_files cannot be applied.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Cgroup } from './cgroup.js';
import { childCgroups, readKeyed, readOwnCgroups, readProcs, tryWrite, type OwnCgroups } from './cgroupfs.js';
import { delay } from './timing.js';

/** The cgroup part of a vassal's limits (a LimitsSpec fits); null or absent = unlimited. */
export interface Limits {
  readonly memoryBytes?: number | null;
  readonly pids?: number | null;
  /** cgroup v2 cpu.weight, 1-10000 (100 = the default share). */
  readonly cpuWeight?: number | null;
}

/** Limit name (as written in vassal files) → cgroup controller that applies it. */
const CONTROLLER = { memory: 'memory', pids: 'pids', cpu_weight: 'cpu' } as const;
type CgroupLimit = keyof typeof CONTROLLER;
const CONTROLLERS = ['memory', 'pids', 'cpu'] as const;
type Controller = (typeof CONTROLLERS)[number];

const LIMIT_OF: Record<CgroupLimit, (l: Limits) => number | null | undefined> = {
  memory: (l) => l.memoryBytes,
  pids: (l) => l.pids,
  cpu_weight: (l) => l.cpuWeight,
};

export interface ContainmentStatus {
  readonly mode: 'cgroup' | 'process-group';
  /** The emperor's parent cgroup (v2) in cgroup mode. */
  readonly cgroup: string | null;
  /** Why there is no cgroup containment (process-group mode). */
  readonly reason: string | null;
  /** Limits this host can apply: open_files always, the others where a controller is available. */
  readonly limits: string[];
}

/** What a vassal's launch needs: where to put itself before exec, and what to read afterwards. */
export interface Placement {
  /** cgroup.procs files the launch wrapper writes its own pid into before it execs the app. */
  readonly procsFiles: readonly string[];
  /** The v2 cgroup holding every process of the vassal (containment), if any. */
  readonly cgroup: Cgroup | undefined;
  /** Cumulative OOM kills in the vassal's memory cgroup; undefined without a memory controller. */
  oomKills(): number | undefined;
}

export interface LeftoverCgroup {
  readonly name: string;
  readonly killed: number;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException).code;

function mkdirOk(dir: string): void {
  try {
    fs.mkdirSync(dir);
  } catch (err) {
    if (errCode(err) !== 'EEXIST') throw err;
  }
}

function readWords(file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/** rmdir, retried briefly: a cgroup whose last process just exited may still report busy. */
async function removeDir(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || attempt >= 50) throw err;
    }
    await delay(20);
  }
}

/** The directory name of a vassal's cgroup; the prefix keeps names away from control files. */
const childName = (vassal: string): string => `vassal-${vassal}`;

export class Containment {
  /**
   * Vassal cgroups (v2) known to exist: made by precreate() and not released since. prepare()
   * skips its mkdir for these: on the main thread that mkdir only met EEXIST, and cost a system
   * call (under the kernel's cgroup mutex) plus a thrown error per start (issue 13). Should one
   * be removed behind our back, the launch wrapper cannot join it and the start fails (exit
   * 125, with back-off); the retry makes it again. Never unconfined.
   */
  private readonly made = new Set<string>();
  /** release() in progress per vassal: precreate() waits for it, so an rmdir never follows our mkdir. */
  private readonly releasing = new Map<string, Promise<void>>();
  /** Bumped by every release(): a precreate() that saw one begin meanwhile leaves prepare() its mkdir. */
  private releases = 0;

  private constructor(
    /** v2 parent cgroup: containment. */
    private readonly v2: string | undefined,
    /** Controllers enabled for the children of the v2 parent. */
    private readonly v2Controllers: ReadonlySet<Controller>,
    /** v1 parents for controllers the v2 parent lacks (hybrid hosts). */
    private readonly v1: ReadonlyMap<Controller, string>,
    private readonly reason: string | undefined,
  ) {}

  /** Parent cgroup name for an emperor instance: stable per state directory, unique per host. */
  static parentName(stateDir: string): string {
    return `emperor-${createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 16)}`;
  }

  /** Process groups only; `reason` is shown in the log and in status. */
  static processGroups(reason: string): Containment {
    return new Containment(undefined, new Set(), new Map(), reason);
  }

  /** Create (or adopt) this emperor's parent cgroups; never throws. */
  static setup(stateDir: string, own: OwnCgroups = readOwnCgroups()): Containment {
    const name = Containment.parentName(stateDir);
    let v2: string | undefined;
    let reason: string | undefined;
    const v2Controllers = new Set<Controller>();
    if (own.v2 === undefined) {
      reason = 'no cgroup2 hierarchy is mounted where this process can see its own cgroup';
    } else {
      const dir = path.join(own.v2, name);
      try {
        mkdirOk(dir);
        if (!fs.existsSync(path.join(dir, 'cgroup.events'))) throw new Error('the kernel does not provide cgroup.events');
        v2 = dir;
      } catch (err) {
        reason = `cannot create a cgroup under ${own.v2} (${message(err)}); run as root or delegate a cgroup2 subtree to the emperor`;
      }
      if (v2 !== undefined) {
        // Enabling a controller for our own cgroup fails (EBUSY) when it holds processes and is
        // not the root; then only controllers a delegating manager already enabled are usable.
        const available = new Set(readWords(path.join(own.v2, 'cgroup.controllers')));
        const enabled = new Set(readWords(path.join(own.v2, 'cgroup.subtree_control')));
        for (const c of CONTROLLERS) {
          if (available.has(c) && !enabled.has(c) && tryWrite(path.join(own.v2, 'cgroup.subtree_control'), `+${c}`)) enabled.add(c);
        }
        for (const c of CONTROLLERS) {
          if (enabled.has(c) && tryWrite(path.join(v2, 'cgroup.subtree_control'), `+${c}`)) v2Controllers.add(c);
        }
      }
    }
    const v1 = new Map<Controller, string>();
    for (const c of CONTROLLERS) {
      const base = own.v1.get(c);
      if (v2Controllers.has(c) || base === undefined) continue;
      const dir = path.join(base, name);
      try {
        mkdirOk(dir);
        v1.set(c, dir);
      } catch {
        // Not writable: that limit cannot be applied here.
      }
    }
    return new Containment(v2, v2Controllers, v1, reason);
  }

  get mode(): 'cgroup' | 'process-group' {
    return this.v2 === undefined ? 'process-group' : 'cgroup';
  }

  status(): ContainmentStatus {
    const limits = (Object.keys(CONTROLLER) as CgroupLimit[]).filter((l) => this.controllerDir(CONTROLLER[l]) !== undefined);
    return { mode: this.mode, cgroup: this.v2 ?? null, reason: this.reason ?? null, limits: [...limits, 'open_files'] };
  }

  /** Arguments for the guardian: the v2 parent (or '') then the v1 parents, to kill and remove. */
  guardianDirs(): string[] {
    return [this.v2 ?? '', ...this.v1.values()];
  }

  /** "limits.memory: ..." for each limit in `limits` that this host cannot apply. */
  unsupported(limits: Limits | null | undefined): string[] {
    if (!limits) return [];
    const problems: string[] = [];
    for (const l of Object.keys(CONTROLLER) as CgroupLimit[]) {
      if (LIMIT_OF[l](limits) == null || this.controllerDir(CONTROLLER[l]) !== undefined) continue;
      problems.push(`limits.${l} cannot be applied on this host: no usable ${CONTROLLER[l]} cgroup controller (${this.reason ?? 'neither enabled for the emperor in cgroup2 nor a writable v1 hierarchy'})`);
    }
    return problems;
  }

  private controllerDir(c: Controller): { dir: string; version: 1 | 2 } | undefined {
    if (this.v2 !== undefined && this.v2Controllers.has(c)) return { dir: this.v2, version: 2 };
    const v1 = this.v1.get(c);
    return v1 === undefined ? undefined : { dir: v1, version: 1 };
  }

  /**
   * Create the vassal's cgroup(s) and apply its limits. Throws with a message naming the limit
   * when a value is refused; limits this host cannot apply at all are skipped (the emperor
   * warned, or refused the deploy, when the file was read).
   */
  prepare(vassal: string, limits: Limits | null | undefined): Placement {
    const procsFiles: string[] = [];
    let cgroup: Cgroup | undefined;
    if (this.v2 !== undefined) {
      const dir = path.join(this.v2, childName(vassal));
      if (!this.made.has(vassal)) {
        try {
          mkdirOk(dir);
        } catch (err) {
          throw new Error(`cannot create cgroup ${dir}: ${message(err)}`);
        }
        this.made.add(vassal);
      }
      cgroup = new Cgroup(dir);
      procsFiles.push(path.join(dir, 'cgroup.procs'));
    }
    const v1Dirs = new Map<Controller, string>();
    for (const l of Object.keys(CONTROLLER) as CgroupLimit[]) {
      const value = limits ? LIMIT_OF[l](limits) : undefined;
      const where = this.controllerDir(CONTROLLER[l]);
      if (value == null || where === undefined) continue;
      let dir = path.join(where.dir, childName(vassal));
      if (where.version === 1) {
        try {
          mkdirOk(dir);
        } catch (err) {
          throw new Error(`limits.${l}: cannot create cgroup ${dir}: ${message(err)}`);
        }
        v1Dirs.set(CONTROLLER[l], dir);
        procsFiles.push(path.join(dir, 'cgroup.procs'));
      } else {
        dir = cgroup?.dir ?? dir;
      }
      applyLimit(l, value, dir, where.version);
    }
    const memory = this.controllerDir('memory');
    const v1Memory = v1Dirs.get('memory');
    return {
      procsFiles,
      cgroup,
      oomKills: () => {
        if (v1Memory !== undefined) return readKeyed(path.join(v1Memory, 'memory.oom_control')).get('oom_kill');
        return memory?.version === 2 ? cgroup?.oomKills() : undefined;
      },
    };
  }

  /**
   * Make the vassal's v2 cgroup through the thread pool, ahead of prepare() (which then finds it
   * made). Making a cgroup takes the kernel's cgroup mutex, shared with every cgroup change on
   * the host: profiled at 0.4 ms of the main thread per start on a quiet host and 11 ms on a
   * saturated one, for 200 apps at once (issue 13). Never rejects: prepare() reports problems.
   */
  async precreate(vassal: string): Promise<void> {
    if (this.v2 === undefined || this.made.has(vassal)) return;
    await this.releasing.get(vassal);
    const before = this.releases;
    const made = await fs.promises.mkdir(path.join(this.v2, childName(vassal))).then(
      () => true,
      (err: unknown) => errCode(err) === 'EEXIST',
    );
    // A release() since may have removed it again (rare: a stop elsewhere): prepare() checks then.
    if (made && this.releases === before) this.made.add(vassal);
  }

  /** Remove a stopped vassal's (empty) cgroups. */
  async release(vassal: string): Promise<void> {
    this.made.delete(vassal);
    this.releases++;
    const dirs = [...this.v1.values(), ...(this.v2 === undefined ? [] : [this.v2])].map((p) => path.join(p, childName(vassal)));
    const done = Promise.all(dirs.map((d) => removeDir(d).catch(() => undefined))).then(() => undefined);
    this.releasing.set(vassal, done);
    try {
      await done;
    } finally {
      if (this.releasing.get(vassal) === done) this.releasing.delete(vassal);
    }
  }

  /**
   * Start-up: kill whatever a previous emperor on this state directory left in its cgroups
   * (SIGKILLed together with its guardian), and remove the empty cgroups.
   */
  async reapLeftovers(waitMs = 5000): Promise<LeftoverCgroup[]> {
    const found = new Map<string, Set<number>>();
    const note = (child: string, pids: number[]): void => {
      if (pids.length === 0) return;
      const name = path.basename(child).replace(/^vassal-/, '');
      const set = found.get(name) ?? new Set<number>();
      for (const pid of pids) set.add(pid);
      found.set(name, set);
    };
    const parents = [...(this.v2 === undefined ? [] : [this.v2]), ...this.v1.values()];
    for (const parent of parents) for (const child of childCgroups(parent)) note(child, readProcs(child));
    if (this.v2 !== undefined) {
      const parent = new Cgroup(this.v2);
      if (parent.populated()) {
        await parent.kill();
        await parent.whenEmpty(waitMs);
      }
    }
    // v1-only hosts (process-group containment): kill what the limit cgroups still hold.
    const deadline = Date.now() + waitMs;
    for (const parent of this.v1.values()) {
      for (const child of childCgroups(parent)) {
        for (let pids = readProcs(child); pids.length > 0 && Date.now() < deadline; pids = readProcs(child)) {
          for (const pid of pids) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // gone
            }
          }
          await delay(20);
        }
      }
    }
    for (const parent of parents) await Promise.all(childCgroups(parent).map((c) => removeDir(c).catch(() => undefined)));
    return [...found].map(([name, pids]) => ({ name, killed: pids.size }));
  }

  /** Clean shutdown, after every vassal stopped: remove the (empty) cgroups. */
  async close(): Promise<void> {
    this.made.clear();
    const parents = [...(this.v2 === undefined ? [] : [this.v2]), ...this.v1.values()];
    for (const parent of parents) {
      await Promise.all(childCgroups(parent).map((c) => removeDir(c).catch(() => undefined)));
      await removeDir(parent).catch(() => undefined);
    }
  }
}

/** Write one limit; v1 has other file names and units than v2. */
function applyLimit(limit: CgroupLimit, value: number, dir: string, version: 1 | 2): void {
  const set = (file: string, text: string): void => {
    try {
      fs.writeFileSync(path.join(dir, file), text);
    } catch (err) {
      throw new Error(`limits.${limit}: cannot set ${path.join(dir, file)} to ${text}: ${message(err)}`);
    }
  };
  switch (limit) {
    case 'memory':
      if (version === 2) {
        set('memory.max', String(value));
        // Without swap the limit means what it says; absent where swap accounting is off.
        tryWrite(path.join(dir, 'memory.swap.max'), '0');
      } else if (fs.existsSync(path.join(dir, 'memory.memsw.limit_in_bytes'))) {
        // memsw (memory + swap) must never be below memory: raise in the order that keeps it so.
        if (!tryWrite(path.join(dir, 'memory.limit_in_bytes'), String(value))) {
          set('memory.memsw.limit_in_bytes', String(value));
          set('memory.limit_in_bytes', String(value));
        } else {
          set('memory.memsw.limit_in_bytes', String(value));
        }
      } else {
        set('memory.limit_in_bytes', String(value));
      }
      break;
    case 'pids':
      set('pids.max', String(value));
      break;
    case 'cpu_weight':
      // systemd's mapping: weight 100 (the default) = 1024 shares.
      if (version === 2) set('cpu.weight', String(value));
      else set('cpu.shares', String(Math.max(2, Math.round((value * 1024) / 100))));
      break;
  }
}
