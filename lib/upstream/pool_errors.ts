/**
 * The errors a `LeastConnPool` throws when it cannot give a connection an upstream:
 * none is healthy, or every dial failed.
 *
 * @module
 */
import type { DialFailure } from "./upstream_connection.ts";

/**
 * Thrown when a pick finds no healthy upstream: the pool fails closed rather than
 * send a connection to an upstream known to be down.
 *
 * @example Usage
 * ```ts
 * import { LeastConnPool, NoHealthyUpstreamError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const pool = new LeastConnPool(["10.0.0.1:6379"], { initiallyHealthy: false });
 * assert.throws(() => pool.acquire(), NoHealthyUpstreamError);
 * ```
 */
export class NoHealthyUpstreamError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was found.
   * @param options The `cause`, if any.
   */
  constructor(message = "No healthy upstream", options?: ErrorOptions) {
    super(message, options);
    this.name = "NoHealthyUpstreamError";
  }
}

/**
 * Thrown by `LeastConnPool.connect` when every attempt failed. `attempts`
 * lists each failed dial in order; `cause` is the error that ended the loop (the last
 * dial's error, or a {@linkcode NoHealthyUpstreamError} when none was left to try).
 *
 * @example Usage
 * ```ts
 * import { UpstreamConnectError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const refused = new Error("connect ECONNREFUSED");
 * const error = new UpstreamConnectError(
 *   [{ address: "10.0.0.1:6379", reason: "dial_refused", error: refused }],
 *   { cause: refused },
 * );
 * assert.equal(error.attempts.length, 1);
 * assert.equal(error.cause, refused);
 * ```
 */
export class UpstreamConnectError extends Error {
  /** The failed dials, in order. */
  readonly attempts: readonly DialFailure[];

  /**
   * Creates the error.
   *
   * @param attempts The failed dials, in order.
   * @param options The `cause`.
   */
  constructor(attempts: readonly DialFailure[], options?: ErrorOptions) {
    super(
      `Cannot connect to an upstream: ${
        attempts.length === 0
          ? "no attempt was made"
          : attempts.map((a) => `${a.address} ${a.reason}`).join(", ")
      }`,
      options,
    );
    this.name = "UpstreamConnectError";
    this.attempts = attempts;
  }
}
