// Keeps the emperor from spending its last file descriptors on vassals. Out of descriptors, the
// emperor could not accept a control connection (status would stop answering), read a vassal
// file or run a check; so a start that would eat into a small reserve is refused as a failed
// start (with back-off), like the EMFILE that would otherwise come a little later.
import fs from 'node:fs';

/** Descriptors always left for the control socket, metrics, checks, registries and file reads. */
export const FD_RESERVE = 32;
/** Most a vassal start takes: stdout and stderr, the Emperor protocol socketpair, the readiness pipe, the log file. */
const FDS_PER_START = 5;
/** Measure again at least this often (the limit can change under us: prlimit, ulimit in a wrapper). */
const MEASURE_MS = 1000;
/** Below this estimated headroom, every start measures instead of estimating. */
const CAREFUL_BELOW = FD_RESERVE + 64;

let measuredAt = -Infinity;
let estimatedFree = Infinity;
let lastLimit = Infinity;

/** The soft RLIMIT_NOFILE, from /proc (Node has no getrlimit). Infinity when unknown. */
function softLimit(): number {
  const text = fs.readFileSync('/proc/self/limits', 'utf8');
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
}

function measure(): void {
  measuredAt = Date.now();
  try {
    lastLimit = softLimit();
    // Counting /proc/self/fd costs one descriptor for the directory itself: fine, it is freed.
    estimatedFree = lastLimit - fs.readdirSync('/proc/self/fd').length;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // No descriptor even for this: nothing is free. No /proc at all: no way to know, so no limit.
    estimatedFree = code === 'EMFILE' || code === 'ENFILE' ? 0 : Infinity;
  }
}

/** Why a vassal must not start now, or undefined when there are descriptors enough. */
export function fdShortage(now = Date.now()): string | undefined {
  if (now - measuredAt >= MEASURE_MS || estimatedFree < CAREFUL_BELOW) measure();
  if (estimatedFree - FDS_PER_START < FD_RESERVE) {
    const left = Math.max(0, estimatedFree);
    return `only ${left} of ${lastLimit} file descriptors left (the emperor keeps ${FD_RESERVE} in reserve for its control socket and checks; raise ulimit -n / LimitNOFILE)`;
  }
  estimatedFree -= FDS_PER_START;
  return undefined;
}

/** A start failed with EMFILE/ENFILE: the estimate was wrong, measure next time. */
export function fdExhausted(): void {
  measuredAt = -Infinity;
}
