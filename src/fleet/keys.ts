// Fleet mode's keys under the tree root. Every name read back from etcd is checked before it is
// used as a vassal name, a node name or part of a key: the keys are written by other hosts and
// by hand, and a name that could escape its place must not become one.
import { vassalNameProblem } from '../config/names.js';

/** `<root>/fleet/vassals/<name>`: a fleet vassal's document, as `emperor fleet deploy` wrote it. */
const SPECS = 'vassals';
/** `<root>/fleet/nodes/<node>`: a live node's record, on that node's lease. */
const NODES = 'nodes';
/** `<root>/fleet/claims/<name>/<slot>`: the instance `slot` of `name` runs on the node holding it. */
const CLAIMS = 'claims';

export const fleetPrefix = (root: string): string => `${root}/fleet/`;
export const specsPrefix = (root: string): string => `${root}/fleet/${SPECS}/`;
export const specKey = (root: string, name: string): string => `${root}/fleet/${SPECS}/${name}`;
export const nodeKey = (root: string, node: string): string => `${root}/fleet/${NODES}/${node}`;
export const claimsPrefix = (root: string, name?: string): string => (name === undefined ? `${root}/fleet/${CLAIMS}/` : `${root}/fleet/${CLAIMS}/${name}/`);
export const claimKey = (root: string, name: string, slot: string): string => `${root}/fleet/${CLAIMS}/${name}/${slot}`;

/** Node names follow the vassal name rules (they are key segments, log fields and status columns). */
export function nodeNameProblem(name: string): string | undefined {
  return vassalNameProblem(name);
}

export type FleetKey =
  | { kind: 'spec'; name: string }
  | { kind: 'node'; node: string }
  | { kind: 'claim'; name: string; slot: string }
  | { kind: 'bad'; reason: string };

/** What a key under fleetPrefix(root) is; anything else (a hand-made key) is 'bad' with the reason. */
export function parseFleetKey(root: string, key: string): FleetKey {
  const prefix = fleetPrefix(root);
  if (!key.startsWith(prefix)) return { kind: 'bad', reason: 'not under the fleet prefix' };
  const parts = key.slice(prefix.length).split('/');
  const [dir, a, b] = parts;
  if (dir === SPECS && parts.length === 2 && a !== undefined) {
    const problem = vassalNameProblem(a);
    return problem === undefined ? { kind: 'spec', name: a } : { kind: 'bad', reason: `fleet vassal name: ${problem}` };
  }
  if (dir === NODES && parts.length === 2 && a !== undefined) {
    const problem = nodeNameProblem(a);
    return problem === undefined ? { kind: 'node', node: a } : { kind: 'bad', reason: `node name: ${problem}` };
  }
  if (dir === CLAIMS && parts.length === 3 && a !== undefined && b !== undefined) {
    const problem = vassalNameProblem(a) ?? nodeNameProblem(b);
    return problem === undefined ? { kind: 'claim', name: a, slot: b } : { kind: 'bad', reason: `claim: ${problem}` };
  }
  return { kind: 'bad', reason: 'not a fleet key (expected vassals/NAME, nodes/NODE or claims/NAME/SLOT)' };
}
