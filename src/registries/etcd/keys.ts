// The empusa-compatible key layout under a tree root, and the checks that keep user-given
// segments from escaping it. Shared by the emperor's adapter and the `service` CLI.

/** `<root>/services/<type>/<name>` holds the plain location (what empusa writes and reads). */
export const SERVICES_DIR = 'services';
/** `<root>/instances/<type>/<name>` holds the emperor's JSON document for the same service. */
export const INSTANCES_DIR = 'instances';

const MAX_SEGMENT_LENGTH = 253;
// Control characters would garble `etcdctl get` and log output; whitespace would break the
// `TYPE NAME LOCATION` columns of `service list`.
// eslint-disable-next-line no-control-regex
const UNSAFE_CHARS = /[\u0000-\u001f\u007f\s]/;

/** Why `value` cannot be one key segment (a service type or name), or undefined when it can. */
export function segmentProblem(value: string): string | undefined {
  if (value.length === 0) return 'must not be empty';
  if (value.length > MAX_SEGMENT_LENGTH) return `must be at most ${MAX_SEGMENT_LENGTH} characters`;
  if (value.includes('/')) return `must not contain "/" (got ${JSON.stringify(value)})`;
  if (value === '.' || value === '..') return `must not be "${value}"`;
  if (UNSAFE_CHARS.test(value)) return `must not contain whitespace or control characters (got ${JSON.stringify(value)})`;
  return undefined;
}

export function servicesPrefix(root: string, type?: string): string {
  return type === undefined ? `${root}/${SERVICES_DIR}/` : `${root}/${SERVICES_DIR}/${type}/`;
}

export function instancesPrefix(root: string, type?: string): string {
  return type === undefined ? `${root}/${INSTANCES_DIR}/` : `${root}/${INSTANCES_DIR}/${type}/`;
}

export function serviceKey(root: string, type: string, name: string): string {
  return `${root}/${SERVICES_DIR}/${type}/${name}`;
}

export function instanceKey(root: string, type: string, name: string): string {
  return `${root}/${INSTANCES_DIR}/${type}/${name}`;
}

/**
 * `<type>/<name>` of a key found under `prefix` (e.g. servicesPrefix(root)), or undefined when
 * the key does not have exactly that shape (someone else's key under our root).
 */
export function parseTypeName(key: string, prefix: string): { type: string; name: string } | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const parts = key.slice(prefix.length).split('/');
  if (parts.length !== 2) return undefined;
  const [type, name] = parts as [string, string];
  if (segmentProblem(type) || segmentProblem(name)) return undefined;
  return { type, name };
}

/** etcd's range_end for "every key starting with prefix" (the prefix with its last byte + 1). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  // All 0xff: etcd's "to the end of the keyspace".
  return Buffer.from([0]);
}

/** A raw range request op for every key under `prefix`. */
export function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  const key = Buffer.from(prefix);
  return { key, range_end: prefixRangeEnd(key) };
}
