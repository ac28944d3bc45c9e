// The validated, normalized, immutable description of one vassal, as read from its file.
// Everything downstream (watch, vassal, process) consumes this and never the raw document,
// so a spec that exists is a spec that is valid.

export type RestartPolicy = 'always' | 'on-failure' | 'never';

export interface BackoffSpec {
  /** First restart delay; doubles per consecutive failure. */
  readonly initialMs: number;
  /** Cap for the doubling. */
  readonly maxMs: number;
  /** A run at least this long resets the failure count (the app "stayed up"). */
  readonly resetAfterMs: number;
  /** Consecutive failures after which the vassal goes fatal instead of retrying. */
  readonly maxRetries: number;
}

/** Consul's check statuses; the worst of a vassal's checks is its aggregate health. */
export type CheckStatus = 'passing' | 'warning' | 'critical';

/** Something a probe can test. exec argv runs in the vassal's cwd with the vassal's env. */
export type ProbeTarget =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'http'; readonly url: string }
  | { readonly kind: 'exec'; readonly argv: readonly string[] };

/** When a started vassal counts as ready (running). */
export type ReadySpec =
  /** Run the probe every intervalMs until it first passes. */
  | { readonly kind: 'probe'; readonly probe: ProbeTarget; readonly intervalMs: number }
  /** The app writes READY=1 and a newline to the fd named in $NOTIFY_FD (s6 / sd_notify style). */
  | { readonly kind: 'notify' }
  /** Ready after staying up this long. */
  | { readonly kind: 'delay'; readonly ms: number }
  /** Not given in the file: TCP on service.port when the vassal has one, else up for 1 s. */
  | { readonly kind: 'default' };

export interface CheckSpec {
  /** Unique within the vassal; default derived from kind and target, e.g. "tcp:127.0.0.1:8080". */
  readonly name: string;
  readonly probe: ProbeTarget | { readonly kind: 'ttl'; readonly ttlMs: number };
  /** Period between runs (unused for ttl). */
  readonly intervalMs: number;
  /** A run taking longer is critical (and an exec probe's group is killed). */
  readonly timeoutMs: number;
  /** Consecutive passing results needed before the status turns passing. */
  readonly successesBeforePassing: number;
  /** Consecutive critical results needed before the status turns critical. */
  readonly failuresBeforeCritical: number;
}

/** How a vassal is registered (etcd: empusa layout; Consul: an agent service). */
export interface ServiceSpec {
  /** Service name (default: the vassal name). */
  readonly name: string;
  /** empusa's service type: the etcd key level above the name. */
  readonly type: string;
  /** Consul service ID; null = derived from host and vassal name. */
  readonly id: string | null;
  readonly address: string;
  readonly port: number | null;
  /** host:port as registered in etcd. */
  readonly location: string;
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  /** Remove the etcd location key while the vassal's health is critical. */
  readonly deregisterWhenCritical: boolean;
  /** Also register the vassal's http/tcp checks as Consul-native checks. */
  readonly consulNativeChecks: boolean;
}

export interface VassalSpec {
  /** File name without extension; already checked to be a safe identifier. */
  readonly name: string;
  /** Absolute path of the vassal file. */
  readonly file: string;
  /** sha256 of the file's bytes: "changed" means this changed. */
  readonly hash: string;
  /** Final argv. With `shell: true` this is ['/bin/sh', '-c', command]. */
  readonly argv: readonly string[];
  readonly shell: boolean;
  /** Absolute working directory (relative paths in the file resolve against the file's directory). */
  readonly cwd: string;
  /** Extra environment on top of the emperor's own. */
  readonly env: Readonly<Record<string, string>>;
  readonly restart: RestartPolicy;
  readonly backoff: BackoffSpec;
  readonly start: { readonly timeoutMs: number; readonly ready: ReadySpec };
  /** Periodic checks, run while the vassal is running. */
  readonly checks: readonly CheckSpec[];
  /** Restart the vassal after this many consecutive critical aggregate results since ready. */
  readonly onCritical: { readonly restartAfter: number } | null;
  /** drainMs: wait after deregistration before the stop signal (in-flight requests finish). */
  readonly stop: { readonly signal: NodeJS.Signals; readonly timeoutMs: number; readonly drainMs: number };
  /** Registration in etcd/Consul; null = supervised but never registered. */
  readonly service: ServiceSpec | null;
  /** Run as this user / group (name or numeric id); honoured only when the emperor runs as root. */
  readonly user: string | null;
  readonly group: string | null;
}

export const VASSAL_EXTENSIONS = ['.yaml', '.yml', '.json'] as const;
