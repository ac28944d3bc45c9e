import os from 'node:os';
import path from 'node:path';
import { SOCKET_FILE } from '../state/state-dir.js';

// Root gets the FHS locations a packaged daemon uses; anyone else gets a dot-directory,
// as PM2 does (~/.pm2), so a user-level emperor needs no privileges.
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

export function defaultStateDir(): string {
  if (isRoot) return '/run/emperor';
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'emperor');
  return path.join(os.homedir(), '.emperor', 'run');
}

export function defaultLogsDir(): string {
  return isRoot ? '/var/log/emperor' : path.join(os.homedir(), '.emperor', 'logs');
}

export const socketPathIn = (stateDir: string): string => path.join(stateDir, SOCKET_FILE);
