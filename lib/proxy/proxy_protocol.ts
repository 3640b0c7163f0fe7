/**
 * The PROXY protocol, version 2 (binary): the header a balancer writes to an
 * upstream before any byte of the client, so that the upstream learns the client's
 * address and, through TLVs, what the TLS layer knew about it.
 *
 * {@linkcode encodeProxyV2} builds a header, {@linkcode parseProxyV2} reads one (for
 * tests and for upstreams written in TypeScript). The format is HAProxy's
 * specification, `doc/proxy-protocol.txt`, section 2.2.
 *
 * TLVs mtlb sends (see {@linkcode PP2_TYPE}):
 *
 * | type   | name                  | value                                                      |
 * | ------ | --------------------- | ---------------------------------------------------------- |
 * | `0x01` | `ALPN`                | the negotiated ALPN protocol, when there is one            |
 * | `0x02` | `AUTHORITY`           | the SNI server name the client sent, when it sent one      |
 * | `0x20` | `SSL`                 | client flags `SSL \| CERT_CONN`, verify `0`, and sub-TLVs: |
 * | `0x21` | `SSL_VERSION`         | `TLSv1.3`                                                  |
 * | `0x22` | `SSL_CN`              | the client certificate's subject common name               |
 * | `0x23` | `SSL_CIPHER`          | the cipher suite, such as `TLS_AES_256_GCM_SHA384`         |
 * | `0xE0` | `MTLB_CLIENT`         | the configured client name (`[clients.NAME]`), UTF-8       |
 * | `0xE1` | `MTLB_SPKI_SHA256`    | SHA-256 of the client's public key, 64 lowercase hex digits |
 *
 * `0xE0` and `0xE1` are in the range the specification reserves for custom use
 * (`0xE0`-`0xEF`).
 *
 * @module
 */
import { isIP } from "node:net";
import type { HostPort } from "../core/address.ts";

/** The 12-byte signature every PROXY v2 header starts with. */
export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);

/** TLV types of the PROXY v2 specification, and mtlb's own in the custom range. */
export const PP2_TYPE: {
  readonly ALPN: 0x01;
  readonly AUTHORITY: 0x02;
  readonly CRC32C: 0x03;
  readonly NOOP: 0x04;
  readonly UNIQUE_ID: 0x05;
  readonly SSL: 0x20;
  readonly SSL_VERSION: 0x21;
  readonly SSL_CN: 0x22;
  readonly SSL_CIPHER: 0x23;
  readonly SSL_SIG_ALG: 0x24;
  readonly SSL_KEY_ALG: 0x25;
  readonly NETNS: 0x30;
  readonly MTLB_CLIENT: 0xe0;
  readonly MTLB_SPKI_SHA256: 0xe1;
} = Object.freeze({
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SSL_VERSION: 0x21,
  SSL_CN: 0x22,
  SSL_CIPHER: 0x23,
  SSL_SIG_ALG: 0x24,
  SSL_KEY_ALG: 0x25,
  NETNS: 0x30,
  MTLB_CLIENT: 0xe0,
  MTLB_SPKI_SHA256: 0xe1,
});

/** Client flags of a `PP2_TYPE_SSL` TLV. */
export const PP2_CLIENT: {
  readonly SSL: 0x01;
  readonly CERT_CONN: 0x02;
  readonly CERT_SESS: 0x04;
} = Object.freeze({ SSL: 0x01, CERT_CONN: 0x02, CERT_SESS: 0x04 });

/** One type-length-value field. */
export interface ProxyTlv {
  /** The type, 0 to 255. */
  type: number;
  /** The value, at most 65535 bytes. */
  value: Uint8Array;
}

/** The value of a `PP2_TYPE_SSL` TLV. */
export interface ProxySsl {
  /** {@linkcode PP2_CLIENT} flags. */
  client: number;
  /** 0 when the client presented a certificate and it was verified; non-zero otherwise. */
  verify: number;
  /** Sub-TLVs: `SSL_VERSION`, `SSL_CN`, `SSL_CIPHER`, ... */
  tlvs: ProxyTlv[];
}

/** A PROXY v2 header, as {@linkcode encodeProxyV2} takes it and {@linkcode parseProxyV2} returns it. */
export interface ProxyV2Header {
  /**
   * `proxy`: the connection is relayed for `source`; `local`: the proxy opened it on
   * its own behalf (a health check), and the addresses mean nothing.
   */
  command: "proxy" | "local";
  /**
   * The client's address (IPv4 or IPv6 literal). Without `source` and
   * `destination` the address family is `AF_UNSPEC`.
   *
   * @default {undefined}
   */
  source?: HostPort;
  /**
   * The address the client connected to, on the proxy.
   *
   * @default {undefined}
   */
  destination?: HostPort;
  /**
   * TLVs, in order.
   *
   * @default {[]}
   */
  tlvs?: ProxyTlv[];
}

/** What {@linkcode parseProxyV2} found. */
export interface ParsedProxyV2 {
  /** The header; `tlvs` is always present. */
  header: ProxyV2Header & { tlvs: ProxyTlv[] };
  /** The decoded `PP2_TYPE_SSL` TLV, when the header has one. */
  ssl?: ProxySsl;
  /** Bytes the header takes; the client's bytes start here. */
  length: number;
}

/**
 * A PROXY v2 header that cannot be encoded or parsed.
 *
 * @example Usage
 * ```ts
 * import { parseProxyV2, ProxyProtocolError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => parseProxyV2(new TextEncoder().encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")),
 *   ProxyProtocolError,
 * );
 * ```
 */
export class ProxyProtocolError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProxyProtocolError";
  }
}

const HEADER_LENGTH = 16;
const MAX_PAYLOAD = 0xffff;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encodes a PROXY v2 header for a TCP connection. When both addresses are IPv4
 * (or IPv4-mapped IPv6, `::ffff:a.b.c.d`), the family is `AF_INET`; otherwise
 * IPv4 addresses are mapped into IPv6 and the family is `AF_INET6`.
 *
 * @example Usage
 * ```ts
 * import { encodeProxyV2, parseProxyV2, PP2_TYPE } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeProxyV2({
 *   command: "proxy",
 *   source: { hostname: "192.0.2.10", port: 51000 },
 *   destination: { hostname: "192.0.2.1", port: 8443 },
 *   tlvs: [{ type: PP2_TYPE.MTLB_CLIENT, value: new TextEncoder().encode("alice") }],
 * });
 * assert.equal(bytes.length, 16 + 12 + 3 + 5);
 * const parsed = parseProxyV2(bytes);
 * assert.deepEqual(parsed?.header.source, { hostname: "192.0.2.10", port: 51000 });
 * ```
 *
 * @param header The command, addresses and TLVs.
 * @returns The header bytes.
 * @throws {ProxyProtocolError} When only one address is given, an address is not an
 *   IP literal, a port is out of range, a TLV type or value is out of range, or the
 *   header would exceed 65535 bytes after the fixed part.
 */
export function encodeProxyV2(header: ProxyV2Header): Uint8Array {
  const { source, destination } = header;
  const tlvs = header.tlvs ?? [];
  if ((source === undefined) !== (destination === undefined)) {
    throw new ProxyProtocolError(
      "Cannot encode PROXY v2 header: give both source and destination, or neither",
    );
  }
  let family = 0x00;
  let addresses = new Uint8Array(0);
  if (source !== undefined && destination !== undefined) {
    const src = ipBytes(source.hostname);
    const dst = ipBytes(destination.hostname);
    checkPort(source.port);
    checkPort(destination.port);
    const v4 = src.length === 4 && dst.length === 4;
    const a = v4 ? src : toV6(src);
    const b = v4 ? dst : toV6(dst);
    family = v4 ? 0x11 : 0x21; // AF_INET or AF_INET6, over STREAM
    addresses = new Uint8Array(a.length * 2 + 4);
    addresses.set(a, 0);
    addresses.set(b, a.length);
    const view = new DataView(addresses.buffer);
    view.setUint16(a.length * 2, source.port);
    view.setUint16(a.length * 2 + 2, destination.port);
  }
  let payload = addresses.length;
  for (const tlv of tlvs) payload += 3 + checkTlv(tlv);
  if (payload > MAX_PAYLOAD) {
    throw new ProxyProtocolError(
      `Cannot encode PROXY v2 header: addresses and TLVs take ${payload} bytes, more than ${MAX_PAYLOAD}`,
    );
  }
  const out = new Uint8Array(HEADER_LENGTH + payload);
  const view = new DataView(out.buffer);
  out.set(PROXY_V2_SIGNATURE, 0);
  out[12] = header.command === "local" ? 0x20 : 0x21;
  out[13] = family;
  view.setUint16(14, payload);
  out.set(addresses, HEADER_LENGTH);
  let at = HEADER_LENGTH + addresses.length;
  for (const tlv of tlvs) {
    out[at] = tlv.type;
    view.setUint16(at + 1, tlv.value.length);
    out.set(tlv.value, at + 3);
    at += 3 + tlv.value.length;
  }
  return out;
}

/**
 * Parses a PROXY v2 header at the start of `bytes`.
 *
 * @example Usage
 * ```ts
 * import { encodeProxyV2, encodeSslTlv, parseProxyV2, PP2_CLIENT, PP2_TYPE } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const text = (s: string) => new TextEncoder().encode(s);
 * const header = encodeProxyV2({
 *   command: "proxy",
 *   source: { hostname: "2001:db8::10", port: 51000 },
 *   destination: { hostname: "2001:db8::1", port: 8443 },
 *   tlvs: [encodeSslTlv({
 *     client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN,
 *     verify: 0,
 *     tlvs: [{ type: PP2_TYPE.SSL_CN, value: text("alice") }],
 *   })],
 * });
 * const stream = new Uint8Array([...header, ...text("hello")]);
 * const parsed = parseProxyV2(stream)!;
 * assert.equal(parsed.header.source?.hostname, "2001:db8::10");
 * assert.equal(parsed.ssl?.verify, 0);
 * assert.equal(new TextDecoder().decode(stream.subarray(parsed.length)), "hello");
 * assert.equal(parseProxyV2(stream.subarray(0, 10)), undefined); // needs more bytes
 * ```
 *
 * @param bytes What the upstream has received so far.
 * @returns The header, its decoded SSL TLV and its length; `undefined` when the
 *   bytes so far are a valid beginning but the header is not complete yet.
 * @throws {ProxyProtocolError} When the bytes are not a PROXY v2 header (another
 *   signature, version, command, family or transport), or the addresses or TLVs do
 *   not fit the declared length.
 */
export function parseProxyV2(bytes: Uint8Array): ParsedProxyV2 | undefined {
  const prefix = Math.min(bytes.length, PROXY_V2_SIGNATURE.length);
  for (let i = 0; i < prefix; i++) {
    if (bytes[i] !== PROXY_V2_SIGNATURE[i]) {
      throw new ProxyProtocolError(
        "Cannot parse PROXY v2 header: the bytes do not start with the v2 signature",
      );
    }
  }
  if (bytes.length < HEADER_LENGTH) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const versionCommand = bytes[12]!;
  if (versionCommand >> 4 !== 2) {
    throw new ProxyProtocolError(
      `Cannot parse PROXY v2 header: version must be 2, received ${versionCommand >> 4}`,
    );
  }
  const commandBits = versionCommand & 0x0f;
  if (commandBits > 1) {
    throw new ProxyProtocolError(
      `Cannot parse PROXY v2 header: command must be LOCAL (0) or PROXY (1), received ${commandBits}`,
    );
  }
  const familyByte = bytes[13]!;
  const payload = view.getUint16(14);
  const length = HEADER_LENGTH + payload;
  if (bytes.length < length) return undefined;

  const command = commandBits === 0 ? "local" : "proxy";
  const header: ProxyV2Header & { tlvs: ProxyTlv[] } = { command, tlvs: [] };
  let at = HEADER_LENGTH;
  const family = familyByte >> 4;
  const transport = familyByte & 0x0f;
  if (family > 3 || transport > 2) {
    throw new ProxyProtocolError(
      `Cannot parse PROXY v2 header: unknown family and transport 0x${
        familyByte.toString(16).padStart(2, "0")
      }`,
    );
  }
  const size = family === 1 ? 4 : family === 2 ? 16 : family === 3 ? 108 : 0;
  const addressBytes = family === 3 ? 216 : size * 2 + (size === 0 ? 0 : 4);
  if (addressBytes > payload) {
    throw new ProxyProtocolError(
      `Cannot parse PROXY v2 header: ${addressBytes} address bytes do not fit the declared length ${payload}`,
    );
  }
  if (family === 1 || family === 2) {
    const text = family === 1 ? formatV4 : formatV6;
    header.source = {
      hostname: text(bytes.subarray(at, at + size)),
      port: view.getUint16(at + 2 * size),
    };
    header.destination = {
      hostname: text(bytes.subarray(at + size, at + 2 * size)),
      port: view.getUint16(at + 2 * size + 2),
    };
  }
  at += addressBytes;
  header.tlvs = parseTlvs(bytes.subarray(at, length), "TLV");
  const sslTlv = header.tlvs.find((tlv) => tlv.type === PP2_TYPE.SSL);
  const parsed: ParsedProxyV2 = { header, length };
  if (sslTlv !== undefined) parsed.ssl = decodeSslTlv(sslTlv.value);
  return parsed;
}

/**
 * Builds a `PP2_TYPE_SSL` TLV.
 *
 * @example Usage
 * ```ts
 * import { decodeSslTlv, encodeSslTlv, PP2_CLIENT, PP2_TYPE } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const tlv = encodeSslTlv({ client: PP2_CLIENT.SSL, verify: 0, tlvs: [] });
 * assert.equal(tlv.type, PP2_TYPE.SSL);
 * assert.deepEqual(decodeSslTlv(tlv.value), { client: PP2_CLIENT.SSL, verify: 0, tlvs: [] });
 * ```
 *
 * @param ssl Client flags, verify result and sub-TLVs.
 * @returns The TLV.
 * @throws {ProxyProtocolError} When a value is out of range.
 */
export function encodeSslTlv(ssl: ProxySsl): ProxyTlv {
  if (!(Number.isInteger(ssl.client) && ssl.client >= 0 && ssl.client <= 0xff)) {
    throw new ProxyProtocolError(
      `Cannot encode PROXY v2 SSL TLV: client flags must be a byte, received ${ssl.client}`,
    );
  }
  if (!(Number.isInteger(ssl.verify) && ssl.verify >= 0 && ssl.verify <= 0xffffffff)) {
    throw new ProxyProtocolError(
      `Cannot encode PROXY v2 SSL TLV: verify must be an unsigned 32-bit integer, received ${ssl.verify}`,
    );
  }
  let size = 5;
  for (const tlv of ssl.tlvs) size += 3 + checkTlv(tlv);
  const value = new Uint8Array(size);
  const view = new DataView(value.buffer);
  value[0] = ssl.client;
  view.setUint32(1, ssl.verify);
  let at = 5;
  for (const tlv of ssl.tlvs) {
    value[at] = tlv.type;
    view.setUint16(at + 1, tlv.value.length);
    value.set(tlv.value, at + 3);
    at += 3 + tlv.value.length;
  }
  return { type: PP2_TYPE.SSL, value };
}

/**
 * Decodes the value of a `PP2_TYPE_SSL` TLV.
 *
 * @example Usage
 * ```ts
 * import { decodeSslTlv } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(decodeSslTlv(Uint8Array.of(1, 0, 0, 0, 0)), { client: 1, verify: 0, tlvs: [] });
 * ```
 *
 * @param value The TLV's value.
 * @returns Client flags, verify result and sub-TLVs.
 * @throws {ProxyProtocolError} When the value is shorter than 5 bytes or a sub-TLV
 *   overruns it.
 */
export function decodeSslTlv(value: Uint8Array): ProxySsl {
  if (value.length < 5) {
    throw new ProxyProtocolError(
      `Cannot parse PROXY v2 SSL TLV: expected at least 5 bytes, received ${value.length}`,
    );
  }
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  return {
    client: value[0]!,
    verify: view.getUint32(1),
    tlvs: parseTlvs(value.subarray(5), "SSL sub-TLV"),
  };
}

/**
 * Encodes text as a TLV value (UTF-8).
 *
 * @example Usage
 * ```ts
 * import { PP2_TYPE, textTlv } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(textTlv(PP2_TYPE.AUTHORITY, "db"), {
 *   type: 0x02,
 *   value: new TextEncoder().encode("db"),
 * });
 * ```
 *
 * @param type The TLV type.
 * @param text The value.
 * @returns The TLV.
 */
export function textTlv(type: number, text: string): ProxyTlv {
  return { type, value: encoder.encode(text) };
}

/**
 * Decodes the value of the first TLV of `type` as UTF-8 text.
 *
 * @example Usage
 * ```ts
 * import { PP2_TYPE, textTlv, tlvText } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const tlvs = [textTlv(PP2_TYPE.MTLB_CLIENT, "alice")];
 * assert.equal(tlvText(tlvs, PP2_TYPE.MTLB_CLIENT), "alice");
 * assert.equal(tlvText(tlvs, PP2_TYPE.AUTHORITY), undefined);
 * ```
 *
 * @param tlvs TLVs, as in a parsed header or SSL TLV.
 * @param type The TLV type.
 * @returns The text, or `undefined` when no TLV has that type.
 * @throws {ProxyProtocolError} When the value is not valid UTF-8.
 */
export function tlvText(tlvs: readonly ProxyTlv[], type: number): string | undefined {
  const tlv = tlvs.find((t) => t.type === type);
  if (tlv === undefined) return undefined;
  try {
    return decoder.decode(tlv.value);
  } catch (error) {
    throw new ProxyProtocolError(
      `Cannot read PROXY v2 TLV 0x${type.toString(16)}: not valid UTF-8`,
      { cause: error },
    );
  }
}

function parseTlvs(bytes: Uint8Array, what: string): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  for (let at = 0; at < bytes.length;) {
    if (at + 3 > bytes.length) {
      throw new ProxyProtocolError(
        `Cannot parse PROXY v2 ${what}: ${bytes.length - at} trailing bytes are not a TLV`,
      );
    }
    const type = bytes[at]!;
    const size = (bytes[at + 1]! << 8) | bytes[at + 2]!;
    if (at + 3 + size > bytes.length) {
      throw new ProxyProtocolError(
        `Cannot parse PROXY v2 ${what}: type 0x${
          type.toString(16).padStart(2, "0")
        } declares ${size} bytes, only ${bytes.length - at - 3} left`,
      );
    }
    tlvs.push({ type, value: bytes.slice(at + 3, at + 3 + size) });
    at += 3 + size;
  }
  return tlvs;
}

function checkTlv(tlv: ProxyTlv): number {
  if (!(Number.isInteger(tlv.type) && tlv.type >= 0 && tlv.type <= 0xff)) {
    throw new ProxyProtocolError(
      `Cannot encode PROXY v2 TLV: type must be a byte, received ${tlv.type}`,
    );
  }
  if (tlv.value.length > MAX_PAYLOAD) {
    throw new ProxyProtocolError(
      `Cannot encode PROXY v2 TLV 0x${
        tlv.type.toString(16)
      }: value must be at most ${MAX_PAYLOAD} bytes, received ${tlv.value.length}`,
    );
  }
  return tlv.value.length;
}

function checkPort(port: number): void {
  if (!(Number.isInteger(port) && port >= 0 && port <= 0xffff)) {
    throw new ProxyProtocolError(
      `Cannot encode PROXY v2 header: port must be 0 to 65535, received ${port}`,
    );
  }
}

/** 4 bytes for IPv4 and IPv4-mapped IPv6, 16 for other IPv6. */
function ipBytes(hostname: string): Uint8Array {
  const host = hostname.replace(/%.*$/, ""); // a zone ID (fe80::1%eth0) is local detail
  const kind = isIP(host);
  if (kind === 4) return Uint8Array.from(host.split("."), Number);
  if (kind === 6) {
    const v6 = parseV6(host);
    const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff &&
      v6[11] === 0xff;
    return mapped ? v6.slice(12) : v6;
  }
  throw new ProxyProtocolError(
    `Cannot encode PROXY v2 header: address must be an IP literal, received ${
      JSON.stringify(hostname)
    }`,
  );
}

function toV6(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16) return bytes;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(bytes, 12);
  return out;
}

/** Parses an IPv6 literal that `isIP` accepted (`::` compression, dotted IPv4 tail). */
function parseV6(text: string): Uint8Array {
  let tail: number[] = [];
  let body = text;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted !== null) {
    const [a, b, c, d] = dotted[1]!.split(".").map(Number) as [number, number, number, number];
    tail = [(a << 8) | b, (c << 8) | d];
    body = text.slice(0, dotted.index);
    if (body.endsWith(":") && !body.endsWith("::")) body = body.slice(0, -1);
  }
  const [head, rest] = body.includes("::") ? body.split("::") as [string, string] : [body, ""];
  const groups = (part: string): number[] =>
    part === "" ? [] : part.split(":").map((g) => parseInt(g, 16));
  const left = groups(head);
  const right = [...groups(rest), ...tail];
  const words = body.includes("::")
    ? [...left, ...new Array(8 - left.length - right.length).fill(0), ...right]
    : [...left, ...tail];
  const out = new Uint8Array(16);
  words.forEach((word, i) => {
    out[2 * i] = word >> 8;
    out[2 * i + 1] = word & 0xff;
  });
  return out;
}

function formatV4(bytes: Uint8Array): string {
  return Array.from(bytes).join(".");
}

/** RFC 5952 text: lowercase, longest run of zero groups as `::`, mapped IPv4 dotted. */
function formatV6(bytes: Uint8Array): string {
  const words = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${formatV4(bytes.subarray(12))}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}
