export { EtcdAdapter, type EtcdAdapterOptions, type EtcdLog } from './adapter.js';
export { createEtcdClient, describeEtcdError, EtcdRegistryError } from './client.js';
export { instanceDocument } from './document.js';
export { instanceKey, serviceKey, segmentProblem } from './keys.js';
export { addEtcdOptions, resolveEtcdConfig, EtcdConfigError, Secret, type EtcdCliOptions, type EtcdConfig } from './options.js';
