// A vassal's process: its environment, spawning it with the emperor's bookkeeping (guardian,
// pid records), and letting go of it again.
import type { VassalSpec } from '../config/spec.js';
import { identityEnv, type Identity } from '../process/identity.js';
import { notStarted, spawnVassal } from '../process/spawn.js';
import { newSpawnId, SPAWN_ID_VAR } from '../process/records.js';
import { reapGroupAfterExit } from '../process/stop.js';
import { EMPEROR_FD, NOTIFY_FD, type OutputSink, type VassalProcess } from '../process/types.js';
import { findExecutable } from '../process/launch.js';
import { EmperorLink } from './emperor-link.js';
import type { VassalContext, VassalLog } from './types.js';

/** The uWSGI binary when neither --uwsgi-bin nor EMPEROR_UWSGI_BIN names one: `uwsgi` on PATH. */
export const DEFAULT_UWSGI_BIN = 'uwsgi';

/** What runs: the file's argv, or for an .ini vassal `<uwsgi binary> --ini <file>`. */
export function argvOf(ctx: Pick<VassalContext, 'uwsgiBin'>, spec: VassalSpec): readonly string[] {
  return spec.kind === 'uwsgi' ? [ctx.uwsgiBin ?? DEFAULT_UWSGI_BIN, '--ini', spec.file] : spec.argv;
}

/**
 * The environment of the app and of its exec checks. The file's own env wins over what the
 * emperor adds: a vassal may point at another agent.
 */
export function vassalEnv(ctx: VassalContext, spec: VassalSpec, identity: Identity | undefined, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...ctx.baseEnv,
    ...(identity ? identityEnv(identity) : {}),
    ...extra,
    ...spec.env,
    EMPEROR_VASSAL: spec.name,
  };
}

export interface Launched {
  readonly proc: VassalProcess;
  /** The process's end of the Emperor protocol (closed when the process is released). */
  readonly link: EmperorLink;
  readonly env: Record<string, string>;
  readonly identity: Identity | undefined;
}

/**
 * Spawn the app for `spec`, its output into `output`; a process with pid <= 0 failed to spawn
 * and reports why on exit.
 */
export function launchProcess(ctx: VassalContext, spec: VassalSpec, log: VassalLog, output: OutputSink): Launched {
  const notify = spec.start.ready.kind === 'notify';
  const identity = ctx.identityFor?.(spec);
  const env = vassalEnv(ctx, spec, identity, ctx.extraEnv?.(spec));
  if (notify) env.NOTIFY_FD = String(NOTIFY_FD);
  // Every vassal, of any kind, gets the Emperor protocol's socketpair (as the uWSGI Emperor does).
  env.UWSGI_EMPEROR_FD = String(EMPEROR_FD);
  // Marks this spawn's processes as ours for the next emperor's leftover reaping (records.ts).
  const spawnId = newSpawnId();
  env[SPAWN_ID_VAR] = spawnId;
  const argv = argvOf(ctx, spec);
  let proc: VassalProcess;
  let expected: string | undefined;
  try {
    const refusal = ctx.mayStart?.(spec);
    if (refusal !== undefined) throw new Error(refusal);
    const bin = argv[0] ?? '';
    if (spec.kind === 'uwsgi' && findExecutable(bin, spec.cwd, env.PATH) === undefined) {
      throw new Error(`${spec.file}: the uWSGI binary ${JSON.stringify(bin)} was not found${bin.includes('/') ? '' : ' on PATH'}; install uWSGI (Debian: uwsgi and uwsgi-plugin-python3) or name it with --uwsgi-bin`);
    }
    const placement = ctx.containment?.prepare(spec.name, spec.limits);
    expected = placement?.cgroup?.dir;
    if (expected !== undefined) ctx.guardian.expect?.(expected);
    proc = (ctx.spawn ?? spawnVassal)({
      notify,
      identity,
      name: spec.name,
      argv,
      cwd: spec.cwd,
      env,
      output,
      placement,
      openFiles: spec.limits?.openFiles ?? undefined,
    });
  } catch (err) {
    // The cgroup could not be made or a limit was refused: a failed start, with back-off. What
    // was made of its cgroups is empty; releaseProcess never sees a process that did not start.
    proc = notStarted(err instanceof Error ? err.message : String(err));
    void ctx.containment?.release(spec.name).catch(() => undefined);
  }
  if (proc.pid > 0) {
    ctx.guardian.add(proc.pgid, proc.cgroup ?? null);
    ctx.records
      .write(spec.name, { pid: proc.pid, pgid: proc.pgid, startTime: proc.startTime, argv, emperorPid: process.pid, spawnId })
      .catch((err: unknown) => log('warn', 'record-failed', `could not write pid record: ${String(err)}`));
    log('info', 'spawned', `spawned pid ${proc.pid}`, { pid: proc.pid });
  } else if (expected !== undefined) {
    ctx.guardian.unexpect?.(expected);
  }
  return { proc, env, identity, link: new EmperorLink(proc.emperor) };
}

/** Forget a process group: kill leftovers after an unexpected exit, drop its records. */
export async function releaseProcess(ctx: VassalContext, name: string, proc: VassalProcess, reap: boolean, log: VassalLog): Promise<void> {
  if (proc.pid <= 0) return;
  try {
    if (reap) await reapGroupAfterExit(proc);
  } catch (err) {
    log('warn', 'reap-failed', `could not kill leftovers of pid ${proc.pid}: ${String(err)}`);
  }
  ctx.guardian.remove(proc.pgid);
  // Empty now (stopGroup and reapGroupAfterExit wait for that): a start makes a new one.
  await ctx.containment?.release(name).catch(() => undefined);
  await ctx.records.remove(name).catch(() => undefined);
}
