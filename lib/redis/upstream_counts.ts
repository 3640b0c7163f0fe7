/**
 * An {@linkcode UpstreamCounts} shared by a fleet of mtlb instances through Redis,
 * eventually consistent, so that least-connections balancing counts every
 * instance's connections.
 *
 * Data model (`mtlb:` is the key prefix):
 *
 * - `mtlb:upstreams:instances`: a sorted set of live instances, scored by the expiry
 *   time of their counts in Redis' clock.
 * - `mtlb:upstreams:counts:<instanceId>`: a hash, upstream address → that instance's
 *   active connections, expiring with its entry in the set.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { parseRedisUrl, RedisConnection, RedisScript } from "./_redis_connection.ts";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import type { UpstreamCounts } from "../upstream/upstream_counts.ts";

const logger = getLogger(["mtlb", "cluster"]);

/** Options of {@linkcode RedisUpstreamCounts}. */
export interface RedisUpstreamCountsOptions {
  /** `redis://[user:password@]host[:port][/db]`, or `rediss://...` for TLS. */
  url: string;
  /**
   * Milliseconds between two publications of this instance's counts: changes are
   * coalesced and published at most this often.
   *
   * @default {100}
   */
  publishInterval?: number;
  /**
   * Milliseconds between two reads of the other instances' counts (each read also
   * renews this instance's entry).
   *
   * @default {250}
   */
  pollInterval?: number;
  /**
   * Milliseconds this instance's counts outlive its last renewal in Redis (a crashed
   * instance's counts stop skewing the others after this), and how long the others'
   * last-known counts are used while Redis is unavailable. Must be more than three
   * times `pollInterval` and `timeout`.
   *
   * @default {5000}
   */
  ttl?: number;
  /**
   * Milliseconds a Redis call may take.
   *
   * @default {250}
   */
  timeout?: number;
  /**
   * Milliseconds {@linkcode RedisUpstreamCounts.connect} waits for Redis before it
   * starts with local counts only (and keeps trying in the background).
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
   * This instance's name in Redis and in `CLIENT LIST`: letters, digits, `.`, `_`,
   * `:` and `-`; unique among live instances.
   *
   * @default {a random UUID}
   */
  instanceId?: string;
  /**
   * The time source of publications, reads and timeouts.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

/** Counters of a {@linkcode RedisUpstreamCounts}, for metrics. */
export interface RedisUpstreamCountsCounters {
  /** Exchanges with Redis that failed, timed out, or found no connection. */
  readonly errors: number;
  /** Successful exchanges with Redis (publish and read). */
  readonly syncs: number;
}

const INSTANCE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * KEYS: instances, own counts. ARGV: id, ttl, counts prefix, publish ("1"/"0"), then
 * address, count pairs. Renews this instance, publishes its counts if asked, and
 * returns the other live instances' counts as a flat address, count list.
 */
const SYNC = new RedisScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local expires = string.format('%.0f', math.ceil(now + tonumber(ARGV[2])))
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now))
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[2])
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIREAT', KEYS[2], expires)
local out = {}
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #ids do
  if ids[i] ~= ARGV[1] then
    local counts = redis.call('HGETALL', ARGV[3] .. ids[i])
    for j = 1, #counts do out[#out + 1] = counts[j] end
  end
end
return out
`);

/** KEYS: instances, own counts. ARGV: id. */
const UNREGISTER = new RedisScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
`);

/**
 * Active connection counts per upstream, shared by a fleet through Redis: each
 * instance's own counts are exact and immediate, and the others' are added as last
 * read. Pass it as `counts` to {@linkcode LeastConnPool} on every instance.
 *
 * - `add()` changes this instance's count at once; changes are published to Redis
 *   coalesced, at most every `publishInterval` (100 ms).
 * - The other instances' counts are read every `pollInterval` (250 ms), and
 *   `get(address)` returns this instance's count plus their last-known sum. Both
 *   methods are synchronous and never touch the network.
 * - **Staleness bound**: a change on one instance is seen by the others within
 *   `publishInterval + pollInterval` plus two Redis round trips (each at most
 *   `timeout`): about 0.4 s by default, at most 0.85 s while Redis answers.
 * - A crashed instance's counts expire `ttl` (5 s) after its last renewal.
 * - While Redis is unavailable, the others' last-known counts are kept for `ttl`,
 *   then dropped: the instance balances on its own counts alone until Redis
 *   answers again. Balancing never waits on Redis.
 *
 * @example Usage
 * ```ts ignore
 * import { LeastConnPool, RedisUpstreamCounts } from "@mtlb/mtlb";
 *
 * await using counts = new RedisUpstreamCounts({ url: "redis://127.0.0.1:6379" });
 * await counts.connect();
 * const pool = new LeastConnPool(["10.0.0.1:6379", "10.0.0.2:6379"], { counts });
 * using lease = pool.acquire(); // the least loaded across the fleet, as last read
 * ```
 */
export class RedisUpstreamCounts implements UpstreamCounts, AsyncDisposable {
  #conn: RedisConnection;
  #url: string;
  #clock: Clock;
  #id: string;
  #publishInterval: number;
  #pollInterval: number;
  #ttl: number;
  #instancesKey: string;
  #countsPrefix: string;
  /** This instance's counts: exact. */
  #local = new Map<string, number>();
  /** The other instances' counts, summed, as last read. */
  #others = new Map<string, number>();
  #othersAt = -Infinity;
  /** Whether `#local` changed since it was last published. */
  #dirty = true;
  #mode: "shared" | "local" = "local";
  #everShared = false;
  #state: "new" | "connecting" | "started" | "closed" = "new";
  #closing: Promise<void> | undefined;
  #timer: TimerId | undefined;
  #timerAt = Infinity;
  #inFlight: Promise<void> | undefined;
  #lastSyncAt = -Infinity;
  #errors = 0;
  #syncs = 0;

  /**
   * Creates the counts; nothing connects until {@linkcode RedisUpstreamCounts.connect}.
   *
   * @param options The Redis URL, intervals and timeouts.
   * @throws {TypeError} When the URL or the instance id is not valid.
   * @throws {RangeError} When a duration is not a positive number, or `ttl` is not
   * more than three times `pollInterval` and `timeout`.
   */
  constructor(options: RedisUpstreamCountsOptions) {
    this.#url = parseRedisUrl(options.url);
    this.#publishInterval = positive("publishInterval", options.publishInterval ?? 100);
    this.#pollInterval = positive("pollInterval", options.pollInterval ?? 250);
    this.#ttl = positive("ttl", options.ttl ?? 5_000);
    const timeout = positive("timeout", options.timeout ?? 250);
    const connectTimeout = positive("connectTimeout", options.connectTimeout ?? 2_000);
    if (!(this.#ttl > 3 * Math.max(this.#pollInterval, timeout))) {
      throw new RangeError(
        `Cannot use Redis upstream counts: "ttl" (${this.#ttl}) must be more than three times "pollInterval" (${this.#pollInterval}) and "timeout" (${timeout})`,
      );
    }
    const id = options.instanceId ?? crypto.randomUUID();
    if (!INSTANCE_ID.test(id)) {
      throw new TypeError(
        `Cannot use Redis upstream counts: "instanceId" must be 1 to 128 letters, digits, ".", "_", ":" or "-", received ${
          JSON.stringify(id)
        }`,
      );
    }
    const prefix = options.keyPrefix ?? "mtlb:";
    this.#id = id;
    this.#clock = options.clock ?? systemClock;
    this.#instancesKey = `${prefix}upstreams:instances`;
    this.#countsPrefix = `${prefix}upstreams:counts:`;
    this.#conn = new RedisConnection({
      url: options.url,
      name: `mtlb-counts:${id}`,
      timeout,
      connectTimeout,
      staleAfter: this.#ttl / 3,
      clock: this.#clock,
      onReady: () => {
        // Redis may have restarted and lost this instance's counts: publish now.
        this.#dirty = true;
        this.#schedule(this.#clock.now());
      },
    });
  }

  /** This instance's id in Redis. */
  get instanceId(): string {
    return this.#id;
  }

  /**
   * `"shared"` while the last exchange with Redis succeeded; `"local"` before the
   * first one and after a failure.
   *
   * @returns The mode.
   */
  get mode(): "shared" | "local" {
    return this.#mode;
  }

  /**
   * Errors and successful exchanges so far.
   *
   * @returns A snapshot of the counters.
   */
  get counters(): RedisUpstreamCountsCounters {
    return { errors: this.#errors, syncs: this.#syncs };
  }

  /**
   * Connects, publishes this instance's counts and reads the others', then keeps
   * doing so every `pollInterval`. If Redis does not answer within `connectTimeout`,
   * it goes on with local counts and keeps trying. Calling it again does nothing.
   *
   * @returns Resolves after the first exchange, or once it gave up waiting.
   * @throws {Error} When closed.
   */
  async connect(): Promise<void> {
    if (this.#state === "closed") throw new Error("Cannot connect Redis upstream counts: closed");
    if (this.#state !== "new") return;
    this.#state = "connecting";
    const ready = await this.#conn.connect();
    if (this.#state !== "connecting") return;
    this.#state = "started";
    if (ready) await this.#sync();
    else {
      this.#errors++;
      logger.warning(
        "Cannot reach Redis at {url}: balancing on this instance's counts alone until it answers",
        { url: this.#url },
      );
      this.#schedule(this.#clock.now() + this.#pollInterval);
    }
  }

  /**
   * Changes this instance's count of `address` at once, and publishes it soon.
   *
   * @param address The upstream.
   * @param delta A whole number.
   * @returns The new count, as {@linkcode RedisUpstreamCounts.get} reads it.
   * @throws {RangeError} When `delta` is not an integer or this instance's count
   * would go below zero.
   */
  add(address: string, delta: number): number {
    const next = (this.#local.get(address) ?? 0) + delta;
    if (!Number.isSafeInteger(delta) || next < 0) {
      throw new RangeError(
        `Cannot change connection count of "${address}" by ${delta}: the count would be ${next}`,
      );
    }
    if (next === 0) this.#local.delete(address);
    else this.#local.set(address, next);
    if (delta !== 0) {
      this.#dirty = true;
      this.#schedule(this.#lastSyncAt + this.#publishInterval);
    }
    return next + (this.#others.get(address) ?? 0);
  }

  /**
   * Reads the fleet's count of `address`: this instance's, plus the others' as last read.
   *
   * @param address The upstream.
   * @returns The count, 0 when unknown.
   */
  get(address: string): number {
    return (this.#local.get(address) ?? 0) + (this.#others.get(address) ?? 0);
  }

  /**
   * Stops publishing and reading, removes this instance's counts from Redis and
   * closes the connection. Counting goes on locally.
   *
   * @returns Resolves once closed.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /**
   * Same as {@linkcode RedisUpstreamCounts.close}, for `await using`.
   *
   * @returns Resolves once closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    const registered = this.#state === "started" && this.#conn.ready;
    this.#state = "closed";
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
    if (registered) {
      try {
        await this.#conn.run(UNREGISTER, [this.#instancesKey, this.#countsPrefix + this.#id], [
          this.#id,
        ]);
      } catch (error) {
        logger.warning(
          "Cannot remove this instance's upstream counts from Redis; they expire within {ttl} ms: {error}",
          { ttl: this.#ttl, error },
        );
      }
    }
    await this.#conn.close();
    this.#others = new Map();
  }

  /** Makes sure an exchange happens no later than `at`. */
  #schedule(at: number): void {
    if (this.#state !== "started" || this.#timerAt <= at) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      // One exchange at a time: the one in flight schedules the next when it ends.
      if (this.#inFlight === undefined) void this.#sync();
    }, Math.max(0, at - this.#clock.now()));
  }

  #sync(): Promise<void> {
    this.#inFlight = this.#exchange().finally(() => {
      this.#inFlight = undefined;
      this.#schedule(
        this.#lastSyncAt + (this.#dirty ? this.#publishInterval : this.#pollInterval),
      );
    });
    return this.#inFlight;
  }

  async #exchange(): Promise<void> {
    this.#lastSyncAt = this.#clock.now();
    if (!this.#conn.ready) {
      this.#errors++;
      this.#unavailable(new Error(`Not connected to Redis at ${this.#url}`));
      return;
    }
    const publish = this.#dirty;
    this.#dirty = false;
    const args = [this.#id, String(this.#ttl), this.#countsPrefix, publish ? "1" : "0"];
    if (publish) { for (const [address, count] of this.#local) args.push(address, String(count)); }
    let reply: unknown;
    try {
      reply = await this.#conn.run(SYNC, [this.#instancesKey, this.#countsPrefix + this.#id], args);
    } catch (error) {
      if (publish) this.#dirty = true;
      this.#errors++;
      this.#unavailable(error);
      return;
    }
    const flat = reply as string[];
    const others = new Map<string, number>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const address = flat[i]!;
      others.set(address, (others.get(address) ?? 0) + Number(flat[i + 1]));
    }
    this.#others = others;
    this.#othersAt = this.#clock.now();
    this.#syncs++;
    if (this.#mode !== "shared") {
      this.#mode = "shared";
      if (this.#everShared) logger.warning("Redis is back: sharing upstream counts again");
      else {
        logger.info("Upstream counts are shared through Redis at {url} as {instance}", {
          url: this.#url,
          instance: this.#id,
        });
      }
      this.#everShared = true;
    }
  }

  /** Logs the first failure of an outage; drops the others' counts once older than `ttl`. */
  #unavailable(error: unknown): void {
    if (this.#mode === "shared") {
      this.#mode = "local";
      logger.warning(
        "Redis is unavailable: balancing on the other instances' last-known counts, then on this instance's alone: {error}",
        { error },
      );
    }
    if (this.#others.size > 0 && this.#clock.now() - this.#othersAt > this.#ttl) {
      this.#others = new Map();
    }
  }
}

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) {
    throw new RangeError(
      `Cannot use Redis store: "${name}" must be a positive number of milliseconds, received ${value}`,
    );
  }
  return value;
}
