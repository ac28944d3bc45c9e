import type { Duplex, Readable } from 'node:stream';
import type { Identity } from './identity.js';
import type { Placement } from './containment.js';
// Contract between the vassal state machine and the process layer.

/** Every vassal's fd 3: its end of the uWSGI Emperor protocol's socketpair ($UWSGI_EMPEROR_FD). */
export const EMPEROR_FD = 3;
/** fd 4: the readiness channel of `start.ready.notify` ($NOTIFY_FD). */
export const NOTIFY_FD = 4;

export interface ExitInfo {
  /** Exit code when the leader exited normally, else null. */
  readonly code: number | null;
  /** Signal name when the leader was killed by a signal, else null. */
  readonly signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all (ENOENT, EACCES...). */
  readonly error?: string;
  /** The kernel's OOM killer killed a process of the vassal's memory cgroup during this run. */
  readonly oomKilled?: boolean;
}

export type StreamName = 'stdout' | 'stderr';

/** Where a spawned child's output pipes go; called once, right after a successful spawn. */
export interface OutputSink {
  attach(streams: ReadonlyArray<readonly [Readable | undefined, StreamName]>): void;
}

export interface SpawnRequest {
  readonly name: string;
  readonly argv: readonly string[];
  readonly cwd: string;
  /** Complete environment for the child (the caller merges process.env and the spec env). */
  readonly env: Readonly<Record<string, string>>;
  /** Receives the child's stdout and stderr pipes (see src/output); absent = output discarded. */
  readonly output?: OutputSink | undefined;
  /** Open a pipe as the child's fd 4 for readiness notification (the caller sets NOTIFY_FD=4). */
  readonly notify?: boolean;
  /** Run as this user (needs root and util-linux setpriv). */
  readonly identity?: Identity | undefined;
  /** The vassal's cgroups (joined before exec); undefined = process group only. */
  readonly placement?: Placement | undefined;
  /** RLIMIT_NOFILE (soft and hard) for the app. */
  readonly openFiles?: number | undefined;
}

export interface VassalProcess {
  readonly pid: number;
  /** Process group id; equals pid because every vassal leads its own group. */
  readonly pgid: number;
  /** /proc/<pid>/stat starttime (clock ticks since boot), to recognise a reused PID. */
  readonly startTime: string | undefined;
  /** Resolves once, from the child's exit event (never from stdio closing). */
  readonly exited: Promise<ExitInfo>;
  /** Read end of the child's fd 4, when the request asked for `notify`. */
  readonly notify?: NodeJS.ReadableStream;
  /** The emperor's end of the child's fd 3, the Emperor protocol socketpair (absent for fakes and failed spawns). */
  readonly emperor?: Duplex;
  /** Signal the whole process group. Returns false when the group no longer exists. */
  signalGroup(signal: NodeJS.Signals): boolean;
  /** True while any process of the group (or of the cgroup, when it has one) is alive. */
  groupAlive(): boolean;
  /** The vassal's v2 cgroup directory, when contained by one. */
  readonly cgroup?: string;
  /**
   * The cgroup.procs files this process joined: an exec probe for the vassal joins them too
   * (before it execs), so it shares the vassal's limits and goes with the vassal's cgroup.
   */
  readonly joined?: readonly string[];
  /** Resolves true as soon as the cgroup is empty (an event, not a poll), false after ms. */
  whenGone?(ms: number): Promise<boolean>;
}
