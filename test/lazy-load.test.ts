// What an emperor loads (issue 13): an idle emperor's memory is mostly the modules it loaded, so
// what only some setups need is loaded only by them. The emperor runs for real, with a preload
// (test/fixtures/module-recorder.mjs) recording every module its main thread resolves.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, it } from './support/test.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { fixture } from './support/paths.js';

/** Packages only a registry, --metrics or a parse in this thread needs. */
const HEAVY = /\/node_modules\/(etcd3|@grpc\/[^/]+|protobufjs|prom-client|zod|yaml)\//;
const packageOf = (url: string): string => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1] ?? url;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Run an emperor on one vassal until that vassal is spawned; returns the modules its main thread resolved. */
async function modulesLoaded(extraArgs: string[] = []): Promise<string[]> {
  const ws = await makeWorkspace();
  cleanups.push(() => fs.rm(ws.root, { recursive: true, force: true }));
  await fs.writeFile(path.join(ws.vassals, 'a.json'), JSON.stringify({ command: ['sleep', '1000'] }));
  const list = path.join(ws.root, 'modules.txt');
  const env = { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(fixture('module-recorder.mjs')).href}`, EMPEROR_TEST_MODULES_FILE: list };
  const emp = await EmperorUnderTest.start(ws, extraArgs, env);
  cleanups.push(() => emp.stop());
  await emp.waitFor((e) => e.event === 'spawned' && e.vassal === 'a', 'vassal a spawned (its file read and parsed)');
  const exit = await emp.stop();
  assert.equal(exit.code, 0, emp.stderr);
  return (await fs.readFile(list, 'utf8')).split('\n').filter(Boolean);
}

describe('modules an emperor loads', () => {
  it('without registries or metrics: no etcd client, gRPC, prom-client, and no parser (zod, yaml) in the main thread', async () => {
    const loaded = await modulesLoaded();
    // The recorder works: it saw what every emperor loads.
    assert.ok(loaded.some((u) => u.includes('/node_modules/commander/')), `commander not among ${loaded.length} modules`);
    assert.ok(loaded.some((u) => u.endsWith('/src/watch/watcher.js')), 'the watcher not among the modules');
    assert.deepEqual([...new Set(loaded.filter((u) => HEAVY.test(u)).map(packageOf))], []);
  });

  it('with --metrics: prom-client is loaded (and still nothing else heavy)', async () => {
    const loaded = await modulesLoaded(['--metrics', `127.0.0.1:${await freePort()}`]);
    assert.deepEqual([...new Set(loaded.filter((u) => HEAVY.test(u)).map(packageOf))], ['prom-client']);
  });

  it('the dashboard (issue 16) only with --http', async () => {
    const dashboard = (u: string): boolean => /\/src\/dashboard\/(server|access|events|redact|peer-uid)\.js$/.test(u);
    assert.deepEqual((await modulesLoaded()).filter(dashboard), []);
    const loaded = await modulesLoaded(['--http', `127.0.0.1:${await freePort()}`]);
    assert.ok(loaded.some((u) => u.endsWith('/src/dashboard/server.js')), 'the dashboard server was loaded with --http');
    assert.deepEqual([...new Set(loaded.filter((u) => HEAVY.test(u)).map(packageOf))], []);
  });
});
