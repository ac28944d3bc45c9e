// The dashboard of a fleet node, in a real headless Chromium: two real emperors as two fleet nodes
// on a real etcd. The page of one node shows every node and where each fleet vassal runs (read
// from the fleet's etcd state, not only this node's), and follows changes through its event
// stream without a reload: a node leaving, an instance moving. Also: the registries column and
// the detail's registry entry follow the registrar (a registration in etcd shows without a reload).
import assert from 'node:assert/strict';
import type { Browser, Page } from 'puppeteer-core';
import fs from 'node:fs/promises';
import path from 'node:path';
import { launchChromium, PAGE_WAIT_MS } from './support/browser.js';
import { EmperorUnderTest, makeWorkspace, runCli } from './support/emperor.js';
import { startEtcd, type EtcdServer } from './support/etcd.js';
import { freePort } from './support/net.js';
import { after, before, describe, it } from './support/test.js';

const node = process.execPath;
const TTL_S = 5;
const ROOT = '/dashfleet';

interface StatusJson {
  vassals: Array<{ name: string; instances: Array<{ node: string; state: string; pid: number | null }> }>;
}

describe('dashboard of a fleet node, in a browser', { timeout: 300_000 }, () => {
  let etcd: EtcdServer;
  let n1: EmperorUnderTest;
  let n2: EmperorUnderTest;
  let browser: Browser;
  let page: Page;
  let port: number;
  const etcdArgs = (): string[] => ['--etcd-endpoint', etcd.endpoint, '--tree-root', ROOT];

  async function startNode(name: string, extra: string[] = []): Promise<EmperorUnderTest> {
    const emp = await EmperorUnderTest.start(await makeWorkspace('emperor-dash-fleet-'), [...etcdArgs(), '--lease-ttl', `${TTL_S}s`, '--fleet', '--node-name', name, '--fleet-allow-root', ...extra]);
    await emp.waitFor((e) => e.event === 'fleet-joined', `${name} joined`, 0, 60_000);
    return emp;
  }

  async function deploy(name: string, doc: object): Promise<void> {
    const dir = (await makeWorkspace('emperor-dash-fleet-spec-')).root;
    const file = path.join(dir, `${name}.json`);
    await fs.writeFile(file, JSON.stringify(doc));
    const r = await runCli(['fleet', 'deploy', file, ...etcdArgs()]);
    assert.equal(r.code, 0, r.stderr);
  }

  before(async () => {
    etcd = await startEtcd();
    port = await freePort();
    n1 = await startNode('n1', ['--http', `127.0.0.1:${port}`]);
    n2 = await startNode('n2');
    browser = await launchChromium();
    page = await browser.newPage();
    page.setDefaultTimeout(PAGE_WAIT_MS);
    await page.setViewport({ width: 1400, height: 900 });
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.evaluate('window.__loadedOnce = true');
  });
  after(async () => {
    await browser?.close();
    await Promise.all([n1?.stop(), n2?.stop()]);
    await etcd?.dispose();
  });

  const inPage = <T>(expr: string): Promise<T> => page.evaluate(expr) as Promise<T>;
  const until = async (expr: string): Promise<void> => {
    await page.waitForFunction(expr);
  };
  /** [node, state] of each instance of `vassal` the page shows, sorted by node. */
  const shownInstances = (vassal: string): Promise<Array<[string, string]>> =>
    inPage(
      `[...document.querySelectorAll('#fleet-vassals tr[data-vassal="${vassal}"][data-node]')].map((tr) => [tr.dataset.node, tr.cells[3].textContent]).sort((a, b) => a[0].localeCompare(b[0]))`,
    );

  it('shows every node of the fleet and where each fleet vassal runs, from etcd', async () => {
    await deploy('everywhere', { command: [node, '-e', 'setInterval(() => {}, 1 << 30)'], placement: { all: true } });
    await deploy('solo', { command: [node, '-e', 'setInterval(() => {}, 1 << 30)'], placement: { replicas: 1 } });
    await page.waitForSelector('#fleet:not([hidden])');
    await until(`document.querySelectorAll('#fleet-nodes tr[data-node]').length === 2`);
    assert.deepEqual(await inPage(`[...document.querySelectorAll('#fleet-nodes tr[data-node]')].map((tr) => tr.dataset.node)`), ['n1', 'n2']);
    assert.equal(await inPage(`document.querySelector('#fleet-nodes tr.self').dataset.node`), 'n1', 'this node is marked');

    // Both instances of `everywhere` are running, one on each node: n2's comes from etcd only.
    await until(`[...document.querySelectorAll('#fleet-vassals tr[data-vassal="everywhere"][data-node]')].filter((tr) => tr.cells[3].textContent === 'running').length === 2`);
    assert.deepEqual(await shownInstances('everywhere'), [
      ['n1', 'running'],
      ['n2', 'running'],
    ]);
    await until(`document.querySelector('#fleet-vassals tr[data-vassal="solo"][data-node]')?.cells[3].textContent === 'running'`);
    // The page agrees with `emperor fleet status`: the same node and pid.
    const r = await runCli(['fleet', 'status', '--json', ...etcdArgs()]);
    const solo = (JSON.parse(r.stdout) as StatusJson).vassals.find((v) => v.name === 'solo')!.instances[0]!;
    assert.deepEqual(await shownInstances('solo'), [[solo.node, 'running']]);
    assert.equal(await inPage(`document.querySelector('#fleet-vassals tr[data-vassal="solo"][data-node] td:nth-child(5)').textContent`), String(solo.pid));
    // This node's fleet instances are rows of its table, tagged, and counted in the header.
    await until(`document.querySelector('tr[data-name="everywhere"] .tag')?.textContent === 'fleet'`);
    const here = 1 + (solo.node === 'n1' ? 1 : 0); // everywhere's, and solo if n1 holds it
    await until(`document.getElementById('f-fleet').textContent.startsWith('fleet node n1: ${here} instance(s) here')`);
    // docs/dashboard-fleet.png comes from here.
    if (process.env.EMPEROR_DASHBOARD_SCREENSHOT_FLEET) await page.screenshot({ path: process.env.EMPEROR_DASHBOARD_SCREENSHOT_FLEET });
  });

  it('follows the fleet live: a node leaving disappears, its instances move, without a reload', async () => {
    await n2.stop();
    await until(`document.querySelectorAll('#fleet-nodes tr[data-node]').length === 1`);
    assert.deepEqual(await inPage(`[...document.querySelectorAll('#fleet-nodes tr[data-node]')].map((tr) => tr.dataset.node)`), ['n1']);
    await until(`[...document.querySelectorAll('#fleet-vassals tr[data-vassal="everywhere"][data-node]')].length === 1`);
    assert.deepEqual(await shownInstances('everywhere'), [['n1', 'running']]);
    // The singleton runs on n1 now, whichever node had it.
    await until(`document.querySelector('#fleet-vassals tr[data-vassal="solo"][data-node]')?.dataset.node === 'n1' && document.querySelector('#fleet-vassals tr[data-vassal="solo"][data-node]').cells[3].textContent === 'running'`);
    assert.equal(await inPage('window.__loadedOnce'), true, 'the page was not reloaded');
  });

  it('shows a registration in the registries column as the registrar makes it', async () => {
    const appPort = await freePort();
    await n1.writeVassal('api.json', {
      command: [node, '-e', `require('node:http').createServer((q, s) => s.end('ok')).listen(${appPort}, '127.0.0.1')`],
      service: { port: appPort, address: '127.0.0.1' },
    });
    await until(`document.querySelector('tr[data-name="api"] td:nth-child(8)')?.textContent === 'etcd'`);
    // Its detail's registry entry: read once when opened, then kept current by the events alone
    // (a stop from the CLI makes the page fetch nothing).
    await page.click('tr[data-name="api"]');
    const entryState = `document.querySelector('#d-registries tr[data-registry="etcd"] td:nth-child(5)')?.textContent`;
    await until(`${entryState} === 'registered'`);
    const stopped = await n1.cli(['stop', 'api']);
    assert.equal(stopped.code, 0, stopped.stderr);
    await until(`document.querySelector('tr[data-name="api"] td:nth-child(8)')?.textContent === '-'`);
    await until(`${entryState} === 'not registered'`);
  });
});
