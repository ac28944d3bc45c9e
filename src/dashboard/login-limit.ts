// Failed sign-ins (the login form, a wrong bearer token) slow the client that made them down, the
// way sshd's MaxAuthTries and fail2ban do: a few free tries, then a lock that doubles with every
// further failure, up to a cap. The lock is per client, so an attacker locks out only itself:
// off loopback a client is its address (an IPv6 client its /64, which one host controls
// wholesale); on loopback, where every local user shares 127.0.0.1, it is the connection's
// owner (uid, from /proc/net/tcp), so a hostile local user cannot lock out the operator. The cap
// keeps any lock finite, and one success clears it.

/** Failures before the first lock (the one that makes FREE_TRIES locks). */
export const FREE_TRIES = 5;
/** The first lock; each further failure doubles it. */
export const FIRST_LOCK_MS = 5000;
/** No lock is longer: the operator's own typos never shut them out for long. */
export const MAX_LOCK_MS = 5 * 60_000;
/** A client that has not failed for this long starts again with FREE_TRIES. */
const FORGET_MS = 15 * 60_000;
/** Clients remembered at most (the oldest is forgotten first): failures cannot fill memory. */
const MAX_CLIENTS = 10_000;

interface Record {
  failures: number;
  lockedUntil: number;
  last: number;
}

export class LoginLimiter {
  private readonly clients = new Map<string, Record>();

  constructor(private readonly now: () => number = Date.now) {}

  /** How long `client` must wait before its next try (0: it may try now). */
  waitMs(client: string): number {
    const r = this.fresh(client);
    return r === undefined ? 0 : Math.max(0, r.lockedUntil - this.now());
  }

  /** A failed try: how long the client is now locked (0 while it has free tries left). */
  failed(client: string): number {
    const now = this.now();
    const r = this.fresh(client) ?? { failures: 0, lockedUntil: 0, last: now };
    r.failures++;
    r.last = now;
    const over = r.failures - FREE_TRIES + 1;
    const lock = over <= 0 ? 0 : Math.min(MAX_LOCK_MS, FIRST_LOCK_MS * 2 ** Math.min(over - 1, 30));
    r.lockedUntil = now + lock;
    // Most recently failed last: when full, the one that failed longest ago goes.
    this.clients.delete(client);
    this.clients.set(client, r);
    if (this.clients.size > MAX_CLIENTS) this.clients.delete(this.clients.keys().next().value!);
    return lock;
  }

  succeeded(client: string): void {
    this.clients.delete(client);
  }

  private fresh(client: string): Record | undefined {
    const r = this.clients.get(client);
    if (r && this.now() - r.last > FORGET_MS && r.lockedUntil <= this.now()) {
      this.clients.delete(client);
      return undefined;
    }
    return r;
  }
}

/** The part of an address one client controls: IPv4 (and IPv4-mapped) whole, IPv6 its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.split('%')[0]!.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::') ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
