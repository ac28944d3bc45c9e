// A tiny seeded PRNG (mulberry32): the same seed gives the same stream on every machine, so a
// soak run's action sequence can be replayed with --seed.

export type Rng = () => number;

export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integer in [lo, hi] from a draw r in [0, 1). */
export function intIn(r: number, lo: number, hi: number): number {
  return lo + Math.min(hi - lo, Math.floor(r * (hi - lo + 1)));
}

/** Element of a non-empty list from a draw r in [0, 1). */
export function pick<T>(r: number, list: readonly T[]): T {
  if (list.length === 0) throw new Error('pick from an empty list');
  return list[Math.min(list.length - 1, Math.floor(r * list.length))]!;
}

/** Weighted choice: `weights` maps a key to its weight (> 0); r in [0, 1). */
export function weighted<K extends string>(r: number, weights: ReadonlyArray<readonly [K, number]>): K {
  const total = weights.reduce((s, [, w]) => s + w, 0);
  let x = r * total;
  for (const [k, w] of weights) {
    if (x < w) return k;
    x -= w;
  }
  return weights[weights.length - 1]![0];
}
