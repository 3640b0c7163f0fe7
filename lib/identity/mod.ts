/**
 * Client certificate checks: the DER reader, the CA bundle and chain verification, CRLs, and the checks of a client chain after a TLS handshake. Loads no X.509 generation library.
 *
 * @module
 */
export {
  ClientTrust,
  type ClientTrustOptions,
  type ClientVerdict,
  TRUST_DENIALS,
  type TrustDenial,
} from "./client_trust.ts";
export {
  type CheckPathOptions,
  CRL_CLOCK_SKEW_MS,
  CrlError,
  type CrlInfo,
  type CrlMissingMode,
  crlToPem,
  type ParseCrlOptions,
  type RevocationDenial,
  RevocationList,
  type RevocationStatus,
  type RevocationVerdict,
} from "./crl.ts";
export {
  type CertIdentity,
  type CertificateFacts,
  certificateValidity,
  type CertValidity,
  checkClientAuthUsage,
  type ClientAuthUsage,
  type ClientEkuMode,
  identityFromCertificate,
  normalizeHex,
  readCertificate,
  spkiSha256FromPem,
} from "./certificate.ts";
export {
  CHAIN_FAILURES,
  type ChainFailure,
  type IssuerMatch,
  type LeafFacts,
  type LocateOptions,
  MAX_INTERMEDIATES,
  type PathCertificate,
  type SignedData,
  type TrustedAuthority,
  TrustStore,
  TrustStoreError,
  type TrustStoreOptions,
  type VerifiedPath,
  type VerifyOptions,
  type VerifyResult,
} from "./trust_store.ts";
export { SignatureCache, type SignatureCacheOptions } from "./signature_cache.ts";
