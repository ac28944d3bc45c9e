// Keeps the emperor from spending its last file descriptors on vassals. Out of descriptors, the
// emperor could not accept a control connection (status would stop answering), read a vassal
// file or run a check; so a start that would eat into a small reserve is refused as a failed
// start (with back-off), like the EMFILE that would otherwise come a little later.
import fs from 'node:fs';

/** Descriptors always left for the control socket, metrics, checks, registries and file reads. */
export const FD_RESERVE = 32;
/**
 * Of the reserve, what short-lived work may hold at once: reading a vassal file, writing a
 * pid record. Without this bound a burst of 40 new files opened 40 descriptors at
 * once (libuv's thread pool runs the opens, so nothing else serialises them) and ate the
 * reserve: libuv then accepts a control connection only to close it (its EMFILE trick), and
 * `emperor status` got no answer exactly when the operator needs it.
 */
export const TRANSIENT_FDS = 8;
/** Most a vassal start takes: stdout and stderr, the Emperor protocol socketpair, the readiness pipe, the log file. */
const FDS_PER_START = 5;
/** Count the open descriptors again at least this often (other work opens and closes its own). */
const MEASURE_MS = 1000;
/** Below this estimated headroom, every start counts instead of estimating. */
const CAREFUL_BELOW = FD_RESERVE + 64;

let measuredAt = -Infinity;
/** Descriptors open at the last count, plus FDS_PER_START for each start since. */
let estimatedUsed = 0;
let lastLimit = Infinity;

/** /proc/self/limits, kept open (close-on-exec, as every fd Node opens) and read again from offset 0. */
let limitsFd: number | undefined;
const limitsBuf = Buffer.allocUnsafe(4096);

function readLimits(): string {
  // One pread instead of open, fstat, read and close on every start: a quarter of the cost
  // (issue 13). procfs makes the text afresh for every read from offset 0.
  limitsFd ??= fs.openSync('/proc/self/limits', 'r');
  try {
    return limitsBuf.toString('latin1', 0, fs.readSync(limitsFd, limitsBuf, 0, limitsBuf.length, 0));
  } catch (err) {
    fs.closeSync(limitsFd);
    limitsFd = undefined;
    throw err;
  }
}

/** The soft RLIMIT_NOFILE, from /proc (Node has no getrlimit). Infinity when unknown. */
function softLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readLimits());
  return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
}

/**
 * Reads the limit, and counts the descriptors when asked to. The limit is read on every start:
 * it is cheap, and a limit lowered under us (prlimit, a wrapper's ulimit) must count at once,
 * not after the next count (the estimate of a second ago let a burst of 40 starts eat the
 * reserve). Counting costs a readdir of /proc/self/fd, so it waits for the period or for
 * headroom to get thin.
 */
function measure(now: number, count: boolean): void {
  try {
    lastLimit = softLimit();
    if (!count) return;
    measuredAt = now;
    // Counting /proc/self/fd costs one descriptor for the directory itself: fine, it is freed.
    estimatedUsed = fs.readdirSync('/proc/self/fd').length;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // No descriptor even for this: nothing is free. No /proc at all: no way to know, so no limit.
    if (code === 'EMFILE' || code === 'ENFILE') {
      measuredAt = -Infinity;
      estimatedUsed = lastLimit;
    } else {
      lastLimit = Infinity;
    }
  }
}

/** Why a vassal must not start now, or undefined when there are descriptors enough. */
export function fdShortage(now = Date.now()): string | undefined {
  measure(now, now - measuredAt >= MEASURE_MS);
  if (lastLimit - estimatedUsed < CAREFUL_BELOW && measuredAt !== now) measure(now, true);
  const free = lastLimit - estimatedUsed;
  if (free - FDS_PER_START < FD_RESERVE) {
    const left = Math.max(0, free);
    return `only ${left} of ${lastLimit} file descriptors left (the emperor keeps ${FD_RESERVE} in reserve for its control socket and checks; raise ulimit -n / LimitNOFILE)`;
  }
  estimatedUsed += FDS_PER_START;
  return undefined;
}

/** A start failed with EMFILE/ENFILE: the estimate was wrong, measure next time. */
export function fdExhausted(): void {
  measuredAt = -Infinity;
}

let transientHeld = 0;
const transientWaiting: Array<() => void> = [];

/**
 * Runs `work`, which opens and closes descriptors of its own, once fewer than TRANSIENT_FDS
 * such pieces of work are running (FIFO). `work` should hold at most one descriptor at a time.
 */
export async function withTransientFd<T>(work: () => Promise<T>): Promise<T> {
  if (transientHeld >= TRANSIENT_FDS) await new Promise<void>((resolve) => transientWaiting.push(resolve));
  else transientHeld++;
  try {
    return await work();
  } finally {
    // The slot passes straight to the next waiter, so the count never dips and lets a newcomer jump the queue.
    const next = transientWaiting.shift();
    if (next) next();
    else transientHeld--;
  }
}
