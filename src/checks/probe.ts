// One probe run: an HTTP GET, a TCP connect or a command, mapped to Consul's statuses.
// runProbe never throws and never outlives its timeout (plus the time to reap a killed
// command): every failure, including its own bugs, comes back as a critical result.
import net from 'node:net';
import type { CheckStatus, ProbeTarget } from '../config/index.js';
import { runExecProbe } from './exec-runner.js';
import { critical, deadline, endedOutput, errorText, passing, TailBuffer, type ProbeContext, type ProbeResult } from './probe-common.js';

export { MAX_OUTPUT_BYTES, TailBuffer, errorText, type ProbeContext, type ProbeResult } from './probe-common.js';

/** Sent with HTTP probes, after Consul's "Consul Health Check". */
export const USER_AGENT = 'Emperor Health Check';

// ---- http ---------------------------------------------------------------------------------

/**
 * Consul's HTTP check: GET, following redirects (Consul follows them unless disable_redirects
 * is set), 2xx passing, 429 warning, anything else or no answer critical. Output is
 * "HTTP GET <url>: <code> <reason> Output: <body>", the body cut to its last 4 KiB like
 * Consul's circular buffer. The timeout covers reading the body too.
 */
async function probeHttp(url: string, ctx: ProbeContext): Promise<ProbeResult> {
  const prefix = `HTTP GET ${url}`;
  const run = deadline(ctx);
  try {
    const response = await fetch(url, {
      method: 'GET',
      redirect: 'follow',
      signal: run.signal,
      headers: { 'user-agent': USER_AGENT, accept: 'text/plain, text/*, */*' },
    });
    const body = new TailBuffer();
    if (response.body !== null) {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) body.write(chunk);
    }
    const status: CheckStatus = response.status >= 200 && response.status <= 299 ? 'passing' : response.status === 429 ? 'warning' : 'critical';
    const statusLine = `${response.status} ${response.statusText}`.trim();
    return { status, output: `${prefix}: ${statusLine} Output: ${body.text()}` };
  } catch (err) {
    const why = run.reason();
    return critical(`${prefix}: ${why === undefined ? errorText(err) : endedOutput(why, ctx.timeoutMs)}`);
  } finally {
    run.dispose();
  }
}

// ---- tcp ----------------------------------------------------------------------------------

/** "host:port", with IPv6 hosts in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Consul's TCP check: a completed connect is passing ("TCP connect <addr>: Success"). */
function probeTcp(host: string, port: number, ctx: ProbeContext): Promise<ProbeResult> {
  const prefix = `TCP connect ${hostPort(host, port)}`;
  return new Promise<ProbeResult>((resolve) => {
    const run = deadline(ctx);
    let socket: net.Socket | undefined;
    const finish = (result: ProbeResult): void => {
      run.dispose();
      socket?.destroy();
      resolve(result);
    };
    const onEnd = (): void => finish(critical(`${prefix}: ${endedOutput(run.reason() ?? 'abort', ctx.timeoutMs)}`));
    if (run.signal.aborted) {
      onEnd();
      return;
    }
    run.signal.addEventListener('abort', onEnd, { once: true });
    try {
      socket = net.connect({ host, port });
    } catch (err) {
      run.signal.removeEventListener('abort', onEnd);
      finish(critical(`${prefix}: ${errorText(err)}`));
      return;
    }
    socket.once('connect', () => {
      run.signal.removeEventListener('abort', onEnd);
      finish(passing(`${prefix}: Success`));
    });
    socket.once('error', (err) => {
      run.signal.removeEventListener('abort', onEnd);
      finish(critical(`${prefix}: ${errorText(err)}`));
    });
  });
}

// ---- entry point --------------------------------------------------------------------------

/** Runs one probe. Never throws; a timeout or an abort is a critical result. */
export async function runProbe(target: ProbeTarget, ctx: ProbeContext): Promise<ProbeResult> {
  try {
    if (ctx.signal?.aborted === true) return critical('aborted');
    switch (target.kind) {
      case 'http':
        return await probeHttp(target.url, ctx);
      case 'tcp':
        return await probeTcp(target.host, target.port, ctx);
      case 'exec':
        // In the exec-probe helper process (exec-runner.ts says why).
        return await runExecProbe(target.argv, ctx);
    }
    return critical(`unsupported probe kind ${JSON.stringify((target as { kind: unknown }).kind)}`);
  } catch (err) {
    // Only a bug gets here; a probe that crashes is a failing probe, not a crashed emperor.
    return critical(`probe failed: ${errorText(err)}`);
  }
}
