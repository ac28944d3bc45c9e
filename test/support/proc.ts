import { readFileSync } from 'node:fs';

/**
 * True while `pid` runs. A zombie counts as gone: orphaned grandchildren are reparented to
 * PID 1, which on some machines reaps them late, and a zombie runs nothing.
 */
export function isRunning(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}
