// Consul agents named by vassal files (the uWSGI–Consul draft's `consul-agent`, YAML's
// `consul.agents`): one Consul adapter per set of agents, made when a registration first needs
// it. A vassal without agents of its own goes to the emperor's --consul-agent (when given), so a
// file's agent wins for that vassal, and a file's agent is enough: no --consul-agent needed.
//
// The emperor's ACL token goes only to its own agents: a file naming some other address (any user
// who may write a vassal file, in tyrant mode) must not receive it.
import type { Change, Observed, Registration, RegistryAdapter } from '../../registrar/types.js';
import type { ConsulAdapter } from './adapter.js';
import type { ConsulConfig } from './options.js';
import { DEFAULT_CHECK_TTL, DEFAULT_DEREGISTER_CRITICAL_AFTER } from './options.js';
import { parseDuration } from '../../config/duration.js';

/** Where registrations of the emperor's own agents go. */
const BASE = 'base';

/**
 * The connection for agents a vassal file named: the emperor's registration settings (TTL,
 * DeregisterCriticalServiceAfter, scheme, CA, datacenter), its token and basic auth only when
 * every one of these agents is one of its own.
 */
export function fileAgentConfig(base: ConsulConfig | undefined, agents: readonly string[], consistency: ConsulConfig['consistency']): ConsulConfig {
  const trusted = base !== undefined && agents.every((a) => base.agents.includes(a));
  const scheme = base?.scheme ?? 'http';
  const details = [scheme === 'https' ? 'https' : '', base?.dc ? `dc ${base.dc}` : '', trusted && base.token ? 'token set' : ''].filter(Boolean);
  return {
    agents,
    scheme,
    ca: base?.ca,
    token: trusted ? base.token : undefined,
    basicAuth: trusted ? base.basicAuth : undefined,
    dc: base?.dc,
    consistency,
    checkTtlMs: base?.checkTtlMs ?? parseDuration(DEFAULT_CHECK_TTL),
    deregisterCriticalAfterMs: base?.deregisterCriticalAfterMs ?? parseDuration(DEFAULT_DEREGISTER_CRITICAL_AFTER),
    description: `consul ${agents.join(',')} (named by vassal files${details.length > 0 ? `; ${details.join(', ')}` : ''})`,
  };
}

export class ConsulRouter implements RegistryAdapter {
  readonly kind = 'consul' as const;
  private readonly adapters = new Map<string, ConsulAdapter>();
  /** Which adapter holds each registration id (from puts, and from snapshots for leftovers). */
  private readonly where = new Map<string, string>();
  private readonly resetListeners: Array<() => void> = [];

  constructor(
    private readonly base: ConsulConfig | undefined,
    private readonly make: (cfg: ConsulConfig) => ConsulAdapter,
  ) {
    if (base) this.adapterFor(BASE);
  }

  get description(): string {
    const all = [...this.adapters.values()].map((a) => a.description);
    return all.length > 0 ? all.join('; ') : 'consul (no agent yet: none given to the emperor or named by a vassal file)';
  }

  /** Shown in status only once some agent is in use. */
  get active(): boolean {
    return this.adapters.size > 0;
  }

  /** The adapter key for a registration: its file's agents, else the emperor's, else none (not in Consul). */
  private keyOf(reg: Registration): string | undefined {
    const own = reg.consulAgents ?? [];
    if (own.length === 0) return this.base ? BASE : undefined;
    if (this.base && own.length === this.base.agents.length && own.every((a, i) => a === this.base?.agents[i])) return BASE;
    return `${own.join(',')}|${reg.consulConsistency ?? 'default'}`;
  }

  accepts(reg: Registration): boolean {
    return this.keyOf(reg) !== undefined;
  }

  /** The emperor's own agent in use (for vassals' CONSUL_HTTP_ADDR), when it has one. */
  get agentAddress(): string | undefined {
    return this.adapters.get(BASE)?.agentAddress;
  }

  private adapterFor(key: string, reg?: Registration): ConsulAdapter {
    let adapter = this.adapters.get(key);
    if (adapter) return adapter;
    const cfg = key === BASE ? this.base : reg ? fileAgentConfig(this.base, reg.consulAgents ?? [], reg.consulConsistency ?? 'default') : undefined;
    if (!cfg) throw new Error(`no Consul agent for ${key}`);
    adapter = this.make(cfg);
    for (const l of this.resetListeners) adapter.onReset(l);
    this.adapters.set(key, adapter);
    return adapter;
  }

  fingerprint(reg: Registration): string {
    const key = this.keyOf(reg);
    return key === undefined ? '' : this.adapterFor(key, reg).fingerprint(reg);
  }

  async apply(changes: readonly Change[]): Promise<void> {
    const groups = new Map<string, Change[]>();
    const add = (key: string, change: Change): void => {
      const list = groups.get(key) ?? [];
      list.push(change);
      groups.set(key, list);
    };
    for (const c of changes) {
      if (c.op === 'put') {
        const key = this.keyOf(c.reg);
        if (key === undefined) continue;
        this.adapterFor(key, c.reg);
        const before = this.where.get(c.reg.id);
        // The file now names other agents: the registration moves, the old one goes.
        if (before !== undefined && before !== key) add(before, { op: 'delete', key: { id: c.reg.id, type: c.reg.type, name: c.reg.name } });
        this.where.set(c.reg.id, key);
        add(key, c);
      } else {
        const key = this.where.get(c.key.id) ?? (this.base ? BASE : undefined);
        if (key !== undefined && this.adapters.has(key)) add(key, c);
      }
    }
    const results = await Promise.allSettled([...groups].map(([key, list]) => this.adapters.get(key)!.apply(list)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    for (const c of changes) if (c.op === 'delete') this.where.delete(c.key.id);
  }

  async snapshot(): Promise<Map<string, Observed>> {
    const out = new Map<string, Observed>();
    const snaps = await Promise.all([...this.adapters].map(async ([key, a]) => [key, await a.snapshot()] as const));
    for (const [key, snap] of snaps) {
      for (const [id, observed] of snap) {
        // Two adapters may talk to the same agent: the one that registered it answers for it.
        const owner = this.where.get(id);
        if (owner !== undefined && owner !== key) continue;
        if (owner === undefined) this.where.set(id, key);
        out.set(id, observed);
      }
    }
    return out;
  }

  onReset(listener: () => void): void {
    this.resetListeners.push(listener);
    for (const a of this.adapters.values()) a.onReset(listener);
  }

  async close(): Promise<void> {
    await Promise.all([...this.adapters.values()].map((a) => a.close()));
  }

  stats(): Readonly<Record<string, number>> {
    const sum: Record<string, number> = {};
    for (const a of this.adapters.values()) for (const [k, v] of Object.entries(a.stats?.() ?? {})) sum[k] = (sum[k] ?? 0) + v;
    return sum;
  }
}
