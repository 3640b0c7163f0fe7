/**
 * How far apart two names are, to suggest the known name closest to a mistyped one
 * (a command-line option, a config key).
 *
 * @module
 */

/**
 * Optimal string alignment distance: insertions, deletions, substitutions and swaps
 * of adjacent characters each count 1.
 *
 * @example Usage
 * ```ts
 * import { editDistance } from "./edit_distance.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(editDistance("listn", "listen"), 1);
 * assert.equal(editDistance("wieght", "weight"), 1);
 * ```
 *
 * @param a One name.
 * @param b The other.
 * @returns The number of edits that turn `a` into `b`.
 */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => {
    const row = new Array<number>(b.length + 1).fill(0);
    row[0] = i;
    return row;
  });
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        value = Math.min(value, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = value;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The known name closest to a mistyped one: the only one it is a prefix of (three
 * characters at least), else the nearest at an edit distance of at most 2 (1 for
 * names of three characters or fewer); ties go to the first in `known`.
 *
 * @example Usage
 * ```ts
 * import { closestName } from "./edit_distance.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(closestName("intervall", ["interval", "timeout"]), "interval");
 * assert.equal(closestName("colour", ["interval", "timeout"]), undefined);
 * ```
 *
 * @param typed The name as written.
 * @param known The valid names.
 * @returns The suggestion, or `undefined` when none is close.
 */
export function closestName(typed: string, known: readonly string[]): string | undefined {
  const prefixed = known.filter((name) => typed.length >= 3 && name.startsWith(typed));
  if (prefixed.length === 1) return prefixed[0];
  let best: string | undefined;
  let bestDistance = typed.length <= 3 ? 1 : 2;
  for (const name of known) {
    const distance = editDistance(typed, name);
    if (distance <= bestDistance && (best === undefined || distance < bestDistance)) {
      best = name;
      bestDistance = distance;
    }
  }
  return best;
}
