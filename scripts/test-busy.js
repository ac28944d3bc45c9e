// npm run test:busy — runs exactly `npm test` while a busy loop spins on every core, so the suite is
// tried the way a shared, loaded machine runs it (issue 12: it must pass three times in a row so).
//
// The busy loops are worker threads of this process, not child processes: whatever ends this
// process (a failure, ctrl-C, SIGTERM, even SIGKILL) ends them with it, so no hog outlives a run.
import { spawn } from 'node:child_process';
import os from 'node:os';
import { Worker } from 'node:worker_threads';

const loops = os.availableParallelism();
const hogs = Array.from({ length: loops }, () => new Worker('for (;;) {}', { eval: true }));
for (const hog of hogs) hog.unref();

// npm sets npm_execpath when it runs a script; use the same npm for the nested `npm test`.
const npm = process.env.npm_execpath;
const [cmd, args] = npm ? [process.execPath, [npm, 'test']] : ['npm', ['test']];
const started = Date.now();
console.error(`test:busy: npm test with ${loops} busy loop(s) running alongside (one per core)`);
const child = spawn(cmd, args, { stdio: 'inherit' });

let signalled;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    // A second signal means "now": exiting ends the busy loops with this process.
    if (signalled) process.exit(128 + os.constants.signals[signal]);
    signalled = signal;
    // ctrl-C already reached npm through the terminal; a kill(1) of this process did not.
    child.kill(signal);
  });
}

child.on('error', (err) => {
  console.error(`test:busy: could not run npm test: ${err.message}`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const outcome = code === 0 ? 'passed' : signal ? `was killed by ${signal}` : `failed (exit ${code})`;
  console.error(`test:busy: npm test ${outcome} in ${seconds} s alongside ${loops} busy loop(s)`);
  // process.exit terminates the worker threads: the busy loops stop here whatever the outcome.
  process.exit(code ?? 128 + (os.constants.signals[signal] ?? 0));
});
