// /proc parsing. Most reads here are synchronous on purpose: procfs files are generated in
// memory by the kernel and never touch a disk, spawnVassal must report the start time before it
// returns, and groupAlive() is synchronous.
import fs from 'node:fs';
import fsp from 'node:fs/promises';

export interface ProcStat {
  readonly ppid: number;
  readonly pgid: number;
  /** Field 22, clock ticks since boot; kept as the kernel's decimal string. */
  readonly startTime: string;
  /** Field 3: R, S, D, Z (zombie), X (dead), T... */
  readonly state: string;
}

export function parseStat(text: string): ProcStat | undefined {
  // comm (field 2) is free text that may hold spaces and ')', so only the LAST ')' is reliable.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 1).trim().split(/\s+/);
  // fields[0] is field 3, so field N sits at index N - 3.
  const state = fields[0];
  const ppid = Number(fields[1]);
  const pgid = Number(fields[2]);
  const startTime = fields[19];
  if (!state || !Number.isInteger(ppid) || !Number.isInteger(pgid)) return undefined;
  if (startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  return { ppid, pgid, startTime, state };
}

/** Undefined when the process does not exist (any more). */
export function readStatSync(pid: number): ProcStat | undefined {
  try {
    return parseStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

export async function readStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseStat(await fsp.readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

export function listPids(): number[] {
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  return names.filter((n) => /^\d+$/.test(n)).map(Number);
}

/** Zombies are already dead; they linger only until someone reaps them (a container's PID 1 may never). */
export const isLive = (stat: ProcStat | undefined): stat is ProcStat =>
  stat !== undefined && stat.state !== 'Z' && stat.state !== 'X';

/** One pass over /proc: pid -> stat, for every process that could be read. */
export function snapshot(): Map<number, ProcStat> {
  const all = new Map<number, ProcStat>();
  for (const pid of listPids()) {
    const stat = readStatSync(pid);
    if (stat) all.set(pid, stat);
  }
  return all;
}

/** Pids of the non-zombie processes whose process group is pgid. */
export function liveGroupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const [pid, stat] of snapshot()) {
    if (stat.pgid === pgid && isLive(stat)) members.push(pid);
  }
  return members;
}

/** Changes on every boot; start times from another boot mean nothing. */
export function readBootId(): string | undefined {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
