// Debian's chromium driven by puppeteer-core (no browser download), for the dashboard's tests.
import { execFileSync } from 'node:child_process';
import puppeteer, { type Browser } from 'puppeteer-core';

/** Waits in a page are bounded too (a busy two-core machine is slow, not stuck). */
export const PAGE_WAIT_MS = 30_000;

function chromiumPath(): string {
  const given = process.env.EMPEROR_TEST_CHROMIUM;
  if (given) return given;
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim().split('\n')[0]!;
  } catch {
    throw new Error('no chromium found: run `bash scripts/setup.sh` (installs Debian chromium) or set EMPEROR_TEST_CHROMIUM');
  }
}

export function launchChromium(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    // As root (CI) Chromium's sandbox cannot start; the page is our own, loaded from loopback.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    timeout: PAGE_WAIT_MS,
  });
}
