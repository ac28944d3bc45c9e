// Server-sent events: every page gets the whole status once, then only what changed, batched.
// The emperor says which vassal changed (a name); the rows are read from its status, so the
// dashboard keeps no copy of any state. One batch is serialized once for all pages. Alongside:
// `registry` (the registrar's per-registration state changes, as it makes them) and, in fleet
// mode, `fleet` (every node and where each fleet vassal runs, whenever the node's read of the
// fleet changed).
import type http from 'node:http';
import type { Emperor, VassalStatus } from '../emperor/emperor.js';
import type { RegistryChange } from '../registrar/registrar.js';
import { emperorFacts } from './facts.js';

/** Changes are gathered this long, then sent together (a burst of 1,000 is one event). */
const BATCH_MS = 25;
/** The emperor's own figures (RSS, CPU, registries) go out this often while pages are open. */
const FACTS_MS = 2000;
/** A page this far behind is dropped; its EventSource reconnects and starts from a snapshot. */
const MAX_BEHIND_BYTES = 8 * 1024 * 1024;

export class EventHub {
  private readonly clients = new Set<http.ServerResponse>();
  private readonly pending = new Set<string>();
  /** Registry changes since the last batch, the latest per vassal and registry. */
  private readonly pendingRegistry = new Map<string, RegistryChange>();
  private batch: NodeJS.Timeout | undefined;
  private facts: NodeJS.Timeout | undefined;
  private readonly onChanged = (name: string): void => {
    this.pending.add(name);
    this.batch ??= setTimeout(() => this.flush(), BATCH_MS);
  };
  /** Fleet mode: the fleet changed since the last batch; what the pages last got of it. */
  private worldChanged = false;
  private lastWorld = '';
  private readonly onWorld = (): void => {
    this.worldChanged = true;
    this.batch ??= setTimeout(() => this.flush(), BATCH_MS);
  };
  private readonly onRegistry = (change: RegistryChange): void => {
    this.pendingRegistry.set(`${change.vassal}\u0000${change.registry}`, change);
    this.batch ??= setTimeout(() => this.flush(), BATCH_MS);
  };

  constructor(private readonly emperor: Emperor) {}

  get size(): number {
    return this.clients.size;
  }

  add(res: http.ServerResponse, headers: Record<string, string>): void {
    res.writeHead(200, { ...headers, 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    // Reconnect quickly after the emperor restarts or a page was dropped for falling behind.
    const world = this.emperor.fleetWorld();
    res.write(`retry: 1000\nevent: snapshot\ndata: ${JSON.stringify({ ...this.emperor.status(), facts: emperorFacts(this.emperor), fleetWorld: world ?? null })}\n\n`);
    if (this.clients.size === 0) {
      this.lastWorld = JSON.stringify(world ?? null);
      this.emperor.events.on('changed', this.onChanged);
      this.emperor.registryEvents?.on('change', this.onRegistry);
      this.emperor.fleetEvents?.on('world', this.onWorld);
      this.facts = setInterval(() => this.send('facts', JSON.stringify(emperorFacts(this.emperor))), FACTS_MS);
      this.facts.unref();
    }
    this.clients.add(res);
    res.on('close', () => this.remove(res));
  }

  close(): void {
    for (const res of this.clients) res.destroy();
  }

  private remove(res: http.ServerResponse): void {
    if (!this.clients.delete(res) || this.clients.size > 0) return;
    this.emperor.events.off('changed', this.onChanged);
    this.emperor.registryEvents?.off('change', this.onRegistry);
    this.emperor.fleetEvents?.off('world', this.onWorld);
    this.worldChanged = false;
    clearInterval(this.facts);
    clearTimeout(this.batch);
    this.batch = undefined;
    this.pending.clear();
    this.pendingRegistry.clear();
  }

  private flush(): void {
    this.batch = undefined;
    if (this.pendingRegistry.size > 0) this.flushRegistry();
    if (this.pending.size > 0) this.flushRows();
    if (this.worldChanged) this.flushWorld();
  }

  /** `fleet`: every node and where each fleet vassal runs, whenever that differs from the last sent. */
  private flushWorld(): void {
    this.worldChanged = false;
    const text = JSON.stringify(this.emperor.fleetWorld() ?? null);
    if (text === this.lastWorld) return;
    this.lastWorld = text;
    this.send('fleet', text);
  }

  /**
   * `registry`: each registration that changed state (registering, registered, removing, not
   * registered, failed), the registries column of the vassals concerned, and how each registry
   * is doing.
   */
  private flushRegistry(): void {
    const changes = [...this.pendingRegistry.values()];
    this.pendingRegistry.clear();
    const registeredIn: Record<string, string[]> = {};
    for (const c of changes) registeredIn[c.vassal] ??= this.emperor.registeredInOne(c.vassal);
    this.send('registry', JSON.stringify({ changes, registeredIn, registries: this.emperor.registries(), at: Date.now() }));
  }

  private flushRows(): void {
    const rows: VassalStatus[] = [];
    const removed: string[] = [];
    for (const name of this.pending) {
      try {
        rows.push(this.emperor.vassalStatus(name));
      } catch {
        removed.push(name); // no such vassal any more
      }
    }
    this.pending.clear();
    this.send('changes', JSON.stringify({ rows, removed, at: Date.now() }));
  }

  private send(event: string, data: string): void {
    const frame = `event: ${event}\ndata: ${data}\n\n`;
    for (const res of this.clients) {
      if (res.writableLength > MAX_BEHIND_BYTES) res.destroy();
      else res.write(frame);
    }
  }
}
