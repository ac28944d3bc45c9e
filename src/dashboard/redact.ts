// A vassal's spec as the dashboard shows it. Apps take their secrets from env (the emperor's own
// are removed from what vassals inherit, and a vassal that needs one names it in env:), so every
// env value is hidden, as is any field whose name says it holds a secret (an http check's
// Authorization header, a password...).
export const HIDDEN = '(hidden)';

const SECRET_KEY = /pass|secret|token|auth|cookie|credential|private|api[-_]?key|session/i;

function redactValue(value: unknown, key: string | undefined): unknown {
  if (key !== undefined && SECRET_KEY.test(key)) return HIDDEN;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, undefined));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (k === 'env' && v !== null && typeof v === 'object') {
        out[k] = Object.fromEntries(Object.keys(v).map((name) => [name, HIDDEN]));
      } else out[k] = redactValue(v, k);
    }
    return out;
  }
  return value;
}

export function redactSpec(spec: object): Record<string, unknown> {
  return redactValue(spec, undefined) as Record<string, unknown>;
}
