import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { changeKey, loadVassalFile, type LoadOptions } from '../config/load-file.js';
import { VassalParser } from '../config/parse-pool.js';
import { ConfigError } from '../config/errors.js';
import type { Identity } from '../process/identity.js';
import { distrustOf, resolveIdentity, type IdentityPolicy } from './identity.js';
import type { VassalSpec } from '../config/spec.js';
import type { Logger } from '../log/logger.js';
import { Guardian } from '../process/guardian.js';
import { Containment, type ContainmentStatus } from '../process/containment.js';
import { PidRecords, type LeftoverReport } from '../process/records.js';
import { spawnBackend } from '../process/posix-spawn.js';
import { SETTLED, type VassalState } from '../vassal/states.js';
import { Vassal, type VassalSnapshot } from '../vassal/vassal.js';
import { VassalDirWatcher, type FileVerdict } from '../watch/watcher.js';
import { inheritableEnv } from './env.js';
import type { Registrar, RegistryEntry, RegistryStatus } from '../registrar/registrar.js';
import type { StateChange } from '../vassal/vassal.js';
import type { Registration } from '../registrar/types.js';
import type { CheckStatus } from '../config/spec.js';
import { defaultServiceId, registrationFor } from './registration.js';
import { ControlQueue, SupersededError, waitState } from './control-queue.js';
import { formatDuration } from '../config/duration.js';
import { prepareLogsDir } from '../output/logdir.js';
import type { MirrorLimit } from '../output/mirror.js';
import type { LogFile } from '../output/logfile.js';
import { probeBudget, type BudgetSnapshot, type ProbeBudget } from '../checks/budget.js';
import type { FleetHost, FleetNode, FleetWorld } from '../fleet/node.js';

export interface EmperorOptions {
  readonly vassalsDir: string;
  readonly stateDir: string;
  readonly logsDir: string;
  readonly logger: Logger;
  readonly mirrorOutput: boolean;
  /** Per-vassal rate limit of mirrored lines (default: DEFAULT_MIRROR_LIMIT). */
  readonly mirrorLimit?: MirrorLimit;
  readonly settleMs: number;
  readonly invalidGraceMs: number;
  readonly rescanMs: number;
  readonly useEvents?: boolean;
  /** Registries to keep in line with the ready vassals; absent = supervise only. */
  readonly registrar?: Registrar;
  /** Host name used in registration IDs (default: os.hostname()). */
  readonly hostname?: string;
  /** Consul agent, handed to vassals as CONSUL_HTTP_ADDR so apps can use the helpers. */
  readonly consulAddress?: string | undefined;
  /** Tyrant mode and user switching (default: no tyrant; root-ness from the process). */
  readonly identity?: Partial<IdentityPolicy>;
  /**
   * 'auto' (default): a cgroup per vassal where the emperor can create one, else process
   * groups; 'process-group': never use cgroups (--no-cgroups, EMPEROR_NO_CGROUPS=1).
   */
  readonly containment?: 'auto' | 'process-group';
  /** The probe budget whose lag is reported (default: the process-wide one every check uses). */
  readonly probeBudget?: ProbeBudget;
  /** The uWSGI binary for .ini vassals (default `uwsgi` on PATH). */
  readonly uwsgiBin?: string;
  /** Fleet mode: this node's name, and whether fleet vassals may run as root (--fleet-allow-root). */
  readonly fleet?: { readonly node: string; readonly allowRoot: boolean };
}

/** One row of status: a vassal, or a file that never yielded a valid spec ("invalid"). */
export interface VassalStatus extends Omit<VassalSnapshot, 'state' | 'hash'> {
  readonly state: VassalState | 'invalid';
  readonly hash: string | null;
  /** Set when the file's current content is invalid (a running vassal keeps its last good spec). */
  readonly fileError: string | null;
  /** Fleet mode: an instance of a fleet vassal (its spec comes from etcd); absent otherwise. */
  readonly fleet?: true;
}

export interface EmperorStatus {
  readonly pid: number;
  readonly vassalsDir: string;
  readonly stateDir: string;
  readonly logsDir: string;
  readonly startedAt: number;
  readonly vassals: VassalStatus[];
  /** One entry per configured registry (empty without any). */
  readonly registries: RegistryStatus[];
  /** How vassals are contained (cgroup or process group) and which limits this host applies. */
  readonly containment: ContainmentStatus;
  /** The probe budget: slots, probes running and waiting, and whether checks fall behind. */
  readonly probes: BudgetSnapshot;
  /** Fleet mode: this node, its lease, and the fleet instances it holds. */
  readonly fleet?: ReturnType<FleetNode['snapshotView']>;
}

interface Entry {
  readonly name: string;
  /** A fleet instance (its spec comes from etcd, `file` is the key's label), not a file here. */
  readonly fleet: boolean;
  file: string;
  vassal: Vassal | undefined;
  fileError: ConfigError | undefined;
  /** The file is gone; the entry disappears once its vassal has stopped. */
  removed: boolean;
  /** Bumped by every file event, so only the latest one's async work is applied. */
  seq: number;
  /** changeKey of the spec the vassal was last given: content, and for .ini also mtime. */
  key: string | undefined;
}

export class ControlError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 404 | 409,
    /** The order the request was taken in, when it was taken (see ControlAnswer.seq). */
    readonly seq?: number,
  ) {
    super(message);
  }
}

/** A request replaced by a later one before it was carried out (409). */
export class SupersededRequest extends ControlError {}

export type Action = 'start' | 'stop' | 'restart' | 'reload';

/** A control request's answer: the resulting state, and the order the request was taken in. */
export interface ControlAnswer {
  /** Increases with every control request this emperor takes (X-Emperor-Seq). */
  readonly seq: number;
  readonly status: VassalStatus;
}

/**
 * Beyond a vassal's own stop and start timeouts, what an action may take: deregistration (its
 * own bound, 2 s by default), killing leftovers, a loaded machine. Past it the request is
 * answered with 409 and the action goes on in the background.
 */
const CONTROL_SLACK_MS = 10_000;

/** How long one control action on a vassal with this spec may take before its request gets a 409. */
function actionBoundMs(spec: VassalSpec): number {
  return spec.stop.drainMs + spec.stop.timeoutMs + spec.start.timeoutMs + CONTROL_SLACK_MS;
}

/**
 * A reload: an .ini vassal (uWSGI) reloads in place through the Emperor protocol, as under the
 * uWSGI Emperor, unless what the emperor itself sets up for the process changed (who it runs
 * as, where, its environment and limits): that needs a new process, so a graceful restart.
 */
function reloadVassal(vassal: Vassal, spec: VassalSpec): Promise<void> {
  const running = vassal.runningSpec;
  const setup = (s: VassalSpec): string => JSON.stringify([s.kind, s.file, s.cwd, s.env, s.user, s.group, s.limits, s.logs]);
  if (spec.kind === 'uwsgi' && setup(running) === setup(spec)) return vassal.reloadInPlace(spec);
  return vassal.restart(spec);
}

function nameOfFile(file: string): string {
  const base = path.basename(file);
  return base.slice(0, base.length - path.extname(base).length);
}

/**
 * Owns the set of vassals: turns settled file events into vassal intents, and serves the
 * control API's requests. Holds no process state itself; each Vassal owns its own.
 */
export interface EmperorEvents {
  /** Something status shows about this vassal changed (state, health, file, added, removed). */
  changed: [name: string];
}

export class Emperor {
  /**
   * Change notices for live views (the dashboard's event stream, `emperor logs -f` of all
   * vassals). They carry only a name: the view reads status again, so there is one owner of state.
   */
  readonly events = new EventEmitter<EmperorEvents>();
  private readonly entries = new Map<string, Entry>();
  private readonly conflicts = new Set<string>();
  private readonly watcher: VassalDirWatcher;
  private readonly guardian = new Guardian();
  private readonly records: PidRecords;
  /** Decided at start(); process groups until then (nothing runs before start). */
  private containment = Containment.processGroups('not started');
  private readonly baseEnv = inheritableEnv(process.env);
  private readonly startedAt = Date.now();
  private shuttingDown = false;
  private readonly hostname: string;
  private readonly policy: IdentityPolicy;
  /** Who each spec runs as, decided before the spec reaches its vassal. */
  private readonly identities = new WeakMap<VassalSpec, Identity>();
  /** Control requests waiting or carried out, per vassal name (dropped when idle). */
  private readonly queues = new Map<string, ControlQueue<Action | 'reload-all', VassalStatus>>();
  private controlSeq = 0;
  /** Vassal files are parsed in a worker thread: a hostile file must not stall this loop. */
  private readonly parser = new VassalParser();
  /** How every vassal file is read: the watcher's reads and reload's re-reads alike. */
  private readonly load: LoadOptions;
  private readonly budget: ProbeBudget;
  private fleetNode: FleetNode | undefined;
  // Once per episode, not per late run: "checks are behind" is one fact, however many are late.
  private readonly onChecksBehind = (i: { check: string; lagMs: number; intervalMs: number; limit: number; waiting: number }): void => {
    this.log.warn(
      `health checks are falling behind: check ${i.check} started ${formatDuration(Math.round(i.lagMs))} late (interval ${formatDuration(i.intervalMs)}); ${i.waiting} probe(s) waiting for one of ${i.limit} slots (--check-concurrency), or the machine is too busy. Lag is in status (checks[].startLagMs, probes) and metrics`,
      { event: 'checks-behind', check: i.check, lag_ms: Math.round(i.lagMs), waiting: i.waiting, limit: i.limit },
    );
  };
  private readonly onChecksCaughtUp = (): void => {
    this.log.info('health checks caught up: no run started a whole interval late for 30s', { event: 'checks-caught-up' });
  };

  constructor(private readonly opts: EmperorOptions) {
    this.hostname = opts.hostname ?? os.hostname();
    this.policy = {
      isRoot: opts.identity?.isRoot ?? process.getuid?.() === 0,
      tyrant: opts.identity?.tyrant ?? false,
      tyrantAllowRoot: opts.identity?.tyrantAllowRoot ?? false,
    };
    this.load = {
      // Tyrant mode: a link's owner says nothing about its target's, so links are never opened.
      followSymlinks: !(this.policy.isRoot && this.policy.tyrant),
      trust: (file, facts) => distrustOf(file, facts, this.policy),
      parse: (bytes, file) => this.parser.parse(bytes, file),
    };
    this.watcher = new VassalDirWatcher(opts.vassalsDir, { ...opts, load: this.load });
    this.records = new PidRecords(path.join(opts.stateDir, 'pids'));
    this.watcher.on('upsert', (file, verdict) => this.onUpsert(file, verdict));
    this.watcher.on('remove', (file) => this.onRemove(file));
    this.watcher.on('error', (err) => opts.logger.error(err.message, { event: 'watch-error' }));
    this.watcher.on('replaced', (message) => opts.logger.warn(message, { event: 'watch-replaced' }));
    this.budget = opts.probeBudget ?? probeBudget;
    this.budget.on('behind', this.onChecksBehind);
    this.budget.on('caught-up', this.onChecksCaughtUp);
  }

  get log(): Logger {
    return this.opts.logger;
  }

  async start(): Promise<void> {
    const st = await fs.stat(this.opts.vassalsDir).catch(() => undefined);
    if (!st?.isDirectory()) throw new Error(`vassals directory ${this.opts.vassalsDir} does not exist or is not a directory (--vassals / EMPEROR_VASSALS)`);
    const logsDirWarning = await prepareLogsDir(this.opts.logsDir);
    if (logsDirWarning) this.log.warn(logsDirWarning, { event: 'logs-dir' });
    // Refused before anything is acted on: records nobody else may have written.
    await this.records.prepare();
    this.containment =
      this.opts.containment === 'process-group'
        ? Containment.processGroups('cgroups turned off (--no-cgroups or EMPEROR_NO_CGROUPS)')
        : Containment.setup(this.opts.stateDir);
    const c = this.containment.status();
    if (c.mode === 'cgroup') {
      this.log.info(`containment: cgroup per vassal under ${c.cgroup}; limits available: ${c.limits.join(', ')}`, { event: 'containment', mode: c.mode, cgroup: c.cgroup, limits: c.limits });
    } else {
      this.log.warn(`containment: process groups only, so a vassal process that calls setsid escapes stop and restart: ${c.reason}; limits available: ${c.limits.join(', ')}`, {
        event: 'containment',
        mode: c.mode,
        limits: c.limits,
      });
    }
    const spawner = spawnBackend();
    // Said once: the fallback works the same, only each start holds the event loop longer.
    if (spawner.backend === 'fork') this.log.warn(`vassals are started with fork (child_process), slower than posix_spawn: ${spawner.why ?? ''}`, { event: 'spawn-backend', backend: spawner.backend });
    else this.log.debug('vassals are started with posix_spawn', { event: 'spawn-backend', backend: spawner.backend });
    // First by cgroup: that also finds processes that left their process group.
    for (const left of await this.containment.reapLeftovers()) {
      this.log.warn(`killed ${left.killed} leftover process(es) of a previous emperor run, found in its cgroup`, { vassal: left.name, event: 'leftover', killed: left.killed });
    }
    const skipped = (left: LeftoverReport): void => {
      this.log.info(`left a previous run's pid record alone: ${left.reason}`, { vassal: left.name, event: 'leftover-skipped', pid: left.pid });
    };
    for (const left of await this.records.reapLeftovers(skipped)) {
      this.log.warn(`killed ${left.killed} leftover process(es) of a previous emperor run (pid ${left.pid}): ${left.reason}`, {
        vassal: left.name,
        event: 'leftover',
        pid: left.pid,
      });
    }
    this.guardian.start(this.containment.guardianDirs());
    await this.watcher.start();
    this.log.info(`watching ${this.opts.vassalsDir}`, { event: 'watching', vassals: this.entries.size });
  }

  /** Stop every vassal in parallel, then let go of everything. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    await this.watcher.close();
    await Promise.all([...this.entries.values()].map((e) => e.vassal?.stop() ?? Promise.resolve()));
    // Only now that nothing runs: the lease goes, and other nodes may take over at once.
    await this.fleetNode?.close();
    await this.guardian.close();
    await this.parser.close();
    await this.containment.close();
    await this.opts.registrar?.close();
    this.budget.off('behind', this.onChecksBehind);
    this.budget.off('caught-up', this.onChecksCaughtUp);
  }

  // ---- file events ---------------------------------------------------------------------

  private onUpsert(file: string, verdict: FileVerdict): void {
    if (this.shuttingDown) return;
    const name = nameOfFile(file);
    let entry = this.entries.get(name);
    if (entry && entry.file !== file && !entry.removed) {
      if (!this.conflicts.has(file)) {
        this.conflicts.add(file);
        this.log.error(`${file}: vassal name "${name}" is already used by ${entry.file}; rename one of them`, { vassal: name, event: 'invalid' });
      }
      return;
    }
    this.conflicts.delete(file);
    if (!entry) {
      entry = { name, file, fleet: false, vassal: undefined, fileError: undefined, removed: false, seq: 0, key: undefined };
      this.entries.set(name, entry);
    }
    entry.file = file;
    const wasRemoved = entry.removed;
    entry.removed = false;
    this.changed(name);

    const seq = ++entry.seq;
    if (!verdict.ok) {
      this.markInvalid(entry, verdict.error, wasRemoved);
      return;
    }
    // Who it runs as may need the file's owner and the account database: decide that first.
    const spec = verdict.spec;
    const current = entry;
    void resolveIdentity(spec, this.policy, verdict.facts).then((iv) => {
      if (current.seq !== seq || this.shuttingDown) return; // a newer event for this file won
      if (!iv.ok) {
        this.markInvalid(current, new ConfigError(file, iv.problem), wasRemoved);
        // Not the file's fault: the next rescan reads it again as if it were new.
        if (iv.transient) this.watcher.forget(file);
        return;
      }
      if (iv.identity) this.identities.set(spec, iv.identity);
      this.apply(current, spec, changeKey(spec, verdict.facts), wasRemoved);
    });
  }

  private markInvalid(entry: Entry, error: ConfigError, wasRemoved: boolean): void {
    // A fleet document is looked at on every round: say it once per problem.
    if (entry.fleet && entry.fileError?.message === error.message) return;
    entry.fileError = error;
    this.changed(entry.name);
    const keeps = entry.vassal && !wasRemoved ? '; the running version keeps running until the file is fixed' : '';
    this.log.error(`invalid vassal file: ${error.message}${keeps}`, { vassal: entry.name, event: 'invalid' });
  }

  /**
   * Limits this host cannot apply: a warning, or with limits_required a refusal (returned), so
   * the file shows as invalid and a running version keeps running.
   */
  private limitsRefusal(spec: VassalSpec): ConfigError | undefined {
    const problems = this.containment.unsupported(spec.limits);
    if (problems.length === 0) return undefined;
    if (spec.limitsRequired) return new ConfigError(spec.file, `${problems.join('; ')}; refusing to start it because limits_required is true`);
    for (const p of problems) this.log.warn(`${spec.file}: ${p}; starting it without that limit (set limits_required: true to refuse instead)`, { vassal: spec.name, event: 'limits-unsupported' });
    return undefined;
  }

  private apply(entry: Entry, spec: VassalSpec, key: string, wasRemoved: boolean): void {
    const { name, file } = entry;
    const unchanged = entry.vassal !== undefined && key === entry.key && !wasRemoved;
    const refusal = unchanged ? undefined : this.limitsRefusal(spec);
    if (refusal) {
      this.markInvalid(entry, refusal, wasRemoved);
      return;
    }
    const hadError = entry.fileError !== undefined;
    entry.fileError = undefined;
    this.changed(name);
    if (!entry.vassal) {
      this.log.info(`deploying ${file}`, { vassal: name, event: 'deploy' });
      entry.key = key;
      entry.vassal = this.createVassal(spec, entry.fleet);
      entry.vassal.start();
      return;
    }
    if (unchanged) {
      if (hadError) this.log.info('vassal file is valid again; nothing changed', { vassal: name, event: 'file-fixed' });
      return;
    }
    const touched = spec.hash === entry.vassal.spec.hash && !wasRemoved;
    this.log.info(`${file} ${touched ? 'touched' : 'changed'}; reloading`, { vassal: name, event: 'reload' });
    entry.key = key;
    // A removed file's vassal is stopping: coming back is a new deploy, never an in-place reload.
    void (wasRemoved ? entry.vassal.restart(spec) : reloadVassal(entry.vassal, spec));
  }

  private onRemove(file: string): void {
    const name = nameOfFile(file);
    this.conflicts.delete(file);
    const entry = this.entries.get(name);
    if (!entry || entry.file !== file) return;
    entry.removed = true;
    entry.seq++; // an identity lookup still running for an earlier upsert must not revive it
    this.changed(name);
    if (!entry.vassal) {
      this.entries.delete(name);
      return;
    }
    this.log.info(`${file} removed; stopping`, { vassal: name, event: 'remove' });
    const vassal = entry.vassal;
    void vassal.stop().then(() => {
      // Re-added while stopping? Then the entry lives on with its new spec.
      if (entry.removed && this.entries.get(name) === entry) {
        this.entries.delete(name);
        this.changed(name);
      }
    });
  }

  private createVassal(spec: VassalSpec, fleet = false): Vassal {
    const node = this.opts.fleet?.node;
    const serviceHost = fleet && node !== undefined ? node : this.hostname;
    const vassal = new Vassal(spec, {
      logger: this.opts.logger,
      logsDir: this.opts.logsDir,
      mirrorOutput: this.opts.mirrorOutput,
      ...(this.opts.mirrorLimit ? { mirrorLimit: this.opts.mirrorLimit } : {}),
      baseEnv: this.baseEnv,
      ...(this.opts.uwsgiBin ? { uwsgiBin: this.opts.uwsgiBin } : {}),
      // A fleet instance is also killed by the guardian when its claim may have lapsed.
      guardian: fleet
        ? {
            add: (pgid, cgroup) => this.guardian.addFenced(pgid, cgroup),
            remove: (pgid) => this.guardian.remove(pgid),
            expect: (cgroup) => this.guardian.expectFenced(cgroup),
            unexpect: (cgroup) => this.guardian.unexpectFenced(cgroup),
          }
        : this.guardian,
      ...(fleet ? { mayStart: (s: VassalSpec) => (this.fleetNode ? this.fleetNode.mayStart(s.name) : 'fleet mode is not running') } : {}),
      records: this.records,
      containment: { prepare: (n, l) => this.containment.prepare(n, l), release: (n) => this.containment.release(n), precreate: (n) => this.containment.precreate(n) },
      beforeStop: (name) => this.opts.registrar?.stopping(name) ?? Promise.resolve(),
      identityFor: (s) => this.identities.get(s),
      extraEnv: (s) => ({
        // A vassal that names its own agent gets that one.
        ...(s.consul?.agents[0] ? { CONSUL_HTTP_ADDR: s.consul.agents[0] } : this.opts.consulAddress ? { CONSUL_HTTP_ADDR: this.opts.consulAddress } : {}),
        ...(s.service ? { EMPEROR_SERVICE_ID: s.service.id ?? defaultServiceId(serviceHost, s.name) } : {}),
      }),
    });
    vassal.on('state', () => this.changed(vassal.name));
    vassal.on('health', () => this.changed(vassal.name));
    const registrar = this.opts.registrar;
    if (registrar?.enabled) {
      // Registered exactly while running. The registrar owns what is registered; the emperor
      // only tells it what happened. A stop awaits the removal through beforeStop; any other
      // way out of running (crash, failed check restart) deregisters at once.
      vassal.on('state', (state: VassalState) => {
        const reg = this.registrationOf(vassal);
        if (state === 'running' && reg) registrar.ready(vassal.name, reg);
        else registrar.gone(vassal.name);
      });
      vassal.on('health', () => {
        const reg = this.registrationOf(vassal);
        if (vassal.state === 'running' && reg) registrar.healthChanged(vassal.name, reg);
      });
      // An in-place reload may have changed what is registered (consul-service-* options).
      vassal.on('reloaded', () => {
        if (vassal.state !== 'running') return;
        const reg = this.registrationOf(vassal);
        if (reg) registrar.ready(vassal.name, reg);
        else registrar.gone(vassal.name);
      });
    }
    return vassal;
  }

  private changed(name: string): void {
    if (this.events.listenerCount('changed') > 0) this.events.emit('changed', name);
  }

  private registrationOf(v: Vassal): Registration | undefined {
    const spec = v.runningSpec;
    if (!spec.service) return undefined;
    const node = this.opts.fleet?.node;
    if (node !== undefined && this.entries.get(v.name)?.fleet) {
      // Replicas of one fleet vassal on several nodes must not share a registry key.
      return registrationFor(spec, { ...spec.service, name: `${spec.service.name}@${node}` }, v.snapshot(), node);
    }
    return registrationFor(spec, spec.service, v.snapshot(), this.hostname);
  }

  // ---- fleet ---------------------------------------------------------------------------

  /** Attach the fleet node that decides which fleet instances run here. */
  useFleet(node: FleetNode): void {
    this.fleetNode = node;
  }

  /** What the fleet node may ask of this emperor. */
  fleetHost(): FleetHost {
    return {
      logger: this.opts.logger,
      parse: (bytes, label, name) => this.parser.parse(bytes, label, { fleetName: name }),
      admit: (spec) => this.admitFleet(spec),
      run: (name, spec) => this.runFleet(name, spec),
      invalid: (name, _label, error) => {
        const entry = this.entries.get(name);
        if (entry?.fleet) this.markInvalid(entry, error, false);
      },
      stop: (name, why) => this.stopFleet(name, why),
      fenceDeadline: (cs) => this.guardian.setFenceDeadline(cs),
      vassalCount: () => this.entries.size,
    };
  }

  /**
   * Who a fleet spec runs as on this node. The spec arrives over the network: it never runs as
   * root unless the emperor was started with --fleet-allow-root; an emperor running as root
   * needs a non-root user: in it otherwise.
   */
  private async admitFleet(spec: VassalSpec): Promise<{ ok: true } | { ok: false; problem: string }> {
    const iv = await resolveIdentity(spec, { isRoot: this.policy.isRoot, tyrant: false, tyrantAllowRoot: false }, undefined);
    if (!iv.ok) return iv;
    if (this.policy.isRoot && !this.opts.fleet?.allowRoot) {
      if (!iv.identity) return { ok: false, problem: 'user: this node runs as root, and a fleet vassal never runs as root here: name a non-root user (or start the emperor with --fleet-allow-root)' };
      if (iv.identity.uid === 0 || iv.identity.gid === 0) return { ok: false, problem: `user: "${spec.user ?? ''}" is root (uid or gid 0); a fleet vassal never runs as root here unless the emperor was started with --fleet-allow-root` };
    }
    if (iv.identity) this.identities.set(spec, iv.identity);
    const refusal = this.limitsRefusal(spec);
    return refusal ? { ok: false, problem: refusal.problem } : { ok: true };
  }

  private runFleet(name: string, spec: VassalSpec): Vassal | string {
    if (this.shuttingDown) return 'the emperor is shutting down';
    let entry = this.entries.get(name);
    if (entry && !entry.fleet) return `the local vassal file ${entry.file} has that name`;
    if (!entry) {
      entry = { name, file: spec.file, fleet: true, vassal: undefined, fileError: undefined, removed: false, seq: 0, key: undefined };
      this.entries.set(name, entry);
    }
    const wasRemoved = entry.removed;
    entry.removed = false;
    entry.seq++;
    // A fleet document's identity is its content (no file, no mtime).
    this.apply(entry, spec, spec.hash, wasRemoved);
    return entry.vassal ?? entry.fileError?.message ?? 'not started';
  }

  private async stopFleet(name: string, why: string): Promise<void> {
    const entry = this.entries.get(name);
    if (!entry?.fleet) return;
    entry.removed = true;
    entry.seq++;
    if (!entry.vassal) {
      this.entries.delete(name);
      return;
    }
    this.log.info(`stopping fleet instance: ${why}`, { vassal: name, event: 'fleet-stop' });
    await entry.vassal.stop();
    if (entry.removed && this.entries.get(name) === entry) this.entries.delete(name);
  }

  /** Push a result to a vassal's ttl check (the app or an operator reports in). */
  pushCheck(name: string, check: string | undefined, status: CheckStatus, note: string | undefined) {
    const { vassal } = this.runnable(name);
    try {
      return vassal.pushTtl(check, status, note);
    } catch (err) {
      throw new ControlError((err as Error).message, 409);
    }
  }

  // ---- control -------------------------------------------------------------------------

  status(): EmperorStatus {
    const now = Date.now();
    const vassals = [...this.entries.values()]
      .filter((e) => !(e.removed && !e.vassal))
      .map((e) => this.row(e, now))
      .sort((a, b) => a.name.localeCompare(b.name));
    return {
      pid: process.pid,
      vassalsDir: this.opts.vassalsDir,
      stateDir: this.opts.stateDir,
      logsDir: this.opts.logsDir,
      startedAt: this.startedAt,
      vassals,
      registries: this.registries(),
      containment: this.containment.status(),
      probes: this.budget.snapshot(),
      ...this.fleetView(),
    };
  }

  /** Fleet mode: this node, its lease and the instances it holds (nothing outside fleet mode). */
  fleetView(): Pick<EmperorStatus, 'fleet'> {
    return this.fleetNode ? { fleet: this.fleetNode.snapshotView() } : {};
  }

  /** Fleet mode: every node and where each fleet vassal runs, as this node last read it. */
  fleetWorld(): FleetWorld | undefined {
    return this.fleetNode?.world();
  }

  /** Fleet mode: 'world' when the fleet changed (a node, an instance); undefined otherwise. */
  get fleetEvents(): FleetNode['events'] | undefined {
    return this.fleetNode?.events;
  }

  /** Vassal name → the registries that hold it now (only vassals held somewhere). */
  registeredIn(): Map<string, Array<'etcd' | 'consul'>> {
    return this.opts.registrar?.registeredIn() ?? new Map<string, Array<'etcd' | 'consul'>>();
  }

  /** The registries that hold this vassal now. */
  registeredInOne(name: string): Array<'etcd' | 'consul'> {
    return this.opts.registrar?.registriesOf(name) ?? [];
  }

  /** Each registration's state changes as they happen (none without a registry). */
  get registryEvents(): Registrar['events'] | undefined {
    return this.opts.registrar?.events;
  }

  /** How each configured registry is doing (empty without any). */
  registries(): RegistryStatus[] {
    return this.opts.registrar?.status() ?? [];
  }

  vassalStatus(name: string): VassalStatus {
    return this.row(this.entry(name), Date.now());
  }

  private row(e: Entry, now: number): VassalStatus {
    const fileError = e.fileError?.message ?? null;
    if (!e.vassal) {
      return {
        name: e.name,
        state: 'invalid',
        pid: null,
        uptimeMs: null,
        restarts: 0,
        failures: 0,
        lastExit: null,
        fatalReason: null,
        file: e.file,
        hash: null,
        stateSince: this.startedAt,
        nextStartAt: null,
        health: null,
        checks: [],
        readyAfterMs: null,
        output: { droppedBytes: 0, mirrorSuppressedBytes: 0 },
        oomKills: 0,
        cgroup: null,
        fileError,
        ...(e.fleet ? { fleet: true as const } : {}),
      };
    }
    return { ...e.vassal.snapshot(now), fileError, ...(e.fleet ? { fleet: true as const } : {}) };
  }

  /**
   * Everything the dashboard shows of one vassal: its status, the spec it runs (null while its
   * file never was valid; it may hold secrets, so the caller decides what to show), its place in
   * each registry, and its recent state changes.
   */
  vassalDetail(name: string): { status: VassalStatus; spec: VassalSpec | null; registries: RegistryEntry[]; history: readonly StateChange[] } {
    const e = this.entry(name);
    const status = this.row(e, Date.now());
    const v = e.vassal;
    if (!v) return { status, spec: null, registries: [], history: [] };
    const spec = v.runningSpec;
    const registrar = this.opts.registrar;
    const registries = spec.service && registrar?.enabled ? registrar.entriesOf(name, spec.service.id ?? defaultServiceId(this.hostname, name)) : [];
    return { status, spec, registries, history: v.history() };
  }

  /** A vassal's log, for reading it back (`emperor logs`, the dashboard's log tail). */
  logOf(name: string): LogFile {
    const e = this.entry(name);
    if (!e.vassal) throw new ControlError(`vassal "${name}" has never run (its file is invalid: ${e.fileError?.message ?? 'unknown error'}), so it has no log`, 409);
    return e.vassal.output.log;
  }

  /** Names of the vassals that have a log (every one that ever got a valid file), sorted. */
  logNames(): string[] {
    return [...this.entries.values()]
      .filter((e) => e.vassal !== undefined)
      .map((e) => e.name)
      .sort((a, b) => a.localeCompare(b));
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new ControlError(`no vassal named "${name}"`, 404);
    return e;
  }

  private runnable(name: string): { entry: Entry; vassal: Vassal } {
    const entry = this.entry(name);
    if (!entry.vassal) throw new ControlError(`vassal "${name}" has no valid file: ${entry.fileError?.message ?? 'unknown error'}`, 409);
    return { entry, vassal: entry.vassal };
  }

  /**
   * Take a control request. Requests for one vassal are carried out one at a time in the order
   * taken (see ControlQueue for how waiting ones coalesce). Resolves when the vassal has
   * settled: stopped for `stop`, past starting (running, or failed) for the others; rejects
   * with a 409 when superseded, overridden or not settled within the vassal's bound.
   */
  async control(name: string, action: Action): Promise<ControlAnswer> {
    this.runnable(name); // unknown or invalid: refused at once
    const seq = ++this.controlSeq;
    this.log.info(`${action} requested`, { vassal: name, event: `control-${action}`, seq });
    try {
      const status = await this.enqueue(name, action, seq, () => this.carryOut(name, action));
      return { seq, status };
    } catch (err) {
      if (err instanceof SupersededRequest) throw new SupersededRequest(err.message, err.status, seq);
      if (err instanceof ControlError) throw new ControlError(err.message, err.status, seq);
      throw err;
    }
  }

  private enqueue(name: string, kind: Action | 'reload-all', seq: number, run: () => Promise<VassalStatus>): Promise<VassalStatus> {
    let q = this.queues.get(name);
    if (!q) {
      q = new ControlQueue();
      this.queues.set(name, q);
    }
    const queue = q;
    return queue
      .submit(kind, seq, run)
      .catch((err: unknown) => {
        if (err instanceof SupersededError) throw new SupersededRequest(`${kind} of "${name}" not carried out: ${err.message}`, 409);
        throw err;
      })
      .finally(() => {
        if (queue.idle && this.queues.get(name) === queue) this.queues.delete(name);
      });
  }

  /** One action, now that it is this request's turn. */
  private async carryOut(name: string, action: Action): Promise<VassalStatus> {
    const { entry, vassal } = this.runnable(name);
    switch (action) {
      case 'stop':
        void vassal.stop();
        break;
      case 'start':
        vassal.start({ manual: true });
        break;
      case 'restart':
        void vassal.restart();
        break;
      case 'reload':
        // A fleet instance's document lives in etcd; the node reloads it when it changes there.
        void (entry.fleet ? vassal.restart() : reloadVassal(vassal, await this.reread(entry)));
        break;
    }
    const bound = actionBoundMs(vassal.spec);
    const outcome =
      action === 'stop'
        ? // Someone else starting it again (a change to its file) overrides the stop.
          await waitState<VassalState>(vassal, (s) => SETTLED.has(s), (s) => s === 'starting', bound)
        : await waitState<VassalState>(vassal, (s) => s !== 'starting' && s !== 'stopping', () => false, bound);
    if (outcome === 'interrupted') {
      throw new ControlError(`stop of "${name}" overridden: it was started again (its file changed) before it had stopped`, 409);
    }
    if (outcome === 'timeout') {
      throw new ControlError(`${action} of "${name}" did not finish within ${formatDuration(bound)}; it is ${vassal.state} now and the ${action} goes on`, 409);
    }
    return this.vassalStatus(name);
  }

  /** Re-read a vassal's file; a now-invalid file refuses the reload and keeps what runs. */
  private async reread(entry: Entry): Promise<VassalSpec> {
    const verdict = await loadVassalFile(entry.file, this.load);
    if (!verdict.ok) {
      entry.fileError = verdict.error;
      throw new ControlError(`not reloaded, the running version keeps running: ${verdict.error.message}`, 409);
    }
    const iv = await resolveIdentity(verdict.spec, this.policy, verdict.facts);
    if (!iv.ok) {
      entry.fileError = new ConfigError(entry.file, iv.problem);
      throw new ControlError(`not reloaded, the running version keeps running: ${entry.fileError.message}`, 409);
    }
    if (iv.identity) this.identities.set(verdict.spec, iv.identity);
    const refusal = this.limitsRefusal(verdict.spec);
    if (refusal) {
      entry.fileError = refusal;
      throw new ControlError(`not reloaded, the running version keeps running: ${refusal.message}`, 409);
    }
    // Reading takes a while (the parse worker may be busy with other files): if the file was
    // removed meanwhile, its vassal is stopping or stopped and forgotten, and must not be revived.
    if (entry.removed || this.entries.get(entry.name) !== entry) throw new ControlError(`not reloaded: ${entry.file} was removed meanwhile`, 409);
    entry.fileError = undefined;
    entry.key = changeKey(verdict.spec, verdict.facts);
    return verdict.spec;
  }

  /**
   * SIGUSR1 and `emperor reopen-logs`: every vassal's log is closed and opened again by path, so
   * an external logrotate can move the files away (its postrotate runs this). Returns how many.
   */
  reopenLogs(): number {
    let n = 0;
    for (const e of this.entries.values()) {
      if (!e.vassal) continue;
      e.vassal.output.reopen();
      n++;
    }
    this.log.info(`reopening ${n} vassal log(s)`, { event: 'reopen-logs', vassals: n });
    return n;
  }

  /**
   * SIGHUP: re-read the directory and gracefully restart every vassal, each in its turn with
   * the control requests for it (a reload-all request per vassal).
   */
  async reloadAll(): Promise<void> {
    this.log.info('reloading all vassals', { event: 'reload-all' });
    await this.watcher.rescan();
    await Promise.all(
      [...this.entries.values()].map(async (entry) => {
        if (!entry.vassal || entry.removed) return;
        const seq = ++this.controlSeq;
        try {
          await this.enqueue(entry.name, 'reload-all', seq, async () => {
            const vassal = entry.vassal;
            // A vassal stopped by hand stays stopped; SIGHUP redeploys what is meant to run.
            if (vassal && !entry.removed && vassal.state !== 'stopped') {
              await (entry.fleet ? vassal.restart() : reloadVassal(vassal, await this.reread(entry)));
            }
            return this.row(entry, Date.now());
          });
        } catch (err) {
          // Superseded by a later request: that one decides what this vassal does.
          if (err instanceof SupersededRequest) return;
          this.log.error((err as Error).message, { vassal: entry.name, event: 'invalid' });
        }
      }),
    );
  }

  /** True when no vassal has a live process (used by tests and shutdown diagnostics). */
  idle(): boolean {
    return [...this.entries.values()].every((e) => !e.vassal || SETTLED.has(e.vassal.state));
  }
}
