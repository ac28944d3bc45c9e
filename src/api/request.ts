// What the emperor's HTTP servers (the control socket, the dashboard) make of a request's
// target: path segments, vassal names, allowed methods, and the 4xx they answer otherwise.
import type http from 'node:http';

/** A request answered with a 4xx: the message is for the client, nothing is logged. */
export class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: http.OutgoingHttpHeaders = {},
  ) {
    super(message);
  }
}

const SHOWN_CHARS = 200;
/** Client-supplied text echoed in an error: cut short (it is JSON-encoded in the body anyway). */
export const shown = (text: string): string => (text.length > SHOWN_CHARS ? `${text.slice(0, SHOWN_CHARS - 1)}…` : text);

export function allow(method: string, ...allowed: string[]): void {
  if (!allowed.includes(method)) throw new BadRequest(405, `method ${shown(method)} not allowed here: use ${allowed.join(' or ')}`, { allow: allowed.join(', ') });
}

/** Longest vassal name worth looking up: a file name (NAME_MAX) minus the shortest extension. */
const MAX_LOOKUP_NAME = 250;

/**
 * A vassal name from the path. Names come from file names, so one with "/" or NUL (from %2F or
 * %00) or longer than a file name can be is refused as malformed; anything else is looked up,
 * and an unknown one is a 404 (files with invalid names still appear in status as "invalid").
 */
export function vassalName(segment: string): string {
  // eslint-disable-next-line no-control-regex -- NUL is exactly what is refused
  if (segment.length > MAX_LOOKUP_NAME || /[/\u0000]/.test(segment)) {
    throw new BadRequest(400, `invalid vassal name "${shown(segment)}": a vassal name is a file name without its extension, with no "/"`);
  }
  return segment;
}

/** Path segments, percent-decoded; malformed targets and escapes are the client's error. */
export function parseTarget(rawUrl: string): { url: URL; parts: string[] } {
  let url: URL;
  try {
    url = new URL(rawUrl, 'http://emperor');
  } catch {
    throw new BadRequest(400, `malformed request target "${shown(rawUrl)}"`);
  }
  const parts: string[] = [];
  for (const segment of url.pathname.split('/')) {
    if (segment === '') continue;
    try {
      parts.push(decodeURIComponent(segment));
    } catch {
      throw new BadRequest(400, `malformed percent-encoding in the path: "${shown(segment)}"`);
    }
  }
  return { url, parts };
}
