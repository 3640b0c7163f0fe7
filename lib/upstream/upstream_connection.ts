/**
 * What `LeastConnPool.connect` takes and gives: the dialer and its bounds, the
 * connected socket with its lease, and the record of each failed dial.
 *
 * @module
 */
import type { Dialer } from "./dial.ts";
import type { UpstreamLease } from "./upstream_lease.ts";

/** Why a dial counted as failed: refused, timed out, or any other error. */
export type DialFailureReason = "dial_refused" | "dial_timeout" | "dial_error";

/** One failed dial made by `LeastConnPool.connect`. */
export interface DialFailure {
  /** The upstream dialled. */
  address: string;
  /** How the dial failed. */
  reason: DialFailureReason;
  /** The dialer's error, or the timeout's `TimeoutError`. */
  error: unknown;
}

/**
 * Options of `LeastConnPool.connect`.
 *
 * @typeParam S The socket type the dialer produces.
 */
export interface UpstreamConnectOptions<S> {
  /** Opens the connection; it must reject (and close what it opened) when its signal aborts. */
  dial: Dialer<S>;
  /** Connect timeout of each attempt, in milliseconds (positive). */
  timeout: number;
  /**
   * The most dials to make. Each retry goes to an upstream this call has not tried
   * yet: an available one if any is left, else an ejected one whose health checks
   * pass (as a redispatch would); only when every healthy upstream has been tried
   * are tried ones dialled again (a group of one upstream dials it `attempts` times),
   * except those whose failure `isFinal` says a retry would not fix.
   *
   * @default {the number of healthy upstreams when the call starts (at least 1)}
   */
  attempts?: number;
  /** Aborts the whole call; its reason is rethrown. */
  signal?: AbortSignal;
  /**
   * Called for each failed dial: a passive health signal. A refused or failed dial is
   * reported with its count already released; a dial past its connect timeout is
   * reported then (`dial_timeout`), while it keeps racing the next attempt. Errors it
   * throws are logged and otherwise ignored.
   */
  onDialFailure?: (address: string, reason: DialFailureReason, error: unknown) => void;
  /**
   * Whether a dial's error is one that dialling the same upstream again would not fix,
   * such as a certificate that does not verify: that upstream is then not dialled
   * again by this call (retries still go to others).
   *
   * @default {every failure may be retried}
   */
  isFinal?: (error: unknown) => boolean;
  /**
   * Closes a socket that connected after another attempt won (or after the call
   * failed), which nobody will use.
   *
   * @default {calls the socket's `destroy()`, if it has one}
   */
  close?: (socket: S) => void;
}

/**
 * A connected upstream socket and the lease that counts it; dispose the lease when
 * the socket closes.
 *
 * @typeParam S The socket type.
 */
export interface UpstreamConnection<S> {
  /** The connected socket, now owned by the caller. */
  socket: S;
  /** The count held for the connection. */
  lease: UpstreamLease;
  /** The dials that failed before this one connected, in order: the retries made. */
  failures: readonly DialFailure[];
}
