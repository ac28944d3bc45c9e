// The package as a library: the Consul helpers from the uWSGI–Consul draft (discovery, KV,
// sessions), vassal-file parsing, and the emperor itself for embedding.
export * from './consul/index.js';
export { parseVassal, loadVassalFile, ConfigError } from './config/index.js';
export type { VassalSpec, CheckSpec, CheckStatus, ServiceSpec } from './config/spec.js';
export { Emperor, type EmperorOptions, type EmperorStatus, type VassalStatus } from './emperor/emperor.js';
export { Registrar } from './registrar/registrar.js';
export type { Registration, RegistryAdapter } from './registrar/types.js';
