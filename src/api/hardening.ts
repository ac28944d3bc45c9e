// Connection handling shared by the emperor's HTTP servers (control socket, /metrics): how a
// refused or unparsable request is answered and its connection closed.
import type { Duplex } from 'node:stream';

/** How long a refused connection goes on reading (and discarding) before it is closed. */
const LINGER_MS = 2000;
const lingering = new WeakSet<Duplex>();

/**
 * Closes a connection whose client may still be sending (a refused body, bytes Node could not
 * parse): the answer goes out, whatever still arrives is read and thrown away for a moment, then
 * the socket is closed. Closing at once with unread bytes resets the connection, and the client
 * loses the answer it was about to read.
 */
export function lingeringClose(socket: Duplex, last?: string): void {
  if (lingering.has(socket)) return;
  lingering.add(socket);
  if (last === undefined) socket.end();
  else socket.end(last);
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('end', () => socket.destroy());
  socket.once('close', () => clearTimeout(timer));
}

/**
 * A 'clientError' handler. Node's HTTP parser rejects what is not HTTP (and oversized headers,
 * and requests that take too long) before any handler runs; `body` words the answer per server.
 */
export function clientErrorHandler(body: (status: number, reason: string, code: string | undefined) => { type: string; text: string }) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (lingering.has(socket)) return; // already answered; later bytes fail to parse too
    // A response already under way on this connection (pipelining) must not get bytes spliced in.
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true) {
      socket.destroy();
      return;
    }
    const [status, reason] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout']
          : [400, 'Bad Request'];
    const { type, text } = body(status, reason, err.code);
    lingeringClose(socket, `HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
  };
}

/** Between two reports of a listening server's errors (each refused connection repeats it). */
const SERVER_ERROR_REPORT_MS = 10_000;

/**
 * An 'error' listener for a server that is already listening. Out of file descriptors, accept()
 * fails and Node emits 'error' on the server: without a listener that kills the emperor. The
 * connection is refused (libuv closes it), the server keeps listening; this says so, at most
 * once every ten seconds.
 */
export function keepListening(what: string, report: (message: string) => void): (err: NodeJS.ErrnoException) => void {
  let lastAt = -Infinity;
  let missed = 0;
  return (err) => {
    const now = Date.now();
    if (now - lastAt < SERVER_ERROR_REPORT_MS) {
      missed++;
      return;
    }
    const more = missed > 0 ? ` (and ${missed} more since the last report)` : '';
    lastAt = now;
    missed = 0;
    report(`${what}: ${err.code ?? ''} ${err.message}${more}; still listening`.replace(/: {2}/, ': '));
  };
}
