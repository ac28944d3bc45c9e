// Who may see and do what on the dashboard. Three doors, each checked on every request:
//  - Host: only names this listener answers to, so a DNS-rebinding page (evil.example resolving
//    to 127.0.0.1) gets nothing, not even the read-only views.
//  - Credentials: with --http-token-file, a bearer token or the session cookie the login form
//    sets (HttpOnly, SameSite=Strict); compared in constant time. Without one (loopback only),
//    status is open to local users, but logs, specs and actions need the connection to come from
//    the emperor's own user or root: the same users its 0600 control socket admits.
//  - Actions: POST only, with the CSRF header the page's script sets, and an Origin (when the
//    browser sends one) that is this dashboard's.
import { createHmac, randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import type http from 'node:http';
import { addressKey } from './login-limit.js';
import { isLoopback } from './options.js';
import { peerUid } from './peer-uid.js';

export const SESSION_COOKIE = 'emperor_session';
export const CSRF_HEADER = 'x-emperor-csrf';

/** Every answer: nothing loads from elsewhere, nothing inline runs, no framing, no sniffing. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/** Equal strings, in time that does not depend on where they differ (nor on their lengths). */
export function sameSecret(a: string, b: string): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

function cookies(req: http.IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

export type Verdict = { ok: true } | { ok: false; status: 400 | 401 | 403; message: string };

export class Access {
  /** Per emperor run: CSRF tokens and sessions of an earlier run are void. */
  private readonly secret = randomBytes(32);
  readonly csrf: string;
  private readonly session: string | undefined;
  private readonly hosts: Set<string> | undefined;
  private readonly ownUid = process.getuid?.() ?? -1;

  constructor(
    bind: { host: string; port: number },
    private readonly token: string | undefined,
  ) {
    this.csrf = createHmac('sha256', this.secret).update('csrf').digest('base64url');
    // The cookie holds a value derived from the token, never the token itself.
    this.session = token === undefined ? undefined : createHmac('sha256', this.secret).update('session').update(token).digest('base64url');
    const wildcard = bind.host === '0.0.0.0' || bind.host === '::';
    if (wildcard) {
      // Any of the machine's names may reach it; the token (required off loopback) guards it.
      this.hosts = undefined;
    } else {
      const p = bind.port;
      const named = bind.host.includes(':') ? `[${bind.host}]` : bind.host;
      this.hosts = new Set([`${named}:${p}`.toLowerCase(), `localhost:${p}`, `127.0.0.1:${p}`, `[::1]:${p}`]);
      if (!isLoopback(bind.host)) this.hosts.add(`${named}:${p}`.toLowerCase());
    }
  }

  get needsLogin(): boolean {
    return this.token !== undefined;
  }

  /** The Host header names this dashboard (DNS rebinding). */
  host(req: http.IncomingMessage): Verdict {
    const host = (req.headers.host ?? '').toLowerCase();
    if (this.hosts && !this.hosts.has(host)) return { ok: false, status: 400, message: `unknown Host "${host.slice(0, 100)}": this dashboard answers to ${[...this.hosts].join(', ')}` };
    return { ok: true };
  }

  /** Signed in (or no token configured). */
  authenticated(req: http.IncomingMessage): boolean {
    if (this.token === undefined) return true;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ') && sameSecret(auth.slice(7).trim(), this.token)) return true;
    const c = cookies(req).get(SESSION_COOKIE);
    return c !== undefined && this.session !== undefined && sameSecret(c, this.session);
  }

  /** A bearer token was sent and is wrong (a guess: counted against the client). */
  wrongBearer(req: http.IncomingMessage): boolean {
    const auth = req.headers.authorization;
    if (this.token === undefined || auth === undefined) return false;
    return !(auth.startsWith('Bearer ') && sameSecret(auth.slice(7).trim(), this.token));
  }

  /**
   * Who is trying to sign in, for the rate limit: off loopback its address (an IPv6 one's /64);
   * on loopback, shared by every local user, the uid owning the connection.
   */
  async client(req: http.IncomingMessage): Promise<string> {
    const address = req.socket.remoteAddress ?? '?';
    if (!isLoopback(address)) return addressKey(address);
    const uid = await peerUid(req.socket);
    return uid === undefined ? 'loopback, owner unknown' : `loopback uid ${uid}`;
  }

  /** The login form's token is right: the cookie to set. */
  login(token: string): string | undefined {
    if (this.token === undefined || this.session === undefined || !sameSecret(token, this.token)) return undefined;
    return `${SESSION_COOKIE}=${this.session}; HttpOnly; SameSite=Strict; Path=/`;
  }

  /**
   * Logs, specs and actions: with a token, being signed in is enough; without one, the client's
   * end of the connection must belong to the emperor's user or root.
   */
  async privileged(req: http.IncomingMessage): Promise<Verdict> {
    if (!this.authenticated(req)) return { ok: false, status: 401, message: 'sign in first (bearer token or the login form)' };
    if (this.token !== undefined) return { ok: true };
    const uid = await peerUid(req.socket);
    if (uid !== undefined && (uid === this.ownUid || uid === 0)) return { ok: true };
    return {
      ok: false,
      status: 403,
      message: `only the emperor's user (uid ${this.ownUid}) and root may see logs and specs or act here${uid === undefined ? '' : ` (this connection is uid ${uid})`}, as with its control socket; give the emperor --http-token-file to let others in`,
    };
  }

  /** A state-changing request comes from this dashboard's own page (CSRF). */
  sameOrigin(req: http.IncomingMessage): Verdict {
    const sent = req.headers[CSRF_HEADER];
    if (typeof sent !== 'string' || !sameSecret(sent, this.csrf)) return { ok: false, status: 403, message: `missing or wrong ${CSRF_HEADER} header (CSRF): actions come from the dashboard page` };
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${req.headers.host ?? ''}`) return { ok: false, status: 403, message: `cross-origin request refused (Origin ${origin.slice(0, 100)})` };
    if (req.headers['sec-fetch-site'] === 'cross-site') return { ok: false, status: 403, message: 'cross-site request refused' };
    return { ok: true };
  }
}
