/**
 * Issuing certificate revocation lists, for tests and development PKIs:
 * {@linkcode createCrl} writes a CRL signed by a {@linkcode CertificateAuthority}, as
 * OpenSSL would, for `[tls] crl`. (Checking CRLs is `RevocationList`'s, in
 * `lib/identity/`, which loads no X.509 library.)
 *
 * @module
 */
import "reflect-metadata";
import {
  AuthorityKeyIdentifierExtension,
  type Extension,
  PemConverter,
  X509Certificate as PeculiarCertificate,
  X509CrlGenerator,
} from "@peculiar/x509";
import { normalizeHex } from "../identity/certificate.ts";
import type { CertificateAuthority } from "./certificate_authority.ts";
import { signingAlgorithmOf } from "./key_algorithms.ts";

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;

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
  /**
   * Whether to write an authority key identifier (the SHA-1 of the CA's key, as the
   * CA's own subject key identifier), which ties the CRL to one of two CAs of the same
   * name without trying both keys.
   *
   * @default {true}
   */
  authorityKeyIdentifier?: boolean;
}

/**
 * Issues a CRL signed by `ca` (with the algorithm its key signs certificates with), as PEM (`-----BEGIN X509 CRL-----`,
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
  const extensions: Extension[] = [];
  if (options.authorityKeyIdentifier ?? true) {
    extensions.push(await AuthorityKeyIdentifierExtension.create(ca.keys.publicKey));
  }
  const crl = await X509CrlGenerator.create({
    issuer: new PeculiarCertificate(ca.certPem).subjectName, // the CA's own encoding
    thisUpdate,
    nextUpdate,
    entries: revoked.map((serial) => {
      const hex = normalizeHex(serial);
      return { serialNumber: hex.length % 2 === 0 ? hex : `0${hex}`, revocationDate };
    }),
    extensions,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(ca.keys.privateKey),
  });
  return `${PemConverter.encode(crl.rawData, "X509 CRL")}\n`;
}
