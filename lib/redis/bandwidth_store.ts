/**
 * A {@linkcode BandwidthStore} in Redis, so that a fleet of mtlb instances shares one
 * pair of byte buckets per client. Asking Redis for every read would cost a round
 * trip per read, so each instance takes the budget in leases: a share of the shared
 * bucket, at least `leaseMs` of traffic, that it then spends locally.
 *
 * Data model (`mtlb:` is the key prefix): `mtlb:bandwidth:<direction>:<client>`, the
 * time the client's bucket is full again (the arithmetic of `takeBytes()` in
 * `lib/limiter/bandwidth_store.ts`), on Redis' clock, expiring then.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { parseRedisUrl, RedisConnection, RedisScript } from "./_redis_connection.ts";
import {
  type BandwidthRequest,
  type BandwidthStore,
  BURST_MS,
  MemoryBandwidthStore,
  MIN_BURST_BYTES,
} from "../limiter/bandwidth_store.ts";
import { type Clock, systemClock } from "../core/clock.ts";

const logger = getLogger(["mtlb", "cluster"]);

/** Options of {@linkcode RedisBandwidthStore}. */
export interface RedisBandwidthStoreOptions {
  /** `redis://[user:password@]host[:port][/db]`, or `rediss://...` for TLS. */
  url: string;
  /**
   * The smallest lease, in milliseconds of traffic at the client's rate: the
   * precision of the sharing (see the class).
   *
   * @default {50}
   */
  leaseMs?: number;
  /**
   * Milliseconds a Redis call may take; past it the lease is taken from a local
   * bucket instead.
   *
   * @default {250}
   */
  timeout?: number;
  /**
   * Milliseconds {@linkcode RedisBandwidthStore.connect} waits for Redis.
   *
   * @default {2000}
   */
  connectTimeout?: number;
  /**
   * Prefix of every key, to share one Redis between fleets.
   *
   * @default {"mtlb:"}
   */
  keyPrefix?: string;
  /**
   * This instance's name in `CLIENT LIST`.
   *
   * @default {a random UUID}
   */
  instanceId?: string;
  /**
   * The time source of timeouts and of the local buckets.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

/** Counters of a {@linkcode RedisBandwidthStore}, for metrics. */
export interface RedisBandwidthStoreCounters {
  /** Leases taken from Redis. */
  readonly leases: number;
  /** Leases taken from a local bucket because Redis failed or was slow. */
  readonly fallbacks: number;
}

const DEFAULT_LEASE_MS = BURST_MS;
/** How long after a failure leases stay local before Redis is tried again. */
const RETRY_AFTER_MS = 1000;

/**
 * KEYS: the bucket. ARGV: bytes, bytes per second, burst window in ms, smallest burst
 * in bytes. Returns the wait in whole milliseconds, rounded up.
 * Mirrors takeBytes() of lib/limiter/bandwidth_store.ts on Redis' clock.
 */
const TAKE = new RedisScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local per_ms = tonumber(ARGV[2]) / 1000
local window = math.max(tonumber(ARGV[3]), tonumber(ARGV[4]) / per_ms)
local from = redis.call('GET', KEYS[1])
if from then from = tonumber(from) else from = now end
if from < now then from = now end
local full = from + tonumber(ARGV[1]) / per_ms
redis.call('SET', KEYS[1], string.format('%.17g', full), 'PX',
  string.format('%.0f', math.max(1, math.ceil(full - now))))
local wait = full - window - now
if wait <= 0 then return 0 end
return math.ceil(wait)
`);

/** What this instance holds of one bucket. */
interface Lease {
  /** Bytes leased and not yet spent (negative: spent ahead of the next lease). */
  balance: number;
  /** The lease being taken, which later draws wait for. */
  pending: Promise<number> | undefined;
  /** When the bucket was last drawn on, to forget idle ones. */
  usedAt: number;
}

/**
 * A {@linkcode BandwidthStore} shared by a fleet through Redis, by leases: a draw is
 * served from this instance's lease of the client's bucket while the lease lasts
 * (synchronously, no Redis call); when it runs out, the instance takes a new lease
 * of at least `leaseMs` of traffic (or the bytes it owes, if more) from the shared
 * bucket in one script, and waits what the shared bucket says.
 *
 * Precision: the fleet as a whole never takes more than the rate from the shared
 * bucket (plus its 50 ms burst); an instance may spend a lease (by default 50 ms of
 * traffic, as much as the burst, so a first lease waits nothing) up to one lease
 * earlier or later than a per-read exact bucket would, so over a window of `T`
 * the bytes moved are within `N × leaseMs` of traffic of the rate for `N`
 * instances drawing, and a lease an instance does not spend is lost to the others
 * (at most one per instance and client direction while the client is idle there).
 *
 * While Redis is down or slow, leases come from a local bucket per instance (each
 * instance then allows the full rate: throttling never drops a connection), and
 * Redis is tried again a second later.
 *
 * @example Usage
 * ```ts ignore
 * import { BandwidthLimiter, RedisBandwidthStore } from "@mtlb/mtlb";
 *
 * await using store = new RedisBandwidthStore({ url: "redis://127.0.0.1:6379" });
 * await store.connect();
 * const limiter = new BandwidthLimiter({ store });
 * const throttles = limiter.throttles("app", 10 * 1024 * 1024); // 10 MiB/s over the fleet
 * ```
 */
export class RedisBandwidthStore implements BandwidthStore, AsyncDisposable {
  #conn: RedisConnection;
  #clock: Clock;
  #leaseMs: number;
  #prefix: string;
  #leases = new Map<string, Lease>();
  #local = new MemoryBandwidthStore();
  #downUntil = -Infinity;
  #leasesTaken = 0;
  #fallbacks = 0;
  #sweepAt = 1024;

  /**
   * Creates the store; nothing connects until {@linkcode RedisBandwidthStore.connect}.
   *
   * @param options The Redis URL, the lease size and the timeouts.
   * @throws {TypeError} When the URL is not valid.
   * @throws {RangeError} When a duration is not a positive number.
   */
  constructor(options: RedisBandwidthStoreOptions) {
    parseRedisUrl(options.url);
    const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    const timeout = options.timeout ?? 250;
    const connectTimeout = options.connectTimeout ?? 2000;
    for (
      const [name, value] of [["leaseMs", leaseMs], ["timeout", timeout], [
        "connectTimeout",
        connectTimeout,
      ]] as const
    ) {
      if (!(Number.isFinite(value) && value > 0)) {
        throw new RangeError(
          `Cannot use Redis bandwidth store: "${name}" must be a positive number of milliseconds, received ${value}`,
        );
      }
    }
    this.#clock = options.clock ?? systemClock;
    this.#leaseMs = leaseMs;
    this.#prefix = `${options.keyPrefix ?? "mtlb:"}bandwidth:`;
    this.#conn = new RedisConnection({
      url: options.url,
      name: `mtlb-bandwidth:${options.instanceId ?? crypto.randomUUID()}`,
      timeout,
      connectTimeout,
      staleAfter: Math.max(4 * timeout, 1000),
      clock: this.#clock,
      onReady: () => this.#downUntil = -Infinity,
    });
  }

  /**
   * Connects to Redis; without an answer within `connectTimeout`, leases are local
   * until it answers.
   *
   * @returns Whether Redis answered.
   */
  async connect(): Promise<boolean> {
    const ready = await this.#conn.connect();
    if (!ready) this.#downUntil = this.#clock.now() + RETRY_AFTER_MS;
    return ready;
  }

  /**
   * Leases taken from Redis and from the local fallback so far.
   *
   * @returns A snapshot of the counters.
   */
  get counters(): RedisBandwidthStoreCounters {
    return { leases: this.#leasesTaken, fallbacks: this.#fallbacks };
  }

  /**
   * Takes bytes from this instance's lease of the bucket, and a new lease when it runs
   * out; see {@linkcode BandwidthStore.take}.
   *
   * @param request The bucket, the bytes and the rate.
   * @param now This process's clock in milliseconds (for the local fallback).
   * @returns 0 while the lease lasts, else a promise of the wait for the new lease.
   */
  take(request: BandwidthRequest, now: number): number | Promise<number> {
    const id = `${request.direction}:${request.key}`;
    let lease = this.#leases.get(id);
    if (lease === undefined) {
      if (this.#leases.size >= this.#sweepAt) this.#sweep(now);
      lease = { balance: 0, pending: undefined, usedAt: now };
      this.#leases.set(id, lease);
    }
    lease.usedAt = now;
    lease.balance -= request.bytes;
    if (lease.balance >= 0) return 0;
    const previous = lease.pending;
    const next: Promise<number> = (previous ?? Promise.resolve(0)).then(() =>
      this.#renew(lease, id, request)
    );
    lease.pending = next;
    next.finally(() => {
      if (lease.pending === next) lease.pending = undefined;
    });
    return next;
  }

  /** Takes a lease covering what `lease` owes, unless an earlier lease already did. */
  async #renew(lease: Lease, id: string, request: BandwidthRequest): Promise<number> {
    if (lease.balance >= 0) return 0;
    const rate = request.bytesPerSecond;
    const bytes = Math.max(-lease.balance, Math.ceil((rate * this.#leaseMs) / 1000));
    lease.balance += bytes;
    const now = this.#clock.now();
    if (now < this.#downUntil) return this.#fallback(request, bytes, now);
    try {
      const wait = await this.#conn.run(TAKE, [this.#prefix + id], [
        String(bytes),
        String(rate),
        String(BURST_MS),
        String(MIN_BURST_BYTES),
      ]);
      this.#leasesTaken++;
      this.#downUntil = -Infinity;
      return Number(wait);
    } catch (error) {
      if (this.#downUntil === -Infinity) {
        logger.warning(
          "Redis is unavailable: throttling bandwidth on this instance alone until it answers again: {error}",
          { error },
        );
      }
      this.#downUntil = this.#clock.now() + RETRY_AFTER_MS;
      return this.#fallback(request, bytes, this.#clock.now());
    }
  }

  #fallback(request: BandwidthRequest, bytes: number, now: number): number {
    this.#fallbacks++;
    return this.#local.take({ ...request, bytes }, now);
  }

  /** Forgets leases idle for a second (their remainder is lost to the fleet). */
  #sweep(now: number): void {
    for (const [id, lease] of this.#leases) {
      if (lease.pending === undefined && now - lease.usedAt > 1000) this.#leases.delete(id);
    }
    this.#sweepAt = Math.max(1024, 2 * this.#leases.size);
  }

  /**
   * Closes the connection.
   *
   * @returns Resolves once closed.
   */
  close(): Promise<void> {
    return this.#conn.close();
  }

  /**
   * Same as {@linkcode RedisBandwidthStore.close}, for `await using`.
   *
   * @returns Resolves once closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
