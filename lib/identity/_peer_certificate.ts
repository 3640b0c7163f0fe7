/**
 * The DER certificate a TLS client presented, read the cheapest way the runtime allows.
 *
 * `TLSSocket#getPeerCertificate(true)` is what Node code usually calls, and on Deno
 * 2.9.6 it is the costliest step mtlb takes per connection after the handshake itself:
 * it converts the certificate to Node's legacy object and then rebuilds the issuer
 * chain by parsing every CA certificate of the listener's PEM again, about 100 µs per
 * call (measured with a P-256 client and a one-certificate CA file; more with larger CA
 * bundles). `getPeerCertificate(false)` skips the chain (about 25 µs). The TLS handle
 * under the socket holds the chain the peer presented as DER already, about 2 µs to
 * read. Identity and validity are read from the leaf's DER by `lib/identity/certificate.ts`; the
 * whole chain ({@linkcode peerCertificateChain}) is what `ClientTrust` checks.
 *
 * @module
 */
import type { TLSSocket } from "node:tls";

/** What Deno 2.9's TLS handle offers: the chain the peer presented, leaf first, as DER. */
interface HandleWithChain {
  getPeerCertificateChain?: () => { certificates?: unknown[] } | null | undefined;
}

/**
 * Returns the leaf certificate the peer presented, as DER, or `undefined` when it
 * presented none. Uses the chain on the TLS handle when the runtime exposes it (Deno
 * 2.9; its first entry is the leaf the handshake verified), and
 * `getPeerCertificate(false).raw` otherwise (Node, other Deno versions).
 *
 * @example Usage
 * ```ts ignore
 * import { peerCertificateDer } from "./_peer_certificate.ts";
 *
 * server.on("secureConnection", (socket) => {
 *   const der = peerCertificateDer(socket); // Uint8Array | undefined
 * });
 * ```
 *
 * @param socket A TLS socket whose handshake has completed.
 * @returns The leaf certificate, DER, or `undefined`.
 */
export function peerCertificateDer(socket: TLSSocket): Uint8Array | undefined {
  const handle = (socket as unknown as { _handle?: HandleWithChain | null })._handle;
  let chain;
  try {
    chain = handle?.getPeerCertificateChain?.();
  } catch {
    chain = undefined;
  }
  const leaf = chain?.certificates?.[0];
  if (leaf instanceof Uint8Array && leaf.length > 0) return leaf;
  const raw: unknown = socket.getPeerCertificate(false)?.raw;
  return raw instanceof Uint8Array && raw.length > 0 ? raw : undefined;
}

/**
 * Returns the chain the peer presented, leaf first, as DER: the certificates on the TLS
 * handle (Deno 2.9), else the leaf alone from `getPeerCertificate(false).raw` (Node,
 * other Deno versions: the intermediates are then unknown), else an empty list. What
 * `ClientTrust.checkHandshake` and `ClientTrust.verifyChain` take.
 *
 * @example Usage
 * ```ts ignore
 * import { peerCertificateChain } from "./_peer_certificate.ts";
 *
 * server.on("secureConnection", (socket) => {
 *   const chain = peerCertificateChain(socket); // Uint8Array[], leaf first
 * });
 * ```
 *
 * @param socket A TLS socket whose handshake has completed.
 * @returns The presented certificates, leaf first; empty when there are none.
 */
export function peerCertificateChain(socket: TLSSocket): Uint8Array[] {
  const handle = (socket as unknown as { _handle?: HandleWithChain | null })._handle;
  let chain;
  try {
    chain = handle?.getPeerCertificateChain?.();
  } catch {
    chain = undefined;
  }
  const certificates = chain?.certificates ?? [];
  if (
    certificates.length > 0 &&
    certificates.every((c): c is Uint8Array => c instanceof Uint8Array && c.length > 0)
  ) {
    return certificates;
  }
  const leaf = peerCertificateDer(socket);
  return leaf === undefined ? [] : [leaf];
}
