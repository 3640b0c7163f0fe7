/**
 * Who may use the admin endpoint: the `Host` a request names (against DNS
 * rebinding) and the bearer token it carries.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { isIP } from "node:net";

/** `host`, `host:port`, `[v6]` or `[v6]:port`, as a `Host` header carries it. */
const HOST_HEADER = /^(?:\[([0-9A-Fa-f:.]*)\]|([^:\[\]]*))(?::(\d{0,5}))?$/;
const BEARER = /^Bearer +([\x21-\x7e]+) *$/i;

/**
 * Why the admin endpoint does not answer a request with this `Host` header, or
 * `undefined` when it does: for an IP literal (IPv6 in brackets), `localhost`
 * or one of `names`, whatever the port. A request with no `Host` (HTTP/1.0) is
 * answered: browsers always send one, so it is not a web page's.
 *
 * @param host The `Host` header, `null` when absent.
 * @param names Further host names answered for, lowercase.
 * @returns The reason for the log, or `undefined`.
 */
export function _hostRefusal(host: string | null, names: readonly string[]): string | undefined {
  if (host === null) return undefined;
  const match = HOST_HEADER.exec(host);
  if (match === null || Number(match[3] ?? 0) > 65535) {
    return `bad Host header ${JSON.stringify(host)}`;
  }
  if (match[1] !== undefined) {
    return isIP(match[1]) === 6 ? undefined : `bad Host header ${JSON.stringify(host)}`;
  }
  const name = match[2]!.toLowerCase();
  if (isIP(name) === 4 || name === "localhost" || names.includes(name)) return undefined;
  return `Host ${
    JSON.stringify(host)
  } is not an IP address, localhost or a name of [admin] hosts (a web page using DNS rebinding sends its own name)`;
}

/**
 * The token of an `Authorization: Bearer TOKEN` header.
 *
 * @param header The `Authorization` header, `null` when absent.
 * @returns The token, or `undefined` when there is none or the scheme is not `Bearer`.
 */
export function _bearerToken(header: string | null): string | undefined {
  return header === null ? undefined : BEARER.exec(header)?.[1];
}

/**
 * Compares a presented token with the expected one in time that does not depend
 * on where they differ (both are hashed first, so neither does their length).
 *
 * @param presented The token a request carries.
 * @param expected The configured token.
 * @returns Whether they are equal.
 */
export function _tokensEqual(presented: string, expected: string): boolean {
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}
