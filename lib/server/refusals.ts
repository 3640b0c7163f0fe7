/**
 * Refusals and failed handshakes: each counted (`BalancerCounters`, the
 * `mtlb_connections_denied_total` and `mtlb_handshake_failures_total` series), logged
 * with its named reason and dispatched as an event (`"deny"`, `"handshake_error"`)
 * for `/denials`; and a refused connection closed right after its handshake.
 *
 * @module
 */
import type { TLSSocket } from "node:tls";
import { getLogger } from "@logtape/logtape";
import type { Clock } from "../core/clock.ts";
import type { CertificateFailure } from "../core/reasons.ts";
import type { CertIdentity } from "../identity/certificate.ts";
import { PAUSE_STOPS_READS } from "../proxy/forward.ts";
import type { BalancerMetrics } from "./_balancer_metrics.ts";
import type { DenyRecord, HandshakeErrorRecord } from "./records.ts";
import type { BalancerCounters } from "./status.ts";

const log = getLogger(["mtlb", "server"]);

/** Options of {@linkcode Refusals}. */
export interface RefusalsOptions {
  /** The balancer's counters. */
  counters: BalancerCounters;
  /** The balancer's metric families. */
  metrics: BalancerMetrics;
  /** Dispatches `"deny"` and `"handshake_error"`. */
  events: EventTarget;
  /** The clock of the close timers. */
  clock: Clock;
  /**
   * Wall-clock time, ms since the epoch: the `at` of each record.
   *
   * @default {Date.now}
   */
  wall?: () => number;
}

/**
 * How a balancer refuses connections.
 *
 * @example Usage
 * ```ts ignore
 * const refusals = new Refusals({ counters, metrics, events: balancer, clock });
 * refusals.deny(socket, { reason: "unknown_identity", remote: "127.0.0.1:50000" });
 * ```
 */
export class Refusals {
  #options: RefusalsOptions;
  #wall: () => number;

  /**
   * Creates the refusals of a balancer.
   *
   * @param options Counters, metrics, events and clock.
   */
  constructor(options: RefusalsOptions) {
    this.#options = options;
    this.#wall = options.wall ?? Date.now;
  }

  /**
   * Refuses a connection after its handshake: closes it, then counts, logs and
   * dispatches the refusal.
   *
   * @param socket The client's TLS socket.
   * @param record Why, and who.
   */
  deny(socket: TLSSocket, record: DenyRecord): void {
    this.close(socket);
    this.count(record);
  }

  /**
   * Refuses a connection whose certificate failed verification, or that has none: a
   * handshake failure named after its cause, closed with close_notify at once.
   *
   * @param socket The client's TLS socket.
   * @param remote The client's address.
   * @param reason Why the certificate was refused.
   * @param identity The certificate's identity, when it could be read.
   * @param detail What failed, for the log.
   */
  refuseCertificate(
    socket: TLSSocket,
    remote: string,
    reason: CertificateFailure,
    identity?: CertIdentity,
    detail?: string,
  ): void {
    this.close(socket);
    this.handshakeFailed({
      reason,
      remote,
      ...(identity === undefined ? {} : { identity }),
      ...(detail === undefined ? {} : { detail }),
    });
  }

  /**
   * Counts, logs and dispatches a failed handshake, setting its `at` if unset.
   *
   * @param record Why it failed, and from where.
   */
  handshakeFailed(record: HandshakeErrorRecord): void {
    record.at ??= this.#wall();
    const errors = this.#options.counters.handshakeErrors;
    errors.set(record.reason, (errors.get(record.reason) ?? 0) + 1);
    this.#options.metrics.handshakeFailureFor(record.reason).inc();
    log.warn("Handshake failed from {remote}: {reason}", {
      remote: record.remote,
      reason: record.reason,
      ...(record.identity === undefined ? {} : { identity: summarize(record.identity) }),
      ...(record.detail === undefined ? {} : { detail: record.detail }),
    });
    this.#options.events.dispatchEvent(new CustomEvent("handshake_error", { detail: record }));
  }

  /**
   * Counts, logs and dispatches a refusal (without closing anything: for a connection
   * refused before its handshake), setting its `at` if unset.
   *
   * @param record Why, and who.
   */
  count(record: DenyRecord): void {
    record.at ??= this.#wall();
    const denied = this.#options.counters.denied;
    denied.set(record.reason, (denied.get(record.reason) ?? 0) + 1);
    this.#options.metrics.deniedFor(record.reason).inc();
    log.warn("Denied {remote}: {reason}", {
      remote: record.remote,
      reason: record.reason,
      client: record.client,
      group: record.group,
      identity: record.identity === undefined ? undefined : summarize(record.identity),
      detail: record.detail,
    });
    this.#options.events.dispatchEvent(new CustomEvent("deny", { detail: record }));
  }

  /**
   * Closes a refused connection right after its handshake: close_notify and FIN, then
   * the socket goes as soon as they are written, or within a second. What the client
   * sends meanwhile is not read (a socket whose reads are linked to its TCP socket
   * stays paused; an unlinked one would buffer it anyway, so it is read and dropped).
   *
   * @param socket The client's TLS socket.
   */
  close(socket: TLSSocket): void {
    if ((socket as { [PAUSE_STOPS_READS]?: boolean })[PAUSE_STOPS_READS] !== true) {
      socket.resume();
    }
    socket.on("error", noop);
    socket.end(() => socket.destroy());
    const clock = this.#options.clock;
    const timer = clock.setTimeout(() => socket.destroy(), 1000);
    socket.once("close", () => clock.clearTimeout(timer));
  }
}

/**
 * A certificate identity as the log shows it: its fields in the config's names.
 *
 * @param identity The identity.
 * @returns The log properties.
 */
export function summarize(identity: CertIdentity): Record<string, unknown> {
  return {
    spki_sha256: identity.spkiSha256,
    serial: identity.serial,
    cn: identity.cn,
    ...(identity.sanUri.length > 0 ? { san_uri: identity.sanUri } : {}),
    ...(identity.sanDns.length > 0 ? { san_dns: identity.sanDns } : {}),
  };
}

function noop(): void {}
