/**
 * Makes sure no other process serves an address before the balancer binds it.
 *
 * Workers share their listeners with `SO_REUSEPORT`, and the kernel lets any
 * process of the same user join such a group: a second balancer on the same
 * addresses would start, and clients would be spread over both, each with its
 * own policy. A socket bound *without* `SO_REUSEPORT` cannot join the group, so
 * binding one on each address first, and closing it, tells whether another
 * process holds the address.
 *
 * @module
 */
import { formatHostPort, parseHostPort } from "../core/address.ts";

/**
 * An address that another process already listens on.
 *
 * @example Usage
 * ```ts
 * import { AddressInUseError, assertAddressesFree } from "./exclusive_bind.ts";
 * import assert from "node:assert/strict";
 *
 * using held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const address = `127.0.0.1:${held.addr.port}`;
 * assert.throws(() => assertAddressesFree([address]), AddressInUseError);
 * ```
 */
export class AddressInUseError extends Error {
  /** The address in use, `host:port`. */
  readonly address: string;
  /** Node's error code, for callers that handle bind errors by code. */
  readonly code = "EADDRINUSE";

  /**
   * Creates the error.
   *
   * @param address The address in use, `host:port`.
   * @param options The cause.
   */
  constructor(address: string, options?: ErrorOptions) {
    super(`Cannot listen: address ${address} already in use by another process`, options);
    this.name = "AddressInUseError";
    this.address = address;
  }
}

/**
 * Binds each address exclusively (no `SO_REUSEPORT`) and closes it again, so that
 * nothing listens until every address is known to be free. Addresses with port 0
 * are skipped: each bind picks a free port.
 *
 * A second process could still bind between this check and the balancer's own
 * listeners; the window is the time the balancer takes to start its listeners.
 *
 * @example Usage
 * ```ts
 * import { assertAddressesFree } from "./exclusive_bind.ts";
 *
 * assertAddressesFree(["127.0.0.1:0"]); // nothing to check: port 0
 * ```
 *
 * @param addresses `host:port` strings.
 * @throws {AddressInUseError} For the first address another process listens on.
 * @throws {Deno.errors.NotCapable} Without net permission for an address.
 * @throws {Error} Other bind errors (an address of another machine, a privileged port).
 */
export function assertAddressesFree(addresses: Iterable<string>): void {
  for (const address of addresses) {
    const { hostname, port } = parseHostPort(address);
    if (port === 0) continue;
    let listener: Deno.Listener;
    try {
      listener = Deno.listen({ hostname, port });
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) {
        throw new AddressInUseError(formatHostPort({ hostname, port }), { cause: error });
      }
      throw error;
    }
    listener.close();
  }
}
