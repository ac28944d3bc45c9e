// What the soak runs and owns: the workspace, a real etcd, the Consul agent double, the emperor
// (restartable), and the driver's model of the vassal files.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startConsulDouble, type ConsulDouble } from '../test/consul/double.js';
import { startEtcd, type EtcdServer } from '../test/support/etcd.js';
import { freePort } from '../test/support/net.js';
import { EmperorProc, emperorResources } from './emperor.js';
import type { HostileActor } from './hostile.js';
import type { Ledger } from './ledger.js';
import { isAlive, ProcScanner, RUN_MARKER } from './procfs.js';
import type { Kind } from './vassals.js';

/** Emperor settings the soak runs with (and the bounds derived from them). */
export const SETTINGS = {
  leaseTtlMs: 2000,
  consulCheckTtlMs: 1000,
  consulDeregisterCriticalAfterMs: 1000,
  antiEntropyMs: 500,
  deregisterTimeoutMs: 1000,
  treeRoot: '/soak',
};

export interface FileState {
  readonly name: string;
  readonly ext: 'yaml' | 'json';
  /** The file's current content is valid. */
  valid: boolean;
  /**
   * A valid version was read before the content turned invalid (and neither a delete nor an
   * emperor restart came since): the emperor keeps that version running.
   */
  keep: boolean;
  /** Kind of the current valid content (or of the kept version). */
  kind: Kind | undefined;
  port: number | undefined;
  healthFile: string | undefined;
}

/** The driver's knowledge of the vassals directory: only what it wrote, never what it observed. */
export class Model {
  readonly files = new Map<string, FileState>();
  private seq = 0;

  nextName(): string {
    this.seq++;
    return `v${String(this.seq).padStart(3, '0')}`;
  }

  names(): string[] {
    return [...this.files.keys()].sort();
  }

  /** May a process of this vassal run? (no file, or a file that never was valid: no.) */
  processAllowed(name: string): boolean {
    const f = this.files.get(name);
    return f !== undefined && (f.valid || f.keep);
  }

  /** A restarted emperor reads the files afresh: an invalid file runs nothing. */
  emperorRestarted(): void {
    for (const f of this.files.values()) if (!f.valid) f.keep = false;
  }
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** Lines of history kept per vassal. */
const HISTORY = 16;

export class World {
  readonly runId = randomBytes(6).toString('hex');
  readonly model = new Model();
  readonly hostname = os.hostname();
  readonly soakApp = path.join(here, 'app.js');
  ws!: { root: string; vassals: string; state: string; logs: string; health: string };
  etcd!: EtcdServer;
  consul!: ConsulDouble;
  emperor: EmperorProc | undefined;
  /** The hostile user (root only); with it the emperor runs in tyrant mode. */
  hostile: HostileActor | undefined;
  /** Uid the driver's own (root- or soak-user-owned) vassals run as. */
  readonly driverUid = process.getuid?.() ?? 0;
  /** Number of emperor processes started so far. */
  incarnations = 0;
  /** When the driver last SIGKILLed the emperor (-Infinity: never). */
  lastKillAt = -Infinity;
  etcdUp = false;
  etcdReachableSince = 0;
  consulUp = false;
  consulReachableSince = 0;
  /** Log events of every emperor incarnation, by kind. */
  readonly events = new Map<string, number>();
  consulRequests = 0;
  readonly scanner: ProcScanner;
  /** Recent emperor log lines and driver actions per vassal, to explain a violation. */
  private readonly history = new Map<string, string[]>();
  private readonly usedPorts = new Set<number>();

  constructor(private readonly ledger: Ledger) {
    this.scanner = new ProcScanner(this.runId, () => (this.emperor ? [this.emperor.pid] : []));
  }

  async setup(): Promise<void> {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'emperor-soak-'));
    this.ws = { root, vassals: path.join(root, 'vassals'), state: path.join(root, 'state'), logs: path.join(root, 'logs'), health: path.join(root, 'health') };
    await fs.mkdir(this.ws.vassals);
    await fs.mkdir(this.ws.health);
    this.etcd = await startEtcd();
    this.etcdUp = true;
    this.etcdReachableSince = Date.now();
    this.consul = await startConsulDouble();
    this.consulUp = true;
    this.consulReachableSince = Date.now();
  }

  /** A loopback port not handed out before in this run. */
  async port(): Promise<number> {
    for (let i = 0; ; i++) {
      const p = await freePort();
      if (!this.usedPorts.has(p) || i > 20) {
        this.usedPorts.add(p);
        return p;
      }
    }
  }

  emperorArgs(): string[] {
    return [
      '--vassals', this.ws.vassals,
      '--state-dir', this.ws.state,
      '--logs-dir', this.ws.logs,
      '--log-format', 'json',
      '--etcd-endpoint', this.etcd.endpoint,
      '--tree-root', SETTINGS.treeRoot,
      '--lease-ttl', `${SETTINGS.leaseTtlMs}ms`,
      '--consul-agent', this.consul.address,
      '--consul-check-ttl', `${SETTINGS.consulCheckTtlMs}ms`,
      '--consul-deregister-critical-after', `${SETTINGS.consulDeregisterCriticalAfterMs}ms`,
      '--anti-entropy-interval', `${SETTINGS.antiEntropyMs}ms`,
      '--deregister-timeout', `${SETTINGS.deregisterTimeoutMs}ms`,
      // Each file runs as its owner: the driver's are root's, the hostile user's are his.
      ...(this.hostile ? ['--tyrant', '--tyrant-allow-root'] : []),
    ];
  }

  remember(vassal: string, line: string): void {
    const h = this.history.get(vassal) ?? [];
    h.push(`${this.ledger.stamp()} ${line}`);
    if (h.length > HISTORY) h.shift();
    this.history.set(vassal, h);
  }

  /** What happened to a vassal lately (emperor log events and driver actions), oldest first. */
  context(vassal: string): string {
    const h = this.history.get(vassal);
    return h ? `\n      recent ${vassal} history:\n        ${h.join('\n        ')}` : '';
  }

  get emperorAlive(): boolean {
    return this.emperor?.alive ?? false;
  }

  /** Start an emperor on the same state dir (a restart takes over its own leftovers). */
  async startEmperor(): Promise<void> {
    const env: NodeJS.ProcessEnv = { ...process.env, [RUN_MARKER]: this.runId };
    delete env.EMPEROR_VASSAL;
    const n = this.incarnations + 1;
    const emp = await EmperorProc.start(this.emperorArgs(), env, path.join(this.ws.state, 'emperor.sock'), (e, self) => {
      const ev = e.event ?? '(none)';
      this.events.set(ev, (this.events.get(ev) ?? 0) + 1);
      if (typeof e.vassal === 'string' && ev !== 'output') {
        const pid = typeof e.pid === 'number' ? ` pid ${e.pid}` : '';
        this.remember(e.vassal, `emperor #${n}: ${ev}${pid}: ${String(e.message).slice(0, 140)}`);
      }
      if (ev === 'bug') this.ledger.violation(4, 'bug event in the emperor log', `emperor #${n} (pid ${self.pid}): ${String(e.message).slice(0, 800)}`);
      if (this.hostile && JSON.stringify(e).includes(this.hostile.marker)) {
        this.ledger.violation(5, 'a log line quotes a file the emperor refused', `emperor #${n}: ${JSON.stringify(e).slice(0, 600)}`);
      }
    });
    this.incarnations = n;
    void emp.exited.then((info) => {
      if (emp.expectExit) return;
      // Its registrations linger like after a SIGKILL: judge them by the same windows.
      this.lastKillAt = Date.now();
      this.ledger.violation(
        4,
        'emperor crashed',
        `emperor #${n} (pid ${emp.pid}) exited on its own with code ${info.code} signal ${info.signal}; stderr: ${emp.stderr.slice(-1500)}; log tail:\n${emp.tail.slice(-15).join('\n')}`,
      );
    });
    this.emperor = emp;
    this.ledger.debug(`emperor #${n} started, pid ${emp.pid}`);
  }

  /** SIGKILL the emperor; resolves once it is dead. */
  async killEmperor(): Promise<void> {
    const emp = this.emperor;
    if (!emp?.alive) return;
    emp.expectExit = true;
    emp.signal('SIGKILL');
    await emp.waitExit(5000);
    this.lastKillAt = Date.now();
  }

  resources(): { rssKb: number; fds: number } | undefined {
    return this.emperor?.alive ? emperorResources(this.emperor.pid) : undefined;
  }

  async etcdDown(kill: boolean): Promise<void> {
    if (!this.etcdUp) return;
    this.etcdUp = false;
    await (kill ? this.etcd.kill() : this.etcd.stop());
  }

  async etcdBack(): Promise<void> {
    if (this.etcdUp) return;
    await this.etcd.start();
    this.etcdReachableSince = Date.now();
    this.etcdUp = true;
  }

  async consulDown(): Promise<void> {
    if (!this.consulUp) return;
    this.consulUp = false;
    await this.consul.stop();
  }

  async consulBack(): Promise<void> {
    if (this.consulUp) return;
    await this.consul.start();
    this.consulReachableSince = Date.now();
    this.consulUp = true;
  }

  /** Live processes of this run (vassals, their children, probes). */
  ourProcesses(): Array<{ pid: number; startTime: string; vassal: string; leader: boolean }> {
    return this.scanner.scan().map((p) => ({ pid: p.pid, startTime: p.startTime, vassal: p.vassal, leader: p.leader }));
  }

  /** SIGKILL whatever of this run is left (after a violation was recorded, or at abort). */
  killStrays(): number {
    let n = 0;
    for (const p of this.ourProcesses()) {
      try {
        process.kill(p.pid, 'SIGKILL');
        n++;
      } catch {
        // gone already
      }
    }
    return n;
  }

  stillAlive(procs: ReadonlyArray<{ pid: number; startTime: string }>): Array<{ pid: number; startTime: string }> {
    return procs.filter((p) => isAlive(p.pid, p.startTime));
  }

  async teardown(): Promise<void> {
    if (this.emperor?.alive) {
      this.emperor.expectExit = true;
      this.emperor.signal('SIGKILL');
      await this.emperor.waitExit(5000);
    }
    this.killStrays();
    await this.consul?.stop().catch(() => undefined);
    await this.etcd?.dispose().catch(() => undefined);
    if (this.ws) await fs.rm(this.ws.root, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
  }

  /** Last resort (watchdog, signals): synchronous. */
  abortSync(): void {
    if (this.emperor?.alive) {
      this.emperor.expectExit = true;
      this.emperor.signal('SIGKILL');
    }
    this.killStrays();
    this.hostile?.teardown();
    if (this.ws) {
      try {
        rmSync(this.ws.root, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }
}
