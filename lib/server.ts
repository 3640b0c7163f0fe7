/**
 * The mTLS balancer: `node:tls` listeners that verify client certificates,
 * identify and authorize each client, apply its limits and forward its bytes to
 * the least-loaded healthy upstream of its group.
 *
 * @module
 */
import { createServer, type Server, type TLSSocket } from "node:tls";
import type { Socket } from "node:net";
import { getLogger } from "@logtape/logtape";
import { formatHostPort, type HostPort, parseHostPort } from "./address.ts";
import { ClientLimiter, ClientLimitError } from "./client_limiter.ts";
import { type Clock, systemClock, type TimerId } from "./clock.ts";
import type { Config, GroupConfig, TlsMaterial } from "./config.ts";
import { type Dialer, dialTcp } from "./dial.ts";
import { forward, type ForwardEndReason, type ForwardStats } from "./forward.ts";
import { type HealthCheck, HealthProbe, type HealthTarget } from "./health_probe.ts";
import { type CertIdentity, identityFromCertificate } from "./identity.ts";
import { LeastConnPool, NoHealthyUpstreamError } from "./least_conn_pool.ts";
import { Policy } from "./policy.ts";

const log = getLogger(["mtlb", "server"]);
const audit = getLogger(["mtlb", "audit"]);

/**
 * Listen backlog requested for every listener. The kernel caps it at
 * `net.core.somaxconn` (4096 on current Linux); the default of 511 overflows
 * under a burst of simultaneous TLS clients.
 */
export const LISTEN_BACKLOG = 4096;

/** Key exchange groups offered: ECDHE only (no finite-field DHE). */
export const ECDH_CURVES = "X25519:P-256:P-384";

/** Why a connection was refused after (or instead of) its handshake. */
export type DenyReason =
  | "unauthenticated"
  | "cipher_not_allowed"
  | "bad_certificate"
  | "unknown_identity"
  | "ambiguous_identity"
  | "unauthorized_group"
  | "no_group"
  | "limit_concurrency"
  | "limit_rate"
  | "no_healthy_upstream"
  | "upstream_unavailable"
  | "client_gone"
  | "server_closing";

/** Detail of a `"deny"` event. */
export interface DenyRecord {
  /** Why the connection was refused. */
  reason: DenyReason;
  /** The configured client name, once identified. */
  client?: string;
  /** The certificate identity, once read. */
  identity?: CertIdentity;
  /** The group asked for, once routed. */
  group?: string;
  /** The client's address, `host:port`. */
  remote: string;
  /** Human-readable detail for the log (never sent to the client). */
  detail?: string;
}

/** Detail of an `"end"` event: one audit record per forwarded connection. */
export interface ConnectionRecord {
  /** The configured client name. */
  client: string;
  /** The certificate identity the client was matched by. */
  identity: CertIdentity;
  /** The group served. */
  group: string;
  /** The upstream used, `host:port`. */
  upstream: string;
  /** The client's address, `host:port`. */
  remote: string;
  /** Bytes the client sent. */
  bytesFromClient: number;
  /** Bytes the upstream sent. */
  bytesFromUpstream: number;
  /** Connection lifetime after the handshake, in milliseconds. */
  durationMs: number;
  /** How it ended. */
  reason: ForwardEndReason;
}

/** Detail of a `"handshake_error"` event. */
export interface HandshakeErrorRecord {
  /** `handshake_timeout`, or the TLS error code (`ERR_SSL_...`, `ECONNRESET`). */
  reason: string;
  /** The client's address, `host:port`, when known. */
  remote: string;
}

/** Counters kept by the balancer, for metrics and tests. */
export interface BalancerCounters {
  /** Connections that completed the handshake and reached an upstream. */
  accepted: number;
  /** Connections refused, by reason. */
  denied: Map<DenyReason, number>;
  /** Handshakes that failed or timed out, by reason. */
  handshakeErrors: Map<string, number>;
  /** Connections being forwarded now. */
  active: number;
}

/** A bound listener. */
export interface ListenerInfo {
  /** The group a dedicated listener serves; absent for the shared listener. */
  group?: string;
  /** The address actually bound (port 0 resolved). */
  address: HostPort;
}

/** Options of {@linkcode Balancer}. */
export interface BalancerOptions {
  /** A validated configuration (see `loadConfig`). */
  config: Config;
  /** The PEM material the configuration names (see `loadTlsMaterial`). */
  tls: TlsMaterial;
  /**
   * Time source for handshake, connect and idle timeouts and health probes.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Opens upstream connections.
   *
   * @default {dialTcp}
   */
  dial?: Dialer<Socket>;
  /**
   * The active health check.
   *
   * @default {tcpCheck}
   */
  healthCheck?: HealthCheck;
}

interface Group {
  config: GroupConfig;
  pool: LeastConnPool;
  probe: HealthProbe;
  follow: Disposable;
}

/**
 * The mTLS layer-4 balancer.
 *
 * Every listener is a `node:tls` server that accepts TLS 1.3 only, with ECDHE
 * key exchange, requests a client certificate and verifies it against the
 * configured CA (validity and the clientAuth extended key usage included). After
 * the handshake the balancer reads the client's identity from its certificate,
 * matches it against the policy, picks the group (dedicated listener, else SNI,
 * else ALPN, else the client's only group), takes a slot from the client's limits
 * and forwards to the group's least-loaded healthy upstream. A refused connection
 * is closed right after its handshake: nothing of it reaches an upstream, and the
 * client learns nothing of why; the log and the `"deny"` event say why.
 *
 * Events (all plain `CustomEvent`s): `"deny"` ({@linkcode DenyRecord}), `"end"`
 * ({@linkcode ConnectionRecord}), `"handshake_error"`
 * ({@linkcode HandshakeErrorRecord}).
 *
 * `Deno 2.9`'s `node:tls` does not enforce `ciphersuites`, so the negotiated
 * suite is checked after the handshake and a connection on a suite that is not
 * configured is refused (`cipher_not_allowed`). Its `handshakeTimeout` is not
 * enforced either: the balancer arms its own timer per accepted socket.
 *
 * @example Usage
 * ```ts ignore
 * import { Balancer, loadConfig, loadTlsMaterial } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * await using balancer = new Balancer({ config, tls: await loadTlsMaterial(config) });
 * await balancer.start();
 * ```
 */
export class Balancer extends EventTarget implements AsyncDisposable {
  #config: Config;
  #tls: TlsMaterial;
  #clock: Clock;
  #dial: Dialer<Socket>;
  #healthCheck: HealthCheck | undefined;
  #policy: Policy;
  #limiter: ClientLimiter;
  #groups = new Map<string, Group>();
  #servers: { server: Server; group?: string }[] = [];
  #closing = new AbortController();
  #handshakes = new Map<Socket, TimerId>();
  #sockets = new Set<Socket>();
  #settled = new Set<Promise<void>>();
  #ciphers: Set<string>;
  #started = false;
  #closed: Promise<void> | undefined;
  /** Live counters; read them, do not change them. */
  readonly counters: BalancerCounters = {
    accepted: 0,
    denied: new Map(),
    handshakeErrors: new Map(),
    active: 0,
  };

  /**
   * Creates a balancer; nothing listens until {@linkcode Balancer.start}.
   *
   * @param options The configuration, TLS material and injectables.
   */
  constructor(options: BalancerOptions) {
    super();
    this.#config = options.config;
    this.#tls = options.tls;
    this.#clock = options.clock ?? systemClock;
    this.#dial = options.dial ?? dialTcp;
    this.#healthCheck = options.healthCheck;
    this.#policy = new Policy(options.config);
    this.#limiter = new ClientLimiter({ clock: this.#clock });
    this.#ciphers = new Set(options.config.tls.ciphers);
  }

  /**
   * Starts health probes, waits for their first round, then listens.
   *
   * @returns When every listener is bound.
   * @throws {Error} When a listener cannot bind (address in use, permission).
   */
  async start(): Promise<void> {
    if (this.#started) throw new Error("Cannot start balancer: already started");
    this.#started = true;
    for (const group of this.#config.groups.values()) this.#addGroup(group);
    await Promise.all([...this.#groups.values()].map((g) => g.probe.ready));
    const shared = this.#config.server.listen;
    try {
      if (shared !== undefined) await this.#listen(shared, undefined);
      for (const group of this.#config.groups.values()) {
        if (group.listen !== undefined) await this.#listen(group.listen, group.name);
      }
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  /**
   * The addresses bound, in configuration order (shared listener first).
   *
   * @returns One entry per listener.
   */
  listeners(): ListenerInfo[] {
    return this.#servers.map(({ server, group }) => {
      const bound = server.address();
      const address = typeof bound === "object" && bound !== null
        ? { hostname: bound.address, port: bound.port }
        : { hostname: "", port: 0 };
      return group === undefined ? { address } : { group, address };
    });
  }

  /**
   * The pool of a group, for status and metrics.
   *
   * @param group The group name.
   * @returns The pool, or `undefined` for an unknown group.
   */
  pool(group: string): LeastConnPool | undefined {
    return this.#groups.get(group)?.pool;
  }

  /**
   * The health probe of a group, for status and metrics.
   *
   * @param group The group name.
   * @returns The probe, or `undefined` for an unknown group.
   */
  probe(group: string): HealthProbe | undefined {
    return this.#groups.get(group)?.probe;
  }

  /** The per-client limiter, for status and metrics. */
  get limiter(): ClientLimiter {
    return this.#limiter;
  }

  /**
   * Stops listening, ends every live connection and stops the probes.
   *
   * @returns When everything is closed.
   */
  close(): Promise<void> {
    this.#closed ??= this.#shutdown();
    return this.#closed;
  }

  /**
   * Same as {@linkcode Balancer.close}.
   *
   * @returns When everything is closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    await Promise.all(
      this.#servers.map(({ server }) =>
        new Promise<void>((resolve) => server.close(() => resolve()))
      ),
    );
    this.#closing.abort(new Error("Balancer closing"));
    for (const [socket, timer] of this.#handshakes) {
      this.#clock.clearTimeout(timer);
      socket.destroy();
    }
    this.#handshakes.clear();
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(this.#settled);
    for (const group of this.#groups.values()) {
      group.follow[Symbol.dispose]();
      await group.probe.close();
    }
  }

  #addGroup(config: GroupConfig): void {
    const pool = new LeastConnPool(
      config.upstreams.map((u) => ({ address: u.address, weight: u.weight })),
      { clock: this.#clock, initiallyHealthy: false },
    );
    const health = config.health;
    const targets: HealthTarget[] = config.upstreams.map((u) => ({ address: u.address }));
    const probe = new HealthProbe(targets, {
      interval: health.interval,
      timeout: health.timeout,
      rise: health.rise,
      fall: health.fall,
      ...(health.send === undefined ? {} : { send: health.send }),
      ...(health.expect === undefined ? {} : { expect: health.expect }),
      ...(this.#healthCheck === undefined ? {} : { check: this.#healthCheck }),
      clock: this.#clock,
    });
    const follow = pool.followHealth(probe);
    probe.start();
    this.#groups.set(config.name, { config, pool, probe, follow });
  }

  async #listen(address: string, group: string | undefined): Promise<void> {
    const { hostname, port } = parseHostPort(address);
    const groupNames = [...this.#config.groups.keys()];
    const server = createServer({
      ca: this.#tls.ca,
      cert: this.#tls.cert,
      key: this.#tls.key,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ciphers: this.#config.tls.ciphers.join(":"),
      ecdhCurve: ECDH_CURVES,
      allowHalfOpen: true,
      ...(group === undefined
        ? {
          ALPNCallback: ({ protocols }: { protocols: string[] }) =>
            protocols.find((p) => groupNames.includes(p)),
        }
        : {}),
    });
    server.on("connection", (socket: Socket) => this.#onConnection(socket));
    server.on("secureConnection", (socket: TLSSocket) => this.#onSecure(socket, group));
    server.on("tlsClientError", (error: Error & { code?: string }, socket: TLSSocket) => {
      this.#handshakeError(error.code ?? "tls_error", socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: hostname, port, backlog: LISTEN_BACKLOG }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on(
      "error",
      (error) => log.error("Listener {address} failed: {error}", { address, error }),
    );
    this.#servers.push(group === undefined ? { server } : { server, group });
    log.info("Listening on {address}{for}", {
      address: formatHostPort(this.listeners().at(-1)!.address),
      for: group === undefined ? "" : ` for group ${group}`,
    });
  }

  #onConnection(socket: Socket): void {
    const timer = this.#clock.setTimeout(() => {
      if (this.#handshakes.delete(socket)) {
        this.#handshakeError("handshake_timeout", socket);
        socket.destroy();
      }
    }, this.#config.server.handshakeTimeout);
    this.#handshakes.set(socket, timer);
    socket.once("close", () => {
      const pending = this.#handshakes.get(socket);
      if (pending !== undefined) {
        this.#clock.clearTimeout(pending);
        this.#handshakes.delete(socket);
      }
    });
  }

  #handshakeError(reason: string, socket: Socket): void {
    const remote = remoteOf(socket);
    const errors = this.counters.handshakeErrors;
    errors.set(reason, (errors.get(reason) ?? 0) + 1);
    log.info("Handshake failed from {remote}: {reason}", { remote, reason });
    this.#emit("handshake_error", { reason, remote } satisfies HandshakeErrorRecord);
  }

  #onSecure(socket: TLSSocket, listenerGroup: string | undefined): void {
    const raw = this.#rawOf(socket);
    const timer = raw === undefined ? undefined : this.#handshakes.get(raw);
    if (timer !== undefined) {
      this.#clock.clearTimeout(timer);
      this.#handshakes.delete(raw!);
    }
    if (this.#closing.signal.aborted) {
      this.#deny(socket, { reason: "server_closing", remote: remoteOf(socket) });
      return;
    }
    // Read from the start: Deno 2.9's node:tls loses a FIN that arrives while a
    // socket is not being read (see forward()), so bytes sent before the upstream is
    // connected are kept here and handed to forward() as its head.
    const head: Uint8Array[] = [];
    const early = (chunk: Uint8Array) => head.push(chunk);
    socket.on("data", early);
    socket.on("end", noop);
    const done = this.#serve(socket, listenerGroup, head, early).catch((error) => {
      log.error("Unexpected error serving {remote}: {error}", { remote: remoteOf(socket), error });
      socket.destroy();
    });
    this.#settled.add(done);
    done.finally(() => this.#settled.delete(done));
  }

  /** The TCP socket under a TLS socket, whose handshake timer is pending. */
  #rawOf(socket: TLSSocket): Socket | undefined {
    // Deno's node:tls keeps it as `_parent`, as Node does; fall back to the address.
    const parent = (socket as { _parent?: Socket })._parent;
    if (parent !== undefined) return parent;
    for (const raw of this.#handshakes.keys()) {
      if (raw.remotePort === socket.remotePort && raw.remoteAddress === socket.remoteAddress) {
        return raw;
      }
    }
    return undefined;
  }

  async #serve(
    socket: TLSSocket,
    listenerGroup: string | undefined,
    head: Uint8Array[],
    early: (chunk: Uint8Array) => void,
  ): Promise<void> {
    const remote = remoteOf(socket);
    // Defence in depth: rejectUnauthorized already refused these in the handshake.
    const peer = socket.getPeerCertificate(true);
    if (!socket.authorized || peer?.raw === undefined) {
      return this.#deny(socket, { reason: "unauthenticated", remote });
    }
    const cipher = socket.getCipher()?.standardName;
    if (cipher === undefined || !this.#ciphers.has(cipher)) {
      return this.#deny(socket, { reason: "cipher_not_allowed", remote, detail: cipher });
    }
    let identity: CertIdentity;
    try {
      identity = identityFromCertificate(peer.raw);
    } catch (error) {
      return this.#deny(socket, { reason: "bad_certificate", remote, detail: String(error) });
    }
    const who = this.#policy.identify(identity);
    if ("deny" in who) return this.#deny(socket, { reason: who.deny, identity, remote });
    const client = who.client;
    const servername = (socket as { servername?: string | false | null }).servername;
    const alpn = socket.alpnProtocol;
    const route = this.#policy.route(client, {
      ...(listenerGroup === undefined ? {} : { listenerGroup }),
      ...(typeof servername === "string" && servername !== "" ? { sni: servername } : {}),
      ...(typeof alpn === "string" ? { alpn: [alpn] } : {}),
    });
    if ("deny" in route) {
      return this.#deny(socket, { reason: route.deny, client: client.name, identity, remote });
    }
    const group = this.#groups.get(route.group)!;
    const base = { client: client.name, identity, group: route.group, remote };

    let slot;
    try {
      slot = await this.#limiter.acquire(client.name, client.limits);
    } catch (error) {
      if (!(error instanceof ClientLimitError)) throw error;
      return this.#deny(socket, {
        ...base,
        reason: error.kind === "rate" ? "limit_rate" : "limit_concurrency",
        detail: error.message,
      });
    }
    using _slot = slot;

    // Stop dialing if the client leaves or the balancer closes meanwhile.
    const gone = new AbortController();
    const onGone = () => gone.abort(new Error("Client closed before the upstream connected"));
    socket.once("close", onGone);
    let connection;
    try {
      connection = await group.pool.connect({
        dial: this.#dial,
        timeout: this.#config.server.connectTimeout,
        signal: AbortSignal.any([gone.signal, this.#closing.signal]),
        onDialFailure: (address, reason) => group.probe.reportFailure(address, reason),
      });
    } catch (error) {
      const reason: DenyReason = this.#closing.signal.aborted
        ? "server_closing"
        : gone.signal.aborted
        ? "client_gone"
        : error instanceof NoHealthyUpstreamError
        ? "no_healthy_upstream"
        : "upstream_unavailable";
      return this.#deny(socket, { ...base, reason, detail: String(error) });
    } finally {
      socket.off("close", onGone);
    }
    using lease = connection.lease;
    const upstream = connection.socket;
    group.probe.reportSuccess(lease.address);

    this.counters.accepted++;
    this.counters.active++;
    this.#sockets.add(socket);
    this.#sockets.add(upstream);
    const stats: ForwardStats = { bytesFromClient: 0, bytesFromUpstream: 0 };
    socket.off("data", early);
    socket.off("end", noop);
    try {
      const result = await forward(socket, upstream, {
        head,
        idleTimeout: this.#config.server.idleTimeout,
        signal: this.#closing.signal,
        clock: this.#clock,
        stats,
      });
      if (result.reason === "upstream_reset") {
        group.probe.reportFailure(lease.address, "upstream_reset");
      }
      const record: ConnectionRecord = {
        ...base,
        upstream: lease.address,
        bytesFromClient: result.bytesFromClient,
        bytesFromUpstream: result.bytesFromUpstream,
        durationMs: result.durationMs,
        reason: result.reason,
      };
      audit.info(
        "Connection ended: client={client} group={group} upstream={upstream} in={bytesFromClient} out={bytesFromUpstream} ms={durationMs} reason={reason}",
        { ...record, identity: summarize(identity) },
      );
      this.#emit("end", record);
    } finally {
      this.counters.active--;
      this.#sockets.delete(socket);
      this.#sockets.delete(upstream);
    }
  }

  #deny(socket: TLSSocket, record: DenyRecord): void {
    const denied = this.counters.denied;
    denied.set(record.reason, (denied.get(record.reason) ?? 0) + 1);
    log.warn("Denied {remote}: {reason}{detail}", {
      remote: record.remote,
      reason: record.reason,
      client: record.client,
      group: record.group,
      identity: record.identity === undefined ? undefined : summarize(record.identity),
      detail: record.detail === undefined ? "" : ` (${record.detail})`,
    });
    // Close right after the handshake: discard anything the client sent, send
    // close_notify and FIN, and make sure the socket goes away even if the
    // client never answers.
    socket.resume();
    socket.on("error", () => {});
    socket.end();
    const timer = this.#clock.setTimeout(() => socket.destroy(), 1000);
    socket.once("close", () => this.#clock.clearTimeout(timer));
    this.#emit("deny", record);
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function noop(): void {}

function remoteOf(socket: Socket): string {
  const address = socket.remoteAddress;
  const port = socket.remotePort;
  return address === undefined ? "unknown" : formatHostPort({ hostname: address, port: port ?? 0 });
}

function summarize(identity: CertIdentity): Record<string, unknown> {
  return {
    spki_sha256: identity.spkiSha256,
    serial: identity.serial,
    cn: identity.cn,
    ...(identity.sanUri.length > 0 ? { san_uri: identity.sanUri } : {}),
    ...(identity.sanDns.length > 0 ? { san_dns: identity.sanDns } : {}),
  };
}
