/**
 * What mtlb knows of a CA of `[tls] ca` ({@linkcode TrustedAuthority}) and of the
 * certificate that issued a client's ({@linkcode IssuerMatch}), as a `TrustStore`
 * reports them.
 *
 * @module
 */

/** Facts about one CA of the bundle, for `check`, status pages and issuer pins. */
export interface TrustedAuthority {
  /** Its position in the bundle, from 0. */
  readonly index: number;
  /**
   * Identifies the CA by name and key: equal for two certificates of one CA (a
   * re-issued CA certificate keeps both), different for a rollover to a new key.
   */
  readonly id: string;
  /** Subject distinguished name, RFC 4514 text (`CN=Example CA, O=Example`). */
  readonly subject: string;
  /** SHA-256 of its DER SubjectPublicKeyInfo, 64 lowercase hex digits: `match.issuer`. */
  readonly spkiSha256: string;
  /** Serial number, lowercase hex without leading zeros. */
  readonly serial: string;
  /**
   * subjectKeyIdentifier, lowercase hex.
   *
   * @default {undefined}
   */
  readonly keyId?: string;
  /** Start of validity. */
  readonly notBefore: Date;
  /** End of validity. */
  readonly notAfter: Date;
  /** Whether it signed itself (a root). */
  readonly selfSigned: boolean;
  /** Whether it may issue certificates: basicConstraints cA, and keyCertSign when keyUsage is present. */
  readonly issuesCertificates: boolean;
  /** Whether it may sign CRLs: cRLSign when keyUsage is present. */
  readonly signsCrls: boolean;
  /**
   * The CA of the bundle whose key signed it (checked when the bundle is read).
   *
   * @default {undefined}
   */
  readonly signedBy?: TrustedAuthority;
}

/** Which certificate issued another: a CA of the bundle or one of the presented intermediates. */
export type IssuerMatch =
  | {
    /** The CA of the bundle that issued it. */
    readonly authority: TrustedAuthority;
    /** Absent: a CA of the bundle issued it. */
    readonly intermediate?: undefined;
    /** SHA-256 of the issuer's SubjectPublicKeyInfo, hex. */
    readonly spkiSha256: string;
  }
  | {
    /** Absent: a presented intermediate issued it. */
    readonly authority?: undefined;
    /** The index, in the intermediates given, of the one that issued it. */
    readonly intermediate: number;
    /** SHA-256 of the issuer's SubjectPublicKeyInfo, hex. */
    readonly spkiSha256: string;
  };
