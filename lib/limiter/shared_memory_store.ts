/**
 * A {@linkcode LimiterStore} in memory shared between Workers (a
 * `SharedArrayBuffer`), so the event loops of one balancer enforce one concurrent
 * cap and one token bucket per client between them. `SharedState` lays out and
 * shares the memory and hands out this store.
 *
 * @module
 */

import { type Admission, ADMITTED, type ClientLimits, type LimiterStore } from "./store.ts";
import { clampFullAt, takeToken, tokenWait } from "./token_bucket.ts";

/**
 * The shared memory a {@linkcode SharedMemoryLimiterStore} works on: views of a
 * `SharedArrayBuffer`, each with one element per client slot.
 */
export interface SharedLimiterMemory {
  /** Per-slot spin locks: `0` free, `1` held. */
  readonly locks: Int32Array;
  /** Per-slot open connections. */
  readonly active: Int32Array;
  /**
   * Per-slot token buckets: when each is full again, in milliseconds on the workers'
   * common time base (see `token_bucket.ts`); `-Infinity` for a slot never drawn on.
   */
  readonly fullAt: Float64Array;
}

/**
 * A {@linkcode LimiterStore} on shared memory, with the same semantics as
 * `MemoryLimiterStore` (and the same token bucket code): each `tryAcquire` checks
 * and takes under a per-client spin lock (the critical section is a few loads and
 * stores), and `release` is one atomic decrement. Every method is synchronous.
 *
 * Clients have fixed slots, so memory is bounded by construction and nothing needs
 * forgetting. `now` must be on one time base in every worker: give the
 * `ClientLimiter`s a clock such as
 * `{ now: () => performance.timeOrigin + performance.now(), ... }`.
 *
 * @example Usage
 * ```ts
 * import { SharedMemoryLimiterStore } from "./shared_memory_store.ts";
 * import assert from "node:assert/strict";
 *
 * // Two client slots: locks, open connections, then (8-byte aligned) buckets.
 * const buffer = new SharedArrayBuffer(2 * 4 + 2 * 4 + 2 * 8);
 * const views = (buffer: SharedArrayBuffer) => ({
 *   locks: new Int32Array(buffer, 0, 2),
 *   active: new Int32Array(buffer, 8, 2),
 *   fullAt: new Float64Array(buffer, 16, 2),
 * });
 * views(buffer).fullAt.fill(-Infinity);
 * const slots = new Map([["alice", 0], ["bob", 1]]);
 * const store = new SharedMemoryLimiterStore(views(buffer), (client) => slots.get(client)!);
 * // Another Worker, sent the buffer, builds its own store on its own views.
 * const other = new SharedMemoryLimiterStore(views(buffer), (client) => slots.get(client)!);
 * assert.deepEqual(store.tryAcquire("alice", { concurrent: 1 }, 0), { admitted: true });
 * assert.deepEqual(other.tryAcquire("alice", { concurrent: 1 }, 0), {
 *   admitted: false,
 *   kind: "concurrency",
 *   limit: 1,
 * });
 * ```
 */
export class SharedMemoryLimiterStore implements LimiterStore {
  #locks: Int32Array;
  #active: Int32Array;
  #fullAt: Float64Array;
  #slot: (client: string) => number;

  /**
   * Creates a store on shared memory.
   *
   * @param memory The views of the shared memory, one element per client slot.
   * @param slot Maps a client name to its slot; throws for a client without one.
   */
  constructor(memory: SharedLimiterMemory, slot: (client: string) => number) {
    this.#locks = memory.locks;
    this.#active = memory.active;
    this.#fullAt = memory.fullAt;
    this.#slot = slot;
  }

  /**
   * Atomically checks and takes a slot and a token; see {@linkcode LimiterStore.tryAcquire}.
   *
   * @param client The client name.
   * @param limits The client's limits.
   * @param now The current time in milliseconds, on the workers' common time base.
   * @returns The admission or the refusal.
   * @throws Whatever the `slot` function throws for a client without a slot.
   */
  tryAcquire(client: string, limits: ClientLimits, now: number): Admission {
    const index = this.#slot(client);
    const locks = this.#locks;
    // The critical section is a few loads and stores: spin, never wait. The lock's
    // atomic exchange and release order the plain accesses to `fullAt` between them.
    while (Atomics.compareExchange(locks, index, 0, 1) !== 0) {
      // spin
    }
    try {
      // `release` decrements without the lock: read the count atomically.
      if (Atomics.load(this.#active, index) >= limits.concurrent) {
        return { admitted: false, kind: "concurrency", limit: limits.concurrent };
      }
      const rate = limits.rate;
      if (rate !== undefined) {
        const at = clampFullAt(this.#fullAt[index]!, rate, now);
        const next = takeToken(at, rate);
        const wait = tokenWait(next, rate, now);
        if (wait > 0) {
          this.#fullAt[index] = at;
          return { admitted: false, kind: "rate", limit: rate.count, retryAfterMs: wait };
        }
        this.#fullAt[index] = next;
      }
      Atomics.add(this.#active, index, 1);
      return ADMITTED;
    } finally {
      Atomics.store(locks, index, 0);
    }
  }

  /**
   * Gives back one slot; see {@linkcode LimiterStore.release}. Never goes below zero,
   * even on a double release.
   *
   * @param client The client name.
   * @param _now Unused: releasing touches no bucket.
   * @throws Whatever the `slot` function throws for a client without a slot.
   */
  release(client: string, _now?: number): void {
    const active = this.#active;
    const index = this.#slot(client);
    let current = Atomics.load(active, index);
    while (current > 0) {
      const seen = Atomics.compareExchange(active, index, current, current - 1);
      if (seen === current) return;
      current = seen;
    }
  }
}
