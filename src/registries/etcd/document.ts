// What a put writes for one registration: the plain location (empusa's value) and the JSON
// instance document, both serialised deterministically so a fingerprint of what we would write
// can be compared with a fingerprint of what etcd holds.
import { createHash } from 'node:crypto';
import os from 'node:os';
import type { Registration } from '../../registrar/types.js';

export interface Written {
  /** The location key's value, or null when the location key must be absent (critical). */
  readonly location: string | null;
  /** The instance document, exactly as stored. */
  readonly doc: string;
  readonly fingerprint: string;
}

export interface EmperorIdentity {
  readonly pid: number;
  readonly host: string;
}

export function currentEmperor(): EmperorIdentity {
  return { pid: process.pid, host: os.hostname() };
}

/**
 * The instance document with a fixed key order (object literal order is JSON order) and meta
 * sorted by key, so equal registrations always give byte-identical documents. No timestamps.
 */
export function instanceDocument(reg: Registration, emperor: EmperorIdentity): string {
  const meta: Record<string, string> = {};
  for (const k of Object.keys(reg.meta).sort()) meta[k] = reg.meta[k]!;
  return JSON.stringify({
    id: reg.id,
    vassal: reg.vassal,
    location: reg.location,
    address: reg.address,
    port: reg.port,
    host: emperor.host,
    emperor: { pid: emperor.pid, host: emperor.host },
    pid: reg.pid,
    tags: [...reg.tags],
    meta,
    health: reg.health,
    checks: reg.checks.map((c) => ({ name: c.name, status: c.status, output: c.output })),
  });
}

/**
 * Digest of the location key's state and the document. `location` is what the location key
 * holds as far as this emperor is concerned: a value, "absent", or a value on someone else's
 * lease (which never matches what we would write).
 */
export function fingerprintOf(location: { kind: 'ours'; value: string } | { kind: 'absent' } | { kind: 'foreign'; value: string }, doc: string): string {
  const loc = location.kind === 'absent' ? 'absent' : `${location.kind}:${location.value}`;
  return createHash('sha256').update(loc).update('\n').update(doc).digest('base64url');
}

/** True when the location key is dropped: etcd consumers must not be sent to a critical instance. */
export function locationDropped(reg: Registration): boolean {
  return reg.deregisterWhenCritical && reg.health === 'critical';
}

/** Memoised per Registration object (they are immutable), since the registrar asks often. */
export class DocumentCache {
  private readonly cache = new WeakMap<Registration, Written>();
  constructor(private readonly emperor: EmperorIdentity) {}

  get(reg: Registration): Written {
    let w = this.cache.get(reg);
    if (!w) {
      const location = locationDropped(reg) ? null : reg.location;
      const doc = instanceDocument(reg, this.emperor);
      w = { location, doc, fingerprint: fingerprintOf(location === null ? { kind: 'absent' } : { kind: 'ours', value: location }, doc) };
      this.cache.set(reg, w);
    }
    return w;
  }
}
