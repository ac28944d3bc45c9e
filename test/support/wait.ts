// Polling for conditions that have no event (a pid disappearing, a file growing a line).
// Not a sleep: it returns as soon as the condition holds, and fails loudly when it never does.

const POLL_MS = 20;

/** Default deadline: generous, since a wait that ends too early on a busy machine is a flaky test. */
const WAIT_MS = 30_000;

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const timedOut = (): Error => new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  for (;;) {
    // The condition itself may hang (a request to a wedged server): it is held to the deadline too.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), Math.max(0, deadline - Date.now()))));
    try {
      const held = await Promise.race([Promise.resolve(cond()), late]);
      if (held === true) return;
      if (held === 'late') throw timedOut();
    } finally {
      clearTimeout(timer);
    }
    if (Date.now() >= deadline) throw timedOut();
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
