/**
 * The default {@linkcode LimiterStore}: per-key state in a `Map` in this process.
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
import { clampFullAt, isFull, NO_BUCKET, takeToken, tokenWait } from "./token_bucket.ts";

/** The memory store sweeps idle clients once it holds this many, or twice its last live size. */
const SWEEP_MIN = 1024;

/** What {@linkcode MemoryLimiterStore} remembers about one key (a client, say). */
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
 * const app = { scopes: [{ key: "app", limits: { concurrent: 1, rate: { count: 10, per: 1000 } } }] };
 * assert.deepEqual(store.tryAcquire(app, 0), { admitted: true });
 * assert.deepEqual(store.tryAcquire(app, 0), {
 *   admitted: false,
 *   kind: "concurrency",
 *   limit: 1,
 *   scope: 0,
 * });
 * store.release(["app"], 100);
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
   * Atomically checks and takes a slot and a token in every scope; see
   * {@linkcode LimiterStore.tryAcquire}.
   *
   * @param request The scopes and their limits, and how long the caller may wait.
   * @param now The current time in milliseconds.
   * @returns The admission or the refusal.
   */
  tryAcquire(request: AcquireRequest, now: number): Admission {
    const { scopes } = request;
    const maxWait = request.maxWaitMs ?? 0;
    const states: (ClientState | undefined)[] = [];
    for (let i = 0; i < scopes.length; i++) {
      const { key, limits } = scopes[i]!;
      const state = this.#clients.get(key);
      if ((state === undefined ? 0 : state.active) >= limits.concurrent) {
        return { admitted: false, kind: "concurrency", limit: limits.concurrent, scope: i };
      }
      states.push(state);
    }
    // A scope without a rate limit leaves its bucket as it is, for the next call with one.
    const clamped: number[] = [];
    const next: number[] = [];
    let wait = 0;
    let worst = 0;
    for (let i = 0; i < scopes.length; i++) {
      const state = states[i];
      const fullAt = state === undefined ? NO_BUCKET : state.fullAt;
      const rate = scopes[i]!.limits.rate;
      if (rate === undefined) {
        clamped.push(fullAt);
        next.push(fullAt);
        continue;
      }
      const at = clampFullAt(fullAt, rate, now, maxWait);
      const taken = takeToken(at, rate);
      const due = tokenWait(taken, rate, now);
      clamped.push(at);
      next.push(taken);
      if (due > wait) {
        wait = due;
        worst = i;
      }
    }
    if (wait > maxWait) {
      // Only a scope with state can refuse: without, its bucket is full. Restate the
      // clamped buckets of those with state.
      for (let i = 0; i < scopes.length; i++) {
        const state = states[i];
        if (state !== undefined) state.fullAt = clamped[i]!;
      }
      return rateRefusal(scopes, worst, wait - maxWait);
    }
    for (let i = 0; i < scopes.length; i++) {
      const state = states[i];
      if (state === undefined) {
        if (this.#clients.size >= this.#sweepAt) {
          this.prune(now);
          this.#sweepAt = Math.max(SWEEP_MIN, 2 * this.#clients.size);
        }
        this.#clients.set(scopes[i]!.key, { active: 1, fullAt: next[i]! });
      } else {
        state.active++;
        state.fullAt = next[i]!;
      }
    }
    return wait === 0 ? ADMITTED : { admitted: true, waitMs: wait };
  }

  /**
   * Gives back one slot in each of `keys`; see {@linkcode LimiterStore.release}.
   *
   * @param keys The keys of the admission's scopes.
   * @param now The current time in milliseconds.
   */
  release(keys: readonly string[], now: number): void {
    for (const key of keys) {
      const state = this.#clients.get(key);
      if (state === undefined || state.active === 0) continue;
      state.active--;
      if (state.active === 0 && isFull(state.fullAt, now)) this.#clients.delete(key);
    }
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
