/**
 * The fields every generated certificate shares: its subject (one common name), its
 * validity (backdated a little by default) and its serial number (random, positive
 * and 16 bytes long unless given).
 *
 * @module
 */
import "reflect-metadata";
import { Name } from "@peculiar/x509";
import { normalizeHex } from "../identity/certificate.ts";

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;
/** How far `notBefore` is backdated by default, so a peer whose clock lags still accepts. */
const BACKDATE_MS = 5 * MINUTE_MS;
export const CA_LIFETIME_MS = 3650 * DAY_MS;
export const LEAF_LIFETIME_MS = 365 * DAY_MS;
/** RFC 5280, section 4.1.2.2: a serial number takes at most 20 octets. */
const MAX_SERIAL_OCTETS = 20;
/** X.520 upper bound for a common name. */
export const MAX_COMMON_NAME = 64;

/**
 * The subject of a generated certificate: one common name, a UTF8String.
 *
 * @param commonName 1 to {@linkcode MAX_COMMON_NAME} characters.
 * @returns The Name.
 * @throws {TypeError} When `commonName` is empty or not a string.
 * @throws {RangeError} When `commonName` is too long.
 */
export function subjectName(commonName: string): Name {
  if (typeof commonName !== "string" || commonName.length === 0) {
    throw new TypeError('Cannot create certificate: "commonName" must be a non-empty string');
  }
  if (commonName.length > MAX_COMMON_NAME) {
    throw new RangeError(
      `Cannot create certificate: "commonName" must be at most ${MAX_COMMON_NAME} characters, received ${commonName.length}`,
    );
  }
  // An explicit UTF8String keeps commas, quotes and the like literal (no RFC 4514 parsing).
  return new Name([{ CN: [{ utf8String: commonName }] }]);
}

/**
 * The validity of a certificate: `notBefore` defaults to a little before now,
 * `notAfter` to `lifetimeMs` after `notBefore`.
 *
 * @param options The dates given.
 * @param lifetimeMs The default lifetime.
 * @returns Both dates.
 * @throws {RangeError} When validity ends before it starts.
 */
export function validity(
  options: { notBefore?: Date; notAfter?: Date },
  lifetimeMs: number,
): { notBefore: Date; notAfter: Date } {
  const notBefore = options.notBefore ?? new Date(Date.now() - BACKDATE_MS);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + lifetimeMs);
  if (!(notBefore.getTime() < notAfter.getTime())) {
    throw new RangeError(
      `Cannot create certificate: "notAfter" must be later than "notBefore", received ${notBefore.toISOString()} to ${notAfter.toISOString()}`,
    );
  }
  return { notBefore, notAfter };
}

/** Returns an even-length hex serial for `@peculiar/x509`, which strips leading zero octets and adds the sign octet. */

export function serialFor(serialNumber: string | undefined): string {
  if (serialNumber === undefined) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    // 0x40..0x7f in the first octet: positive, and exactly 16 octets once encoded.
    bytes[0] = (bytes[0]! & 0x3f) | 0x40;
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  const hex = normalizeHex(serialNumber);
  if (hex === "0") {
    throw new RangeError("Cannot create certificate: serial number must be positive, received 0");
  }
  const even = hex.length % 2 === 0 ? hex : `0${hex}`;
  const octets = even.length / 2 + (parseInt(even.slice(0, 2), 16) > 0x7f ? 1 : 0);
  if (octets > MAX_SERIAL_OCTETS) {
    throw new RangeError(
      `Cannot create certificate: serial number must fit ${MAX_SERIAL_OCTETS} octets, received ${octets}`,
    );
  }
  return even;
}
