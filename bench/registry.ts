// What the `etcd` and `consul` sections share: the registry as the bench sees it (a stream of
// "put"/"gone" sightings per key, stamped when the bench receives them) and the two
// one-at-a-time latency loops, ready → registered and crash → deregistered.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { BenchEmperor, Workspace } from './harness.js';
import { PART_TIMEOUT_MS, STEP_TIMEOUT_MS, quiet, stage, summary } from './common.js';
import type { SectionContext } from './types.js';
import { fmtMs, isGone, now, readStat, sleep } from './util.js';

export type SightingKind = 'put' | 'gone';

/**
 * Registry events as the bench receives them (an etcd watch event, a Consul double event).
 * `expect` returns the arrival time of the NEXT sighting of that kind for that key.
 */
export class Sightings {
  private readonly waiters = new Map<string, Array<(t: number) => void>>();
  /** Distinct keys seen per kind since the last reset (for bursts). */
  readonly seen: Record<SightingKind, Map<string, number>> = { put: new Map(), gone: new Map() };
  readonly counts: Record<SightingKind, number> = { put: 0, gone: 0 };
  /** The kind of the latest sighting of each key. */
  readonly last = new Map<string, SightingKind>();

  note(kind: SightingKind, key: string, t = now()): void {
    this.counts[kind]++;
    this.last.set(key, kind);
    if (!this.seen[kind].has(key)) this.seen[kind].set(key, t);
    const id = `${kind}\u0000${key}`;
    const ws = this.waiters.get(id);
    if (!ws) return;
    this.waiters.delete(id);
    for (const w of ws) w(t);
  }

  resetSeen(): void {
    this.seen.put.clear();
    this.seen.gone.clear();
  }

  expect(kind: SightingKind, key: string, timeoutMs: number, what: string): Promise<number> {
    const id = `${kind}\u0000${key}`;
    return quiet(
      new Promise<number>((resolve, reject) => {
        const w = (t: number): void => {
          clearTimeout(timer);
          resolve(t);
        };
        const timer = setTimeout(() => {
          const list = this.waiters.get(id);
          if (list) {
            const i = list.indexOf(w);
            if (i >= 0) list.splice(i, 1);
            if (list.length === 0) this.waiters.delete(id);
          }
          reject(new Error(`timed out after ${fmtMs(timeoutMs)} waiting for ${what}`));
        }, timeoutMs);
        const list = this.waiters.get(id) ?? [];
        list.push(w);
        this.waiters.set(id, list);
      }),
    );
  }

  /** Resolves with the arrival time of the last of `keys` to be seen as `kind` (since resetSeen). */
  async all(kind: SightingKind, keys: readonly string[], timeoutMs: number, onProgress?: (n: number) => void): Promise<number> {
    const deadline = now() + timeoutMs;
    let reported = 0;
    for (;;) {
      const n = keys.filter((k) => this.seen[kind].has(k)).length;
      if (onProgress && Math.floor(n / 250) > Math.floor(reported / 250)) onProgress(n);
      reported = n;
      if (n === keys.length) return Math.max(...keys.map((k) => this.seen[kind].get(k)!));
      if (now() > deadline) {
        const missing = keys.filter((k) => !this.seen[kind].has(k));
        throw new Error(`timed out after ${fmtMs(timeoutMs)}: ${n} of ${keys.length} keys seen ${kind}; missing e.g. ${missing.slice(0, 3).join(', ')}`);
      }
      await sleep(5);
    }
  }
}

export interface ReadyResult {
  /** ready line read → registry sighting, per vassal (negative: the registry was faster than the log pipe). */
  readonly samples: number[];
  /** file renamed into place → registry sighting. */
  readonly fromDrop: number[];
  /** vassal name → pid of its process, from the ready line. */
  readonly pids: Map<string, number>;
}

/**
 * Drop `names` one at a time; for each: t0 = the bench reads the emperor's `ready` line,
 * t1 = the registry sighting `put` of keyOf(name). The next drop starts when both arrived.
 */
export async function readyOneAtATime(opts: {
  ctx: SectionContext;
  tag: string;
  emp: BenchEmperor;
  ws: Workspace;
  names: readonly string[];
  content: (name: string, i: number) => string;
  keyOf: (name: string) => string;
  sightings: Sightings;
}): Promise<ReadyResult> {
  const { ctx, tag, emp, ws, names, sightings } = opts;
  const samples: number[] = [];
  const fromDrop: number[] = [];
  const pids = new Map<string, number>();
  const deadline = now() + PART_TIMEOUT_MS;
  for (const [i, name] of names.entries()) {
    const left = deadline - now();
    if (left <= 0) throw new Error(`${tag} exceeded ${fmtMs(PART_TIMEOUT_MS)} after ${i} vassals`);
    const timeout = Math.min(STEP_TIMEOUT_MS, left);
    const drop = await stage(ws.vassals, name, opts.content(name, i));
    const ready = quiet(emp.waitFor((e) => e.event === 'ready' && e.vassal === name, `"ready" of ${name}`, timeout));
    const put = sightings.expect('put', opts.keyOf(name), timeout, `registration of ${name} (${opts.keyOf(name)})`);
    const tDrop = now();
    await drop();
    const r = await ready;
    const t1 = await put;
    samples.push(t1 - r.t);
    fromDrop.push(t1 - tDrop);
    if (typeof r.entry.pid === 'number') pids.set(name, r.entry.pid);
    if (t1 - r.t > 1000) ctx.progress(`${tag} ${name}: ready → registered took ${fmtMs(t1 - r.t)}`);
    if ((i + 1) % 50 === 0) ctx.progress(`${tag} ${i + 1}/${names.length} registered`);
  }
  return { samples, fromDrop, pids };
}

/**
 * For each vassal, one at a time: t0 just before the bench SIGKILLs its pid, t1 = the registry
 * sighting `gone` of keyOf(name). The vassal restarts after its back-off (default 1 s) and
 * registers again, in the background of the following kills.
 */
export async function crashOneAtATime(opts: {
  ctx: SectionContext;
  tag: string;
  emp: BenchEmperor;
  pids: ReadonlyMap<string, number>;
  keyOf: (name: string) => string;
  sightings: Sightings;
}): Promise<{ samples: number[]; toExitLine: number[] }> {
  const { ctx, tag, emp, sightings } = opts;
  const samples: number[] = [];
  const toExitLine: number[] = [];
  const deadline = now() + PART_TIMEOUT_MS;
  let i = 0;
  for (const [name, pid] of opts.pids) {
    const left = deadline - now();
    if (left <= 0) throw new Error(`${tag} exceeded ${fmtMs(PART_TIMEOUT_MS)} after ${i} kills`);
    const timeout = Math.min(STEP_TIMEOUT_MS, left);
    const st = readStat(pid);
    if (!st || isGone(pid)) throw new Error(`${name}: pid ${pid} from its ready line is not alive`);
    const gone = sightings.expect('gone', opts.keyOf(name), timeout, `deregistration of ${name} (${opts.keyOf(name)})`);
    const exited = quiet(emp.waitFor((e) => e.event === 'exited' && e.vassal === name, `"exited" of ${name}`, timeout));
    const t0 = now();
    process.kill(pid, 'SIGKILL');
    const t1 = await gone;
    samples.push(t1 - t0);
    toExitLine.push((await exited).t - t0);
    if (t1 - t0 > 1000) ctx.progress(`${tag} ${name}: kill → deregistered took ${fmtMs(t1 - t0)}`);
    if (++i % 50 === 0) ctx.progress(`${tag} ${i}/${opts.pids.size} crashed and deregistered`);
  }
  return { samples, toExitLine };
}

/** "p50 x, p99 y, max z" */
export function split(xs: readonly number[]): string {
  const s = summary(xs);
  return `p50 ${fmtMs(s.p50)}, p99 ${fmtMs(s.p99)}, max ${fmtMs(s.max)}`;
}

/**
 * Graceful stops, one at a time: delete each vassal's file; t0 = unlink, t1 = the registry
 * sighting `gone`. Also the promise the README makes ("the keys are deleted first, ... then the
 * stop signal is sent"): the emperor logs `stopping` right before it signals the app, so when
 * the bench reads that line the registration must already be gone. `stillRegistered(name)` is
 * started synchronously when the line is read and resolves true when the registry still holds it.
 */
export async function stopOneAtATime(opts: {
  ctx: SectionContext;
  tag: string;
  emp: BenchEmperor;
  ws: Workspace;
  names: readonly string[];
  keyOf: (name: string) => string;
  sightings: Sightings;
  stillRegistered: (name: string) => Promise<boolean>;
}): Promise<{ samples: number[]; presentAtSignal: string[] }> {
  const { ctx, tag, emp, ws, sightings } = opts;
  const samples: number[] = [];
  const verdicts: Array<Promise<string | undefined>> = [];
  const unsubscribe = emp.subscribe((e) => {
    if (e.event !== 'stopping' || e.vassal === undefined || !opts.names.includes(e.vassal)) return;
    const name = e.vassal;
    verdicts.push(opts.stillRegistered(name).then((present) => (present ? name : undefined)));
  });
  try {
    const deadline = now() + PART_TIMEOUT_MS;
    for (const [i, name] of opts.names.entries()) {
      const left = deadline - now();
      if (left <= 0) throw new Error(`${tag} exceeded ${fmtMs(PART_TIMEOUT_MS)} after ${i} stops`);
      const timeout = Math.min(STEP_TIMEOUT_MS, left);
      const gone = sightings.expect('gone', opts.keyOf(name), timeout, `deregistration of ${name} (${opts.keyOf(name)})`);
      const stopped = quiet(emp.waitFor((e) => e.event === 'stopped' && e.vassal === name, `"stopped" of ${name}`, timeout));
      const t0 = now();
      await fs.unlink(path.join(ws.vassals, `${name}.json`));
      samples.push((await gone) - t0);
      await stopped;
      if ((i + 1) % 50 === 0) ctx.progress(`${tag} ${i + 1}/${opts.names.length} stopped`);
    }
  } finally {
    unsubscribe();
  }
  const presentAtSignal = (await Promise.all(verdicts)).filter((n): n is string => n !== undefined);
  return { samples, presentAtSignal };
}
