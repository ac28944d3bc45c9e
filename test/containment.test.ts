// Containment and limits (issue 10): a cgroup per vassal, so nothing a vassal starts outlives
// it, however it daemonizes; memory/pids/cpu limits through the cgroup controllers; the
// process-group fallback where no cgroup can be created. Runs as root, as the product does.
//
// Whether processes are left is decided by an independent scan of /proc (environment markers
// the processes inherit), never by the emperor's own records.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from './support/test.js';
import { findOwnCgroups, parseMountinfo } from '../src/process/cgroupfs.js';
import { parseVassal } from '../src/config/load.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';
import { waitFor } from './support/wait.js';
import { removeUser, throwawayName, throwawayUser } from './support/accounts.js';

const DAEMONIZE = fixture('process/daemonize.sh');

/** Live (non-zombie) pids whose environment has KEY=value (value undefined: any value). */
function withEnv(key: string, value?: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let env: string;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      env = fs.readFileSync(`/proc/${name}/environ`, 'utf8');
    } catch {
      continue;
    }
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
    for (const kv of env.split('\0')) {
      if (value === undefined ? kv.startsWith(`${key}=`) : kv === `${key}=${value}`) {
        found.push(Number(name));
        break;
      }
    }
  }
  return found;
}

/** Processes of the daemonizing fixture run whose leader was `leader`. */
const family = (leader: number): number[] => withEnv('LEADER', String(leader));

const sessionOf = (pid: number): string | undefined => {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3];
  } catch {
    return undefined;
  }
};

/** Processes of the family that are in another session than the leader. */
const escapees = (leader: number): number[] => family(leader).filter((pid) => sessionOf(pid) !== undefined && sessionOf(pid) !== sessionOf(leader));

/** A marker unique to this test run, so concurrent test runs never see each other's processes. */
const mark = (what: string): string => `${what}-${process.pid}-${Date.now()}`;

// A failing test must not leave its escapees running: kill everything marked by this run.
after(() => {
  for (const pid of withEnv('CG_MARK').filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/environ`, 'utf8').includes(`-${process.pid}-`);
    } catch {
      return false;
    }
  })) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

function daemonizing(markValue: string, extra: Record<string, unknown> = {}): object {
  return {
    command: [DAEMONIZE],
    env: { CG_MARK: markValue },
    start: { ready: { notify: true }, timeout: '20s' },
    stop: { timeout: '300ms' },
    ...extra,
  };
}

/** Wait for a spawn's ready, then until its two setsid'd grandchildren are up. */
async function readyFamily(emp: EmperorUnderTest, name: string, since: number): Promise<number> {
  const ready = await emp.waitEvent(name, 'ready', since, 20000);
  const leader = ready.pid as number;
  // At least two processes outside the leader's session: the grandchildren that escaped.
  await waitFor(() => escapees(leader).length >= 2, `setsid'd grandchildren of ${leader}`);
  return leader;
}

describe('cgroup discovery', () => {
  it('finds cgroup2 below /sys/fs/cgroup on hybrid hosts, with the v1 controllers beside it', () => {
    const mountinfo = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
      '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    const cgroup = ['9:name=systemd:/', '8:pids:/', '4:memory:/box/1', '1:cpu,cpuacct:/', '0::/'].join('\n');
    const own = findOwnCgroups(mountinfo, cgroup);
    assert.equal(own.v2, '/sys/fs/cgroup/unified/');
    assert.equal(own.v1.get('memory'), '/sys/fs/cgroup/memory/box/1');
    assert.equal(own.v1.get('cpu'), '/sys/fs/cgroup/cpu,cpuacct/');
    assert.equal(own.v1.get('pids'), '/sys/fs/cgroup/pids/');
    assert.equal(own.v1.has('name=systemd'), false);
  });

  it('finds a pure v2 host, a systemd service cgroup, and a container whose mount root is its own cgroup', () => {
    const pure = '30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate';
    assert.equal(findOwnCgroups(pure, '0::/system.slice/emperor.service\n').v2, '/sys/fs/cgroup/system.slice/emperor.service');
    // A container mounts the hierarchy from its own cgroup down.
    const container = '30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw';
    assert.equal(findOwnCgroups(container, '0::/docker/abc/sub\n').v2, '/sys/fs/cgroup/sub');
    // Our cgroup outside the mounted part (a cgroup namespace shows "/.."): not usable.
    assert.equal(findOwnCgroups(container, '0::/other\n').v2, undefined);
    assert.equal(findOwnCgroups(pure, '0::/../outside\n').v2, undefined);
    // Escaped mount points are decoded.
    assert.equal(parseMountinfo('1 2 0:1 / /mnt/cg\\040x rw - cgroup2 cgroup2 rw')[0]?.mountPoint, '/mnt/cg x');
  });
});

describe('limits in the vassal file', () => {
  it('memory is a binary size of at least 1M; bad limits name the field and what was expected', () => {
    const memory = (m: string): number | null | undefined => {
      const r = parseVassal(`command: [sleep, "1"]\nlimits: { memory: ${m} }\n`, '/x/a.yaml');
      return r.ok ? r.spec.limits?.memoryBytes : undefined;
    };
    assert.equal(memory('256M'), 256 * 2 ** 20);
    assert.equal(memory('1.5G'), 1.5 * 2 ** 30);
    assert.equal(memory('2048KiB'), 2048 * 1024);
    assert.equal(memory('-1M'), undefined);
    assert.equal(memory('0M'), undefined);
    const good = parseVassal('command: [sleep, "1"]\nlimits: { memory: 256M, pids: 100, cpu_weight: 50, open_files: 1024 }\nlimits_required: true\n', '/x/a.yaml');
    assert.ok(good.ok);
    assert.deepEqual(good.spec.limits, { memoryBytes: 256 * 2 ** 20, pids: 100, cpuWeight: 50, openFiles: 1024 });
    assert.equal(good.spec.limitsRequired, true);
    const cases: Array<[string, RegExp]> = [
      // 256 bytes is a typo for 256M: refused, not applied.
      ['limits: { memory: 256 }', /limits\.memory: expected a size like 10M, 512K or 1G \(or a number of bytes\), at least 1M, got 256/],
      ['limits: { pids: 0 }', /limits\.pids: expected a whole number of processes and threads from 1/],
      ['limits: { cpu_weight: 20000 }', /limits\.cpu_weight: expected a whole number of shares \(100 = default\) from 1 to 10000/],
      ['limits: { open_files: 1.5 }', /limits\.open_files: expected a whole number of file descriptors/],
      ['limits: { swap: 1G }', /limits\.swap: unknown field \(allowed: memory, pids, cpu_weight, open_files\)/],
    ];
    for (const [yaml, re] of cases) {
      const r = parseVassal(`command: [sleep, "1"]\n${yaml}\n`, '/x/a.yaml');
      assert.ok(!r.ok, yaml);
      assert.match(r.error.message, re);
    }
  });
});

describe('a cgroup per vassal', () => {
  let emp: EmperorUnderTest;
  let metricsPort: number;

  before(async () => {
    metricsPort = await freePort();
    emp = await EmperorUnderTest.start(await makeWorkspace(), ['--metrics', `127.0.0.1:${metricsPort}`]);
  });
  after(async () => {
    await emp.stop();
  });

  it('says so in the log and in status', async () => {
    const s = await emp.status();
    assert.equal(s.containment.mode, 'cgroup');
    assert.ok(s.containment.cgroup && fs.existsSync(path.join(s.containment.cgroup, 'cgroup.procs')));
    assert.deepEqual([...s.containment.limits].sort(), ['cpu_weight', 'memory', 'open_files', 'pids']);
    assert.equal(emp.entries.filter((e) => e.event === 'containment').length, 1);
    const table = await emp.cli(['status']);
    assert.match(table.stdout, /^containment: cgroup \(/m);
  });

  it('stop leaves nothing of a vassal that double-forks with setsid, every time', async () => {
    await emp.writeVassal('daemon.yaml', daemonizing(mark('stop')));
    for (let round = 0; round < 8; round++) {
      const since = emp.mark();
      if (round > 0) assert.equal((await emp.cli(['start', 'daemon'])).code, 0);
      const leader = await readyFamily(emp, 'daemon', since);
      const st = await emp.cli(['stop', 'daemon']);
      assert.equal(st.code, 0, st.stderr);
      // Stopped means stopped: no wait, nothing of it may be left when stop returns.
      assert.deepEqual(family(leader), [], `round ${round}: processes of ${leader} survived stop`);
    }
    const v = await emp.vassal('daemon');
    assert.equal(v.state, 'stopped');
    fs.rmSync(path.join(emp.ws.vassals, 'daemon.yaml'));
  });

  it("an exec check runs in its vassal's cgroup: what it setsid's away goes with the vassal", async () => {
    const m = mark('probe');
    const pidFile = path.join(emp.ws.root, `probe-escapee-${process.pid}.pid`);
    await emp.writeVassal('probed.yaml', {
      command: ['sleep', '1000'],
      env: { CG_MARK: m },
      start: { ready: { delay: '10ms' } },
      // Leaves its process group and session: only a cgroup still holds what it started.
      checks: [{ exec: ['/bin/sh', '-c', `[ -s ${pidFile} ] || { setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > ${pidFile}; }`], interval: '1s' }],
    });
    await emp.waitEvent('probed', 'ready');
    await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '', 'the check to start its escapee');
    const escapee = Number(fs.readFileSync(pidFile, 'utf8').trim());
    const v = await emp.vassal('probed');
    const cgroupOf = (pid: number): string => fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    const appCgroup = cgroupOf(v.pid as number).split('\n').find((l) => l.startsWith('0::'));
    assert.ok(appCgroup, 'the app is in a v2 cgroup');
    assert.ok(cgroupOf(escapee).split('\n').includes(appCgroup), `the probe's escapee is in the app's cgroup (${appCgroup})`);
    const st = await emp.cli(['stop', 'probed']);
    assert.equal(st.code, 0, st.stderr);
    assert.deepEqual(withEnv('CG_MARK', m), [], 'nothing the vassal or its check started survived the stop');
    fs.rmSync(path.join(emp.ws.vassals, 'probed.yaml'));
  });

  it('a crash of the main process kills what is left in its cgroup before the restart', async () => {
    const since = emp.mark();
    await emp.writeVassal('crasher.yaml', daemonizing(mark('crash'), { env: { CRASH: '1' }, backoff: { initial: '50ms', max: '200ms', max_retries: 100 } }));
    let spawned = await emp.waitEvent('crasher', 'spawned', since, 20000);
    for (let round = 0; round < 6; round++) {
      const leader = spawned.pid as number;
      const next = await emp.waitEvent('crasher', 'spawned', emp.entries.indexOf(spawned) + 1, 20000);
      assert.notEqual(next.pid, leader);
      assert.deepEqual(family(leader), [], `round ${round}: processes of crashed ${leader} were still running at the restart`);
      spawned = next;
    }
    fs.rmSync(path.join(emp.ws.vassals, 'crasher.yaml'));
    await waitFor(async () => !(await emp.status()).vassals.some((v) => v.name === 'crasher'), 'crasher to be removed');
  });

  it('a memory hog under limits.memory is OOM-killed and reported so in the log, status and metrics', async () => {
    const since = emp.mark();
    await emp.writeVassal('hog.yaml', { command: ['tail', '/dev/zero'], limits: { memory: '32M' }, restart: 'never' });
    const exited = await emp.waitEvent('hog', 'exited', since, 20000);
    assert.equal(exited.oom_killed, true);
    assert.match(exited.message, /oom-killed/);
    const v = await emp.vassal('hog');
    assert.equal(v.lastExit?.reason, 'oom-killed');
    assert.equal(v.oomKills, 1);
    const one = await emp.cli(['status', 'hog']);
    assert.match(one.stdout, /^last exit\s+oom-killed$/m);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(text, /^emperor_vassal_oom_kills_total\{vassal="hog"\} 1$/m);
    assert.match(text, /^emperor_vassal_last_exit_oom_killed\{vassal="hog"\} 1$/m);
  });

  it('limits.pids stops a fork bomb inside its cgroup; the emperor and the other vassals keep answering', async () => {
    const bombMark = mark('bomb');
    const since = emp.mark();
    await emp.writeVassal('calm.yaml', { command: ['sleep', '3600'], start: { ready: { delay: '0s' } } });
    await emp.waitEvent('calm', 'ready', since);
    await emp.writeVassal('bomb.yaml', {
      // bash retries a failed fork instead of exiting (dash exits), so the bomb keeps pushing.
      // Bounded, so that even without a working limit it cannot take the host down.
      command: ['bash', '-c', 'for i in $(seq 300); do sleep 3600 & done; wait'],
      env: { CG_MARK: bombMark },
      limits: { pids: 16 },
      start: { ready: { delay: '0s' } },
      restart: 'never',
    });
    await emp.waitEvent('bomb', 'spawned', since);
    const log = path.join(emp.ws.logs, 'bomb.log');
    // The bomb hit its limit: fork failed inside the cgroup.
    await waitFor(() => fs.existsSync(log) && /fork/i.test(fs.readFileSync(log, 'utf8')), 'the bomb to hit pids.max', 20000);
    assert.ok(withEnv('CG_MARK', bombMark).length <= 16, 'no more than pids.max processes');
    // Everything else still answers: status, a control action on another vassal, its restart.
    const s = await emp.status();
    assert.equal(s.vassals.find((x) => x.name === 'calm')?.state, 'running');
    const restart = await emp.cli(['restart', 'calm']);
    assert.equal(restart.code, 0, restart.stderr);
    assert.equal((await emp.vassal('calm')).state, 'running');
    assert.equal((await emp.cli(['stop', 'bomb'])).code, 0);
    assert.deepEqual(withEnv('CG_MARK', bombMark), []);
  });

  it('every limit is in force for the running app: open_files, and memory, pids, cpu_weight in its cgroups', async () => {
    const out = path.join(emp.ws.root, 'nofile');
    const since = emp.mark();
    await emp.writeVassal('fds.yaml', {
      command: `ulimit -Sn > ${out}.tmp; ulimit -Hn >> ${out}.tmp; mv ${out}.tmp ${out}; exec sleep 3600`,
      shell: true,
      limits: { open_files: 77, memory: '64M', pids: 40, cpu_weight: 50 },
    });
    const pid = (await emp.waitEvent('fds', 'spawned', since)).pid as number;
    await waitFor(() => fs.existsSync(out), 'the app to report its limit');
    assert.equal(fs.readFileSync(out, 'utf8'), '77\n77\n');
    // Where the app's cgroups are, from its own /proc entry (not from the emperor).
    const own = findOwnCgroups(fs.readFileSync('/proc/self/mountinfo', 'utf8'), fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
    const read = (controller: string, v2file: string, v1file: string): string => {
      const v1 = own.v1.get(controller);
      const v2 = own.v2;
      if (v2 !== undefined && fs.existsSync(path.join(v2, v2file))) return fs.readFileSync(path.join(v2, v2file), 'utf8').trim();
      assert.ok(v1 !== undefined, `the app is in a ${controller} cgroup`);
      return fs.readFileSync(path.join(v1, v1file), 'utf8').trim();
    };
    assert.equal(read('memory', 'memory.max', 'memory.limit_in_bytes'), String(64 * 2 ** 20));
    assert.equal(read('pids', 'pids.max', 'pids.max'), '40');
    assert.ok(['50', '512'].includes(read('cpu', 'cpu.weight', 'cpu.shares')), 'cpu.weight 50, or cpu.shares 512 on v1');
    assert.match(own.v2 ?? '', /\/emperor-[0-9a-f]+\/vassal-fds$/);
  });
});

describe('after the emperor is SIGKILLed', () => {
  it('the guardian kills every process of every vassal by cgroup and removes the cgroups', async () => {
    const ws = await makeWorkspace();
    for (let round = 0; round < 3; round++) {
      const emp = await EmperorUnderTest.start(ws);
      const parent = (await emp.status()).containment.cgroup!;
      await emp.writeVassal('d1.yaml', daemonizing(mark('gk1')));
      await emp.writeVassal('d2.yaml', daemonizing(mark('gk2')));
      const leaders = [await readyFamily(emp, 'd1', 0), await readyFamily(emp, 'd2', 0)];
      emp.child.kill('SIGKILL');
      await emp.exited;
      await waitFor(() => leaders.every((l) => family(l).length === 0), `round ${round}: the guardian to kill every process`, 15000);
      await waitFor(() => !fs.existsSync(parent), 'the guardian to remove the cgroups', 15000);
      // The next round's emperor must not start these again before the test writes new ones.
      for (const f of ['d1.yaml', 'd2.yaml']) fs.rmSync(path.join(ws.vassals, f));
    }
  });

  it('with the guardian killed too, the next emperor kills the leftovers by cgroup', async () => {
    const ws = await makeWorkspace();
    const emp = await EmperorUnderTest.start(ws);
    await emp.writeVassal('d.yaml', daemonizing(mark('next'), { restart: 'never' }));
    const leader = await readyFamily(emp, 'd', 0);
    const guardians = fs
      .readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map(Number)
      .filter((pid) => {
        try {
          const ppid = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1];
          return ppid === String(emp.pid) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('emperor-guardian');
        } catch {
          return false;
        }
      });
    assert.equal(guardians.length, 1, 'found the guardian');
    process.kill(guardians[0]!, 'SIGKILL');
    emp.child.kill('SIGKILL');
    await emp.exited;
    assert.ok(family(leader).length >= 2, 'the escapees outlived emperor and guardian');
    fs.rmSync(path.join(ws.vassals, 'd.yaml'));
    const next = await EmperorUnderTest.start(ws);
    try {
      assert.deepEqual(family(leader), [], 'leftovers killed before the new emperor reported started');
      const left = next.entries.find((e) => e.event === 'leftover' && e.vassal === 'd');
      assert.ok(left, next.tail());
    } finally {
      await next.stop();
    }
  });
});

describe('fallback without cgroups', () => {
  it('--no-cgroups: process groups, said once in the log and in status; limits it cannot apply warn or, when required, refuse', async () => {
    const emp = await EmperorUnderTest.start(await makeWorkspace(), ['--no-cgroups']);
    try {
      const s = await emp.status();
      assert.equal(s.containment.mode, 'process-group');
      assert.deepEqual(s.containment.limits, ['open_files']);
      const said = emp.entries.filter((e) => e.event === 'containment');
      assert.equal(said.length, 1);
      assert.match(said[0]!.message, /process groups only/);
      assert.match((await emp.cli(['status'])).stdout, /^containment: process-group/m);

      const since = emp.mark();
      await emp.writeVassal('soft.yaml', { command: ['sleep', '3600'], limits: { memory: '64M', open_files: 100 }, start: { ready: { delay: '0s' } } });
      const warned = await emp.waitEvent('soft', 'limits-unsupported', since);
      assert.match(warned.message, /limits\.memory cannot be applied on this host/);
      await emp.waitEvent('soft', 'ready', since);
      await emp.writeVassal('strict.yaml', { command: ['sleep', '3600'], limits: { memory: '64M' }, limits_required: true });
      const refused = await emp.waitFor((e) => e.vassal === 'strict' && e.event === 'invalid', 'refused', since);
      assert.match(refused.message, /limits\.memory cannot be applied on this host.*limits_required is true/);
      assert.equal((await emp.vassal('strict')).state, 'invalid');
      // Stop still takes the process group.
      assert.equal((await emp.cli(['stop', 'soft'])).code, 0);
    } finally {
      await emp.stop();
    }
  });

  it('an emperor that is not root cannot create cgroups and falls back on its own', async () => {
    const { name: user, uid, gid } = throwawayUser(throwawayName('emp-cg'));
    try {
      const ws = await makeWorkspace();
      execFileSync('chown', ['-R', `${uid}:${gid}`, ws.root]);
      const emp = await EmperorUnderTest.start(ws, [], process.env, { uid, gid });
      try {
        const s = await emp.status();
        assert.equal(s.containment.mode, 'process-group');
        assert.match(s.containment.reason ?? '', /cannot create a cgroup/);
        const since = emp.mark();
        await emp.writeVassal('plain.yaml', { command: ['sleep', '3600'], start: { ready: { delay: '0s' } } });
        await emp.waitEvent('plain', 'ready', since);
        assert.equal((await emp.cli(['stop', 'plain'])).code, 0);
      } finally {
        await emp.stop();
      }
    } finally {
      removeUser(user);
    }
  });
});
