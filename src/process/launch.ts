// Checks done before spawning, so a typo in a vassal file gives a clear error instead of an
// ENOENT from deep inside the spawn, and the setpriv lookup for the parent-death signal.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

/** What execvp and libuv fall back to when the environment has no PATH. */
const DEFAULT_PATH = '/usr/bin:/bin';

function isExecutableFile(file: string): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where execvp would find cmd: relative to cwd when it has a '/', else along PATH. */
export function findExecutable(cmd: string, cwd: string, pathVar: string | undefined): string | undefined {
  if (cmd.includes('/')) {
    const file = path.resolve(cwd, cmd);
    return isExecutableFile(file) ? file : undefined;
  }
  for (const dir of (pathVar ?? DEFAULT_PATH).split(':')) {
    // An empty PATH entry means the current directory, which for the child is cwd.
    const file = path.resolve(cwd, dir, cmd);
    if (isExecutableFile(file)) return file;
  }
  return undefined;
}

/** Where argv[0] is, as execvp would find it, or why argv cannot be started in cwd. */
export function resolveLaunch(argv: readonly string[], cwd: string, env: Readonly<Record<string, string>>): { file: string } | { problem: string } {
  const cmd = argv[0];
  if (cmd === undefined || cmd === '') return { problem: 'empty command line' };
  let isDir = false;
  try {
    isDir = fs.statSync(cwd).isDirectory();
  } catch {
    return { problem: `working directory does not exist: ${cwd}` };
  }
  if (!isDir) return { problem: `working directory is not a directory: ${cwd}` };
  const found = findExecutable(cmd, cwd, env.PATH);
  if (found !== undefined) return { file: found };
  if (!cmd.includes('/')) return { problem: `command not found: ${cmd} (searched PATH)` };
  const file = path.resolve(cwd, cmd);
  return { problem: fs.existsSync(file) ? `not an executable file: ${file}` : `command not found: ${file}` };
}

/** Why argv cannot be started in cwd, or undefined when it can. */
export function launchProblem(argv: readonly string[], cwd: string, env: Readonly<Record<string, string>>): string | undefined {
  const r = resolveLaunch(argv, cwd, env);
  return 'problem' in r ? r.problem : undefined;
}

let setpriv: { path: string | undefined } | undefined;

/**
 * The util-linux setpriv used to give each vassal a parent-death signal, or undefined.
 * Looked up once, on first use, in the emperor's own PATH. BusyBox ships a setpriv without
 * --pdeathsig, and using it would make every start fail, so the option is checked too.
 */
export function setprivPath(): string | undefined {
  if (setpriv === undefined) {
    const found = findExecutable('setpriv', '/', process.env.PATH);
    setpriv = { path: found !== undefined && supportsPdeathsig(found) ? found : undefined };
  }
  return setpriv.path;
}

function supportsPdeathsig(file: string): boolean {
  const res = spawnSync(file, ['--help'], { timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  return `${res.stdout ?? ''}${res.stderr ?? ''}`.includes('--pdeathsig');
}

// The launch wrapper: /bin/sh (dash: a millisecond) that sets RLIMIT_NOFILE and writes its own
// pid into the vassal's cgroup.procs files, then execs the app (through setpriv when used).
// Joining before exec leaves no window in which the app could fork a process outside its
// cgroup; Node cannot spawn into a cgroup (no clone3 CLONE_INTO_CGROUP). Paths and the limit
// travel as arguments, never in the environment the app sees. Exit 125 with a message on
// stderr (the vassal's log) when either step fails: the app never runs unconfined.
const WRAPPER = `n=$1; shift
if [ "$n" != - ]; then ulimit -n "$n" || { echo "emperor: cannot set open_files to $n" >&2; exit 125; }; fi
while [ $# -gt 0 ]; do
  f=$1; shift
  [ "$f" = -- ] && break
  echo $$ > "$f" || { echo "emperor: cannot move into cgroup: $f" >&2; exit 125; }
done
exec "$@"`;

/** argv that runs `argv` after joining `procsFiles` and setting open files; unchanged when neither. */
export function wrapLaunch(argv: readonly string[], procsFiles: readonly string[], openFiles: number | undefined): string[] {
  if (procsFiles.length === 0 && openFiles === undefined) return [...argv];
  return ['/bin/sh', '-c', WRAPPER, 'emperor-launch', openFiles === undefined ? '-' : String(openFiles), ...procsFiles, '--', ...argv];
}
