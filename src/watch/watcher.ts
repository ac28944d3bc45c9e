import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { classifyVassalFile } from '../config/names.js';
import { parseVassal } from '../config/load.js';
import type { ConfigError } from '../config/errors.js';
import type { VassalSpec } from '../config/spec.js';

export type FileVerdict = { ok: true; spec: VassalSpec } | { ok: false; error: ConfigError };

export interface WatcherEvents {
  /** A vassal file appeared or its content changed (never for a plain touch). */
  upsert: [file: string, verdict: FileVerdict];
  /** A vassal file is gone. */
  remove: [file: string];
  /** The directory could not be read or watched (nothing that was running is affected). */
  error: [err: Error];
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
  /**
   * false = no inotify at all, rescans only (like the uWSGI Emperor's polling): for network
   * filesystems where change events never arrive.
   */
  readonly useEvents?: boolean;
}

interface Known {
  /** Hash of the content last reported. */
  hash: string;
  /** Cheap change detector for rescans: skip reading a file whose inode, size and times are unchanged. */
  sig: string;
}

const sigOf = (st: { ino: number; size: number; mtimeMs: number; ctimeMs: number }): string =>
  `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/**
 * Turns a directory into a stream of settled vassal-file events. Only this module knows about
 * chokidar; everything downstream sees "this file now says X" or "this file is gone".
 */
export class VassalDirWatcher extends EventEmitter<WatcherEvents> {
  private readonly known = new Map<string, Known>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly lastEventAt = new Map<string, number>();
  /** Files being read now; an event meanwhile re-schedules them after the read. */
  private readonly busy = new Set<string>();
  private readonly dirty = new Set<string>();
  private chokidar: FSWatcher | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly dir: string,
    private readonly opts: WatcherOptions,
  ) {
    super();
  }

  /** Starts watching, then reports every vassal file already present. */
  async start(): Promise<void> {
    const dir = this.dir;
    if (this.opts.useEvents === false) {
      await this.rescan(true);
      this.scheduleRescan();
      return;
    }
    this.chokidar = watch(dir, {
      depth: 0,
      ignoreInitial: true,
      // Our own settling replaces awaitWriteFinish, whose size polling costs seconds of latency.
      awaitWriteFinish: false,
      ignored: (p: string) => p !== dir && path.dirname(p) === dir && classifyVassalFile(path.basename(p)).kind === 'ignored',
    });
    const onPath = (p: string): void => {
      if (path.dirname(p) === dir) this.touch(p);
    };
    this.chokidar.on('add', onPath).on('change', onPath).on('unlink', onPath);
    this.chokidar.on('error', (err) => this.emit('error', err instanceof Error ? err : new Error(String(err))));
    await new Promise<void>((resolve) => this.chokidar!.once('ready', () => resolve()));
    await this.rescan(true);
    this.scheduleRescan();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.rescanTimer);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await this.chokidar?.close();
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
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (err) {
      this.emit('error', new Error(`cannot read vassals directory ${this.dir}: ${(err as Error).message}`));
      return;
    }
    const present = new Set<string>();
    await Promise.all(
      names.map(async (name) => {
        if (classifyVassalFile(name).kind === 'ignored') return;
        const file = path.join(this.dir, name);
        const st = await fs.stat(file).catch(() => undefined);
        if (!st?.isFile()) return;
        present.add(file);
        const k = this.known.get(file);
        if (initial) await this.process(file);
        else if (!k || k.sig !== sigOf(st)) this.touch(file);
      }),
    );
    for (const file of this.known.keys()) if (!present.has(file)) this.touch(file);
  }

  private scheduleRescan(): void {
    if (this.closed) return;
    this.rescanTimer = setTimeout(() => {
      void this.rescan().finally(() => this.scheduleRescan());
    }, this.opts.rescanMs);
  }

  /** Something happened to `file`: (re)start its quiet period. */
  private touch(file: string, delay = this.opts.settleMs): void {
    if (this.closed) return;
    this.lastEventAt.set(file, Date.now());
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
      }, delay),
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
    const before = await fs.stat(file).catch(() => undefined);
    if (!before?.isFile()) {
      if (this.known.delete(file)) this.emit('remove', file);
      this.lastEventAt.delete(file);
      return;
    }
    let content: Buffer;
    try {
      content = await fs.readFile(file);
    } catch {
      // Vanished or unreadable between stat and read: the next event or rescan decides.
      this.touch(file);
      return;
    }
    const after = await fs.stat(file).catch(() => undefined);
    if (!after || sigOf(after) !== sigOf(before)) {
      this.touch(file); // still being written
      return;
    }
    const verdict = parseVassal(content, file);
    if (!verdict.ok) {
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
    const hash = verdict.ok ? verdict.spec.hash : hashOf(content);
    const prev = this.known.get(file);
    this.known.set(file, { hash, sig: sigOf(after) });
    if (prev?.hash === hash) return; // touched, not changed
    this.emit('upsert', file, verdict);
  }
}

function hashOf(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}
