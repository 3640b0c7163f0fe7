/**
 * One connection's hold on an upstream: the {@linkcode UpstreamLease} a
 * `LeastConnPool` hands out, and the {@linkcode PoolLease} that implements it.
 *
 * @module
 */
import type { HostPort } from "../core/address.ts";

/**
 * One connection's hold on an upstream: counted from the moment it is handed out
 * until it is disposed. Disposing (or {@linkcode UpstreamLease.release}) releases the
 * count exactly once; later calls do nothing.
 */
export interface UpstreamLease extends Disposable {
  /** The upstream, `host:port` as configured. */
  readonly address: string;
  /** The upstream's parsed address, ready for a `Dialer`. */
  readonly hostPort: HostPort;
  /** The upstream's current weight. */
  readonly weight: number;
  /** Whether the lease has been released. */
  readonly released: boolean;
  /** Releases the count; does nothing when already released. */
  release(): void;
}

/** What a {@linkcode PoolLease} reads of the upstream it holds, live. */
export interface LeasedUpstream {
  /** The upstream, `host:port` as configured. */
  readonly address: string;
  /** The upstream's parsed address. */
  readonly hostPort: HostPort;
  /** The upstream's current weight (it may change while the lease is held). */
  readonly weight: number;
}

/**
 * The {@linkcode UpstreamLease} of a `LeastConnPool`: it reads the pool's entry for
 * the upstream, so a weight changed by a reload shows at once, and calls back into
 * the pool exactly once on release.
 *
 * @example Usage
 * ```ts
 * import { PoolLease } from "./upstream_lease.ts";
 * import assert from "node:assert/strict";
 *
 * const upstream = { address: "10.0.0.1:80", hostPort: { hostname: "10.0.0.1", port: 80 }, weight: 1 };
 * let releases = 0;
 * {
 *   using lease = new PoolLease(upstream, () => releases++);
 *   lease.release();
 *   assert.equal(lease.released, true);
 * }
 * assert.equal(releases, 1);
 * ```
 *
 * @typeParam E The pool's entry for the upstream.
 */
export class PoolLease<E extends LeasedUpstream> implements UpstreamLease {
  #entry: E;
  #onRelease: (entry: E) => void;
  #released = false;

  /**
   * Creates a lease; the pool has already counted it.
   *
   * @param entry The upstream held.
   * @param onRelease Gives the count back; called once, on the first release.
   */
  constructor(entry: E, onRelease: (entry: E) => void) {
    this.#entry = entry;
    this.#onRelease = onRelease;
  }

  /** The upstream, `host:port` as configured. */
  get address(): string {
    return this.#entry.address;
  }

  /** The upstream's parsed address. */
  get hostPort(): HostPort {
    return this.#entry.hostPort;
  }

  /** The upstream's current weight. */
  get weight(): number {
    return this.#entry.weight;
  }

  /** Whether the lease has been released. */
  get released(): boolean {
    return this.#released;
  }

  /** Releases the count; does nothing when already released. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#onRelease(this.#entry);
  }

  /** Same as {@linkcode PoolLease.release}, for `using`. */
  [Symbol.dispose](): void {
    this.release();
  }
}
