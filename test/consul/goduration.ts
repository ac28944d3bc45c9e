// Go's time.ParseDuration / time.Duration.String, which Consul uses for every duration it reads
// ("10s", "1m30s", "300ms") and for the durations it prints back ("1h30m0s", "0s").
// Values are nanoseconds held in a JS number (exact up to about 104 days, plenty for a test double).

const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3, // U+00B5 micro sign
  'μs': 1e3, // U+03BC Greek mu
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

export class GoDurationError extends Error {}

/** time.ParseDuration: "300ms", "1.5h", "2h45m", "-1s", "0". Returns nanoseconds; throws Go's error text. */
export function parseGoDuration(input: string): number {
  const quoted = JSON.stringify(input);
  let rest = input;
  let negative = false;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    negative = rest.startsWith('-');
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') throw new GoDurationError(`time: invalid duration ${quoted}`);
  let total = 0;
  while (rest !== '') {
    const num = /^(\d*)(?:\.(\d*))?/.exec(rest);
    const whole = num?.[1] ?? '';
    const frac = num?.[2] ?? '';
    if (!num || (whole === '' && frac === '')) throw new GoDurationError(`time: invalid duration ${quoted}`);
    rest = rest.slice(num[0].length);
    const unitMatch = /^[^\d.]+/.exec(rest);
    if (!unitMatch) throw new GoDurationError(`time: missing unit in duration ${quoted}`);
    const unit = unitMatch[0];
    const mult = UNIT_NS[unit];
    if (mult === undefined) throw new GoDurationError(`time: unknown unit ${JSON.stringify(unit)} in duration ${quoted}`);
    rest = rest.slice(unit.length);
    total += Number(whole === '' ? '0' : whole) * mult;
    if (frac !== '') total += Number(`0.${frac}`) * mult;
  }
  const ns = Math.round(total);
  return negative ? -ns : ns;
}

function withFraction(whole: number, frac: number, digits: number): string {
  if (frac === 0) return String(whole);
  return `${whole}.${String(frac).padStart(digits, '0').replace(/0+$/, '')}`;
}

/** time.Duration.String: 0 -> "0s", 300ms -> "300ms", 90m -> "1h30m0s", 10s -> "10s". */
export function formatGoDuration(nanoseconds: number): string {
  if (nanoseconds === 0) return '0s';
  const sign = nanoseconds < 0 ? '-' : '';
  let u = Math.abs(Math.round(nanoseconds));
  if (u < 1e3) return `${sign}${u}ns`;
  if (u < 1e6) return `${sign}${withFraction(Math.floor(u / 1e3), u % 1e3, 3)}µs`;
  if (u < 1e9) return `${sign}${withFraction(Math.floor(u / 1e6), u % 1e6, 6)}ms`;
  const hours = Math.floor(u / 3600e9);
  u -= hours * 3600e9;
  const minutes = Math.floor(u / 60e9);
  u -= minutes * 60e9;
  const seconds = withFraction(Math.floor(u / 1e9), u % 1e9, 9);
  const h = hours > 0 ? `${hours}h` : '';
  const m = hours > 0 || minutes > 0 ? `${minutes}m` : '';
  return `${sign}${h}${m}${seconds}s`;
}
