/**
 * Active connection counts in the memory of one process: the default
 * {@linkcode UpstreamCounts} of a `LeastConnPool`.
 *
 * @module
 */
import type { UpstreamCounts } from "./upstream_counts.ts";

/**
 * Active connection counts in a `Map` of this process: the default
 * {@linkcode UpstreamCounts}. Entries that reach zero are dropped, so addresses
 * removed by a reload leave nothing behind.
 *
 * @example Usage
 * ```ts
 * import { MemoryUpstreamCounts } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const counts = new MemoryUpstreamCounts();
 * assert.equal(counts.add("10.0.0.1:6379", 1), 1);
 * assert.equal(counts.get("10.0.0.1:6379"), 1);
 * assert.equal(counts.add("10.0.0.1:6379", -1), 0);
 * assert.throws(() => counts.add("10.0.0.1:6379", -1), RangeError);
 * ```
 */
export class MemoryUpstreamCounts implements UpstreamCounts {
  #counts = new Map<string, number>();

  /**
   * Changes the count of `address` by `delta`.
   *
   * @param address The upstream.
   * @param delta A whole number.
   * @returns The new count.
   * @throws {RangeError} When `delta` is not an integer or the count would go below zero
   * (a release without a matching acquire).
   */
  add(address: string, delta: number): number {
    const next = (this.#counts.get(address) ?? 0) + delta;
    if (!Number.isSafeInteger(delta) || next < 0) {
      throw new RangeError(
        `Cannot change connection count of "${address}" by ${delta}: the count would be ${next}`,
      );
    }
    if (next === 0) this.#counts.delete(address);
    else this.#counts.set(address, next);
    return next;
  }

  /**
   * Reads the count of `address`.
   *
   * @param address The upstream.
   * @returns The count, 0 when unknown.
   */
  get(address: string): number {
    return this.#counts.get(address) ?? 0;
  }
}
