/**
 * Per-client connection limits: a cap on concurrent connections and an optional
 * connection rate, keyed by the configured client name of an authenticated mTLS peer.
 *
 * State lives behind a {@linkcode LimiterStore}; the default
 * {@linkcode MemoryLimiterStore} keeps it in this process, and a shared store can
 * enforce the same limits across processes or instances.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock } from "../clock.ts";
import { formatDuration } from "../duration.ts";

const logger = getLogger(["mtlb", "limiter"]);

/**
 * Slack, in milliseconds, when comparing token bucket times. It absorbs
 * floating-point rounding (e.g. `per / count` = 333.33… ms) so that a token due at
 * `t` is available at `t` and `retryAfterMs` is never one millisecond too long.
 */
const EPSILON_MS = 1e-3;

/** The memory store sweeps idle clients once it holds this many, or twice its last live size. */
const SWEEP_MIN = 1024;

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

/**
 * Where {@linkcode ClientLimiter} keeps per-client state: open-slot counts and token
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

/** What {@linkcode MemoryLimiterStore} remembers about one client. */
interface ClientState {
  /** Open slots. */
  active: number;
  /**
   * The token bucket in virtual-time form: when the bucket will be full again if no
   * token is taken meanwhile; `-Infinity` when the client has no rate state.
   */
  fullAt: number;
}

const ADMITTED: Admission = Object.freeze({ admitted: true });

/**
 * The default {@linkcode LimiterStore}: state in a `Map` in this process. Every method
 * is synchronous, so each call is atomic.
 *
 * The rate limit is a token bucket (capacity `count`, refilled at `count / per` tokens
 * per millisecond, continuously) rather than a fixed or sliding window: it is smooth
 * at window edges, takes O(1) state per client, a full bucket (a client that has been
 * quiet for a window) needs no state at all, and it maps onto one atomic Redis Lua
 * script later. It is stored as one number, the time `fullAt` at which the bucket will
 * be full again: at `now` it holds `count - (fullAt - now) * count / per` tokens, taking
 * a token moves `fullAt` forward by `per / count`, and `fullAt <= now` is a full bucket.
 * This is the generic cell rate algorithm (GCRA), the token bucket's equivalent
 * one-timestamp form.
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
    let fullAt = -Infinity;
    const rate = limits.rate;
    if (rate !== undefined) {
      // A full bucket starts from now. Debt beyond one window (left by a longer
      // window before the limits changed) is clamped to an empty bucket, and the clamp
      // is kept even on refusal: it only restates the same empty bucket.
      let from = state === undefined || state.fullAt < now ? now : state.fullAt;
      if (from > now + rate.per) {
        from = now + rate.per;
        state!.fullAt = from;
      }
      fullAt = from + rate.per / rate.count;
      const wait = fullAt - rate.per - now;
      if (wait > EPSILON_MS) {
        return {
          admitted: false,
          kind: "rate",
          limit: rate.count,
          retryAfterMs: Math.ceil(wait - EPSILON_MS),
        };
      }
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
    if (state.active === 0 && state.fullAt <= now + EPSILON_MS) this.#clients.delete(client);
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
      if (state.active === 0 && state.fullAt <= now + EPSILON_MS) {
        this.#clients.delete(client);
        removed++;
      }
    }
    return removed;
  }
}

/** Options for {@linkcode ClientLimitError}. */
export interface ClientLimitErrorOptions extends ErrorOptions {
  /** Which limit refused. */
  kind: ClientLimitKind;
  /** The concurrent cap, or the rate's `count`. */
  limit: number;
  /**
   * For a rate refusal, the rate's window in milliseconds.
   *
   * @default {undefined}
   */
  windowMs?: number;
  /**
   * For a rate refusal, milliseconds until a token is available.
   *
   * @default {undefined}
   */
  retryAfterMs?: number;
}

/**
 * Thrown (as a rejection) by {@linkcode ClientLimiter.acquire} when a client is over
 * its concurrent cap or its connection rate.
 *
 * @example Usage
 * ```ts
 * import { ClientLimitError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const error = new ClientLimitError("app", {
 *   kind: "rate",
 *   limit: 100,
 *   windowMs: 60_000,
 *   retryAfterMs: 600,
 * });
 * assert.equal(error.name, "ClientLimitError");
 * assert.equal(
 *   error.message,
 *   'Cannot accept connection: client "app" is over its rate limit of 100 connections per 1m, retry after 600ms',
 * );
 * ```
 */
export class ClientLimitError extends Error {
  /** Which limit refused. */
  readonly kind: ClientLimitKind;
  /** The client name. */
  readonly client: string;
  /** The concurrent cap, or the rate's `count`. */
  readonly limit: number;
  /** For a rate refusal, the rate's window in milliseconds; otherwise `undefined`. */
  readonly windowMs: number | undefined;
  /** For a rate refusal, milliseconds until a token is available; otherwise `undefined`. */
  readonly retryAfterMs: number | undefined;

  /**
   * Creates the error and its message.
   *
   * @param client The client name.
   * @param options Which limit refused, and its details.
   */
  constructor(client: string, options: ClientLimitErrorOptions) {
    const { kind, limit, windowMs, retryAfterMs } = options;
    const who = `Cannot accept connection: client ${JSON.stringify(client)}`;
    const connections = limit === 1 ? "connection" : "connections";
    super(
      kind === "concurrency"
        ? `${who} is at its limit of ${limit} concurrent ${connections}`
        : `${who} is over its rate limit of ${limit} ${connections} per ${
          windowMs === undefined ? "window" : formatDuration(windowMs)
        }${retryAfterMs === undefined ? "" : `, retry after ${formatDuration(retryAfterMs)}`}`,
      options,
    );
    this.name = "ClientLimitError";
    this.kind = kind;
    this.client = client;
    this.limit = limit;
    this.windowMs = windowMs;
    this.retryAfterMs = retryAfterMs;
  }
}

/** A held connection slot, given back once on dispose (`using lease = ...`). */
export interface ClientLease extends Disposable {
  /** The client the slot belongs to. */
  readonly client: string;
}

/** Options for {@linkcode ClientLimiter}. */
export interface ClientLimiterOptions {
  /**
   * Limits for a client that {@linkcode ClientLimiterOptions.limitsFor} has none for.
   *
   * @default {{ concurrent: 10 }}
   */
  limits?: ClientLimits;
  /**
   * Looks up one client's limits; `undefined` means
   * {@linkcode ClientLimiterOptions.limits}. Called on every `acquire` without
   * per-call limits, so it should be a cheap lookup.
   *
   * @default {undefined}
   */
  limitsFor?: (client: string) => ClientLimits | undefined;
  /**
   * Where state lives.
   *
   * @default {new MemoryLimiterStore()}
   */
  store?: LimiterStore;
  /**
   * The time source for rate limits.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

const DEFAULT_LIMITS: ClientLimits = Object.freeze({ concurrent: 10 });

/** Gives `_Lease` access to `ClientLimiter`'s private release, without a closure per lease. */
let releaseSlot: (limiter: ClientLimiter, client: string) => void;

class _Lease implements ClientLease {
  readonly client: string;
  #limiter: ClientLimiter | undefined;

  constructor(limiter: ClientLimiter, client: string) {
    this.#limiter = limiter;
    this.client = client;
  }

  [Symbol.dispose](): void {
    const limiter = this.#limiter;
    if (limiter === undefined) return;
    this.#limiter = undefined;
    releaseSlot(limiter, this.client);
  }
}

/**
 * Limits each client's concurrent connections (10 by default) and, optionally, the
 * rate at which it opens them. {@linkcode ClientLimiter.acquire} admits a connection
 * and returns a lease to dispose when the connection closes, or rejects with a
 * {@linkcode ClientLimitError}. Both limits are checked atomically together: a
 * refused connection spends no rate token and takes no slot.
 *
 * The rate limit is a token bucket; see {@linkcode MemoryLimiterStore} for why.
 *
 * @example Usage
 * ```ts
 * import { ClientLimiter, ClientLimitError } from "@mtlb/mtlb";
 * import { FakeClock } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const clock = new FakeClock();
 * const limiter = new ClientLimiter({
 *   clock,
 *   limitsFor: (client) =>
 *     client === "batch" ? { concurrent: 1, rate: { count: 2, per: 1000 } } : undefined,
 * });
 *
 * {
 *   using _lease = await limiter.acquire("batch");
 *   assert.equal(limiter.active("batch"), 1);
 *   await assert.rejects(
 *     limiter.acquire("batch"),
 *     (e) => e instanceof ClientLimitError && e.kind === "concurrency",
 *   );
 * }
 * assert.equal(limiter.active("batch"), 0);
 *
 * using _second = await limiter.acquire("batch", { concurrent: 5, rate: { count: 2, per: 1000 } });
 * await assert.rejects(
 *   limiter.acquire("batch", { concurrent: 5, rate: { count: 2, per: 1000 } }),
 *   (e) => e instanceof ClientLimitError && e.kind === "rate" && e.retryAfterMs === 500,
 * );
 * ```
 */
export class ClientLimiter {
  static {
    releaseSlot = (limiter, client) => limiter.#release(client);
  }

  #store: LimiterStore;
  #clock: Clock;
  #limits: ClientLimits;
  #limitsFor: ((client: string) => ClientLimits | undefined) | undefined;
  #active = new Map<string, number>();

  /**
   * Creates a limiter.
   *
   * @param options Default and per-client limits, the store and the clock.
   * @throws {RangeError} When `options.limits` is not valid.
   */
  constructor(options: ClientLimiterOptions = {}) {
    this.#limits = options.limits ?? DEFAULT_LIMITS;
    checkLimits(this.#limits);
    this.#limitsFor = options.limitsFor;
    this.#store = options.store ?? new MemoryLimiterStore();
    this.#clock = options.clock ?? systemClock;
  }

  /**
   * Admits one connection for `client`, or refuses it. With a synchronous store (the
   * default) admission happens before this returns and the promise is already settled.
   *
   * @param client The client name.
   * @param limits Limits for this call, instead of `limitsFor(client)` or the default.
   * @returns A lease to dispose when the connection closes.
   * @throws {ClientLimitError} When the client is at its concurrent cap or out of rate
   * tokens (as a rejection, like every error here).
   * @throws {TypeError} When `client` is not a non-empty string.
   * @throws {RangeError} When the limits are not valid.
   * @throws Whatever the store throws.
   */
  async acquire(client: string, limits?: ClientLimits): Promise<ClientLease> {
    if (typeof client !== "string" || client === "") {
      throw new TypeError(
        `Cannot limit client: name must be a non-empty string, received ${JSON.stringify(client)}`,
      );
    }
    const resolved = limits ?? this.#limitsFor?.(client) ?? this.#limits;
    checkLimits(resolved);
    const pending = this.#store.tryAcquire(client, resolved, this.#clock.now());
    const admission = pending instanceof Promise ? await pending : pending;
    if (!admission.admitted) {
      throw new ClientLimitError(
        client,
        admission.kind === "rate"
          ? {
            kind: "rate",
            limit: admission.limit,
            windowMs: resolved.rate?.per,
            retryAfterMs: admission.retryAfterMs,
          }
          : { kind: "concurrency", limit: admission.limit },
      );
    }
    this.#active.set(client, (this.#active.get(client) ?? 0) + 1);
    return new _Lease(this, client);
  }

  /**
   * The connections this limiter has admitted for `client` and not yet released
   * (with a shared store, this instance's share).
   *
   * @param client The client name.
   * @returns The number of open leases.
   */
  active(client: string): number {
    return this.#active.get(client) ?? 0;
  }

  /**
   * Open lease counts per client, for metrics and status pages. Clients with none
   * are absent.
   *
   * @returns A new map from client name to open leases.
   */
  snapshot(): Map<string, number> {
    return new Map(this.#active);
  }

  #release(client: string): void {
    const open = this.#active.get(client) ?? 0;
    if (open <= 1) this.#active.delete(client);
    else this.#active.set(client, open - 1);
    try {
      const done = this.#store.release(client, this.#clock.now());
      if (done instanceof Promise) {
        done.then(undefined, (error: unknown) => logReleaseFailure(client, error));
      }
    } catch (error) {
      logReleaseFailure(client, error);
    }
  }
}

function logReleaseFailure(client: string, error: unknown): void {
  logger.error("Cannot release connection slot of client {client}: {error}", { client, error });
}

function checkLimits(limits: ClientLimits): void {
  const { concurrent, rate } = limits;
  if (!(concurrent === Infinity || (Number.isSafeInteger(concurrent) && concurrent >= 1))) {
    throw new RangeError(
      `Cannot limit client: "concurrent" must be a positive integer or Infinity, received ${concurrent}`,
    );
  }
  if (rate === undefined) return;
  if (!(Number.isSafeInteger(rate.count) && rate.count >= 1)) {
    throw new RangeError(
      `Cannot limit client: "rate.count" must be a positive integer, received ${rate.count}`,
    );
  }
  if (!(Number.isFinite(rate.per) && rate.per > 0)) {
    throw new RangeError(
      `Cannot limit client: "rate.per" must be a positive number of milliseconds, received ${rate.per}`,
    );
  }
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
