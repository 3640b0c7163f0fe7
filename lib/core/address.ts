/**
 * `host:port` addresses as written in mtlb configuration.
 *
 * @module
 */

/** A parsed network address. */
export interface HostPort {
  /** Host name or IP literal, without IPv6 brackets. */
  hostname: string;
  /** TCP port, 0-65535. */
  port: number;
}

/**
 * What a `host:port` address looks like, as a regular expression source (for JSON
 * Schema): a host name or IPv4 address, or an IPv6 literal in brackets, a colon and a
 * port of up to five digits. {@linkcode parseHostPort} also checks the port's range.
 */
export const HOST_PORT_PATTERN: string = String
  .raw`^(?:\[([0-9a-fA-F:.]+)\]|([^\s:\[\]]+)):(\d{1,5})$`;
const HOST_PORT_RE = new RegExp(HOST_PORT_PATTERN);

/**
 * Parses `host:port`, `[v6]:port` or `v4:port`.
 *
 * @example Usage
 * ```ts
 * import { parseHostPort } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseHostPort("127.0.0.1:6379"), { hostname: "127.0.0.1", port: 6379 });
 * assert.deepEqual(parseHostPort("[::1]:443"), { hostname: "::1", port: 443 });
 * ```
 *
 * @param text The address.
 * @returns The host and the port.
 * @throws {TypeError} When `text` is not `host:port` with a port from 0 to 65535.
 */
export function parseHostPort(text: string): HostPort {
  const match = HOST_PORT_RE.exec(text);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || port > 65535) {
    throw new TypeError(
      `Cannot parse address: expected "host:port", received ${JSON.stringify(text)}`,
    );
  }
  return { hostname: match[1] ?? match[2]!, port };
}

/**
 * Formats an address as `host:port`, bracketing IPv6 literals.
 *
 * @example Usage
 * ```ts
 * import { formatHostPort } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatHostPort({ hostname: "::1", port: 443 }), "[::1]:443");
 * ```
 *
 * @param address The address.
 * @returns The `host:port` text.
 */
export function formatHostPort(address: HostPort): string {
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}
