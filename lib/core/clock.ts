/**
 * Injectable time: everything in mtlb that waits or stamps reads time through a
 * {@linkcode Clock}, so unit tests can drive it with {@linkcode FakeClock} and never sleep.
 *
 * @module
 */

/** An opaque handle returned by {@linkcode Clock.setTimeout}. */
export type TimerId = ReturnType<typeof setTimeout> | number;

/** A source of time and timers. */
export interface Clock {
  /**
   * Milliseconds on a monotonic-enough scale; only differences are meaningful.
   *
   * @returns The current time in milliseconds.
   */
  now(): number;
  /**
   * Calls `fn` once after `ms` milliseconds.
   *
   * @param fn The callback.
   * @param ms The delay in milliseconds.
   * @returns A handle for {@linkcode Clock.clearTimeout}.
   */
  setTimeout(fn: () => void, ms: number): TimerId;
  /**
   * Cancels a timer; unknown or fired handles are ignored.
   *
   * @param id The handle returned by {@linkcode Clock.setTimeout}.
   */
  clearTimeout(id: TimerId): void;
}

/**
 * The real clock: `performance.now()` and the runtime's timers.
 *
 * @example Usage
 * ```ts
 * import { systemClock } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const id = systemClock.setTimeout(() => {}, 1000);
 * systemClock.clearTimeout(id);
 * assert.ok(systemClock.now() >= 0);
 * ```
 */
export const systemClock: Clock = {
  now: (): number => performance.now(),
  setTimeout: (fn: () => void, ms: number): TimerId => setTimeout(fn, ms),
  clearTimeout: (id: TimerId): void => clearTimeout(id as number),
};

interface FakeTimer {
  id: TimerId;
  at: number;
  fn: () => void;
}

/**
 * A manual clock for tests: time moves only when {@linkcode FakeClock.advance} is
 * called, and due timers fire in order, synchronously, inside that call.
 *
 * @example Usage
 * ```ts
 * import { FakeClock } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const clock = new FakeClock();
 * let fired = 0;
 * clock.setTimeout(() => fired++, 100);
 * clock.advance(99);
 * assert.equal(fired, 0);
 * clock.advance(1);
 * assert.equal(fired, 1);
 * ```
 */
export class FakeClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers: FakeTimer[] = [];

  /**
   * Creates a clock that starts at `start` milliseconds.
   *
   * @param start The initial time.
   */
  constructor(start = 0) {
    this.#now = start;
  }

  /**
   * The current fake time.
   *
   * @returns Milliseconds.
   */
  now(): number {
    return this.#now;
  }

  /**
   * Schedules `fn` at `now() + ms`.
   *
   * @param fn The callback.
   * @param ms The delay; negative delays count as 0.
   * @returns The timer handle.
   */
  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.#nextId++;
    this.#timers.push({ id, at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  /**
   * Cancels a pending timer.
   *
   * @param id The timer handle.
   */
  clearTimeout(id: TimerId): void {
    this.#timers = this.#timers.filter((t) => t.id !== id);
  }

  /** The number of timers not yet fired. */
  get pending(): number {
    return this.#timers.length;
  }

  /**
   * Moves time forward by `ms`, firing every timer that becomes due, in time order
   * (timers scheduled by a callback fire too when they fall inside the step).
   *
   * @param ms Milliseconds to move forward.
   */
  advance(ms: number): void {
    if (ms < 0) throw new RangeError(`Cannot advance a clock backwards: received ${ms}`);
    const target = this.#now + ms;
    while (true) {
      let next: FakeTimer | undefined;
      for (const t of this.#timers) {
        if (t.at <= target && (next === undefined || t.at < next.at)) next = t;
      }
      if (next === undefined) break;
      this.#timers = this.#timers.filter((t) => t !== next);
      this.#now = next.at;
      next.fn();
    }
    this.#now = target;
  }
}
