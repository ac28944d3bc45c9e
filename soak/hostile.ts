// The hostile user of the soak (issue 9): a throwaway non-root account that may write into the
// vassals directory (mode 1777, as a shared drop directory) and keeps attacking a root emperor in
// tyrant mode (--tyrant --tyrant-allow-root, so the driver's root-owned files still run) with
// test/fixtures/attacker.ts: renaming root-owned files over its own while the emperor reads them,
// FIFOs, sockets, directories, sparse and oversized files, symlinks to a root-only file, hostile
// YAML, repeated JSON keys. Its own valid content and the root-owned files it swaps in all report
// who they run as (REPORT/<owner uid>.<uid>.<pid>, and SOAK_OWNER in their environment), which
// the checker judges. Needs root; without it the soak runs without this actor.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_VASSAL_FILE_BYTES } from '../src/config/read.js';
import { reportingVassal } from '../test/fixtures/attacker.js';
import type { Ledger } from './ledger.js';
import { pick, type Rng } from './prng.js';

/** Vassal names the actor uses start with this (the driver's are v001...). */
export const HOSTILE_PREFIX = 'h';

const MODES = ['owner-race', 'owner-race', 'specials', 'sizes', 'symlinks', 'json-dup'] as const;
const ATTACKER_SCRIPT = fileURLToPath(new URL('../test/fixtures/attacker.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function getent(db: string, key: string): string[] | undefined {
  try {
    return execFileSync('getent', [db, key], { encoding: 'utf8' }).trim().split(':');
  } catch {
    return undefined;
  }
}

function quietly(command: string, ...args: string[]): void {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
  } catch {
    // best effort
  }
}

export class HostileActor {
  /** Secret's marker: no emperor log line or status may ever contain it. */
  readonly marker: string;
  /** Where every hostile process reports <content owner>.<uid>.<pid>. */
  readonly reportDir: string;
  readonly uid: number;
  private readonly gid: number;
  private readonly script: string;
  private readonly stash: string;
  private readonly secret: string;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private seq = 0;
  private child: ReturnType<typeof spawn> | undefined;

  private constructor(
    private readonly user: string,
    private readonly vassals: string,
    root: string,
    private readonly ledger: Ledger,
    private readonly rng: Rng,
  ) {
    const pw = getent('passwd', user)!;
    this.uid = Number(pw[2]);
    this.gid = Number(pw[3]);
    this.marker = `SOAKSECRET${user.replace(/\W/g, '')}`;
    this.reportDir = path.join(root, 'hostile-report');
    this.script = path.join(root, 'attacker.mjs');
    this.stash = path.join(root, 'hostile-stash');
    this.secret = path.join(root, 'root-only.txt');
  }

  /** Creates the account and the directories it needs; undefined when not root. */
  static async create(runId: string, ws: { root: string; vassals: string }, ledger: Ledger, rng: Rng): Promise<HostileActor | undefined> {
    if (process.getuid?.() !== 0) return undefined;
    const user = `emp-soak-${runId.slice(0, 8)}`;
    if (getent('passwd', user)) quietly('userdel', user);
    execFileSync('useradd', ['--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', user]);
    const actor = new HostileActor(user, ws.vassals, ws.root, ledger, rng);
    await fs.chmod(ws.root, 0o755);
    // A shared drop directory: anyone may add files, only a file's owner may rename or remove it.
    await fs.chmod(ws.vassals, 0o1777);
    await fs.mkdir(actor.reportDir);
    await fs.chmod(actor.reportDir, 0o1777);
    // Root's files the attacker may move (not in the vassals directory: the driver owns that).
    await fs.mkdir(actor.stash);
    await fs.chown(actor.stash, 0, actor.gid);
    await fs.chmod(actor.stash, 0o775);
    await fs.writeFile(actor.secret, `${actor.marker}: 1\nsecond: line\n`, { mode: 0o600 });
    copyFileSync(ATTACKER_SCRIPT, actor.script);
    await fs.chmod(actor.script, 0o644);
    return actor;
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** Stops attacking and removes everything it put in the vassals directory. */
  async stop(): Promise<void> {
    this.running = false;
    this.child?.kill('SIGKILL');
    await this.loop;
    await this.cleanup('');
  }

  teardown(): void {
    this.child?.kill('SIGKILL');
    quietly('userdel', this.user);
  }

  private async run(): Promise<void> {
    let previous = '';
    while (this.running) {
      const mode = pick(this.rng(), MODES);
      const prefix = `${HOSTILE_PREFIX}${String(++this.seq).padStart(3, '0')}`;
      try {
        await this.attack(mode, prefix);
        this.ledger.action(`hostile: ${mode}`);
      } catch (err) {
        if (this.running) this.ledger.harness(`hostile actor ${mode}: ${err instanceof Error ? err.message : String(err)}`);
      }
      // Each attack's files stay until the next one is done, then go (the directory stays small).
      if (previous) await this.cleanup(previous);
      previous = prefix;
      await sleep(500 + Math.floor(this.rng() * 1000));
    }
  }

  private async attack(mode: (typeof MODES)[number], prefix: string): Promise<void> {
    const base = { vassals: this.vassals, prefix };
    switch (mode) {
      case 'owner-race': {
        const attempts = 3;
        for (let i = 0; i < attempts; i++) {
          const file = path.join(this.stash, `${prefix}race.${i}.yaml`);
          // Root's content: it may run as root (tyrant-allow-root), the attacker's never may.
          await fs.writeFile(file, reportingVassal('0', this.reportDir, { SOAK_OWNER: '0' }));
        }
        await this.runAttacker(mode, { vassals: this.vassals, stash: this.stash, report: this.reportDir, name: `${prefix}race`, attempts, deadlineMs: 10_000, who: String(this.uid), fresh: true });
        return;
      }
      case 'specials':
        await this.runAttacker(mode, { ...base, swaps: 4 });
        return;
      case 'sizes':
        await this.runAttacker(mode, { ...base, cap: MAX_VASSAL_FILE_BYTES });
        return;
      case 'symlinks':
        await this.runAttacker(mode, { ...base, secret: this.secret, flips: 3 });
        return;
      case 'json-dup':
        await this.runAttacker(mode, base);
        return;
    }
  }

  private runAttacker(mode: string, args: object): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [this.script, mode, JSON.stringify(args)], { uid: this.uid, gid: this.gid, cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
      this.child = child;
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        this.child = undefined;
        if (code === 0 || !this.running) resolve();
        else reject(new Error(`exited ${code ?? signal}: ${err.slice(-500)}`));
      });
    });
  }

  /** Removes the actor's files with this prefix ('' = all of them) from the vassals directory and the stash. */
  private async cleanup(prefix: string): Promise<void> {
    const mine = `${HOSTILE_PREFIX}${prefix ? prefix.slice(HOSTILE_PREFIX.length) : ''}`;
    for (const dir of [this.vassals, this.stash]) {
      for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
        if (name.startsWith(mine) || name.startsWith(`.${mine}`)) await fs.rm(path.join(dir, name), { recursive: true, force: true });
      }
    }
  }
}
