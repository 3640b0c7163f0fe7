/**
 * Per-client bandwidth: one byte bucket per client and direction, shared by all the
 * client's connections, which the forwarder draws on as it reads (see
 * {@linkcode BandwidthLimiter}).
 *
 * @module
 */

import { type Clock, systemClock } from "../core/clock.ts";
import {
  type BandwidthRequest,
  type BandwidthStore,
  type Direction,
  MemoryBandwidthStore,
} from "./bandwidth_store.ts";

/**
 * What a forwarder calls after each read on a throttled direction: the bytes read,
 * answered with the milliseconds to wait before reading again (0: go on).
 */
export interface Throttle {
  /**
   * Draws `bytes` from the bucket.
   *
   * @param bytes Bytes just read.
   * @returns Milliseconds to wait, or a promise of them.
   */
  take(bytes: number): number | Promise<number>;
}

/** The two throttles of one connection. */
export interface ConnectionThrottles {
  /** Bytes from the client to the upstream. */
  readonly fromClient: Throttle;
  /** Bytes from the upstream to the client. */
  readonly fromUpstream: Throttle;
}

/** Options of {@linkcode BandwidthLimiter}. */
export interface BandwidthLimiterOptions {
  /**
   * Where the buckets live.
   *
   * @default {new MemoryBandwidthStore()}
   */
  store?: BandwidthStore;
  /**
   * The time source of the buckets; with a shared store, on the same time base in
   * every worker.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

/**
 * Limits the bytes per second of each client over all its connections, in each
 * direction: every connection of a client draws on the same two byte buckets (one
 * per direction), so a client's connections share its rate; a reader over the rate is
 * told to wait, never dropped. Draws are served in the order they are made, so
 * connections that read alike get alike shares.
 *
 * @example Usage
 * ```ts
 * import { BandwidthLimiter, FakeClock } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const limiter = new BandwidthLimiter({ clock: new FakeClock() });
 * const one = limiter.throttles("app", 1_000_000); // 1 MB/s each way
 * const two = limiter.throttles("app", 1_000_000); // a second connection: the same buckets
 * assert.equal(one.fromClient.take(50_000), 0); // the burst (50 ms of traffic)
 * assert.equal(two.fromClient.take(50_000), 50); // shared: wait 50 ms
 * assert.equal(two.fromUpstream.take(50_000), 0); // the other direction has its own
 * ```
 */
export class BandwidthLimiter {
  #store: BandwidthStore;
  #clock: Clock;

  /**
   * Creates a limiter.
   *
   * @param options The store and the clock.
   */
  constructor(options: BandwidthLimiterOptions = {}) {
    this.#store = options.store ?? new MemoryBandwidthStore();
    this.#clock = options.clock ?? systemClock;
  }

  /**
   * The throttles of one connection of `client`, for `forward()`'s `throttle` option.
   *
   * @param client The client's name.
   * @param bytesPerSecond The client's rate, each direction.
   * @returns One throttle per direction, drawing on the client's buckets.
   * @throws {TypeError} When `client` is not a non-empty string.
   * @throws {RangeError} When `bytesPerSecond` is not a positive finite number.
   */
  throttles(client: string, bytesPerSecond: number): ConnectionThrottles {
    if (typeof client !== "string" || client === "") {
      throw new TypeError(
        `Cannot limit bandwidth: client must be a non-empty string, received ${
          JSON.stringify(client)
        }`,
      );
    }
    if (!(Number.isFinite(bytesPerSecond) && bytesPerSecond > 0)) {
      throw new RangeError(
        `Cannot limit bandwidth: the rate must be a positive number of bytes per second, received ${bytesPerSecond}`,
      );
    }
    return {
      fromClient: new _Throttle(this.#store, this.#clock, client, "fromClient", bytesPerSecond),
      fromUpstream: new _Throttle(
        this.#store,
        this.#clock,
        client,
        "fromUpstream",
        bytesPerSecond,
      ),
    };
  }
}

/** One direction of one connection; reuses one request object for every draw. */
class _Throttle implements Throttle {
  #store: BandwidthStore;
  #clock: Clock;
  #request: { key: string; direction: Direction; bytes: number; bytesPerSecond: number };

  constructor(
    store: BandwidthStore,
    clock: Clock,
    key: string,
    direction: Direction,
    bytesPerSecond: number,
  ) {
    this.#store = store;
    this.#clock = clock;
    this.#request = { key, direction, bytes: 0, bytesPerSecond };
  }

  take(bytes: number): number | Promise<number> {
    const request = this.#request;
    request.bytes = bytes;
    // A store that answers later reads the request now: it is not changed before then.
    const answer = this.#store.take(request as BandwidthRequest, this.#clock.now());
    if (answer instanceof Promise) this.#request = { ...request };
    return answer;
  }
}
