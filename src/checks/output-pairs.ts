// One socket for both stdout and stderr of an exec probe, so its output interleaves exactly as
// written (two pipes would only give arrival order) without a shell in between: before, every
// probe ran `/bin/sh -c 'exec "$@" 2>&1'` only to join the two, one exec more per probe.
//
// Node cannot make a pipe or a socketpair on its own, so the helper listens on a unix socket in
// a private directory (0700, made by mkdtemp in exec-runner.ts) and connects to it: the connecting end becomes
// the probe's fd 1 and 2, the accepted end is what the helper reads. The connecting side sends
// a token first, which tells the listener which waiting probe an accepted connection belongs
// to; only processes of the helper's own user can reach the socket at all.
import net from 'node:net';
import path from 'node:path';

/** The two ends: `child` goes to the probe as stdout and stderr, `ours` is read (paused until then). */
export interface OutputPair {
  readonly child: net.Socket;
  readonly ours: net.Socket;
}

const TOKEN_BYTES = 12;

export class OutputPairs {
  private readonly waiting = new Map<string, (ours: net.Socket) => void>();
  private next = 0;

  private constructor(
    private readonly server: net.Server,
    private readonly socketPath: string,
  ) {
    server.on('connection', (socket) => this.accepted(socket));
    // A listener that fails later only means no more pairs: pair() rejects, callers fall back.
    server.on('error', () => undefined);
  }

  /**
   * Listens in `dir`, a private directory (mkdtemp: 0700) made for this; undefined when that is
   * impossible (callers fall back to the shell).
   */
  static async open(dir: string): Promise<OutputPairs | undefined> {
    try {
      const socketPath = path.join(dir, 'out.sock');
      const server = net.createServer({ pauseOnConnect: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.unref();
      return new OutputPairs(server, socketPath);
    } catch {
      return undefined;
    }
  }

  /** A connected pair, or a rejection (the listener is gone, out of file descriptors...). */
  pair(): Promise<OutputPair> {
    const token = String(this.next++).padStart(TOKEN_BYTES, '0');
    return new Promise<OutputPair>((resolve, reject) => {
      const child = net.connect(this.socketPath);
      const fail = (err: Error): void => {
        this.waiting.delete(token);
        child.destroy();
        reject(err);
      };
      const closed = (): void => fail(new Error('output socket closed before it was paired'));
      child.once('error', fail);
      child.once('close', closed);
      this.waiting.set(token, (ours) => {
        child.off('error', fail);
        child.off('close', closed);
        // From here on the probe owns the errors of its end (EPIPE when we stop reading...).
        child.on('error', () => undefined);
        resolve({ child, ours });
      });
      child.write(token);
    });
  }

  private accepted(socket: net.Socket): void {
    socket.on('error', () => undefined);
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      if (got.length < TOKEN_BYTES) return;
      socket.off('data', onData);
      socket.pause();
      const done = this.waiting.get(got.subarray(0, TOKEN_BYTES).toString('latin1'));
      // Nothing else is written before the probe has the other end; anything more is not ours.
      if (done === undefined || got.length > TOKEN_BYTES) {
        socket.destroy();
        return;
      }
      this.waiting.delete(got.subarray(0, TOKEN_BYTES).toString('latin1'));
      done(socket);
    };
    socket.on('data', onData);
    socket.resume();
  }

  /** Stops listening (the directory is its maker's to remove). */
  close(): void {
    this.server.close();
  }
}
