// What a vassal shares with its emperor and its collaborators: the context it is given, and
// the snapshot it reports.
import type { CheckStatus, VassalSpec } from '../config/spec.js';
import type { CheckState } from '../checks/state.js';
import type { Logger } from '../log/logger.js';
import type { OutputStats } from '../output/capture.js';
import type { MirrorLimit } from '../output/mirror.js';
import type { Limits, Placement } from '../process/containment.js';
import type { Identity } from '../process/identity.js';
import type { ExitInfo, SpawnRequest, VassalProcess } from '../process/types.js';
import type { VassalState } from './states.js';

/** What a vassal needs from its emperor; injected so a vassal can be driven in isolation. */
export interface VassalContext {
  readonly logger: Logger;
  readonly logsDir: string;
  /** Copy every output line into the emperor's log, labelled with the vassal name. */
  readonly mirrorOutput: boolean;
  /** Per-vassal rate limit of that copy (default: DEFAULT_MIRROR_LIMIT). */
  readonly mirrorLimit?: MirrorLimit;
  /** Environment every vassal inherits (secrets already removed). */
  readonly baseEnv: Readonly<Record<string, string>>;
  /** Kills recorded groups if the emperor dies without cleaning up. */
  readonly guardian: {
    add(pgid: number, cgroup: string | null): void;
    remove(pgid: number): void;
    /** Fleet instances: the cgroup a start is about to use, told to the guardian before the spawn. */
    expect?(cgroup: string): void;
    unexpect?(cgroup: string): void;
  };
  /**
   * Asked right before each spawn; a reason refuses it (a failed start). A fleet instance may
   * start only while its node's claim on it is valid.
   */
  readonly mayStart?: (spec: VassalSpec) => string | undefined;
  /** Pid records, so the next emperor can kill what a SIGKILLed one left behind. */
  readonly records: {
    write(name: string, rec: { pid: number; pgid: number; startTime: string | undefined; argv: readonly string[]; emperorPid: number; spawnId: string }): Promise<void>;
    remove(name: string): Promise<void>;
  };
  /**
   * Awaited after a vassal leaves `running` and before its stop signal is sent: the registrar
   * deregisters here, so the registry stops pointing at the app before the app stops serving.
   */
  readonly beforeStop?: (name: string) => Promise<void>;
  /** Who a spec runs as (tyrant mode, user:/group:); undefined = as the emperor. */
  readonly identityFor?: (spec: VassalSpec) => Identity | undefined;
  /** Environment the emperor adds for a spec (CONSUL_HTTP_ADDR, EMPEROR_SERVICE_ID). */
  readonly extraEnv?: (spec: VassalSpec) => Record<string, string>;
  /** The uWSGI binary that runs .ini vassals (--uwsgi-bin; default `uwsgi` on PATH). */
  readonly uwsgiBin?: string;
  /** The process layer (default: spawnVassal); tests drive the state machine with a fake. */
  readonly spawn?: (req: SpawnRequest) => VassalProcess;
  /** Per-vassal cgroups and limits (src/process/containment.ts); absent = process groups only. */
  readonly containment?: {
    /** Throws (a failed start) when the cgroup cannot be made or a limit is refused. */
    prepare(name: string, limits: Limits | null): Placement;
    release(name: string): Promise<void>;
    /** Makes the cgroup prepare() will use, off the main thread; never rejects. */
    precreate?(name: string): Promise<void>;
  };
  /** The clock for back-off and restart intensity (default: Date.now); tests move it by hand. */
  readonly now?: () => number;
}

/** A vassal's own log line: every line carries the vassal name and an event. */
export type VassalLog = (level: 'info' | 'warn' | 'error', event: string, message: string, fields?: Record<string, unknown>) => void;

export interface LastExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly error?: string;
  /** The kernel's OOM killer struck in the vassal's memory cgroup during this run. */
  readonly oomKilled?: boolean;
  /** One human phrase: "exited with code 1", "killed by SIGKILL", "oom-killed", "not ready within 30s". */
  readonly reason: string;
  readonly at: number;
}

export interface VassalSnapshot {
  readonly name: string;
  readonly state: VassalState;
  readonly pid: number | null;
  /** Since the current process was spawned; null without a process. */
  readonly uptimeMs: number | null;
  readonly restarts: number;
  readonly failures: number;
  readonly lastExit: LastExit | null;
  /** While fatal: why it gave up (max_retries or max_restarts, and the last exit). */
  readonly fatalReason: string | null;
  readonly file: string;
  readonly hash: string;
  readonly stateSince: number;
  readonly nextStartAt: number | null;
  /** Worst of the checks while running (passing without checks); null when not running. */
  readonly health: CheckStatus | null;
  /** resultLagMs: last result time minus its scheduled time (scheduling delay + run time). */
  readonly checks: Array<CheckState & { readonly resultLagMs: number | null }>;
  /** ms from spawn to ready of the current process. */
  readonly readyAfterMs: number | null;
  /** Output accounting since the vassal was deployed. */
  readonly output: OutputStats;
  /** Runs ended by the OOM killer since the vassal was deployed. */
  readonly oomKills: number;
  /** The cgroup of the current process; null without a process or without cgroup containment. */
  readonly cgroup: string | null;
}

export function describeExit(info: ExitInfo): string {
  if (info.error) return info.error;
  const plain = info.signal ? `killed by ${info.signal}` : `exited with code ${info.code ?? '?'}`;
  // The OOM killer sends SIGKILL; any other end after an OOM kill in the cgroup says both.
  if (info.oomKilled) return info.signal === 'SIGKILL' ? 'oom-killed' : `${plain} after an oom-kill in its cgroup`;
  return plain;
}

/** What happened to a process, as status shows it. */
export function lastExitOf(info: ExitInfo, at = Date.now()): LastExit {
  return {
    code: info.code,
    signal: info.signal,
    reason: describeExit(info),
    at,
    ...(info.error ? { error: info.error } : {}),
    ...(info.oomKilled ? { oomKilled: true } : {}),
  };
}

/** A stop the emperor caused (timeout, failed readiness, critical health): no exit code. */
export function lastExitBecause(reason: string, at = Date.now()): LastExit {
  return { code: null, signal: null, reason, at };
}
