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

/**
 * Wait until the test app has written its "armed" file (all signal handlers installed), then
 * send SIGUSR2: sent earlier, the signal's default action would kill it.
 */
export async function signalWhenArmed(armedFile: string, pid: number): Promise<void> {
  const { waitFor } = await import('./wait.js');
  const { readFileSync } = await import('node:fs');
  await waitFor(() => {
    try {
      return readFileSync(armedFile, 'utf8') === String(pid);
    } catch {
      return false;
    }
  }, `app ${pid} armed`);
  process.kill(pid, 'SIGUSR2');
}
