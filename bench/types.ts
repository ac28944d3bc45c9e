// The shape every bench section shares: a section runs, and returns rows for the table.

/** ok / MISS compare a measurement with its target; info has no target; error = the bench itself failed. */
export type RowStatus = 'ok' | 'MISS' | 'info' | 'error';

export interface Row {
  readonly section: string;
  readonly metric: string;
  readonly value: string;
  /** e.g. "≤ 50 ms"; "—" for informative rows. */
  readonly target: string;
  readonly status: RowStatus;
}

export interface SectionContext {
  /** Progress goes to stderr; stdout is reserved for the table. */
  progress(msg: string): void;
}

export interface Section {
  /** Short id used on the command line: `node dist/bench/run.js core`. */
  readonly name: string;
  readonly title: string;
  /**
   * Measure and return the rows. A section should catch its own failures and return what it
   * measured so far plus an `error` row; a throw is reported as one `error` row for the section.
   * It must leave no process or temp directory behind (see bench/harness.ts).
   */
  run(ctx: SectionContext): Promise<Row[]>;
}
