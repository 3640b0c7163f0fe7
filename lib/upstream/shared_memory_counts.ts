/**
 * An {@linkcode UpstreamCounts} in memory shared between Workers (a
 * `SharedArrayBuffer`), so the event loops of one balancer balance on the same
 * counts. `SharedState` lays out and shares the memory and hands out this store.
 *
 * @module
 */
import type { UpstreamCounts } from "./upstream_counts.ts";

/**
 * An {@linkcode UpstreamCounts} on shared memory: one 32-bit count per upstream slot,
 * changed with `Atomics`, so every worker sees every connection of every upstream
 * and no update is lost when workers count at once. Both methods are synchronous.
 *
 * Upstreams have fixed slots, so memory is bounded by construction and nothing needs
 * forgetting.
 *
 * @example Usage
 * ```ts
 * import { SharedMemoryUpstreamCounts } from "./shared_memory_counts.ts";
 * import assert from "node:assert/strict";
 *
 * // Two upstream slots; another Worker, sent the buffer, builds its own view of it.
 * const buffer = new SharedArrayBuffer(2 * 4);
 * const slots = new Map([["10.0.0.1:80", 0], ["10.0.0.2:80", 1]]);
 * const slot = (address: string) => slots.get(address)!;
 * const counts = new SharedMemoryUpstreamCounts(new Int32Array(buffer), slot);
 * const other = new SharedMemoryUpstreamCounts(new Int32Array(buffer), slot);
 * assert.equal(counts.add("10.0.0.1:80", 1), 1);
 * assert.equal(other.add("10.0.0.1:80", 1), 2);
 * assert.equal(counts.get("10.0.0.2:80"), 0);
 * assert.throws(() => other.add("10.0.0.2:80", -1), RangeError);
 * ```
 */
export class SharedMemoryUpstreamCounts implements UpstreamCounts {
  #counts: Int32Array;
  #slot: (address: string) => number;

  /**
   * Creates a store on shared memory.
   *
   * @param counts A view of the shared memory, one element per upstream slot.
   * @param slot Maps an upstream address to its slot; throws for an address without one.
   */
  constructor(counts: Int32Array, slot: (address: string) => number) {
    this.#counts = counts;
    this.#slot = slot;
  }

  /**
   * Changes the count of `address` by `delta`, atomically.
   *
   * @param address The upstream.
   * @param delta A whole number.
   * @returns The new count.
   * @throws {RangeError} When `delta` is not an integer or the count would go below
   * zero (the count is then given back as it was).
   * @throws Whatever the `slot` function throws for an address without a slot.
   */
  add(address: string, delta: number): number {
    if (!Number.isInteger(delta)) {
      throw new RangeError(
        `Cannot add to a count: delta must be an integer, received ${delta}`,
      );
    }
    const counts = this.#counts;
    const at = this.#slot(address);
    const next = Atomics.add(counts, at, delta) + delta;
    if (next < 0) {
      Atomics.sub(counts, at, delta);
      throw new RangeError(`Cannot release upstream ${address}: its count would go below zero`);
    }
    return next;
  }

  /**
   * Reads the count of `address`.
   *
   * @param address The upstream.
   * @returns The count.
   * @throws Whatever the `slot` function throws for an address without a slot.
   */
  get(address: string): number {
    return Atomics.load(this.#counts, this.#slot(address));
  }
}
