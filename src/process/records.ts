// Pid records: one JSON file per running vassal, so the next emperor can kill what a
// SIGKILLed one left behind (the guardian covers that too, unless it was killed as well).
//
// A record only ever leads to SIGKILL for a process that is provably the one recorded:
// - the record file is a regular file of the emperor's user, writable by nobody else, in a
//   directory checked the same way (trustedSubdir), read through one descriptor;
// - the emperor that wrote it is dead (its pid and start time no longer match a live process):
//   one state directory has one emperor at a time (its lock), but a record copied from a live
//   emperor's directory must not kill that emperor's vassals;
// - same boot, and the process started no earlier than the recorded leader, in the recorded
//   process group;
// - and it carries the record's spawn id in its environment (EMPEROR_SPAWN_ID, a random value
//   given to each spawn): a pid or process group id can be recycled, a 122-bit random value in
//   the environment the process was started with cannot be guessed by someone who cannot read
//   the record. A child that an app starts with a scrubbed environment is therefore not reaped
//   by the next emperor (the guardian still kills it when the emperor dies): sparing a
//   leftover is the price of never killing a stranger.
import { randomUUID } from 'node:crypto';
import fs, { type FileHandle } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { trustedSubdir } from '../state/trusted-dir.js';
import { withTransientFd } from './fdbudget.js';
import { isLive, readBootId, readStatSync, snapshot, type ProcStat } from './procfs.js';
import { delay } from './timing.js';

/** The variable each vassal is started with, holding its record's spawn id. */
export const SPAWN_ID_VAR = 'EMPEROR_SPAWN_ID';

/** A fresh spawn id, for one spawn's environment and its record. */
export const newSpawnId = (): string => randomUUID();

export interface PidRecord {
  readonly pid: number;
  readonly pgid: number;
  /** /proc starttime of the leader; without it nothing is ever killed for this record. */
  readonly startTime: string | undefined;
  readonly argv: readonly string[];
  readonly emperorPid: number;
  /** The value of EMPEROR_SPAWN_ID in the spawn's environment; without it nothing is killed. */
  readonly spawnId?: string | undefined;
}

export interface StoredRecord extends PidRecord {
  readonly name: string;
  /** Written automatically: start times only compare within one boot. */
  readonly bootId?: string;
  /** Written automatically: the writing emperor's start time, to tell whether it still lives. */
  readonly emperorStartTime?: string;
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
/** A record is a few hundred bytes; a bigger file is not one of ours. */
const MAX_RECORD_BYTES = 256 * 1024;
const SPAWN_ID = /^[0-9a-f-]{36}$/;

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
  const { pid, pgid, startTime, argv, emperorPid, bootId, spawnId, emperorStartTime } = r;
  if (!isPosInt(pid) || !isPosInt(pgid) || !isPosInt(emperorPid)) return undefined;
  if (startTime !== undefined && (typeof startTime !== 'string' || !/^\d+$/.test(startTime))) return undefined;
  if (emperorStartTime !== undefined && (typeof emperorStartTime !== 'string' || !/^\d+$/.test(emperorStartTime))) return undefined;
  if (!Array.isArray(argv) || !argv.every((a): a is string => typeof a === 'string')) return undefined;
  if (bootId !== undefined && typeof bootId !== 'string') return undefined;
  if (spawnId !== undefined && (typeof spawnId !== 'string' || !SPAWN_ID.test(spawnId))) return undefined;
  return {
    name,
    pid,
    pgid,
    startTime,
    argv,
    emperorPid,
    ...(bootId === undefined ? {} : { bootId }),
    ...(spawnId === undefined ? {} : { spawnId }),
    ...(emperorStartTime === undefined ? {} : { emperorStartTime }),
  };
}

/**
 * A record file's text, or why it is not trusted. One descriptor, opened without following a
 * link or blocking on a FIFO, gives the owner, mode, type, size and bytes of the same file.
 */
async function readTrusted(file: string, euid: number): Promise<{ text: string } | { untrusted: string }> {
  const { constants: c } = fs;
  let fh: FileHandle;
  try {
    fh = await fs.open(file, c.O_RDONLY | c.O_NOFOLLOW | c.O_NONBLOCK);
  } catch (err) {
    return { untrusted: `cannot open it (${(err as NodeJS.ErrnoException).code ?? String(err)}), e.g. a symbolic link` };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { untrusted: 'not a regular file' };
    if (st.uid !== euid) return { untrusted: `the file is owned by uid ${st.uid}, not by the emperor's user (uid ${euid})` };
    if ((st.mode & 0o022) !== 0) return { untrusted: `the file is writable by group or others (mode 0${(st.mode & 0o777).toString(8)})` };
    if (st.size > MAX_RECORD_BYTES) return { untrusted: `the file is ${st.size} bytes, far more than a record` };
    return { text: await fh.readFile('utf8') };
  } finally {
    await fh.close();
  }
}

/** True when the process was started with NAME=value in its environment. */
function startedWith(pid: number, name: string, value: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`${name}=${value}`);
  } catch {
    return false; // gone, or not ours to read: not provably ours either
  }
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
  private readonly euid = process.geteuid?.() ?? 0;
  private readonly ownStartTime = readStatSync(process.pid)?.startTime;
  /** Read once: it changes only with a reboot. */
  private readonly bootId = readBootId();

  constructor(readonly dir: string) {}

  /** Create the directory (0700) or check the one found: ours, writable by nobody else. */
  async prepare(): Promise<void> {
    await trustedSubdir(this.dir, 'pid records directory', this.euid);
  }

  private file(name: string): string {
    // Names are checked upstream, but a file name must never be able to leave the directory.
    return path.join(this.dir, encodeURIComponent(name) + SUFFIX);
  }

  /**
   * Atomic: a reader (the next emperor) sees the old record or the new one, never half of one.
   * The directory is made by prepare(), and again only when it went missing (ENOENT): a mkdir
   * per record was one more trip through the thread pool for every start of a burst (issue 13).
   */
  async write(name: string, rec: PidRecord): Promise<void> {
    const stored = { ...rec, bootId: this.bootId, emperorStartTime: this.ownStartTime };
    const text = JSON.stringify(stored) + '\n';
    const tmp = path.join(this.dir, `.${encodeURIComponent(name)}.${process.pid}.${++this.seq}.tmp`);
    try {
      await this.writeNew(tmp, text).catch(async (err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
        await this.writeNew(tmp, text);
      });
      await fs.rename(tmp, this.file(name));
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  private writeNew(file: string, text: string): Promise<void> {
    // 0600: the records name the apps and their argv; and only a file nobody else could
    // have written is trusted when read back.
    // A burst of starts writes a burst of records: not with the control socket's descriptors.
    return withTransientFd(() => fs.writeFile(file, text, { mode: 0o600, flag: 'wx' }));
  }

  async remove(name: string): Promise<void> {
    await fs.rm(this.file(name), { force: true });
  }

  /** Valid records; unreadable files are skipped (reapLeftovers deletes them). */
  async list(): Promise<StoredRecord[]> {
    return (await this.scan()).records;
  }

  private async scan(): Promise<{ records: StoredRecord[]; junk: string[]; untrusted: LeftoverReport[] }> {
    let entries: string[];
    try {
      entries = await fs.readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], junk: [], untrusted: [] };
      throw err;
    }
    const records: StoredRecord[] = [];
    const junk: string[] = [];
    const untrusted: LeftoverReport[] = [];
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
      const read = await readTrusted(file, this.euid);
      if ('untrusted' in read) {
        // Never parsed, and deleted with the junk: nobody else may plant what we act on.
        untrusted.push({ name, pid: 0, pgid: 0, killed: 0, reason: `record not trusted: ${read.untrusted}` });
        junk.push(file);
        continue;
      }
      const rec = parseRecord(name, read.text);
      if (rec) records.push(rec);
      else junk.push(file);
    }
    return { records, junk, untrusted };
  }

  /**
   * Start-up clean-up after an emperor that died without stopping its vassals. For each record,
   * the live processes of group rec.pgid that started no earlier than the recorded leader and
   * carry the record's spawn id get SIGKILL, unless the ids were recycled: the leader's pid now
   * belongs to a process with another start time, the record lacks a start time or spawn id,
   * it comes from an earlier boot, or the emperor that wrote it still runs. Records not
   * trusted (see readTrusted) are never acted on. Every record is deleted afterwards; the
   * vassals get new ones when they start.
   *
   * Returns the records whose processes were killed: those are worth a warning. Records that
   * were skipped (ids recycled, nothing left running) are only reported to onSkip.
   */
  async reapLeftovers(onSkip?: (skipped: LeftoverReport) => void): Promise<LeftoverReport[]> {
    const { records, junk, untrusted } = await this.scan();
    await Promise.all(junk.map((file) => fs.rm(file, { force: true })));
    for (const report of untrusted) onSkip?.(report);
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
  if (rec.spawnId === undefined) return 'no spawn id recorded: cannot tell its processes from strangers';
  if (rec.bootId !== undefined && bootId !== undefined && rec.bootId !== bootId) return 'recorded before a reboot';
  if (rec.pgid < 2 || rec.pgid === ownPgid) return 'process group is our own';
  const writer = procs.get(rec.emperorPid);
  if (rec.emperorPid === process.pid || (writer && isLive(writer) && (rec.emperorStartTime === undefined || writer.startTime === rec.emperorStartTime))) {
    return `the emperor that wrote it (pid ${rec.emperorPid}) is still running: its vassals are its own`;
  }
  const leader = procs.get(rec.pgid);
  if (leader && leader.startTime !== rec.startTime) return 'pid reused by another process';
  return undefined;
}

/** Live processes of the recorded group, not older than its recorded leader, started with its spawn id. */
function members(rec: StoredRecord, procs: Map<number, ProcStat>): number[] {
  const since = BigInt(rec.startTime ?? '0');
  const found: number[] = [];
  for (const [pid, stat] of procs) {
    if (stat.pgid === rec.pgid && isLive(stat) && BigInt(stat.startTime) >= since && rec.spawnId !== undefined && startedWith(pid, SPAWN_ID_VAR, rec.spawnId)) {
      found.push(pid);
    }
  }
  return found;
}
