// How eagerly V8 optimizes, around start-up (issue 13).
//
// V8 hands a function to TurboFan once it has run about --interrupt-budget bytes of bytecode
// (three times over; a function under --max-bytecode-size-for-early-opt bytes on the first time).
// Loading our ~90 modules runs node's ESM loader once per import, enough to make a few of its
// helpers (fileURLToPath, path normalization, small getters) hot: TurboFan compiles them, and that
// first compile pages in ~4 MB of compiler code that an emperor with no vassals then keeps. A 16 x
// budget and no early optimization while the emperor starts (its modules, the command line, the
// state directory, the first scan) keep TurboFan asleep (today about 6 x suffices: the rest is room
// for more modules); V8's usual values come back once it has started, so code that gets hot later
// (deploys, the rescan, checks) is optimized as before. The other commands are short-lived and
// keep the slow pace. Kept high for good (the flag on the command line), it cost ~0.2 % of a core with 1,000
// idle vassals: code on the idle path stayed unoptimized.
//
// V8 reads both flags whenever it resets a function's budget, so setting them at run time takes
// effect at once. Nothing is changed if the command line sets either, and a V8 that refuses the
// change only leaves the emperor as it was before.
import v8 from 'node:v8';

/** V8's defaults (`node --v8-options`), restored after start-up. */
const USUAL = { 'interrupt-budget': 67_584, 'max-bytecode-size-for-early-opt': 81 } as const;
const START_UP = { 'interrupt-budget': 16 * USUAL['interrupt-budget'], 'max-bytecode-size-for-early-opt': 0 } as const;

function set(values: Record<keyof typeof USUAL, number>): void {
  const names = Object.keys(values);
  const given = (a: string): boolean => names.some((n) => a.replace(/_/g, '-').startsWith(`--${n}`));
  if (process.execArgv.some(given)) return;
  try {
    v8.setFlagsFromString(Object.entries(values).map(([n, v]) => `--${n}=${v}`).join(' '));
  } catch {
    // Only memory is at stake.
  }
}

/** Before the module graph loads (bin/emperor). */
export const slowTieringForStartUp = (): void => set(START_UP);

/** Once the emperor has started (src/cli/run.ts, before it logs `started`). */
export const usualTiering = (): void => set(USUAL);
