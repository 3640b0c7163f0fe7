/**
 * A {@linkcode BandwidthStore} in memory shared between Workers, so the event loops
 * of one balancer draw on one pair of byte buckets per client. `SharedState` lays
 * out and shares the memory and hands out this store.
 *
 * @module
 */

import { type BandwidthRequest, type BandwidthStore, takeBytes } from "./bandwidth_store.ts";

/** The shared memory of a {@linkcode SharedMemoryBandwidthStore}: one element per slot. */
export interface SharedBandwidthMemory {
  /** Per-slot spin locks: `0` free, `1` held (may be shared with the limiter store's). */
  readonly locks: Int32Array;
  /** When each slot's client-to-upstream bucket is full again (`-Infinity`: never drawn). */
  readonly fromClient: Float64Array;
  /** When each slot's upstream-to-client bucket is full again. */
  readonly fromUpstream: Float64Array;
}

/**
 * A {@linkcode BandwidthStore} on shared memory: every draw takes its bytes under the
 * slot's spin lock (a few loads and stores), so the workers' connections of one
 * client share its rate exactly, read by read. Synchronous. `now` must be on one
 * time base in every worker (`performance.timeOrigin + performance.now()`).
 *
 * @example Usage
 * ```ts
 * import { SharedMemoryBandwidthStore } from "@mtlb/mtlb/limiter";
 * import assert from "node:assert/strict";
 *
 * const buffer = new SharedArrayBuffer(8 + 2 * 8);
 * const views = (buffer: SharedArrayBuffer) => ({
 *   locks: new Int32Array(buffer, 0, 1),
 *   fromClient: new Float64Array(buffer, 8, 1).fill(-Infinity),
 *   fromUpstream: new Float64Array(buffer, 16, 1).fill(-Infinity),
 * });
 * const one = new SharedMemoryBandwidthStore(views(buffer), () => 0);
 * const two = new SharedMemoryBandwidthStore(views(buffer), () => 0); // another Worker
 * const draw = { key: "app", direction: "fromClient", bytes: 50_000, bytesPerSecond: 1e6 } as const;
 * assert.equal(one.take(draw, 0), 0);
 * assert.equal(two.take(draw, 0), 50);
 * ```
 */
export class SharedMemoryBandwidthStore implements BandwidthStore {
  #memory: SharedBandwidthMemory;
  #slot: (key: string) => number;

  /**
   * Creates a store on shared memory.
   *
   * @param memory The views of the shared memory.
   * @param slot Maps a key (a client name) to its slot; throws for a key without one.
   */
  constructor(memory: SharedBandwidthMemory, slot: (key: string) => number) {
    this.#memory = memory;
    this.#slot = slot;
  }

  /**
   * Takes bytes from a bucket; see {@linkcode BandwidthStore.take}.
   *
   * @param request The bucket, the bytes and the rate.
   * @param now The current time in milliseconds, on the workers' common time base.
   * @returns Milliseconds to wait.
   * @throws Whatever the `slot` function throws for a key without a slot.
   */
  take(request: BandwidthRequest, now: number): number {
    const index = this.#slot(request.key);
    const { locks } = this.#memory;
    const buckets = request.direction === "fromClient"
      ? this.#memory.fromClient
      : this.#memory.fromUpstream;
    while (Atomics.compareExchange(locks, index, 0, 1) !== 0) {
      // spin: the critical section is a few loads and stores
    }
    try {
      const { fullAt, waitMs } = takeBytes(
        buckets[index]!,
        request.bytes,
        request.bytesPerSecond,
        now,
      );
      buckets[index] = fullAt;
      return waitMs;
    } finally {
      Atomics.store(locks, index, 0);
    }
  }
}
