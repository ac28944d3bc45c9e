// The exec-probe helper process: spawns exec probes for the emperor (exec-runner.ts says why a
// separate process). Requests and results travel over the IPC channel; it exits when that
// closes, and SIGKILLs the process group of every probe still running before it does, so the
// emperor dying (even by SIGKILL) leaves no probe behind.
import { rmSync } from 'node:fs';
import { probeExecHere, killGroup } from './exec-probe.js';
import type { HelperReply, HelperRequest } from './exec-runner.js';
import { OutputPairs } from './output-pairs.js';

if (process.send === undefined) throw new Error('exec-helper.js runs as the emperor\'s child, with an IPC channel');

const running = new Map<number, { controller: AbortController; pgid: number | undefined }>();

function send(reply: HelperReply): void {
  // After a disconnect there is nobody left to tell; the exit below follows.
  if (process.connected) process.send?.(reply);
}

// Probes get one socket for stdout and stderr; undefined: a shell joins them (output-pairs.ts).
// Not awaited here: the message listener must be in place before the first request arrives.
let pairs: OutputPairs | undefined;
const pairsDir = process.argv[2];
const pairsReady = (pairsDir ? OutputPairs.open(pairsDir) : Promise.resolve(undefined)).then((p) => (pairs = p));

function killAllAndExit(code: number): never {
  for (const r of running.values()) if (r.pgid !== undefined) killGroup(r.pgid);
  pairs?.close();
  if (pairsDir) rmSync(pairsDir, { recursive: true, force: true });
  process.exit(code);
}

process.on('message', (msg: HelperRequest) => {
  if (msg.type === 'abort') {
    running.get(msg.id)?.controller.abort();
    return;
  }
  const entry = { controller: new AbortController(), pgid: undefined as number | undefined };
  running.set(msg.id, entry);
  const ctx = { timeoutMs: msg.timeoutMs, cwd: msg.cwd, env: msg.env, identity: msg.identity ?? undefined, cgroupProcs: msg.cgroupProcs, signal: entry.controller.signal };
  const onSpawn = (pid: number): void => {
    entry.pgid = pid;
    send({ type: 'started', id: msg.id, pid });
  };
  void pairsReady.then(async (p) => {
    const result = await probeExecHere(msg.argv, ctx, { onSpawn, pairs: p });
    running.delete(msg.id);
    send({ type: 'result', id: msg.id, result });
  });
});
process.on('disconnect', () => killAllAndExit(0));
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => killAllAndExit(0));
process.on('uncaughtException', (err) => {
  process.stderr.write(`emperor exec-probe helper: ${err.stack ?? err.message}\n`);
  killAllAndExit(70);
});
