// Contract between the registrar (desired state, retries, anti-entropy) and the registry
// adapters (etcd, Consul). Adapters are dumb and idempotent; all policy lives in the registrar.
import type { CheckSpec, CheckStatus } from '../config/spec.js';

/** Everything a registry needs to know about one ready vassal instance. */
export interface Registration {
  /** Stable and unique per host (host + vassal name, sanitised): Consul's service ID. */
  readonly id: string;
  readonly vassal: string;
  /** empusa's service type (etcd key level) — "default" when the file gives none. */
  readonly type: string;
  /** Service name (default: the vassal name). */
  readonly name: string;
  /** host:port, what empusa writes as the key's value. */
  readonly location: string;
  readonly address: string;
  readonly port: number | null;
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  /** Worst status of the vassal's checks (passing when it has none). */
  readonly health: CheckStatus;
  readonly checks: ReadonlyArray<{ readonly name: string; readonly status: CheckStatus; readonly output: string }>;
  readonly pid: number;
  /** etcd: drop the location key while health is critical. */
  readonly deregisterWhenCritical: boolean;
  /** Consul: the vassal's http/tcp checks to register as Consul-native checks as well (service.consul.native_checks). */
  readonly nativeChecks: readonly CheckSpec[];
  /** Consul: the agents the vassal's file names (consul-agent); absent or empty = the emperor's --consul-agent. */
  readonly consulAgents?: readonly string[];
  /** Consul: the file's consistency mode for reads (consul-consistency-mode; default "default"). */
  readonly consulConsistency?: 'default' | 'consistent' | 'stale';
}

/** Enough to find a registration again: Consul keys on id, etcd on type + name. */
export interface RegistrationKey {
  readonly id: string;
  readonly type: string;
  readonly name: string;
}

export type Change = { readonly op: 'put'; readonly reg: Registration } | { readonly op: 'delete'; readonly key: RegistrationKey };

/** One registration as found in the registry, for anti-entropy. */
export interface Observed {
  readonly key: RegistrationKey;
  /** Must equal `adapter.fingerprint(reg)` exactly when the registry holds what `reg` would write. */
  readonly fingerprint: string;
}

/**
 * An adapter's error for a call that got no answer in time (the registry may be alive but
 * busy), as opposed to one that found it down: such errors carry `slow: true`.
 */
export function isSlowFailure(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { slow?: unknown }).slow === true;
}

/**
 * One registry. `apply` must be idempotent (putting what is there, deleting what is gone: fine)
 * and may batch. Throwing means "nothing is known to have been applied": the registrar retries
 * (an error with `slow: true`, see isSlowFailure, means the call timed out rather than failed).
 */
export interface RegistryAdapter {
  readonly kind: 'etcd' | 'consul';
  /** Human description for logs, e.g. "etcd 127.0.0.1:2379 (tree root /svc)". Never secrets. */
  readonly description: string;
  apply(changes: readonly Change[]): Promise<void>;
  /** A digest of exactly what `apply(put reg)` writes (values, health, tags...). */
  fingerprint(reg: Registration): string;
  /**
   * What the registry holds now that this emperor owns (etcd: keys on its lease; Consul:
   * services carrying its instance marker), keyed by registration id, for anti-entropy.
   * Throws when the registry is unreachable.
   */
  snapshot(): Promise<Map<string, Observed>>;
  /**
   * Adapters call this when everything they wrote may be gone at once (etcd lease lost,
   * Consul agent restarted); the registrar then re-applies the whole desired set.
   */
  onReset(listener: () => void): void;
  /** Release connections; must not deregister (the registrar does that first). */
  close(): Promise<void>;
  /** Counters for status and benchmarks (round trips, heartbeats...). */
  stats?(): Readonly<Record<string, number>>;
  /** Whether this registry takes `reg` at all (default: every registration). */
  accepts?(reg: Registration): boolean;
  /** False while the adapter has nothing to talk to (not shown in status); default true. */
  readonly active?: boolean;
}
