// Throwaway users and groups for the tests that play a hostile (or just another) local user.
// Each name carries this process's pid, so concurrent test files and runs never share an account
// or delete one another's; a leftover of an earlier run with the same pid is removed first.
import { execFileSync } from 'node:child_process';

export interface Account {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

/** `prefix` plus this process's pid, within the 32 characters useradd allows. */
export function throwawayName(prefix: string): string {
  return `${prefix}${process.pid.toString(36)}`.slice(0, 31);
}

export function accountExists(db: 'passwd' | 'group', key: string): boolean {
  try {
    execFileSync('getent', [db, key], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * A new user. `home` creates that home directory (removed again by removeUser); without it the
 * user has none. `groups` are supplementary groups that must exist.
 */
export function throwawayUser(name: string, opts: { groups?: readonly string[]; home?: string; shell?: string } = {}): Account {
  if (accountExists('passwd', name)) removeUser(name);
  const home = opts.home ? ['--create-home', '--home-dir', opts.home] : ['--no-create-home', '--home-dir', '/nonexistent'];
  const groups = opts.groups?.length ? ['--groups', opts.groups.join(',')] : [];
  execFileSync('useradd', [...home, '--shell', opts.shell ?? '/bin/sh', ...groups, name]);
  const pw = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
  return { name, uid: Number(pw[2]), gid: Number(pw[3]), home: pw[5]! };
}

/** A new group; its gid. */
export function throwawayGroup(name: string): number {
  if (!accountExists('group', name)) execFileSync('groupadd', [name]);
  return Number(execFileSync('getent', ['group', name], { encoding: 'utf8' }).split(':')[2]);
}

/**
 * Best effort: a failed test may leave a process of the user's that is still exiting, and a
 * cleanup that throws would hide the test's own failure. --force removes the user anyway.
 */
export function removeUser(name: string): void {
  quietly('userdel', ['--force', '--remove', name]);
}

export function removeGroup(name: string): void {
  quietly('groupdel', [name]);
}

function quietly(command: string, args: string[]): void {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
  } catch {
    // already gone
  }
}
