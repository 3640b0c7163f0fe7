/**
 * TLS server and client certificates for tests and development, signed by a
 * {@linkcode CertificateAuthority}: {@linkcode issueCertificate}.
 *
 * @module
 */
import "reflect-metadata";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  type Extension,
  type JsonGeneralName,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import { normalizeHex } from "../identity/certificate.ts";
import { LEAF_LIFETIME_MS, serialFor, subjectName, validity } from "./_certificate_fields.ts";
import { type CertificateAuthority, subjectOf } from "./certificate_authority.ts";
import {
  generateKeys,
  type KeyAlgorithmName,
  privateKeyPem,
  signingAlgorithmOf,
} from "./key_algorithms.ts";

/** An extended key usage a certificate may carry. */
export type ExtendedKeyUsageName = "serverAuth" | "clientAuth";

/** Options for {@linkcode issueCertificate}. */
export interface IssueCertificateOptions {
  /** Subject common name, 1 to 64 characters. */
  commonName: string;
  /** A TLS server or a TLS client certificate: decides the default EKU and SANs. */
  kind: "server" | "client";
  /**
   * The certificate's key type.
   *
   * @default {"P-256"}
   */
  keyAlgorithm?: KeyAlgorithmName;
  /**
   * Whether to write subject and authority key identifiers.
   *
   * @default {true}
   */
  keyIdentifiers?: boolean;
  /**
   * DNS subject alternative names.
   *
   * @default {["localhost"] for a server, [] for a client}
   */
  dnsNames?: readonly string[];
  /**
   * IP address subject alternative names, IPv4 or IPv6.
   *
   * @default {["127.0.0.1", "::1"] for a server, [] for a client}
   */
  ipAddresses?: readonly string[];
  /**
   * URI subject alternative names, such as a SPIFFE ID.
   *
   * @default {[]}
   */
  uris?: readonly string[];
  /**
   * Serial number, hex in any form {@linkcode normalizeHex} accepts; positive, at most 20 octets.
   *
   * @default {16 random bytes}
   */
  serialNumber?: string;
  /**
   * Start of validity.
   *
   * @default {5 minutes before now}
   */
  notBefore?: Date;
  /**
   * End of validity.
   *
   * @default {365 days after `notBefore`}
   */
  notAfter?: Date;
  /**
   * Replaces the extended key usages implied by `kind`, e.g. `["serverAuth"]` on a
   * client certificate to test that a server refuses it. An empty list omits the
   * extension (which TLS stacks read as "any usage").
   *
   * @default {["serverAuth"] for a server, ["clientAuth"] for a client}
   */
  extendedKeyUsage?: readonly ExtendedKeyUsageName[];
}

/** A leaf certificate and its key, as {@linkcode issueCertificate} returns them. */
export interface IssuedCertificate {
  /** The certificate, PEM. */
  certPem: string;
  /** The private key, PKCS#8 PEM. */
  keyPem: string;
  /**
   * What a peer should send: this certificate followed by the issuer's intermediates,
   * PEM. Equal to `certPem` when a root issued it.
   */
  chainPem: string;
  /** The certificate, DER (what `getPeerCertificate(true).raw` gives for it). */
  der: Uint8Array;
  /** The key pair. */
  keys: CryptoKeyPair;
  /** Serial number, canonical hex (see {@linkcode normalizeHex}). */
  serial: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, 64 lowercase hex digits. */
  spkiSha256: string;
}

/**
 * Issues a TLS server or client certificate signed by `ca`: basicConstraints not a
 * CA (critical), keyUsage digitalSignature (critical), the EKU for `kind`, subject
 * alternative names, and subject and authority key identifiers.
 *
 * @example Usage
 * ```ts
 * import { createCa, issueCertificate } from "@mtlb/mtlb";
 * import { identityFromCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const server = await issueCertificate(ca, { commonName: "localhost", kind: "server" });
 * const alice = await issueCertificate(ca, {
 *   commonName: "alice",
 *   kind: "client",
 *   uris: ["spiffe://example.org/alice"],
 *   serialNumber: "0A:1B",
 * });
 * assert.deepEqual(identityFromCertificate(server.der).sanDns, ["localhost"]);
 * assert.equal(alice.serial, "a1b");
 * assert.match(alice.spkiSha256, /^[0-9a-f]{64}$/);
 * ```
 *
 * @param ca The issuing CA, root or intermediate.
 * @param options Subject, kind, names, validity, serial and EKU.
 * @returns The certificate, its key, the chain to send, serial and SPKI digest.
 * @throws {TypeError} When `commonName` is empty, a serial is not hex, an IP address or URI is malformed, or a DNS name is empty.
 * @throws {RangeError} When `commonName` is too long, validity ends before it starts, or the serial is zero or too long.
 */
export async function issueCertificate(
  ca: CertificateAuthority,
  options: IssueCertificateOptions,
): Promise<IssuedCertificate> {
  const server = options.kind === "server";
  if (!server && options.kind !== "client") {
    throw new TypeError(
      `Cannot issue certificate: "kind" must be "server" or "client", received ${
        JSON.stringify(options.kind)
      }`,
    );
  }
  const { notBefore, notAfter } = validity(options, LEAF_LIFETIME_MS);
  const names = subjectAltNames(
    options.dnsNames ?? (server ? ["localhost"] : []),
    options.ipAddresses ?? (server ? ["127.0.0.1", "::1"] : []),
    options.uris ?? [],
  );
  const usages = options.extendedKeyUsage ?? [server ? "serverAuth" : "clientAuth"];
  const keys = await generateKeys(options.keyAlgorithm);
  const extensions: Extension[] = [
    new BasicConstraintsExtension(false, undefined, true),
    new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
  ];
  if (options.keyIdentifiers ?? true) {
    extensions.push(
      await SubjectKeyIdentifierExtension.create(keys.publicKey),
      await AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    );
  }
  if (usages.length > 0) {
    extensions.push(new ExtendedKeyUsageExtension(usages.map((u) => ekuOid(u))));
  }
  // RFC 5280: a subject with a non-empty name keeps the SAN extension non-critical.
  if (names.length > 0) extensions.push(new SubjectAlternativeNameExtension(names));
  const cert = await X509CertificateGenerator.create({
    serialNumber: serialFor(options.serialNumber),
    subject: subjectName(options.commonName),
    issuer: subjectOf(ca),
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(ca.keys.privateKey),
    extensions,
  });
  const certPem = `${cert.toString("pem")}\n`;
  return {
    certPem,
    keyPem: await privateKeyPem(keys.privateKey),
    chainPem: certPem + ca.intermediatesPem,
    der: new Uint8Array(cert.rawData),
    keys,
    serial: normalizeHex(cert.serialNumber),
    spkiSha256: createHash("sha256").update(new Uint8Array(cert.publicKey.rawData)).digest("hex"),
  };
}

function subjectAltNames(
  dnsNames: readonly string[],
  ipAddresses: readonly string[],
  uris: readonly string[],
): JsonGeneralName[] {
  const names: JsonGeneralName[] = [];
  for (const dns of dnsNames) {
    if (typeof dns !== "string" || dns.length === 0) {
      throw new TypeError("Cannot create certificate: DNS names must be non-empty strings");
    }
    names.push({ type: "dns", value: dns });
  }
  for (const ip of ipAddresses) {
    if (isIP(ip) === 0) {
      throw new TypeError(`Cannot create certificate: "${ip}" is not an IP address`);
    }
    names.push({ type: "ip", value: ip });
  }
  for (const uri of uris) {
    if (!URL.canParse(uri)) {
      throw new TypeError(`Cannot create certificate: "${uri}" is not an absolute URI`);
    }
    names.push({ type: "url", value: uri });
  }
  return names;
}

function ekuOid(usage: ExtendedKeyUsageName): string {
  switch (usage) {
    case "serverAuth":
      return ExtendedKeyUsage.serverAuth;
    case "clientAuth":
      return ExtendedKeyUsage.clientAuth;
    default:
      throw new TypeError(
        `Cannot create certificate: extended key usage must be "serverAuth" or "clientAuth", received ${
          JSON.stringify(usage)
        }`,
      );
  }
}
