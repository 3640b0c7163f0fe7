/**
 * Per-client connection limits: a cap on concurrent connections and an optional
 * connection rate, keyed by the configured client name of an authenticated mTLS peer.
 *
 * State lives behind a {@linkcode LimiterStore} (`store.ts`); the default
 * {@linkcode MemoryLimiterStore} keeps it in this process, and a shared store
 * (shared memory between Workers, Redis between instances) can enforce the same
 * limits across threads, processes or instances.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";
import { MemoryLimiterStore } from "./memory_store.ts";
import type { ClientLimitKind, ClientLimits, LimiterStore } from "./store.ts";

const logger = getLogger(["mtlb", "limiter"]);

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
 * The rate limit is a token bucket (see `token_bucket.ts` for why).
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
