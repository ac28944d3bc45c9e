import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { checkSocketPath } from './socket-path.js';
import { checkSocketTrust } from './socket-trust.js';

export class NoEmperorError extends Error {}

/** An emperor may well be running, but this user may not talk to it. */
export class SocketDeniedError extends Error {}

/** Who owns the socket (or, when even that is hidden, its directory): the user to run as. */
function ownerHint(socketPath: string): string {
  for (const p of [socketPath, path.dirname(socketPath)]) {
    try {
      return ` (owned by uid ${fs.statSync(p).uid})`;
    } catch {
      // Not visible to us either: try the next one.
    }
  }
  return '';
}

/** Nobody listens there, or this user may not connect: the error to show; else undefined. */
function connectError(socketPath: string, err: NodeJS.ErrnoException): Error | undefined {
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTDIR') {
    return new NoEmperorError(`no emperor is running: nothing answers on ${socketPath} (start one with \`emperor --vassals DIR\`, or point --state-dir / EMPEROR_STATE_DIR at its state directory)`);
  }
  if (err.code === 'EACCES' || err.code === 'EPERM') {
    return new SocketDeniedError(
      `permission denied on ${socketPath}${ownerHint(socketPath)}: only the user the emperor runs as (and root) may use its control socket; run this command as that user`,
    );
  }
  return undefined;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export interface ApiOptions {
  /** Give up (ApiError with status 0) when no complete answer came within this many ms. */
  readonly timeoutMs?: number;
}

export interface ApiAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The parsed JSON body. */
  readonly body: unknown;
}

/**
 * One request to the control socket, whatever its status: the raw answer with its headers
 * (e.g. X-Emperor-Seq, the order in which the emperor took a control request).
 * Throws NoEmperorError when nobody listens there, ApiError for a non-JSON answer or a timeout.
 */
export function requestApi(socketPath: string, method: 'GET' | 'POST', urlPath: string, opts: ApiOptions = {}): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    checkSocketPath(socketPath);
    checkSocketTrust(socketPath);
    const req = http.request({ socketPath, method, path: urlPath, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(text) as unknown });
        } catch {
          reject(new ApiError(`emperor answered with non-JSON (${res.statusCode}): ${text.slice(0, 200)}`, res.statusCode ?? 0));
        }
      });
    });
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            req.destroy(new ApiError(`no answer from the emperor within ${opts.timeoutMs} ms: ${method} ${urlPath}`, 0));
          }, opts.timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const refused = connectError(socketPath, err);
      if (refused) reject(refused);
      else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
        // The emperor accepted nothing or hung up: out of file descriptors it refuses connections.
        reject(new HungUp(`the emperor on ${socketPath} closed the connection without answering (${err.code}); if its log shows EMFILE it is out of file descriptors, try again`));
      } else reject(err);
    });
    req.end();
  });
}

/** The connection was closed unanswered (an emperor out of file descriptors refuses connections so). */
class HungUp extends ApiError {
  constructor(message: string) {
    super(message, 0);
  }
}

/** Pauses before each new attempt of a read-only request the emperor hung up on. */
const GET_RETRY_MS = [50, 200, 500];

/**
 * One request to the control socket; a 4xx/5xx answer is thrown as ApiError with its message.
 * A GET the emperor hung up on unanswered is tried again a few times: out of descriptors for a
 * moment, the emperor cannot accept, but it recovers them (failed starts give theirs back). A
 * POST is never repeated, since it is unknown whether it was acted on.
 */
export async function callApi<T>(socketPath: string, method: 'GET' | 'POST', urlPath: string, opts: ApiOptions = {}): Promise<T> {
  let answer: ApiAnswer | undefined;
  for (let attempt = 0; answer === undefined; attempt++) {
    try {
      answer = await requestApi(socketPath, method, urlPath, opts);
    } catch (err) {
      const pause = GET_RETRY_MS[attempt];
      if (!(err instanceof HungUp) || method !== 'GET' || pause === undefined) throw err;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
  const { status, body } = answer;
  if (status >= 400) {
    const msg = (body as { error?: string } | null)?.error ?? `HTTP ${status}`;
    throw new ApiError(msg, status);
  }
  return body as T;
}

/**
 * A streamed GET of newline-delimited JSON (`/v1/logs?follow=1`): `onItem` gets each object as it
 * arrives. Resolves when the emperor ends the stream; `cancel()` hangs up (resolves too).
 * A 4xx/5xx answer rejects with ApiError, like callApi.
 */
export function streamApi(socketPath: string, urlPath: string, onItem: (item: unknown) => void): { done: Promise<void>; cancel(): void } {
  let req: http.ClientRequest | undefined;
  let cancelled = false;
  const done = new Promise<void>((resolve, reject) => {
    checkSocketPath(socketPath);
    checkSocketTrust(socketPath);
    req = http.request({ socketPath, method: 'GET', path: urlPath, headers: { accept: 'application/x-ndjson' } }, (res) => {
      const status = res.statusCode ?? 0;
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        pending += text;
        if (status >= 400) return;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line !== '') onItem(JSON.parse(line) as unknown);
        }
      });
      res.on('end', () => {
        if (status < 400) return resolve();
        let msg = `HTTP ${status}`;
        try {
          msg = (JSON.parse(pending) as { error?: string }).error ?? msg;
        } catch {
          // not JSON: keep the status
        }
        reject(new ApiError(msg, status));
      });
      res.on('error', (err) => (cancelled ? resolve() : reject(err)));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (cancelled) return resolve();
      reject(connectError(socketPath, err) ?? err);
    });
    req.end();
  });
  return {
    done,
    cancel: () => {
      cancelled = true;
      req?.destroy();
    },
  };
}
