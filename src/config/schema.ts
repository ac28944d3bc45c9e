// The vassal document: what a vassal file may say, its defaults, and the cross-field rules.
// This is the one description of a vassal file: the spec types (spec.ts) are inferred from it,
// and every error message comes from the fields (fields.ts) or the rules here. Adding a field
// is adding it to the shape of its object (and, for a snake_case key, naming its camelCase
// output in that object's transform); nothing else needs to follow.
import { z } from 'zod';
import { deepFreeze } from './data.js';
import { formatDuration } from './duration.js';
import {
  account,
  atLeastOne,
  checkName,
  command,
  cpuWeight,
  cwd,
  duration,
  env,
  expecting,
  execTarget,
  httpTarget,
  keySegment,
  logKeep,
  logSize,
  memoryLimit,
  meta,
  notifyFlag,
  emperorFlag,
  openFiles,
  pidsLimit,
  portNumber,
  positiveDuration,
  refuse,
  serviceId,
  signal,
  tags,
  tcpTarget,
  address,
} from './fields.js';

export { CHECK_NAME } from './fields.js';

export const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const;

// Frozen at runtime too: specs are built from these, so mutating them would change every vassal.
export const DEFAULTS = deepFreeze({
  shell: false,
  restart: 'always',
  backoff: { initialMs: 1_000, maxMs: 60_000, resetAfterMs: 30_000, maxRetries: 5, maxRestarts: { count: 10, withinMs: 600_000 } },
  start: { timeoutMs: 30_000, ready: { kind: 'default' } },
  /** How often a tcp/http/exec readiness probe is retried when start.ready gives no interval. */
  readyIntervalMs: 100,
  check: {
    intervalMs: 10_000,
    /** The timeout defaults to min(interval, this). */
    maxDefaultTimeoutMs: 10_000,
    successesBeforePassing: 1,
    failuresBeforeCritical: 1,
  },
  stop: { signal: 'SIGTERM', timeoutMs: 10_000, drainMs: 0 },
  /** A vassal that has sent one Emperor-protocol heartbeat (byte 26) and then none for this long is hung (uWSGI's emperor-required-heartbeat). */
  heartbeatTimeoutMs: 30_000,
  /** 10M × (5 + 1): at most 60 MiB of logs per vassal. */
  logs: { maxBytes: 10 * 1024 * 1024, keep: 5 },
} as const);

/** `undefined` (the field is absent) becomes null, which the spec uses for "not set". */
const orNull = <T extends z.ZodType>(schema: T) => schema.optional().transform((value) => value ?? null);

/** "a, b, c or d" */
const orList = (items: readonly string[]): string =>
  items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1] ?? ''}`;

// ---- restarts -----------------------------------------------------------------------------

const backoff = z
  .strictObject({
    initial: duration.optional(),
    max: duration.optional(),
    reset_after: duration.optional(),
    max_retries: atLeastOne.optional(),
    max_restarts: z.strictObject({ count: atLeastOne, within: positiveDuration }).optional(),
  })
  .optional()
  .transform((raw, ctx) => {
    const spec = {
      /** First restart delay; doubles per consecutive failure. */
      initialMs: raw?.initial ?? DEFAULTS.backoff.initialMs,
      /** Cap for the doubling. */
      maxMs: raw?.max ?? DEFAULTS.backoff.maxMs,
      /** A run at least this long resets the failure count (the app "stayed up"). */
      resetAfterMs: raw?.reset_after ?? DEFAULTS.backoff.resetAfterMs,
      /** Consecutive failures after which the vassal goes fatal instead of retrying. */
      maxRetries: raw?.max_retries ?? DEFAULTS.backoff.maxRetries,
      /**
       * Restart intensity (as OTP supervisors have it): a failure after `count` restarts within
       * `withinMs` is fatal however long each run lasted. Catches an app that crashes just after
       * reset_after, which maxRetries never sees.
       */
      maxRestarts: raw?.max_restarts ? { count: raw.max_restarts.count, withinMs: raw.max_restarts.within } : DEFAULTS.backoff.maxRestarts,
    };
    if (spec.maxMs < spec.initialMs) {
      // Blame the field the user actually wrote: with max left at its default, initial is the odd one.
      if (raw?.max === undefined) {
        return refuse(ctx, `expected at most backoff.max (${formatDuration(spec.maxMs)} by default), got ${formatDuration(spec.initialMs)}; lower it or raise backoff.max`, ['initial']);
      }
      return refuse(ctx, `expected a duration of at least backoff.initial (${formatDuration(spec.initialMs)}), got ${formatDuration(spec.maxMs)}`, ['max']);
    }
    return spec;
  });

// ---- readiness ----------------------------------------------------------------------------

const READY_KINDS = ['tcp', 'http', 'exec', 'notify', 'delay', 'emperor'] as const;
const PROBE_KINDS = ['tcp', 'http', 'exec'] as const;

/** When a started vassal counts as ready (running). */
const ready = z
  .strictObject({
    tcp: tcpTarget.optional(),
    http: httpTarget.optional(),
    exec: execTarget.optional(),
    notify: notifyFlag.optional(),
    emperor: emperorFlag.optional(),
    delay: duration.optional(),
    interval: positiveDuration.optional(),
  })
  .optional()
  .transform((raw, ctx) => {
    /** Not given in the file: TCP on service.port when the vassal has one, else up for 1 s. */
    if (raw === undefined) return DEFAULTS.start.ready;
    // zod runs this even after an unknown key; one report about the typo is enough.
    if (ctx.issues.length > 0) return z.NEVER;
    const expected = `exactly one of ${orList(READY_KINDS)}`;
    const [kind, second] = READY_KINDS.filter((name) => raw[name] !== undefined);
    if (kind === undefined) return refuse(ctx, `expected ${expected}, got ${raw.interval === undefined ? 'an empty mapping' : 'only interval'}`);
    // With two kinds, point at the second: the first one is the likelier intent.
    if (second !== undefined) return refuse(ctx, `expected ${expected}, got both ${kind} and ${second}; keep one`, [second]);
    if (kind === 'notify' || kind === 'delay' || kind === 'emperor') {
      if (raw.interval !== undefined) return refuse(ctx, `interval only applies to ${orList(PROBE_KINDS)} probes, not to ${kind}; remove it`, ['interval']);
      /**
       * notify: the app writes READY=1 and a newline to the fd named in $NOTIFY_FD (s6 / sd_notify style);
       * emperor: the app sends byte 5 on $UWSGI_EMPEROR_FD (the uWSGI Emperor protocol); delay: ready after staying up this long.
       */
      if (kind === 'delay') return { kind: 'delay', ms: raw.delay ?? 0 } as const;
      return kind === 'notify' ? ({ kind: 'notify' } as const) : ({ kind: 'emperor' } as const);
    }
    const probe = raw[kind];
    if (probe === undefined) return z.NEVER; // unreachable: `kind` was picked because it is set
    /** Run the probe every intervalMs until it first passes. */
    return { kind: 'probe', probe, intervalMs: raw.interval ?? DEFAULTS.readyIntervalMs } as const;
  });

const start = z
  .strictObject({ timeout: positiveDuration.optional(), ready })
  .optional()
  .transform((raw) => ({ timeoutMs: raw?.timeout ?? DEFAULTS.start.timeoutMs, ready: raw?.ready ?? DEFAULTS.start.ready }));

// ---- checks -------------------------------------------------------------------------------

type CheckProbe =
  | z.output<typeof tcpTarget>
  | z.output<typeof httpTarget>
  | z.output<typeof execTarget>
  | { readonly kind: 'ttl'; readonly ttlMs: number };

/** Every run of characters a check name cannot contain becomes one "_". */
const sanitizeName = (text: string): string => text.replace(/[^A-Za-z0-9_.:@/+-]+/g, '_');

/** "<kind>:<target>", fitted to CHECK_NAME; used when a check has no name. */
export function defaultCheckName(probe: CheckProbe): string {
  switch (probe.kind) {
    case 'tcp':
      return sanitizeName(`tcp:${probe.host.includes(':') ? `[${probe.host}]` : probe.host}:${probe.port}`);
    case 'http':
      return sanitizeName(`http:${probe.url}`);
    case 'exec':
      return sanitizeName(`exec:${probe.argv.join(' ')}`);
    case 'ttl':
      return 'ttl';
  }
}

const CHECK_KINDS = ['http', 'tcp', 'exec', 'ttl'] as const;
/** Settings of periodic checks; a TTL check is pushed by the app, so none of them apply. */
const PERIODIC_ONLY = ['interval', 'timeout', 'successes_before_passing', 'failures_before_critical'] as const;

const check = z
  .strictObject({
    name: checkName.optional(),
    http: httpTarget.optional(),
    tcp: tcpTarget.optional(),
    exec: execTarget.optional(),
    ttl: positiveDuration.optional(),
    interval: positiveDuration.optional(),
    timeout: positiveDuration.optional(),
    successes_before_passing: atLeastOne.optional(),
    failures_before_critical: atLeastOne.optional(),
  })
  .transform((raw, ctx) => {
    if (ctx.issues.length > 0) return z.NEVER;
    const expected = `exactly one of ${orList(CHECK_KINDS)}`;
    const [kind, second] = CHECK_KINDS.filter((name) => raw[name] !== undefined);
    if (kind === undefined) return refuse(ctx, `expected ${expected}, got none of them`);
    if (second !== undefined) return refuse(ctx, `expected ${expected}, got both ${kind} and ${second}; keep one`, [second]);
    if (kind === 'ttl') {
      const misplaced = PERIODIC_ONLY.find((field) => raw[field] !== undefined);
      if (misplaced !== undefined) {
        return refuse(ctx, `not allowed with ttl: a TTL check is not run by the emperor, the app reports its status; remove ${misplaced}`, [misplaced]);
      }
      const ttlMs = raw.ttl ?? 0;
      const probe = { kind: 'ttl', ttlMs } as const;
      // Not run by the emperor: the interval is the TTL, so "how often is this expected to report" has an answer.
      return { name: raw.name ?? defaultCheckName(probe), probe, intervalMs: ttlMs, timeoutMs: ttlMs, successesBeforePassing: 1, failuresBeforeCritical: 1 };
    }
    const probe = raw[kind];
    if (probe === undefined) return z.NEVER; // unreachable: `kind` was picked because it is set
    const intervalMs = raw.interval ?? DEFAULTS.check.intervalMs;
    const timeoutMs = raw.timeout ?? Math.min(intervalMs, DEFAULTS.check.maxDefaultTimeoutMs);
    if (timeoutMs > intervalMs) {
      const limit = raw.interval === undefined ? `${formatDuration(intervalMs)} by default` : formatDuration(intervalMs);
      const advice = raw.interval === undefined ? '; lower it or raise interval' : '';
      return refuse(ctx, `expected at most interval (${limit}), got ${formatDuration(timeoutMs)}${advice}`, ['timeout']);
    }
    return {
      /** Unique within the vassal; default derived from kind and target, e.g. "tcp:127.0.0.1:8080". */
      name: raw.name ?? defaultCheckName(probe),
      probe,
      /** Period between runs. */
      intervalMs,
      /** A run taking longer is critical (and an exec probe's group is killed). */
      timeoutMs,
      /** Consecutive passing results needed before the status turns passing. */
      successesBeforePassing: raw.successes_before_passing ?? DEFAULTS.check.successesBeforePassing,
      /** Consecutive critical results needed before the status turns critical. */
      failuresBeforeCritical: raw.failures_before_critical ?? DEFAULTS.check.failuresBeforeCritical,
    };
  });

const checks = z
  .array(check)
  .optional()
  .transform((list, ctx) => {
    if (ctx.issues.length > 0) return z.NEVER;
    const seen = new Map<string, number>();
    for (const [index, spec] of (list ?? []).entries()) {
      const first = seen.get(spec.name);
      if (first === undefined) seen.set(spec.name, index);
      else refuse(ctx, `duplicate check name ${JSON.stringify(spec.name)}: checks[${first}] and checks[${index}] both use it; give them different names`, [index, 'name']);
    }
    return list ?? [];
  });

/** Restart the vassal after this many consecutive critical aggregate results since ready. */
const onCritical = z
  .strictObject({ restart_after: atLeastOne })
  .optional()
  .transform((raw) => (raw === undefined ? null : { restartAfter: raw.restart_after }));

/** drainMs: wait after deregistration before the stop signal (in-flight requests finish). */
const stop = z
  .strictObject({ signal: signal.optional(), timeout: duration.optional(), drain: duration.optional() })
  .optional()
  .transform((raw) => ({
    signal: raw?.signal ?? DEFAULTS.stop.signal,
    timeoutMs: raw?.timeout ?? DEFAULTS.stop.timeoutMs,
    drainMs: raw?.drain ?? DEFAULTS.stop.drainMs,
  }));

// ---- service ------------------------------------------------------------------------------

/** How a vassal is registered (etcd: empusa layout; Consul: an agent service); null = never registered. */
const service = z
  .strictObject({
    name: keySegment.optional(),
    type: keySegment.optional(),
    id: serviceId.optional(),
    address: address.optional(),
    port: portNumber.optional(),
    location: tcpTarget.optional(),
    tags: tags.optional(),
    meta: meta.optional(),
    deregister_when_critical: z.boolean().optional(),
    consul: z.strictObject({ native_checks: z.boolean().optional() }).optional(),
  })
  .optional()
  .transform((raw, ctx) => {
    if (raw === undefined) return null;
    let addr = raw.address ?? '127.0.0.1';
    let port = raw.port ?? null;
    if (raw.location) {
      if (raw.address !== undefined || raw.port !== undefined) return refuse(ctx, 'give either location or address/port, not both', ['location']);
      addr = raw.location.host;
      port = raw.location.port;
    }
    if (port === null) return refuse(ctx, 'a service needs a port (with an optional address) or a location "host:port"', ['port']);
    const host = addr.includes(':') ? `[${addr}]` : addr;
    return {
      /** Service name; filled in with the vassal name by load.ts when not given. */
      name: raw.name,
      /** empusa's service type: the etcd key level above the name. */
      type: raw.type ?? 'default',
      /** Consul service ID; null = derived from host and vassal name. */
      id: raw.id ?? null,
      address: addr,
      port,
      /** host:port as registered in etcd. */
      location: `${host}:${port}`,
      tags: raw.tags ?? [],
      meta: raw.meta ?? {},
      /** Remove the etcd location key while the vassal's health is critical. */
      deregisterWhenCritical: raw.deregister_when_critical ?? false,
      /** Also register the vassal's http/tcp checks as Consul-native checks. */
      consulNativeChecks: raw.consul?.native_checks ?? false,
    };
  });

// ---- per-vassal Consul agent (the uWSGI–Consul draft's consul-agent) ------------------------

const CONSISTENCY = ['default', 'consistent', 'stale'] as const;

/** The vassal's own Consul agents (failover in order; none = the emperor's --consul-agent), and the draft's consistency mode. */
const consul = z
  .strictObject({ agents: z.array(tcpTarget).optional(), consistency: z.enum(CONSISTENCY).optional() })
  .optional()
  .transform((raw) =>
    raw === undefined
      ? null
      : {
          agents: [...new Set((raw.agents ?? []).map((a) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)))],
          consistency: raw.consistency ?? 'default',
        },
  );

// ---- logs ---------------------------------------------------------------------------------

/** Size-based rotation of the vassal's log file (src/output/logfile.ts). */
const logs = z
  .strictObject({ max_size: logSize.optional(), keep: logKeep.optional() })
  .optional()
  .transform((raw) => ({
    /** Rotate before the file grows past this many bytes; 0 = never (external logrotate). */
    maxBytes: raw?.max_size ?? DEFAULTS.logs.maxBytes,
    /** Rotated files kept (NAME.log.1 … NAME.log.KEEP). */
    keep: raw?.keep ?? DEFAULTS.logs.keep,
  }));

// ---- resource limits ----------------------------------------------------------------------

/** Applied through the vassal's cgroup (src/process/containment.ts); null = no limits given. */
const limits = z
  .strictObject({ memory: memoryLimit.optional(), pids: pidsLimit.optional(), cpu_weight: cpuWeight.optional(), open_files: openFiles.optional() })
  .optional()
  .transform((raw) =>
    raw === undefined
      ? null
      : {
          /** Hard memory limit in bytes (memory.max / memory.limit_in_bytes; no swap beyond it). */
          memoryBytes: raw.memory ?? null,
          /** Most processes and threads at once (pids.max). */
          pids: raw.pids ?? null,
          /** Relative CPU share 1-10000, 100 = default (cpu.weight; cpu.shares = weight × 10.24 on v1). */
          cpuWeight: raw.cpu_weight ?? null,
          /** RLIMIT_NOFILE, soft and hard. */
          openFiles: raw.open_files ?? null,
        },
  );

// ---- fleet placement ------------------------------------------------------------------------

const NODE_NAME_EXPECTED = 'a node name (letters, digits and _ . @ -, starting with a letter or digit)';
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/;
const nodeName = z
  .string(expecting(NODE_NAME_EXPECTED))
  .refine((text) => NODE_NAME.test(text) && !text.includes('..'), expecting(NODE_NAME_EXPECTED));

/** Most instances of one fleet vassal (replicas); each is a claim key and a process. */
export const MAX_REPLICAS = 1000;

/**
 * Where a fleet vassal runs (emperor fleet deploy). Exactly one of: replicas (that many
 * instances, at most one per node), nodes (one on each named node), all (one on every node).
 * Null in a local vassal file, which runs where the file is.
 */
const placement = z
  .strictObject({
    replicas: atLeastOne.max(MAX_REPLICAS, { error: `expected at most ${MAX_REPLICAS} replicas` }).optional(),
    nodes: z.array(nodeName, expecting('a list of node names like [web-1, web-2]')).min(1, expecting('a non-empty list of node names like [web-1, web-2]')).max(MAX_REPLICAS).optional(),
    all: z.literal(true, expecting('true (one instance on every fleet node)')).optional(),
  }, expecting('a mapping like { replicas: 1 }, { nodes: [web-1, web-2] } or { all: true }'))
  .optional()
  .transform((raw, ctx) => {
    if (raw === undefined) return null;
    const given = (['replicas', 'nodes', 'all'] as const).filter((k) => raw[k] !== undefined);
    if (given.length !== 1) {
      return refuse(ctx, given.length === 0 ? 'expected one of replicas, nodes or all, e.g. { replicas: 1 }' : `expected only one of replicas, nodes or all, got ${given.join(' and ')}`);
    }
    if (raw.replicas !== undefined) return { kind: 'replicas' as const, replicas: raw.replicas };
    if (raw.nodes !== undefined) {
      const dup = raw.nodes.find((n, i) => raw.nodes!.indexOf(n) !== i);
      if (dup !== undefined) return refuse(ctx, `node ${JSON.stringify(dup)} is listed twice`, ['nodes']);
      return { kind: 'nodes' as const, nodes: raw.nodes };
    }
    return { kind: 'all' as const };
  });

// ---- the whole document -------------------------------------------------------------------

// Key order here is the order listed in "unknown field (allowed: ...)" messages.
export const vassalSchema = z
  .strictObject({
    command,
    shell: z.boolean().default(DEFAULTS.shell),
    /** As written (possibly relative); load.ts resolves it against the file's directory. */
    cwd: cwd.optional(),
    /** Extra environment on top of the emperor's own. */
    env: env.default(() => ({})),
    restart: z.enum(RESTART_POLICIES).default(DEFAULTS.restart),
    backoff,
    start,
    stop,
    /** Periodic checks, run while the vassal is running. */
    checks,
    on_critical: onCritical,
    service,
    consul,
    /** Speaks the uWSGI Emperor protocol on $UWSGI_EMPEROR_FD: ready on byte 5 (unless start.ready says otherwise), stopped with byte 0 (SIGKILL after stop.timeout). */
    emperor_protocol: z.boolean().default(false),
    heartbeat_timeout: positiveDuration.optional(),
    /** Run as this user / group (name or numeric id); honoured only when the emperor runs as root. */
    user: orNull(account),
    group: orNull(account),
    logs,
    limits,
    /** A limit this host cannot apply refuses the deploy instead of a warning. */
    limits_required: z.boolean().default(false),
    /** Fleet vassals only: where in the fleet it runs. */
    placement,
  })
  // Fields named alike in the file and in the spec pass through as they are.
  .transform(({ command: written, on_critical: onCritical, limits_required: limitsRequired, emperor_protocol: emperorProtocol, heartbeat_timeout: heartbeat, ...fields }, ctx) => {
    /** Final argv. With `shell: true` this is ['/bin/sh', '-c', command]. */
    let argv: string[] = [];
    if (typeof written === 'string') {
      if (fields.shell) argv = ['/bin/sh', '-c', written];
      else {
        refuse(ctx, `got a string, but without shell: true the command must be a list like ["node", "server.js"]; give a list, or set shell: true to run it with /bin/sh -c`, ['command']);
      }
    } else if (fields.shell) {
      refuse(ctx, 'expected a string when shell: true, got a list; write the command line as one string, or remove shell: true', ['command']);
    } else {
      argv = written;
    }
    if (fields.consul !== null && fields.service === null) refuse(ctx, 'a Consul agent for this vassal needs a service to register (service: or consul-service-name)', ['consul']);
    return { ...fields, argv, onCritical, limitsRequired, emperorProtocol, heartbeatTimeoutMs: heartbeat ?? DEFAULTS.heartbeatTimeoutMs };
  });

/** The document after validation; load.ts adds name, file, hash and resolves cwd and the service name. */
export type VassalDocument = z.output<typeof vassalSchema>;
