/**
 * Connection caps derived from the process's open-files limit, as HAProxy derives
 * `maxconn` from `ulimit -n`: every forwarded connection holds two file descriptors
 * (client and upstream), and a few are kept for listeners, probes and files.
 *
 * @module
 */

/** File descriptors kept for listeners, the admin endpoint, probes, files and Redis. */
export const RESERVED_FILE_DESCRIPTORS = 64;

/** The cap on handshakes in flight when none is configured, at most. */
export const MAX_HANDSHAKES_CEILING = 4096;

/** Where the open-files limit is read from on Linux. */
export const LIMITS_FILE = "/proc/self/limits";

/**
 * The open-files limit assumed when it cannot be read: Deno raises its soft limit to
 * the hard limit at start, and Deno reads `/proc` only with `--allow-all`, so a
 * balancer run with narrow permissions cannot see it. 32,768 gives 16,352 connections;
 * set `[server] max_connections` where the limit is lower (`ulimit -Hn`).
 */
export const ASSUMED_FILE_DESCRIPTORS = 32_768;

/**
 * The soft open-files limit (`ulimit -n`) of this process, read from
 * `/proc/self/limits` when Deno may read it (with `--allow-all` only; it never
 * prompts).
 *
 * @example Usage
 * ```ts
 * import { readFileDescriptorLimit } from "./connection_caps.ts";
 *
 * const limit = readFileDescriptorLimit(); // 1024, 65536, ... or undefined
 * ```
 *
 * @returns The limit, or `undefined` when it cannot be read or is unlimited.
 */
export function readFileDescriptorLimit(): number | undefined {
  try {
    if (Deno.permissions.querySync({ name: "read", path: LIMITS_FILE }).state !== "granted") {
      return undefined;
    }
    const text = Deno.readTextFileSync(LIMITS_FILE);
    const soft = /^Max open files\s+(\d+)/m.exec(text)?.[1];
    return soft === undefined ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

/**
 * The default `[server] max_connections`: half the file descriptors left after
 * {@linkcode RESERVED_FILE_DESCRIPTORS}, at least 1.
 *
 * @example Usage
 * ```ts
 * import { defaultMaxConnections } from "./connection_caps.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(defaultMaxConnections(65536), 32736);
 * assert.equal(defaultMaxConnections(undefined), 16352); // 32,768 assumed
 * ```
 *
 * @param fileDescriptors The open-files limit; {@linkcode ASSUMED_FILE_DESCRIPTORS} when unknown.
 * @returns The connection cap.
 */
export function defaultMaxConnections(fileDescriptors: number | undefined): number {
  const fds = fileDescriptors ?? ASSUMED_FILE_DESCRIPTORS;
  return Math.max(1, Math.floor((fds - RESERVED_FILE_DESCRIPTORS) / 2));
}

/**
 * The default `[server] max_handshakes`: `max_connections`, at most
 * {@linkcode MAX_HANDSHAKES_CEILING}.
 *
 * @example Usage
 * ```ts
 * import { defaultMaxHandshakes } from "./connection_caps.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(defaultMaxHandshakes(32736), 4096);
 * assert.equal(defaultMaxHandshakes(100), 100);
 * ```
 *
 * @param maxConnections The connection cap in force.
 * @returns The cap on handshakes in flight.
 */
export function defaultMaxHandshakes(maxConnections: number): number {
  return Math.max(1, Math.min(MAX_HANDSHAKES_CEILING, maxConnections));
}

/** The connection caps in force, explicit or derived. */
export interface ConnectionCaps {
  /** Open client connections, whole server. */
  maxConnections: number;
  /** TLS handshakes in flight, whole server. */
  maxHandshakes: number;
}

/**
 * The caps of `[server]`: each configured value, else its default from the open-files
 * limit.
 *
 * @example Usage
 * ```ts
 * import { connectionCaps } from "./connection_caps.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(connectionCaps({ maxConnections: 100 }, 65536), {
 *   maxConnections: 100,
 *   maxHandshakes: 100,
 * });
 * ```
 *
 * @param server `max_connections` and `max_handshakes`, when configured.
 * @param fileDescriptors The open-files limit, when known.
 * @returns Both caps.
 */
export function connectionCaps(
  server: { maxConnections?: number | undefined; maxHandshakes?: number | undefined },
  fileDescriptors: number | undefined,
): ConnectionCaps {
  const maxConnections = server.maxConnections ?? defaultMaxConnections(fileDescriptors);
  return {
    maxConnections,
    maxHandshakes: server.maxHandshakes ?? defaultMaxHandshakes(maxConnections),
  };
}
