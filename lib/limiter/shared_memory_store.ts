/**
 * A {@linkcode LimiterStore} in memory shared between Workers (a
 * `SharedArrayBuffer`), so the event loops of one balancer enforce one concurrent
 * cap and one token bucket per client between them. `SharedState` lays out and
 * shares the memory and hands out this store.
 *
 * @module
 */

import {
  type AcquireRequest,
  type Admission,
  ADMITTED,
  type LimiterStore,
  rateRefusal,
} from "./store.ts";
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
 * const alice = { scopes: [{ key: "alice", limits: { concurrent: 1 } }] };
 * assert.deepEqual(store.tryAcquire(alice, 0), { admitted: true });
 * assert.deepEqual(other.tryAcquire(alice, 0), {
 *   admitted: false,
 *   kind: "concurrency",
 *   limit: 1,
 *   scope: 0,
 * });
 * ```
 */
export class SharedMemoryLimiterStore implements LimiterStore {
  #locks: Int32Array;
  #active: Int32Array;
  #fullAt: Float64Array;
  #slot: (key: string) => number;

  /**
   * Creates a store on shared memory.
   *
   * @param memory The views of the shared memory, one element per slot.
   * @param slot Maps a key (a client name, or a key `ClientLimiter` derives) to its
   * slot; throws for a key without one.
   */
  constructor(memory: SharedLimiterMemory, slot: (key: string) => number) {
    this.#locks = memory.locks;
    this.#active = memory.active;
    this.#fullAt = memory.fullAt;
    this.#slot = slot;
  }

  /**
   * Atomically checks and takes a slot and a token in every scope; see
   * {@linkcode LimiterStore.tryAcquire}. The scopes' locks are taken in slot order,
   * so two calls over the same scopes never wait on each other in a cycle.
   *
   * @param request The scopes and their limits, and how long the caller may wait.
   * @param now The current time in milliseconds, on the workers' common time base.
   * @returns The admission or the refusal.
   * @throws Whatever the `slot` function throws for a key without a slot.
   */
  tryAcquire(request: AcquireRequest, now: number): Admission {
    const { scopes } = request;
    const maxWait = request.maxWaitMs ?? 0;
    const indexes = scopes.map((scope) => this.#slot(scope.key));
    const order = indexes.length === 1 ? indexes : [...indexes].sort((a, b) => a - b);
    const locks = this.#locks;
    // The critical section is a few loads and stores: spin, never wait. The locks'
    // atomic exchanges and releases order the plain accesses to `fullAt` between them.
    for (const index of order) {
      while (Atomics.compareExchange(locks, index, 0, 1) !== 0) {
        // spin
      }
    }
    try {
      for (let i = 0; i < scopes.length; i++) {
        const { concurrent } = scopes[i]!.limits;
        // `release` decrements without the lock: read the count atomically.
        if (Atomics.load(this.#active, indexes[i]!) >= concurrent) {
          return { admitted: false, kind: "concurrency", limit: concurrent, scope: i };
        }
      }
      const fullAt = this.#fullAt;
      const next: number[] = [];
      let wait = 0;
      let worst = 0;
      for (let i = 0; i < scopes.length; i++) {
        const index = indexes[i]!;
        const rate = scopes[i]!.limits.rate;
        if (rate === undefined) {
          next.push(fullAt[index]!);
          continue;
        }
        const at = clampFullAt(fullAt[index]!, rate, now, maxWait);
        const taken = takeToken(at, rate);
        const due = tokenWait(taken, rate, now);
        next.push(taken);
        // Stored now: a refusal restates the clamped bucket, an admission overwrites it.
        if (at !== fullAt[index]) fullAt[index] = at;
        if (due > wait) {
          wait = due;
          worst = i;
        }
      }
      if (wait > maxWait) {
        return rateRefusal(scopes, worst, wait - maxWait);
      }
      for (let i = 0; i < scopes.length; i++) {
        const index = indexes[i]!;
        fullAt[index] = next[i]!;
        Atomics.add(this.#active, index, 1);
      }
      return wait === 0 ? ADMITTED : { admitted: true, waitMs: wait };
    } finally {
      for (const index of order) Atomics.store(locks, index, 0);
    }
  }

  /**
   * Gives back one slot in each of `keys`; see {@linkcode LimiterStore.release}.
   * Never goes below zero, even on a double release.
   *
   * @param keys The keys of the admission's scopes.
   * @param _now Unused: releasing touches no bucket.
   * @throws Whatever the `slot` function throws for a key without a slot.
   */
  release(keys: readonly string[], _now?: number): void {
    const active = this.#active;
    for (const key of keys) {
      const index = this.#slot(key);
      let current = Atomics.load(active, index);
      while (current > 0) {
        const seen = Atomics.compareExchange(active, index, current, current - 1);
        if (seen === current) break;
        current = seen;
      }
    }
  }
}
