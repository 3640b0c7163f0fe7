/**
 * A process's resident memory read at a steady pace while something runs, to find its
 * peak.
 *
 * @module
 */
import { Subprocess } from "./subprocess.ts";

/** One reading of a process's memory, from /proc/PID/status. */
export interface MemoryReading {
  /** `performance.now()` when it was read. */
  at: number;
  /** Resident memory (VmRSS), MiB. */
  rssMiB: number;
  /** Peak resident memory since the process started (VmHWM), MiB. */
  hwmMiB: number;
}

/**
 * Reads a process's VmRSS and VmHWM every `intervalMs` (one `sh` loop, so the readings
 * keep their pace) until disposed.
 *
 * @example Usage
 * ```ts
 * import { MemoryWatch } from "./memory_watch.ts";
 * import assert from "node:assert/strict";
 *
 * const since = performance.now();
 * {
 *   await using watch = new MemoryWatch(Deno.pid, 10);
 *   await watch.next();
 *   assert.ok(watch.peakSince(since) > 0);
 * }
 * ```
 */
export class MemoryWatch implements AsyncDisposable {
  /** The readings so far, oldest first. */
  readonly readings: MemoryReading[] = [];
  readonly #child: Subprocess;
  readonly #pump: Promise<void>;
  #waiters: (() => void)[] = [];

  /**
   * Starts reading.
   *
   * @param pid The process.
   * @param intervalMs The pace.
   */
  constructor(pid: number, intervalMs = 100) {
    const seconds = (intervalMs / 1000).toFixed(3);
    const child = new Subprocess([
      "sh",
      "-c",
      `while [ -e /proc/${pid}/status ]; do grep -hE '^(VmRSS|VmHWM):' /proc/${pid}/status | tr '\\n' ' '; echo; sleep ${seconds}; done`,
    ], { name: `memory of pid ${pid}` });
    this.#child = child;
    this.#pump = (async () => {
      for await (const line of child.stdout) {
        const field = (name: string): number =>
          Number(new RegExp(`${name}:\\s+(\\d+)`).exec(line)?.[1] ?? NaN) / 1024;
        const reading = { at: performance.now(), rssMiB: field("VmRSS"), hwmMiB: field("VmHWM") };
        if (Number.isFinite(reading.rssMiB)) this.readings.push(reading);
        for (const waiter of this.#waiters.splice(0)) waiter();
      }
      for (const waiter of this.#waiters.splice(0)) waiter();
    })();
  }

  /** Resolves at the next reading (or when the process is gone). */
  next(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /**
   * The highest resident memory read since `since` (`performance.now()`), MiB: the
   * highest VmRSS, or the VmHWM when it rose during the window (a peak between readings).
   *
   * @param since The start of the window.
   * @returns The peak, MiB (0 without a reading).
   */
  peakSince(since: number): number {
    const window = this.readings.filter((r) => r.at >= since);
    const before = this.readings.filter((r) => r.at < since).at(-1);
    let peak = Math.max(0, ...window.map((r) => r.rssMiB));
    const hwm = window.at(-1)?.hwmMiB;
    if (hwm !== undefined && (before === undefined || hwm > before.hwmMiB)) {
      peak = Math.max(peak, hwm);
    }
    return peak;
  }

  /** Stops reading. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#child.stop();
    await this.#pump;
  }
}
