/**
 * The contract between `ClientLimiter` and the places its state can live:
 * the limits of one client, a store's answer, and the {@linkcode LimiterStore}
 * interface that the memory, shared-memory and Redis stores implement.
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

/** Which limit refused a connection. */
export type ClientLimitKind = "concurrency" | "rate";

/**
 * A store's answer to {@linkcode LimiterStore.tryAcquire}: admitted, or refused with
 * the limit that refused. A rate refusal says how long until a token is available.
 */
export type Admission =
  | { readonly admitted: true }
  | { readonly admitted: false; readonly kind: "concurrency"; readonly limit: number }
  | {
    readonly admitted: false;
    readonly kind: "rate";
    readonly limit: number;
    readonly retryAfterMs: number;
  };

/** The one admission every store answers with: frozen, so admitting allocates nothing. */
export const ADMITTED: Admission = Object.freeze({ admitted: true });

/**
 * Where `ClientLimiter` keeps per-client state: open-slot counts and token
 * buckets. Methods may answer synchronously or with a promise, so a store may live
 * in another process (Redis) or in shared memory between workers.
 *
 * The limiter validates limits before calling, calls {@linkcode LimiterStore.release}
 * exactly once for each admission, and never for a refusal.
 *
 * A store shared between instances should attribute slots to the instance that took
 * them (for example per-instance counters kept alive by a heartbeat and expired with
 * it), so the slots of a crashed instance are reclaimed; `release` then needs only the
 * client name, because each instance gives back only its own slots.
 */
export interface LimiterStore {
  /**
   * Atomically checks both limits and, only if both pass, takes one concurrency slot
   * and one rate token. A refusal changes nothing: a concurrency refusal spends no
   * token and a rate refusal takes no slot. When both limits would refuse, the answer
   * is `"concurrency"` (waiting for a token would not help).
   *
   * Atomic means no other `tryAcquire` or `release` for the same client, from this
   * process or any other sharing the store, can interleave between check and update
   * (in Redis: one Lua script).
   *
   * The token bucket holds `limits.rate.count` tokens, refills `count` tokens per
   * `per` milliseconds continuously, and starts full. If `limits` change between
   * calls, the state carries over and is clamped to the new limits.
   *
   * @param client The client name.
   * @param limits The client's current limits, already validated.
   * @param now This process's clock in milliseconds. Only differences are meaningful
   * (it is monotonic, not wall time), so a store shared between processes should use
   * a common time source, such as Redis `TIME` inside its script, instead.
   * @returns The admission, or a refusal saying which limit refused.
   */
  tryAcquire(client: string, limits: ClientLimits, now: number): Admission | Promise<Admission>;

  /**
   * Gives back one concurrency slot taken by an admitted {@linkcode LimiterStore.tryAcquire}
   * (never a rate token). A client with no open slot and a full bucket should be
   * forgotten so memory stays bounded. Releasing a client with no open slot is a no-op.
   *
   * @param client The client name.
   * @param now This process's clock in milliseconds, as for `tryAcquire`.
   * @returns Nothing, or a promise that settles once the slot is given back.
   */
  release(client: string, now: number): void | Promise<void>;
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
