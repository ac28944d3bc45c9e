// Public API of the config module: everything else in src/config is an implementation detail.
export type { BackoffSpec, CheckSpec, CheckStatus, LogsSpec, ProbeTarget, ReadySpec, RestartPolicy, VassalSpec } from './spec.js';
export { VASSAL_EXTENSIONS } from './spec.js';
export { ConfigError, type ConfigErrorDetails } from './errors.js';
export { DURATION_EXPECTED, MAX_DURATION_MS, formatDuration, parseDuration } from './duration.js';
export { SIZE_EXPECTED, formatSize, parseSize } from './size.js';
export { MAX_NAME_LENGTH, classifyVassalFile, isValidVassalName, vassalNameProblem, type VassalFileClass } from './names.js';
export { CHECK_NAME, DEFAULTS, RESTART_POLICIES, defaultCheckName } from './schema.js';
export { loadVassalFile, parseVassal, type LoadOptions, type VassalFileResult, type VassalParseResult } from './load.js';
export { changeKey } from './load-file.js';
export { MAX_VASSAL_FILE_BYTES, readVassalFile, type FileFacts, type FileRead } from './read.js';
export { VassalParser, type ParserOptions } from './parse-pool.js';
