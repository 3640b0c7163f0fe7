/**
 * Outbound TLS connections to upstreams: {@linkcode tlsDialer} makes a
 * {@linkcode Dialer} that verifies the upstream's certificate against a CA bundle and a
 * name, and may present a client certificate; {@linkcode UpstreamTlsError} says why an
 * upstream was refused.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import {
  checkServerIdentity,
  connect,
  type ConnectionOptions,
  createSecureContext,
  type PeerCertificate,
  type TLSSocket,
} from "node:tls";
import type { HostPort } from "../core/address.ts";
import { linkTcpReads } from "../core/tls_reads.ts";
import type { UpstreamTlsFailure } from "../core/reasons.ts";
import type { Dialer } from "./dial.ts";

/** Options of {@linkcode tlsDialer}: the PEM texts of a group's `[groups.<name>.tls]`. */
export interface TlsDialerOptions {
  /** The CA certificates (PEM) the upstream's certificate must chain to. */
  ca: string;
  /**
   * The certificate chain (PEM) presented to upstreams that ask for one; with `key`.
   *
   * @default {undefined}
   */
  cert?: string | undefined;
  /**
   * The private key (PEM) of `cert`.
   *
   * @default {undefined}
   */
  key?: string | undefined;
  /**
   * The name sent as SNI and verified in the upstream's certificate. Without it, the
   * host of the address dialled is (an IP address is verified against the
   * certificate's IP addresses, and no SNI is sent).
   *
   * @default {undefined}
   */
  serverName?: string | undefined;
  /**
   * The name to verify for an upstream when `serverName` is not set, such as the DNS
   * name its address was looked up from; `undefined` for its host.
   *
   * @default {undefined}
   */
  serverNameOf?: ((address: HostPort) => string | undefined) | undefined;
  /**
   * Wall-clock time, ms since the epoch: tells an expired certificate from an
   * untrusted one in {@linkcode UpstreamTlsError}.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/**
 * An upstream refused over TLS: its certificate is not trusted, expired or for another
 * name, or the handshake failed. {@linkcode UpstreamTlsError.reason} names the cause.
 *
 * @example Usage
 * ```ts
 * import { UpstreamTlsError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const error = new UpstreamTlsError("upstream_tls_name", "Cannot use upstream 10.0.0.5:5432: wrong name");
 * assert.equal(error.name, "UpstreamTlsError");
 * assert.equal(error.reason, "upstream_tls_name");
 * ```
 */
export class UpstreamTlsError extends Error {
  /** Why the upstream was refused. */
  readonly reason: UpstreamTlsFailure;

  /**
   * Creates the error.
   *
   * @param reason Why the upstream was refused.
   * @param message What was found, for the log (it may name the upstream).
   * @param options The `cause`: the runtime's error, if any.
   */
  constructor(reason: UpstreamTlsFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UpstreamTlsError";
    this.reason = reason;
  }
}

/**
 * Makes a {@linkcode Dialer} that connects over TLS 1.2 or 1.3 with `node:tls`,
 * half-open allowed and Nagle off, and resolves only once the upstream's certificate
 * chains to `ca`, every certificate of its chain is within its validity, and it is
 * valid for `serverName` (else `serverNameOf(address)`, else the host dialled).
 * Otherwise the connection is closed before a byte of the caller's is sent, and the
 * dial rejects with an {@linkcode UpstreamTlsError}: `upstream_tls_untrusted`,
 * `upstream_tls_expired`, `upstream_tls_name`, or `upstream_tls_handshake` (the TCP
 * connection was made but the handshake failed: not TLS, no common version, the
 * upstream refused `cert`, closed or reset). Errors before the TCP connection is made (`ECONNREFUSED`, ...) and the
 * signal's reason are rethrown as they are, as {@linkcode dialTcp} does.
 *
 * The checks of the handshake are the runtime's (`rustls` on Deno); mtlb reads
 * whether they passed, and looks at the chain only after a failure, to name it.
 *
 * The socket's reads are linked to its TCP socket's (`linkTcpReads`), so that pausing
 * it pushes back on the upstream, and it is marked for `forward` to pause. As with
 * `dialTcp`, an `"error"` on the socket after the dial with no listener of the
 * caller's throws: add one with `on`.
 *
 * @example Usage
 * ```ts ignore
 * import { tlsDialer } from "@mtlb/mtlb";
 *
 * const dial = tlsDialer({
 *   ca: await Deno.readTextFile("upstream-ca.crt"),
 *   serverName: "db.internal",
 * });
 * const socket = await dial({ hostname: "10.0.0.5", port: 5432 }, AbortSignal.timeout(3000));
 * socket.end();
 * ```
 *
 * @param options The CA bundle, the client certificate and key, the name to verify.
 * @returns The dialer.
 * @throws {TypeError} When `ca` holds no certificate, or only one of `cert` and `key`
 *   is given.
 */
export function tlsDialer(options: TlsDialerOptions): Dialer<TLSSocket> {
  const { ca, cert, key, serverName, serverNameOf } = options;
  if (!/-----BEGIN CERTIFICATE-----/.test(ca)) {
    throw new TypeError("Cannot dial upstreams over TLS: ca must hold PEM certificates");
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError("Cannot dial upstreams over TLS: cert and key go together");
  }
  const now = options.now ?? Date.now;
  // One context for every connection: building it (parsing the PEM texts) per
  // connection costs more than the rest of the handshake.
  const secureContext = createSecureContext({
    ca,
    ...(cert === undefined ? {} : { cert, key }),
  });
  let authorities: X509Certificate[] | undefined;
  const context: Context = {
    authorities: () => authorities ??= pemCertificates(ca),
    now,
  };
  return (address: HostPort, signal: AbortSignal): Promise<TLSSocket> =>
    new Promise<TLSSocket>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const name = serverName ?? serverNameOf?.(address) ?? address.hostname;
      const socket = connect(
        <ConnectionOptions & { allowHalfOpen: boolean; noDelay: boolean }> {
          host: address.hostname,
          port: address.port,
          ...(isIP(name) === 0 ? { servername: name } : {}),
          secureContext,
          // Checked on "secureConnect", where the failure can be named; never skipped.
          rejectUnauthorized: false,
          // The name verified is `name`, which may not be the host dialled.
          checkServerIdentity: (_host, peer) => checkServerIdentity(name, peer),
          allowHalfOpen: true,
          noDelay: true,
        },
      );
      const dial: Dial = { address, name, context, connected: false, settle: undefined! };
      dial.settle = (error: unknown) => {
        pending.delete(socket);
        signal.removeEventListener("abort", onAbort);
        if (error === undefined) {
          socket.setNoDelay(true);
          resolve(socket);
        } else {
          socket.destroy();
          reject(error);
        }
      };
      const onAbort = () => dial.settle(signal.reason);
      pending.set(socket, dial);
      signal.addEventListener("abort", onAbort, { once: true });
      socket.on("error", onError);
      socket.on("connect", onConnect);
      socket.on("secureConnect", onSecureConnect);
    });
}

interface Context {
  authorities: () => X509Certificate[];
  now: () => number;
}

interface Dial {
  address: HostPort;
  /** The name verified. */
  name: string;
  context: Context;
  /** The TCP connection was made: a later failure is the handshake's. */
  connected: boolean;
  settle: (error: unknown) => void;
}

/** Sockets still connecting or handshaking, and their dial. */
const pending = new WeakMap<TLSSocket, Dial>();

/* Listeners shared by every socket and never removed, as in dial.ts. */

function onConnect(this: TLSSocket): void {
  const dial = pending.get(this);
  if (dial !== undefined) dial.connected = true;
}

function onSecureConnect(this: TLSSocket): void {
  const dial = pending.get(this);
  if (dial === undefined) return;
  const refused = verdict(this, dial);
  // Before anything is awaited: so that forward() can pause it (see linkTcpReads).
  if (refused === undefined) linkTcpReads(this);
  dial.settle(refused);
}

function onError(this: TLSSocket, error: Error): void {
  const dial = pending.get(this);
  if (dial !== undefined) {
    dial.settle(dial.connected ? handshakeError(error, dial) : error);
  } else if (this.listenerCount("error") === 1) {
    throw error;
  }
}

/** `undefined` when the upstream passed every check, else why not. */
function verdict(socket: TLSSocket, dial: Dial): UpstreamTlsError | undefined {
  // The runtime verified the chain, then (checkServerIdentity) the name.
  if (socket.authorized === true) return undefined;
  const where = `upstream ${formatAddress(dial.address)}`;
  const reason = String(socket.authorizationError ?? "");
  const peer = socket.getPeerCertificate(true);
  // The name is checked only once the chain verified.
  if (reason === "ERR_TLS_CERT_ALTNAME_INVALID") return nameError(where, dial.name, peer);
  const chain = peerChain(peer);
  if (chain.length === 0) {
    return new UpstreamTlsError(
      "upstream_tls_untrusted",
      `Cannot use ${where}: it presented no certificate`,
    );
  }
  if (chainsTo(chain, dial.context.authorities())) {
    const lapsed = outOfValidity(chain, dial.context.now());
    if (lapsed !== undefined) {
      return new UpstreamTlsError("upstream_tls_expired", `Cannot use ${where}: ${lapsed}`);
    }
  }
  return new UpstreamTlsError(
    "upstream_tls_untrusted",
    `Cannot use ${where}: its certificate (subject ${oneLine(chain[0]!.subject)}, issuer ${
      oneLine(chain[0]!.issuer)
    }) does not chain to the group's ca${reason === "" ? "" : ` (${reason})`}`,
  );
}

function nameError(where: string, name: string, peer: PeerCertificate): UpstreamTlsError {
  return new UpstreamTlsError(
    "upstream_tls_name",
    `Cannot use ${where}: its certificate is not valid for ${JSON.stringify(name)} (${
      peer.subjectaltname ? peer.subjectaltname : `subject ${oneLine(String(peer.subject?.CN))}`
    })`,
  );
}

/** The failure of a handshake whose TCP connection was made, named when it can be. */
function handshakeError(error: Error, dial: Dial): UpstreamTlsError {
  const where = `upstream ${formatAddress(dial.address)}`;
  const message = error.message;
  const reason: UpstreamTlsFailure = /UnknownIssuer|UNABLE_TO_VERIFY|SELF_SIGNED|unknown ca/i
      .test(message)
    ? "upstream_tls_untrusted"
    : /expired|not valid (after|before)|NotValidYet/i.test(message)
    ? "upstream_tls_expired"
    : /not valid for name|NotValidForName|ALTNAME/i.test(message)
    ? "upstream_tls_name"
    : "upstream_tls_handshake";
  return new UpstreamTlsError(
    reason,
    `Cannot use ${where}: the TLS handshake failed: ${message}`,
    { cause: error },
  );
}

/** The chain a peer presented, leaf first, as parsed certificates. */
function peerChain(peer: PeerCertificate | undefined): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<unknown>();
  let current = peer as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined;
  while (current?.raw !== undefined && !seen.has(current) && chain.length < 10) {
    seen.add(current);
    try {
      chain.push(new X509Certificate(current.raw));
    } catch {
      break;
    }
    current = current.issuerCertificate;
  }
  return chain;
}

/** Whether a certificate of `chain` is one of, or was issued by one of, `authorities`. */
function chainsTo(chain: readonly X509Certificate[], authorities: readonly X509Certificate[]) {
  for (const cert of chain) {
    for (const authority of authorities) {
      if (cert.fingerprint256 === authority.fingerprint256) return true;
      if (cert.checkIssued(authority) && cert.verify(authority.publicKey)) return true;
    }
  }
  return false;
}

/** What is wrong with the validity of `chain` at `now`, if anything. */
function outOfValidity(chain: readonly X509Certificate[], now: number): string | undefined {
  for (const [index, cert] of chain.entries()) {
    const which = index === 0 ? "its certificate" : `the CA certificate ${oneLine(cert.subject)}`;
    const notAfter = new Date(cert.validTo);
    const notBefore = new Date(cert.validFrom);
    if (now > notAfter.getTime()) return `${which} expired on ${notAfter.toISOString()}`;
    if (now < notBefore.getTime()) {
      return `${which} is not valid before ${notBefore.toISOString()}`;
    }
  }
  return undefined;
}

function pemCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  const certs: X509Certificate[] = [];
  for (const block of blocks) {
    try {
      certs.push(new X509Certificate(block));
    } catch {
      // The runtime's check refuses what cannot be parsed; it only names failures here.
    }
  }
  return certs;
}

function formatAddress({ hostname, port }: HostPort): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

function oneLine(text: string): string {
  return text.replaceAll("\n", ", ");
}
