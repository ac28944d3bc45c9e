// A fleet as people look at it: live nodes, and where each fleet vassal's instances run. Built
// from one consistent read (readFleet); shared by `emperor fleet status` and the dashboard.
import type { VassalSpec } from '../config/spec.js';
import type { FleetSnapshot } from './snapshot.js';

export function describePlacement(spec: VassalSpec): string {
  const p = spec.placement;
  if (!p) return 'none';
  if (p.kind === 'replicas') return `replicas: ${p.replicas}`;
  if (p.kind === 'nodes') return `nodes: [${p.nodes.join(', ')}]`;
  return 'all: true';
}

export interface FleetStatusJson {
  root: string;
  revision: string;
  nodes: Array<{ name: string; host: string; pid: number; alive: boolean; vassals: number; instances: number; load: number; started: number }>;
  vassals: Array<{
    name: string;
    placement: string | null;
    error: string | null;
    instances: Array<{ node: string; slot: string; state: string; pid: number | null; health: string | null }>;
    /** Instances the placement asks for that nobody runs yet. */
    pending: number;
  }>;
  /** Keys under the fleet prefix that are not fleet keys. */
  invalidKeys: Array<{ key: string; reason: string }>;
}

/** A fleet document's verdict, as the node's parse (or the CLI's) gives it. */
export type SpecVerdict = { readonly ok: true; readonly spec: VassalSpec } | { readonly ok: false; readonly error: { readonly message: string } };

/**
 * What `emperor fleet status` shows and the dashboard's fleet view: every live node, and each
 * fleet vassal with the node, state, pid and health of each instance (from its claim).
 * `verdictOf` judges a document (undefined: not judged, shown without placement).
 */
export function fleetStatus(snap: FleetSnapshot, root: string, verdictOf: (name: string, raw: Buffer) => SpecVerdict | undefined): FleetStatusJson {
  const nodes: FleetStatusJson['nodes'] = [...snap.nodes].map(([name, n]) => ({
    name,
    host: n.record?.host ?? '?',
    pid: n.record?.pid ?? 0,
    alive: true,
    vassals: n.record?.vassals ?? 0,
    instances: n.record?.instances ?? 0,
    load: n.record?.load ?? 0,
    started: n.record?.started ?? 0,
  }));
  const vassals: FleetStatusJson['vassals'] = [];
  const names = new Set([...snap.specs.keys(), ...snap.claims.keys()]);
  for (const name of [...names].sort()) {
    const doc = snap.specs.get(name);
    const verdict = doc ? verdictOf(name, doc.raw) : undefined;
    const instances = [...(snap.claims.get(name) ?? new Map<string, never>())].map(([slot, c]) => ({
      slot,
      node: c.record?.node ?? '?',
      state: c.record?.state ?? 'claimed',
      pid: c.record?.pid ?? null,
      health: c.record?.health ?? null,
    }));
    let wanted = 0;
    if (verdict?.ok) {
      const p = verdict.spec.placement;
      wanted = p?.kind === 'replicas' ? p.replicas : p?.kind === 'nodes' ? p.nodes.length : nodes.length;
      // Named nodes that are not alive are shown, so a typo in nodes: is visible.
      if (p?.kind === 'nodes') {
        for (const n of p.nodes) {
          if (!nodes.some((x) => x.name === n)) nodes.push({ name: n, host: '?', pid: 0, alive: false, vassals: 0, instances: 0, load: 0, started: 0 });
        }
      }
    }
    vassals.push({
      name,
      placement: verdict?.ok ? describePlacement(verdict.spec) : null,
      error: doc === undefined ? 'removed; instances are stopping' : verdict && !verdict.ok ? verdict.error.message : null,
      instances: instances.sort((a, b) => a.node.localeCompare(b.node)),
      pending: Math.max(0, wanted - instances.length),
    });
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name));
  return { root, revision: snap.revision, nodes, vassals, invalidKeys: snap.bad };
}

