/**
 * The connection-rate token bucket, written once for every store that keeps its state
 * in this process's memory (`MemoryLimiterStore`) or in memory shared between
 * Workers (`SharedMemoryLimiterStore`).
 *
 * The rate limit is a token bucket (capacity `count`, refilled at `count / per` tokens
 * per millisecond, continuously) rather than a fixed or sliding window: it is smooth
 * at window edges, takes O(1) state per client, a full bucket (a client that has been
 * quiet for a window) needs no state at all, and it maps onto one atomic Redis Lua
 * script. It is stored as one number, the time `fullAt` at which the bucket will be
 * full again: at `now` it holds `count - (fullAt - now) * count / per` tokens, taking a
 * token moves `fullAt` forward by `per / count`, and `fullAt <= now` is a full bucket.
 * This is the generic cell rate algorithm (GCRA), the token bucket's equivalent
 * one-timestamp form. A client with no state at all has `fullAt = -Infinity`
 * ({@linkcode NO_BUCKET}).
 *
 * One admission, under the store's lock:
 *
 * ```ts ignore
 * const at = clampFullAt(fullAt, rate, now);   // full: now; debt beyond a window: one window
 * const wait = tokenWait(at, rate, now);       // 0, or whole milliseconds until a token
 * if (wait > 0) fullAt = at;                   // refuse: restates the same empty bucket
 * else fullAt = takeToken(at, rate);           // admit: one token later
 * ```
 *
 * Times are milliseconds as JavaScript numbers (doubles); {@linkcode EPSILON_MS} absorbs
 * their rounding. The Redis store cannot call this code: its `ACQUIRE` Lua script
 * (`lib/redis/limiter_store.ts`) mirrors it line for line on Lua numbers, which are the
 * same doubles:
 *
 * | here                          | Lua (`from`, `full` in the key `limiter:rate:<client>`)            |
 * | ----------------------------- | ------------------------------------------------------------------ |
 * | `NO_BUCKET` (no state)        | no key: `GET` answers nil, and the bucket starts at `now`          |
 * | `clampFullAt()`               | `if from < now then from = now end`, `if from > now + per ...`     |
 * | refusal stores the clamp      | `SET key from PX per` inside the clamp branch                      |
 * | `tokenWait()`                 | `full = from + per / count; wait = full - per - now`, `0.001` slack |
 * | `takeToken()`                 | `SET key full PX (full - now)`                                     |
 * | `isFull()` forgets the client | the key expires when the bucket is full again                      |
 *
 * A change here must be made there too; the shared case suite in
 * `tests/limiter/store_cases.ts` runs the same cases against all three stores.
 *
 * @module
 */

import type { ConnectionRate } from "./store.ts";

/**
 * Slack, in milliseconds, when comparing token bucket times. It absorbs
 * floating-point rounding (e.g. `per / count` = 333.33… ms) so that a token due at
 * `t` is available at `t` and a wait is never one millisecond too long.
 */
export const EPSILON_MS = 1e-3;

/** The `fullAt` of a client without bucket state: a full bucket, at any time. */
export const NO_BUCKET = -Infinity;

/**
 * Where a bucket stands at `now` under `rate`: `now` when it is full (a full bucket
 * does not store up tokens beyond `count`), and at most one window ahead of `now`
 * (debt beyond one window, left by a longer window before the limits changed, is
 * clamped to an empty bucket).
 *
 * @param fullAt When the bucket is full again, or {@linkcode NO_BUCKET}.
 * @param rate The client's current rate.
 * @param now The current time in milliseconds.
 * @returns The clamped `fullAt`, between `now` and `now + rate.per`.
 */
export function clampFullAt(fullAt: number, rate: ConnectionRate, now: number): number {
  if (fullAt < now) return now;
  const limit = now + rate.per;
  return fullAt > limit ? limit : fullAt;
}

/**
 * Milliseconds until a bucket standing at `at` has a token, rounded up to whole
 * milliseconds; `0` when it has one now.
 *
 * @param at The bucket's `fullAt`, clamped by {@linkcode clampFullAt}.
 * @param rate The client's current rate.
 * @param now The current time in milliseconds.
 * @returns `0` when a token is available, otherwise at least `1`.
 */
export function tokenWait(at: number, rate: ConnectionRate, now: number): number {
  const wait = at + rate.per / rate.count - rate.per - now;
  return wait > EPSILON_MS ? Math.ceil(wait - EPSILON_MS) : 0;
}

/**
 * The bucket's `fullAt` after one token is taken from it.
 *
 * @param at The bucket's `fullAt`, clamped by {@linkcode clampFullAt}, with a token
 * available ({@linkcode tokenWait} is `0`).
 * @param rate The client's current rate.
 * @returns The new `fullAt`.
 */
export function takeToken(at: number, rate: ConnectionRate): number {
  return at + rate.per / rate.count;
}

/**
 * Whether a bucket is full at `now`, so a client with nothing open can be forgotten.
 *
 * @param fullAt When the bucket is full again, or {@linkcode NO_BUCKET}.
 * @param now The current time in milliseconds.
 * @returns `true` when the bucket holds `count` tokens.
 */
export function isFull(fullAt: number, now: number): boolean {
  return fullAt <= now + EPSILON_MS;
}
