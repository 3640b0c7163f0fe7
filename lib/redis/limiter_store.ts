/**
 * A {@linkcode LimiterStore} in Redis, so that a fleet of mtlb instances enforces one
 * concurrent cap and one connection rate per client between them.
 *
 * Data model (`mtlb:` is the key prefix):
 *
 * - `mtlb:limiter:instances`: a sorted set of live instance leases, scored by their
 *   expiry time in Redis' clock. A lease is named `<instanceId>#<generation>`; the
 *   generation changes each time the instance re-registers.
 * - `mtlb:limiter:slots:<lease>`: a hash, client name → slots that lease holds. It
 *   expires together with the lease, so a dead instance leaves nothing behind.
 * - `mtlb:limiter:rate:<client>`: the client's token bucket, as the time it is full
 *   again (GCRA, the arithmetic of `lib/limiter/token_bucket.ts`), expiring at that
 *   time: a full bucket is no key at all.
 *
 * One Lua script per acquire reads the live leases' counts for the client and its
 * bucket, and takes a slot and a token only if both limits pass; the time comes from
 * Redis `TIME`, never from an instance's clock.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { parseRedisUrl, RedisConnection, RedisScript } from "./_redis_connection.ts";
import { MemoryLimiterStore } from "../limiter/memory_store.ts";
import {
  type AcquireRequest,
  type Admission,
  ADMITTED,
  type LimiterStore,
  rateRefusal,
  StoreUnavailableError,
} from "../limiter/store.ts";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";

const logger = getLogger(["mtlb", "cluster"]);

/** What a shared store does while Redis is down or slow. */
export type StoreErrorPolicy = "local" | "closed";

/**
 * How a shared store decides now: `"shared"` through Redis; `"local"` on this
 * instance alone (Redis is unavailable, policy `"local"`); `"closed"` refusing new
 * connections (Redis is unavailable, policy `"closed"`).
 */
export type SharedStoreMode = "shared" | StoreErrorPolicy;

/** Options of {@linkcode RedisLimiterStore}. */
export interface RedisLimiterStoreOptions {
  /** `redis://[user:password@]host[:port][/db]`, or `rediss://...` for TLS. */
  url: string;
  /**
   * While Redis is down or slow: `"local"` applies each client's limits on this
   * instance alone (a fleet of N may then admit up to N times a cap), `"closed"`
   * refuses new connections with {@linkcode StoreUnavailableError}.
   *
   * @default {"local"}
   */
  onStoreError?: StoreErrorPolicy;
  /**
   * Milliseconds an instance's slots outlive its last heartbeat (sent every third of
   * this): the bound on how long a crashed instance's slots keep counting. Must be
   * more than three times `timeout`.
   *
   * @default {15000}
   */
  leaseTtl?: number;
  /**
   * Milliseconds a Redis call may take; past it the call counts as failed and
   * `onStoreError` applies.
   *
   * @default {250}
   */
  timeout?: number;
  /**
   * Milliseconds {@linkcode RedisLimiterStore.connect} waits for Redis before it
   * starts in the `onStoreError` mode (and keeps trying in the background).
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
   * `:` and `-`. It must be unique among live instances. A stable one (the host
   * name) lets a restarted instance drop its crashed predecessor's slots at once
   * instead of after `leaseTtl`.
   *
   * @default {a random UUID}
   */
  instanceId?: string;
  /**
   * The time source of heartbeats, retries and timeouts.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Where token buckets read the time: `"redis"`, Redis `TIME` inside each script (one
   * time base for the fleet, whatever the instances' clocks); or `"caller"`, the `now`
   * each `tryAcquire` is given (the `ClientLimiter`'s clock), for tests that drive time
   * with a `FakeClock`, or a fleet whose limiter clocks share one time base (the
   * default `performance.now()` does not: it starts with each process). Redis still
   * expires a bucket's key on its own clock; with `"caller"`, `leaseTtl` after the
   * bucket is due to be full, to absorb the drift between the clocks (a key that
   * outlives its bucket is harmless: it reads as a full bucket).
   *
   * @default {"redis"}
   */
  rateClock?: "redis" | "caller";
}

/** Counters of a {@linkcode RedisLimiterStore}, for metrics. */
export interface RedisLimiterStoreCounters {
  /** Redis calls that failed or timed out. */
  readonly errors: number;
  /** Acquisitions decided on this instance alone because Redis was unavailable. */
  readonly fallbacks: number;
  /** Acquisitions refused with {@linkcode StoreUnavailableError} (policy `"closed"`). */
  readonly refusals: number;
  /** Times this instance (re-)registered its slots in Redis, the first time included. */
  readonly resyncs: number;
}

const DEFAULT_LEASE_TTL_MS = 15_000;
const DEFAULT_TIMEOUT_MS = 250;
const DEFAULT_CONNECT_TIMEOUT_MS = 2_000;
/** The longest wait between two attempts to re-register while Redis is unavailable. */
const MAX_RETRY_INTERVAL_MS = 1_000;
/** A script's answer when the lease it names is not live in Redis. */
const LEASE_LOST = -1;
const INSTANCE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Lua prelude: Redis' clock in milliseconds, and integer formatting for commands
 * (`px` is at least 1: a bucket due within a fraction of a millisecond, or within
 * the precision of an epoch time in milliseconds, still gets a valid expiry).
 */
const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function int(x) return string.format('%.0f', math.ceil(x)) end
local function px(x) return string.format('%.0f', math.max(1, math.ceil(x))) end
`;

/**
 * KEYS: instances, own slots hash, then each scope's bucket.
 * ARGV: lease, slots prefix, the caller's now for the buckets ('' for Redis TIME), key
 * expiry slack, max wait, then per scope: key, concurrent (-1: none), rate count (0:
 * none), rate per.
 * Returns {1, waitMs} admitted, {0, 0, scope} concurrency, {0, 1, retryAfterMs, scope}
 * rate, {-1} lease lost (scope: 0-based index).
 * Mirrors MemoryLimiterStore.tryAcquire: concurrency first, scope by scope, a refusal
 * changes nothing (but the clamp of excess debt, which restates the same bucket). Each
 * bucket is lib/limiter/token_bucket.ts step for step: clampFullAt (no key: a full
 * bucket; the horizon is the max wait), takeToken, tokenWait with its 0.001 ms slack.
 */
const ACQUIRE = new RedisScript(`${PRELUDE}
local lease = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if lease <= now then return {-1} end
local n = (#ARGV - 5) / 4
local pruned = false
local leases
for s = 1, n do
  local concurrent = tonumber(ARGV[5 + 4 * s - 2])
  if concurrent >= 0 then
    if not pruned then
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now))
      leases = redis.call('ZRANGE', KEYS[1], 0, -1)
      pruned = true
    end
    local field = ARGV[5 + 4 * s - 3]
    local active = 0
    for i = 1, #leases do
      local c = redis.call('HGET', ARGV[2] .. leases[i], field)
      if c then active = active + tonumber(c) end
    end
    if active >= concurrent then return {0, 0, s - 1} end
  end
end
local t = now
if ARGV[3] ~= '' then t = tonumber(ARGV[3]) end
local slack = tonumber(ARGV[4])
local hz = tonumber(ARGV[5])
local nexts = {}
local wait = 0
local worst = 0
for s = 1, n do
  local count = tonumber(ARGV[5 + 4 * s - 1])
  if count > 0 then
    local per = tonumber(ARGV[5 + 4 * s])
    local from = redis.call('GET', KEYS[2 + s])
    if from then from = tonumber(from) else from = t end
    if from < t then from = t end
    if from > t + per + hz then
      from = t + per + hz
      redis.call('SET', KEYS[2 + s], string.format('%.17g', from), 'PX', px(per + hz + slack))
    end
    local full = from + per / count
    local w = full - per - t
    local due = 0
    if w > 0.001 then due = math.ceil(w - 0.001) end
    nexts[s] = full
    if due > wait then
      wait = due
      worst = s
    end
  end
end
if wait > hz then
  return {0, 1, wait - hz, worst - 1}
end
for s = 1, n do
  local full = nexts[s]
  if full then
    redis.call('SET', KEYS[2 + s], string.format('%.17g', full), 'PX', px(full - t + slack))
  end
  redis.call('HINCRBY', KEYS[2], ARGV[5 + 4 * s - 3], 1)
end
redis.call('PEXPIREAT', KEYS[2], int(lease))
return {1, wait}
`);

/**
 * KEYS: instances, own slots hash. ARGV: lease, then the keys to release. Returns 1,
 * or -1 when the lease is lost.
 */
const RELEASE = new RedisScript(`${PRELUDE}
local lease = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if lease <= now then return -1 end
for i = 2, #ARGV do
  if redis.call('HINCRBY', KEYS[2], ARGV[i], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[i]) end
end
return 1
`);

/** KEYS: instances, own slots hash. ARGV: lease, ttl. Returns 1, or 0 when the lease is lost. */
const HEARTBEAT = new RedisScript(`${PRELUDE}
local lease = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if lease <= now then return 0 end
local expires = int(now + tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('PEXPIREAT', KEYS[2], expires)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now))
return 1
`);

/** Lua: drops every lease of instance ARGV[1] (and its slots), given the slots prefix ARGV[2]. */
const DROP_LEASES = `
local mine = ARGV[1] .. '#'
local leases = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #leases do
  if string.sub(leases[i], 1, #mine) == mine then
    redis.call('ZREM', KEYS[1], leases[i])
    redis.call('DEL', ARGV[2] .. leases[i])
  end
end
`;

/**
 * KEYS: instances, new lease's slots hash. ARGV: instance id, slots prefix, new lease,
 * ttl, then client, count pairs. Replaces every lease of the instance by the new one.
 */
const REGISTER = new RedisScript(`${PRELUDE}${DROP_LEASES}
local expires = int(now + tonumber(ARGV[4]))
redis.call('DEL', KEYS[2])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIREAT', KEYS[2], expires)
redis.call('ZADD', KEYS[1], expires, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now))
return 1
`);

/** KEYS: instances. ARGV: instance id, slots prefix. */
const UNREGISTER = new RedisScript(`${DROP_LEASES}
return 1
`);

/**
 * A {@linkcode LimiterStore} shared by a fleet of instances through Redis: a client
 * capped at 10 gets 10 across all of them, and one token bucket per client is drawn
 * on by all of them.
 *
 * - **Atomic.** Each `tryAcquire` is one Lua script that checks the concurrent cap
 *   (summing the slots of every live instance) and the token bucket and takes both
 *   or nothing, with the same semantics as {@linkcode MemoryLimiterStore}; the rate's
 *   clock is Redis `TIME`. A release is one script too.
 * - **Crash-safe.** An instance's slots live under a lease it renews every
 *   `leaseTtl / 3`. If it dies, its slots stop counting at most `leaseTtl` (15 s by
 *   default) after its last renewal, and its keys expire with them.
 * - **Never waits on Redis for long.** Every call gives up after `timeout` (250 ms).
 *   A failed or timed-out call switches the store to its `onStoreError` policy:
 *   `"local"` limits each client on this instance alone (the instance's own open
 *   slots against the full cap, its own token bucket), `"closed"` refuses with
 *   {@linkcode StoreUnavailableError}. Both are logged once and counted.
 * - **Resyncs.** Every connection to Redis (the first, each reconnect, and retries
 *   while unavailable) re-registers this instance's open slots under a new lease,
 *   replacing its old ones, from its own exact count per client. So slots taken
 *   during a fallback are counted in Redis from then on, slots released meanwhile are
 *   gone, and a call whose outcome is unknown (a timeout) cannot leave a slot behind:
 *   a late script still naming the replaced lease changes nothing.
 *
 * Needs one Redis (tested with 7.0) reachable at one address: a standalone server,
 * or a primary behind an address that follows failover. Not Redis Cluster: a script
 * reads the keys of every instance.
 *
 * @example Usage
 * ```ts ignore
 * import { ClientLimiter, RedisLimiterStore } from "@mtlb/mtlb";
 *
 * await using store = new RedisLimiterStore({ url: "redis://127.0.0.1:6379" });
 * await store.connect();
 * const limiter = new ClientLimiter({ store, limits: { concurrent: 10 } });
 * {
 *   using _lease = await limiter.acquire("app"); // one of 10 slots across the fleet
 * }
 * console.log(store.mode, store.counters);
 * ```
 */
export class RedisLimiterStore implements LimiterStore, AsyncDisposable {
  #conn: RedisConnection;
  #url: string;
  #policy: StoreErrorPolicy;
  #leaseTtl: number;
  /** The caller's time for the buckets: `"caller"` mode. */
  #callerTime: boolean;
  #clock: Clock;
  #id: string;
  #instancesKey: string;
  #slotsPrefix: string;
  #ratePrefix: string;
  #mode: SharedStoreMode;
  /** This instance's open slots per client, wherever they were admitted: the truth. */
  #open = new Map<string, number>();
  /** Token buckets of the local fallback (its slots are not used). */
  #localRate = new MemoryLimiterStore();
  /** The lease the next script names; changes when a registration is sent. */
  #lease = "";
  #generation = 0;
  #syncing: Promise<void> | undefined;
  #syncAgain = false;
  #timer: TimerId | undefined;
  #state: "new" | "connecting" | "started" | "closed" = "new";
  #closing: Promise<void> | undefined;
  #everShared = false;
  #lastError: unknown;
  #errors = 0;
  #fallbacks = 0;
  #refusals = 0;
  #resyncs = 0;

  /**
   * Creates the store; nothing connects until {@linkcode RedisLimiterStore.connect}.
   *
   * @param options The Redis URL, the policy, lease and timeouts.
   * @throws {TypeError} When the URL, the policy, the rate clock or the instance id is
   * not valid.
   * @throws {RangeError} When a duration is not a positive number, or `leaseTtl` is
   * not more than three times `timeout`.
   */
  constructor(options: RedisLimiterStoreOptions) {
    const url = parseRedisUrl(options.url);
    const policy = options.onStoreError ?? "local";
    if (policy !== "local" && policy !== "closed") {
      throw new TypeError(
        `Cannot use Redis limiter store: "onStoreError" must be "local" or "closed", received ${
          JSON.stringify(policy)
        }`,
      );
    }
    const leaseTtl = positive("leaseTtl", options.leaseTtl ?? DEFAULT_LEASE_TTL_MS);
    const timeout = positive("timeout", options.timeout ?? DEFAULT_TIMEOUT_MS);
    const connectTimeout = positive(
      "connectTimeout",
      options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS,
    );
    if (!(leaseTtl > 3 * timeout)) {
      throw new RangeError(
        `Cannot use Redis limiter store: "leaseTtl" (${leaseTtl}) must be more than three times "timeout" (${timeout})`,
      );
    }
    const id = options.instanceId ?? crypto.randomUUID();
    if (!INSTANCE_ID.test(id)) {
      throw new TypeError(
        `Cannot use Redis limiter store: "instanceId" must be 1 to 128 letters, digits, ".", "_", ":" or "-", received ${
          JSON.stringify(id)
        }`,
      );
    }
    const rateClock = options.rateClock ?? "redis";
    if (rateClock !== "redis" && rateClock !== "caller") {
      throw new TypeError(
        `Cannot use Redis limiter store: "rateClock" must be "redis" or "caller", received ${
          JSON.stringify(rateClock)
        }`,
      );
    }
    const prefix = options.keyPrefix ?? "mtlb:";
    this.#url = url;
    this.#policy = policy;
    this.#mode = policy;
    this.#leaseTtl = leaseTtl;
    this.#callerTime = rateClock === "caller";
    this.#clock = options.clock ?? systemClock;
    this.#id = id;
    this.#instancesKey = `${prefix}limiter:instances`;
    this.#slotsPrefix = `${prefix}limiter:slots:`;
    this.#ratePrefix = `${prefix}limiter:rate:`;
    this.#conn = new RedisConnection({
      url: options.url,
      name: `mtlb-limiter:${id}`,
      timeout,
      connectTimeout,
      staleAfter: leaseTtl / 3,
      clock: this.#clock,
      onReady: () => {
        // Redis may have restarted and lost this instance's slots: register again.
        if (this.#state === "started") void this.#sync();
      },
    });
  }

  /** This instance's id in Redis. */
  get instanceId(): string {
    return this.#id;
  }

  /**
   * How the store decides now: through Redis (`"shared"`), on this instance alone
   * (`"local"`), or refusing (`"closed"`). Before {@linkcode RedisLimiterStore.connect}
   * succeeds, the `onStoreError` policy.
   *
   * @returns The mode.
   */
  get mode(): SharedStoreMode {
    return this.#mode;
  }

  /**
   * Errors, fallbacks, refusals and registrations so far.
   *
   * @returns A snapshot of the counters.
   */
  get counters(): RedisLimiterStoreCounters {
    return {
      errors: this.#errors,
      fallbacks: this.#fallbacks,
      refusals: this.#refusals,
      resyncs: this.#resyncs,
    };
  }

  /**
   * Connects to Redis and registers this instance, then renews its lease every
   * `leaseTtl / 3`. If Redis does not answer within `connectTimeout`, the store
   * starts in its `onStoreError` mode (check {@linkcode RedisLimiterStore.mode}) and
   * keeps trying in the background. Calling it again does nothing.
   *
   * @returns Resolves once connected and registered, or once it gave up waiting.
   * @throws {Error} When the store is closed.
   */
  async connect(): Promise<void> {
    if (this.#state === "closed") {
      throw new Error("Cannot connect Redis limiter store: it is closed");
    }
    if (this.#state !== "new") return;
    this.#state = "connecting";
    const ready = await this.#conn.connect();
    if (this.#state !== "connecting") return; // closed meanwhile
    this.#state = "started";
    if (ready) await this.#sync();
    else {
      this.#errors++;
      this.#lastError = new Error(`Cannot connect to Redis at ${this.#url} within the timeout`);
      this.#warnUnavailable(this.#lastError);
    }
    this.#schedule();
  }

  /**
   * Atomically checks every scope's limits across the fleet and takes a slot and a
   * token in each; see {@linkcode LimiterStore.tryAcquire}. While Redis is
   * unavailable, applies the `onStoreError` policy. Never waits longer than about
   * `timeout` (twice when this instance must first re-register because its lease
   * expired).
   *
   * @param request The scopes and their limits (already validated), and the wait.
   * @param now This process's clock, used by the local fallback's token buckets, and
   * by the shared ones with `rateClock: "caller"`.
   * @returns The admission or the refusal.
   * @throws {StoreUnavailableError} When Redis is unavailable and the policy is `"closed"`.
   * @throws {Error} When the store is not connected or is closed.
   */
  async tryAcquire(request: AcquireRequest, now: number): Promise<Admission> {
    if (this.#state !== "started") {
      throw new Error(
        `Cannot acquire from Redis limiter store: it is ${
          this.#state === "closed" ? "closed" : "not connected, call connect() first"
        }`,
      );
    }
    if (this.#mode !== "shared") return this.#fallback(request, now);
    return await this.#acquireShared(request, now, true);
  }

  /**
   * Gives back one of this instance's slots in each of `keys`; see
   * {@linkcode LimiterStore.release}. While Redis is unavailable the slots are given
   * back here only, and Redis learns at the next registration. Never rejects.
   *
   * @param keys The keys of the admission's scopes.
   * @param _now Unused: Redis keeps its own time.
   * @returns Nothing when nothing is sent to Redis, or a promise that settles once
   * Redis answered (or failed, which switches the store to its policy).
   */
  release(keys: readonly string[], _now: number): Promise<void> | void {
    const held = keys.filter((key) => this.#add(key, -1));
    if (held.length === 0) return;
    if (this.#mode !== "shared" || this.#state !== "started") return;
    const lease = this.#lease;
    return this.#conn.run(RELEASE, [this.#instancesKey, this.#slotsPrefix + lease], [
      lease,
      ...held,
    ]).then(
      (reply) => {
        if (reply === LEASE_LOST) this.#leaseLost(lease);
      },
      (error: unknown) => this.#fail(error),
    );
  }

  /**
   * Stops renewing, removes this instance's slots from Redis (so they free at once)
   * and closes the connection. Leases still open are then released here only.
   *
   * @returns Resolves once closed.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /**
   * Same as {@linkcode RedisLimiterStore.close}, for `await using`.
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
    if (registered) {
      try {
        await this.#conn.run(UNREGISTER, [this.#instancesKey], [this.#id, this.#slotsPrefix]);
      } catch (error) {
        logger.warning(
          "Cannot remove this instance's limiter slots from Redis; they expire within {ttl}: {error}",
          { ttl: formatDuration(this.#leaseTtl), error },
        );
      }
    }
    await this.#conn.close();
    await this.#syncing;
  }

  async #acquireShared(
    request: AcquireRequest,
    now: number,
    retry: boolean,
  ): Promise<Admission> {
    const lease = this.#lease;
    const { scopes } = request;
    const keys = [this.#instancesKey, this.#slotsPrefix + lease];
    const args = [
      lease,
      this.#slotsPrefix,
      this.#callerTime ? String(now) : "",
      this.#callerTime ? String(this.#leaseTtl) : "0",
      String(request.maxWaitMs ?? 0),
    ];
    for (const { key, limits } of scopes) {
      const rate = limits.rate;
      keys.push(this.#ratePrefix + key);
      args.push(
        key,
        limits.concurrent === Infinity ? "-1" : String(limits.concurrent),
        rate === undefined ? "0" : String(rate.count),
        rate === undefined ? "0" : String(rate.per),
      );
    }
    let reply: unknown;
    try {
      reply = await this.#conn.run(ACQUIRE, keys, args);
    } catch (error) {
      // The outcome is unknown: the script may yet run. The registration that ends
      // the fallback replaces this lease, so a late run changes nothing.
      this.#fail(error);
      return this.#fallback(request, now);
    }
    const [code, kind, third, fourth] = reply as [number, number?, number?, number?];
    if (code === LEASE_LOST) {
      if (retry && this.#mode === "shared" && this.#state === "started") {
        // Register again (unless a registration already replaced that lease), then retry.
        this.#leaseLost(lease);
        await this.#syncing;
        if (this.#mode === "shared" && this.#state === "started") {
          return this.#acquireShared(request, now, false);
        }
      } else if (!retry && this.#mode === "shared") {
        this.#fail(new Error("Redis does not hold this instance's lease after registering it"));
      }
      return this.#fallback(request, now);
    }
    if (code === 1) {
      for (const scope of scopes) this.#add(scope.key, 1);
      // Admitted under a lease that a registration sent meanwhile replaced, whose
      // snapshot did not include this slot: register again.
      if (lease !== this.#lease && this.#mode === "shared") void this.#sync();
      const waitMs = kind ?? 0;
      return waitMs > 0 ? { admitted: true, waitMs } : ADMITTED;
    }
    if (kind === 0) {
      const scope = third!;
      return {
        admitted: false,
        kind: "concurrency",
        limit: scopes[scope]!.limits.concurrent,
        scope,
      };
    }
    return rateRefusal(scopes, fourth!, third!);
  }

  #fallback(request: AcquireRequest, now: number): Admission {
    if (this.#policy === "closed") {
      this.#refusals++;
      throw new StoreUnavailableError({ cause: this.#lastError });
    }
    this.#fallbacks++;
    const { scopes } = request;
    for (let i = 0; i < scopes.length; i++) {
      const { key, limits } = scopes[i]!;
      if ((this.#open.get(key) ?? 0) >= limits.concurrent) {
        return { admitted: false, kind: "concurrency", limit: limits.concurrent, scope: i };
      }
    }
    const rated = scopes.filter((scope) => scope.limits.rate !== undefined);
    let answer: Admission = ADMITTED;
    if (rated.length > 0) {
      const local = rated.map(({ key, limits }) => ({
        key,
        limits: { concurrent: Infinity, rate: limits.rate! },
      }));
      answer = this.#localRate.tryAcquire({ ...request, scopes: local }, now);
      if (!answer.admitted) {
        return { ...answer, scope: scopes.indexOf(rated[answer.scope]!) };
      }
      this.#localRate.release(local.map((scope) => scope.key), now);
    }
    for (const scope of scopes) this.#add(scope.key, 1);
    return answer;
  }

  /** Changes this instance's count of `key`; returns false for a release of nothing. */
  #add(key: string, delta: 1 | -1): boolean {
    const open = (this.#open.get(key) ?? 0) + delta;
    if (open < 0) return false;
    if (open === 0) this.#open.delete(key);
    else this.#open.set(key, open);
    return true;
  }

  /**
   * Registers this instance's open slots under a new lease that replaces its old
   * ones. The store decides through Redis again from the moment the registration is
   * sent: later scripts queue behind it on the connection. Single-flight: a call
   * while one is in flight runs another after it.
   */
  #sync(): Promise<void> {
    if (this.#state !== "started") return Promise.resolve();
    if (this.#syncing !== undefined) {
      this.#syncAgain = true;
      return this.#syncing;
    }
    this.#syncAgain = false;
    const lease = `${this.#id}#${++this.#generation}`;
    const args = [this.#id, this.#slotsPrefix, lease, String(this.#leaseTtl)];
    let slots = 0;
    for (const [client, open] of this.#open) {
      args.push(client, String(open));
      slots += open;
    }
    const clients = this.#open.size;
    const wasShared = this.#mode === "shared";
    this.#lease = lease;
    this.#mode = "shared";
    this.#syncing = this.#conn.run(REGISTER, [this.#instancesKey, this.#slotsPrefix + lease], args)
      .then(
        () => {
          this.#resyncs++;
          // A call that failed meanwhile switched to the policy again: say nothing.
          if (this.#mode !== "shared" || this.#lease !== lease) return;
          if (!this.#everShared) {
            logger.info("Limiter shares its state through Redis at {url} as {instance}", {
              url: this.#url,
              instance: this.#id,
            });
          } else if (!wasShared) {
            logger.warning(
              "Redis is back: limiting through it again, with {slots} open slots of {clients} clients re-registered",
              { slots, clients },
            );
          }
          this.#everShared = true;
        },
        (error: unknown) => this.#fail(error),
      )
      .finally(() => {
        this.#syncing = undefined;
        if (this.#syncAgain && this.#mode === "shared" && this.#state === "started") {
          void this.#sync();
        }
      });
    return this.#syncing;
  }

  /** Handles a script's report that `lease` is not live; returns whether it re-registers. */
  #leaseLost(lease: string): boolean {
    if (lease !== this.#lease || this.#mode !== "shared" || this.#state !== "started") {
      return false;
    }
    logger.warning(
      "This instance's limiter lease had expired in Redis (no renewal for {ttl}): re-registering its slots",
      { ttl: formatDuration(this.#leaseTtl) },
    );
    void this.#sync();
    return true;
  }

  /** Counts a failed call and, once per outage, switches to the policy and logs it. */
  #fail(error: unknown): void {
    this.#errors++;
    this.#lastError = error;
    if (this.#state === "closed" || this.#mode !== "shared") return;
    this.#mode = this.#policy;
    this.#warnUnavailable(error);
    this.#schedule();
  }

  #warnUnavailable(error: unknown): void {
    logger.warning(
      this.#policy === "local"
        ? "Redis is unavailable: limiting clients on this instance alone until it answers again: {error}"
        : "Redis is unavailable: refusing new connections until it answers again: {error}",
      { error },
    );
  }

  /** Renews the lease every `leaseTtl / 3`, or retries every second while unavailable. */
  #schedule(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#state !== "started") return;
    const interval = this.#mode === "shared"
      ? this.#leaseTtl / 3
      : Math.min(MAX_RETRY_INTERVAL_MS, this.#leaseTtl / 3);
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#mode === "shared") void this.#heartbeat();
      else if (this.#conn.ready && this.#syncing === undefined) void this.#sync();
      this.#schedule();
    }, interval);
  }

  async #heartbeat(): Promise<void> {
    const lease = this.#lease;
    let alive: unknown;
    try {
      alive = await this.#conn.run(HEARTBEAT, [this.#instancesKey, this.#slotsPrefix + lease], [
        lease,
        String(this.#leaseTtl),
      ]);
    } catch (error) {
      this.#fail(error);
      return;
    }
    if (alive === 0) this.#leaseLost(lease);
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
