/**
 * A DER reader of CRLs (RFC 5280, section 5.1) for `crl.ts`, tolerant of the long
 * lists large CAs publish: a CRL of tens of thousands of entries is read in one pass
 * over its bytes, its serials kept as a set.
 *
 * @module
 */
import {
  readAuthorityKeyId,
  readSignatureAlgorithm,
  sameBytes,
  serialHex,
  toHex,
} from "./_x509.ts";

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

/** What a CRL says, as {@linkcode readCrl} reads it. */
export interface ParsedCrl {
  tbs: Uint8Array;
  /** The signature algorithm, or its dotted OID when it is not supported. */
  algorithm: ReturnType<typeof readSignatureAlgorithm>;
  /** The AlgorithmIdentifier, DER. */
  algorithmDer: Uint8Array;
  signature: Uint8Array;
  issuerDer: Uint8Array;
  /** The keyIdentifier of the CRL's authorityKeyIdentifier, lowercase hex. */
  authorityKeyId?: string;
  thisUpdate: Date;
  nextUpdate?: Date;
  serials: Set<string>;
  /** The OID of the first critical CRL or entry extension. */
  critical?: string;
}

/**
 * Reads a DER CertificateList (RFC 5280, section 5.1).
 *
 * @param der The CRL, DER.
 * @returns Its signed part, signature, issuer, dates, serials and first critical extension.
 * @throws {TypeError} When it is not a CRL this reader understands.
 */
export function readCrl(der: Uint8Array): ParsedCrl {
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
  const algorithm = readSignatureAlgorithm(der, asX509Tlv(innerAlgorithm));
  const issuer = expect(tlv(der, innerAlgorithm.end, tbs.end), 0x30, "issuer");
  const thisUpdateTlv = tlv(der, issuer.end, tbs.end);
  const parsed: ParsedCrl = {
    tbs: slice(der, tbs),
    algorithm,
    algorithmDer: slice(der, innerAlgorithm),
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
    for (let e = extensions.body; e < extensions.end;) {
      const extension = expect(tlv(der, e, extensions.end), 0x30, "Extension");
      const oid = expect(tlv(der, extension.body, extension.end), 0x06, "extnID");
      if (readOid(der, oid) === "2.5.29.35") {
        let value = tlv(der, oid.end, extension.end);
        if (value.tag === 0x01) value = tlv(der, value.end, extension.end);
        const keyId = readAuthorityKeyId(der, asX509Tlv(expect(value, 0x04, "extnValue")));
        if (keyId !== undefined) parsed.authorityKeyId = toHex(der, keyId.start, keyId.end);
      }
      e = extension.end;
    }
  }
  return parsed;
}

/** This module's element as `_x509.ts` names its offsets. */
function asX509Tlv(field: Tlv): { tag: number; header: number; start: number; end: number } {
  return { tag: field.tag, header: field.start, start: field.body, end: field.end };
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
