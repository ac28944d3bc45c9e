// What every client of a network service here is given (the etcd and Consul registries, the
// Consul library): the host:port syntax of endpoints and agents, and secrets (passwords, tokens)
// that cannot be logged by accident.
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';

/** A string that prints as "[redacted]" however it is logged, stringified or inspected. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[redacted]';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [inspect.custom](): string {
    return '[redacted]';
  }
}

const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
const IPV6 = /^\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]$/;

/** "host:port" (host: a name, an IPv4 or a bracketed IPv6 address), or undefined. */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^(.*):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const host = m[1]!;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  if (!HOSTNAME.test(host) && !IPV6.test(host)) return undefined;
  return { host, port };
}

/** One setting's value and where it came from ("--consul-agent", "CONSUL_HTTP_ADDR"...), for errors. */
export interface Sourced {
  readonly value: string;
  readonly source: string;
}

/** The bytes of the file a setting names, or the problem, naming the setting ("--etcd-ca: cannot read..."). */
export function readSettingFile(what: Sourced, kind: string): { ok: true; bytes: Buffer } | { ok: false; problem: string } {
  try {
    return { ok: true, bytes: readFileSync(what.value) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (code ?? 'unreadable');
    return { ok: false, problem: `${what.source}: cannot read the ${kind} ${JSON.stringify(what.value)}: ${reason}` };
  }
}
