import http from 'node:http';

export class NoEmperorError extends Error {}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** One request to the control socket; throws NoEmperorError when nobody listens there. */
export function callApi<T>(socketPath: string, method: 'GET' | 'POST', urlPath: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          return reject(new ApiError(`emperor answered with non-JSON (${res.statusCode}): ${text.slice(0, 200)}`, res.statusCode ?? 0));
        }
        if ((res.statusCode ?? 500) >= 400) {
          const msg = (body as { error?: string }).error ?? `HTTP ${res.statusCode}`;
          return reject(new ApiError(msg, res.statusCode ?? 0));
        }
        resolve(body as T);
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTDIR') {
        reject(new NoEmperorError(`no emperor is running: nothing answers on ${socketPath} (start one with \`emperor --vassals DIR\`, or point --state-dir / EMPEROR_STATE_DIR at its state directory)`));
      } else if (err.code === 'EACCES') {
        reject(new NoEmperorError(`permission denied on ${socketPath}: the control socket belongs to the user running the emperor`));
      } else reject(err);
    });
    req.end();
  });
}
