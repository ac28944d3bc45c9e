// One consistent read of everything under <root>/fleet/ (a single range request: one revision),
// turned into checked records. Shared by the node (which decides from it) and by
// `emperor fleet status` (which shows it). Nothing read here is trusted: records are bounded,
// typed field by field, and a key or value that does not fit is reported, never used.
import type { Etcd3 } from 'etcd3';
import { prefixRange } from '../registries/etcd/keys.js';
import { fleetPrefix, nodeNameProblem, parseFleetKey } from './keys.js';

/** Larger values are not parsed as records (a node record or a claim is a few hundred bytes). */
const MAX_RECORD_BYTES = 4096;

export interface NodeRecord {
  readonly name: string;
  readonly host: string;
  readonly pid: number;
  /** ms since the epoch. */
  readonly started: number;
  /** Vassals this node supervises (local files and fleet instances). */
  readonly vassals: number;
  /** Fleet instances it runs. */
  readonly instances: number;
  /** 1-minute load average. */
  readonly load: number;
}

export const INSTANCE_STATES = ['claimed', 'stopped', 'starting', 'running', 'backoff', 'stopping', 'exited', 'fatal'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

export interface ClaimRecord {
  readonly node: string;
  readonly state: InstanceState;
  readonly pid: number | null;
  readonly health: 'passing' | 'warning' | 'critical' | null;
}

export interface FleetSnapshot {
  readonly revision: string;
  /** Raw documents by fleet vassal name, with the revision each was last written at. */
  readonly specs: Map<string, { readonly raw: Buffer; readonly modRevision: string }>;
  /** Live nodes (their records exist only while their lease does). */
  readonly nodes: Map<string, { readonly lease: string; readonly record: NodeRecord | undefined }>;
  /** By fleet vassal name, then slot. */
  readonly claims: Map<string, Map<string, { readonly lease: string; readonly record: ClaimRecord | undefined }>>;
  /** Keys under the fleet prefix that mean nothing (hand-made): key and why. */
  readonly bad: Array<{ readonly key: string; readonly reason: string }>;
}

function json(raw: Buffer): Record<string, unknown> | undefined {
  if (raw.length > MAX_RECORD_BYTES) return undefined;
  try {
    const v: unknown = JSON.parse(raw.toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
// eslint-disable-next-line no-control-regex
const text = (v: unknown): string | undefined => (typeof v === 'string' && v.length <= 255 && !/[\u0000-\u001f\u007f]/.test(v) ? v : undefined);

export function parseNodeRecord(raw: Buffer, name: string): NodeRecord | undefined {
  const o = json(raw);
  if (!o || o.name !== name) return undefined;
  return {
    name,
    host: text(o.host) ?? '?',
    pid: num(o.pid) ?? 0,
    started: num(o.started) ?? 0,
    vassals: num(o.vassals) ?? 0,
    instances: num(o.instances) ?? 0,
    load: num(o.load) ?? 0,
  };
}

export function parseClaimRecord(raw: Buffer): ClaimRecord | undefined {
  const o = json(raw);
  if (!o || typeof o.node !== 'string' || nodeNameProblem(o.node) !== undefined) return undefined;
  const state = (INSTANCE_STATES as readonly string[]).includes(o.state as string) ? (o.state as InstanceState) : 'claimed';
  const pid = num(o.pid);
  const health = o.health === 'passing' || o.health === 'warning' || o.health === 'critical' ? o.health : null;
  return { node: o.node, state, pid: pid !== undefined && Number.isInteger(pid) && pid > 0 ? pid : null, health };
}

export async function readFleet(client: Etcd3, root: string): Promise<FleetSnapshot> {
  const res = await client.kv.range(prefixRange(fleetPrefix(root)));
  const snap: FleetSnapshot = { revision: String(res.header.revision), specs: new Map(), nodes: new Map(), claims: new Map(), bad: [] };
  for (const kv of res.kvs) {
    const key = kv.key.toString('utf8');
    const parsed = parseFleetKey(root, key);
    switch (parsed.kind) {
      case 'spec':
        snap.specs.set(parsed.name, { raw: kv.value, modRevision: String(kv.mod_revision) });
        break;
      case 'node':
        snap.nodes.set(parsed.node, { lease: String(kv.lease), record: parseNodeRecord(kv.value, parsed.node) });
        break;
      case 'claim': {
        let slots = snap.claims.get(parsed.name);
        if (!slots) snap.claims.set(parsed.name, (slots = new Map<string, { lease: string; record: ClaimRecord | undefined }>()));
        slots.set(parsed.slot, { lease: String(kv.lease), record: parseClaimRecord(kv.value) });
        break;
      }
      case 'bad':
        snap.bad.push({ key, reason: parsed.reason });
        break;
    }
  }
  return snap;
}
