// One reader of vassal logs (`emperor logs`, the dashboard's log tail): which vassals, how many
// lines back, whether to follow. Shared by the control socket and the dashboard.
import type { Emperor } from '../emperor/emperor.js';
import type { LogFile } from '../output/logfile.js';
import { LogFollower } from '../output/tail.js';

export const DEFAULT_LOG_LINES = 100;
/** Most lines one request may ask back per vassal. */
export const MAX_LOG_LINES = 100_000;
/** A reader this far behind (bytes queued on its connection) loses lines until it catches up. */
export const MAX_QUEUED_BYTES = 1024 * 1024;

export interface LogRequest {
  /** Vassal names; empty = every vassal (with follow, also those added later). */
  readonly names: readonly string[];
  readonly lines: number;
  readonly follow: boolean;
}

/** `?name=a&name=b&lines=N&follow=1`; a message naming the bad parameter otherwise. */
export function parseLogRequest(params: URLSearchParams): LogRequest | string {
  const names = params.getAll('name');
  const rawLines = params.get('lines');
  let lines = DEFAULT_LOG_LINES;
  if (rawLines !== null) {
    if (!/^\d+$/.test(rawLines) || Number(rawLines) > MAX_LOG_LINES) return `lines: expected a whole number from 0 to ${MAX_LOG_LINES}, got "${rawLines.slice(0, 40)}"`;
    lines = Number(rawLines);
  }
  const rawFollow = params.get('follow');
  if (rawFollow !== null && rawFollow !== '0' && rawFollow !== '1') return `follow: expected 0 or 1, got "${rawFollow.slice(0, 40)}"`;
  return { names, lines, follow: rawFollow === '1' };
}

export class LogSession {
  private readonly followers = new Map<string, { log: LogFile; follower: LogFollower }>();
  private closed = false;
  /** Names whose history start() has yet to send: they are followed from there. */
  private readonly planned = new Set<string>();
  private readonly onChanged = (name: string): void => {
    if (this.req.names.length > 0 && !this.req.names.includes(name)) return;
    if (this.planned.has(name)) return;
    let log: LogFile;
    try {
      log = this.emperor.logOf(name);
    } catch {
      return; // removed, or never valid: nothing to follow
    }
    // A vassal added later (all vassals asked), or re-deployed with a new log object.
    if (this.followers.get(name)?.log !== log) void this.follow(name, log, 0);
  };

  /** Throws ControlError (404/409) for a name that has no log, before anything is sent. */
  constructor(
    private readonly emperor: Emperor,
    private readonly req: LogRequest,
    private readonly sink: (vassal: string, line: string) => void,
  ) {
    for (const name of req.names) emperor.logOf(name);
  }

  /** Sends the history (vassal by vassal); following goes on until close(). */
  async start(): Promise<void> {
    const names = this.req.names.length > 0 ? [...new Set(this.req.names)] : this.emperor.logNames();
    for (const name of names) this.planned.add(name);
    if (this.req.follow) this.emperor.events.on('changed', this.onChanged);
    for (const name of names) {
      this.planned.delete(name);
      let log: LogFile;
      try {
        log = this.emperor.logOf(name);
      } catch {
        continue; // removed since it was asked for
      }
      await this.follow(name, log, this.req.lines);
      if (this.closed) return;
    }
  }

  close(): void {
    this.closed = true;
    this.emperor.events.off('changed', this.onChanged);
    for (const { follower } of this.followers.values()) follower.close();
    this.followers.clear();
  }

  private async follow(name: string, log: LogFile, lines: number): Promise<void> {
    if (this.closed) return;
    const follower = new LogFollower(log, (line) => this.sink(name, line));
    if (this.req.follow) {
      this.followers.get(name)?.follower.close();
      this.followers.set(name, { log, follower });
    }
    await follower.start(lines, this.req.follow);
  }
}
