export { ConsulAdapter, healthOutput, ttlCheckId, META_EMPEROR_ID, type ConsulAdapterOptions, type ConsulLog } from './adapter.js';
export { ConsulClient, ConsulError, DEFAULT_TIMEOUT_MS, type ConsulClientOptions, type ConsulErrorKind } from './client.js';
export {
  addConsulOptions,
  resolveConsulConfig,
  resolveConsulClientConfig,
  ConsulConfigError,
  Secret,
  DEFAULT_CONSUL_AGENT,
  type ConsulCliOptions,
  type ConsulConfig,
  type ConsulConnection,
  type ConsulConsistency,
} from './options.js';
