// The emperor's own figures for the dashboard's header: uptime, memory, CPU, registries.
import type { Emperor, EmperorStatus } from '../emperor/emperor.js';
import type { RegistryStatus } from '../registrar/registrar.js';

export interface EmperorFacts {
  readonly at: number;
  readonly rssBytes: number;
  /** Share of one core used since the previous sample (the first: since the emperor started). */
  readonly cpuPercent: number;
  readonly registries: RegistryStatus[];
  /** Vassal → registries holding it now (the table's "registries" column). */
  readonly registeredIn: Record<string, string[]>;
  /** Fleet mode: this node and the fleet instances it runs. */
  readonly fleet?: EmperorStatus['fleet'];
}

let last = { at: performance.timeOrigin, cpu: { user: 0, system: 0 } };

export function emperorFacts(emperor: Emperor): EmperorFacts {
  const now = Date.now();
  const cpu = process.cpuUsage();
  const usedUs = cpu.user - last.cpu.user + (cpu.system - last.cpu.system);
  const elapsedMs = Math.max(1, now - last.at);
  last = { at: now, cpu };
  return { at: now, rssBytes: process.memoryUsage.rss(), cpuPercent: Math.round((usedUs / 1000 / elapsedMs) * 1000) / 10, registries: emperor.registries(), registeredIn: Object.fromEntries(emperor.registeredIn()), ...emperor.fleetView() };
}
