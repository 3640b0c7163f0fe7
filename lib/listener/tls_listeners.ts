/**
 * The listeners: `node:tls` servers that accept TLS 1.3 only with ECDHE, require a
 * client certificate, and bound what unauthenticated clients can hold. They count
 * every client TCP connection from accept to close, time handshakes out, shed
 * handshakes at the caps (`max_connections`, `max_handshakes`), name why a handshake
 * failed, and hand each completed handshake over with its reads paused at the TCP
 * socket (see `linkTcpReads`).
 *
 * @module
 */
import { createServer, type Server, type TLSSocket } from "node:tls";
import type { Socket } from "node:net";
import { getLogger } from "@logtape/logtape";
import { formatHostPort, parseHostPort } from "../core/address.ts";
import type { Clock, TimerId } from "../core/clock.ts";
import type { HandshakeFailure } from "../core/reasons.ts";
import type { ConnectionCaps } from "./connection_caps.ts";
import {
  type ClientHelloInfo,
  clientSpoke,
  hookTlsSocket,
  keepContext,
  readAuthorization,
  setClientHelloHandler,
  setClientHelloStep,
} from "./_tls_server_hooks.ts";
import { linkTcpReads } from "../core/tls_reads.ts";

const log = getLogger(["mtlb", "server"]);

/**
 * Listen backlog requested for every listener. The kernel caps it at
 * `net.core.somaxconn` (4096 on current Linux); the default of 511 overflows
 * under a burst of simultaneous TLS clients.
 */
export const LISTEN_BACKLOG = 4096;

/** How long after handshake_timeout Deno's own handshake timer lets a failed socket go. */
const HANDSHAKE_RELEASE_MS = 1000;

/** Key exchange groups offered: ECDHE only (no finite-field DHE). */
export const ECDH_CURVES = "X25519:P-256:P-384";

/** A handshake whose client sent nothing for this long is the first shed at a cap, ms. */
const SILENT_HANDSHAKE_MS = 100;

/** The TLS material and suites of a listener, as `setSecureContext` replaces them. */
export interface SecureContextOptions {
  /** The CA bundle client certificates must chain to, PEM. */
  ca: string;
  /** The server certificate chain, PEM. */
  cert: string;
  /** The server key, PEM. */
  key: string;
  /** TLS 1.3 only. */
  minVersion: "TLSv1.3";
  /** TLS 1.3 only. */
  maxVersion: "TLSv1.3";
  /** The suites, `:`-separated. */
  ciphers: string;
  /** {@linkcode ECDH_CURVES}. */
  ecdhCurve: string;
}

/**
 * The secure context of a listener: the `[tls]` material and suites, TLS 1.3 only.
 *
 * @example Usage
 * ```ts
 * import { secureContextOptions } from "./tls_listeners.ts";
 * import assert from "node:assert/strict";
 *
 * const options = secureContextOptions(["TLS_AES_128_GCM_SHA256"], { ca: "", cert: "", key: "" });
 * assert.equal(options.minVersion, "TLSv1.3");
 * assert.equal(options.ciphers, "TLS_AES_128_GCM_SHA256");
 * ```
 *
 * @param ciphers The TLS 1.3 suites allowed.
 * @param material The CA bundle, certificate and key, PEM.
 * @returns The options of `createServer` and `setSecureContext`.
 */
export function secureContextOptions(
  ciphers: readonly string[],
  material: { ca: string; cert: string; key: string },
): SecureContextOptions {
  return {
    ca: material.ca,
    cert: material.cert,
    key: material.key,
    minVersion: "TLSv1.3",
    maxVersion: "TLSv1.3",
    ciphers: ciphers.join(":"),
    ecdhCurve: ECDH_CURVES,
  };
}

/** Detail of a failed handshake, as {@linkcode TlsListeners} reports it. */
export interface HandshakeFailureRecord {
  /** The cause. */
  reason: HandshakeFailure;
  /** The client's address, `host:port`, when known. */
  remote: string;
  /**
   * Detail for the log: the runtime's error code, or what failed in the certificate.
   *
   * @default {undefined}
   */
  detail?: string;
}

/** A completed handshake, handed over by {@linkcode TlsListeners}. */
export interface SecureConnection {
  /** The TLS socket, half-open allowed, paused when {@linkcode linked}. */
  socket: TLSSocket;
  /** The group of the dedicated listener that accepted it; `undefined` on the shared one. */
  listenerGroup: string | undefined;
  /** The client's address, `host:port`. */
  remote: string;
  /**
   * Whether its reads are linked to its TCP socket's (it is then paused, and pausing
   * pushes back on the client); otherwise it reads whatever comes.
   */
  linked: boolean;
}

/** What {@linkcode TlsListeners} needs from its owner. */
export interface TlsListenersOptions {
  /** Time source for handshake timeouts and the shedding ages. */
  clock: Clock;
  /**
   * Bind with `SO_REUSEPORT` (workers share the addresses).
   *
   * @default {false}
   */
  reusePort?: boolean;
  /**
   * Where the count of open client connections lives, when several balancers share a
   * cap: `add` returns the new total.
   *
   * @default {this instance's own count}
   */
  connectionCount?: { add(delta: number): number };
  /**
   * This instance's share of `max_handshakes` (`1 / workers`).
   *
   * @default {1}
   */
  handshakeShare?: number;
  /**
   * Whether to log each listener bound.
   *
   * @default {true}
   */
  logListening?: boolean;
  /** The caps and the handshake timeout in force; read on every connection. */
  settings: () => { caps: ConnectionCaps; handshakeTimeout: number };
  /** Chooses the ALPN protocol for a ClientHello, or none. */
  selectAlpn: (hello: ClientHelloInfo, listenerGroup: string | undefined) => string | undefined;
  /**
   * Whether a listener's connections need the ClientHello step: `selectAlpn`, and the
   * ALPN protocols offered (`offeredAlpn`). Read when a listener is bound and by
   * {@linkcode TlsListeners.refresh}. The step costs Deno 2.9 about 8% of a full
   * handshake's CPU (see `setClientHelloStep`); without it, no ALPN is selected and
   * none is reported as offered.
   *
   * @default {() => true}
   */
  needsClientHello?: (listenerGroup: string | undefined) => boolean;
  /** A handshake completed. */
  onSecure: (connection: SecureConnection) => void;
  /** A connection was refused at a cap before its handshake (`server_full`). */
  onFull: (remote: string, detail: string) => void;
  /** A handshake failed. */
  onHandshakeError: (record: HandshakeFailureRecord) => void;
}

/** One bound listener. */
export interface BoundListener {
  /** The `node:tls` server. */
  readonly server: Server;
  /** The configured address (port 0 stays 0), the key reloads match on. */
  readonly address: string;
  /** The group of a dedicated listener; a reload that keeps the address may swap it. */
  group: string | undefined;
  /** Settles once closed. */
  closed: Promise<void> | undefined;
}

interface Pending {
  since: number;
  /** When its handshake_timeout passes (clock milliseconds). */
  deadline: number;
  /** Whether the client's ClientHello arrived (known with the ClientHello step only). */
  hello: boolean;
}

/**
 * The listeners of a balancer and every client TCP connection they accepted, until
 * it closes.
 *
 * @example Usage
 * ```ts ignore
 * import { secureContextOptions, TlsListeners } from "./tls_listeners.ts";
 *
 * const listeners = new TlsListeners({
 *   clock: systemClock,
 *   settings: () => ({ caps: { maxConnections: 1000, maxHandshakes: 500 }, handshakeTimeout: 5000 }),
 *   selectAlpn: () => undefined,
 *   onSecure: ({ socket }) => socket.end(),
 *   onFull: () => {},
 *   onHandshakeError: () => {},
 * });
 * await listeners.listen("127.0.0.1:8443", undefined, secureContextOptions(ciphers, tls));
 * ```
 */
export class TlsListeners {
  #options: TlsListenersOptions;
  #clock: Clock;
  #share: number;
  /** Handshakes in flight, oldest first, by TCP socket. */
  #handshakes = new Map<Socket, Pending>();
  /** Sockets whose end this instance caused, whose TLS layer may still report an error. */
  #refused = new WeakSet<Socket>();
  /** The remote address of each TCP socket: once destroyed, a socket no longer knows it. */
  #remotes = new WeakMap<Socket, string>();
  #open = 0;
  #idle: PromiseWithResolvers<void> | undefined;
  /** One timer for every handshake in flight, armed for the oldest one's deadline. */
  #deadlineTimer: TimerId | undefined;
  /** The "close" listener of every accepted TCP socket (one function, not one per socket). */
  #onRawClose: (this: Socket) => void;

  /**
   * Creates the listener set; nothing listens until {@linkcode TlsListeners.listen}.
   *
   * @param options Clock, caps, callbacks.
   */
  constructor(options: TlsListenersOptions) {
    this.#options = options;
    this.#clock = options.clock;
    this.#share = options.handshakeShare ?? 1;
    const closed = (socket: Socket): void => this.#closed(socket);
    this.#onRawClose = function (this: Socket) {
      closed(this);
    };
    if (!(this.#share > 0 && this.#share <= 1)) {
      throw new RangeError(
        `Cannot create listeners: handshakeShare must be in (0, 1], received ${this.#share}`,
      );
    }
  }

  /** Client TCP connections open: handshaking, being refused, or forwarded. */
  get open(): number {
    return this.#open;
  }

  /** Handshakes in flight. */
  get handshaking(): number {
    return this.#handshakes.size;
  }

  /**
   * Settles once no client connection is open (now, if none is).
   *
   * @returns When the count of open connections is 0.
   */
  idle(): Promise<void> {
    if (this.#open === 0) return Promise.resolve();
    this.#idle ??= Promise.withResolvers<void>();
    return this.#idle.promise;
  }

  /**
   * Binds a listener.
   *
   * @param address `host:port`; port 0 picks one.
   * @param group The group of a dedicated listener; `undefined` for the shared one.
   * @param context Its TLS material and suites.
   * @returns The bound listener.
   * @throws {Error} When the address cannot be bound (in use, permission).
   */
  async listen(
    address: string,
    group: string | undefined,
    context: SecureContextOptions,
  ): Promise<BoundListener> {
    const { hostname, port } = parseHostPort(address);
    const server = createServer({
      ...context,
      requestCert: true,
      rejectUnauthorized: true,
      // Nagle off on every accepted socket, as on the upstream leg: with it on, the
      // last segment of a reply waits for the ACK of the ones before, and a client
      // that delays its ACKs adds about 40 ms to every large reply.
      noDelay: true,
      // Not half-open during the handshake: Deno then never reports a FIN that arrives
      // mid-handshake, and the socket would be held until handshake_timeout. A
      // completed handshake is made half-open before it is handed over.
      // Runs Deno's ClientHello step, where ALPN is chosen per connection (or none).
      SNICallback: keepContext,
    });
    const listener: BoundListener = { server, address, group, closed: undefined };
    this.refresh(listener);
    setClientHelloHandler(server, (hello, raw) => {
      // The client spoke: not one of a flood of silent connections.
      const pending = raw === undefined ? undefined : this.#handshakes.get(raw);
      if (pending !== undefined) pending.hello = true;
      return this.#options.selectAlpn(hello, listener.group);
    });
    server.on("connection", (socket: Socket) => this.#onConnection(socket));
    server.on("secureConnection", (socket: TLSSocket) => this.#onSecure(socket, listener.group));
    server.on("tlsClientError", (error: Error & { code?: string }, socket: TLSSocket) => {
      this.#onTlsError(error, socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(
        { host: hostname, port, backlog: LISTEN_BACKLOG, reusePort: this.#options.reusePort },
        () => {
          server.off("error", reject);
          resolve();
        },
      );
    });
    server.on(
      "error",
      (error) => log.error("Listener {address} failed: {error}", { address, error }),
    );
    if (this.#options.logListening ?? true) {
      const bound = server.address();
      const at = typeof bound === "object" && bound !== null
        ? formatHostPort({ hostname: bound.address, port: bound.port })
        : address;
      if (group === undefined) log.info("Listening on {address}", { address: at });
      else log.info("Listening on {address} for group {group}", { address: at, group });
    }
    return listener;
  }

  /**
   * Applies the listener's current group and settings to its new connections: whether
   * they run the ClientHello step (`needsClientHello`), and when the runtime lets a
   * failed handshake go. Call it after changing `listener.group`, or what
   * `needsClientHello` or `settings` answer for it (a reload).
   *
   * @param listener A listener of this set.
   */
  refresh(listener: BoundListener): void {
    setClientHelloStep(
      listener.server,
      this.#options.needsClientHello?.(listener.group) ?? true,
    );
    // The runtime's own handshake timer, read for each new connection. Deno does not
    // enforce it, but holds each socket whose handshake fails until it expires (120 s
    // by default): a flood of failed handshakes would pile up. Ours closes them at
    // handshake_timeout; this one only lets them go soon after.
    const server = listener.server as Server & { _handshakeTimeout?: number };
    if ("_handshakeTimeout" in server) {
      server._handshakeTimeout = this.#options.settings().handshakeTimeout + HANDSHAKE_RELEASE_MS;
    }
  }

  /**
   * Stops a listener from accepting; its connections go on.
   *
   * @param listener A listener of this set.
   * @returns When it closed (its connections ended).
   */
  close(listener: BoundListener): Promise<void> {
    listener.closed ??= new Promise<void>((resolve) => listener.server.close(() => resolve()));
    return listener.closed;
  }

  /** Ends every handshake in flight (a shutdown). */
  abortHandshakes(): void {
    this.#disarm();
    const sockets = [...this.#handshakes.keys()];
    this.#handshakes.clear();
    for (const socket of sockets) socket.destroy();
  }

  #onConnection(socket: Socket): void {
    const { caps: { maxConnections: max, maxHandshakes }, handshakeTimeout } = this.#options
      .settings();
    const shared = this.#options.connectionCount;
    const total = shared === undefined ? this.#open + 1 : shared.add(1);
    const handshakeCap = Math.max(1, Math.ceil(maxHandshakes * this.#share));
    if (
      (total > max || this.#handshakes.size >= handshakeCap) &&
      !this.#shed(handshakeTimeout, max, maxHandshakes)
    ) {
      shared?.add(-1);
      // Refused before any TLS work: the cheapest answer under overload.
      this.#refused.add(socket);
      socket.on("error", noop);
      socket.destroy();
      this.#options.onFull(
        remoteOf(socket),
        total > max
          ? `${max} connections open (max_connections)`
          : `${handshakeCap} handshakes in flight (max_handshakes)`,
      );
      return;
    }
    this.#open++;
    hookTlsSocket(socket);
    this.#remotes.set(socket, remoteOf(socket));
    const now = this.#clock.now();
    this.#handshakes.set(socket, { since: now, deadline: now + handshakeTimeout, hello: false });
    if (this.#deadlineTimer === undefined) this.#arm(handshakeTimeout);
    socket.on("close", this.#onRawClose);
  }

  /** A client TCP socket closed: whatever it was doing, it is no longer open. */
  #closed(socket: Socket): void {
    this.#handshakes.delete(socket);
    this.#open--;
    this.#options.connectionCount?.add(-1);
    if (this.#open === 0 && this.#idle !== undefined) {
      this.#idle.resolve();
      this.#idle = undefined;
    }
  }

  /** Arms the handshake timer `ms` from now. */
  #arm(ms: number): void {
    this.#deadlineTimer = this.#clock.setTimeout(this.#onDeadline, Math.max(0, ms));
  }

  #disarm(): void {
    if (this.#deadlineTimer !== undefined) this.#clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
  }

  /**
   * Ends the handshakes whose handshake_timeout passed, oldest first, and arms the timer
   * for the next one. Handshakes are kept in the order they started, so the first one
   * not yet due stops the sweep (after a reload that shortened handshake_timeout, a
   * handshake that started before it may end late by the difference).
   */
  #onDeadline = (): void => {
    this.#deadlineTimer = undefined;
    const now = this.#clock.now();
    for (const [socket, pending] of this.#handshakes) {
      if (pending.deadline > now) {
        this.#arm(pending.deadline - now);
        return;
      }
      this.#handshakes.delete(socket);
      this.#options.onHandshakeError({
        reason: "handshake_timeout",
        remote: this.#remotes.get(socket) ?? remoteOf(socket),
      });
      // Counted once: the ECONNRESET node:tls reports next is this same failure.
      this.#refused.add(socket);
      socket.destroy();
    }
  };

  /**
   * Makes room for a new connection at a cap: closes the oldest handshake in flight
   * whose client has sent nothing for 100 ms (a silent or stalled connection), else
   * the oldest in flight for a quarter of `handshake_timeout` (a slow one). A young
   * handshake that is making progress is never shed: a burst of real clients gets
   * `server_full` for the newcomers instead.
   *
   * @returns Whether one was closed.
   */
  #shed(handshakeTimeout: number, maxConnections: number, maxHandshakes: number): boolean {
    const now = this.#clock.now();
    const silentFor = Math.min(SILENT_HANDSHAKE_MS, handshakeTimeout / 4);
    let victim: Socket | undefined;
    for (const [socket, pending] of this.#handshakes) {
      if (now - pending.since < silentFor) break; // Oldest first: the rest are younger.
      if (!pending.hello && !clientSpoke(socket)) {
        victim = socket;
        break;
      }
    }
    if (victim === undefined) {
      const oldest = this.#handshakes.entries().next();
      if (oldest.done) return false;
      const [socket, pending] = oldest.value;
      if (now - pending.since < handshakeTimeout / 4) return false;
      victim = socket;
    }
    const pending = this.#handshakes.get(victim)!;
    this.#handshakes.delete(victim);
    this.#options.onHandshakeError({
      reason: "handshake_shed",
      remote: this.#remotes.get(victim) ?? remoteOf(victim),
      detail: `${pending.hello || clientSpoke(victim) ? "in flight" : "silent"} for ${
        Math.round(now - pending.since)
      } ms, closed to make room (max_connections ${maxConnections}, max_handshakes ${maxHandshakes})`,
    });
    this.#refused.add(victim);
    victim.destroy();
    return true;
  }

  #onTlsError(error: Error & { code?: string }, socket: TLSSocket): void {
    const raw = (socket as { _parent?: Socket })._parent ?? socket;
    if (this.#refused.has(raw)) return;
    const remote = this.#remotes.get(raw) ?? remoteOf(socket);
    const detail = `${error.code ?? "no code"}: ${error.message}`;
    this.#options.onHandshakeError({ reason: handshakeFailureOf(error), remote, detail });
  }

  #onSecure(socket: TLSSocket, listenerGroup: string | undefined): void {
    const raw = this.#rawOf(socket);
    if (raw !== undefined) this.#handshakes.delete(raw);
    // Read when the connection was accepted: cheaper than asking the socket again.
    const remote = (raw === undefined ? undefined : this.#remotes.get(raw)) ?? remoteOf(socket);
    readAuthorization(socket);
    socket.allowHalfOpen = true;
    socket.on("end", noop);
    // Linked, bytes sent before the upstream is connected wait in the kernel, and the
    // client's TCP window pushes back until forward() resumes reading.
    const linked = linkTcpReads(socket);
    if (linked) socket.pause();
    this.#options.onSecure({ socket, listenerGroup, remote, linked });
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
}

/**
 * The `host:port` of a socket's peer, `unknown` once it is gone.
 *
 * @param socket A TCP or TLS socket.
 * @returns Its remote address.
 */
export function remoteOf(socket: Socket): string {
  const address = socket.remoteAddress;
  const port = socket.remotePort;
  return address === undefined ? "unknown" : formatHostPort({ hostname: address, port: port ?? 0 });
}

/** Names the cause of a handshake error the runtime reported, from its code and message. */
function handshakeFailureOf(error: Error & { code?: string }): HandshakeFailure {
  const { code, message } = error;
  if (code === "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE") return "no_certificate";
  if (code === "ECONNRESET" || code === "EPIPE") return "client_closed";
  // rustls names the cause in the message: "peer is incompatible: NoKxGroupsInCommon".
  if (/SupportedVersionsExtensionRequired|Tls12NotOffered|ProtocolVersion/.test(message)) {
    return "protocol_version";
  }
  if (/NoKxGroupsInCommon/.test(message)) return "no_shared_group";
  if (/NoCipherSuitesInCommon/.test(message)) return "no_shared_cipher";
  if (/InvalidContentType|corrupt message|InvalidMessage/.test(message)) return "not_tls";
  return "tls_error";
}

function noop(): void {}
