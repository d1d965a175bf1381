/** Figures of a run: latency percentiles, counts by key, and how to print them. */

/** The p-th percentile (nearest rank) of `values`, in any order; NaN when there are none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** How many of `items` have each key. */
export function countBy<T>(items: readonly T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) {
    const k = key(item);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}

/** `key: n, ...` sorted by key, each count less its value in `before` when given; `none` when empty. */
export function countsText(counts: ReadonlyMap<string, number>, before?: ReadonlyMap<string, number>): string {
  return (
    [...counts]
      .map(([k, v]): [string, number] => [k, v - (before?.get(k) ?? 0)])
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ') || 'none'
  );
}

/** A number with `digits` decimals, `-` when it is not finite (no samples). */
export function round(value: number, digits = 0): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-';
}
