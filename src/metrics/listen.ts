// --metrics HOST:PORT, apart from the metrics server so the CLI can check the flag without
// loading prom-client (an emperor without --metrics never loads it).
/** host:port, :port or port → where to listen; loopback unless a host is named. */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:(\[[^\]]+\]|[^:]*):)?(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new Error(`expected HOST:PORT, :PORT or PORT (port 1-65535), got "${value}"`);
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '') || '127.0.0.1';
  return { host, port };
}
