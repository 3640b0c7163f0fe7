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
 * const at = clampFullAt(fullAt, rate, now, maxWait); // full: now; beyond a window + maxWait: that
 * const next = takeToken(at, rate);                   // one token later
 * const wait = tokenWait(next, rate, now);            // 0, or whole milliseconds until that token
 * fullAt = wait > maxWait ? at : next;                // a refusal restates the same bucket
 * ```
 *
 * With `maxWait` above 0 (connections queue for their token), a token due within it
 * is reserved: the bucket goes into debt, and reservations are served in the order
 * they were made, which makes the queue first-in first-out.
 *
 * Times are milliseconds as JavaScript numbers (doubles); {@linkcode EPSILON_MS} absorbs
 * their rounding. The Redis store cannot call this code: its `ACQUIRE` Lua script
 * (`lib/redis/limiter_store.ts`) mirrors it step for step on Lua numbers, which are the
 * same doubles, with `from` and `full` for `at` and `next`, the key
 * `limiter:rate:<client>` for `fullAt`, and `t` for `now` (Redis `TIME`, or the
 * caller's `now` with `rateClock: "caller"`):
 *
 * | here                          | Lua                                                   |
 * | ----------------------------- | ----------------------------------------------------- |
 * | `NO_BUCKET` (no state)        | no key: `from = t`                                    |
 * | `clampFullAt()`               | `if from < t ...`, `if from > t + per + hz ...`       |
 * | a refusal stores the clamp    | `SET` of the clamped `from`, inside the clamp branch  |
 * | `takeToken()`                 | `local full = from + per / count`                     |
 * | `tokenWait()`                 | `local wait = full - per - t`, the same `0.001` slack |
 * | `wait > maxWait` refuses      | `if w > maxwait then` (`hz` is `maxwait`)             |
 * | an admission stores `next`    | `SET key full PX (full - t)`                          |
 * | `isFull()` forgets the client | the key expires when the bucket is full again         |
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
 * does not store up tokens beyond `count`), and at most one window plus `horizon`
 * ahead of `now`. Debt beyond one window is what tokens reserved ahead of time leave
 * (up to `horizon`, the longest wait callers accept); beyond that, left by a longer
 * window or horizon before the limits changed, it is clamped away.
 *
 * @param fullAt When the bucket is full again, or {@linkcode NO_BUCKET}.
 * @param rate The client's current rate.
 * @param now The current time in milliseconds.
 * @param horizon How far tokens may be reserved ahead, in milliseconds.
 * @returns The clamped `fullAt`, between `now` and `now + rate.per + horizon`.
 */
export function clampFullAt(
  fullAt: number,
  rate: ConnectionRate,
  now: number,
  horizon = 0,
): number {
  if (fullAt < now) return now;
  const limit = now + rate.per + horizon;
  return fullAt > limit ? limit : fullAt;
}

/**
 * The bucket's `fullAt` once one more token is taken from it.
 *
 * @param at The bucket's `fullAt`, clamped by {@linkcode clampFullAt}.
 * @param rate The client's current rate.
 * @returns The new `fullAt`, to keep if {@linkcode tokenWait} says the token is there.
 */
export function takeToken(at: number, rate: ConnectionRate): number {
  return at + rate.per / rate.count;
}

/**
 * Milliseconds until the token taken by {@linkcode takeToken} is there, rounded up to
 * whole milliseconds: the bucket may be at most one window from full. A caller that
 * accepts waiting (reserving the token) admits when this is at most its wait.
 *
 * @param next The bucket's `fullAt` with that token taken.
 * @param rate The client's current rate.
 * @param now The current time in milliseconds.
 * @returns `0` when the token is there now (admit), otherwise at least `1` (refuse).
 */
export function tokenWait(next: number, rate: ConnectionRate, now: number): number {
  const wait = next - rate.per - now;
  return wait > EPSILON_MS ? Math.ceil(wait - EPSILON_MS) : 0;
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
