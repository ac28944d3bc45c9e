// Secrets the emperor reads for itself must never leak into the apps it runs; a vassal that
// needs one names it in its own `env:`.
const SECRET_VARS = new Set([
  'EMPEROR_ETCD_PASSWORD',
  'EMPUSA_ETCD_PASSWORD',
  'EMPEROR_CONSUL_TOKEN',
  'CONSUL_HTTP_TOKEN',
  'CONSUL_HTTP_AUTH',
]);

export function inheritableEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && !SECRET_VARS.has(k)) out[k] = v;
  }
  return out;
}
