import { execFile } from 'node:child_process';

export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
}

/**
 * The account database gave no answer (getent could not be run: out of processes or
 * descriptors, not installed; or it hung and was killed). Says nothing about the account, so it
 * must never read as "no such user": that would leave a valid file refused until it changes.
 */
export class LookupFailedError extends Error {
  override readonly name = 'LookupFailedError';
}

/** getent asks NSS, so LDAP/sssd users resolve too, not only /etc/passwd. */
function getent(db: 'passwd' | 'group', key: string): Promise<string[] | undefined> {
  return new Promise((resolve, reject) => {
    execFile('getent', [db, key], { timeout: 5000 }, (err, stdout) => {
      if (err) {
        // Exit 2 is getent's "not found"; a spawn error has a string code, a kill none.
        if (err.code === 2) return resolve(undefined);
        const why = typeof err.code === 'string' ? err.code : err.signal ? `killed by ${err.signal} after 5 s` : `exit status ${String(err.code)}`;
        return reject(new LookupFailedError(`the account database did not answer (getent ${db}: ${why})`));
      }
      const line = stdout.split('\n')[0];
      resolve(line ? line.split(':') : undefined);
    });
  });
}

export async function lookupUser(nameOrId: string | number): Promise<PasswdEntry | undefined> {
  const f = await getent('passwd', String(nameOrId));
  if (!f || f.length < 7) return undefined;
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
}

export async function lookupGroup(nameOrId: string | number): Promise<GroupEntry | undefined> {
  const f = await getent('group', String(nameOrId));
  if (!f || f.length < 3) return undefined;
  return { name: f[0]!, gid: Number(f[2]) };
}
