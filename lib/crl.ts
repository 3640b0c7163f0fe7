/**
 * Certificate revocation lists: {@linkcode RevocationList} checks client
 * certificates against the CRLs of `[tls] crl` after the handshake, and
 * {@linkcode createCrl} issues a CRL for tests and development PKIs.
 *
 * Deno 2.9's `node:tls` accepts the `crl` option of `createServer` and ignores it (a
 * revoked client completes the handshake), so mtlb enforces CRLs itself, as OpenSSL
 * would with `X509_V_FLAG_CRL_CHECK`: the CRL of the certificate's issuer decides,
 * and an expired CRL refuses every certificate of that issuer (fail closed).
 *
 * CRLs are read by a DER reader of this module and their signatures verified with
 * `node:crypto`, so CRLs of large CAs (tens of thousands of entries; 50,000 parse in
 * about 80 ms) load; `@peculiar/x509`'s parser stops at about 2,500 entries, so it
 * only serves {@linkcode createCrl}.
 *
 * @module
 */
import "reflect-metadata";
import { type KeyObject, verify, X509Certificate } from "node:crypto";
import {
  Name,
  PemConverter,
  X509Certificate as PeculiarCertificate,
  X509CrlGenerator,
} from "@peculiar/x509";
import type { CertificateAuthority } from "./pki.ts";
import { normalizeHex } from "./identity.ts";

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;
/** A CRL whose `thisUpdate` is at most this far ahead of the local clock is accepted. */
export const CRL_CLOCK_SKEW_MS = 5 * MINUTE_MS;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const CRL_BLOCK = /-----BEGIN (?:X509 )?CRL-----([A-Za-z0-9+/=\s]+?)-----END (?:X509 )?CRL-----/g;

/**
 * A CRL that cannot be used: unparsable, not issued by a trusted CA, badly signed,
 * or out of date.
 *
 * @example Usage
 * ```ts
 * import { CrlError, RevocationList } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(RevocationList.parse("not a CRL", ""), CrlError);
 * ```
 */
export class CrlError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CrlError";
  }
}

/** Facts about one CRL of a {@linkcode RevocationList}. */
export interface CrlInfo {
  /** The issuer's distinguished name. */
  issuer: string;
  /** When the CRL was issued. */
  thisUpdate: Date;
  /** When the next CRL is due; absent when the CRL does not say. */
  nextUpdate?: Date;
  /** How many certificates it revokes. */
  revoked: number;
}

/**
 * The verdict of {@linkcode RevocationList.check}: `ok` (not revoked, or no CRL
 * covers the issuer), `revoked`, or `crl_expired` (the issuer's CRL is past its
 * `nextUpdate`).
 */
export type RevocationStatus = "ok" | "revoked" | "crl_expired";

/** Options of {@linkcode RevocationList.parse}. */
export interface ParseCrlOptions {
  /**
   * The current time, ms since the epoch, to judge `thisUpdate` and `nextUpdate`.
   *
   * @default {Date.now()}
   */
  now?: number;
}

let createList: (lists: List[]) => RevocationList;

interface List {
  info: CrlInfo;
  /** The CRL's issuer name and the verifying CA's subject, DER: what a leaf's issuer may be. */
  issuerKeys: Uint8Array[];
  nextUpdate: number;
  serials: Set<string>;
}

/**
 * The CRLs of `[tls] crl`, verified against the CA bundle, ready to check client
 * certificates.
 *
 * A PEM file may hold several CRLs, one per CA (a root and its intermediates, when
 * the intermediates are in the CA bundle too). Each must be signed by a CA
 * certificate of the bundle whose subject is the CRL's issuer, be current
 * (`thisUpdate` not in the future beyond {@linkcode CRL_CLOCK_SKEW_MS},
 * `nextUpdate` not past), be signed with ECDSA or RSA PKCS#1 v1.5 over SHA-2, or
 * Ed25519/Ed448, and carry no critical extension (delta, partitioned and indirect
 * CRLs are not supported). A client certificate is checked against the CRL of its
 * issuer; a certificate whose issuer has no CRL in the file is not checked.
 *
 * @example Usage
 * ```ts
 * import { createCa, createCrl, issueCertificate, RevocationList } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const alice = await issueCertificate(ca, { commonName: "alice", kind: "client" });
 * const bob = await issueCertificate(ca, { commonName: "bob", kind: "client" });
 * const crl = await createCrl(ca, [bob.serial]);
 * const list = await RevocationList.parse(crl, ca.certPem);
 * assert.equal(list.check(alice.der, alice.serial), "ok");
 * assert.equal(list.check(bob.der, bob.serial), "revoked");
 * ```
 */
export class RevocationList {
  static {
    createList = (lists) => new RevocationList(lists);
  }

  #lists: List[];

  /**
   * Use {@linkcode RevocationList.parse}.
   *
   * @param lists The verified lists.
   */
  private constructor(lists: List[]) {
    this.#lists = lists;
  }

  /**
   * Parses and verifies CRLs.
   *
   * @param crl PEM text (one or more `X509 CRL` blocks), or one DER-encoded CRL.
   * @param ca The CA bundle, PEM: the CRLs' issuers.
   * @param options The current time.
   * @returns The verified lists.
   * @throws {CrlError} When there is no CRL, one cannot be parsed, no CA of the bundle
   *   issued it or its signature does not verify, it is not yet valid or expired, or
   *   it has a critical extension.
   */
  static parse(
    crl: string | Uint8Array,
    ca: string,
    options: ParseCrlOptions = {},
  ): Promise<RevocationList> {
    try {
      return Promise.resolve(parseLists(crl, ca, options.now ?? Date.now()));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The CRLs, in file order.
   *
   * @returns One record per CRL.
   */
  get lists(): CrlInfo[] {
    return this.#lists.map((list) => ({ ...list.info }));
  }

  /**
   * The earliest `nextUpdate` of the CRLs: when the balancer needs new ones.
   *
   * @returns The date, or `undefined` when no CRL has a `nextUpdate`.
   */
  get nextUpdate(): Date | undefined {
    const earliest = Math.min(...this.#lists.map((list) => list.nextUpdate));
    return earliest === Infinity ? undefined : new Date(earliest);
  }

  /**
   * Checks a client certificate against the CRL of its issuer. Cheap enough for
   * every connection: a walk over the certificate's first DER fields, a byte
   * comparison of issuer names and a set lookup (a few hundred nanoseconds).
   *
   * @param der The certificate, DER (`getPeerCertificate(true).raw`).
   * @param serial Its serial number, canonical hex (`identityFromCertificate(der).serial`).
   * @param now The current time, ms since the epoch; `Date.now()` when omitted.
   * @returns `ok`, `revoked` or `crl_expired`.
   * @throws {TypeError} When `der` is not a DER certificate.
   */
  check(der: Uint8Array, serial: string, now: number = Date.now()): RevocationStatus {
    const issuer = certificateName(der, "issuer");
    for (const list of this.#lists) {
      if (!sameBytes(list.issuerKeys[0]!, issuer) && !sameBytes(list.issuerKeys[1]!, issuer)) {
        continue;
      }
      if (now >= list.nextUpdate) return "crl_expired";
      return list.serials.has(serial) ? "revoked" : "ok";
    }
    return "ok";
  }
}

/** Signature algorithms accepted for CRLs, by OID: the digest `node:crypto` verifies with. */
const SIGNATURE_ALGORITHMS = new Map<string, string | null>([
  ["1.2.840.10045.4.3.2", "sha256"], // ecdsa-with-SHA256
  ["1.2.840.10045.4.3.3", "sha384"], // ecdsa-with-SHA384
  ["1.2.840.10045.4.3.4", "sha512"], // ecdsa-with-SHA512
  ["1.2.840.113549.1.1.11", "sha256"], // sha256WithRSAEncryption
  ["1.2.840.113549.1.1.12", "sha384"], // sha384WithRSAEncryption
  ["1.2.840.113549.1.1.13", "sha512"], // sha512WithRSAEncryption
  ["1.3.101.112", null], // Ed25519
  ["1.3.101.113", null], // Ed448
]);

interface Authority {
  subjectDer: Uint8Array;
  subject: string;
  key: KeyObject;
}

/**
 * Parses and verifies CRLs with a DER reader of its own and `node:crypto`: a CRL
 * of a large CA holds tens of thousands of entries, more ASN.1 nodes than
 * `@peculiar/x509`'s parser accepts (about 2,500 entries).
 */
function parseLists(crl: string | Uint8Array, caPem: string, now: number): RevocationList {
  const ders = splitCrls(crl);
  const authorities: Authority[] =
    (caPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map(
      (pem) => {
        const cert = new X509Certificate(pem);
        const subjectDer = certificateName(new Uint8Array(cert.raw), "subject");
        return { subjectDer, subject: canonicalName(nameText(subjectDer)), key: cert.publicKey };
      },
    );
  const lists: List[] = [];
  for (const [index, der] of ders.entries()) {
    const where = ders.length === 1 ? "the CRL" : `CRL number ${index + 1}`;
    let parsed: ParsedCrl;
    try {
      parsed = readCrl(der);
    } catch (error) {
      throw new CrlError(`Cannot use ${where}: it cannot be parsed: ${message(error)}`, {
        cause: error,
      });
    }
    const issuer = nameText(parsed.issuerDer);
    const of = `${where} of ${issuer}`;
    if (parsed.critical !== undefined) {
      throw new CrlError(
        `Cannot use ${of}: critical extension ${parsed.critical} is not supported (delta, partitioned and indirect CRLs are not)`,
      );
    }
    const digest = SIGNATURE_ALGORITHMS.get(parsed.algorithm);
    if (digest === undefined) {
      throw new CrlError(
        `Cannot use ${of}: signature algorithm ${parsed.algorithm} is not supported (ECDSA or RSA PKCS#1 with SHA-2, Ed25519, Ed448)`,
      );
    }
    // Byte-equal names first; else equal up to case and spacing, as OpenSSL compares them.
    const canonical = canonicalName(issuer);
    const candidates = authorities.filter((a) => sameBytes(a.subjectDer, parsed.issuerDer))
      .concat(
        authorities.filter((a) =>
          !sameBytes(a.subjectDer, parsed.issuerDer) && a.subject === canonical
        ),
      );
    if (candidates.length === 0) {
      throw new CrlError(
        `Cannot use ${where}: its issuer ${issuer} is not a certificate of the CA bundle`,
      );
    }
    const verifier = candidates.find((a) => {
      try {
        return verify(digest, parsed.tbs, a.key, parsed.signature);
      } catch {
        return false; // A key of another type, or a malformed signature.
      }
    });
    if (verifier === undefined) {
      throw new CrlError(
        `Cannot use ${of}: its signature does not verify with the issuer's key`,
      );
    }
    const { thisUpdate, nextUpdate } = parsed;
    if (thisUpdate.getTime() > now + CRL_CLOCK_SKEW_MS) {
      throw new CrlError(`Cannot use ${of}: it is not valid until ${thisUpdate.toISOString()}`);
    }
    if (nextUpdate !== undefined && nextUpdate.getTime() <= now) {
      throw new CrlError(
        `Cannot use ${of}: it expired on ${nextUpdate.toISOString()} (its nextUpdate); fetch a new one`,
      );
    }
    const info: CrlInfo = { issuer, thisUpdate, revoked: parsed.serials.size };
    if (nextUpdate !== undefined) info.nextUpdate = nextUpdate;
    lists.push({
      info,
      issuerKeys: [parsed.issuerDer, verifier.subjectDer],
      nextUpdate: nextUpdate?.getTime() ?? Infinity,
      serials: parsed.serials,
    });
  }
  return createList(lists);
}

/** Options of {@linkcode createCrl}. */
export interface CreateCrlOptions {
  /**
   * When the CRL is issued.
   *
   * @default {5 minutes before now}
   */
  thisUpdate?: Date;
  /**
   * When the next CRL is due.
   *
   * @default {7 days after `thisUpdate`}
   */
  nextUpdate?: Date;
  /**
   * When the certificates were revoked.
   *
   * @default {thisUpdate}
   */
  revocationDate?: Date;
}

/**
 * Issues a CRL signed by `ca` (ECDSA-SHA256), as PEM (`-----BEGIN X509 CRL-----`,
 * as OpenSSL writes it). For tests and development PKIs.
 *
 * @example Usage
 * ```ts
 * import { createCa, createCrl } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const pem = await createCrl(ca, ["0a1b00"], { nextUpdate: new Date(Date.now() + 86_400_000) });
 * assert.match(pem, /^-----BEGIN X509 CRL-----\n/);
 * ```
 *
 * @param ca The issuing CA (its key signs the CRL).
 * @param revoked Serial numbers to revoke, hex in any form `normalizeHex` accepts.
 * @param options Dates.
 * @returns The CRL, PEM, ending in a newline.
 * @throws {TypeError} When a serial is not hex.
 * @throws {RangeError} When `nextUpdate` is not after `thisUpdate`.
 */
export async function createCrl(
  ca: CertificateAuthority,
  revoked: readonly string[],
  options: CreateCrlOptions = {},
): Promise<string> {
  const thisUpdate = options.thisUpdate ?? new Date(Date.now() - 5 * MINUTE_MS);
  const nextUpdate = options.nextUpdate ?? new Date(thisUpdate.getTime() + 7 * DAY_MS);
  if (!(nextUpdate.getTime() > thisUpdate.getTime())) {
    throw new RangeError(
      `Cannot create CRL: "nextUpdate" must be later than "thisUpdate", received ${nextUpdate.toISOString()} and ${thisUpdate.toISOString()}`,
    );
  }
  const revocationDate = options.revocationDate ?? thisUpdate;
  const crl = await X509CrlGenerator.create({
    issuer: new PeculiarCertificate(ca.certPem).subjectName, // the CA's own encoding
    thisUpdate,
    nextUpdate,
    entries: revoked.map((serial) => {
      const hex = normalizeHex(serial);
      return { serialNumber: hex.length % 2 === 0 ? hex : `0${hex}`, revocationDate };
    }),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  });
  return `${PemConverter.encode(crl.rawData, "X509 CRL")}\n`;
}

/**
 * Converts CRLs to PEM text: PEM input is returned with its CRL blocks normalised to
 * `X509 CRL`, DER input is encoded.
 *
 * @example Usage
 * ```ts
 * import { createCa, createCrl, crlToPem } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const pem = await createCrl(await createCa({ commonName: "Example CA" }), []);
 * assert.equal(crlToPem(pem.replaceAll("X509 CRL", "CRL")), pem);
 * ```
 *
 * @param crl PEM text or one DER-encoded CRL.
 * @returns PEM text, one block per CRL.
 * @throws {CrlError} When there is no CRL in the input.
 */
export function crlToPem(crl: string | Uint8Array): string {
  return splitCrls(crl).map((der) => `${PemConverter.encode(der, "X509 CRL")}\n`).join("");
}

function splitCrls(crl: string | Uint8Array): Uint8Array<ArrayBuffer>[] {
  if (crl instanceof Uint8Array && crl[0] === 0x30) return [crl.slice()];
  const text = typeof crl === "string" ? crl : new TextDecoder().decode(crl);
  const ders = [...text.matchAll(CRL_BLOCK)].map((m) => {
    try {
      const binary = atob(m[1]!.replace(/\s+/g, ""));
      const bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      return bytes;
    } catch (error) {
      throw new CrlError(`Cannot use the CRL: a PEM block is not valid base64`, { cause: error });
    }
  });
  if (ders.length === 0) {
    throw new CrlError(
      'Cannot use the CRL: expected PEM "-----BEGIN X509 CRL-----" blocks or DER, found neither',
    );
  }
  return ders;
}

// ---------------------------------------------------------------------------------------
// Minimal DER reading: the names at the start of a certificate and of a CRL.

interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the content. */
  body: number;
  /** Offset just past the content. */
  end: number;
}

function tlv(der: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new TypeError("Cannot read DER: truncated");
  const tag = der[at]!;
  let length = der[at + 1]!;
  let body = at + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || body + octets > limit) {
      throw new TypeError("Cannot read DER: bad length");
    }
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[body + i]!;
    body += octets;
  }
  const end = body + length;
  if (end > limit) throw new TypeError("Cannot read DER: truncated");
  return { tag, start: at, body, end };
}

/** The issuer or subject Name of a DER certificate, as its DER bytes (a view, no copy). */
function certificateName(der: Uint8Array, which: "issuer" | "subject"): Uint8Array {
  const cert = tlv(der, 0, der.length);
  const tbs = tlv(der, cert.body, cert.end);
  let field = tlv(der, tbs.body, tbs.end);
  if (field.tag === 0xa0) field = tlv(der, field.end, tbs.end); // [0] version
  const signature = tlv(der, field.end, tbs.end); // after the serial
  let name = tlv(der, signature.end, tbs.end); // issuer
  if (which === "subject") {
    const validity = tlv(der, name.end, tbs.end);
    name = tlv(der, validity.end, tbs.end);
  }
  if (name.tag !== 0x30) throw new TypeError("Cannot read DER: a certificate name was expected");
  return der.subarray(name.start, name.end);
}

interface ParsedCrl {
  tbs: Uint8Array;
  algorithm: string;
  signature: Uint8Array;
  issuerDer: Uint8Array;
  thisUpdate: Date;
  nextUpdate?: Date;
  serials: Set<string>;
  /** The OID of the first critical CRL or entry extension. */
  critical?: string;
}

/** Reads a DER CertificateList (RFC 5280, section 5.1). */
function readCrl(der: Uint8Array): ParsedCrl {
  const list = expect(tlv(der, 0, der.length), 0x30, "CertificateList");
  if (list.end !== der.length) throw new TypeError("trailing bytes after the CRL");
  const tbs = expect(tlv(der, list.body, list.end), 0x30, "tbsCertList");
  const outerAlgorithm = expect(tlv(der, tbs.end, list.end), 0x30, "signatureAlgorithm");
  const signatureBits = expect(tlv(der, outerAlgorithm.end, list.end), 0x03, "signatureValue");
  if (signatureBits.body >= signatureBits.end || der[signatureBits.body] !== 0) {
    throw new TypeError("signatureValue has unused bits");
  }

  let field = tlv(der, tbs.body, tbs.end);
  if (field.tag === 0x02) field = tlv(der, field.end, tbs.end); // version v2
  const innerAlgorithm = expect(field, 0x30, "signature");
  if (!sameBytes(slice(der, innerAlgorithm), slice(der, outerAlgorithm))) {
    throw new TypeError("the signature algorithms inside and outside the signed part differ");
  }
  const algorithm = readOid(
    der,
    expect(tlv(der, innerAlgorithm.body, innerAlgorithm.end), 0x06, "algorithm"),
  );
  const issuer = expect(tlv(der, innerAlgorithm.end, tbs.end), 0x30, "issuer");
  const thisUpdateTlv = tlv(der, issuer.end, tbs.end);
  const parsed: ParsedCrl = {
    tbs: slice(der, tbs),
    algorithm,
    signature: der.subarray(signatureBits.body + 1, signatureBits.end),
    issuerDer: slice(der, issuer),
    thisUpdate: readTime(der, thisUpdateTlv),
    serials: new Set(),
  };
  let at = thisUpdateTlv.end;
  if (at < tbs.end) {
    const next = tlv(der, at, tbs.end);
    if (next.tag === 0x17 || next.tag === 0x18) {
      parsed.nextUpdate = readTime(der, next);
      at = next.end;
    }
  }
  if (at < tbs.end) {
    const revoked = tlv(der, at, tbs.end);
    if (revoked.tag === 0x30) {
      for (let e = revoked.body; e < revoked.end;) {
        const entry = expect(tlv(der, e, revoked.end), 0x30, "revokedCertificate");
        const serial = expect(tlv(der, entry.body, entry.end), 0x02, "userCertificate");
        if (serial.body === serial.end) throw new TypeError("empty serial number");
        parsed.serials.add(serialHex(der, serial.body, serial.end));
        const date = tlv(der, serial.end, entry.end);
        if (date.tag !== 0x17 && date.tag !== 0x18) throw new TypeError("expected revocationDate");
        if (date.end < entry.end && parsed.critical === undefined) {
          const extensions = expect(tlv(der, date.end, entry.end), 0x30, "crlEntryExtensions");
          parsed.critical = criticalExtension(der, extensions);
        }
        e = entry.end;
      }
      at = revoked.end;
    }
  }
  if (at < tbs.end) {
    const wrapper = expect(tlv(der, at, tbs.end), 0xa0, "crlExtensions");
    const extensions = expect(tlv(der, wrapper.body, wrapper.end), 0x30, "crlExtensions");
    parsed.critical ??= criticalExtension(der, extensions);
  }
  return parsed;
}

/** The OID of the first critical extension of an Extensions SEQUENCE. */
function criticalExtension(der: Uint8Array, extensions: Tlv): string | undefined {
  for (let at = extensions.body; at < extensions.end;) {
    const extension = expect(tlv(der, at, extensions.end), 0x30, "Extension");
    const oid = expect(tlv(der, extension.body, extension.end), 0x06, "extnID");
    const next = tlv(der, oid.end, extension.end);
    if (next.tag === 0x01 && next.end === next.body + 1 && der[next.body] !== 0) {
      return readOid(der, oid);
    }
    at = extension.end;
  }
  return undefined;
}

function expect(field: Tlv, tag: number, what: string): Tlv {
  if (field.tag !== tag) {
    throw new TypeError(
      `expected ${what} (tag 0x${tag.toString(16)}), found tag 0x${field.tag.toString(16)}`,
    );
  }
  return field;
}

function slice(der: Uint8Array, field: Tlv): Uint8Array {
  return der.subarray(field.start, field.end);
}

/** An INTEGER's content as `normalizeHex` spells it: lowercase, no leading zeros. */
function serialHex(der: Uint8Array, start: number, end: number): string {
  while (start < end - 1 && der[start] === 0) start++;
  let hex = der[start]!.toString(16);
  for (let i = start + 1; i < end; i++) hex += HEX[der[i]!]!;
  return hex;
}

function readOid(der: Uint8Array, field: Tlv): string {
  const parts: number[] = [];
  let value = 0;
  for (let i = field.body; i < field.end; i++) {
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

/** UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSS[.f]Z`). */
function readTime(der: Uint8Array, field: Tlv): Date {
  let text = "";
  for (let i = field.body; i < field.end; i++) text += String.fromCharCode(der[i]!);
  const utc = field.tag === 0x17;
  if (!utc && field.tag !== 0x18) throw new TypeError("expected a time");
  const match =
    (utc
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/
      : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/)
      .exec(text);
  if (match === null) throw new TypeError(`bad time ${JSON.stringify(text)}`);
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const fullYear = utc ? (year < 50 ? 2000 + year : 1900 + year) : year;
  return new Date(Date.UTC(fullYear, month - 1, day, hour, minute, second));
}

/** A DER Name as text (`CN=..., O=...`), for messages and comparisons. */
function nameText(der: Uint8Array): string {
  return new Name(der.slice()).toString();
}

/** A distinguished name for comparison: lowercase, runs of spaces folded. */
function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\s+/g, " ").trim();
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
