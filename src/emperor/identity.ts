import fs from 'node:fs/promises';
import path from 'node:path';
import type { FileFacts } from '../config/read.js';
import type { VassalSpec } from '../config/spec.js';
import type { Identity } from '../process/identity.js';
import { LookupFailedError, lookupGroup, lookupUser } from './accounts.js';

export interface IdentityPolicy {
  /** The emperor runs as root, so it can switch users at all. */
  readonly isRoot: boolean;
  /** uWSGI's tyrant mode: every vassal runs as the owner of its file. */
  readonly tyrant: boolean;
  /** In tyrant mode, accept root-owned vassal files (which then run as root, or as user:/group:). */
  readonly tyrantAllowRoot: boolean;
}

/** transient: the account database did not answer; not a verdict on the file, so it is read again. */
export type IdentityVerdict = { ok: true; identity: Identity | undefined } | { ok: false; problem: string; transient?: true };

const refuse = (problem: string): IdentityVerdict => ({ ok: false, problem });

/** `look` with a LookupFailedError turned into a transient refusal naming the field. */
async function lookingUp<T>(field: string, look: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; problem: string; transient: true }> {
  try {
    return { ok: true, value: await look() };
  } catch (err) {
    if (!(err instanceof LookupFailedError)) throw err;
    return { ok: false, problem: `${field}: ${err.message}; it is looked up again at the next rescan`, transient: true };
  }
}

/** user:/group: of a file → uid/gid (group defaults to the user's primary group). */
async function fromFields(spec: VassalSpec): Promise<IdentityVerdict> {
  if (spec.user === null && spec.group === null) return { ok: true, identity: undefined };
  const wanted = spec.user;
  const found = wanted === null ? undefined : await lookingUp('user', () => lookupUser(wanted));
  if (found && !found.ok) return found;
  const user = found?.value;
  if (spec.user !== null && !user) return refuse(`user: no such user "${spec.user}"`);
  let gid = user?.gid ?? 0;
  if (spec.group !== null) {
    const name = spec.group;
    const group = await lookingUp('group', () => lookupGroup(name));
    if (!group.ok) return group;
    if (!group.value) return refuse(`group: no such group "${spec.group}"`);
    gid = group.value.gid;
  }
  return { ok: true, identity: { uid: user?.uid ?? 0, gid, user: user?.name ?? 'root', home: user?.home ?? null } };
}

const worldWritable = (mode: number): string => `tyrant mode refuses world-writable files (mode ${mode.toString(8)}); chmod o-w it`;

const ROOT_REFUSED = 'owned by root; tyrant mode runs vassals as their file owner and refuses root-owned files unless --tyrant-allow-root';

/**
 * Tyrant mode's refusals that need only the descriptor's fstat (and the directory), decided
 * before any content is parsed, so that no error about a distrusted file can quote it: files
 * anyone could have written (world-writable, or in a world-writable directory without the sticky
 * bit) would let any local user run code as the file's owner; root's files need
 * --tyrant-allow-root. Undefined = go ahead.
 */
export async function distrustOf(file: string, facts: FileFacts, policy: IdentityPolicy): Promise<string | undefined> {
  if (!policy.isRoot || !policy.tyrant) return undefined;
  if (facts.mode & 0o002) return worldWritable(facts.mode);
  const dir = await fs.stat(path.dirname(file)).catch(() => undefined);
  if (dir && dir.mode & 0o002 && !(dir.mode & 0o1000)) {
    return `tyrant mode refuses files in a world-writable directory without the sticky bit (${path.dirname(file)}); chmod o-w or +t it`;
  }
  if (facts.uid === 0 && !policy.tyrantAllowRoot) return ROOT_REFUSED;
  return undefined;
}

/**
 * Who a vassal runs as. Without root nobody can be switched to, so user:/group: are refused
 * rather than silently ignored. In tyrant mode the owner of the descriptor the spec was read
 * from decides (`facts`, never a later look at the path: that may be another file by now).
 */
export async function resolveIdentity(spec: VassalSpec, policy: IdentityPolicy, facts: FileFacts | undefined): Promise<IdentityVerdict> {
  if (!policy.isRoot) {
    if (spec.user !== null || spec.group !== null) {
      return refuse(`${spec.user !== null ? 'user' : 'group'}: only an emperor running as root can switch users; remove it, or run the emperor as root`);
    }
    return { ok: true, identity: undefined };
  }
  if (!policy.tyrant) return fromFields(spec);
  if (!facts) return refuse('tyrant mode: the owner of the file is unknown');
  if (facts.mode & 0o002) return refuse(worldWritable(facts.mode));
  if (facts.uid === 0) {
    if (!policy.tyrantAllowRoot) return refuse(ROOT_REFUSED);
    // root's own files may name whom to run as, as in plain root mode.
    return fromFields(spec);
  }
  if (spec.user !== null || spec.group !== null) {
    return refuse('tyrant mode runs a vassal as its file owner; only root-owned files may set user/group');
  }
  // The owner's name gives its supplementary groups and HOME: not known is not "has none".
  const owner = await lookingUp(`owner (uid ${facts.uid})`, () => lookupUser(facts.uid));
  if (!owner.ok) return owner;
  return { ok: true, identity: { uid: facts.uid, gid: facts.gid, user: owner.value?.name ?? null, home: owner.value?.home ?? null } };
}
