/**
 * The event a health source dispatches when an upstream changes state.
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
