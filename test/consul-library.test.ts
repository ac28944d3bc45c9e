// The Consul library (src/consul, `emperor/consul`) stands on its own: a program that imports it
// loads the HTTP client and the helpers, and neither the command line (commander, src/cli) nor
// the registry adapter (src/registries/consul). Checked on a real import in a fresh node process,
// whose module resolutions a loader hook writes down.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from './support/test.js';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { repoRoot } from './support/paths.js';

const LIBRARY = fileURLToPath(new URL('../src/consul/index.js', import.meta.url));

// Runs in the loader thread: records every resolved URL before handing it back.
const HOOK = `
import { appendFileSync } from 'node:fs';
let log;
export function initialize(data) { log = data.log; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(log, result.url + '\\n');
  return result;
}`;

/** Every module URL a fresh node resolves while importing `target`. */
async function modulesLoadedBy(target: string): Promise<string[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'emperor-consul-lib-'));
  try {
    const log = path.join(dir, 'resolved.txt');
    const script = [
      "import { register } from 'node:module';",
      `register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOK)}`)}, { data: { log: ${JSON.stringify(log)} } });`,
      `const consul = await import(${JSON.stringify(pathToFileURL(target).href)});`,
      "if (typeof consul.Consul !== 'function') process.exit(2);",
    ].join('\n');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.equal(code, 0, `importing the library failed: ${stderr}`);
    return (await readFile(log, 'utf8')).split('\n').filter((line) => line !== '');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

void test('the Consul library loads neither the CLI nor the registry adapter', { timeout: 60_000 }, async () => {
  const loaded = await modulesLoadedBy(LIBRARY);
  const unwanted = loaded.filter((url) => /\/node_modules\/commander\/|\/src\/cli\/|\/src\/registries\/consul\//.test(url));
  assert.deepEqual(unwanted, [], 'modules the library must not need');
  assert.ok(
    loaded.some((url) => url.endsWith('/src/consul/client.js')),
    `the library's HTTP client is among the modules loaded: ${loaded.join(', ')}`,
  );
});

void test('the package exports the library as emperor/consul', async () => {
  const pkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { exports: Record<string, string> };
  const target = pkg.exports['./consul'];
  assert.equal(typeof target, 'string');
  assert.equal(path.resolve(repoRoot, target ?? ''), path.join(repoRoot, 'dist', 'src', 'consul', 'index.js'));
});
