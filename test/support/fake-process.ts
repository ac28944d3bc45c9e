// A fake process layer for driving the Vassal state machine in unit tests: it honours the
// contract in src/process/types.ts, and the test decides when a process becomes ready, exits,
// or obeys a stop signal. Nothing runs and no timer is involved.
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { ExitInfo, SpawnRequest, VassalProcess } from '../../src/process/types.js';

export class FakeProcess implements VassalProcess {
  readonly pgid: number;
  readonly startTime = undefined;
  readonly exited: Promise<ExitInfo>;
  readonly notify: PassThrough | undefined;
  /** Every signal sent to the group, in order. */
  readonly signals: NodeJS.Signals[] = [];
  /** Whether the group ends when it gets a stop signal other than SIGKILL. */
  obeys = true;
  private alive: boolean;
  private settle!: (info: ExitInfo) => void;

  constructor(
    readonly pid: number,
    readonly req: SpawnRequest,
    spawnError?: string,
  ) {
    this.pgid = pid;
    this.alive = spawnError === undefined;
    this.notify = req.notify ? new PassThrough() : undefined;
    this.exited = new Promise((resolve) => (this.settle = resolve));
    if (spawnError !== undefined) this.settle({ code: null, signal: null, error: spawnError });
  }

  signalGroup(signal: NodeJS.Signals): boolean {
    if (!this.alive) return false;
    this.signals.push(signal);
    if (signal === 'SIGKILL' || this.obeys) this.exit({ code: null, signal });
    return true;
  }

  groupAlive(): boolean {
    return this.alive;
  }

  /** The app says READY=1 on its notify fd (the vassal spec must use `ready: { notify: true }`). */
  ready(): void {
    if (!this.notify) throw new Error('this fake process has no notify fd; use start.ready.notify in the spec');
    this.notify.write('READY=1\n');
  }

  /** The leader exits (the whole group with it). */
  exit(info: ExitInfo): void {
    if (!this.alive) return;
    this.alive = false;
    this.settle(info);
  }
}

/** Hands out FakeProcesses; `spawnFails` makes the next spawn fail like ENOENT would. */
export class FakeProcessLayer extends EventEmitter {
  readonly spawned: FakeProcess[] = [];
  spawnFails: string | undefined;
  private nextPid = 4_000_000;

  readonly spawn = (req: SpawnRequest): VassalProcess => {
    const failed = this.spawnFails;
    const proc = new FakeProcess(failed === undefined ? this.nextPid++ : 0, req, failed);
    this.spawned.push(proc);
    this.emit('spawn', proc);
    return proc;
  };

  /** The n-th spawned process (1-based), once it exists. */
  async nth(n: number): Promise<FakeProcess> {
    while (this.spawned.length < n) await new Promise((resolve) => this.once('spawn', resolve));
    return this.spawned[n - 1]!;
  }
}
