/**
 * A {@linkcode Clock} whose timers share one timer of the clock under it: what a server
 * schedules per connection (connect timeouts, idle checks) costs a heap entry instead
 * of a runtime timer each.
 *
 * @module
 */
import type { Clock, TimerId } from "./clock.ts";

/** One scheduled callback, and its place in the heap. */
interface Entry {
  id: number;
  at: number;
  /** Order of scheduling: callbacks due at the same time run in this order. */
  seq: number;
  fn: () => void;
  index: number;
}

/**
 * Multiplexes any number of timers onto one timer of a base clock, armed for the
 * earliest of them. Scheduling a timer is a heap insertion; clearing one is a heap
 * removal, and leaves the base timer armed (it re-arms for the next due timer when it
 * fires), so a server whose connections each set and clear a timeout, within a second
 * of each other, touches the runtime's timers about once per timeout rather than twice
 * per connection. The base timer is cleared when no timer is left, so an idle process
 * holds no timer. Timers fire in time order, then in the order they were set; one that
 * throws propagates from the base timer's callback, after the rest were re-armed.
 *
 * @example Usage
 * ```ts
 * import { FakeClock } from "./clock.ts";
 * import { SharedTimerClock } from "./shared_timer_clock.ts";
 * import assert from "node:assert/strict";
 *
 * const base = new FakeClock();
 * const clock = new SharedTimerClock(base);
 * const fired: string[] = [];
 * clock.setTimeout(() => fired.push("b"), 200);
 * const a = clock.setTimeout(() => fired.push("a"), 100);
 * clock.setTimeout(() => fired.push("c"), 300);
 * assert.equal(base.pending, 1); // one timer under them all
 * clock.clearTimeout(a);
 * base.advance(300);
 * assert.deepEqual(fired, ["b", "c"]);
 * assert.equal(base.pending, 0);
 * ```
 */
export class SharedTimerClock implements Clock {
  #base: Clock;
  #heap: Entry[] = [];
  #entries = new Map<number, Entry>();
  #nextId = 1;
  #seq = 0;
  #armed: TimerId | undefined;
  /** When the base timer is armed for; `Infinity` when it is not. */
  #armedAt = Infinity;

  /**
   * Creates a clock over `base`.
   *
   * @param base The clock whose time it reads and whose timer it uses.
   */
  constructor(base: Clock) {
    this.#base = base;
  }

  /** Timers set and not yet fired or cleared. */
  get pending(): number {
    return this.#heap.length;
  }

  /**
   * The base clock's time.
   *
   * @returns Milliseconds.
   */
  now(): number {
    return this.#base.now();
  }

  /**
   * Calls `fn` once after `ms` milliseconds.
   *
   * @param fn The callback.
   * @param ms The delay; negative delays count as 0.
   * @returns A handle for {@linkcode SharedTimerClock.clearTimeout}.
   */
  setTimeout(fn: () => void, ms: number): TimerId {
    const entry: Entry = {
      id: this.#nextId++,
      at: this.#base.now() + Math.max(0, ms),
      seq: this.#seq++,
      fn,
      index: this.#heap.length,
    };
    this.#heap.push(entry);
    this.#up(entry.index);
    this.#entries.set(entry.id, entry);
    if (entry.at < this.#armedAt) this.#arm(entry.at);
    return entry.id;
  }

  /**
   * Cancels a timer; unknown or fired handles are ignored.
   *
   * @param id A handle from {@linkcode SharedTimerClock.setTimeout}.
   */
  clearTimeout(id: TimerId): void {
    const entry = this.#entries.get(id as number);
    if (entry === undefined) return;
    this.#entries.delete(entry.id);
    this.#remove(entry.index);
    if (this.#heap.length === 0) this.#disarm();
  }

  #arm(at: number): void {
    if (this.#armed !== undefined) this.#base.clearTimeout(this.#armed);
    this.#armedAt = at;
    this.#armed = this.#base.setTimeout(this.#fire, Math.max(0, at - this.#base.now()));
  }

  #disarm(): void {
    if (this.#armed !== undefined) this.#base.clearTimeout(this.#armed);
    this.#armed = undefined;
    this.#armedAt = Infinity;
  }

  #fire = (): void => {
    this.#armed = undefined;
    this.#armedAt = Infinity;
    const now = this.#base.now();
    try {
      while (this.#heap.length > 0 && this.#heap[0]!.at <= now) {
        const entry = this.#heap[0]!;
        this.#remove(0);
        this.#entries.delete(entry.id);
        entry.fn();
      }
    } finally {
      const next = this.#heap[0];
      if (next !== undefined && next.at < this.#armedAt) this.#arm(next.at);
    }
  };

  /** Whether entry `a` is due before entry `b`. */
  #before(a: Entry, b: Entry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #remove(index: number): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (index === heap.length) return;
    heap[index] = last;
    last.index = index;
    this.#down(index);
    this.#up(last.index);
  }

  #up(index: number): void {
    const heap = this.#heap;
    const entry = heap[index]!;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex]!;
      if (!this.#before(entry, parent)) break;
      heap[index] = parent;
      parent.index = index;
      index = parentIndex;
    }
    heap[index] = entry;
    entry.index = index;
  }

  #down(index: number): void {
    const heap = this.#heap;
    const entry = heap[index]!;
    const size = heap.length;
    while (true) {
      let child = 2 * index + 1;
      if (child >= size) break;
      if (child + 1 < size && this.#before(heap[child + 1]!, heap[child]!)) child++;
      if (!this.#before(heap[child]!, entry)) break;
      heap[index] = heap[child]!;
      heap[index]!.index = index;
      index = child;
    }
    heap[index] = entry;
    entry.index = index;
  }
}
