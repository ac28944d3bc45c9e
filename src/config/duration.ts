// Durations are written with a unit ("500ms", "10s", "2m") or as a bare number of seconds ("30",
// YAML 30), as systemd and empusa (`--ttl 30`) read them, and handled as integer milliseconds.
import ms from 'ms';
import { describeValue } from './describe.js';

export const DURATION_EXPECTED = 'a duration like 500ms, 10s or 2m';

/**
 * Longest accepted duration: setTimeout silently treats anything above 2^31-1 ms as 1 ms,
 * which would turn "timeout: 30d" into "kill immediately".
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const WITH_UNIT = /^(?:\d+(?:\.\d+)?|\.\d+)\s*[a-z]+$/i;
// ms() alone would take "10" as 10 milliseconds; a bare number is read as seconds instead (systemd's
// rule, and empusa's `--ttl 30`), never as milliseconds.
const BARE_SECONDS = /^(?:\d+(?:\.\d+)?|\.\d+)$/;

export type DurationCheck = { ok: true; ms: number } | { ok: false; problem: string };

/** Non-throwing form of parseDuration, for callers that turn failures into their own errors. */
export function checkDuration(value: unknown): DurationCheck {
  const fail = (hint = ''): DurationCheck => ({
    ok: false,
    problem: `expected ${DURATION_EXPECTED}, got ${describeValue(value)}${hint}`,
  });
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return fail();
    if (value < 0) return fail(' (durations cannot be negative)');
    return bounded(value * 1000, fail);
  }
  if (typeof value !== 'string') return fail();
  const text = value.trim();
  if (text.startsWith('-')) return fail(' (durations cannot be negative)');
  if (BARE_SECONDS.test(text)) return bounded(Number(text) * 1000, fail);
  if (!WITH_UNIT.test(text)) return fail();
  // The regex above guarantees the shape ms expects; its typings want a template-literal type.
  const parsed: unknown = ms(text as ms.StringValue);
  if (typeof parsed !== 'number' || !Number.isFinite(parsed)) return fail();
  return bounded(parsed, fail);
}

function bounded(msValue: number, fail: (hint?: string) => DurationCheck): DurationCheck {
  const rounded = Math.round(msValue);
  if (!Number.isFinite(rounded) || rounded > MAX_DURATION_MS) return fail(' (the maximum is 24d)');
  return { ok: true, ms: rounded };
}

/** Parses "500ms", "10s", "2m", "1h", "0s", "30" (seconds) into milliseconds; throws on anything else. */
export function parseDuration(value: unknown): number {
  const result = checkDuration(value);
  if (!result.ok) throw new Error(result.problem);
  return result.ms;
}

const UNITS: ReadonlyArray<readonly [string, number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
];

/** Compact rendering for status output: 1500 -> "1.5s", 120000 -> "2m", 300 -> "300ms". */
export function formatDuration(msValue: number): string {
  if (!Number.isFinite(msValue)) return 'n/a';
  const sign = msValue < 0 ? '-' : '';
  const abs = Math.abs(msValue);
  for (const [unit, size] of UNITS) {
    // Compare after rounding so 59_990 shows as "1m" rather than "60s".
    const value = Math.round((abs / size) * 10) / 10;
    if (value >= 1) return `${sign}${value}${unit}`;
  }
  return `${sign}${Math.round(abs)}ms`;
}
