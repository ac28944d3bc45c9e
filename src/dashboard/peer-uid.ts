// Who is on the other end of a loopback TCP connection. The control socket is 0600, so only the
// emperor's user (and root) can act through it; a loopback port is open to every local user.
// The kernel knows each socket's owner (/proc/net/tcp, the identd approach): looking up the
// client's end of the connection gives the same answer a unix socket's permissions give.
import fs from 'node:fs/promises';
import type net from 'node:net';

const hexPort = (port: number): string => port.toString(16).toUpperCase().padStart(4, '0');

/** Four bytes as /proc/net prints a 32-bit word: in host (little-endian) order. */
const word = (bytes: number[]): string =>
  bytes
    .slice()
    .reverse()
    .map((b) => b.toString(16).toUpperCase().padStart(2, '0'))
    .join('');

/** How an address appears in /proc/net/tcp (IPv4) and /proc/net/tcp6 (IPv6 and mapped IPv4). */
export function procAddresses(ip: string): string[] {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(ip);
  if (v4) {
    const bytes = v4.slice(1, 5).map(Number);
    return [word(bytes), '0000000000000000FFFF0000' + word(bytes)];
  }
  if (ip === '::1') return ['00000000000000000000000001000000'];
  return [];
}

/**
 * The uid owning the client end of `socket`, or undefined when it cannot be found (not
 * loopback, not Linux, the client already gone).
 */
export async function peerUid(socket: net.Socket): Promise<number | undefined> {
  const { remotePort, localPort, remoteAddress, localAddress } = socket;
  if (remotePort === undefined || localPort === undefined || !remoteAddress || !localAddress) return undefined;
  // The client's socket: its local end is our remote end, and its remote end is our local end.
  const locals = new Set(procAddresses(remoteAddress).map((a) => `${a}:${hexPort(remotePort)}`));
  const remotes = new Set(procAddresses(localAddress).map((a) => `${a}:${hexPort(localPort)}`));
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = await fs.readFile(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
      const f = line.trim().split(/\s+/);
      // Both ends of the connection are in the table; ours has them the other way round.
      if (f.length < 8 || !locals.has(f[1]!) || !remotes.has(f[2]!)) continue;
      const uid = Number(f[7]);
      if (Number.isInteger(uid)) return uid;
    }
  }
  return undefined;
}
