// The state directory is the emperor's authority (control socket, lock, pid records), so it is
// checked as sshd's StrictModes and tmux check theirs, instead of being trusted as found: it
// must belong to the emperor's user and be writable by nobody else, and no parent directory may
// let another user swap it for one of theirs (owned by root or the emperor's user, and not
// writable by group or others unless sticky, as /tmp is).
import fs from 'node:fs/promises';
import path from 'node:path';

export class UntrustedDirError extends Error {
  override readonly name = 'UntrustedDirError';
}

export const octal = (mode: number): string => `0${(mode & 0o7777).toString(8)}`;

/** Who besides the owner may write to a file of this mode, or undefined when nobody. */
export function writers(mode: number): string | undefined {
  const group = (mode & 0o020) !== 0;
  const others = (mode & 0o002) !== 0;
  if (group && others) return 'group and others';
  if (group) return 'its group';
  if (others) return 'others';
  return undefined;
}

/** Owner and mode of `dir` itself (a directory, not a symbolic link). */
async function checkOwn(dir: string, what: string, euid: number): Promise<void> {
  const st = await fs.lstat(dir);
  if (st.isSymbolicLink() || !st.isDirectory()) throw new UntrustedDirError(`${what} ${dir} is not a directory: expected a directory owned by uid ${euid}`);
  if (st.uid !== euid) {
    throw new UntrustedDirError(
      `${what} ${dir} is owned by uid ${st.uid}, not by the user the emperor runs as (uid ${euid}): that user could plant pid records or a fake control socket there; ` +
        `chown it to uid ${euid} (or remove it and let the emperor create it), or choose another --state-dir`,
    );
  }
  const w = writers(st.mode);
  if (w !== undefined) {
    throw new UntrustedDirError(
      `${what} ${dir} is writable by ${w} (mode ${octal(st.mode)}): they could plant pid records or replace the control socket; expected mode 0700: chmod 700 ${dir}`,
    );
  }
}

/** Every parent up to "/": owned by root or us, and not writable by others unless sticky. */
async function checkParents(dir: string, what: string, euid: number, missingOk = false): Promise<void> {
  for (let p = path.dirname(dir); ; p = path.dirname(p)) {
    const st = await fs.stat(p).catch((err: NodeJS.ErrnoException) => {
      if (missingOk && err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (st === undefined) continue;
    if (st.uid !== 0 && st.uid !== euid) {
      throw new UntrustedDirError(
        `${p}, a parent of the ${what} ${dir}, is owned by uid ${st.uid}: that user could replace the ${what}; expected every parent owned by root or uid ${euid} (choose another --state-dir)`,
      );
    }
    const w = writers(st.mode);
    if (w !== undefined && (st.mode & 0o1000) === 0) {
      throw new UntrustedDirError(
        `${p}, a parent of the ${what} ${dir}, is writable by ${w} without the sticky bit (mode ${octal(st.mode)}): they could replace the ${what}; ` +
          `chmod go-w (or +t) ${p}, or choose another --state-dir`,
      );
    }
    if (p === path.dirname(p)) return;
  }
}

/**
 * Create `dir` (mode 0700) if missing, resolve symbolic links once, and refuse it unless it and
 * its parents are safe. Returns the real path, which is used from then on, so a link changed
 * later cannot redirect the emperor.
 */
export async function trustedDir(dir: string, what: string, euid = process.geteuid?.() ?? 0): Promise<string> {
  // Nothing is created inside a directory that would be refused anyway.
  await checkParents(dir, what, euid, true);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const real = await fs.realpath(dir);
  await checkOwn(real, what, euid);
  await checkParents(real, what, euid);
  return real;
}

/** A directory inside a trusted one (e.g. pids/): created 0700, then checked like its parent. */
export async function trustedSubdir(dir: string, what: string, euid = process.geteuid?.() ?? 0): Promise<void> {
  try {
    await fs.mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await checkOwn(dir, what, euid);
}
