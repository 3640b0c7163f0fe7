/**
 * The named reasons mtlb gives for every refusal, failed handshake and connection it
 * ends itself: each list is written once here, and its type derived from it, so the
 * log, the metrics (whose series exist at 0 from the start), `/denials` and the
 * dashboard all use the same names.
 *
 * @module
 */

/**
 * Why mtlb refused to use an upstream of a group with `[groups.<name>.tls]`: its
 * certificate does not chain to the group's `ca` (`upstream_tls_untrusted`), a
 * certificate of its chain is expired or not yet valid (`upstream_tls_expired`), it is
 * not valid for the name verified, `server_name` or the host
 * (`upstream_tls_name`), or the handshake failed otherwise (`upstream_tls_handshake`:
 * not TLS, no common protocol version, the upstream refused mtlb's client
 * certificate, closed or reset during the handshake).
 */
export const UPSTREAM_TLS_FAILURES = [
  "upstream_tls_untrusted",
  "upstream_tls_expired",
  "upstream_tls_name",
  "upstream_tls_handshake",
] as const;

/** One of {@linkcode UPSTREAM_TLS_FAILURES}. */
export type UpstreamTlsFailure = typeof UPSTREAM_TLS_FAILURES[number];

/**
 * Why a connection was refused after its handshake (or, for `server_full`, instead
 * of it). Nothing of a refused connection reaches an upstream.
 *
 * - `server_full`: `[server] max_connections` (or `max_handshakes`) reached.
 * - `cipher_not_allowed`: the negotiated suite is not in `[tls] ciphers`.
 * - `revoked`, `crl_expired`, `crl_missing`: the CRLs of `[tls] crl`.
 * - `unknown_identity`, `ambiguous_identity`: the certificate matches no client, or
 *   several.
 * - `unauthorized_group`: the client asked for a group it may not use; `no_group`:
 *   it may use several and named none (SNI or ALPN).
 * - `limit_concurrency`, `limit_rate`, `limit_store_unavailable`: its limits (overall,
 *   or within the group: `per_group`); `limit_rate` also for a connection whose rate
 *   token would not come within `queue_timeout`.
 * - `group_full`: the group's `max_connections` over all clients is reached.
 * - `no_healthy_upstream`, `upstream_unavailable`: no upstream could take it.
 * - `upstream_tls_untrusted`, `upstream_tls_expired`, `upstream_tls_name`,
 *   `upstream_tls_handshake`: the upstreams tried were refused over TLS (see
 *   {@linkcode UPSTREAM_TLS_FAILURES}).
 * - `client_gone`, `server_closing`: it went away, or the balancer did, meanwhile.
 * - `buffer_overflow`: it sent more than `[server] max_buffer` before its upstream was
 *   connected, where the runtime cannot stop reading it.
 */
export const DENY_REASONS = [
  "server_full",
  "cipher_not_allowed",
  "revoked",
  "crl_expired",
  "crl_missing",
  "unknown_identity",
  "ambiguous_identity",
  "unauthorized_group",
  "no_group",
  "limit_concurrency",
  "limit_rate",
  "limit_store_unavailable",
  "group_full",
  "no_healthy_upstream",
  "upstream_unavailable",
  ...UPSTREAM_TLS_FAILURES,
  "client_gone",
  "server_closing",
  "buffer_overflow",
] as const;

/** Why a connection was refused: one of {@linkcode DENY_REASONS}. */
export type DenyReason = typeof DENY_REASONS[number];

/** Why {@linkcode TrustStore.verify} refused a chain. */
export const CHAIN_FAILURES = [
  "bad_certificate",
  "unknown_ca",
  "bad_signature",
  "expired",
  "not_yet_valid",
  "not_a_ca",
  "path_too_long",
  "no_client_eku",
  "wrong_eku",
] as const;

/**
 * Why a chain was refused: `bad_certificate` (malformed, an unsupported critical
 * extension or signature algorithm, a CA certificate as the leaf), `unknown_ca` (no
 * CA of the bundle issued it), `bad_signature`, `expired` and `not_yet_valid` (any
 * certificate of the path, CAs included), `not_a_ca` (an issuer without
 * basicConstraints cA or keyCertSign), `path_too_long` (pathLenConstraint, or more
 * than `MAX_INTERMEDIATES`), `no_client_eku` (no extended key usage, with
 * `client_eku = "required"`), `wrong_eku` (an extended key usage without clientAuth).
 */
export type ChainFailure = typeof CHAIN_FAILURES[number];

/**
 * Why a client certificate failed verification (the chain checks of `TrustStore`),
 * or `no_certificate` when the client sent none.
 */
export const CERTIFICATE_FAILURES = ["no_certificate", ...CHAIN_FAILURES] as const;

/** One of {@linkcode CERTIFICATE_FAILURES}. */
export type CertificateFailure = typeof CERTIFICATE_FAILURES[number];

/**
 * Why a TLS handshake failed: a {@linkcode CertificateFailure}, or
 * `handshake_timeout`, `handshake_shed` (closed to make room under
 * `max_handshakes`), `protocol_version` (not TLS 1.3), `no_shared_group` (no ECDHE
 * group in common), `no_shared_cipher`, `not_tls` (plaintext or garbage),
 * `client_closed` (the client left before it finished), `tls_error` (anything else;
 * the record's detail holds the runtime's error).
 */
export const HANDSHAKE_FAILURES = [
  ...CERTIFICATE_FAILURES,
  "handshake_timeout",
  "handshake_shed",
  "protocol_version",
  "no_shared_group",
  "no_shared_cipher",
  "not_tls",
  "client_closed",
  "tls_error",
] as const;

/** One of {@linkcode HANDSHAKE_FAILURES}. */
export type HandshakeFailure = typeof HANDSHAKE_FAILURES[number];

/**
 * Why mtlb itself ended a forwarded connection: its certificate was revoked
 * (`revoked`), a reload no longer allows it (`policy_changed`: client removed, group
 * withdrawn, CA removed), it reached `[server] max_lifetime` (`max_lifetime`), or more
 * than `[server] max_buffer` waited to be written to one side (`buffer_overflow`).
 */
export const SESSION_END_REASONS = [
  "revoked",
  "policy_changed",
  "max_lifetime",
  "buffer_overflow",
] as const;

/** One of {@linkcode SESSION_END_REASONS}. */
export type SessionEndReason = typeof SESSION_END_REASONS[number];

/**
 * Whether `reason` is a {@linkcode CertificateFailure}.
 *
 * @example Usage
 * ```ts
 * import { isCertificateFailure } from "./reasons.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isCertificateFailure("unknown_ca"), true);
 * assert.equal(isCertificateFailure("revoked"), false);
 * ```
 *
 * @param reason A reason name.
 * @returns Whether it names a failed certificate check.
 */
export function isCertificateFailure(reason: string): reason is CertificateFailure {
  return (CERTIFICATE_FAILURES as readonly string[]).includes(reason);
}
