/**
 * Client identity read from a verified X.509 certificate.
 *
 * @module
 */

/** What mtlb knows about a client from its certificate. */
export interface CertIdentity {
  /** SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex, no colons. */
  spkiSha256: string;
  /** Serial number, lowercase hex, no colons, no leading zeros ("0" for zero). */
  serial: string;
  /** Subject common name, when present. */
  cn?: string;
  /** URI subject alternative names (SPIFFE IDs and the like). */
  sanUri: string[];
  /** DNS subject alternative names. */
  sanDns: string[];
}
