import type { ServiceSpec, VassalSpec } from '../config/spec.js';
import type { Registration } from '../registrar/types.js';
import type { VassalSnapshot } from '../vassal/vassal.js';

/** Registry IDs allow a narrow alphabet; host names and vassal names are folded into it. */
export function sanitizeId(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '') || 'x';
}

/** Stable per host and vassal, so a restarted emperor re-registers under the same ID. */
export function defaultServiceId(hostname: string, vassal: string): string {
  return sanitizeId(`${hostname}-${vassal}`);
}

export function registrationFor(spec: VassalSpec, svc: ServiceSpec, snap: VassalSnapshot, hostname: string): Registration {
  return {
    id: svc.id ?? defaultServiceId(hostname, spec.name),
    vassal: spec.name,
    type: svc.type,
    name: svc.name,
    location: svc.location,
    address: svc.address,
    port: svc.port,
    tags: svc.tags,
    meta: svc.meta,
    health: snap.health ?? 'passing',
    checks: snap.checks.map((c) => ({ name: c.name, status: c.status, output: c.output })),
    pid: snap.pid ?? 0,
    deregisterWhenCritical: svc.deregisterWhenCritical,
    nativeChecks: svc.consulNativeChecks ? spec.checks.filter((c) => c.probe.kind === 'http' || c.probe.kind === 'tcp') : [],
    consulAgents: spec.consul?.agents ?? [],
    consulConsistency: spec.consul?.consistency ?? 'default',
  };
}

