/**
 * The default {@linkcode LimiterStore}: per-client state in a `Map` in this process.
 *
 * @module
 */

import { type Admission, ADMITTED, type ClientLimits, type LimiterStore } from "./store.ts";
import { clampFullAt, isFull, NO_BUCKET, takeToken, tokenWait } from "./token_bucket.ts";

/** The memory store sweeps idle clients once it holds this many, or twice its last live size. */
const SWEEP_MIN = 1024;

/** What {@linkcode MemoryLimiterStore} remembers about one client. */
interface ClientState {
  /** Open slots. */
  active: number;
  /** The token bucket: when it is full again (see `token_bucket.ts`). */
  fullAt: number;
}

/**
 * The default {@linkcode LimiterStore}: state in a `Map` in this process. Every method
 * is synchronous, so each call is atomic.
 *
 * The rate limit is a token bucket kept as one number per client, the time at which
 * it is full again (the generic cell rate algorithm): smooth at window edges, O(1)
 * state per client, and no state at all for a client whose bucket is full.
 *
 * Memory stays bounded: a client with nothing open and a full bucket is dropped on
 * release, and idle clients whose buckets have refilled since are swept, in amortized
 * O(1), as new clients arrive.
 *
 * @example Usage
 * ```ts
 * import { MemoryLimiterStore } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const store = new MemoryLimiterStore();
 * const limits = { concurrent: 1, rate: { count: 10, per: 1000 } };
 * assert.deepEqual(store.tryAcquire("app", limits, 0), { admitted: true });
 * assert.deepEqual(store.tryAcquire("app", limits, 0), {
 *   admitted: false,
 *   kind: "concurrency",
 *   limit: 1,
 * });
 * store.release("app", 100);
 * assert.equal(store.size, 0); // nothing open, bucket full again after 100 ms
 * ```
 */
export class MemoryLimiterStore implements LimiterStore {
  #clients = new Map<string, ClientState>();
  #sweepAt = SWEEP_MIN;

  /**
   * The number of clients with retained state: an open slot or a bucket that was not
   * full when last looked at.
   *
   * @returns The number of clients remembered.
   */
  get size(): number {
    return this.#clients.size;
  }

  /**
   * Atomically checks and takes a slot and a token; see {@linkcode LimiterStore.tryAcquire}.
   *
   * @param client The client name.
   * @param limits The client's limits.
   * @param now The current time in milliseconds.
   * @returns The admission or the refusal.
   */
  tryAcquire(client: string, limits: ClientLimits, now: number): Admission {
    const state = this.#clients.get(client);
    const active = state === undefined ? 0 : state.active;
    if (active >= limits.concurrent) {
      return { admitted: false, kind: "concurrency", limit: limits.concurrent };
    }
    // A call without a rate limit leaves the bucket as it is, for the next call with one.
    let fullAt = state === undefined ? NO_BUCKET : state.fullAt;
    const rate = limits.rate;
    if (rate !== undefined) {
      const at = clampFullAt(fullAt, rate, now);
      const next = takeToken(at, rate);
      const wait = tokenWait(next, rate, now);
      if (wait > 0) {
        // Only a client with state can be refused: without, its bucket is full.
        state!.fullAt = at;
        return { admitted: false, kind: "rate", limit: rate.count, retryAfterMs: wait };
      }
      fullAt = next;
    }
    if (state === undefined) {
      if (this.#clients.size >= this.#sweepAt) {
        this.prune(now);
        this.#sweepAt = Math.max(SWEEP_MIN, 2 * this.#clients.size);
      }
      this.#clients.set(client, { active: 1, fullAt });
    } else {
      state.active = active + 1;
      state.fullAt = fullAt;
    }
    return ADMITTED;
  }

  /**
   * Gives back one slot; see {@linkcode LimiterStore.release}.
   *
   * @param client The client name.
   * @param now The current time in milliseconds.
   */
  release(client: string, now: number): void {
    const state = this.#clients.get(client);
    if (state === undefined || state.active === 0) return;
    state.active--;
    if (state.active === 0 && isFull(state.fullAt, now)) this.#clients.delete(client);
  }

  /**
   * Forgets every client with nothing open and a full bucket at `now`. Called
   * automatically as the store grows; call it directly to reclaim memory eagerly.
   *
   * @param now The current time in milliseconds.
   * @returns The number of clients forgotten.
   */
  prune(now: number): number {
    let removed = 0;
    for (const [client, state] of this.#clients) {
      if (state.active === 0 && isFull(state.fullAt, now)) {
        this.#clients.delete(client);
        removed++;
      }
    }
    return removed;
  }
}
