// The exec-probe thread: spawns exec probes away from the emperor's event loop.
//
// Profiling 200 exec checks a second (node --cpu-prof) showed 82 % of the emperor's main thread
// inside ChildProcess.spawn: spawn() returns only once the child has exec'd, and on a busy
// machine the child waits for a CPU before it can. Control requests and registry heartbeats
// waited behind it. Here that wait blocks only this thread.
import { parentPort } from 'node:worker_threads';
import { probeExecHere } from './probe.js';
import type { ExecRequest, ExecMessage, ExecReply } from './exec-runner.js';

const port = parentPort;
if (port === null) throw new Error('exec-worker.js runs as a worker thread');
const running = new Map<number, AbortController>();

port.on('message', (msg: ExecMessage) => {
  if (msg.type === 'abort') {
    running.get(msg.id)?.abort();
    return;
  }
  const req: ExecRequest = msg;
  const controller = new AbortController();
  running.set(req.id, controller);
  void probeExecHere(req.argv, { timeoutMs: req.timeoutMs, cwd: req.cwd, env: req.env, identity: req.identity, signal: controller.signal }).then((result) => {
    running.delete(req.id);
    const reply: ExecReply = { id: req.id, result };
    port.postMessage(reply);
  });
});
