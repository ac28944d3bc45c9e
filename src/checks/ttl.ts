// A TTL check: the app pushes its status, and silence for longer than the TTL is critical
// (Consul's dead man's switch). Thresholds do not apply: each push is the status.
import { EventEmitter } from 'node:events';
import type { CheckSpec, CheckStatus } from '../config/index.js';
import { MAX_OUTPUT_BYTES } from './probe.js';
import { INITIAL_STATUS, type CheckEvents, type CheckState } from './state.js';

/** Consul's SetStatus truncation: the first 4 KiB and a note of how much there was. */
function truncateNote(note: string): string {
  const bytes = Buffer.from(note);
  if (bytes.length <= MAX_OUTPUT_BYTES) return note;
  return `${bytes.subarray(0, MAX_OUTPUT_BYTES).toString('utf8')} ... (captured ${MAX_OUTPUT_BYTES} of ${bytes.length} bytes)`;
}

export class TtlCheck extends EventEmitter<CheckEvents> {
  readonly spec: CheckSpec;
  readonly ttlMs: number;
  private current: CheckState;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  /** Output of the last push, kept for the "TTL expired" message. */
  private lastNote = '';

  constructor(spec: CheckSpec) {
    super();
    if (spec.probe.kind !== 'ttl') throw new TypeError(`check ${spec.name} is not a TTL check; use CheckRunner`);
    this.spec = spec;
    this.ttlMs = spec.probe.ttlMs;
    this.current = { name: spec.name, kind: 'ttl', status: INITIAL_STATUS, output: 'no update yet', lastResultAt: null, lastChangeAt: null, startLagMs: null, runs: 0 };
  }

  state(): CheckState {
    return this.current;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Arms the TTL timer: without a push within ttlMs the check reports "TTL expired". */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.arm();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Sets status and output (the note, cut to 4 KiB) and re-arms the timer. Ignored (false)
   * when the check is not running: a late push must not revive a stopped vassal's check.
   */
  push(status: CheckStatus, note = ''): boolean {
    if (!this.running) return false;
    this.lastNote = truncateNote(note);
    // Armed before the result goes out: a listener may stop the check (a critical restart),
    // and a timer armed after that would outlive it.
    this.arm();
    this.set(status, this.lastNote, 0);
    return true;
  }

  private arm(): void {
    clearTimeout(this.timer);
    const dueAt = Date.now() + this.ttlMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.running) return;
      // Consul keeps the last note so the reason for the last report is not lost.
      const output = this.lastNote === '' ? 'TTL expired' : `TTL expired (last output before timeout follows): ${this.lastNote}`;
      this.set('critical', output, Math.max(0, Date.now() - dueAt));
    }, this.ttlMs);
  }

  private set(status: CheckStatus, output: string, lagMs: number): void {
    const now = Date.now();
    const previous = this.current;
    const changed = status !== previous.status;
    this.current = { ...previous, status, output, lastResultAt: now, lastChangeAt: changed ? now : previous.lastChangeAt, runs: previous.runs + 1 };
    if (changed) this.emit('change', this.current, previous.status);
    this.emit('result', this.current, { result: { status, output }, applied: true, lagMs, durationMs: 0 });
  }
}
