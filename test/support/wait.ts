// Polling for conditions that have no event (a pid disappearing, a file growing a line).
// Not a sleep: it returns as soon as the condition holds, and fails loudly when it never does.

const POLL_MS = 20;

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
