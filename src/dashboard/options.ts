// --http and --http-token-file, checked before the emperor starts anything: a dashboard on a
// network address without a token would hand every vassal to whoever can reach the port.
import fs from 'node:fs';
import net from 'node:net';

export interface DashboardOptions {
  readonly host: string;
  readonly port: number;
  /** Required for any bind that is not loopback. */
  readonly token: string | undefined;
  readonly tokenFile: string | undefined;
}

/** Shortest token accepted: a guessable one would make the login form a door. */
export const MIN_TOKEN_CHARS = 16;

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  if (net.isIPv6(host)) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

export class DashboardOptionError extends Error {}

/** The token from its file: a regular file the world cannot read, at least MIN_TOKEN_CHARS long. */
export function readTokenFile(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw new DashboardOptionError(`--http-token-file ${file}: cannot open it: ${(err as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new DashboardOptionError(`--http-token-file ${file}: expected a regular file`);
    if ((st.mode & 0o007) !== 0) {
      throw new DashboardOptionError(`--http-token-file ${file}: readable or writable by every user (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${file}`);
    }
    if (st.size > 4096) throw new DashboardOptionError(`--http-token-file ${file}: expected one token (at most 4096 bytes), got ${st.size} bytes`);
    const token = fs.readFileSync(fd, 'utf8').trim();
    if (token.length < MIN_TOKEN_CHARS || /\s/.test(token)) {
      throw new DashboardOptionError(`--http-token-file ${file}: expected one token of at least ${MIN_TOKEN_CHARS} characters without spaces (e.g. from \`openssl rand -hex 32\`)`);
    }
    return token;
  } finally {
    fs.closeSync(fd);
  }
}

/** The dashboard's settings, or an error naming the flag: a non-loopback bind needs a token. */
export function resolveDashboardOptions(listen: { host: string; port: number } | undefined, tokenFile: string | undefined): DashboardOptions | undefined {
  if (!listen) {
    if (tokenFile) throw new DashboardOptionError('--http-token-file only makes sense with --http');
    return undefined;
  }
  const token = tokenFile === undefined ? undefined : readTokenFile(tokenFile);
  if (!isLoopback(listen.host) && token === undefined) {
    throw new DashboardOptionError(
      `--http ${listen.host}:${listen.port} is not a loopback address: anyone who can reach it could stop and start every vassal. Give --http-token-file FILE (a secret token; the page asks for it once), or bind to 127.0.0.1`,
    );
  }
  return { ...listen, token, tokenFile };
}
