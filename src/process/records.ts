// Pid records: one JSON file per running vassal, so the next emperor can kill what a
// SIGKILLed one left behind (the guardian covers that too, unless it was killed as well).
import fs from 'node:fs/promises';
import path from 'node:path';
import { isLive, readBootId, readStatSync, snapshot, type ProcStat } from './procfs.js';
import { delay } from './timing.js';

export interface PidRecord {
  readonly pid: number;
  readonly pgid: number;
  /** /proc starttime of the leader; without it nothing is ever killed for this record. */
  readonly startTime: string | undefined;
  readonly argv: readonly string[];
  readonly emperorPid: number;
}

export interface StoredRecord extends PidRecord {
  readonly name: string;
  /** Written automatically: start times only compare within one boot. */
  readonly bootId?: string;
}

export interface LeftoverReport {
  readonly name: string;
  readonly pid: number;
  readonly pgid: number;
  /** Processes that got SIGKILL. */
  readonly killed: number;
  readonly reason: string;
}

const SUFFIX = '.json';
const REAP_WAIT_MS = 5000;
const POLL_MS = 20;

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

function parseRecord(name: string, text: string): StoredRecord | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const { pid, pgid, startTime, argv, emperorPid, bootId } = r;
  if (!isPosInt(pid) || !isPosInt(pgid) || !isPosInt(emperorPid)) return undefined;
  if (startTime !== undefined && (typeof startTime !== 'string' || !/^\d+$/.test(startTime))) return undefined;
  if (!Array.isArray(argv) || !argv.every((a): a is string => typeof a === 'string')) return undefined;
  if (bootId !== undefined && typeof bootId !== 'string') return undefined;
  return { name, pid, pgid, startTime, argv, emperorPid, ...(bootId === undefined ? {} : { bootId }) };
}

interface Plan {
  readonly rec: StoredRecord;
  /** Undefined: kill candidates; otherwise why nothing is killed. */
  readonly skip: string | undefined;
  readonly killed: Set<number>;
  /** Matching processes seen in the latest scan. */
  left: number;
}

export class PidRecords {
  private seq = 0;

  constructor(readonly dir: string) {}

  private file(name: string): string {
    // Names are checked upstream, but a file name must never be able to leave the directory.
    return path.join(this.dir, encodeURIComponent(name) + SUFFIX);
  }

  /** Atomic: a reader (the next emperor) sees the old record or the new one, never half of one. */
  async write(name: string, rec: PidRecord): Promise<void> {
    // Not world-readable: a record holds the vassal's argv, which may carry more than it should.
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const stored = { ...rec, bootId: readBootId() };
    const tmp = path.join(this.dir, `.${encodeURIComponent(name)}.${process.pid}.${++this.seq}.tmp`);
    try {
      await fs.writeFile(tmp, JSON.stringify(stored) + '\n', { mode: 0o600 });
      await fs.rename(tmp, this.file(name));
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  async remove(name: string): Promise<void> {
    await fs.rm(this.file(name), { force: true });
  }

  /** Valid records; unreadable files are skipped (reapLeftovers deletes them). */
  async list(): Promise<StoredRecord[]> {
    return (await this.scan()).records;
  }

  private async scan(): Promise<{ records: StoredRecord[]; junk: string[] }> {
    let entries: string[];
    try {
      entries = await fs.readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], junk: [] };
      throw err;
    }
    const records: StoredRecord[] = [];
    const junk: string[] = [];
    for (const entry of entries) {
      const file = path.join(this.dir, entry);
      if (entry.startsWith('.') && entry.endsWith('.tmp')) {
        junk.push(file);
        continue;
      }
      if (!entry.endsWith(SUFFIX)) continue;
      let name: string;
      try {
        name = decodeURIComponent(entry.slice(0, -SUFFIX.length));
      } catch {
        junk.push(file);
        continue;
      }
      const text = await fs.readFile(file, 'utf8').catch(() => undefined);
      const rec = text === undefined ? undefined : parseRecord(name, text);
      if (rec) records.push(rec);
      else junk.push(file);
    }
    return { records, junk };
  }

  /**
   * Start-up clean-up after an emperor that died without stopping its vassals. For each record,
   * the live processes of group rec.pgid that started no earlier than the recorded leader get
   * SIGKILL, unless the ids were recycled: the leader's pid now belongs to a process with
   * another start time, the record lacks a start time, or it comes from an earlier boot.
   * Every record is deleted afterwards; the vassals get new ones when they start.
   *
   * Returns the records whose processes were killed: those are worth a warning. Records that
   * were skipped (ids recycled, nothing left running) are only reported to onSkip.
   */
  async reapLeftovers(onSkip?: (skipped: LeftoverReport) => void): Promise<LeftoverReport[]> {
    const { records, junk } = await this.scan();
    await Promise.all(junk.map((file) => fs.rm(file, { force: true })));
    if (records.length === 0) return [];

    const bootId = readBootId();
    const own = readStatSync(process.pid)?.pgid;
    const procs = snapshot();
    const plans: Plan[] = records.map((rec) => ({ rec, skip: whyNotKill(rec, procs, bootId, own), killed: new Set<number>(), left: 0 }));
    const active = plans.filter((p) => p.skip === undefined);

    // Repeat until nothing matches: a group can fork between our scan and our kill.
    const deadline = Date.now() + REAP_WAIT_MS;
    for (let all = procs; ; all = snapshot()) {
      for (const plan of active) {
        const found = members(plan.rec, all).filter((pid) => pid !== process.pid);
        plan.left = found.length;
        for (const pid of found) {
          try {
            process.kill(pid, 'SIGKILL');
            plan.killed.add(pid);
          } catch {
            // Already gone, or not ours to kill.
          }
        }
      }
      if (active.every((p) => p.left === 0) || Date.now() >= deadline) break;
      await delay(POLL_MS);
    }

    await Promise.all(records.map((rec) => this.remove(rec.name)));
    const reports: LeftoverReport[] = [];
    for (const { rec, skip, killed, left } of plans) {
      const report = { name: rec.name, pid: rec.pid, pgid: rec.pgid, killed: killed.size };
      if (killed.size === 0) {
        onSkip?.({ ...report, reason: skip ?? 'nothing of it was running' });
      } else {
        reports.push({ ...report, reason: left > 0 ? `${left} of its processes survived SIGKILL` : `its process group ${rec.pgid} was still running` });
      }
    }
    return reports;
  }
}

function whyNotKill(rec: StoredRecord, procs: Map<number, ProcStat>, bootId: string | undefined, ownPgid: number | undefined): string | undefined {
  if (rec.startTime === undefined) return 'no start time recorded: cannot tell its processes from strangers';
  if (rec.bootId !== undefined && bootId !== undefined && rec.bootId !== bootId) return 'recorded before a reboot';
  if (rec.pgid < 2 || rec.pgid === ownPgid) return 'process group is our own';
  const leader = procs.get(rec.pgid);
  if (leader && leader.startTime !== rec.startTime) return 'pid reused by another process';
  return undefined;
}

/** Live processes of the recorded group that are not older than its recorded leader. */
function members(rec: StoredRecord, procs: Map<number, ProcStat>): number[] {
  const since = BigInt(rec.startTime ?? '0');
  const found: number[] = [];
  for (const [pid, stat] of procs) {
    if (stat.pgid === rec.pgid && isLive(stat) && BigInt(stat.startTime) >= since) found.push(pid);
  }
  return found;
}
