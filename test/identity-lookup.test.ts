// Who a vassal runs as comes from the account database (getent, so NSS: LDAP, sssd). When that
// database cannot be asked at all (getent cannot be started: no PATH to it here, as out of
// processes or descriptors would do), the answer is "try again", never "no such user": that
// would refuse a valid file until somebody touches it.
import assert from 'node:assert/strict';
import { describe, it } from './support/test.js';
import { parseVassal } from '../src/config/load.js';
import type { VassalSpec } from '../src/config/spec.js';
import { resolveIdentity, type IdentityPolicy } from '../src/emperor/identity.js';

const ROOT: IdentityPolicy = { isRoot: true, tyrant: false, tyrantAllowRoot: false };
const TYRANT: IdentityPolicy = { isRoot: true, tyrant: true, tyrantAllowRoot: false };

function spec(text: string): VassalSpec {
  const r = parseVassal(text, '/x/web.yaml');
  assert.ok(r.ok, r.ok ? '' : r.error.message);
  return r.spec;
}

/** Runs `fn` with a PATH on which no getent can be found; the real one is put back after. */
async function withoutGetent<T>(fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent-emperor-test';
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
  }
}

const facts = (uid: number) => ({ ino: 1, size: 10, mtimeMs: 0, ctimeMs: 0, uid, gid: uid, mode: 0o644 });

describe('account lookups that get no answer', () => {
  it('user: and group: are "not answered, try again", naming the field, not "no such user"', async () => {
    const user = await withoutGetent(() => resolveIdentity(spec('command: [sleep, "1"]\nuser: root\n'), ROOT, undefined));
    assert.deepEqual(user, {
      ok: false,
      problem: 'user: the account database did not answer (getent passwd: ENOENT); it is looked up again at the next rescan',
      transient: true,
    });
    const group = await withoutGetent(() => resolveIdentity(spec('command: [sleep, "1"]\ngroup: root\n'), ROOT, undefined));
    assert.equal(group.ok, false);
    assert.match(group.ok ? '' : group.problem, /^group: the account database did not answer \(getent group: ENOENT\)/);
  });

  it("tyrant mode: an owner whose name cannot be looked up is not run without its groups and HOME", async () => {
    const iv = await withoutGetent(() => resolveIdentity(spec('command: [sleep, "1"]\n'), TYRANT, facts(65534)));
    assert.deepEqual(iv, {
      ok: false,
      problem: 'owner (uid 65534): the account database did not answer (getent passwd: ENOENT); it is looked up again at the next rescan',
      transient: true,
    });
  });

  it('with getent, an unknown user is still a refusal of the file, and a known one resolves', async () => {
    assert.deepEqual(await resolveIdentity(spec('command: [sleep, "1"]\nuser: no-such-user-emperor-test\n'), ROOT, undefined), {
      ok: false,
      problem: 'user: no such user "no-such-user-emperor-test"',
    });
    const root = await resolveIdentity(spec('command: [sleep, "1"]\nuser: root\n'), ROOT, undefined);
    assert.deepEqual(root, { ok: true, identity: { uid: 0, gid: 0, user: 'root', home: '/root' } });
  });
});
