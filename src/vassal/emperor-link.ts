// The uWSGI Emperor protocol, emperor side (uWSGI's core/emperor.c is the reference): one byte
// per message over the socketpair every vassal gets as $UWSGI_EMPEROR_FD. The emperor sends 0
// (stop) and 1 (reload); a vassal sends 1 (spawned), 5 (accepting requests: ready), 17 (loyal,
// after its first request), 22 (voluntary shutdown), 26 (heartbeat). Other bytes (2: "send my
// config", 30: broodlord) ask for features this emperor does not have and are ignored.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';

export const TO_VASSAL = { stop: 0, reload: 1 } as const;
export const FROM_VASSAL = { spawned: 1, accepting: 5, loyal: 17, shutdown: 22, heartbeat: 26 } as const;

export interface EmperorLinkEvents {
  /** Byte 5: the vassal accepts requests (after a spawn, and again after each reload). */
  accepting: [];
  /** Byte 26. */
  heartbeat: [];
  /** Byte 17, the first time. */
  loyal: [];
  /** Byte 22: the vassal asks to be stopped. */
  shutdown: [];
  /** The vassal closed its end (or died): nothing more will come. */
  closed: [];
}

/** One vassal process's end of the protocol. Never throws; a vassal that ignores fd 3 costs nothing. */
export class EmperorLink extends EventEmitter<EmperorLinkEvents> {
  private open: boolean;
  /** Byte 17 seen (uWSGI's "loyal": it has served a request). */
  loyal = false;
  /** Byte 5 seen at least once. */
  accepted = false;
  /** When the last heartbeat came (Date.now()), 0 before the first. */
  lastHeartbeatAt = 0;

  constructor(private readonly stream: Duplex | undefined) {
    super();
    this.open = stream !== undefined;
    if (!stream) return;
    stream.on('error', () => this.close());
    stream.on('end', () => this.close());
    stream.on('close', () => this.close());
    stream.on('data', (chunk: Buffer) => {
      for (const byte of chunk) this.onByte(byte);
    });
  }

  get isOpen(): boolean {
    return this.open;
  }

  private onByte(byte: number): void {
    switch (byte) {
      case FROM_VASSAL.accepting:
        this.accepted = true;
        this.emit('accepting');
        break;
      case FROM_VASSAL.heartbeat:
        this.lastHeartbeatAt = Date.now();
        this.emit('heartbeat');
        break;
      case FROM_VASSAL.loyal:
        if (!this.loyal) {
          this.loyal = true;
          this.emit('loyal');
        }
        break;
      case FROM_VASSAL.shutdown:
        this.emit('shutdown');
        break;
      default:
        break;
    }
  }

  /** Sends one message; false when the vassal's end is gone (then a signal has to do). */
  send(byte: (typeof TO_VASSAL)[keyof typeof TO_VASSAL]): boolean {
    if (!this.open || !this.stream || this.stream.destroyed || !this.stream.writable) return false;
    this.stream.write(Buffer.from([byte]));
    return true;
  }

  /** Stop listening (the process is gone or forgotten). The vassal sees EOF only when it is gone. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.emit('closed');
    this.stream?.destroy();
  }
}
