// Small timing helpers for the places where no event exists (a process group emptying).

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** True if p settled within ms; the timer is cleared either way so it holds nothing alive. */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, ms), false);
  });
  try {
    return await Promise.race([p.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll cond every intervalMs until it holds (true) or the deadline passes (false). */
export async function pollUntil(cond: () => boolean, deadline: number, intervalMs: number): Promise<boolean> {
  for (;;) {
    if (cond()) return true;
    if (Date.now() >= deadline) return false;
    await delay(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}
