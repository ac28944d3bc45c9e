// Public API of the checks module: probes, periodic and TTL checks, readiness gates.
export { MAX_OUTPUT_BYTES, USER_AGENT, runProbe, type ProbeContext, type ProbeResult } from './probe.js';
export { CheckRunner, StatusThresholds, isPeriodic, type CheckRunnerOptions } from './runner.js';
export { TtlCheck } from './ttl.js';
export { STATUS_ORDER, worstStatus } from './aggregate.js';
export {
  READY_LINE,
  READY_PROBE_TIMEOUT_MAX_MS,
  READY_PROBE_TIMEOUT_MIN_MS,
  ReadyAbortedError,
  readyProbeTimeoutMs,
  waitReady,
  type ReadyContext,
  type ResolvedReadySpec,
} from './ready.js';
export { INITIAL_STATUS, type CheckEvents, type CheckKind, type CheckState, type ResultInfo } from './state.js';
