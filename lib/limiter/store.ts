/**
 * The contract between `ClientLimiter` and the places its state can live:
 * the limits of one scope (a client, a client within a group, a group), a request
 * over several scopes, a store's answer, and the {@linkcode LimiterStore} interface
 * that the memory, shared-memory and Redis stores implement.
 *
 * @module
 */

/** At most `count` new connections per `per` milliseconds, with bursts of up to `count`. */
export interface ConnectionRate {
  /** Bucket capacity and the number of tokens refilled per window: a positive integer. */
  readonly count: number;
  /** The window in milliseconds: a positive finite number. */
  readonly per: number;
}

/** The limits that apply to one client. */
export interface ClientLimits {
  /**
   * The most connections the client may have open at once: a positive integer, or
   * `Infinity` for no cap.
   */
  readonly concurrent: number;
  /**
   * The rate at which the client may open new connections; absent for no rate limit.
   *
   * @default {undefined}
   */
  readonly rate?: ConnectionRate;
}

/**
 * One scope a connection counts in, as a store sees it: the key its state is kept
 * under (a client name, or a key `ClientLimiter` derives for a client within a group
 * or for a group) and the limits that apply there.
 */
export interface ScopeLimits {
  /** The key of the scope's state: a non-empty string, distinct within one request. */
  readonly key: string;
  /** The scope's limits, already validated. */
  readonly limits: ClientLimits;
}

/** What {@linkcode LimiterStore.tryAcquire} is asked for one connection. */
export interface AcquireRequest {
  /** The scopes the connection counts in, at least one, each key once. */
  readonly scopes: readonly ScopeLimits[];
  /**
   * The longest the caller will wait for rate tokens, in milliseconds. With more
   * than 0, tokens due within it are reserved now (the token bucket goes into debt,
   * in arrival order) and the admission says how long to wait before using them;
   * tokens due later refuse as usual.
   *
   * @default {0}
   */
  readonly maxWaitMs?: number;
}

/** Which limit refused a connection. */
export type ClientLimitKind = "concurrency" | "rate";

/**
 * A store's answer to {@linkcode LimiterStore.tryAcquire}: admitted (after `waitMs`,
 * when a rate token was reserved ahead of its time), or refused with the limit that
 * refused and the index of its scope in the request. A rate refusal says how long
 * until a new attempt would be admitted.
 */
export type Admission =
  | {
    readonly admitted: true;
    /**
     * Milliseconds until the reserved rate tokens are due: the caller waits that long
     * before using the connection. Absent (or 0) when they are there now.
     *
     * @default {0}
     */
    readonly waitMs?: number;
  }
  | {
    readonly admitted: false;
    readonly kind: "concurrency";
    readonly limit: number;
    readonly scope: number;
  }
  | {
    readonly admitted: false;
    readonly kind: "rate";
    readonly limit: number;
    readonly retryAfterMs: number;
    readonly scope: number;
  };

/** The one admission every store answers with: frozen, so admitting allocates nothing. */
export const ADMITTED: Admission = Object.freeze({ admitted: true });

/**
 * The refusal a store answers when a rate token is not due in time: the rate of the
 * scope that waits longest, and how long past the caller's wait its token is due.
 *
 * @param scopes The scopes of the request.
 * @param scope The index of the scope whose token is due last; it has a rate limit.
 * @param retryAfterMs Milliseconds until a new attempt would be admitted.
 * @returns The rate refusal.
 */
export function rateRefusal(
  scopes: readonly ScopeLimits[],
  scope: number,
  retryAfterMs: number,
): Admission {
  return {
    admitted: false,
    kind: "rate",
    limit: scopes[scope]!.limits.rate!.count,
    retryAfterMs,
    scope,
  };
}

/**
 * Where `ClientLimiter` keeps its state: open-slot counts and token buckets, one of
 * each per key. Methods may answer synchronously or with a promise, so a store may
 * live in another process (Redis) or in shared memory between workers.
 *
 * The limiter validates limits before calling, calls {@linkcode LimiterStore.release}
 * exactly once with the keys of each admission, and never for a refusal.
 *
 * A store shared between instances should attribute slots to the instance that took
 * them (for example per-instance counters kept alive by a heartbeat and expired with
 * it), so the slots of a crashed instance are reclaimed; `release` then needs only the
 * keys, because each instance gives back only its own slots.
 */
export interface LimiterStore {
  /**
   * Atomically checks the limits of every scope and, only if all pass, takes one
   * concurrency slot and one rate token in each. A refusal changes nothing: a
   * concurrency refusal spends no token and a rate refusal takes no slot. Concurrency
   * is checked first, scope by scope: when a cap and a rate would both refuse, the
   * answer is `"concurrency"` (waiting for a token would not help), for the first
   * scope at its cap. A rate refusal names the scope whose token is due last.
   *
   * Atomic means no other `tryAcquire` or `release` for the same keys, from this
   * process or any other sharing the store, can interleave between check and update
   * (in Redis: one Lua script).
   *
   * Each token bucket holds `limits.rate.count` tokens, refills `count` tokens per
   * `per` milliseconds continuously, and starts full. If `limits` change between
   * calls, the state carries over and is clamped to the new limits (debt beyond one
   * window plus `maxWaitMs` is forgiven).
   *
   * @param request The scopes and their limits, and how long the caller may wait.
   * @param now This process's clock in milliseconds. Only differences are meaningful
   * (it is monotonic, not wall time), so a store shared between processes should use
   * a common time source, such as Redis `TIME` inside its script, instead.
   * @returns The admission, or a refusal saying which limit of which scope refused.
   */
  tryAcquire(request: AcquireRequest, now: number): Admission | Promise<Admission>;

  /**
   * Gives back one concurrency slot in each of `keys`, taken by an admitted
   * {@linkcode LimiterStore.tryAcquire} (never a rate token). A key with no open slot
   * and a full bucket should be forgotten so memory stays bounded. Releasing a key
   * with no open slot is a no-op.
   *
   * @param keys The keys of the admission's scopes.
   * @param now This process's clock in milliseconds, as for `tryAcquire`.
   * @returns Nothing, or a promise that settles once the slots are given back.
   */
  release(keys: readonly string[], now: number): void | Promise<void>;
}

/**
 * A request for one scope: the shape of a connection limited only as its client.
 *
 * @example Usage
 * ```ts
 * import { MemoryLimiterStore, singleScope } from "@mtlb/mtlb/limiter";
 * import assert from "node:assert/strict";
 *
 * const store = new MemoryLimiterStore();
 * assert.deepEqual(store.tryAcquire(singleScope("app", { concurrent: 1 }), 0), { admitted: true });
 * ```
 *
 * @param key The scope's key, such as a client name.
 * @param limits Its limits.
 * @returns A request with that one scope.
 */
export function singleScope(key: string, limits: ClientLimits): AcquireRequest {
  return { scopes: [{ key, limits }] };
}

/**
 * Thrown (as a rejection) by a shared {@linkcode LimiterStore} (such as
 * `RedisLimiterStore` with policy `"closed"`), and so by `ClientLimiter.acquire`,
 * when the store is unavailable. `cause` is the error that made it unavailable.
 *
 * @example Usage
 * ```ts
 * import { StoreUnavailableError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const error = new StoreUnavailableError({ cause: new Error("connect ECONNREFUSED") });
 * assert.equal(error.name, "StoreUnavailableError");
 * assert.equal(
 *   error.message,
 *   "Cannot accept connection: the shared limiter store is unavailable",
 * );
 * ```
 */
export class StoreUnavailableError extends Error {
  /**
   * Creates the error.
   *
   * @param options The `cause`: why the store is unavailable.
   */
  constructor(options?: ErrorOptions) {
    super("Cannot accept connection: the shared limiter store is unavailable", options);
    this.name = "StoreUnavailableError";
  }
}
