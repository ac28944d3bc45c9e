import path from 'node:path';
import { formatDuration } from '../config/duration.js';
import type { EmperorStatus, VassalStatus } from '../emperor/emperor.js';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

function lastExit(v: VassalStatus): string {
  return v.lastExit ? v.lastExit.reason : '-';
}

function stateOf(v: VassalStatus, now: number): string {
  if (v.state === 'backoff' && v.nextStartAt) return `backoff (retry in ${formatDuration(Math.max(0, v.nextStartAt - now))})`;
  return v.state;
}

/** One line on how vassals are contained, so an operator sees when setsid can escape. */
export function formatContainment(s: EmperorStatus): string {
  const c = s.containment;
  const where = c.mode === 'cgroup' ? ` (${c.cgroup ?? '?'})` : ` (${c.reason ?? 'no cgroups'})`;
  return `containment: ${c.mode}${where}; limits: ${c.limits.join(', ')}`;
}

export function formatStatusTable(s: EmperorStatus, now = Date.now()): string {
  if (s.vassals.length === 0) return `no vassals in ${s.vassalsDir}

${formatContainment(s)}`;
  const rows = [['NAME', 'STATE', 'HEALTH', 'PID', 'UPTIME', 'RESTARTS', 'LAST EXIT', 'FILE']];
  for (const v of s.vassals) {
    rows.push([
      v.name,
      stateOf(v, now),
      v.health ?? '-',
      v.pid === null ? '-' : String(v.pid),
      v.uptimeMs === null ? '-' : formatDuration(Math.round(v.uptimeMs / 1000) * 1000 || v.uptimeMs),
      String(v.restarts),
      lastExit(v),
      path.basename(v.file) + (v.fileError ? ' (invalid)' : ''),
    ]);
  }
  const errors = s.vassals.filter((v) => v.fileError).map((v) => `${v.name}: ${v.fileError}`);
  const dropped = s.vassals.filter((v) => v.output.droppedBytes > 0).map((v) => `${v.name}: ${v.output.droppedBytes} bytes`);
  return (
    table(rows) +
    (errors.length ? `\n\nfile errors:\n${errors.join('\n')}` : '') +
    (dropped.length ? `\n\ndropped output (not in the log files):\n${dropped.join('\n')}` : '') +
    `\n\n${formatContainment(s)}`
  );
}

export function formatVassal(v: VassalStatus, now = Date.now()): string {
  const lines: Array<[string, string]> = [
    ['name', v.name],
    ['state', stateOf(v, now)],
    ['health', v.health ?? '-'],
    ['pid', v.pid === null ? '-' : String(v.pid)],
    ['uptime', v.uptimeMs === null ? '-' : formatDuration(v.uptimeMs)],
    ['restarts', String(v.restarts)],
    ['failures in a row', String(v.failures)],
    ['last exit', lastExit(v)],
    ['oom kills', String(v.oomKills)],
    ['cgroup', v.cgroup ?? '-'],
    ['file', v.file],
  ];
  if (v.fatalReason) lines.splice(2, 0, ['gave up', v.fatalReason]);
  if (v.fileError) lines.push(['file error', v.fileError]);
  if (v.output.droppedBytes > 0) lines.push(['dropped output', `${v.output.droppedBytes} bytes (could not be written to the log)`]);
  if (v.output.mirrorSuppressedBytes > 0) lines.push(['not mirrored', `${v.output.mirrorSuppressedBytes} bytes (--mirror-rate; they are in the log file)`]);
  const w = Math.max(...lines.map(([k]) => k.length));
  const head = lines.map(([k, val]) => `${k.padEnd(w)}  ${val}`).join('\n');
  if (v.checks.length === 0) return head;
  const rows = [['CHECK', 'STATUS', 'LAST RESULT', 'SINCE', 'OUTPUT']];
  for (const c of v.checks) {
    rows.push([
      c.name,
      c.status,
      c.lastResultAt === null ? '-' : `${formatDuration(Math.max(0, now - c.lastResultAt))} ago`,
      c.lastChangeAt === null ? '-' : `${formatDuration(Math.max(0, now - c.lastChangeAt))} ago`,
      c.output.replace(/\s+/g, ' ').trim().slice(0, 80),
    ]);
  }
  return `${head}\n\n${table(rows)}`;
}
