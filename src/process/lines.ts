// Splits a byte stream into lines for VassalProcess onLine.
import { StringDecoder } from 'node:string_decoder';

/** A runaway line (binary output, a progress bar without \n) must not grow memory without bound. */
export const MAX_LINE = 16 * 1024;

export class LineSplitter {
  // Per stream, so a multi-byte character cut across two chunks is decoded whole.
  private decoder = new StringDecoder('utf8');
  private pending = '';

  constructor(
    private readonly emit: (line: string) => void,
    private readonly max = MAX_LINE,
  ) {}

  push(chunk: Buffer | string): void {
    this.feed(typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
  }

  /** The stream ended: a trailing line without \n is still a line. */
  end(): void {
    this.feed(this.decoder.end());
    if (this.pending !== '') this.emitLine(this.pending);
    this.pending = '';
  }

  /** Forget the partial line held back (its rest will not be pushed). */
  discard(): void {
    this.decoder = new StringDecoder('utf8');
    this.pending = '';
  }

  private feed(text: string): void {
    if (text === '') return;
    const buf = this.pending + text;
    let start = 0;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n', start)) {
      this.emitLine(buf.slice(start, nl));
      start = nl + 1;
    }
    let rest = buf.slice(start);
    while (rest.length > this.max) {
      this.emit(rest.slice(0, this.max));
      rest = rest.slice(this.max);
    }
    this.pending = rest;
  }

  private emitLine(raw: string): void {
    let line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    while (line.length > this.max) {
      this.emit(line.slice(0, this.max));
      line = line.slice(this.max);
    }
    this.emit(line);
  }
}
