// The validated, normalized, immutable description of one vassal, as read from its file.
// Everything downstream (watch, vassal, process) consumes this and never the raw document,
// so a spec that exists is a spec that is valid. The types are inferred from the schema
// (schema.ts), which is where each field is described.
import type { VassalDocument } from './schema.js';

/** Read-only all the way down, as deepFreeze makes a spec at runtime. */
type Frozen<T> = T extends (infer Item)[]
  ? readonly Frozen<Item>[]
  : T extends object
    ? { readonly [K in keyof T]: Frozen<T[K]> }
    : T;

export type RestartPolicy = VassalDocument['restart'];
export type BackoffSpec = Frozen<VassalDocument['backoff']>;
export type LogsSpec = Frozen<VassalDocument['logs']>;
export type LimitsSpec = Frozen<NonNullable<VassalDocument['limits']>>;
export type ReadySpec = Frozen<VassalDocument['start']['ready']>;
type CheckOutput = VassalDocument['checks'][number];
// The schema returns a ttl check and a periodic check as two shapes; one shape whose probe is
// either is what consumers (and tests building a spec) want. Pick is not distributive: it merges.
export type CheckSpec = Frozen<Pick<CheckOutput, keyof CheckOutput>>;
/** Something a probe can test. exec argv runs in the vassal's cwd with the vassal's env. */
export type ProbeTarget = Exclude<CheckSpec['probe'], { kind: 'ttl' }>;

/** Consul's check statuses; the worst of a vassal's checks is its aggregate health. */
export type CheckStatus = 'passing' | 'warning' | 'critical';

/** How a vassal is registered (etcd: empusa layout; Consul: an agent service). */
export type ServiceSpec = Frozen<Omit<NonNullable<VassalDocument['service']>, 'name'> & { name: string }>;

export type VassalSpec = Frozen<
  Omit<VassalDocument, 'cwd' | 'service'> & {
    /** File name without extension; already checked to be a safe identifier. */
    name: string;
    /** Absolute path of the vassal file. */
    file: string;
    /** sha256 of the file's bytes: "changed" means this changed. */
    hash: string;
    /** Absolute working directory (relative paths in the file resolve against the file's directory). */
    cwd: string;
    /** Registration in etcd/Consul; null = supervised but never registered. */
    service: ServiceSpec | null;
    /**
     * command: argv as written (YAML, JSON). uwsgi: an .ini file, run as `<--uwsgi-bin> --ini <file>`,
     * reloaded in place (Emperor protocol byte 1) when touched, as the uWSGI Emperor does.
     */
    kind: 'command' | 'uwsgi';
  }
>;

export const VASSAL_EXTENSIONS = ['.yaml', '.yml', '.json', '.ini'] as const;
