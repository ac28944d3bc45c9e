import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher, type Stats } from 'node:fs';
import { classifyVassalFile } from '../config/names.js';
import { changeKey, loadVassalFile, type LoadOptions } from '../config/load-file.js';
import type { ConfigError } from '../config/errors.js';
import { signatureOf, type FileFacts } from '../config/read.js';
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

/** Stats a periodic rescan has in flight at once (see rescan()). */
const RESCAN_LANES = 8;

interface Known {
  /** Hash of the content last reported. */
  hash: string;
  /** Cheap change detector for rescans: skip reading a file whose inode, size and times are unchanged. */
  sig: string;
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

  constructor(
    readonly dir: string,
    private readonly opts: WatcherOptions,
  ) {
    super();
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
    const visit = async (name: string): Promise<void> => {
      if (classifyVassalFile(name).kind === 'ignored') return;
      const file = path.join(this.dir, name);
      // Any entry counts, FIFOs and directories too: read() refuses them as invalid, once. The
      // stat only says whether to look again; what the file is, read() asks its descriptor.
      const st = await this.statEntry(file);
      if (!st) return;
      present.add(file);
      const k = this.known.get(file);
      if (initial) await this.process(file);
      else if (!k || k.sig !== signatureOf(st)) this.touch(file, 'rescan');
    };
    if (initial) {
      // Start-up: every file is read at once, as fast as the thread pool goes.
      await Promise.all(names.map(visit));
    } else {
      // The periodic safety net runs every 10 s for as long as the emperor lives. With all stats
      // in flight at once, 1,000 files meant 1,000 live promises and Stats objects across each
      // young-generation GC: promoted, then collected by a full mark-compact, which made most of
      // the idle CPU with 1,000 vassals (issue 13). A few at a time, each dies young.
      let next = 0;
      const lane = async (): Promise<void> => {
        while (next < names.length && !this.closed) await visit(names[next++]!);
      };
      await Promise.all(Array.from({ length: Math.min(RESCAN_LANES, names.length) }, lane));
    }
    for (const file of this.known.keys()) if (!present.has(file)) this.touch(file, 'rescan');
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
    this.known.set(file, { hash, sig: result.facts ? signatureOf(result.facts) : '' });
    if (prev?.hash === hash) return; // touched, not changed; or refused again for the same reason
    this.emit('upsert', file, result.ok ? { ok: true, spec: result.spec, facts: result.facts } : { ok: false, error: result.error });
  }
}

/** device:inode of a directory (following a symlink, as the watch does), or undefined when it cannot be read. */
async function dirId(dir: string): Promise<string | undefined> {
  const st = await fs.stat(dir).catch(() => undefined);
  return st?.isDirectory() ? `${st.dev}:${st.ino}` : undefined;
}
