/**
 * The contract between `BandwidthLimiter` and the places its byte buckets live: a
 * request to take bytes from one bucket, and the {@linkcode BandwidthStore}
 * interface that the memory, shared-memory and Redis stores implement. The bucket's
 * arithmetic is written once here ({@linkcode takeBytes}).
 *
 * @module
 */

/** Which way bytes go: from the client to its upstream, or back. */
export type Direction = "fromClient" | "fromUpstream";

/** One draw on a byte bucket: bytes already read, and the bucket's rate. */
export interface BandwidthRequest {
  /** The bucket's key (a client name): one bucket per key and direction. */
  readonly key: string;
  /** The direction: each has a bucket of its own. */
  readonly direction: Direction;
  /** Bytes read: a non-negative integer. */
  readonly bytes: number;
  /** The rate, bytes per second: a positive finite number. */
  readonly bytesPerSecond: number;
}

/**
 * Where `BandwidthLimiter` keeps its byte buckets, one per key and direction.
 * {@linkcode BandwidthStore.take} may answer synchronously or with a promise, so a
 * store may live in shared memory between workers or in Redis.
 */
export interface BandwidthStore {
  /**
   * Takes `request.bytes` from the bucket (which may go into debt: the bytes are
   * already read) and says how long the reader must wait before it reads again, so
   * that over time the bytes taken match the rate. Draws of several readers on one
   * bucket are served in the order they are made.
   *
   * @param request The bucket, the bytes and the rate.
   * @param now The current time in milliseconds (monotonic).
   * @returns Milliseconds to wait: 0 when the bucket was not in debt.
   */
  take(request: BandwidthRequest, now: number): number | Promise<number>;
}

/**
 * Milliseconds of traffic a full byte bucket holds: the burst a reader that was idle
 * may send at once. A window of 50 ms keeps a throttled stream smooth while reads
 * of up to 64 KiB (the largest a socket hands over) are not split.
 */
export const BURST_MS = 50;

/** The smallest burst, in bytes: one TLS record. */
export const MIN_BURST_BYTES = 16_384;

/**
 * The byte bucket's arithmetic (GCRA, the same model as the connection-rate bucket of
 * `token_bucket.ts`, counted in bytes): the bucket's state is the time it is full
 * again, `fullAt`; its capacity is {@linkcode BURST_MS} of traffic (at least
 * {@linkcode MIN_BURST_BYTES}).
 *
 * @example Usage
 * ```ts
 * import { takeBytes } from "@mtlb/mtlb/limiter";
 * import assert from "node:assert/strict";
 *
 * // 1 MB/s: a burst of 50 KB goes through at once, the next 10 KB waits 10 ms.
 * let answer = takeBytes(-Infinity, 50_000, 1_000_000, 0);
 * assert.deepEqual(answer, { fullAt: 50, waitMs: 0 });
 * answer = takeBytes(answer.fullAt, 10_000, 1_000_000, 0);
 * assert.deepEqual(answer, { fullAt: 60, waitMs: 10 });
 * ```
 *
 * @param fullAt When the bucket is full again (`-Infinity` for a new one).
 * @param bytes Bytes to take.
 * @param bytesPerSecond The rate.
 * @param now The current time in milliseconds.
 * @returns The new `fullAt` and the milliseconds to wait.
 */
export function takeBytes(
  fullAt: number,
  bytes: number,
  bytesPerSecond: number,
  now: number,
): { fullAt: number; waitMs: number } {
  const perMs = bytesPerSecond / 1000;
  const window = Math.max(BURST_MS, MIN_BURST_BYTES / perMs);
  const at = fullAt < now ? now : fullAt;
  const next = at + bytes / perMs;
  const wait = next - window - now;
  return { fullAt: next, waitMs: wait > 0 ? wait : 0 };
}

/**
 * The default {@linkcode BandwidthStore}: byte buckets in a `Map` in this process,
 * forgotten once full again.
 *
 * @example Usage
 * ```ts
 * import { MemoryBandwidthStore } from "@mtlb/mtlb/limiter";
 * import assert from "node:assert/strict";
 *
 * const store = new MemoryBandwidthStore();
 * const draw = { key: "app", direction: "fromClient", bytes: 50_000, bytesPerSecond: 1_000_000 } as const;
 * assert.equal(store.take(draw, 0), 0); // the burst
 * assert.equal(store.take(draw, 0), 50); // 50 KB more at 1 MB/s
 * assert.equal(store.take({ ...draw, direction: "fromUpstream" }, 0), 0); // its own bucket
 * ```
 */
export class MemoryBandwidthStore implements BandwidthStore {
  #fromClient = new Map<string, number>();
  #fromUpstream = new Map<string, number>();
  #sweepAt = 1024;

  /**
   * Takes bytes from a bucket; see {@linkcode BandwidthStore.take}.
   *
   * @param request The bucket, the bytes and the rate.
   * @param now The current time in milliseconds.
   * @returns Milliseconds to wait.
   */
  take(request: BandwidthRequest, now: number): number {
    const buckets = request.direction === "fromClient" ? this.#fromClient : this.#fromUpstream;
    const { fullAt, waitMs } = takeBytes(
      buckets.get(request.key) ?? -Infinity,
      request.bytes,
      request.bytesPerSecond,
      now,
    );
    if (buckets.size >= this.#sweepAt) {
      for (const [key, at] of buckets) if (at <= now) buckets.delete(key);
      this.#sweepAt = Math.max(1024, 2 * buckets.size);
    }
    buckets.set(request.key, fullAt);
    return waitMs;
  }

  /** Buckets held (keys and directions not yet swept once full). */
  get size(): number {
    return this.#fromClient.size + this.#fromUpstream.size;
  }
}
