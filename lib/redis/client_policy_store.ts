/**
 * {@linkcode RedisClientPolicyStore}: the fleet's client policy (the `[clients]`
 * table every instance with `[cluster] clients = "shared"` serves) kept in Redis, one
 * hash written whole by one script (the document, its SHA-256, when it was pushed and
 * its version, one more than the last), and each new version announced on a channel.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Clock, systemClock } from "../core/clock.ts";
import { parseRedisUrl, RedisConnection, RedisScript } from "./_redis_connection.ts";

/** A client policy as the store holds it. */
export interface StoredClientPolicy {
  /** Its version: 1 for the first push, one more for each push after it. */
  version: number;
  /** The `[clients]` table, as TOML. */
  document: string;
  /** The SHA-256 of `document`, hex. */
  sha256: string;
  /** When it was pushed, ISO 8601 (the Redis server's clock). */
  pushedAt: string;
}

/** Options of {@linkcode RedisClientPolicyStore}. */
export interface RedisClientPolicyStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://...`. */
  url: string;
  /**
   * Milliseconds a call may take.
   *
   * @default {1000}
   */
  timeout?: number;
  /**
   * Milliseconds {@linkcode RedisClientPolicyStore.connect} waits for Redis.
   *
   * @default {2000}
   */
  connectTimeout?: number;
  /**
   * Prefix of the key and channel: `PREFIXpolicy:clients`.
   *
   * @default {"mtlb:"}
   */
  keyPrefix?: string;
  /**
   * The connections' name in `CLIENT LIST`.
   *
   * @default {"mtlb-policy"}
   */
  name?: string;
  /**
   * Called whenever the subscription is (re)established, after a reconnection too:
   * versions announced while it was down were missed.
   *
   * @default {nothing}
   */
  onSubscribed?: () => void;
  /**
   * The time source of timeouts.
   *
   * @default {the system clock}
   */
  clock?: Clock;
}

/**
 * Thrown by {@linkcode RedisClientPolicyStore.push} when the Redis user may not write
 * the policy (`NOPERM`): instances should run as such a user, pushes not.
 */
export class ClientPolicyPermissionError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was refused.
   * @param options The Redis error reply.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ClientPolicyPermissionError";
  }
}

/**
 * Lua: KEYS[1] the policy hash; ARGV document, sha256, channel. Writes the document
 * and the next version in one HSET (nothing half written), then announces the
 * version; returns `{version, pushed_at_ms, publish_error, unchanged}`. A document
 * equal to the stored one changes nothing.
 */
const PUSH = new RedisScript(`
local stored = redis.call('HMGET', KEYS[1], 'version', 'sha256', 'pushed_at')
if stored[1] and stored[2] == ARGV[2] then return {tonumber(stored[1]), stored[3], '', 1} end
local version = tonumber(stored[1] or '0') + 1
local t = redis.call('TIME')
local at = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('HSET', KEYS[1], 'version', version, 'document', ARGV[1], 'sha256', ARGV[2],
  'pushed_at', at)
local published = redis.pcall('PUBLISH', ARGV[3], version)
local problem = ''
if type(published) == 'table' and published.err then problem = published.err end
return {version, at, problem, 0}
`);

const FIELDS = ["version", "document", "sha256", "pushed_at"] as const;

/**
 * The fleet's client policy in Redis. `push` writes a new version (it needs a Redis
 * user allowed to write the policy key); `read`, `version` and `subscribe` are what
 * instances use, and need only read access to the key and the channel.
 *
 * @example Usage
 * ```ts ignore
 * import { RedisClientPolicyStore } from "@mtlb/mtlb/redis";
 *
 * await using store = new RedisClientPolicyStore({ url: "redis://127.0.0.1:6379" });
 * await store.connect();
 * const pushed = await store.push('[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["echo"]\n');
 * console.log(pushed.version, (await store.read())?.sha256);
 * ```
 */
export class RedisClientPolicyStore implements AsyncDisposable {
  #options: RedisClientPolicyStoreOptions;
  #conn: RedisConnection;
  #subscriber: RedisConnection | undefined;
  #key: string;
  #url: string;
  #clock: Clock;

  /**
   * Creates the store; nothing connects until {@linkcode RedisClientPolicyStore.connect}.
   *
   * @param options The Redis URL, timeouts and key prefix.
   * @throws {TypeError} When the URL is not a Redis URL.
   */
  constructor(options: RedisClientPolicyStoreOptions) {
    this.#url = parseRedisUrl(options.url);
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#key = `${options.keyPrefix ?? "mtlb:"}policy:clients`;
    this.#conn = this.#connection("", () => {});
  }

  /** The Redis URL, without credentials. */
  get url(): string {
    return this.#url;
  }

  /** The key holding the policy, which is also the channel announcing its versions. */
  get key(): string {
    return this.#key;
  }

  /**
   * Connects, waiting at most `connectTimeout`; the connection keeps trying after.
   *
   * @returns Whether Redis answered.
   */
  connect(): Promise<boolean> {
    return this.#conn.connect();
  }

  /**
   * Publishes a new version of the policy and announces it; a document equal to
   * the one stored changes nothing (`unchanged`).
   *
   * @param document The `[clients]` table as TOML, validated already.
   * @returns The policy as stored, with its version; `announced` is false when the
   *   user may write the policy but not publish on its channel.
   * @throws {ClientPolicyPermissionError} When the Redis user may not write it.
   * @throws {Error} When Redis cannot be reached or does not answer in time.
   */
  async push(
    document: string,
  ): Promise<StoredClientPolicy & { announced: boolean; unchanged: boolean }> {
    const sha256 = createHash("sha256").update(document).digest("hex");
    let reply: unknown;
    try {
      reply = await this.#conn.run(PUSH, [this.#key], [document, sha256, this.#key]);
    } catch (error) {
      if (error instanceof Error && /NOPERM/.test(error.message)) {
        throw new ClientPolicyPermissionError(
          `the Redis user may not write ${this.#key} (${
            error.message.replace(/^.*?(NOPERM)/s, "$1").split("\n")[0]
          }); push as a user allowed to write it`,
          { cause: error },
        );
      }
      throw error;
    }
    const [version, at, problem, unchanged] = reply as [number, string, string, number];
    return {
      version: Number(version),
      document,
      sha256,
      pushedAt: new Date(Number(at)).toISOString(),
      announced: problem === "",
      unchanged: unchanged === 1,
    };
  }

  /**
   * Reads the policy in the store.
   *
   * @returns The policy, or `undefined` when none was ever pushed.
   * @throws {Error} When Redis cannot be reached, does not answer, or refuses (`NOPERM`).
   */
  async read(): Promise<StoredClientPolicy | undefined> {
    const reply = await this.#conn.send(["HMGET", this.#key, ...FIELDS]) as (string | null)[];
    const [version, document, sha256, pushedAt] = reply;
    if (version === null || version === undefined || document === null || document === undefined) {
      return undefined;
    }
    return {
      version: Number(version),
      document,
      sha256: sha256 ?? createHash("sha256").update(document).digest("hex"),
      pushedAt: new Date(Number(pushedAt ?? 0)).toISOString(),
    };
  }

  /**
   * Reads only the version in the store and its document's SHA-256: the cheap
   * periodic check.
   *
   * @returns Both, or `undefined` when no policy was ever pushed.
   * @throws {Error} When Redis cannot be reached, does not answer, or refuses.
   */
  async head(): Promise<{ version: number; sha256: string } | undefined> {
    const [version, sha256] = await this.#conn.send(
      ["HMGET", this.#key, "version", "sha256"],
    ) as (string | null)[];
    if (version === null || version === undefined) return undefined;
    return { version: Number(version), sha256: sha256 ?? "" };
  }

  /**
   * Listens to the versions announced on a connection of its own, renewed on every
   * reconnection (then `onSubscribed` is called again).
   *
   * @param listener Called with each version announced.
   * @returns Whether the subscription is in place now (else it is retried as Redis
   *   comes back).
   */
  async subscribe(listener: (version: number) => void): Promise<boolean> {
    if (this.#subscriber !== undefined) throw new Error("Already subscribed");
    const onMessage = (message: string): void => {
      const version = Number(message);
      if (Number.isSafeInteger(version)) listener(version);
    };
    let subscribed = false;
    let pending: Promise<void> | undefined;
    const subscribe = (): Promise<void> =>
      pending ??= subscriber.subscribe(this.#key, onMessage).then(
        () => {
          subscribed = true;
        },
        () => {
          // Not subscribed yet: tried again at the next reconnection; the periodic
          // version check covers the gap.
          pending = undefined;
        },
      );
    // node-redis subscribes again by itself after a reconnection; the first time is ours.
    const ready = async (): Promise<void> => {
      if (!subscribed) await subscribe();
      if (subscribed) this.#options.onSubscribed?.();
    };
    const subscriber: RedisConnection = this.#connection(":events", () => void ready());
    this.#subscriber = subscriber;
    if (await subscriber.connect()) await subscribe();
    return subscribed;
  }

  /** Closes both connections. */
  async close(): Promise<void> {
    await Promise.all([this.#conn.close(), this.#subscriber?.close()]);
  }

  /** Same as {@linkcode RedisClientPolicyStore.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #connection(suffix: string, onReady: () => void): RedisConnection {
    const timeout = this.#options.timeout ?? 1000;
    return new RedisConnection({
      url: this.#options.url,
      name: `${this.#options.name ?? "mtlb-policy"}${suffix}`,
      timeout,
      connectTimeout: this.#options.connectTimeout ?? 2000,
      staleAfter: Math.max(5 * timeout, 5000),
      clock: this.#clock,
      onReady,
    });
  }
}
