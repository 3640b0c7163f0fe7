/**
 * The connector of a group: how its sessions and its active health checks reach its
 * upstreams. A group without `[groups.<name>.tls]` uses the balancer's dialer (TCP);
 * a group with it, a TLS dialer made from its material, and its health checks run
 * over that same dialer, so the handshake is part of health.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { HostPort } from "../core/address.ts";
import type { UpstreamTlsMaterial } from "../config/mod.ts";
import type { Dialer } from "../upstream/dial.ts";
import { dialCheck, type HealthCheck } from "../upstream/health_check.ts";
import type { TlsDialerOptions } from "../upstream/tls_dial.ts";

/** What {@linkcode groupConnector} builds connectors from. */
export interface GroupConnectorOptions {
  /** The dialer of groups without TLS. */
  dial: Dialer<Socket>;
  /** Makes the dialer of a group with TLS (`tlsDialer`). */
  connectTls: (options: TlsDialerOptions) => Dialer<Socket>;
  /** The active health check given to the balancer, which every group then uses. */
  healthCheck: HealthCheck | undefined;
  /** Wall-clock time, ms since the epoch (to name an expired upstream certificate). */
  wall: () => number;
  /**
   * The name to verify for an upstream without `server_name`: the DNS name its address
   * was looked up from, if any.
   *
   * @default {undefined: its host}
   */
  nameOf?: ((address: HostPort) => string | undefined) | undefined;
}

/** A group's way to its upstreams. */
export interface GroupConnector {
  /** Opens a connection to one of its upstreams, for a session. */
  dial: Dialer<Socket>;
  /** Its active health check; `undefined` for the probe's default (`tcpCheck`). */
  check: HealthCheck | undefined;
}

/**
 * The connector of a group: its TLS material, if any, made into a dialer.
 *
 * @example Usage
 * ```ts
 * import { groupConnector } from "./group_connector.ts";
 * import { dialTcp } from "../upstream/dial.ts";
 * import { tlsDialer } from "../upstream/tls_dial.ts";
 * import assert from "node:assert/strict";
 *
 * const plain = groupConnector(undefined, {
 *   dial: dialTcp,
 *   connectTls: tlsDialer,
 *   healthCheck: undefined,
 *   wall: Date.now,
 * });
 * assert.equal(plain.dial, dialTcp);
 * assert.equal(plain.check, undefined);
 * ```
 *
 * @param tls The group's `[groups.<name>.tls]` material, or `undefined` for TCP.
 * @param options The plain dialer, the TLS dialer factory, the injected check, the clock.
 * @returns Its dialer and active check.
 */
export function groupConnector(
  tls: UpstreamTlsMaterial | undefined,
  options: GroupConnectorOptions,
): GroupConnector {
  if (tls === undefined) return { dial: options.dial, check: options.healthCheck };
  const dial = options.connectTls({
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    serverName: tls.serverName,
    serverNameOf: options.nameOf,
    now: options.wall,
  });
  return { dial, check: options.healthCheck ?? dialCheck(dial) };
}

/**
 * Makes a group's connector once the group can say which DNS name an address came
 * from: what `UpstreamGroup` takes, so that its connector asks it.
 */
export type ConnectorFactory = (
  nameOf: (address: HostPort) => string | undefined,
) => GroupConnector;

/**
 * The {@linkcode ConnectorFactory} of a group's TLS material.
 *
 * @example Usage
 * ```ts
 * import { connectorFor } from "./group_connector.ts";
 * import { dialTcp } from "../upstream/dial.ts";
 * import { tlsDialer } from "../upstream/tls_dial.ts";
 * import assert from "node:assert/strict";
 *
 * const make = connectorFor(undefined, {
 *   dial: dialTcp,
 *   connectTls: tlsDialer,
 *   healthCheck: undefined,
 *   wall: Date.now,
 * });
 * assert.equal(make(() => undefined).dial, dialTcp);
 * ```
 *
 * @param tls The group's `[groups.<name>.tls]` material, or `undefined` for TCP.
 * @param options Everything {@linkcode groupConnector} takes but the DNS names.
 * @returns The factory.
 */
export function connectorFor(
  tls: UpstreamTlsMaterial | undefined,
  options: Omit<GroupConnectorOptions, "nameOf">,
): ConnectorFactory {
  return (nameOf) => groupConnector(tls, { ...options, nameOf });
}
