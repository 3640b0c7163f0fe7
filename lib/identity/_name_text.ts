/**
 * Distinguished names as text, for messages, the subjects of the CAs of a bundle and
 * CRL issuers: a DER Name rendered as `CN=Example CA, O=Example`, most specific last,
 * the attributes of a multi-valued RDN joined by `+`.
 *
 * The text is the one `@peculiar/x509`'s `Name.toString()` gives, so the names mtlb
 * prints, compares (`canonicalName`) and derives CA ids from stay what they were: the
 * short names CN, L, ST, O, OU, C, DC, E, G, I, SN and T, other types as dotted OIDs;
 * RFC 4514 escapes of `,+"\<>;`, a leading space or `#` and a trailing space; the
 * first CR, LF or tab as `\0A`-style hex; a value of a type that is not a string as
 * `#` and the hex of its DER. A Name that is not DER the reader understands is
 * `(an unreadable name)`.
 *
 * @module
 */
import { OID, oidText, SEQUENCE, SET } from "./_x509.ts";

/** The short names of attribute types, by dotted OID. */
const SHORT_NAMES: ReadonlyMap<string, string> = new Map([
  ["2.5.4.3", "CN"],
  ["2.5.4.7", "L"],
  ["2.5.4.8", "ST"],
  ["2.5.4.10", "O"],
  ["2.5.4.11", "OU"],
  ["2.5.4.6", "C"],
  ["0.9.2342.19200300.100.1.25", "DC"],
  ["1.2.840.113549.1.9.1", "E"],
  ["2.5.4.42", "G"],
  ["2.5.4.43", "I"],
  ["2.5.4.4", "SN"],
  ["2.5.4.12", "T"],
]);

// String tags of a DirectoryString or an IA5String (X.680).
const UTF8_STRING = 0x0c;
const PRINTABLE_STRING = 0x13;
const TELETEX_STRING = 0x14;
const IA5_STRING = 0x16;
const UNIVERSAL_STRING = 0x1c;
const BMP_STRING = 0x1e;
const NULL = 0x05;

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text of a Name that cannot be read. */
export const UNREADABLE_NAME = "(an unreadable name)";

/**
 * A DER Name as text (`CN=..., O=...`), for messages.
 *
 * @param der The Name, DER.
 * @returns The text, or {@linkcode UNREADABLE_NAME}.
 */
export function nameText(der: Uint8Array): string {
  try {
    return readName(der);
  } catch {
    return UNREADABLE_NAME;
  }
}

/** A distinguished name for comparison: lowercase, runs of spaces folded. */
export function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\s+/g, " ").trim();
}

/** A Name's bytes as a string, for a map key. */
export function nameKey(name: Uint8Array): string {
  return String.fromCharCode(...name);
}

/** A DER element: its tag (the first octet), where its header starts, its contents. */
interface Element {
  tag: number;
  header: number;
  start: number;
  end: number;
}

/**
 * Reads the element at `at`, which must end by `limit`: definite lengths of up to four
 * octets, tag numbers above 30 in the multi-octet form.
 */
function element(der: Uint8Array, at: number, limit: number): Element {
  if (at >= limit) throw new TypeError("truncated");
  const tag = der[at]!;
  let next = at + 1;
  if ((tag & 0x1f) === 0x1f) {
    for (let octets = 0;; octets++) {
      if (next >= limit || octets === 4) throw new TypeError("bad tag");
      if ((der[next++]! & 0x80) === 0) break;
    }
  }
  if (next >= limit) throw new TypeError("truncated");
  let length = der[next++]!;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || next + octets > limit) throw new TypeError("bad length");
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[next + i]!;
    next += octets;
  }
  const end = next + length;
  if (end > limit) throw new TypeError("truncated");
  if (tag & 0x20) { for (let child = next; child < end;) child = element(der, child, end).end; }
  return { tag, header: at, start: next, end };
}

function expect(der: Uint8Array, at: number, limit: number, tag: number): Element {
  const found = element(der, at, limit);
  if (found.tag !== tag) throw new TypeError(`expected tag ${tag}`);
  return found;
}

function readName(der: Uint8Array): string {
  const name = expect(der, 0, der.length, SEQUENCE);
  const rdns: string[] = [];
  for (let at = name.start; at < name.end;) {
    const rdn = expect(der, at, name.end, SET);
    const attributes: string[] = [];
    for (let a = rdn.start; a < rdn.end;) {
      const attribute = expect(der, a, rdn.end, SEQUENCE);
      const type = expect(der, attribute.start, attribute.end, OID);
      if (type.start === type.end || der[type.end - 1]! & 0x80) {
        throw new TypeError("bad attribute type");
      }
      const value = element(der, type.end, attribute.end);
      if (value.end !== attribute.end) throw new TypeError("bytes after the attribute value");
      const oid = oidText(der, type);
      attributes.push(`${SHORT_NAMES.get(oid) ?? oid}=${valueText(der, value)}`);
      a = attribute.end;
    }
    rdns.push(attributes.join("+"));
    at = rdn.end;
  }
  return rdns.join(", ");
}

/** An attribute value as `Name.toString()` writes it. */
function valueText(der: Uint8Array, value: Element): string {
  const bytes = der.subarray(value.start, value.end);
  switch (value.tag) {
    case UTF8_STRING:
      try {
        return escape(UTF8.decode(bytes));
      } catch {
        return escape(latin1(bytes));
      }
    case PRINTABLE_STRING:
    case TELETEX_STRING:
    case IA5_STRING:
      return escape(latin1(bytes));
    case BMP_STRING: {
      if (bytes.length % 2 !== 0) throw new TypeError("odd BMPString");
      let text = "";
      for (let i = 0; i < bytes.length; i += 2) {
        text += String.fromCharCode((bytes[i]! << 8) | bytes[i + 1]!);
      }
      return escape(text);
    }
    case UNIVERSAL_STRING: {
      if (bytes.length % 4 !== 0) throw new TypeError("UniversalString not in 4-octet units");
      // Only the low 16 bits of each character, as the reader this text matches keeps them.
      let text = "";
      for (let i = 0; i < bytes.length; i += 4) {
        text += String.fromCharCode((bytes[i + 2]! << 8) | bytes[i + 3]!);
      }
      return escape(text);
    }
    case NULL:
      return "";
    default: {
      let hex = "#";
      for (let i = value.header; i < value.end; i++) hex += der[i]!.toString(16).padStart(2, "0");
      return hex;
    }
  }
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return text;
}

/** RFC 4514 escapes, as `Name.toString()` applies them (the first CR, LF or tab only). */
function escape(text: string): string {
  return text
    .replace(/([,+"\\<>;])/g, "\\$1")
    .replace(/^([ #])/, "\\$1")
    .replace(/([ ]$)/, "\\$1")
    .replace(/([\r\n\t])/, (char) => `\\${hexOfUtf8(char)}`);
}

function hexOfUtf8(char: string): string {
  return Array.from(new TextEncoder().encode(char), (b) => b.toString(16).padStart(2, "0"))
    .join("").toUpperCase();
}
