/**
 * A session: what follows a completed handshake. Admission (`admit`), the client's
 * limits (`ClientLimiter`), an upstream of its group (the pool's least connections,
 * with retries), the PROXY header, then `forward()` until either side ends, and one
 * audit record. Refusals at any step are named and counted (`Refusals`); nothing of a
 * refused connection reaches an upstream.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { getLogger } from "@logtape/logtape";
import type { Clock } from "../core/clock.ts";
import { formatSize } from "../core/size.ts";
import { formatDuration } from "../core/duration.ts";
import type { DenyReason } from "../core/reasons.ts";
import type { Config } from "../config/mod.ts";
import { isLogged } from "../control/logging.ts";
import type { CertIdentity } from "../identity/certificate.ts";
import type { ClientTrust } from "../identity/client_trust.ts";
import { peerCertificateChain } from "../identity/_peer_certificate.ts";
import { BandwidthLimiter } from "../limiter/bandwidth_limiter.ts";
import type { BandwidthStore } from "../limiter/bandwidth_store.ts";
import {
  type ClientLease,
  type ClientLimiter,
  ClientLimitError,
} from "../limiter/client_limiter.ts";
import { StoreUnavailableError } from "../limiter/store.ts";
import { offeredAlpn } from "../listener/_tls_server_hooks.ts";
import type { SecureConnection } from "../listener/tls_listeners.ts";
import { admit } from "../policy/admission.ts";
import type { ClientRule, Policy } from "../policy/policy.ts";
import { forward } from "../proxy/forward.ts";
import { proxyHeader } from "../proxy/proxy_header.ts";
import { NoHealthyUpstreamError, UpstreamConnectError } from "../upstream/pool_errors.ts";
import { UpstreamTlsError } from "../upstream/tls_dial.ts";
import type { UpstreamConnection } from "../upstream/upstream_connection.ts";
import { forwardOutcome, isLocalDialError } from "../upstream/outlier_detector.ts";
import type { BalancerMetrics } from "./_balancer_metrics.ts";
import type { LiveSessions } from "./live_sessions.ts";
import type { ConnectionRecord } from "./records.ts";
import { type Refusals, summarize } from "./refusals.ts";
import type { BalancerCounters } from "./status.ts";
import type { UpstreamGroup } from "./upstream_group.ts";

const log = getLogger(["mtlb", "server"]);
const audit = getLogger(["mtlb", "audit"]);

/** What a session reads of its balancer when it starts: one configuration for its life. */
export interface SessionScope {
  /** The configuration in force. */
  config: Config;
  /** Its clients and groups. */
  policy: Policy;
  /** Its CA bundle, CRLs and trust settings. */
  trust: ClientTrust;
  /** Its TLS 1.3 suites. */
  ciphers: ReadonlySet<string>;
  /** Its groups of upstreams. */
  groups: ReadonlyMap<string, UpstreamGroup>;
}

/** What sessions need from their balancer. */
export interface SessionRunnerOptions {
  /** The time source of timeouts and durations. */
  clock: Clock;
  /** Wall-clock time (certificate and CRL validity). */
  wall: () => number;
  /** The client limits. */
  limiter: ClientLimiter;
  /**
   * Where the client bandwidth buckets live.
   *
   * @default {a new MemoryBandwidthStore}
   */
  bandwidth?: BandwidthStore;
  /** The balancer's metric families. */
  metrics: BalancerMetrics;
  /** The balancer's counters. */
  counters: BalancerCounters;
  /** Where refusals go. */
  refusals: Refusals;
  /** The table of forwarded connections. */
  sessions: LiveSessions;
  /** Aborts when the balancer closes. */
  closing: AbortSignal;
  /** The configuration, policy, trust and groups in force. */
  scope: () => SessionScope;
  /** The audit record of each forwarded connection, when it ends. */
  onEnd: (record: ConnectionRecord) => void;
}

/**
 * Runs the sessions of a balancer.
 *
 * @example Usage
 * ```ts ignore
 * const runner = new SessionRunner({ clock, wall, limiter, metrics, counters, refusals, sessions, closing, scope, onEnd });
 * listeners = new TlsListeners({ ..., onSecure: (connection) => runner.start(connection) });
 * ```
 */
export class SessionRunner {
  #o: SessionRunnerOptions;
  #bandwidth: BandwidthLimiter;
  /** Aborted by refuseQueued(), or when the balancer closes. */
  #draining = new AbortController();
  /** Sessions started and not yet ended. */
  #running = 0;
  #allSettled: PromiseWithResolvers<void> | undefined;
  /** Client sockets closed for sending more than max_buffer before their upstream was connected. */
  #overflowed = new WeakSet<Socket>();

  /**
   * Creates the runner.
   *
   * @param options What sessions need from their balancer.
   */
  constructor(options: SessionRunnerOptions) {
    this.#o = options;
    options.closing.addEventListener("abort", () => this.refuseQueued(), { once: true });
    this.#bandwidth = new BandwidthLimiter({
      clock: options.clock,
      ...(options.bandwidth === undefined ? {} : { store: options.bandwidth }),
    });
  }

  /**
   * Refuses (`server_closing`) the connections waiting for a rate token, and those
   * that would wait from now on: the balancer drains.
   */
  refuseQueued(): void {
    this.#draining.abort(new Error("Balancer draining"));
  }

  /**
   * Settles once every session started so far has ended.
   *
   * @returns When they have.
   */
  settled(): Promise<void> {
    if (this.#running === 0) return Promise.resolve();
    this.#allSettled ??= Promise.withResolvers<void>();
    return this.#allSettled.promise;
  }

  /**
   * Serves a completed handshake: admission, the client's limits, an upstream, the
   * PROXY header, then forwarding until either side ends.
   *
   * @param connection The TLS socket, its listener's group and the client's address.
   */
  start({ socket, listenerGroup, remote, linked }: SecureConnection): void {
    if (this.#o.closing.aborted) {
      this.#o.refusals.deny(socket, { reason: "server_closing", remote });
      return;
    }
    // Linked, nothing is read before forward(): no array of early bytes to hold.
    const head: Uint8Array[] = linked ? NO_HEAD : [];
    let early = noop as (chunk: Uint8Array) => void;
    if (!linked) {
      // Pausing would stop nothing and lose a FIN (see forward()): read from the start,
      // keep what comes before the upstream is connected for forward(), up to max_buffer.
      const max = this.#o.scope().config.server.maxBuffer;
      let held = 0;
      early = (chunk: Uint8Array) => {
        head.push(chunk);
        held += chunk.length;
        if (held > max) {
          this.#overflowed.add(socket);
          socket.destroy();
        }
      };
      socket.on("data", early);
    }
    // Never rejects; no handler, no closure per connection.
    this.#running++;
    void this.#serve(socket, listenerGroup, remote, head, early);
  }

  /**
   * The checks between the handshake and the limiter: certificate, validity, cipher,
   * CRL, identity, route. Denies and returns `undefined`, or returns who may go where.
   * Synchronous and separate from `#serve`, so that the certificate and everything read
   * from it but the identity are garbage once it returns, not held for the connection's
   * life by the suspended frame of `#serve`.
   */
  #admit(
    socket: TLSSocket,
    listenerGroup: string | undefined,
    remote: string,
    scope: SessionScope,
  ): Admitted | undefined {
    const servername = (socket as { servername?: string | false | null }).servername;
    const cipher = socket.getCipher()?.standardName;
    const verdict = admit({
      chain: peerCertificateChain(socket),
      authorized: socket.authorized,
      authorizationError: socket.authorizationError?.toString(),
      resumed: socket.isSessionReused(),
      cipher,
      listenerGroup,
      sni: typeof servername === "string" ? servername : undefined,
      // Only the shared listener routes by the protocols offered.
      alpn: listenerGroup === undefined ? offeredAlpn(socket) : [],
    }, { trust: scope.trust, policy: scope.policy, ciphers: scope.ciphers, now: this.#o.wall() });
    if (!verdict.ok) {
      const { identity, detail } = verdict;
      if (verdict.stage === "handshake") {
        return void this.#o.refusals.refuseCertificate(
          socket,
          remote,
          verdict.reason,
          identity,
          detail,
        );
      }
      return void this.#o.refusals.deny(socket, {
        reason: verdict.reason,
        remote,
        ...(identity === undefined ? {} : { identity }),
        ...(verdict.client === undefined ? {} : { client: verdict.client }),
        ...(verdict.group === undefined ? {} : { group: verdict.group }),
        ...(detail === undefined ? {} : { detail }),
      });
    }
    const alpn = socket.alpnProtocol;
    return {
      client: verdict.client,
      identity: verdict.identity,
      group: verdict.group,
      cipher: cipher!,
      alpn: typeof alpn === "string" ? alpn : undefined,
      servername: typeof servername === "string" ? servername : undefined,
    };
  }

  async #serve(
    socket: TLSSocket,
    listenerGroup: string | undefined,
    remote: string,
    head: Uint8Array[],
    early: (chunk: Uint8Array) => void,
  ): Promise<void> {
    try {
      // One configuration for the whole connection, even if a reload lands meanwhile.
      const scope = this.#o.scope();
      const config = scope.config;
      const admitted = this.#admit(socket, listenerGroup, remote, scope);
      if (admitted === undefined) return;
      const { client, identity, cipher, alpn, servername } = admitted;
      const group = scope.groups.get(admitted.group)!;
      const groupConfig = group.config;
      const base = { client: client.name, identity, group: admitted.group, remote };

      const slot = await this.#limit(socket, client, admitted.group, scope.policy.queueTimeout);
      if ("deny" in slot) return this.#o.refusals.deny(socket, { ...base, ...slot.deny });
      using _slot = slot.lease;

      const connection = await this.#connectUpstream(socket, group, config);
      if ("deny" in connection) {
        return this.#o.refusals.deny(socket, {
          ...base,
          reason: connection.deny,
          detail: connection.detail,
        });
      }
      using lease = connection.lease;
      const upstream = connection.socket;
      group.passive.reportSuccess(lease.address, "connected");

      if (groupConfig.proxyProtocol === "v2") {
        upstream.write(proxyHeader(socket, client.name, identity, alpn, servername, cipher));
      }
      this.#o.counters.accepted++;
      this.#o.counters.active++;
      group.countAccepted(lease.address);
      const session = this.#o.sessions.add({
        socket,
        upstream,
        client: client.name,
        group: admitted.group,
      });
      socket.off("data", early);
      socket.off("end", noop);
      try {
        const result = await forward(socket, upstream, {
          head,
          maxBuffer: config.server.maxBuffer,
          idleTimeout: config.server.idleTimeout,
          signal: this.#o.closing,
          clock: this.#o.clock,
          stats: group.stats,
          ...(client.bandwidth === undefined
            ? {}
            : { throttle: this.#bandwidth.throttles(client.name, client.bandwidth) }),
        });
        // Only failures the upstream caused count: see forwardOutcome().
        const outcome = forwardOutcome(result);
        if (outcome === "answered") group.passive.reportSuccess(lease.address, "answered");
        else if (outcome !== undefined) group.passive.reportFailure(lease.address, outcome);
        const record: ConnectionRecord = {
          ...base,
          upstream: lease.address,
          bytesFromClient: result.bytesFromClient,
          bytesFromUpstream: result.bytesFromUpstream,
          durationMs: Math.round(result.durationMs),
          reason: session.end ?? result.reason,
        };
        if (session.detail !== undefined) record.detail = session.detail;
        if (result.reason === "buffer_overflow") {
          this.#o.metrics.sessionEndFor("buffer_overflow").inc();
          log.warn("Closed a connection of {client} to {group}: {reason}", {
            client: client.name,
            group: admitted.group,
            reason: result.reason,
            detail: `more than max_buffer (${
              formatSize(config.server.maxBuffer)
            }) waited to be written to one side`,
          });
        }
        if (isLogged("info")) {
          audit.info(
            "Connection ended: client={client} group={group} upstream={upstream} in={bytesFromClient} out={bytesFromUpstream} ms={durationMs} reason={reason}",
            { ...record, identity: summarize(identity) },
          );
        }
        this.#o.onEnd(record);
      } finally {
        this.#o.counters.active--;
        this.#o.sessions.delete(session);
      }
    } catch (error) {
      log.error("Unexpected error serving {remote}: {error}", { remote, error });
      socket.destroy();
    } finally {
      if (--this.#running === 0 && this.#allSettled !== undefined) {
        this.#allSettled.resolve();
        this.#allSettled = undefined;
      }
    }
  }

  /**
   * Takes the client's slots (overall, within the group, the group's) and its rate
   * tokens, waiting in the queue for a token when `queueTimeout` allows, before any
   * upstream is dialed. A queued connection is refused when the balancer drains or
   * the client leaves. A method of its own for the same reason as `#connectUpstream`.
   */
  async #limit(
    socket: TLSSocket,
    client: ClientRule,
    group: string,
    queueTimeout: number,
  ): Promise<{ lease: ClientLease } | { deny: { reason: DenyReason; detail: string } }> {
    const limits = client.groupLimits.get(group) ?? { name: group };
    const options = { limits: client.limits, group: limits, queueTimeout };
    // Only a rate can make a connection wait: without one, no queue to watch.
    const rated = client.limits.rate ?? limits.client?.rate ?? limits.total?.rate;
    if (queueTimeout === 0 || rated === undefined) {
      try {
        return { lease: await this.#o.limiter.acquire(client.name, options) };
      } catch (error) {
        return { deny: this.#limitDenial(error, false) };
      }
    }
    // Queued connections end with a drain or their client: one controller for both.
    const stop = new AbortController();
    const draining = this.#draining.signal;
    const onGone = () => stop.abort(new Error("Client closed while queued for a rate token"));
    const onDrain = () => stop.abort(new Error("Balancer draining"));
    socket.once("close", onGone);
    draining.addEventListener("abort", onDrain, { once: true });
    if (draining.aborted) onDrain();
    try {
      const lease = await this.#o.limiter.acquire(client.name, { ...options, signal: stop.signal });
      return { lease };
    } catch (error) {
      if (stop.signal.aborted && !(error instanceof ClientLimitError)) {
        return {
          deny: {
            reason: draining.aborted ? "server_closing" : "client_gone",
            detail: String(stop.signal.reason),
          },
        };
      }
      return { deny: this.#limitDenial(error, true) };
    } finally {
      socket.off("close", onGone);
      draining.removeEventListener("abort", onDrain);
    }
  }

  /** The refusal for a limiter's error; rethrows what is not a limit. */
  #limitDenial(error: unknown, queued: boolean): { reason: DenyReason; detail: string } {
    if (error instanceof StoreUnavailableError) {
      return { reason: "limit_store_unavailable", detail: error.message };
    }
    if (!(error instanceof ClientLimitError)) throw error;
    this.#o.metrics.limiterRefusals[error.kind].inc();
    if (error.kind === "rate") {
      if (queued) this.#o.metrics.queueTimeouts.inc();
      return {
        reason: "limit_rate",
        detail: queued ? this.#queueDetail(error) : error.message,
      };
    }
    return {
      reason: error.scope === "group" ? "group_full" : "limit_concurrency",
      detail: error.message,
    };
  }

  /** Why a queued connection was refused: when its turn would have come, past queue_timeout. */
  #queueDetail(error: ClientLimitError): string {
    const timeout = this.#o.scope().config.limits.queueTimeout;
    const turn = error.retryAfterMs === undefined
      ? "its turn would come"
      : `its turn would come in ${formatDuration(error.retryAfterMs + timeout)}`;
    return `${error.message}: ${turn}, past queue_timeout (${formatDuration(timeout)})`;
  }

  /**
   * Dials an upstream of `group` for `socket`, giving up when the client's socket closes
   * or the balancer closes meanwhile. A FIN from the client does not stop the dial: a
   * half-closed client may still want its reply (as HAProxy does without
   * `option abortonclose`), and forward() passes the FIN on once connected. A method of
   * its own so that nothing it allocates stays referenced by the suspended frame of
   * `#serve` for the connection's life.
   */
  async #connectUpstream(
    socket: TLSSocket,
    group: UpstreamGroup,
    config: Config,
  ): Promise<UpstreamConnection<Socket> | { deny: DenyReason; detail: string }> {
    // One controller, aborted by either event: cheaper than AbortSignal.any() per connection.
    const stop = new AbortController();
    const onGone = () => stop.abort(new Error("Client closed before the upstream connected"));
    const onClosing = () => stop.abort(this.#o.closing.reason);
    socket.once("close", onGone);
    this.#o.closing.addEventListener("abort", onClosing, { once: true });
    try {
      if (this.#o.closing.aborted) onClosing();
      const connection = await group.pool.connect({
        dial: group.dial,
        timeout: config.server.connectTimeout,
        attempts: 1 + config.server.connectRetries,
        signal: stop.signal,
        onDialFailure: (address, reason, error) => {
          if (!isLocalDialError(error)) group.passive.reportFailure(address, reason);
        },
        isFinal: isTrustFailure,
      });
      if (connection.failures.length > 0) group.retries.inc(connection.failures.length);
      return connection;
    } catch (error) {
      if (error instanceof UpstreamConnectError && error.attempts.length > 1) {
        group.retries.inc(error.attempts.length - 1);
      }
      const tls = error instanceof UpstreamConnectError ? tlsRefusal(error) : undefined;
      const deny: DenyReason = this.#o.closing.aborted
        ? "server_closing"
        : this.#overflowed.has(socket)
        ? "buffer_overflow"
        : stop.signal.aborted
        ? "client_gone"
        : error instanceof NoHealthyUpstreamError
        ? "no_healthy_upstream"
        : tls?.reason ?? "upstream_unavailable";
      return { deny, detail: tls?.message ?? String(error) };
    } finally {
      socket.off("close", onGone);
      this.#o.closing.removeEventListener("abort", onClosing);
    }
  }
}

/** Who a connection is and where it may go, once `SessionRunner#admit` let it through. */
interface Admitted {
  client: ClientRule;
  identity: CertIdentity;
  /** The group it is routed to. */
  group: string;
  cipher: string;
  alpn: string | undefined;
  servername: string | undefined;
}

function noop(): void {}

/**
 * An upstream refused for its certificate (untrusted, expired, another name): dialling
 * it again in the same connection would get the same answer. A failed handshake
 * (`upstream_tls_handshake`: a reset, a close) may be transient, and is retried.
 */
function isTrustFailure(error: unknown): boolean {
  return error instanceof UpstreamTlsError && error.reason !== "upstream_tls_handshake";
}

/**
 * The first upstream refused over TLS among the attempts of a failed connect: what
 * the connection is denied for, since a certificate that does not verify is what an
 * operator must fix, even when other attempts failed otherwise.
 */
function tlsRefusal(error: UpstreamConnectError): UpstreamTlsError | undefined {
  for (const attempt of error.attempts) {
    if (attempt.error instanceof UpstreamTlsError) return attempt.error;
  }
  return undefined;
}

/** The early bytes of a linked connection: none, ever. */
const NO_HEAD: Uint8Array[] = Object.freeze([]) as unknown as Uint8Array[];
