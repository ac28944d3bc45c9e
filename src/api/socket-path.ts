// Unix socket paths have a hard size limit (sun_path: 108 bytes with its terminating NUL on
// Linux). Node does not refuse a longer path: it silently truncates it, so the emperor would
// listen somewhere else entirely (possibly in a parent directory) and fail later with an error
// about a file that does not exist. Both ends check first and say what to do.

/** Longest socket path the kernel takes, in bytes. */
export const MAX_SOCKET_PATH_BYTES = 107;

export class SocketPathError extends Error {
  override readonly name = 'SocketPathError';
}

export function checkSocketPath(socketPath: string): void {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes <= MAX_SOCKET_PATH_BYTES) return;
  throw new SocketPathError(
    `the state directory's path is too long for a unix socket: ${socketPath} is ${bytes} bytes, the limit is ${MAX_SOCKET_PATH_BYTES}; ` +
      'choose a shorter --state-dir (or EMPEROR_STATE_DIR), e.g. one under /run or $XDG_RUNTIME_DIR',
  );
}
