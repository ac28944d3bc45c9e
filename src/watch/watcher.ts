import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { lstatSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { classifyVassalFile } from '../config/names.js';
import { changeKey, loadVassalFile, type LoadOptions } from '../config/load-file.js';
import type { ConfigError } from '../config/errors.js';
import { sameSignature, type FileFacts } from '../config/read.js';
import type { VassalSpec } from '../config/spec.js';

/** A valid file carries what fstat said about the descriptor its spec was read from (its owner). */
export type FileVerdict = { ok: true; spec: VassalSpec; facts: FileFacts } | { ok: false; error: ConfigError };

export interface WatcherEvents {
  /** A vassal file appeared or its content changed (never for a plain touch). */
  upsert: [file: string, verdict: FileVerdict];
  /** A vassal file is gone. */
  remove: [file: string];
  /** The directory could not be read or watched (nothing that was running is affected). */
  error: [err: Error];
  /** The directory was replaced (another inode now has its name): the new one is watched. */
  replaced: [message: string];
}

export interface WatcherOptions {
  /**
   * Quiet time after the last event on a file before it is read. Writers that write a file in
   * several chunks do so within a few milliseconds; this keeps them from being read half-way.
   */
  readonly settleMs: number;
  /**
   * A file that does not parse is given this much more quiet time before it is reported
   * invalid, since the usual cause is a write still in progress.
   */
  readonly invalidGraceMs: number;
  /** Full rescan period: repairs anything the watcher missed (overflowed inotify queue, NFS...). */
  readonly rescanMs: number;
  /** A rescan also runs this long after a burst of events goes quiet (default 300 ms). */
  readonly burstRescanMs?: number;
  /**
   * false = no inotify at all, rescans only (like the uWSGI Emperor's polling): for network
   * filesystems where change events never arrive.
   */
  readonly useEvents?: boolean;
  /** How files are opened, trusted and parsed (default: links followed, parsed in this thread). */
  readonly load?: LoadOptions;
}

/** Stats a periodic rescan has in flight at once in the thread pool (see statInPool()). */
const RESCAN_LANES = 8;
/** Main-thread time a rescan's lstats take before the event loop gets a turn (see statLocal()). */
const STAT_SLICE_MS = 2;
/** Two lstats in a row slower than this mean the disk is busy: the rest of that rescan uses the thread pool. */
const SLOW_STAT_MS = 10;
/**
 * statfs(2) f_type of filesystems whose lstat is answered by this machine (memory or a local
 * disk): ext2/3/4, xfs, btrfs, tmpfs, ramfs, overlayfs (containers' root), f2fs, zfs, jfs,
 * reiserfs, bcachefs. Anything else (nfs, cifs/smb, fuse, 9p, ceph, ...) is stat'ed in the
 * thread pool, where a hung server cannot stop the emperor's main thread.
 */
const LOCAL_FILESYSTEMS: ReadonlySet<number> = new Set([
  0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x858458f6, 0x794c7630, 0xf2f52010, 0x2fc12fc1, 0x3153464a, 0x52654973, 0xca451a4e,
]);

/** lstatSync's options, made once: a rescan allocates what it must, no more. */
const NO_THROW = { throwIfNoEntry: false } as const;

interface Known {
  /** Hash of the content last reported. */
  hash: string;
  /** Cheap change detector for rescans: skip reading a file whose inode, size and times are unchanged (none: always read). */
  facts: FileFacts | undefined;
}

/**
 * Turns a directory into a stream of settled vassal-file events. Only this module knows how
 * changes are noticed; everything downstream sees "this file now says X" or "this file is gone".
 */
export class VassalDirWatcher extends EventEmitter<WatcherEvents> {
  private readonly known = new Map<string, Known>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly lastEventAt = new Map<string, number>();
  /** Files being read now; an event meanwhile re-schedules them after the read. */
  private readonly busy = new Set<string>();
  private readonly dirty = new Set<string>();
  private fsWatcher: FSWatcher | undefined;
  /** dev:ino of the directory the watch is on; another one under the name means it was replaced. */
  private watchedId: string | undefined;
  private checkingWatch: Promise<void> | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private burstTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** path.join(dir, name) is prefix + name for any name readdir returns (see vassalPath()). */
  private readonly prefix: string;

  constructor(
    readonly dir: string,
    private readonly opts: WatcherOptions,
  ) {
    super();
    this.prefix = path.join(dir, 'x').slice(0, -1);
  }

  /** Starts watching, then reports every vassal file already present. */
  async start(): Promise<void> {
    if (this.opts.useEvents !== false) await this.watchDir();
    await this.rescan(true);
    this.scheduleRescan();
  }

  /**
   * One inotify watch on the (flat) directory; the kernel names the file in every event. This
   * replaced chokidar, which re-reads the whole directory per event under a 1 s throttle that
   * drops the events arriving meanwhile: a burst of 1,000 dropped files lost hundreds of them
   * until the next rescan (chokidar issues #685, #1276).
   */
  private async watchDir(): Promise<void> {
    // Which directory is watched is read before the watch is placed: if the name is swapped in
    // between, the next rescan sees another inode and watches again (the other order could
    // record the new inode while watching the old one, and never notice).
    this.watchedId = await dirId(this.dir);
    if (this.closed) return;
    try {
      const w = watch(this.dir, { persistent: true }, (event, filename) => {
        // No name means the kernel queue overflowed or the platform could not say: rescan.
        // A rename or removal of the directory itself comes with the directory's own name,
        // which is never a vassal file: the rescan it schedules notices the replacement.
        if (filename) {
          const name = filename.toString();
          if (classifyVassalFile(name).kind !== 'ignored') {
            const file = path.join(this.dir, name);
            if (event === 'rename') this.appeared(file);
            else this.touch(file);
          }
        }
        this.scheduleBurstRescan();
      });
      this.fsWatcher = w;
      w.on('error', (err) => {
        this.emit('error', new Error(`watching ${this.dir} failed (${err.message}); relying on rescans until it can be watched again`));
        w.close();
        if (this.fsWatcher === w) this.fsWatcher = undefined;
      });
    } catch (err) {
      this.emit('error', new Error(`cannot watch ${this.dir} (${(err as Error).message}); relying on rescans`));
    }
  }

  /**
   * The watch follows an inode, not a name. When the directory was replaced (a new one renamed
   * over it, a symlink swapped), the watch still reports the old one, which no longer holds
   * our files: place a new watch. A watch lost to an error is placed again here too.
   */
  private ensureWatch(): Promise<void> {
    // One check at a time: a burst rescan and a periodic one must not both re-watch (and log).
    this.checkingWatch ??= this.checkWatch().finally(() => {
      this.checkingWatch = undefined;
    });
    return this.checkingWatch;
  }

  private async checkWatch(): Promise<void> {
    if (this.opts.useEvents === false || this.closed) return;
    if (this.fsWatcher === undefined) {
      await this.watchDir();
      return;
    }
    const id = await dirId(this.dir);
    if (id === undefined || id === this.watchedId || this.closed) return; // gone: readdir reports it
    const was = this.watchedId;
    this.fsWatcher.close();
    this.fsWatcher = undefined;
    await this.watchDir();
    this.emit('replaced', `vassals directory ${this.dir} was replaced (inode ${was ?? '?'} -> ${id}); watching the new one`);
  }

  /** Belt and braces: compare with the directory once a burst of events has gone quiet. */
  private scheduleBurstRescan(): void {
    clearTimeout(this.burstTimer);
    this.burstTimer = setTimeout(() => void this.rescan(), this.opts.burstRescanMs ?? 300);
  }

  close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.rescanTimer);
    clearTimeout(this.burstTimer);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.fsWatcher?.close();
    return Promise.resolve();
  }

  /** Names the directory holds now, for a reload-all. */
  knownFiles(): string[] {
    return [...this.known.keys()];
  }

  /** Forget what was reported for a file so the next read reports it again (used by reload). */
  forget(file: string): void {
    this.known.delete(file);
  }

  /**
   * Compare the directory with what was reported and repair differences.
   * `initial` reads every file at once: at start-up there is no write in progress to wait for
   * that a watcher could have told us about.
   *
   * Every rescan looks at every file, even when inotify reported nothing: the rescan is there
   * for what inotify cannot report. libuv drops the kernel's queue-overflow event (it has no
   * watch descriptor), so after an overflow nothing says that events were lost; a write through
   * a shared mapping (mmap) changes a file with no event at all; and the target of a symlinked
   * vassal file lies outside the watched directory. The directory's own mtime changes only when
   * an entry is added, removed or renamed, never when a file is written in place, so it cannot
   * stand in for the files' stats.
   */
  async rescan(initial = false): Promise<void> {
    if (this.closed) return;
    if (!initial) await this.ensureWatch();
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (err) {
      this.emit('error', new Error(`cannot read vassals directory ${this.dir}: ${(err as Error).message}`));
      return;
    }
    const present = new Set<string>();
    if (initial) {
      // Start-up: every file is read at once, as fast as the thread pool goes.
      await Promise.all(
        names.map(async (name) => {
          const file = this.vassalPath(name);
          if (file === undefined) return;
          // Any entry counts, FIFOs and directories too: read() refuses them as invalid, once.
          if (!(await this.statEntry(file))) return;
          present.add(file);
          await this.process(file);
        }),
      );
    } else {
      // The stat only says whether to look again; what the file is, read() asks its descriptor.
      const seen = (file: string, st: Stats | undefined): void => {
        if (!st) return;
        present.add(file);
        const k = this.known.get(file);
        if (!k?.facts || !sameSignature(k.facts, st)) this.touch(file, 'rescan');
      };
      const pool: string[] = [];
      if (await this.statsStayLocal()) await this.statLocal(names, seen, pool);
      else
        for (const name of names) {
          const file = this.vassalPath(name);
          if (file !== undefined) pool.push(file);
        }
      await this.statInPool(pool, seen);
    }
    for (const file of this.known.keys()) if (!present.has(file)) this.touch(file, 'rescan');
  }

  /**
   * The path of a directory entry that may be a vassal file (path.join(dir, name): a name from
   * readdir has no slash and is never "." or ".."), undefined for one that is ignored. A known
   * file is not classified again: a rescan allocates what it must, no more (see statLocal()).
   */
  private vassalPath(name: string): string | undefined {
    const file = this.prefix + name;
    return this.known.has(file) || classifyVassalFile(name).kind !== 'ignored' ? file : undefined;
  }

  /**
   * Whether the directory is on a filesystem whose lstat answers from this machine's memory or
   * disk, never from a server that can hang (NFS, CIFS, FUSE, 9p...): only then may statLocal()
   * stat its files in the main thread. Asked at each rescan, since the directory (or a symlink
   * to it) can be replaced by one elsewhere.
   */
  private async statsStayLocal(): Promise<boolean> {
    const st = await fs.statfs(this.dir).catch(() => undefined);
    return st !== undefined && LOCAL_FILESYSTEMS.has(st.type);
  }

  /**
   * The periodic safety net runs every 10 s for as long as the emperor lives, so its cost is the
   * emperor's idle CPU (issue 13). Through the thread pool each stat is a promise, a request, a
   * trip to a pool thread and back (futex wake-ups, an eventfd write) and a Stats object: with
   * 1,000 files that was most of the idle CPU with 1,000 vassals; an lstatSync costs about a
   * quarter of it. So on a local filesystem each entry is lstat'ed here, in this thread, and
   * what that says is a regular file is done: for it lstat is stat (no link to follow), and
   * lstat never leaves the directory's filesystem. Anything else (a symlink, whose target may be
   * anywhere; a FIFO; an entry gone or unreadable) goes to the thread pool (`pool`), as before.
   * The trade-off is that this thread waits for each lstat: on a local filesystem that is memory
   * (the inodes were read at start-up and every 10 s since) or one disk read. So the lstats run
   * in slices of STAT_SLICE_MS with a turn of the event loop between them (a vassal's exit is
   * handled there), and two in a row slower than SLOW_STAT_MS (a busy disk) send the rest of
   * this rescan to the thread pool.
   */
  private async statLocal(names: string[], seen: (file: string, st: Stats | undefined) => void, pool: string[]): Promise<void> {
    let i = 0;
    let slow = 0;
    while (i < names.length) {
      if (this.closed) return;
      const sliceEnd = performance.now() + STAT_SLICE_MS;
      do {
        const file = this.vassalPath(names[i++]!);
        if (file === undefined) continue;
        const t0 = performance.now();
        let st: Stats | undefined;
        try {
          st = lstatSync(file, NO_THROW);
        } catch {
          st = undefined; // EACCES and the like: the pool's stat says what it says
        }
        const t1 = performance.now();
        if (st?.isFile()) seen(file, st);
        else pool.push(file);
        // Two slow ones in a row: one alone is as likely this thread losing its core for a
        // while on a busy machine (the next one then runs in a fresh time slice).
        if (t1 - t0 <= SLOW_STAT_MS) slow = 0;
        else if (++slow === 2) {
          for (; i < names.length; i++) {
            const rest = this.vassalPath(names[i]!);
            if (rest !== undefined) pool.push(rest);
          }
          return;
        }
        if (t1 >= sliceEnd) break;
      } while (i < names.length);
      if (i < names.length) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Stats in the thread pool, a few at a time: with all of them in flight at once, 1,000 files
   * meant 1,000 live promises and Stats objects across each young-generation GC: promoted, then
   * collected by a full mark-compact (issue 13). A few at a time, each dies young.
   */
  private async statInPool(files: string[], seen: (file: string, st: Stats | undefined) => void): Promise<void> {
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < files.length && !this.closed) {
        const file = files[next++]!;
        seen(file, await this.statEntry(file));
      }
    };
    await Promise.all(Array.from({ length: Math.min(RESCAN_LANES, files.length) }, lane));
  }

  /** Change detector only (links followed as read() follows them); never decides anything. */
  private async statEntry(file: string): Promise<Stats | undefined> {
    const lstat = (): Promise<Stats | undefined> => fs.lstat(file).catch(() => undefined);
    if (this.opts.load?.followSymlinks === false) return lstat();
    return (await fs.stat(file).catch(() => undefined)) ?? lstat();
  }

  private scheduleRescan(): void {
    if (this.closed) return;
    this.rescanTimer = setTimeout(() => {
      void this.rescan().finally(() => this.scheduleRescan());
    }, this.opts.rescanMs);
  }

  /**
   * A name appeared or went ('rename': created, moved in or out, deleted). A file moved into
   * place is complete, so it is read at once rather than after the settle delay (issue 13: most
   * of a deploy was that delay), and a deletion is reported at once. A file created and then
   * written in place also starts with this event, but each of its writes follows as a 'change':
   * one that arrives before the read is done marks the file dirty, and read() then reports
   * nothing and leaves it to the settled path, so a half-written file is never reported.
   */
  private appeared(file: string): void {
    if (this.closed) return;
    // Already being read or settling: a write is in progress, so it settles like any change.
    if (this.busy.has(file) || this.timers.has(file)) {
      this.touch(file);
      return;
    }
    this.lastEventAt.set(file, Date.now());
    void this.process(file);
  }

  /**
   * Something happened to `file`: (re)start its quiet period. A rescan finding a file not
   * reported yet is no news of a write: it must not restart an invalid file's grace period, or
   * rescans more frequent than the grace would keep an invalid file from ever being reported.
   */
  private touch(file: string, seenBy: 'event' | 'rescan' = 'event'): void {
    if (this.closed) return;
    if (seenBy === 'event' || !this.lastEventAt.has(file)) this.lastEventAt.set(file, Date.now());
    if (this.busy.has(file)) {
      this.dirty.add(file);
      return;
    }
    clearTimeout(this.timers.get(file));
    this.timers.set(
      file,
      setTimeout(() => {
        this.timers.delete(file);
        void this.process(file);
      }, this.opts.settleMs),
    );
  }

  private async process(file: string): Promise<void> {
    if (this.closed) return;
    this.busy.add(file);
    try {
      await this.read(file);
    } finally {
      this.busy.delete(file);
      if (this.dirty.delete(file)) this.touch(file);
    }
  }

  private async read(file: string): Promise<void> {
    const result = await loadVassalFile(file, this.opts.load);
    if (this.closed) return;
    if (!result.ok && result.gone) {
      // Never torn: reported at once. If the file comes back meanwhile, the event that says so
      // made it dirty, and it is read again (process()).
      if (this.known.delete(file)) this.emit('remove', file);
      this.lastEventAt.delete(file);
      return;
    }
    // An event for this file queued while it was read (a write: its bytes may be torn) reaches
    // touch() in the same poll phase as the read's last completion at the latest; setImmediate
    // runs after that whole phase. A dirty file is read again once settled (process()).
    await new Promise((resolve) => setImmediate(resolve));
    if (this.closed || this.dirty.has(file)) return;
    if (!result.ok && result.changing) {
      this.touch(file); // still being written
      return;
    }
    if (!result.ok) {
      const quietFor = Date.now() - (this.lastEventAt.get(file) ?? 0);
      const wait = this.opts.invalidGraceMs - quietFor;
      if (wait > 0 && !this.dirty.has(file)) {
        clearTimeout(this.timers.get(file));
        this.timers.set(
          file,
          setTimeout(() => {
            this.timers.delete(file);
            void this.process(file);
          }, wait),
        );
        return;
      }
    }
    const hash = result.ok ? changeKey(result.spec, result.facts) : result.hash;
    const prev = this.known.get(file);
    this.known.set(file, { hash, facts: result.facts });
    if (prev?.hash === hash) return; // touched, not changed; or refused again for the same reason
    this.emit('upsert', file, result.ok ? { ok: true, spec: result.spec, facts: result.facts } : { ok: false, error: result.error });
  }
}

/** device:inode of a directory (following a symlink, as the watch does), or undefined when it cannot be read. */
async function dirId(dir: string): Promise<string | undefined> {
  const st = await fs.stat(dir).catch(() => undefined);
  return st?.isDirectory() ? `${st.dev}:${st.ino}` : undefined;
}
