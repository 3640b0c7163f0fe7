/**
 * The authorization policy: clients matched by certificate, groups routed by listener, SNI or ALPN, and the admission decision after a handshake.
 *
 * @module
 */
export {
  type ClientRule,
  type IdentifyDenial,
  type IdentifyResult,
  Policy,
  type PolicyConfig,
  type RouteDenial,
  type RouteRequest,
  type RouteResult,
} from "./policy.ts";
export {
  type AdmissionContext,
  type AdmissionRequest,
  type AdmissionVerdict,
  admit,
  type Admitted,
  type CertificateRefusal,
  type Denial,
  type LiveAdmission,
  readmit,
  type Withdrawal,
} from "./admission.ts";
