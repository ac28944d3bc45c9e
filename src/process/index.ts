// The process layer: spawning vassals as process groups, stopping them, and making sure
// nothing survives the emperor by accident.
export type { ExitInfo, OutputSink, SpawnRequest, StreamName, VassalProcess } from './types.js';
export { spawnVassal } from './spawn.js';
export { spawnBackend } from './posix-spawn.js';
export { stopGroup, reapGroupAfterExit, type StopResult, type ReapResult } from './stop.js';
export { Guardian } from './guardian.js';
export { PidRecords, type PidRecord, type StoredRecord, type LeftoverReport } from './records.js';
export { readStat, readStatSync, listPids, liveGroupMembers, type ProcStat } from './procfs.js';
export { setprivPath } from './launch.js';
export { MAX_LINE } from './lines.js';
export { identityArgs, identityEnv, type Identity } from './identity.js';
