/**
 * Private helper of the Redis-backed stores: one connection to Redis through
 * node-redis (`@redis/client`), Lua scripts run by SHA with a fallback to `EVAL`, a
 * hard timeout on every call, and a reset of a connection that stopped answering.
 *
 * @module
 */
import { createHash } from "node:crypto";
// @ts-types="./_redis_client.d.ts"
import { createClient, ErrorReply, type RedisClient } from "@redis/client";
import { getLogger } from "@logtape/logtape";
import type { Clock, TimerId } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";

const logger = getLogger(["mtlb", "cluster"]);

/** The longest wait between two reconnection attempts, in milliseconds. */
const MAX_RECONNECT_DELAY_MS = 1000;

/** A Lua script, sent by SHA1 (`EVALSHA`) and by text only when Redis lacks it. */
export class RedisScript {
  /** The script's source. */
  readonly lua: string;
  /** Its SHA1, as `SCRIPT LOAD` would report it. */
  readonly sha: string;

  /**
   * Creates the script.
   *
   * @param lua The Lua source.
   */
  constructor(lua: string) {
    this.lua = lua;
    this.sha = createHash("sha1").update(lua).digest("hex");
  }
}

/** Options of {@linkcode RedisConnection}. */
export interface RedisConnectionOptions {
  /** `redis://` or `rediss://` URL, checked by {@linkcode parseRedisUrl}. */
  url: string;
  /** The connection's `CLIENT SETNAME`, for `CLIENT LIST`. */
  name: string;
  /** Milliseconds a call may take before it fails. */
  timeout: number;
  /** Milliseconds {@linkcode RedisConnection.connect} waits for the first connection. */
  connectTimeout: number;
  /**
   * Milliseconds without any reply, with a call timing out, after which the
   * connection is dropped and opened anew (a peer that vanished without a reset).
   */
  staleAfter: number;
  /** The time source of timeouts. */
  clock: Clock;
  /** Called whenever the connection becomes ready (first time and after reconnects). */
  onReady: () => void;
}

/** Thrown when Redis does not answer a call within the timeout. */
export class RedisTimeoutError extends Error {
  /**
   * Creates the error.
   *
   * @param timeout The timeout that expired, in milliseconds.
   */
  constructor(timeout: number) {
    super(`Redis did not answer within ${formatDuration(timeout)}`);
    this.name = "RedisTimeoutError";
  }
}

/**
 * Checks a Redis URL and returns it with any password hidden, for logs.
 *
 * @param url `redis://[user:password@]host[:port][/db]` or `rediss://...` (TLS).
 * @returns The URL without credentials.
 * @throws {TypeError} When it is not a `redis:` or `rediss:` URL with a host.
 */
export function parseRedisUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new TypeError(`Cannot use Redis: invalid URL ${JSON.stringify(redact(url))}`, { cause });
  }
  if ((parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") || parsed.hostname === "") {
    throw new TypeError(
      `Cannot use Redis: URL must be redis://host:port or rediss://host:port, received ${
        JSON.stringify(redact(url))
      }`,
    );
  }
  parsed.username = "";
  parsed.password = "";
  return parsed.href;
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

/**
 * One Redis connection that never makes a caller wait longer than its timeout.
 * Commands are not queued while disconnected (they fail at once), and commands in
 * flight when the connection drops fail rather than being sent again: the stores
 * decide what an unknown outcome means.
 */
export class RedisConnection {
  #options: RedisConnectionOptions;
  #client: RedisClient | undefined;
  #lastReplyAt = 0;
  #closed = false;
  #warned = false;
  /** Settles when the current client's `connect()` settles (it never rejects). */
  #connecting: Promise<void> = Promise.resolve();

  /**
   * Creates the connection; nothing is opened until {@linkcode RedisConnection.connect}.
   *
   * @param options URL, name, timeouts, clock and ready callback.
   */
  constructor(options: RedisConnectionOptions) {
    this.#options = options;
  }

  /** Whether commands can be sent now. */
  get ready(): boolean {
    return this.#client?.isReady ?? false;
  }

  /**
   * Opens the connection, which then reconnects by itself whenever it drops, and
   * waits until it is ready or `connectTimeout` passes.
   *
   * @returns Whether the connection is ready.
   */
  async connect(): Promise<boolean> {
    if (this.#closed) return false;
    if (this.#client === undefined) this.#open();
    if (this.ready) return true;
    const client = this.#client!;
    const { clock, connectTimeout } = this.#options;
    let timer: TimerId | undefined;
    let onReady: (() => void) | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        onReady = resolve;
        client.once("ready", resolve);
      }),
      new Promise<void>((resolve) => timer = clock.setTimeout(resolve, connectTimeout)),
      this.#connecting,
    ]);
    clock.clearTimeout(timer!);
    client.off("ready", onReady!);
    return this.ready;
  }

  /**
   * Runs a script: `EVALSHA`, then `EVAL` if Redis does not have it (after a restart).
   *
   * @param script The script.
   * @param keys The keys it declares.
   * @param args Its arguments.
   * @returns The script's reply.
   * @throws {RedisTimeoutError} When Redis does not answer within the timeout.
   * @throws Whatever node-redis throws: offline, closed, or an error reply.
   */
  async run(
    script: RedisScript,
    keys: readonly string[],
    args: readonly string[],
  ): Promise<unknown> {
    const argv = [String(keys.length), ...keys, ...args];
    try {
      return await this.#call(["EVALSHA", script.sha, ...argv]);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith("NOSCRIPT"))) throw error;
      return await this.#call(["EVAL", script.lua, ...argv]);
    }
  }

  /**
   * Sends one command.
   *
   * @param command The command and its arguments, such as `["HGET", key, field]`.
   * @returns The reply.
   * @throws {RedisTimeoutError} When Redis does not answer within the timeout.
   * @throws Whatever node-redis throws: offline, closed, or an error reply.
   */
  send(command: readonly string[]): Promise<unknown> {
    return this.#call([...command]);
  }

  /**
   * Subscribes this connection to a channel; it then serves no other command. The
   * subscription is renewed on every reconnection (`onReady` is called then: messages
   * published meanwhile are lost).
   *
   * @param channel The channel.
   * @param listener Called with each message.
   * @throws {RedisTimeoutError} When Redis does not confirm within the timeout.
   * @throws Whatever node-redis throws: offline, closed, or an error reply (`NOPERM`).
   */
  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    const client = this.#client;
    if (client === undefined) throw new Error("Redis connection is closed");
    const { clock, timeout } = this.#options;
    let timer: TimerId | undefined;
    try {
      await Promise.race([
        client.subscribe(channel, (message) => listener(String(message))),
        new Promise<never>((_, reject) =>
          timer = clock.setTimeout(() => reject(new RedisTimeoutError(timeout)), timeout)
        ),
      ]);
      this.#lastReplyAt = clock.now();
    } finally {
      clock.clearTimeout(timer!);
    }
  }

  /** Closes the connection at once; calls in flight fail. */
  close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) this.#destroy(client);
    return this.#connecting;
  }

  #open(): void {
    const { url, name } = this.#options;
    const client: RedisClient = createClient({
      url,
      name,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: this.#options.connectTimeout,
        reconnectStrategy: (retries: number): number =>
          Math.min(50 * 2 ** Math.min(retries, 5), MAX_RECONNECT_DELAY_MS) +
          Math.floor(Math.random() * 50),
      },
    });
    client.on("error", (error: unknown) => {
      // The first error after being ready (or the first attempt) says why; the
      // reconnection attempts that follow would only repeat it.
      if (this.#warned) logger.debug("Redis connection {name}: {error}", { name, error });
      else logger.warning("Redis connection {name} failed: {error}", { name, error });
      this.#warned = true;
    });
    client.on("ready", () => {
      this.#warned = false;
      this.#lastReplyAt = this.#options.clock.now();
      if (this.#client === client) this.#options.onReady();
    });
    this.#client = client;
    this.#connecting = client.connect().then(() => {}, () => {});
  }

  #destroy(client: RedisClient): void {
    try {
      client.destroy();
    } catch {
      // Already closed.
    }
  }

  #call(command: string[]): Promise<unknown> {
    const client = this.#client;
    if (client === undefined) return Promise.reject(new Error("Redis connection is closed"));
    const { clock, timeout } = this.#options;
    return new Promise((resolve, reject) => {
      const timer = clock.setTimeout(() => {
        reject(new RedisTimeoutError(timeout));
        this.#maybeReset(client);
      }, timeout);
      client.sendCommand(command).then(
        (reply) => {
          clock.clearTimeout(timer);
          this.#lastReplyAt = clock.now();
          resolve(reply);
        },
        (error: unknown) => {
          clock.clearTimeout(timer);
          if (error instanceof ErrorReply) this.#lastReplyAt = clock.now(); // the server is alive
          reject(error);
        },
      );
    });
  }

  /** Drops a connection that has answered nothing for `staleAfter` and opens a new one. */
  #maybeReset(client: RedisClient): void {
    const { clock, staleAfter, name } = this.#options;
    if (this.#closed || this.#client !== client) return;
    if (clock.now() - this.#lastReplyAt < staleAfter) return;
    logger.warning(
      "Redis connection {name} answered nothing for {silence}: opening a new connection",
      { name, silence: formatDuration(Math.round(clock.now() - this.#lastReplyAt)) },
    );
    this.#destroy(client);
    this.#open();
  }
}
