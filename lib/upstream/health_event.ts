/**
 * The events a health source dispatches when an upstream changes state or is ejected.
 *
 * @module
 */

/** Why an upstream's health changed. */
export interface HealthChange {
  /** The upstream, `host:port` as configured. */
  address: string;
  /** The new state. */
  healthy: boolean;
  /** A short machine-readable reason, e.g. `probe_ok`, `probe_timeout`, `dial_refused`. */
  reason: string;
  /** Clock time of the change, in milliseconds. */
  at: number;
}

/**
 * Dispatched as `"change"` by a health source (such as `HealthProbe`) when an
 * upstream turns healthy or unhealthy.
 *
 * @example Usage
 * ```ts
 * import { HealthChangeEvent } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const target = new EventTarget();
 * let seen: HealthChangeEvent | undefined;
 * target.addEventListener("change", (e) => seen = e as HealthChangeEvent);
 * target.dispatchEvent(
 *   new HealthChangeEvent({ address: "127.0.0.1:6379", healthy: false, reason: "probe_timeout", at: 0 }),
 * );
 * assert.equal(seen?.change.healthy, false);
 * ```
 */
export class HealthChangeEvent extends Event {
  /** What changed. */
  readonly change: HealthChange;

  /**
   * Creates a `"change"` event.
   *
   * @param change What changed.
   */
  constructor(change: HealthChange) {
    super("change");
    this.change = change;
  }
}

/** An upstream that outlier detection took out of rotation, or let back. */
export interface EjectionChange {
  /** The upstream, `host:port` as configured. */
  address: string;
  /** Whether it is ejected now. */
  ejected: boolean;
  /**
   * The passive failure that ejected it (`dial_refused`, `dial_timeout`,
   * `dial_error`, `upstream_reset`, `upstream_timeout`), or `ejection_ended` when it
   * comes back.
   */
  reason: string;
  /** Clock time of the change, in milliseconds. */
  at: number;
  /** Clock time the ejection ends, while ejected. */
  until?: number;
}

/**
 * Dispatched as `"ejection"` by an outlier detector (such as `OutlierDetector`) when
 * an upstream is ejected for its passive failures, or comes back.
 *
 * @example Usage
 * ```ts
 * import { EjectionEvent } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const target = new EventTarget();
 * let seen: EjectionEvent | undefined;
 * target.addEventListener("ejection", (e) => seen = e as EjectionEvent);
 * target.dispatchEvent(
 *   new EjectionEvent({ address: "127.0.0.1:6379", ejected: true, reason: "dial_timeout", at: 0, until: 30_000 }),
 * );
 * assert.equal(seen?.change.until, 30_000);
 * ```
 */
export class EjectionEvent extends Event {
  /** What changed. */
  readonly change: EjectionChange;

  /**
   * Creates an `"ejection"` event.
   *
   * @param change What changed.
   */
  constructor(change: EjectionChange) {
    super("ejection");
    this.change = change;
  }
}
