/**
 * The part of node-redis (`@redis/client`) that mtlb uses, declared here instead of
 * loading the package's own declarations: those reference `@types/node`, whose
 * global `Event` types clash with Deno's wherever `@types/node` is resolvable.
 *
 * @module
 */

/** Options of {@linkcode createClient} that mtlb sets. */
export interface RedisClientOptions {
  /** `redis://` or `rediss://` URL. */
  url: string;
  /** `CLIENT SETNAME` on every connection. */
  name?: string;
  /** Fail commands at once while disconnected instead of queueing them. */
  disableOfflineQueue?: boolean;
  /** Socket options. */
  socket?: {
    /** Milliseconds a connection attempt may take. */
    connectTimeout?: number;
    /** Milliseconds to wait before the next reconnection attempt. */
    reconnectStrategy?: (retries: number, cause: Error) => number | false | Error;
  };
}

/** A node-redis client. */
export interface RedisClient {
  /** Whether commands can be sent now. */
  readonly isReady: boolean;
  /** Connects; settles once connected, or rejects when destroyed first. */
  connect(): Promise<unknown>;
  /** Sends a raw command. */
  sendCommand(args: readonly string[]): Promise<unknown>;
  /** Subscribes to a channel; the connection then serves no other command. */
  subscribe(channel: string, listener: (message: unknown, channel: string) => void): Promise<void>;
  /** Closes the connection at once; commands in flight reject. */
  destroy(): void;
  /** Listens to `"error"`, `"ready"`, `"end"` or `"reconnecting"`. */
  on(event: string, listener: (error: unknown) => void): RedisClient;
  /** Listens once. */
  once(event: string, listener: () => void): RedisClient;
  /** Stops listening. */
  off(event: string, listener: () => void): RedisClient;
}

/** Creates a client; nothing connects until `connect()`. */
export function createClient(options: RedisClientOptions): RedisClient;

/** An error reply from the server (`-ERR ...`, `-NOSCRIPT ...`). */
export class ErrorReply extends Error {}
