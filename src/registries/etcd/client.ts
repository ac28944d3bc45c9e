// One place that builds etcd3 clients for the adapter and the `service` CLI, with fault handling
// tuned for a supervisor: fail fast while etcd is down, recover within about a second when it
// is back (etcd3's default circuit breaker stays open 5 s), and fail over across endpoints.
import {
  ClientClosedError,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCInvalidArgumentError,
  GRPCUnavailableError,
  isRecoverableError,
  type IOptions,
} from 'etcd3';
import { circuitBreaker, ConsecutiveBreaker, ConstantBackoff, handleWhen, isBrokenCircuitError, retry } from 'cockatiel';
import type { EtcdConfig } from './options.js';

/** Per attempt: etcd3 resolves call options inside its retry loop, so each retry gets its own. */
export const DEFAULT_CALL_TIMEOUT_MS = 1500;
/** A failing endpoint is skipped for this long, then tried again (etcd3's default: 5 s). */
const HALF_OPEN_AFTER_MS = 1000;
/** gRPC's default 4 MiB cap would break snapshots of a few thousand registrations. */
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

export interface EtcdClientOptions {
  readonly callTimeoutMs?: number;
}

export function createEtcdClient(cfg: EtcdConfig, opts: EtcdClientOptions = {}): Etcd3 {
  const timeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const hosts = cfg.endpoints.map((e) => `${cfg.protocol}://${e}`);
  const deadline = (): { deadline: number } => ({ deadline: Date.now() + timeoutMs });
  const options: IOptions = {
    hosts,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : deadline()),
    faultHandling: {
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: HALF_OPEN_AFTER_MS,
          breaker: new ConsecutiveBreaker(3),
        }),
      // Each global retry moves to the next endpoint: one retry per extra endpoint, plus one so a
      // single endpoint that just dropped a connection gets a second chance.
      global: retry(handleWhen(isRecoverableError), { maxAttempts: hosts.length, backoff: new ConstantBackoff(50) }),
    },
    grpcOptions: {
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      // gRPC's reconnect back-off grows to 120 s by default; etcd coming back must be seen fast.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
  };
  if (cfg.tls) {
    options.credentials = {
      // grpc.credentials.createSsl takes null for "the system's roots"; etcd3's typing insists on a Buffer.
      rootCertificate: cfg.tls.ca ?? (null as unknown as Buffer),
      privateKey: cfg.tls.key,
      certChain: cfg.tls.cert,
    };
  }
  if (cfg.username !== undefined && cfg.password) {
    options.auth = { username: cfg.username, password: cfg.password.reveal(), callOptions: deadline };
  }
  return new Etcd3(options);
}

/** First line of a message, bounded, with the password (if any) masked. */
function tidy(message: string, cfg: EtcdConfig): string {
  let line = message.split('\n')[0] ?? '';
  const secret = cfg.password?.reveal();
  if (secret && secret.length >= 3) line = line.split(secret).join('[redacted]');
  // gRPC prefixes "14 UNAVAILABLE: "; etcd prefixes "etcdserver: ".
  line = line.replace(/^\d+ [A-Z_]+: /, '').replace(/^etcdserver: /, '');
  return line.length > 200 ? `${line.slice(0, 199)}…` : line;
}

/**
 * One short line saying what went wrong talking to etcd and, where the user can act, what to
 * do. Never includes the password (etcd3 messages do not carry it; masked anyway).
 */
export function describeEtcdError(err: unknown, cfg: EtcdConfig): string {
  if (!(err instanceof Error)) return `unexpected failure: ${tidy(String(err), cfg)}`;
  if (err instanceof EtcdAuthenticationFailedError) {
    return `authentication failed for etcd user ${JSON.stringify(cfg.username ?? '')}: check the user name and password`;
  }
  if (err instanceof EtcdPermissionDeniedError) {
    return `permission denied for etcd user ${JSON.stringify(cfg.username ?? '')}: it needs read/write on ${cfg.treeRoot}/`;
  }
  if (err instanceof GRPCInvalidArgumentError && /user name is empty/.test(err.message)) {
    return 'etcd requires authentication: set --etcd-user and EMPEROR_ETCD_PASSWORD (or --etcd-password-file)';
  }
  if (err instanceof EtcdLeaseInvalidError) return 'the etcd lease has expired';
  if (err instanceof ClientClosedError) return 'the etcd client is closed';
  if (isBrokenCircuitError(err)) return `etcd unreachable at ${cfg.endpoints.join(', ')} (recent failures; retrying shortly)`;
  if (err instanceof GRPCDeadlineExceededError) return `etcd at ${cfg.endpoints.join(', ')} did not answer in time`;
  if (err instanceof GRPCUnavailableError) {
    const refused = /ECONNREFUSED/.test(err.message);
    if (/SSL|certificate|TLS/.test(err.message)) {
      const why = /sslv3 alert [a-z ]+|certificate verify failed|wrong version number|self[- ]signed certificate[a-z ]*|unable to get local issuer certificate|certificate has expired/i.exec(err.message)?.[0] ?? 'TLS error';
      return `TLS handshake with etcd at ${cfg.endpoints.join(', ')} failed (${why}): check --etcd-protocol, --etcd-ca, --etcd-cert and --etcd-key`;
    }
    return `etcd unreachable at ${cfg.endpoints.join(', ')}${refused ? ' (connection refused)' : `: ${tidy(err.message, cfg)}`}`;
  }
  return tidy(err.message, cfg) || err.name;
}

/** An error for callers of the adapter/CLI: short, one line, no secrets (so no `cause` either). */
export class EtcdRegistryError extends Error {
  override readonly name = 'EtcdRegistryError';
  constructor(
    message: string,
    /** 'slow': etcd did not answer within the call deadline; it may be busy rather than down. */
    readonly kind: 'unreachable' | 'slow' | 'auth' | 'lease' | 'closed' | 'other',
  ) {
    super(message);
  }

  /** The registrar's mark for "timed out, not down" (see isSlowFailure). */
  get slow(): boolean {
    return this.kind === 'slow';
  }
}

export function wrapEtcdError(err: unknown, cfg: EtcdConfig): EtcdRegistryError {
  if (err instanceof EtcdRegistryError) return err;
  const message = describeEtcdError(err, cfg);
  let kind: EtcdRegistryError['kind'] = 'other';
  if (err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError) kind = 'auth';
  else if (err instanceof GRPCInvalidArgumentError && /user name is empty/.test(err.message)) kind = 'auth';
  else if (err instanceof EtcdLeaseInvalidError) kind = 'lease';
  else if (err instanceof ClientClosedError) kind = 'closed';
  else if (err instanceof GRPCDeadlineExceededError) kind = 'slow';
  else if (err instanceof Error && (isRecoverableError(err) || isBrokenCircuitError(err))) kind = 'unreachable';
  return new EtcdRegistryError(message, kind);
}
