// The directory of vassal logs: 0750 at most, since apps print secrets to their output.
import fs from 'node:fs/promises';
import { LOG_DIR_MODE } from './logfile.js';

/**
 * Create the logs directory (0750), or tighten one left 0755 by an older version or by hand.
 * Returns a warning to log when something had to change or cannot be fixed, else undefined.
 */
export async function prepareLogsDir(dir: string): Promise<string | undefined> {
  await fs.mkdir(dir, { recursive: true, mode: LOG_DIR_MODE });
  const st = await fs.stat(dir);
  if (!st.isDirectory()) throw new Error(`logs directory ${dir} is not a directory (--logs-dir / EMPEROR_LOGS_DIR)`);
  const loose = st.mode & 0o777 & ~LOG_DIR_MODE;
  if (loose === 0) return undefined;
  const mode = (st.mode & 0o777 & LOG_DIR_MODE).toString(8).padStart(4, '0');
  if (st.uid !== process.getuid?.()) {
    return `logs directory ${dir} is readable or writable by others (mode ${(st.mode & 0o777).toString(8)}) and not ours to fix; run chmod ${mode} ${dir}`;
  }
  await fs.chmod(dir, st.mode & 0o777 & LOG_DIR_MODE);
  return `logs directory ${dir} was mode ${(st.mode & 0o777).toString(8)}; tightened to ${mode} (vassal output can hold secrets)`;
}
