// Everything the soak counts: driver actions, violations (one per episode) and convergence times.

export type InvariantNo = 1 | 2 | 3 | 4 | 5 | 6;

export const INVARIANTS: Record<InvariantNo, string> = {
  1: 'registration of a dead or not-ready process',
  2: 'ready vassal missing from a reachable registry',
  3: 'stray, duplicate or leftover vassal process',
  4: 'emperor crash, bug event or unbounded growth',
  5: "vassal running as a uid other than its file's owner, or a refused file quoted",
  6: 'emperor not answering status for more than 1 s',
};

export interface Violation {
  readonly no: InvariantNo;
  /** Short kind within the invariant, e.g. "etcd pid dead", "orphan leader". */
  readonly what: string;
  readonly detail: string;
  /** ms since the run started. */
  readonly at: number;
}

/** How a convergence time is classified: which bound applied to it. */
export type BoundClass = 'registry: normal' | 'registry: after outage' | 'registry: after emperor SIGKILL' | 'process: normal' | 'process: after emperor SIGKILL';

export class Ledger {
  readonly startedAt = Date.now();
  readonly violations: Violation[] = [];
  readonly actions = new Map<string, number>();
  readonly notes: string[] = [];
  /** Longest time a bad condition took to clear, per bound class: [ms, description]. */
  readonly worst = new Map<BoundClass, { ms: number; what: string }>();
  /** Problems of the soak itself (not the emperor): they fail the run too, differently labelled. */
  readonly harnessErrors: string[] = [];

  constructor(private readonly verbose: boolean) {}

  elapsed(): number {
    return Date.now() - this.startedAt;
  }

  stamp(): string {
    return `${(this.elapsed() / 1000).toFixed(1).padStart(7)} s`;
  }

  progress(msg: string): void {
    process.stderr.write(`[soak ${this.stamp()}] ${msg}\n`);
  }

  debug(msg: string): void {
    if (this.verbose) this.progress(msg);
  }

  action(kind: string): void {
    this.actions.set(kind, (this.actions.get(kind) ?? 0) + 1);
  }

  violation(no: InvariantNo, what: string, detail: string): void {
    const v: Violation = { no, what, detail, at: this.elapsed() };
    this.violations.push(v);
    this.progress(`VIOLATION ${no} (${what}): ${detail}`);
  }

  converged(cls: BoundClass, ms: number, what: string): void {
    const w = this.worst.get(cls);
    if (!w || ms > w.ms) this.worst.set(cls, { ms, what });
  }

  harness(msg: string): void {
    this.harnessErrors.push(msg);
    this.progress(`SOAK ERROR (not an emperor violation): ${msg}`);
  }
}
