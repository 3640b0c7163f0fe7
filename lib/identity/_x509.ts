/**
 * DER reading of X.509 certificates (RFC 5280): the bounds-checked primitives that
 * `identity.ts` walks a client certificate with on every connection, and a full parse
 * of a certificate with its signature check, for `trust_store.ts`.
 *
 * Every reader throws `TypeError("Cannot read certificate: malformed DER, ...")` on a
 * structure it does not expect, so a caller maps one error class to `bad_certificate`.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { constants, createPublicKey, type KeyObject, verify } from "node:crypto";

/** A DER element: `header` is where its tag starts, `start`..`end` its contents. */
export interface Tlv {
  tag: number;
  header: number;
  start: number;
  end: number;
}

// DER tags (X.690; RFC 5280 for the context-specific ones).
export const BOOLEAN = 0x01;
export const INTEGER = 0x02;
export const BIT_STRING = 0x03;
export const OCTET_STRING = 0x04;
export const NULL = 0x05;
export const OID = 0x06;
export const SEQUENCE = 0x30;
export const SET = 0x31;
export const UTC_TIME = 0x17;
export const GENERALIZED_TIME = 0x18;
/** `[0] EXPLICIT Version` of a TBSCertificate. */
export const VERSION = 0xa0;
/** `[3] EXPLICIT Extensions` of a TBSCertificate. */
export const EXTENSIONS = 0xa3;
/** `[0] IMPLICIT KeyIdentifier` of an AuthorityKeyIdentifier. */
export const KEY_IDENTIFIER = 0x80;

// Extension OIDs (2.5.29.x) and key purposes, as their DER content bytes.
export const OID_SUBJECT_KEY_ID = [0x55, 0x1d, 0x0e];
export const OID_KEY_USAGE = [0x55, 0x1d, 0x0f];
export const OID_SUBJECT_ALT_NAME = [0x55, 0x1d, 0x11];
export const OID_BASIC_CONSTRAINTS = [0x55, 0x1d, 0x13];
export const OID_NAME_CONSTRAINTS = [0x55, 0x1d, 0x1e];
export const OID_CRL_DISTRIBUTION_POINTS = [0x55, 0x1d, 0x1f];
export const OID_CERTIFICATE_POLICIES = [0x55, 0x1d, 0x20];
export const OID_AUTHORITY_KEY_ID = [0x55, 0x1d, 0x23];
export const OID_EXT_KEY_USAGE = [0x55, 0x1d, 0x25];
/** 1.3.6.1.5.5.7.1.1 id-pe-authorityInfoAccess. */
export const OID_AUTHORITY_INFO_ACCESS = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
/** 1.3.6.1.5.5.7.3.2 id-kp-clientAuth. */
export const OID_CLIENT_AUTH = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/** keyUsage bit keyCertSign (bit 5), as {@linkcode ParsedCertificate.keyUsage} holds it. */
export const KEY_CERT_SIGN = 1 << 5;
/** keyUsage bit cRLSign (bit 6), as {@linkcode ParsedCertificate.keyUsage} holds it. */
export const CRL_SIGN = 1 << 6;

/**
 * What a certificate's extended key usage says about TLS client authentication:
 * `"client_auth"` (the extension lists clientAuth), `"absent"` (no extension),
 * `"other"` (an extension without clientAuth).
 */
export type ClientAuthUsage = "client_auth" | "absent" | "other";

/** Throws the one error every reader of this module throws. */
export function fail(detail: string): never {
  throw new TypeError(`Cannot read certificate: malformed DER, ${detail}`);
}

/** Reads the element at `at`, which must end by `limit`; checks its tag when given. */
export function readTlv(der: Uint8Array, at: number, limit: number, tag?: number): Tlv {
  if (at + 2 > limit) fail(`element truncated at offset ${at}`);
  const found = der[at]!;
  if ((found & 0x1f) === 0x1f) fail(`multi-byte tag at offset ${at}`);
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4) fail(`unsupported length form at offset ${at}`);
    if (start + octets > limit) fail(`length truncated at offset ${at}`);
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[start + i]!;
    start += octets;
  }
  const end = start + length;
  if (end > limit) fail(`element at offset ${at} overruns its parent`);
  const tlv = { tag: found, header: at, start, end };
  if (tag !== undefined) expectTag(tlv, tag, `element at offset ${at}`);
  return tlv;
}

/** Fails unless `tlv` has tag `tag`. */
export function expectTag(tlv: Tlv, tag: number, what: string): void {
  if (tlv.tag !== tag) {
    fail(`${what} has tag 0x${tlv.tag.toString(16)}, expected 0x${tag.toString(16)}`);
  }
}

/** Whether `tlv` is the OBJECT IDENTIFIER whose content bytes are `oid`. */
export function isOid(der: Uint8Array, tlv: Tlv, oid: readonly number[]): boolean {
  if (tlv.tag !== OID || tlv.end - tlv.start !== oid.length) return false;
  for (let i = 0; i < oid.length; i++) if (der[tlv.start + i] !== oid[i]) return false;
  return true;
}

/**
 * Reads one extension of a `SEQUENCE OF Extension`: its OID, whether it is critical,
 * and the content of its extnValue OCTET STRING.
 */
export function readExtension(
  der: Uint8Array,
  at: number,
  limit: number,
): { id: Tlv; critical: boolean; value: Tlv; end: number } {
  const extension = readTlv(der, at, limit, SEQUENCE);
  const id = readTlv(der, extension.start, extension.end, OID);
  let value = readTlv(der, id.end, extension.end);
  let critical = false;
  if (value.tag === BOOLEAN) {
    if (value.end - value.start !== 1) fail("critical flag is not one octet");
    critical = der[value.start] !== 0;
    value = readTlv(der, value.end, extension.end);
  }
  expectTag(value, OCTET_STRING, "extnValue");
  if (value.end !== extension.end) fail("bytes after extnValue");
  return { id, critical, value, end: extension.end };
}

/** Reads an ExtKeyUsageSyntax (a SEQUENCE OF KeyPurposeId) for clientAuth. */
export function readClientAuthUsage(der: Uint8Array, value: Tlv): ClientAuthUsage {
  const list = readTlv(der, value.start, value.end, SEQUENCE);
  if (list.end !== value.end) fail("bytes after extKeyUsage");
  let usage: ClientAuthUsage = "other";
  for (let at = list.start; at < list.end;) {
    const purpose = readTlv(der, at, list.end, OID);
    if (isOid(der, purpose, OID_CLIENT_AUTH)) usage = "client_auth";
    at = purpose.end;
  }
  return usage;
}

/** Reads the keyIdentifier of an AuthorityKeyIdentifier, when it has one. */
export function readAuthorityKeyId(der: Uint8Array, value: Tlv): Tlv | undefined {
  const aki = readTlv(der, value.start, value.end, SEQUENCE);
  if (aki.start === aki.end) return undefined;
  const first = readTlv(der, aki.start, aki.end);
  return first.tag === KEY_IDENTIFIER ? first : undefined;
}

/** Reads a UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 profiles them. */
export function readTime(der: Uint8Array, tlv: Tlv): number {
  const digits = tlv.tag === UTC_TIME ? 12 : tlv.tag === GENERALIZED_TIME ? 14 : -1;
  if (digits < 0) fail(`validity time has tag 0x${tlv.tag.toString(16)} at offset ${tlv.header}`);
  if (tlv.end - tlv.start !== digits + 1 || der[tlv.end - 1] !== 0x5a) {
    fail(`validity time at offset ${tlv.header} is not in the RFC 5280 form`);
  }
  const n = (from: number, count: number): number => {
    let value = 0;
    for (let i = tlv.start + from; i < tlv.start + from + count; i++) {
      const digit = der[i]! - 0x30;
      if (digit < 0 || digit > 9) fail(`validity time at offset ${tlv.header} has a non-digit`);
      value = value * 10 + digit;
    }
    return value;
  };
  const short = tlv.tag === UTC_TIME;
  const yy = n(0, short ? 2 : 4);
  const year = short ? (yy >= 50 ? 1900 + yy : 2000 + yy) : yy;
  const at = short ? 2 : 4;
  const [month, day, hour, minute, second] = [
    n(at, 2),
    n(at + 2, 2),
    n(at + 4, 2),
    n(at + 6, 2),
    n(at + 8, 2),
  ];
  const time = Date.UTC(year, month - 1, day, hour, minute, second);
  // Date.UTC rolls over (month 13 is next January): out-of-range fields are malformed.
  const date = new Date(time);
  if (
    date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hour > 23 || minute > 59 ||
    second > 59
  ) {
    fail(`validity time at offset ${tlv.header} is not a valid date and time`);
  }
  return time;
}

const HEX_BYTES = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lowercase hex of `der[start..end)`. */
export function toHex(der: Uint8Array, start: number, end: number): string {
  let hex = "";
  for (let i = start; i < end; i++) hex += HEX_BYTES[der[i]!];
  return hex;
}

/** An INTEGER's content as `normalizeHex` spells it: lowercase, no leading zeros. */
export function serialHex(der: Uint8Array, start: number, end: number): string {
  while (start < end - 1 && der[start] === 0) start++;
  let hex = der[start]!.toString(16);
  for (let i = start + 1; i < end; i++) hex += HEX_BYTES[der[i]!];
  return hex;
}

/** Whether two byte strings are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** An OBJECT IDENTIFIER in dotted form, for messages. */
export function oidText(der: Uint8Array, tlv: Tlv): string {
  const parts: number[] = [];
  let value = 0;
  for (let i = tlv.start; i < tlv.end; i++) {
    value = value * 128 + (der[i]! & 0x7f);
    if ((der[i]! & 0x80) === 0) {
      if (parts.length === 0) {
        parts.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      } else parts.push(value);
      value = 0;
    }
  }
  return parts.join(".");
}

// ---------------------------------------------------------------------------------------
// Signature algorithms

/** A signature algorithm `node:crypto` can verify, read from an AlgorithmIdentifier. */
export type SignatureAlgorithm =
  | { kind: "ecdsa"; hash: string }
  | { kind: "rsa"; hash: string }
  | { kind: "rsa-pss"; hash: string; saltLength: number }
  | { kind: "eddsa"; curve: "ed25519" | "ed448" };

const HASHES = new Map<string, string>([
  ["608648016503040201", "sha256"],
  ["608648016503040202", "sha384"],
  ["608648016503040203", "sha512"],
]);
const HASH_LENGTHS: Record<string, number> = { sha256: 32, sha384: 48, sha512: 64 };
/** 1.2.840.113549.1.1.10 id-RSASSA-PSS. */
const RSASSA_PSS = "2a864886f70d01010a";
/** 1.2.840.113549.1.1.8 id-mgf1. */
const MGF1 = "2a864886f70d010108";
const SIGNATURE_ALGORITHMS = new Map<string, SignatureAlgorithm>([
  ["2a8648ce3d040302", { kind: "ecdsa", hash: "sha256" }],
  ["2a8648ce3d040303", { kind: "ecdsa", hash: "sha384" }],
  ["2a8648ce3d040304", { kind: "ecdsa", hash: "sha512" }],
  ["2a864886f70d01010b", { kind: "rsa", hash: "sha256" }],
  ["2a864886f70d01010c", { kind: "rsa", hash: "sha384" }],
  ["2a864886f70d01010d", { kind: "rsa", hash: "sha512" }],
  ["2b6570", { kind: "eddsa", curve: "ed25519" }],
  ["2b6571", { kind: "eddsa", curve: "ed448" }],
]);

/**
 * Reads an AlgorithmIdentifier of a signature: ECDSA, RSA PKCS#1 v1.5 or RSA-PSS over
 * SHA-256/384/512, Ed25519 or Ed448. Anything else (SHA-1, MD5, DSA) is returned as
 * its dotted OID, to be refused with that name.
 */
export function readSignatureAlgorithm(
  der: Uint8Array,
  algorithm: Tlv,
): SignatureAlgorithm | string {
  const id = readTlv(der, algorithm.start, algorithm.end, OID);
  const key = toHex(der, id.start, id.end);
  const known = SIGNATURE_ALGORITHMS.get(key);
  if (known !== undefined) {
    if (id.end < algorithm.end) {
      // RSA PKCS#1 carries NULL parameters; ECDSA and EdDSA carry none.
      const params = readTlv(der, id.end, algorithm.end);
      if (known.kind !== "rsa" || params.tag !== NULL || params.end !== algorithm.end) {
        fail("unexpected signature algorithm parameters");
      }
    }
    return known;
  }
  if (key === RSASSA_PSS) return readPssParams(der, id.end, algorithm.end) ?? oidText(der, id);
  return oidText(der, id);
}

/** RSASSA-PSS-params (RFC 4055): a SHA-2 hash, MGF1 over the same hash, trailer 1. */
function readPssParams(der: Uint8Array, at: number, end: number): SignatureAlgorithm | undefined {
  if (at >= end) return undefined; // SHA-1 defaults
  const params = readTlv(der, at, end, SEQUENCE);
  let hash: string | undefined;
  let mgfHash: string | undefined;
  let saltLength = 20;
  for (let i = params.start; i < params.end;) {
    const field = readTlv(der, i, params.end);
    const inner = readTlv(der, field.start, field.end);
    if (field.tag === 0xa0) {
      const oid = readTlv(der, inner.start, inner.end, OID);
      hash = HASHES.get(toHex(der, oid.start, oid.end));
    } else if (field.tag === 0xa1) {
      const oid = readTlv(der, inner.start, inner.end, OID);
      if (toHex(der, oid.start, oid.end) !== MGF1) return undefined;
      const mgfParams = readTlv(der, oid.end, inner.end, SEQUENCE);
      const hashOid = readTlv(der, mgfParams.start, mgfParams.end, OID);
      mgfHash = HASHES.get(toHex(der, hashOid.start, hashOid.end));
    } else if (field.tag === 0xa2) {
      expectTag(inner, INTEGER, "saltLength");
      if (inner.end - inner.start > 2) return undefined;
      saltLength = 0;
      for (let b = inner.start; b < inner.end; b++) saltLength = saltLength * 256 + der[b]!;
    } else if (field.tag === 0xa3) {
      expectTag(inner, INTEGER, "trailerField");
      if (inner.end - inner.start !== 1 || der[inner.start] !== 1) return undefined;
    } else return undefined;
    i = field.end;
  }
  if (hash === undefined || hash !== mgfHash) return undefined;
  return { kind: "rsa-pss", hash, saltLength };
}

/**
 * Reads a DER SubjectPublicKeyInfo into a `node:crypto` key.
 *
 * @throws {TypeError} When `node:crypto` cannot read the key.
 */
export function publicKeyOf(spki: Uint8Array): KeyObject {
  try {
    return createPublicKey({
      key: Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength),
      format: "der",
      type: "spki",
    });
  } catch (cause) {
    throw new TypeError(
      `Cannot read public key: ${cause instanceof Error ? cause.message : cause}`,
      {
        cause,
      },
    );
  }
}

/** The `node:crypto` key types each signature kind verifies with. */
const KEY_TYPES: Record<SignatureAlgorithm["kind"], readonly string[]> = {
  ecdsa: ["ec"],
  rsa: ["rsa"],
  "rsa-pss": ["rsa", "rsa-pss"],
  eddsa: ["ed25519", "ed448"],
};

/**
 * Verifies `signature` over `data` with `key`, synchronously (`node:crypto`). A key of
 * another type than the algorithm's, or a malformed signature, does not verify.
 */
export function verifySignature(
  algorithm: SignatureAlgorithm,
  data: Uint8Array,
  signature: Uint8Array,
  key: KeyObject,
): boolean {
  if (!KEY_TYPES[algorithm.kind].includes(key.asymmetricKeyType ?? "")) return false;
  if (algorithm.kind === "eddsa" && key.asymmetricKeyType !== algorithm.curve) return false;
  try {
    switch (algorithm.kind) {
      case "ecdsa":
      case "rsa":
        return verify(algorithm.hash, data, key, signature);
      case "rsa-pss":
        // The salt length must be the one the parameters name (no auto-detection).
        return HASH_LENGTHS[algorithm.hash] !== undefined &&
          verify(algorithm.hash, data, {
            key,
            padding: constants.RSA_PKCS1_PSS_PADDING,
            saltLength: algorithm.saltLength,
          }, signature);
      case "eddsa":
        return verify(null, data, key, signature);
    }
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// Full parse

/** A certificate read whole, for chain verification. Byte fields are views of `der`. */
export interface ParsedCertificate {
  /** The certificate, DER. */
  der: Uint8Array;
  /** The signed part (TBSCertificate), DER. */
  tbs: Uint8Array;
  /** The signature algorithm, or its dotted OID when it is not supported. */
  signatureAlgorithm: SignatureAlgorithm | string;
  /** The signature value. */
  signature: Uint8Array;
  /** 1, 2 or 3. */
  version: number;
  /** Serial number, lowercase hex without leading zeros. */
  serial: string;
  /** Issuer Name, DER. */
  issuer: Uint8Array;
  /** Subject Name, DER. */
  subject: Uint8Array;
  /** Validity, ms since the epoch. */
  notBefore: number;
  /** Validity, ms since the epoch. */
  notAfter: number;
  /** SubjectPublicKeyInfo, DER. */
  spki: Uint8Array;
  /** basicConstraints; absent when the certificate has none. */
  basicConstraints?: { ca: boolean; pathLength?: number };
  /** keyUsage bits (bit n of the BIT STRING is `1 << n`); absent when there is no extension. */
  keyUsage?: number;
  /** What the extended key usage says about clientAuth. */
  clientAuth: ClientAuthUsage;
  /** subjectKeyIdentifier, lowercase hex. */
  subjectKeyId?: string;
  /** keyIdentifier of authorityKeyIdentifier, lowercase hex. */
  authorityKeyId?: string;
  /** Whether it carries nameConstraints (not supported). */
  nameConstraints: boolean;
  /** The dotted OID of the first critical extension that is not understood. */
  unsupportedCritical?: string;
  /** SHA-256 of `der`, hex, once a caller computed it. */
  sha256?: string;
}

/** Extensions that are understood, and may be critical. */
const UNDERSTOOD = [
  OID_SUBJECT_KEY_ID,
  OID_KEY_USAGE,
  OID_SUBJECT_ALT_NAME,
  OID_BASIC_CONSTRAINTS,
  OID_NAME_CONSTRAINTS,
  OID_CRL_DISTRIBUTION_POINTS,
  OID_AUTHORITY_KEY_ID,
  OID_EXT_KEY_USAGE,
  OID_AUTHORITY_INFO_ACCESS,
];

/**
 * Reads a whole certificate, checking its structure: the inner and outer signature
 * algorithms agree, extensions appear once, the ones read are well formed.
 *
 * @throws {TypeError} When `der` is not a well-formed DER X.509 certificate.
 */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  if (!(der instanceof Uint8Array)) {
    throw new TypeError("Cannot read certificate: expected DER bytes in a Uint8Array");
  }
  const cert = readTlv(der, 0, der.length, SEQUENCE);
  if (cert.end !== der.length) fail("trailing bytes after the certificate");
  const tbs = readTlv(der, cert.start, cert.end, SEQUENCE);
  const outerAlgorithm = readTlv(der, tbs.end, cert.end, SEQUENCE);
  const signature = readTlv(der, outerAlgorithm.end, cert.end, BIT_STRING);
  if (signature.end !== cert.end) fail("bytes after signatureValue");
  if (signature.start === signature.end || der[signature.start] !== 0) {
    fail("signatureValue has unused bits");
  }
  let version = 1;
  let serial = readTlv(der, tbs.start, tbs.end);
  if (serial.tag === VERSION) {
    const v = readTlv(der, serial.start, serial.end, INTEGER);
    if (v.end - v.start !== 1 || der[v.start]! > 2) fail("unsupported version");
    version = der[v.start]! + 1;
    serial = readTlv(der, serial.end, tbs.end);
  }
  expectTag(serial, INTEGER, "serialNumber");
  if (serial.start === serial.end) fail("empty serialNumber");
  const innerAlgorithm = readTlv(der, serial.end, tbs.end, SEQUENCE);
  if (
    !sameBytes(
      der.subarray(innerAlgorithm.header, innerAlgorithm.end),
      der.subarray(outerAlgorithm.header, outerAlgorithm.end),
    )
  ) {
    fail("the signature algorithms inside and outside the signed part differ");
  }
  const issuer = readTlv(der, innerAlgorithm.end, tbs.end, SEQUENCE);
  const validity = readTlv(der, issuer.end, tbs.end, SEQUENCE);
  const notBefore = readTlv(der, validity.start, validity.end);
  const notAfter = readTlv(der, notBefore.end, validity.end);
  const subject = readTlv(der, validity.end, tbs.end, SEQUENCE);
  const spki = readTlv(der, subject.end, tbs.end, SEQUENCE);
  const parsed: ParsedCertificate = {
    der,
    tbs: der.subarray(tbs.header, tbs.end),
    signatureAlgorithm: readSignatureAlgorithm(der, outerAlgorithm),
    signature: der.subarray(signature.start + 1, signature.end),
    version,
    serial: serialHex(der, serial.start, serial.end),
    issuer: der.subarray(issuer.header, issuer.end),
    subject: der.subarray(subject.header, subject.end),
    notBefore: readTime(der, notBefore),
    notAfter: readTime(der, notAfter),
    spki: der.subarray(spki.header, spki.end),
    clientAuth: "absent",
    nameConstraints: false,
  };
  for (let at = spki.end; at < tbs.end;) {
    const optional = readTlv(der, at, tbs.end);
    at = optional.end;
    if (optional.tag !== EXTENSIONS) continue; // issuerUniqueID, subjectUniqueID
    if (version !== 3) fail("extensions in a certificate older than version 3");
    readExtensions(der, optional, parsed);
  }
  return parsed;
}

function readExtensions(der: Uint8Array, wrapper: Tlv, parsed: ParsedCertificate): void {
  const list = readTlv(der, wrapper.start, wrapper.end, SEQUENCE);
  const seen = new Set<string>();
  for (let at = list.start; at < list.end;) {
    const { id, critical, value, end } = readExtension(der, at, list.end);
    at = end;
    const key = toHex(der, id.start, id.end);
    if (seen.has(key)) fail(`repeated extension ${oidText(der, id)}`);
    seen.add(key);
    if (isOid(der, id, OID_BASIC_CONSTRAINTS)) {
      const bc = readTlv(der, value.start, value.end, SEQUENCE);
      let ca = false;
      let pathLength: number | undefined;
      let inner = bc.start;
      if (inner < bc.end && der[inner] === BOOLEAN) {
        const flag = readTlv(der, inner, bc.end, BOOLEAN);
        if (flag.end - flag.start !== 1) fail("cA is not one octet");
        ca = der[flag.start] !== 0;
        inner = flag.end;
      }
      if (inner < bc.end) {
        const length = readTlv(der, inner, bc.end, INTEGER);
        if (length.end - length.start > 2 || der[length.start]! & 0x80) {
          fail("bad pathLenConstraint");
        }
        pathLength = 0;
        for (let b = length.start; b < length.end; b++) pathLength = pathLength * 256 + der[b]!;
        inner = length.end;
      }
      if (inner !== bc.end) fail("bytes after basicConstraints");
      parsed.basicConstraints = pathLength === undefined ? { ca } : { ca, pathLength };
    } else if (isOid(der, id, OID_KEY_USAGE)) {
      const bits = readTlv(der, value.start, value.end, BIT_STRING);
      let usage = 0;
      // The first content octet counts unused bits; bit n is the n-th bit from the left.
      for (let b = bits.start + 1, n = 0; b < bits.end && n < 16; b++, n += 8) {
        for (let bit = 0; bit < 8; bit++) if (der[b]! & (0x80 >> bit)) usage |= 1 << (n + bit);
      }
      parsed.keyUsage = usage;
    } else if (isOid(der, id, OID_EXT_KEY_USAGE)) {
      parsed.clientAuth = readClientAuthUsage(der, value);
    } else if (isOid(der, id, OID_SUBJECT_KEY_ID)) {
      const ski = readTlv(der, value.start, value.end, OCTET_STRING);
      parsed.subjectKeyId = toHex(der, ski.start, ski.end);
    } else if (isOid(der, id, OID_AUTHORITY_KEY_ID)) {
      const keyId = readAuthorityKeyId(der, value);
      if (keyId !== undefined) parsed.authorityKeyId = toHex(der, keyId.start, keyId.end);
    } else if (isOid(der, id, OID_NAME_CONSTRAINTS)) {
      parsed.nameConstraints = true;
    }
    if (critical && parsed.unsupportedCritical === undefined) {
      if (!UNDERSTOOD.some((oid) => isOid(der, id, oid))) {
        parsed.unsupportedCritical = oidText(der, id);
      }
    }
  }
}
