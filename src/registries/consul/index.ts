export { ConsulAdapter, healthOutput, healthCheckId, livenessCheckId, META_EMPEROR_ID, type ConsulAdapterOptions, type ConsulLog } from './adapter.js';
export {
  addConsulOptions,
  resolveConsulConfig,
  resolveConsulClientConfig,
  DEFAULT_CHECK_TTL,
  DEFAULT_DEREGISTER_CRITICAL_AFTER,
  type ConsulCliOptions,
  type ConsulConfig,
} from './options.js';
