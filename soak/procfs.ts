// Judging processes from the outside, from /proc only (never from what the emperor claims).
//
// A process belongs to this soak run when its environment holds SOAK_RUN_ID=<this run>: the
// emperor is started with it, vassals inherit the emperor's environment and their children
// inherit theirs, so other emperors on the machine (parallel tests) are never confused with
// ours. Which vassal: EMPEROR_VASSAL=<name>, set by the emperor for every vassal. A zombie
// (state Z) counts as dead.
import { readdirSync, readFileSync } from 'node:fs';

export const RUN_MARKER = 'SOAK_RUN_ID';
/** argv word that marks an exec check probe (the emperor spawns those as group leaders too). */
export const PROBE_MARKER = 'soak-probe';
/** A process found not to be ours is checked again after this long. */
const FOREIGN_RECHECK_MS = 1000;

export interface Stat {
  readonly pid: number;
  readonly state: string;
  readonly ppid: number;
  readonly pgid: number;
  /** Clock ticks since boot: with pid, identifies one process across pid reuse. */
  readonly startTime: string;
  /** Executable name (changes on exec, when the environment may change too). */
  readonly comm: string;
}

export interface VassalProc extends Stat {
  readonly vassal: string;
  readonly leader: boolean;
  /** An exec check probe, not part of the vassal's own group. */
  readonly probe: boolean;
  readonly env: ReadonlyMap<string, string>;
  /** Real uid now (a process switches user between fork and exec: read at every scan). */
  readonly uid: number | undefined;
}

function readUid(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const f = text.slice(close + 2).split(' ');
  // After "pid (comm) ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
  // cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
  return { pid, state: f[0] ?? '?', ppid: Number(f[1]), pgid: Number(f[2]), startTime: f[19] ?? '', comm: text.slice(open + 1, close) };
}

/** Alive = exists and is not a zombie (or dead, state X). */
export function isAlive(pid: number, startTime?: string): boolean {
  const st = readStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTime === undefined || st.startTime === startTime;
}

function readEnv(pid: number): Map<string, string> | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
  } catch {
    return undefined;
  }
  const env = new Map<string, string>();
  for (const kv of raw.split('\0')) {
    const i = kv.indexOf('=');
    if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1));
  }
  return env;
}

function readArgv(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

interface Ident {
  /** When it was read (foreign identities are re-read now and then, in case of a race). */
  readonly at: number;
  readonly mine: boolean;
  readonly vassal: string | undefined;
  readonly probe: boolean;
  readonly env: ReadonlyMap<string, string>;
}

/**
 * Scans /proc for the processes of one soak run. Identity (environment, argv) is cached per
 * pid + start time + executable name (an exec can change the environment; it changes the name
 * too), except while a process still shows the emperor's environment without EMPEROR_VASSAL:
 * that is a child between fork and exec, whose real identity comes next.
 *
 * Exec race: the kernel sets the new name before the new environment, so for a moment a
 * process shows its final name and an EMPTY /proc/PID/environ. Cached as "not ours", a live
 * vassal leader went unseen for the rest of its life (seen in a 10-minute soak: a "dead" leader
 * whose registration and children were then reported). Empty environments are never cached,
 * and "not ours" is re-read every FOREIGN_RECHECK_MS anyway.
 */
export class ProcScanner {
  private cache = new Map<string, Ident>();

  constructor(
    private readonly runId: string,
    private readonly excludePids: () => readonly number[],
  ) {}

  scan(): VassalProc[] {
    const out: VassalProc[] = [];
    const seen = new Map<string, Ident>();
    const skip = new Set(this.excludePids());
    const now = Date.now();
    let names: string[];
    try {
      names = readdirSync('/proc');
    } catch {
      return out;
    }
    for (const name of names) {
      const pid = Number(name);
      if (!Number.isInteger(pid) || pid <= 0 || skip.has(pid)) continue;
      const st = readStat(pid);
      if (!st || st.state === 'Z' || st.state === 'X') continue;
      const key = `${pid}:${st.startTime}:${st.comm}`;
      let id = this.cache.get(key);
      if (id && !id.mine && now - id.at > FOREIGN_RECHECK_MS) id = undefined;
      if (!id) {
        const env = readEnv(pid);
        // Empty: a process in the middle of execve (the new name is set before the new
        // environment is) or exiting. Unknown for now; never cache it.
        if (!env || env.size === 0) continue;
        const mine = env.get(RUN_MARKER) === this.runId;
        const vassal = mine ? env.get('EMPEROR_VASSAL') : undefined;
        id = {
          at: now,
          mine,
          vassal,
          probe: vassal !== undefined && readArgv(pid).includes(PROBE_MARKER),
          env: mine ? env : new Map(),
        };
      }
      if (!(id.mine && id.vassal === undefined)) seen.set(key, id);
      if (id.mine && id.vassal !== undefined) {
        out.push({ ...st, vassal: id.vassal, leader: st.pid === st.pgid, probe: id.probe, env: id.env, uid: readUid(pid) });
      }
    }
    this.cache = seen;
    return out;
  }
}
