// When a started vassal counts as running: its readiness gate, bounded by start.timeout.
import type { VassalSpec } from '../config/spec.js';
import { waitReady, type ResolvedReadySpec } from '../checks/ready.js';
import { formatDuration } from '../config/duration.js';
import type { Launched } from './launch.js';

/** Default readiness of a vassal without a port: the process stayed up this long. */
const DEFAULT_READY_MS = 1000;
/** How often a default TCP readiness probe knocks. */
const DEFAULT_READY_INTERVAL_MS = 100;

/** `default` readiness: byte 5 for Emperor-protocol vassals, else TCP on the service port when there is one, else up for 1 s. */
export function resolveReady(spec: VassalSpec): ResolvedReadySpec {
  const r = spec.start.ready;
  if (r.kind !== 'default') return r;
  // "After the app is successfully loaded" (the uWSGI–Consul draft): its byte 5.
  if (spec.emperorProtocol) return { kind: 'emperor' };
  const port = spec.service?.port;
  if (port) return { kind: 'probe', probe: { kind: 'tcp', host: spec.service?.address ?? '127.0.0.1', port }, intervalMs: DEFAULT_READY_INTERVAL_MS };
  return { kind: 'delay', ms: Math.min(DEFAULT_READY_MS, spec.start.timeoutMs) };
}

export interface ReadinessOutcome {
  ready(): void;
  /** Not ready: the gate failed ('start-failed') or start.timeout passed ('start-timeout'). */
  failed(reason: string, event: 'start-failed' | 'start-timeout'): void;
}

/**
 * One readiness wait: exactly one of the outcome's callbacks is called, unless cancelled first.
 */
export class Readiness {
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(spec: VassalSpec, launched: Launched, outcome: ReadinessOutcome) {
    const { proc, env, identity, link } = launched;
    // The wait has settled: nothing of it is left to abort. Aborting anyway cost a DOMException
    // (with its stack) per start, a sizeable part of a burst's readiness work (issue 13).
    const settled = (f: () => void): void => {
      if (this.done) return;
      this.done = true;
      clearTimeout(this.timer);
      f();
    };
    waitReady(resolveReady(spec), { cwd: spec.cwd, env, identity, cgroupProcs: proc.joined, signal: this.abort.signal, emperor: link, ...(proc.notify ? { notify: proc.notify } : {}) }).then(
      () => settled(() => outcome.ready()),
      (err: unknown) => {
        if (!this.abort.signal.aborted) settled(() => outcome.failed(`readiness failed: ${err instanceof Error ? err.message : String(err)}`, 'start-failed'));
      },
    );
    // Created after the readiness timer, so a delay equal to the timeout still counts as ready.
    this.timer = setTimeout(() => {
      if (this.done) return;
      // The wait is still running (a probe may be in flight): stop it first.
      this.cancel();
      outcome.failed(`not ready within ${formatDuration(spec.start.timeoutMs)}`, 'start-timeout');
    }, spec.start.timeoutMs);
  }

  /** Stop waiting (and kill an in-flight probe); no outcome is reported after this. */
  cancel(): void {
    const wasDone = this.done;
    this.done = true;
    clearTimeout(this.timer);
    if (!wasDone) this.abort.abort();
  }
}
