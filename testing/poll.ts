/**
 * Waiting on time: a pause between samples of a measurement, and polling a condition
 * that sends no event (a figure read from /proc, a count read from a server), each
 * poll bounded by a deadline.
 *
 * @module
 */

/**
 * Resolves after `ms`: a pace for samples, not a way to wait for a state (see
 * {@linkcode until}).
 *
 * @example Usage
 * ```ts
 * import { delay } from "./poll.ts";
 * import assert from "node:assert/strict";
 *
 * const started = performance.now();
 * await delay(20);
 * assert.ok(performance.now() - started >= 19);
 * ```
 *
 * @param ms How long.
 * @returns A promise of that pause.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Checks `check` now, and every `intervalMs` after each check, until it holds or `ms`
 * passed, for a state that can only be read (where there is an event, wait for it).
 *
 * @example Usage
 * ```ts
 * import { until } from "./poll.ts";
 * import assert from "node:assert/strict";
 *
 * let reads = 0;
 * assert.equal(await until(() => ++reads === 3, 1_000, 1), true);
 * assert.equal(await until(() => false, 20, 5), false);
 * ```
 *
 * @param check Reads the state; true once it is the one awaited.
 * @param ms How long the state may take.
 * @param intervalMs The pause between two checks.
 * @returns Whether the state was reached within `ms`.
 */
export async function until(
  check: () => boolean | Promise<boolean>,
  ms: number,
  intervalMs = 100,
): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (performance.now() > deadline) return false;
    await delay(intervalMs);
  }
}
