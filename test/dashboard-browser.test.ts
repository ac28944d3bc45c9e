// The dashboard page in a real headless Chromium (Debian's `chromium`, driven by puppeteer-core,
// which downloads no browser): it renders, follows changes without a reload, shows a crash in
// red, restarts from a button, filters, and a vassal printing HTML does not run code in it.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { launchChromium, PAGE_WAIT_MS } from './support/browser.js';
import { EmperorUnderTest, makeWorkspace } from './support/emperor.js';
import { freePort } from './support/net.js';
import { after, before, describe, it } from './support/test.js';

const node = process.execPath;
const HOSTILE = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">`;

describe('dashboard in a browser', { timeout: 300_000 }, () => {
  let emp: EmperorUnderTest;
  let browser: Browser;
  let page: Page;
  let port: number;
  let flag: string;
  const pageErrors: string[] = [];

  before(async () => {
    port = await freePort();
    const ws = await makeWorkspace('emperor-browser-');
    flag = path.join(ws.root, 'crash-now');
    emp = await EmperorUnderTest.start(ws, ['--http', `127.0.0.1:${port}`]);
    await emp.writeVassal('web.json', {
      command: [node, '-e', `let i = 0; setInterval(() => console.log('line ' + i++ + ' ${HOSTILE}'), 200)`],
      checks: [{ exec: [node, '-e', `console.log('<img src=x onerror="window.__pwned = 3">')`], interval: '1s' }],
    });
    // Runs until the test plants the flag, then fails at every start: backoff, then fatal.
    await emp.writeVassal('crashy.json', {
      command: [node, '-e', `if (require('node:fs').existsSync(${JSON.stringify(flag)})) process.exit(3); setInterval(() => {}, 1 << 30)`],
      backoff: { max_retries: 1, initial: '100ms' },
    });
    await emp.waitEvent('web', 'ready');
    await emp.waitEvent('crashy', 'ready');
    browser = await launchChromium();
    page = await browser.newPage();
    page.setDefaultTimeout(PAGE_WAIT_MS);
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    await page.setViewport({ width: 1400, height: 900 });
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.evaluate('window.__loadedOnce = true');
  });
  after(async () => {
    await browser?.close();
    await emp?.stop();
  });

  // Page-side code is given as text: it runs in the browser, not in this (DOM-less) program.
  const inPage = <T>(expr: string): Promise<T> => page.evaluate(expr) as Promise<T>;
  const until = async (expr: string): Promise<void> => {
    await page.waitForFunction(expr);
  };
  const stateOf = (name: string): Promise<string | undefined> => inPage(`document.querySelector('tr[data-name="${name}"]')?.dataset.state`);
  const pidCell = (name: string): Promise<string> => inPage(`document.querySelector('tr[data-name="${name}"] td:nth-child(4)').textContent`);
  const notReloaded = async (): Promise<void> => {
    assert.equal(await inPage('window.__loadedOnce'), true, 'the page was not reloaded');
  };

  it('renders the table of vassals', async () => {
    await page.waitForSelector('tr[data-name="web"][data-state="running"]');
    await page.waitForSelector('tr[data-name="crashy"][data-state="running"]');
    assert.equal(await pidCell('web'), String((await emp.vassal('web')).pid));
    await until(`document.getElementById('conn').textContent === 'live'`);
  });

  it('shows a vassal dropped into the directory without a reload', async () => {
    await emp.writeVassal('late.json', { command: [node, '-e', 'setInterval(() => {}, 1 << 30)'] });
    await page.waitForSelector('tr[data-name="late"][data-state="running"]');
    await notReloaded();
  });

  it('turns a crashing vassal red', async () => {
    await fs.writeFile(flag, '');
    process.kill((await emp.vassal('crashy')).pid!, 'SIGKILL');
    await page.waitForSelector('tr[data-name="crashy"][data-state="fatal"]');
    const color = await inPage<string>(`getComputedStyle(document.querySelector('tr[data-name="crashy"] .state-fatal')).backgroundColor`);
    assert.equal(color, 'rgb(198, 40, 40)');
    await notReloaded();
  });

  it('restarts a vassal from its button (a new pid)', async () => {
    const before = (await emp.vassal('web')).pid;
    await page.click('tr[data-name="web"]');
    await page.waitForSelector('#detail:not([hidden])');
    await until(`!document.querySelector('[data-action="restart"]').disabled`);
    await page.click('[data-action="restart"]');
    await until(`/^restart: running/.test(document.getElementById('d-message').textContent) && document.querySelector('tr[data-name="web"] td:nth-child(4)').textContent !== '${before}'`);
    const now = (await emp.vassal('web')).pid;
    assert.notEqual(now, before);
    // The answer to the POST can come before the event stream's batch with the new state.
    await until(`document.querySelector('tr[data-name="web"]').dataset.state === 'running'`);
    assert.equal(await pidCell('web'), String(now));
    assert.equal(await stateOf('web'), 'running');
  });

  it('shows hostile output as text: a vassal printing <script> runs nothing', async () => {
    // The detail of web is open: its live log tail and its check output hold the hostile text.
    await until(`document.getElementById('d-log').textContent.includes('<script>window.__pwned = 1</script>')`);
    await until(`document.querySelector('#d-checks tbody').textContent.includes('<img src=x onerror=')`);
    assert.equal(await inPage('window.__pwned'), undefined);
    assert.equal(await inPage('document.querySelectorAll("#d-log script, #d-log img, #d-checks img, #d-checks script").length'), 0);
    assert.deepEqual(pageErrors, []);
  });

  it('filters rows by what is typed', async () => {
    await page.type('#filter', 'cras');
    await until(`document.querySelectorAll('#vassals tbody tr:not([hidden])').length === 1`);
    assert.equal(await inPage(`document.querySelector('#vassals tbody tr:not([hidden])').dataset.name`), 'crashy');
    await page.type('#filter', 'zzz');
    await until(`document.querySelectorAll('#vassals tbody tr:not([hidden])').length === 0`);
    await page.evaluate(`(() => { const i = document.getElementById('filter'); i.value = ''; i.dispatchEvent(new Event('input')); })()`);
    await until(`document.querySelectorAll('#vassals tbody tr:not([hidden])').length === 3`);
  });

  it('refuses a POST without the CSRF token, even from the page itself', async () => {
    const pid = (await emp.vassal('web')).pid;
    const status = await inPage<number>(`fetch('/api/vassals/web/stop', { method: 'POST' }).then((r) => r.status)`);
    assert.equal(status, 403);
    assert.equal((await emp.vassal('web')).pid, pid);
    if (process.env.EMPEROR_DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.EMPEROR_DASHBOARD_SCREENSHOT });
  });
});
