// The seeded driver: one action per step, chosen and parameterised from a fixed number of PRNG
// draws and the driver's own model of the files (never from observed state), so the same seed
// gives the same action sequence; only the timing, and whether e.g. a kill -9 finds a process
// at that moment, vary. The sequence digest printed at the end makes that checkable.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Ledger } from './ledger.js';
import { intIn, pick, weighted, type Rng } from './prng.js';
import { generate, invalidContent, kindFrom, type GenContext, type Kind } from './vassals.js';
import type { FileState, World } from './world.js';

export type ActionKind =
  | 'add'
  | 'change'
  | 'delete'
  | 'rename'
  | 'break'
  | 'add-invalid'
  | 'touch'
  | 'kill9-leader'
  | 'kill9-child'
  | 'kill9-group'
  | 'health'
  | 'etcd-outage'
  | 'consul-restart'
  | 'sighup'
  | 'emperor-sigkill';

const WEIGHTS: ReadonlyArray<readonly [ActionKind, number]> = [
  ['add', 12],
  ['change', 12],
  ['delete', 6],
  ['rename', 4],
  ['break', 5],
  ['add-invalid', 3],
  ['touch', 3],
  ['kill9-leader', 10],
  ['kill9-child', 4],
  ['kill9-group', 3],
  ['health', 9],
  ['etcd-outage', 2],
  ['consul-restart', 2],
  ['sighup', 2],
];

/** Rough mean duration of a step, used only to place the planned emperor SIGKILLs. */
const EST_STEP_MS = 400;
/** The sequence digest is also taken after this many steps: comparable between runs of one seed. */
export const CHECKPOINT_STEPS = 100;
/** A vassal process must be gone this long after an emperor SIGKILL. */
export const SIGKILL_CLEAN_MS = 1000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface DriverOptions {
  readonly maxVassals: number;
  readonly durationMs: number;
  /** Multiplies SIGKILL_CLEAN_MS (see --bound-factor). */
  readonly boundFactor: number;
}

export class Driver {
  steps = 0;
  private readonly digest = createHash('sha256');
  private etcdBackAt: number | undefined;
  private consulBackAt: number | undefined;
  readonly killSteps: ReadonlySet<number>;
  private readonly gen: GenContext;
  private readonly background: Array<Promise<void>> = [];
  /** What the last kill -9 hit, for the vassal's history. */
  private lastKill = '';

  constructor(
    private readonly world: World,
    private readonly ledger: Ledger,
    private readonly rng: Rng,
    private readonly opts: DriverOptions,
  ) {
    // "A few times per run", in the first two thirds so the last emperor lives long enough for
    // its growth to mean something.
    const est = Math.max(10, Math.round(opts.durationMs / EST_STEP_MS));
    const kills = Math.min(6, 2 + Math.floor(opts.durationMs / 180_000));
    const steps = new Set<number>();
    for (let k = 0; k < kills; k++) steps.add(Math.round(est * (0.15 + (0.5 * (k + this.rng())) / kills)));
    this.killSteps = steps;
    this.gen = { soakApp: world.soakApp, healthDir: world.ws.health, freePort: () => world.port() };
  }

  /** Digest of the first CHECKPOINT_STEPS steps, once that many ran. */
  checkpointDigest: string | undefined;

  /** Digest of the planned action sequence so far (same seed, options and step count: same digest). */
  sequenceDigest(): string {
    return this.digest.copy().digest('hex').slice(0, 16);
  }

  private file(name: string, ext: string): string {
    return path.join(this.world.ws.vassals, `${name}.${ext}`);
  }

  private async write(name: string, ext: string, content: string, atomic: boolean): Promise<void> {
    const target = this.file(name, ext);
    if (atomic) {
      const tmp = path.join(this.world.ws.vassals, `.${name}.${ext}.tmp`);
      await fs.writeFile(tmp, content);
      await fs.rename(tmp, target);
    } else await fs.writeFile(target, content);
  }

  /** Deploy the initial vassals (valid files of assorted kinds). */
  async deployInitial(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const r = Array.from({ length: 8 }, () => this.rng());
      // Initial set: kinds that mostly run, so the baseline measures a working emperor.
      const kind = pick<Kind>(r[0]!, ['web', 'web', 'flappy', 'ttl', 'crasher', 'family', 'stubborn', 'notify', 'worker', 'neverready']);
      await this.add(r, kind);
      this.note(-1, 'add', this.world.model.names().at(-1) ?? '');
    }
  }

  private note(step: number, kind: string, target: string): void {
    this.digest.update(`${step}:${kind}:${target}\n`);
  }

  /** Bring registries back, restart a crashed emperor: the bits a step owes before acting. */
  private async due(i: number): Promise<void> {
    if (this.etcdBackAt !== undefined && i >= this.etcdBackAt) {
      this.etcdBackAt = undefined;
      this.ledger.debug('etcd: starting again');
      await this.world.etcdBack();
      this.ledger.action('etcd back');
    }
    if (this.consulBackAt !== undefined && i >= this.consulBackAt) {
      this.consulBackAt = undefined;
      await this.world.consulBack();
      this.ledger.action('consul back');
    }
    const emp = this.world.emperor;
    if (emp && !emp.alive && !emp.expectExit) {
      // A crash (already counted as a violation): keep soaking with a new emperor.
      await this.world.startEmperor();
      this.world.model.emperorRestarted();
      this.ledger.action('emperor restart after crash');
    }
  }

  private applicable(kind: ActionKind): ActionKind {
    const m = this.world.model;
    const n = m.files.size;
    switch (kind) {
      case 'add':
        return n < this.opts.maxVassals ? 'add' : 'change';
      case 'add-invalid':
        return n < this.opts.maxVassals ? 'add-invalid' : 'break';
      case 'break':
        if (n === 0) return 'add';
        return [...m.files.values()].some((f) => f.valid) ? 'break' : 'change';
      case 'health':
        if (this.healthTargets().length > 0) return 'health';
        return n === 0 ? 'add' : 'touch';
      case 'etcd-outage':
        return this.etcdBackAt === undefined ? kind : 'sighup';
      case 'consul-restart':
        return this.consulBackAt === undefined ? kind : 'sighup';
      case 'sighup':
      case 'emperor-sigkill':
        return kind;
      default:
        return n === 0 ? 'add' : kind;
    }
  }

  private healthTargets(): FileState[] {
    return this.world.model
      .names()
      .map((n) => this.world.model.files.get(n)!)
      .filter((f) => (f.valid || f.keep) && (f.kind === 'flappy' || f.kind === 'ttl'));
  }

  async step(): Promise<void> {
    const i = this.steps++;
    const r = Array.from({ length: 8 }, () => this.rng());
    await this.due(i);
    const kind = this.killSteps.has(i) ? 'emperor-sigkill' : this.applicable(weighted(r[0]!, WEIGHTS));
    const target = await this.run(i, kind, r);
    this.note(i, kind, target);
    if (i + 1 === CHECKPOINT_STEPS) this.checkpointDigest = this.sequenceDigest();
    for (const subject of new Set(target.match(/\bv\d{3,}\b/g) ?? [])) {
      this.world.remember(subject, `driver step ${i}: ${kind} ${target}${this.lastKill ? ` (${this.lastKill})` : ''}`);
    }
    this.lastKill = '';
    this.ledger.action(kind);
    this.ledger.debug(`step ${i}: ${kind} ${target}`);
    await sleep(intIn(r[7]!, 100, 500));
  }

  /** Bring everything back up for the end of the run; waits for background checks. */
  async finish(): Promise<void> {
    if (this.etcdBackAt !== undefined) {
      this.etcdBackAt = undefined;
      await this.world.etcdBack();
    }
    if (this.consulBackAt !== undefined) {
      this.consulBackAt = undefined;
      await this.world.consulBack();
    }
    await Promise.all(this.background);
  }

  /**
   * Leave exactly `n` valid files (delete the invalid ones, add or delete valid ones), so the
   * final resource figures compare with the same number of vassals as the baseline.
   */
  async normalize(n: number): Promise<void> {
    const m = this.world.model;
    for (const name of m.names()) {
      const f = m.files.get(name)!;
      if (!f.valid) {
        await fs.rm(this.file(name, f.ext), { force: true });
        m.files.delete(name);
      }
    }
    while (m.files.size > n) {
      const name = m.names()[0]!;
      await fs.rm(this.file(name, m.files.get(name)!.ext), { force: true });
      m.files.delete(name);
    }
    while (m.files.size < n) await this.add(Array.from({ length: 8 }, () => this.rng()), 'web');
  }

  private async add(r: readonly number[], kind: Kind): Promise<string> {
    const name = this.world.model.nextName();
    const ext = r[1]! < 0.5 ? 'yaml' : 'json';
    const g = await generate(name, ext, kind, this.rng, this.gen);
    if (g.healthFile) await fs.writeFile(g.healthFile, '200');
    await this.write(name, ext, g.content, r[3]! < 0.7);
    this.world.model.files.set(name, { name, ext, valid: true, keep: false, kind, port: g.port, healthFile: g.healthFile });
    return name;
  }

  /** Our live processes of one vassal, sorted by pid. */
  private procsOf(name: string): Array<{ pid: number; leader: boolean; pgid: number }> {
    return this.world.scanner
      .scan()
      .filter((p) => p.vassal === name && !p.probe)
      .map((p) => ({ pid: p.pid, leader: p.leader, pgid: p.pgid }))
      .sort((a, b) => a.pid - b.pid);
  }

  private async run(i: number, kind: ActionKind, r: readonly number[]): Promise<string> {
    const w = this.world;
    const m = w.model;
    const names = m.names();
    switch (kind) {
      case 'add':
        return this.add(r, kindFrom(r[2]!));
      case 'add-invalid': {
        const name = m.nextName();
        const ext = r[1]! < 0.5 ? 'yaml' : 'json';
        await this.write(name, ext, invalidContent(ext, r[2]!), r[3]! < 0.7);
        m.files.set(name, { name, ext, valid: false, keep: false, kind: undefined, port: undefined, healthFile: undefined });
        return name;
      }
      case 'change': {
        const f = m.files.get(pick(r[1]!, names))!;
        const newKind = r[2]! < 0.25 || f.kind === undefined ? kindFrom(r[3]!) : f.kind;
        const keepPort = r[4]! < 0.5 ? f.port : undefined;
        const g = await generate(f.name, f.ext, newKind, this.rng, this.gen, keepPort);
        if (g.healthFile) await fs.writeFile(g.healthFile, '200');
        await this.write(f.name, f.ext, g.content, r[5]! < 0.7);
        m.files.set(f.name, { ...f, valid: true, keep: false, kind: newKind, port: g.port, healthFile: g.healthFile });
        return `${f.name} -> ${newKind}`;
      }
      case 'delete': {
        const f = m.files.get(pick(r[1]!, names))!;
        await fs.rm(this.file(f.name, f.ext), { force: true });
        m.files.delete(f.name);
        return f.name;
      }
      case 'rename': {
        const f = m.files.get(pick(r[1]!, names))!;
        const to = m.nextName();
        await fs.rename(this.file(f.name, f.ext), this.file(to, f.ext));
        m.files.delete(f.name);
        // The content moves; a never-valid name starts with it, so an invalid one runs nothing.
        m.files.set(to, { ...f, name: to, keep: false });
        return `${f.name} -> ${to}`;
      }
      case 'break': {
        const valid = names.filter((n) => m.files.get(n)!.valid);
        const f = m.files.get(pick(r[1]!, valid))!;
        await this.write(f.name, f.ext, invalidContent(f.ext, r[2]!), r[3]! < 0.7);
        m.files.set(f.name, { ...f, valid: false, keep: true });
        return f.name;
      }
      case 'touch': {
        const f = m.files.get(pick(r[1]!, names))!;
        const now = new Date();
        await fs.utimes(this.file(f.name, f.ext), now, now).catch(() => undefined);
        return f.name;
      }
      case 'kill9-leader':
      case 'kill9-child':
      case 'kill9-group': {
        const name = pick(r[1]!, names);
        const procs = this.procsOf(name).filter((p) => p.leader === (kind !== 'kill9-child'));
        if (procs.length === 0) {
          this.ledger.action(`${kind} (nothing to kill)`);
          return name;
        }
        const p = pick(r[2]!, procs);
        this.lastKill = kind === 'kill9-group' ? `group ${p.pgid}` : `pid ${p.pid}`;
        try {
          process.kill(kind === 'kill9-group' ? -p.pgid : p.pid, 'SIGKILL');
        } catch {
          // it died meanwhile
        }
        return name;
      }
      case 'health': {
        const f = pick(r[1]!, this.healthTargets());
        if (f.kind === 'flappy' && f.healthFile) {
          await fs.writeFile(f.healthFile, pick(r[2]!, ['200', '500', '429', '200', '503']));
        } else if (w.emperorAlive) {
          const verb = pick(r[2]!, ['pass', 'pass', 'warn', 'fail']);
          await w.emperor!.post(`/v1/vassals/${encodeURIComponent(f.name)}/check/${verb}?note=soak`);
        }
        return f.name;
      }
      case 'etcd-outage': {
        const kill = r[1]! < 0.3;
        this.etcdBackAt = i + intIn(r[2]!, 3, 15);
        await w.etcdDown(kill);
        return kill ? 'SIGKILL' : 'SIGTERM';
      }
      case 'consul-restart': {
        const hold = intIn(r[1]!, 0, 8);
        await w.consulDown();
        if (hold === 0) await w.consulBack();
        else this.consulBackAt = i + hold;
        return `back after ${hold} steps`;
      }
      case 'sighup':
        w.emperor?.signal('SIGHUP');
        return '';
      case 'emperor-sigkill':
        await this.emperorSigkill(intIn(r[1]!, 0, 2000));
        return '';
    }
  }

  /** SIGKILL the emperor; nothing of its vassals may survive it by more than SIGKILL_CLEAN_MS. */
  private async emperorSigkill(restartDelayMs: number): Promise<void> {
    const w = this.world;
    if (!w.emperorAlive) return;
    const before = w.ourProcesses();
    const pid = w.emperor!.pid;
    await w.killEmperor();
    const killedAt = w.lastKillAt;
    const cleanMs = SIGKILL_CLEAN_MS * this.opts.boundFactor;
    this.ledger.progress(`SIGKILLed emperor pid ${pid} (${before.length} vassal processes); restarting in ${restartDelayMs} ms`);
    const check = (async (): Promise<void> => {
      await sleep(Math.max(0, killedAt + cleanMs - Date.now()));
      const left = w.stillAlive(before);
      if (left.length > 0) {
        const desc = before.filter((b) => left.some((l) => l.pid === b.pid)).map((b) => `${b.vassal}:${b.pid}${b.leader ? '(leader)' : ''}`);
        this.ledger.violation(3, 'vassal processes survived an emperor SIGKILL', `${left.length} still alive ${cleanMs} ms after SIGKILL of emperor ${pid}: ${desc.join(', ')}`);
      }
    })();
    this.background.push(check);
    await sleep(restartDelayMs);
    try {
      await w.startEmperor();
    } catch (err) {
      this.ledger.violation(4, 'emperor failed to restart', `after SIGKILL: ${err instanceof Error ? err.message : String(err)}`);
      await sleep(1000);
      await w.startEmperor();
    }
    w.model.emperorRestarted();
  }
}
