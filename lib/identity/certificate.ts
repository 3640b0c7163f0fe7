/**
 * Client identity read from a verified X.509 certificate.
 *
 * {@linkcode identityFromCertificate} runs once per accepted connection, so it reads
 * the DER itself with a small, bounds-checked walker over the fields it needs (serial,
 * subject CN, SubjectPublicKeyInfo, subjectAltName) and hashes the SPKI with
 * `node:crypto`. Measured on Deno 2.9.6 with a P-256 client certificate: about 1 ms
 * per certificate with `@peculiar/x509`, about 16 µs with `node:crypto`'s
 * `X509Certificate`, and a few µs with the walker. `node:crypto` is not used for
 * the names because its `subject` and `subjectAltName` are flat strings that Deno
 * does not escape: a DNS name `a, URI:spiffe://x/admin` reads as two names there.
 *
 * Certificate identifiers in a policy (`serial`, `spki_sha256`) are hex as `openssl`
 * prints it, and a configured value matches when both sides agree after the same
 * normalization. {@linkcode CertIdentity.serial} is already in
 * {@linkcode normalizeHex} form (lowercase, no colons, no leading zeros), so
 * `normalizeHex(configured) === identity.serial`. {@linkcode CertIdentity.spkiSha256}
 * is always the full 64 lowercase digits that `sha256sum` prints: a config reader
 * either takes exactly 64 digits (colons and case ignored) and lowercases them, or
 * applies {@linkcode normalizeHex} to both sides so leading zeros become optional
 * too. Either is exact; dropping leading zero digits of a digest cannot make two
 * different digests equal.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  type ClientAuthUsage,
  expectTag,
  EXTENSIONS,
  fail,
  INTEGER,
  isOid,
  OID,
  OID_AUTHORITY_KEY_ID,
  OID_EXT_KEY_USAGE,
  OID_SUBJECT_ALT_NAME,
  readAuthorityKeyId,
  readClientAuthUsage,
  readExtension,
  readTime,
  readTlv,
  SEQUENCE,
  serialHex,
  SET,
  type Tlv,
  toHex,
  VERSION,
} from "./_x509.ts";

export type { ClientAuthUsage } from "./_x509.ts";

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

const HEX_TEXT = /^[0-9a-f]+(?::[0-9a-f]+)*$/i;

/** The validity period of a certificate, in milliseconds since the epoch. */
export interface CertValidity {
  /** `notBefore`: the certificate is not valid before this instant. */
  notBefore: number;
  /** `notAfter`: the certificate is not valid after this instant. */
  notAfter: number;
}

/**
 * Reads the validity period of a DER certificate, with the same bounds-checked walker
 * as {@linkcode identityFromCertificate}. The server re-checks it on every connection
 * (a resumed TLS session skips certificate checks), so it avoids building Node's
 * legacy certificate object (about 25 µs, or 100 µs with the issuer chain) just for
 * two dates. UTCTime years 50-99 are 1950-1999, as RFC 5280 says.
 *
 * @example Usage
 * ```ts
 * import { certificateValidity } from "@mtlb/mtlb";
 * import { createCa, issueCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const dave = await issueCertificate(ca, { commonName: "dave", kind: "client" });
 * const { notBefore, notAfter } = certificateValidity(dave.der);
 * assert.ok(notBefore < Date.now() && Date.now() < notAfter);
 * ```
 *
 * @param der The certificate, DER.
 * @returns Its `notBefore` and `notAfter`, in ms since the epoch.
 * @throws {TypeError} When `der` is not a well-formed DER X.509 certificate.
 */
export function certificateValidity(der: Uint8Array): CertValidity {
  return validityOf(der, readTbs(der).validity);
}

/**
 * What the server reads from a client certificate after the handshake, in one walk:
 * identity, validity, what the extended key usage says about clientAuth, and the
 * issuer's name and key identifier (to find the CA that issued it).
 */
export interface CertificateFacts {
  /** Who the certificate names. */
  identity: CertIdentity;
  /** When it is valid. */
  validity: CertValidity;
  /**
   * Its extended key usage: `"client_auth"` (lists clientAuth), `"absent"` (no such
   * extension), `"other"` (an extension without clientAuth).
   */
  clientAuth: ClientAuthUsage;
  /** The issuer Name, DER: a view of the certificate's bytes, not a copy. */
  issuer: Uint8Array;
  /**
   * The keyIdentifier of its authorityKeyIdentifier extension, lowercase hex.
   *
   * @default {undefined}
   */
  authorityKeyId?: string;
}

/**
 * Reads identity, validity, clientAuth usage and issuer with one walk over the
 * certificate: what the server needs from every client certificate.
 *
 * @example Usage
 * ```ts
 * import { readCertificate } from "./certificate.ts";
 * import { createCa } from "../pki/certificate_authority.ts";
 * import { issueCertificate } from "../pki/issue_certificate.ts";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const erin = await issueCertificate(ca, { commonName: "erin", kind: "client" });
 * const { identity, validity, clientAuth } = readCertificate(erin.der);
 * assert.equal(identity.cn, "erin");
 * assert.ok(validity.notBefore < validity.notAfter);
 * assert.equal(clientAuth, "client_auth");
 * ```
 *
 * @param der The certificate, DER.
 * @returns What {@linkcode identityFromCertificate} and {@linkcode certificateValidity}
 *   return, with the extended key usage and the issuer's name and key identifier.
 * @throws {TypeError} When `der` is not a well-formed DER X.509 certificate.
 */
export function readCertificate(der: Uint8Array): CertificateFacts {
  const tbs = readTbs(der);
  const extras: Extras = { clientAuth: "absent", authorityKeyId: undefined };
  const facts: CertificateFacts = {
    identity: identityOf(der, tbs, extras),
    validity: validityOf(der, tbs.validity),
    clientAuth: extras.clientAuth,
    issuer: der.subarray(tbs.issuer.header, tbs.issuer.end),
  };
  if (extras.authorityKeyId !== undefined) facts.authorityKeyId = extras.authorityKeyId;
  return facts;
}

/**
 * Judges a client certificate's extended key usage for `[tls] client_eku`: with
 * `"required"` (the default) the extension must be present and list clientAuth; with
 * `"optional"` a certificate without the extension passes too. An extension without
 * clientAuth never passes (a TLS handshake refuses it as well).
 *
 * @example Usage
 * ```ts
 * import { checkClientAuthUsage } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkClientAuthUsage("client_auth"), undefined);
 * assert.equal(checkClientAuthUsage("absent"), "no_client_eku");
 * assert.equal(checkClientAuthUsage("absent", "optional"), undefined);
 * assert.equal(checkClientAuthUsage("other", "optional"), "wrong_eku");
 * ```
 *
 * @param usage What {@linkcode readCertificate} read (`clientAuth`).
 * @param mode `[tls] client_eku`.
 * @returns `undefined` when the certificate may authenticate a client, else why not.
 */
export function checkClientAuthUsage(
  usage: ClientAuthUsage,
  mode: ClientEkuMode = "required",
): "no_client_eku" | "wrong_eku" | undefined {
  if (usage === "client_auth") return undefined;
  if (usage === "other") return "wrong_eku";
  return mode === "optional" ? undefined : "no_client_eku";
}

/**
 * `[tls] client_eku`: whether a client certificate must carry an extended key usage
 * extension (`"required"`), or may lack one (`"optional"`).
 */
export type ClientEkuMode = "required" | "optional";

/**
 * Canonicalizes a hex identifier from a config file or `openssl` output: trims
 * surrounding whitespace, drops colons between digits, lowercases, and strips leading
 * zeros (keeping a single `0` for zero). `openssl x509 -serial` prints `0A1B00`,
 * `openssl x509 -text` prints `0a:1b:00`; both become `a1b00`.
 *
 * @example Usage
 * ```ts
 * import { normalizeHex } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(normalizeHex("0A:1b:00"), "a1b00");
 * assert.equal(normalizeHex("00ff"), "ff");
 * assert.equal(normalizeHex("0"), "0");
 * assert.throws(() => normalizeHex("0x1f"), TypeError);
 * ```
 *
 * @param text Hex digits, optionally separated by single colons.
 * @returns Lowercase hex without colons or leading zeros.
 * @throws {TypeError} When `text` is not a string of hex digits and colons, or is empty.
 */
export function normalizeHex(text: string): string {
  const trimmed = typeof text === "string" ? text.trim() : "";
  if (!HEX_TEXT.test(trimmed)) {
    throw new TypeError(
      `Cannot read hex: expected hex digits with optional colons, received ${JSON.stringify(text)}`,
    );
  }
  const digits = trimmed.replaceAll(":", "").toLowerCase();
  let start = 0;
  while (start < digits.length - 1 && digits[start] === "0") start++;
  return digits.slice(start);
}

/**
 * Reads a client identity from a DER certificate, as `getPeerCertificate(true).raw`
 * gives it. The certificate must already be verified: this checks structure, not
 * signatures or validity. The CN is the first common name in the subject; SAN DNS
 * names and URIs keep their certificate order.
 *
 * @example Usage
 * ```ts
 * import { identityFromCertificate } from "@mtlb/mtlb";
 * import { createCa, issueCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const carol = await issueCertificate(ca, {
 *   commonName: "carol",
 *   kind: "client",
 *   uris: ["spiffe://example.org/carol"],
 * });
 * const id = identityFromCertificate(carol.der);
 * assert.equal(id.cn, "carol");
 * assert.deepEqual(id.sanUri, ["spiffe://example.org/carol"]);
 * assert.equal(id.serial, carol.serial);
 * assert.equal(id.spkiSha256, carol.spkiSha256);
 * ```
 *
 * @param der The certificate, DER.
 * @returns Its SPKI digest, serial, CN and SAN URIs and DNS names.
 * @throws {TypeError} When `der` is not a well-formed DER X.509 certificate.
 */
export function identityFromCertificate(der: Uint8Array): CertIdentity {
  return identityOf(der, readTbs(der));
}

/** The fields of a TBSCertificate that identity and validity are read from. */
interface TbsFields {
  tbs: Tlv;
  serial: Tlv;
  issuer: Tlv;
  validity: Tlv;
  subject: Tlv;
  spki: Tlv;
}

/** What the extension walk reads besides subjectAltName, for {@linkcode readCertificate}. */
interface Extras {
  clientAuth: ClientAuthUsage;
  authorityKeyId: string | undefined;
}

/** Walks a certificate to its TBSCertificate fields, checking the structure on the way. */
function readTbs(der: Uint8Array): TbsFields {
  if (!(der instanceof Uint8Array)) {
    throw new TypeError("Cannot read certificate: expected DER bytes in a Uint8Array");
  }
  const cert = readTlv(der, 0, der.length, SEQUENCE);
  if (cert.end !== der.length) fail("trailing bytes after the certificate");
  const tbs = readTlv(der, cert.start, cert.end, SEQUENCE);
  let serial = readTlv(der, tbs.start, tbs.end);
  if (serial.tag === VERSION) serial = readTlv(der, serial.end, tbs.end);
  expectTag(serial, INTEGER, "serialNumber");
  if (serial.start === serial.end) fail("empty serialNumber");
  const signature = readTlv(der, serial.end, tbs.end, SEQUENCE);
  const issuer = readTlv(der, signature.end, tbs.end, SEQUENCE);
  const validity = readTlv(der, issuer.end, tbs.end, SEQUENCE);
  const subject = readTlv(der, validity.end, tbs.end, SEQUENCE);
  const spki = readTlv(der, subject.end, tbs.end, SEQUENCE);
  return { tbs, serial, issuer, validity, subject, spki };
}

function identityOf(
  der: Uint8Array,
  { tbs, serial, subject, spki }: TbsFields,
  extras?: Extras,
): CertIdentity {
  const identity: CertIdentity = {
    spkiSha256: createHash("sha256").update(der.subarray(spki.header, spki.end)).digest("hex"),
    serial: serialHex(der, serial.start, serial.end),
    sanUri: [],
    sanDns: [],
  };
  const cn = firstCommonName(der, subject);
  if (cn !== undefined) identity.cn = cn;
  for (let at = spki.end; at < tbs.end;) {
    const optional = readTlv(der, at, tbs.end);
    if (optional.tag === EXTENSIONS) readExtensions(der, optional, identity, extras);
    at = optional.end;
  }
  return identity;
}

function validityOf(der: Uint8Array, validity: Tlv): CertValidity {
  const notBefore = readTlv(der, validity.start, validity.end);
  const notAfter = readTlv(der, notBefore.end, validity.end);
  return { notBefore: readTime(der, notBefore), notAfter: readTime(der, notAfter) };
}

/**
 * The SHA-256 of the SubjectPublicKeyInfo of the first certificate in a PEM text, as
 * a policy's `spki_sha256` wants it. Equal to
 * `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.
 *
 * @example Usage
 * ```ts
 * import { spkiSha256FromPem } from "@mtlb/mtlb";
 * import { createCa, issueCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const alice = await issueCertificate(ca, { commonName: "alice", kind: "client" });
 * assert.equal(spkiSha256FromPem(alice.certPem), alice.spkiSha256);
 * ```
 *
 * @param pem One or more PEM certificates; the first is used.
 * @returns 64 lowercase hex digits.
 * @throws {TypeError} When there is no well-formed certificate in `pem`.
 */
export function spkiSha256FromPem(pem: string): string {
  const match = typeof pem === "string" ? PEM_CERTIFICATE.exec(pem) : null;
  if (match === null) {
    throw new TypeError('Cannot read certificate: no "BEGIN CERTIFICATE" block found');
  }
  let binary: string;
  try {
    binary = atob(match[1]!.replace(/\s+/g, ""));
  } catch (cause) {
    throw new TypeError("Cannot read certificate: the PEM block is not base64", { cause });
  }
  return identityFromCertificate(Uint8Array.from(binary, (c) => c.charCodeAt(0))).spkiSha256;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----/;

const SAN_DNS = 0x82; // GeneralName [2] IMPLICIT IA5String
const SAN_URI = 0x86; // GeneralName [6] IMPLICIT IA5String
/** 2.5.4.3 id-at-commonName, encoded. */
const OID_COMMON_NAME = [0x55, 0x04, 0x03];

/** Returns the first CN of a Name: SEQUENCE OF SET OF SEQUENCE { type, value }. */
function firstCommonName(der: Uint8Array, name: Tlv): string | undefined {
  for (let at = name.start; at < name.end;) {
    const rdn = readTlv(der, at, name.end, SET);
    for (let inner = rdn.start; inner < rdn.end;) {
      const attribute = readTlv(der, inner, rdn.end, SEQUENCE);
      const type = readTlv(der, attribute.start, attribute.end, OID);
      if (isOid(der, type, OID_COMMON_NAME)) {
        return decodeString(der, readTlv(der, type.end, attribute.end));
      }
      inner = attribute.end;
    }
    at = rdn.end;
  }
  return undefined;
}

/**
 * Reads subjectAltName from `[3] { SEQUENCE OF Extension }` into `identity`, and the
 * extended key usage and authority key identifier into `extras` when given.
 */
function readExtensions(
  der: Uint8Array,
  wrapper: Tlv,
  identity: CertIdentity,
  extras: Extras | undefined,
): void {
  const list = readTlv(der, wrapper.start, wrapper.end, SEQUENCE);
  let seenSan = false;
  let seenEku = false;
  let seenAki = false;
  for (let at = list.start; at < list.end;) {
    const { id, value, end } = readExtension(der, at, list.end);
    at = end;
    // RFC 5280, section 4.2: an extension appears at most once.
    if (isOid(der, id, OID_SUBJECT_ALT_NAME)) {
      if (seenSan) fail("repeated subjectAltName extension");
      seenSan = true;
      const names = readTlv(der, value.start, value.end, SEQUENCE);
      for (let inner = names.start; inner < names.end;) {
        const name = readTlv(der, inner, names.end);
        if (name.tag === SAN_DNS) identity.sanDns.push(decodeIa5(der, name));
        else if (name.tag === SAN_URI) identity.sanUri.push(decodeIa5(der, name));
        inner = name.end;
      }
    } else if (extras === undefined) {
      continue;
    } else if (isOid(der, id, OID_EXT_KEY_USAGE)) {
      if (seenEku) fail("repeated extKeyUsage extension");
      seenEku = true;
      extras.clientAuth = readClientAuthUsage(der, value);
    } else if (isOid(der, id, OID_AUTHORITY_KEY_ID)) {
      if (seenAki) fail("repeated authorityKeyIdentifier extension");
      seenAki = true;
      const keyId = readAuthorityKeyId(der, value);
      if (keyId !== undefined) extras.authorityKeyId = toHex(der, keyId.start, keyId.end);
    }
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const UTF16BE = new TextDecoder("utf-16be", { fatal: true });

function decodeIa5(der: Uint8Array, tlv: Tlv): string {
  let text = "";
  for (let i = tlv.start; i < tlv.end; i++) {
    const byte = der[i]!;
    if (byte > 0x7f) fail(`non-ASCII byte in IA5String at offset ${i}`);
    text += String.fromCharCode(byte);
  }
  return text;
}

/** Decodes a DirectoryString (and IA5String, which some CAs use for CN). */
function decodeString(der: Uint8Array, tlv: Tlv): string {
  const bytes = der.subarray(tlv.start, tlv.end);
  try {
    switch (tlv.tag) {
      case 0x0c: // UTF8String
        return UTF8.decode(bytes);
      case 0x13: // PrintableString
      case 0x16: // IA5String
        return decodeIa5(der, tlv);
      case 0x14: // TeletexString: read as Latin-1, as OpenSSL and Go do
        return String.fromCharCode(...bytes);
      case 0x1e: // BMPString
        return UTF16BE.decode(bytes);
      case 0x1c: { // UniversalString
        if (bytes.length % 4 !== 0) fail("UniversalString length is not a multiple of 4");
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        let text = "";
        for (let i = 0; i < bytes.length; i += 4) text += String.fromCodePoint(view.getUint32(i));
        return text;
      }
    }
  } catch (cause) {
    if (cause instanceof TypeError && cause.message.startsWith("Cannot read certificate")) {
      throw cause;
    }
    throw new TypeError(`Cannot read certificate: undecodable string at offset ${tlv.header}`, {
      cause,
    });
  }
  return fail(`unsupported string tag 0x${tlv.tag.toString(16)} at offset ${tlv.header}`);
}
