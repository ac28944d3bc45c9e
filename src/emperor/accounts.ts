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

/** getent asks NSS, so LDAP/sssd users resolve too, not only /etc/passwd. */
function getent(db: 'passwd' | 'group', key: string): Promise<string[] | undefined> {
  return new Promise((resolve) => {
    execFile('getent', [db, key], { timeout: 5000 }, (err, stdout) => {
      if (err) return resolve(undefined); // exit 2: not found
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
