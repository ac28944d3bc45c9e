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
  readonly start: { readonly timeoutMs: number };
  readonly stop: { readonly signal: NodeJS.Signals; readonly timeoutMs: number };
}

export const VASSAL_EXTENSIONS = ['.yaml', '.yml', '.json'] as const;
