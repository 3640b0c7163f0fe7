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
  type SecureContext,
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
 * The checks are the runtime's (`rustls` on Deno). The chain and its dates are
 * verified inside the handshake: an untrusted or expired upstream has the handshake
 * aborted before `cert` is sent, and its chain is then read by a second handshake
 * that presents no certificate, to name the failure. The name is verified by
 * `checkServerIdentity`, which Deno 2.9.6 runs once the handshake is done: an
 * upstream with a certificate of `ca` for another name has received `cert` (and no
 * byte after it) when the dial is refused.
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
  let bare: SecureContext | undefined;
  const context: Context = {
    authorities: () => authorities ??= pemCertificates(ca),
    // The CAs alone: what a look at a refused upstream's chain is made with.
    bare: () => bare ??= cert === undefined ? secureContext : createSecureContext({ ca }),
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
          // The chain and its dates are verified inside the handshake, so that an
          // untrusted or expired upstream aborts it before `cert` is sent.
          rejectUnauthorized: true,
          // The name verified is `name`, which may not be the host dialled.
          checkServerIdentity: (_host, peer) => checkServerIdentity(name, peer),
          allowHalfOpen: true,
          noDelay: true,
        },
      );
      let settled = false;
      const dial: Dial = {
        address,
        name,
        context,
        signal,
        connected: false,
        settle: undefined!,
      };
      dial.settle = (error: unknown) => {
        if (settled) return;
        settled = true;
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
  bare: () => SecureContext;
  now: () => number;
}

interface Dial {
  address: HostPort;
  /** The name verified. */
  name: string;
  context: Context;
  signal: AbortSignal;
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
  // With rejectUnauthorized, "secureConnect" comes only once every check passed.
  // Before anything is awaited: so that forward() can pause it (see linkTcpReads).
  linkTcpReads(this);
  dial.settle(undefined);
}

function onError(this: TLSSocket, error: Error & { code?: unknown; cert?: PeerCertificate }) {
  const dial = pending.get(this);
  if (dial === undefined) {
    if (this.listenerCount("error") === 1) throw error;
    return;
  }
  if (!dial.connected) {
    dial.settle(error);
    return;
  }
  const code = typeof error.code === "string" ? error.code : "";
  const where = `upstream ${formatAddress(dial.address)}`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    dial.settle(nameError(where, dial.name, error.cert ?? this.getPeerCertificate(true)));
  } else if (VERIFY_CODES.test(code)) {
    // The handshake was aborted on the chain: the runtime's error does not tell an
    // expired certificate from an untrusted one, nor say whose it is. A second look,
    // without a client certificate, reads the chain to name it.
    pending.delete(this);
    void lookAtChain(dial, code).then(dial.settle);
  } else {
    dial.settle(handshakeError(error, dial));
  }
}

/** The runtime's codes for a chain refused inside the handshake (OpenSSL's names). */
const VERIFY_CODES =
  /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|INVALID_PURPOSE$)/;

/**
 * Why an upstream whose chain the runtime refused was refused, from its chain as read
 * by a connection that presents no certificate and is closed once it has it; from
 * `code` alone when that connection fails.
 */
function lookAtChain(dial: Dial, code: string): Promise<UpstreamTlsError> {
  const where = `upstream ${formatAddress(dial.address)}`;
  return new Promise((resolve) => {
    const fallback = () =>
      resolve(
        /^CERT_(HAS_EXPIRED|NOT_YET_VALID)$/.test(code)
          ? new UpstreamTlsError("upstream_tls_expired", `Cannot use ${where}: ${code}`)
          : new UpstreamTlsError(
            "upstream_tls_untrusted",
            `Cannot use ${where}: its certificate does not chain to the group's ca (${code})`,
          ),
      );
    if (dial.signal.aborted) {
      fallback();
      return;
    }
    const socket = connect({
      host: dial.address.hostname,
      port: dial.address.port,
      ...(isIP(dial.name) === 0 ? { servername: dial.name } : {}),
      secureContext: dial.context.bare(),
      // Only read: this connection carries nothing and is closed at once.
      rejectUnauthorized: false,
    });
    const onAbort = () => socket.destroy(new Error("aborted"));
    dial.signal.addEventListener("abort", onAbort, { once: true });
    socket.on("error", () => {
      dial.signal.removeEventListener("abort", onAbort);
      socket.destroy();
      fallback();
    });
    socket.on("secureConnect", () => {
      dial.signal.removeEventListener("abort", onAbort);
      const chain = peerChain(socket.getPeerCertificate(true));
      socket.destroy();
      resolve(chainVerdict(where, chain, dial.context, code));
    });
  });
}

/** Why a chain the runtime refused was refused: expired if it chains to the CAs. */
function chainVerdict(
  where: string,
  chain: readonly X509Certificate[],
  context: Context,
  code: string,
): UpstreamTlsError {
  if (chain.length === 0) {
    return new UpstreamTlsError(
      "upstream_tls_untrusted",
      `Cannot use ${where}: it presented no certificate`,
    );
  }
  if (chainsTo(chain, context.authorities())) {
    const lapsed = outOfValidity(chain, context.now());
    if (lapsed !== undefined) {
      return new UpstreamTlsError("upstream_tls_expired", `Cannot use ${where}: ${lapsed}`);
    }
  }
  return new UpstreamTlsError(
    "upstream_tls_untrusted",
    `Cannot use ${where}: its certificate (subject ${oneLine(chain[0]!.subject)}, issuer ${
      oneLine(chain[0]!.issuer)
    }) does not chain to the group's ca${code === "" ? "" : ` (${code})`}`,
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
