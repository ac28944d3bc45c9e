// A tiny watchdog that outlives a SIGKILLed emperor just long enough to kill its vassals.
//
// setpriv's parent-death signal only reaches each vassal's leader; grandchildren would be
// orphaned. The guardian is one /bin/sh per emperor (about a megabyte, whatever the number of
// vassals) that holds the list of live process groups and reads it from a pipe. The kernel
// closes the pipe's write end however the emperor dies, so EOF on stdin means "the emperor is
// gone": kill every listed group, then exit.
//
// With cgroups it is given the emperor's parent cgroups as arguments ($1: the v2 parent, or
// empty; then v1 parents that hold limits): at EOF it writes cgroup.kill of the v2 parent,
// which kills every vassal process however it escaped its process group, and then removes the
// vassals' cgroups once they are empty.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { Writable } from 'node:stream';

// POSIX builtins only (dash), no fork per line. Each listed group is a shell variable g_<pgid>
// (a hash lookup: 1,000 vassals cost microseconds, where string surgery on one long list took
// ~100 ms per removal in dash). Only at EOF is `set` read back, through one forked subshell.
// Ids of 0 or 1 (or with leading zeros) are refused: "kill -- -1" would signal every process
// on the host. dash's kill wants -s KILL; it rejects "kill -KILL -- -PGID".
const SCRIPT = `
trap '' INT TERM HUP
# Fleet fencing: a fleet instance (F<pgid> [cgroup]) may run only until the deadline D<cs>, in
# centiseconds of /proc/uptime, that the emperor moves on with every confirmed lease renewal. A
# timer subshell kills them at the deadline unless re-armed first, so a frozen emperor (SIGSTOP,
# a long GC) cannot keep them running past the lease. Every change re-arms, so the timer's copy
# of the list is never stale (a stale pgid could have been reused by another process).
# P<n> <cgroup>: a fleet instance is about to start in that cgroup (announced before the spawn,
# so an emperor frozen between the spawn and its F line cannot leave it unfenced); x<n> drops it.
fence() {
  set | while IFS= read -r v; do
    case $v in
      c_[0-9]*=*|p_[0-9]*=*) v=\${v#*=}; v=\${v#\\'}; v=\${v%\\'}; [ -e "$v/cgroup.kill" ] && echo 1 > "$v/cgroup.kill" ;;
    esac
  done 2>/dev/null
  set | while IFS= read -r v; do
    case $v in f_[0-9]*=*) v=\${v#f_}; kill -s KILL -- "-\${v%%=*}" 2>/dev/null ;; esac
  done
}
# Cancel the timer, if it is still our child: dash reaps it at once, so its pid may be anyone's now.
untime() {
  [ -n "$t" ] && read -r st 2>/dev/null < "/proc/$t/stat" && set -- $st && [ "$4" = "$$" ] && kill -s USR1 "$t" 2>/dev/null
  t=
}
arm() {
  untime
  [ -n "$dl" ] || return 0
  (
    trap 'kill "$s" 2>/dev/null; exit 0' USR1
    read -r up _ < /proc/uptime
    up=\${up%.*}\${up#*.}
    d=$((dl - up))
    if [ "$d" -gt 0 ]; then
      sleep "$((d / 100)).$((d / 10 % 10))$((d % 10))" & s=$!
      wait "$s"
    fi
    fence
  ) &
  t=$!
}
t=
dl=
while IFS= read -r l; do
  case $l in
    quit) untime; exit 0 ;;
    D*) dl=\${l#D}; case $dl in *[!0-9]*) dl= ;; esac; arm; continue ;;
    P*) r=\${l#P}; id=\${r%% *}; case $id in ''|*[!0-9]*) continue ;; esac
      case $r in *' '/*) eval "p_$id=\\\${r#* }"; arm ;; esac; continue ;;
    x*) id=\${l#x}; case $id in ''|*[!0-9]*) continue ;; esac; unset "p_$id"; continue ;;
    F*) r=\${l#F}; id=\${r%% *}; cg=; case $r in *' '*) cg=\${r#* } ;; esac ;;
    [+-]*) id=\${l#?} ;;
    *) continue ;;
  esac
  case $id in ''|0*|1|*[!0-9]*) continue ;; esac
  case $l in
    +*) eval "g_$id=1" ;;
    F*) eval "g_$id=1 f_$id=1"; [ -n "$cg" ] && eval "c_$id=\\$cg"; arm ;;
    *) eval "w=\\\${f_$id-}"; unset "g_$id" "f_$id" "c_$id"; [ -n "$w" ] && arm ;;
  esac
done
untime
if [ -n "$1" ]; then
  if [ -e "$1/cgroup.kill" ]; then
    echo 1 > "$1/cgroup.kill"
  else
    echo 1 > "$1/cgroup.freeze"
    for c in "$1" "$1"/*/; do
      [ -f "$c/cgroup.procs" ] && while read -r p; do kill -s KILL "$p"; done < "$c/cgroup.procs"
    done
    echo 0 > "$1/cgroup.freeze"
  fi
fi 2>/dev/null
set | while IFS= read -r v; do
  case $v in g_[0-9]*=*) v=\${v#g_}; kill -s KILL -- "-\${v%%=*}" 2>/dev/null ;; esac
done
# Remove the vassals' cgroups and the parents; one still emptying refuses rmdir for a moment.
i=0
while [ $# -gt 0 ] && [ $i -lt 100 ]; do
  left=
  for p in "$@"; do
    [ -n "$p" ] && [ -d "$p" ] || continue
    for c in "$p"/*/; do [ -d "$c" ] && { rmdir "$c" || left=1; }; done
    rmdir "$p" || left=1
  done 2>/dev/null
  [ -z "$left" ] && break
  sleep 0.05
  i=$((i + 1))
done
exit 0
`;

/** close() waits this long for the guardian to acknowledge quit by exiting. */
const CLOSE_WAIT_MS = 2000;

interface Running {
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  readonly exited: Promise<void>;
  ref(): void;
  kill(signal: NodeJS.Signals): boolean;
}

const noop = (): void => undefined;

const fencedLine = (pgid: number, cgroup: string | null): string => (cgroup ? `F${pgid} ${cgroup}` : `F${pgid}`);

/** A cgroup path the script cannot misread (no newline, quote or space); others are left out. */
const safeCgroup = (cgroup: string | null): string | null => (cgroup !== null && /^\/[A-Za-z0-9_.@/+:-]*$/.test(cgroup) ? cgroup : null);

function launch(cgroupDirs: readonly string[]): Running {
  let child: ChildProcess;
  try {
    // Own process group: Ctrl-C or a signal to the emperor's group must not reach it. Nothing
    // kills it when the emperor exits: that is exactly when it has work to do.
    child = spawn('/bin/sh', ['-c', SCRIPT, 'emperor-guardian', ...cgroupDirs], { detached: true, stdio: ['pipe', 'ignore', 'ignore'], env: {} });
  } catch {
    return { pid: undefined, stdin: null, exited: Promise.resolve(), ref: noop, kill: () => false };
  }
  // None of these may reach the emperor: a missing /bin/sh, no fds left or a dead guardian
  // (EPIPE) only cost the extra protection; the next vassal start launches a new one.
  child.on('error', noop);
  child.stdin?.on('error', noop);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  // Neither the process nor the pipe may keep the emperor's event loop alive.
  child.unref();
  if (child.stdin instanceof net.Socket) child.stdin.unref();
  return { pid: child.pid, stdin: child.pid === undefined ? null : child.stdin, exited, ref: () => child.ref(), kill: (sig) => child.kill(sig) };
}

export class Guardian {
  private running: Running | undefined;
  private started = false;
  private readonly groups = new Set<number>();
  /** Fleet instances' groups (and cgroups): killed at the fence deadline too. */
  private readonly fenced = new Map<number, string | null>();
  /** Fleet starts announced before their spawn: cgroup dir → the token of its P line. */
  private readonly expected = new Map<string, number>();
  private nextToken = 1;
  /** The fence deadline line last sent ("D<cs>", or "D" for none), replayed to a new guardian. */
  private deadlineLine = 'D';
  private cgroupDirs: readonly string[] = [];
  /** Lines for the guardian not written yet (see send). */
  private queued = '';

  /** Pid of the guardian shell, while it runs. */
  get pid(): number | undefined {
    return this.running?.pid;
  }

  /** cgroupDirs: Containment.guardianDirs() in cgroup mode (the v2 parent first). */
  start(cgroupDirs?: readonly string[]): void {
    this.started = true;
    if (cgroupDirs) this.cgroupDirs = cgroupDirs;
    if (this.running) return;
    const running = launch(this.cgroupDirs);
    this.running = running;
    void running.exited.then(() => {
      if (this.running === running) this.running = undefined;
    });
    // After a restart the new guardian must know every group the old one did.
    for (const pgid of this.groups) this.send(this.fenced.has(pgid) ? fencedLine(pgid, this.fenced.get(pgid) ?? null) : `+${pgid}`);
    for (const [cgroup, token] of this.expected) this.send(`P${token} ${cgroup}`);
    this.send(this.deadlineLine);
  }

  /**
   * A fleet instance's group (and cgroup, which catches processes that left the group): killed
   * like any other when the emperor dies, and also at the fence deadline.
   */
  addFenced(pgid: number, cgroup: string | null): void {
    if (!Number.isInteger(pgid) || pgid < 2) return;
    // A path the script could misread (a newline, a quote) is left to the process-group kill.
    const cg = safeCgroup(cgroup);
    this.groups.add(pgid);
    this.fenced.set(pgid, cg);
    this.deliver(fencedLine(pgid, cg));
    if (cgroup !== null) this.unexpectFenced(cgroup);
    // Not batched: until the guardian has this line, a freeze of the emperor would leave the
    // instance running past the lease (only the announced cgroup, if any, covers it).
    this.writeQueued();
  }

  /**
   * A fleet instance is about to start in `cgroup`: the guardian kills that cgroup at the fence
   * deadline from now on, so the instance is fenced from its first instruction even if this
   * process is frozen (SIGSTOP, a long pause) between the spawn and addFenced. Written at once.
   */
  expectFenced(cgroup: string): void {
    const cg = safeCgroup(cgroup);
    if (cg === null || this.expected.has(cg)) return;
    const token = this.nextToken++;
    this.expected.set(cg, token);
    this.deliver(`P${token} ${cg}`);
    this.writeQueued();
  }

  /** The announced start happened (addFenced) or failed: forget the announcement. */
  unexpectFenced(cgroup: string): void {
    const token = this.expected.get(cgroup);
    if (token === undefined) return;
    this.expected.delete(cgroup);
    this.send(`x${token}`);
  }

  /**
   * Fleet instances must be dead by `uptimeCs` (centiseconds of /proc/uptime, the kernel's
   * CLOCK_BOOTTIME, which the guardian can read without forking); undefined: no deadline.
   */
  setFenceDeadline(uptimeCs: number | undefined): void {
    this.deadlineLine = uptimeCs === undefined ? 'D' : `D${Math.max(0, Math.floor(uptimeCs))}`;
    this.send(this.deadlineLine);
  }

  add(pgid: number): void {
    if (!Number.isInteger(pgid) || pgid < 2) return;
    this.groups.add(pgid);
    this.deliver(`+${pgid}`);
  }

  remove(pgid: number): void {
    this.fenced.delete(pgid);
    if (!this.groups.delete(pgid)) return;
    this.send(`-${pgid}`);
  }

  /** Clean shutdown: the guardian exits without killing anything. */
  async close(): Promise<void> {
    this.started = false;
    const running = this.running;
    if (!running) return;
    // Keep the loop alive until it is really gone, or `await close()` could be cut short.
    running.ref();
    this.send('quit');
    this.writeQueued();
    running.stdin?.end();
    const timer = setTimeout(() => running.kill('SIGKILL'), CLOSE_WAIT_MS);
    try {
      await running.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A line about state the emperor just recorded: a guardian that died is replaced here, at the
   * next vassal start, and a new one is sent the whole state (start() replays it), this line included.
   */
  private deliver(line: string): void {
    if (this.started && !this.running) this.start();
    else this.send(line);
  }

  /**
   * Lines sent in one turn of the event loop go to the guardian in one write: each write wakes
   * the shell, and a burst of 200 starts spent 15-150 ms of the main thread on them (profiled,
   * issue 13). A line still queued when the emperor dies is lost, the same window as the pid
   * record written after the spawn: the cgroup, or the leader's parent-death signal in
   * process-group mode, covers it.
   */
  private send(line: string): void {
    const stdin = this.running?.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) return;
    if (this.queued === '') setImmediate(() => this.writeQueued());
    this.queued += `${line}\n`;
  }

  private writeQueued(): void {
    const text = this.queued;
    this.queued = '';
    const stdin = this.running?.stdin;
    if (text === '' || !stdin || stdin.destroyed || stdin.writableEnded) return;
    stdin.write(text);
  }
}
