/**
 * A development PKI: CAs, certificates and CRLs for tests and trying things out (loads @peculiar/x509).
 *
 * @module
 */
export { createCrl, type CreateCrlOptions } from "./crl_issuer.ts";
export {
  type CertificateAuthority,
  createCa,
  type CreateCaOptions,
  createIntermediateCa,
  loadCertificateAuthority,
} from "./certificate_authority.ts";
export {
  type DevPkiAddition,
  type DevPkiClient,
  type DevPkiSummary,
  extendDevPki,
  type ExtendDevPkiOptions,
  writeDevPki,
  type WriteDevPkiOptions,
} from "./dev_pki.ts";
export {
  type ExtendedKeyUsageName,
  issueCertificate,
  type IssueCertificateOptions,
  type IssuedCertificate,
} from "./issue_certificate.ts";
export { type KeyAlgorithmName, signingAlgorithmOf } from "./key_algorithms.ts";
