/**
 * Certificate authorities for tests and development: a self-signed root
 * ({@linkcode createCa}), an intermediate ({@linkcode createIntermediateCa}), or a CA
 * read back from its PEM files ({@linkcode loadCertificateAuthority}), generated
 * in-process with WebCrypto and `@peculiar/x509` as certificates that `node:tls`,
 * OpenSSL and rustls accept. Nothing here revokes (see `createCrl`), and a real
 * deployment should use its own CA.
 *
 * @module
 */
import "reflect-metadata";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  type Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  type Name,
  PemConverter,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { normalizeHex } from "../identity/certificate.ts";
import { CA_LIFETIME_MS, serialFor, subjectName, validity } from "./_certificate_fields.ts";
import {
  generateKeys,
  type KeyAlgorithmName,
  privateKeyPem,
  signingAlgorithmOf,
} from "./key_algorithms.ts";

/** A certificate authority that can sign certificates: a root or an intermediate. */
export interface CertificateAuthority {
  /** The CA certificate, PEM. */
  certPem: string;
  /** The CA private key, PKCS#8 PEM. */
  keyPem: string;
  /** The CA certificate, DER. */
  der: Uint8Array;
  /** The CA key pair (the private key signs what this CA issues). */
  keys: CryptoKeyPair;
  /**
   * The intermediate certificates a leaf issued by this CA must send after its own,
   * PEM, nearest first: empty for a root, this certificate (then its issuers' chain)
   * for an intermediate.
   */
  intermediatesPem: string;
  /** Serial number, canonical hex (see {@linkcode normalizeHex}). */
  serial: string;
}

/** Options for {@linkcode createCa} and {@linkcode createIntermediateCa}. */
export interface CreateCaOptions {
  /** Subject common name, 1 to 64 characters. */
  commonName: string;
  /**
   * The CA's key type.
   *
   * @default {"P-256"}
   */
  keyAlgorithm?: KeyAlgorithmName;
  /**
   * Whether to write a subject key identifier (and, for an intermediate, an authority
   * key identifier). Without them, certificates of two CAs of one name can only be
   * told apart by their signatures.
   *
   * @default {true}
   */
  keyIdentifiers?: boolean;
  /**
   * Start of validity.
   *
   * @default {5 minutes before now}
   */
  notBefore?: Date;
  /**
   * End of validity.
   *
   * @default {3650 days after `notBefore`}
   */
  notAfter?: Date;
  /**
   * Serial number, hex in any form {@linkcode normalizeHex} accepts; positive, at most 20 octets.
   *
   * @default {16 random bytes}
   */
  serialNumber?: string;
}

/**
 * Creates a self-signed root CA: basicConstraints `cA` (critical), keyUsage
 * keyCertSign and cRLSign (critical), and a subject key identifier.
 *
 * @example Usage
 * ```ts
 * import { createCa } from "@mtlb/mtlb";
 * import { identityFromCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * assert.equal(identityFromCertificate(ca.der).cn, "Example CA");
 * assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----/);
 * ```
 *
 * @param options Subject, validity and serial.
 * @returns The CA certificate, key and parsed forms.
 * @throws {TypeError} When `commonName` is empty or a serial is not hex.
 * @throws {RangeError} When `commonName` is too long, validity ends before it starts, or the serial is zero or too long.
 */
export async function createCa(options: CreateCaOptions): Promise<CertificateAuthority> {
  const { notBefore, notAfter } = validity(options, CA_LIFETIME_MS);
  const name = subjectName(options.commonName);
  const keys = await generateKeys(options.keyAlgorithm);
  const extensions: Extension[] = [
    new BasicConstraintsExtension(true, undefined, true),
    new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
  ];
  if (options.keyIdentifiers ?? true) {
    extensions.push(await SubjectKeyIdentifierExtension.create(keys.publicKey));
  }
  const cert = await X509CertificateGenerator.create({
    serialNumber: serialFor(options.serialNumber),
    subject: name,
    issuer: name,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(keys.privateKey),
    extensions,
  });
  return await authority(cert, keys, undefined);
}

/**
 * Creates an intermediate CA signed by `issuer`, with pathLenConstraint 0 so it can
 * only issue leaves. A leaf it issues carries it in {@linkcode IssuedCertificate.chainPem}.
 *
 * @example Usage
 * ```ts
 * import { createCa, createIntermediateCa, issueCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const root = await createCa({ commonName: "Root" });
 * const intermediate = await createIntermediateCa(root, { commonName: "Intermediate" });
 * const leaf = await issueCertificate(intermediate, { commonName: "svc", kind: "client" });
 * assert.equal(leaf.chainPem, leaf.certPem + intermediate.certPem);
 * ```
 *
 * @param issuer The CA that signs the intermediate.
 * @param options Subject, validity and serial.
 * @returns The intermediate CA.
 * @throws {TypeError} When `commonName` is empty or a serial is not hex.
 * @throws {RangeError} When `commonName` is too long, validity ends before it starts, or the serial is zero or too long.
 */
export async function createIntermediateCa(
  issuer: CertificateAuthority,
  options: CreateCaOptions,
): Promise<CertificateAuthority> {
  const { notBefore, notAfter } = validity(options, CA_LIFETIME_MS);
  const keys = await generateKeys(options.keyAlgorithm);
  const extensions: Extension[] = [
    new BasicConstraintsExtension(true, 0, true),
    new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
  ];
  if (options.keyIdentifiers ?? true) {
    extensions.push(
      await SubjectKeyIdentifierExtension.create(keys.publicKey),
      await AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
    );
  }
  const cert = await X509CertificateGenerator.create({
    serialNumber: serialFor(options.serialNumber),
    subject: subjectName(options.commonName),
    issuer: subjectOf(issuer),
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(issuer.keys.privateKey),
    extensions,
  });
  return await authority(cert, keys, issuer);
}

/**
 * Reads a CA certificate and its private key (PKCS#8 PEM, unencrypted) into a
 * {@linkcode CertificateAuthority} that can issue certificates. The key's type is
 * taken from the certificate's public key (an RSA key signs with PKCS#1 v1.5). For
 * an intermediate, `intermediatesPem` holds the certificate alone: its own issuers
 * are not known.
 *
 * @example Usage
 * ```ts
 * import { createCa, issueCertificate, loadCertificateAuthority } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const original = await createCa({ commonName: "Example CA" });
 * const loaded = await loadCertificateAuthority(original.certPem, original.keyPem);
 * assert.equal(loaded.serial, original.serial);
 * const leaf = await issueCertificate(loaded, { commonName: "dave", kind: "client" });
 * assert.equal(leaf.chainPem, leaf.certPem);
 * ```
 *
 * @param certPem The CA certificate, PEM (the first certificate is used).
 * @param keyPem Its private key, PKCS#8 PEM.
 * @returns The CA.
 * @throws {TypeError} When the certificate cannot be parsed or is not a CA, the key
 *   cannot be read, or the key does not belong to the certificate.
 */
export async function loadCertificateAuthority(
  certPem: string,
  keyPem: string,
): Promise<CertificateAuthority> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (error) {
    throw new TypeError("Cannot load CA: the certificate is not a PEM X.509 certificate", {
      cause: error,
    });
  }
  if (cert.getExtension(BasicConstraintsExtension)?.ca !== true) {
    throw new TypeError(`Cannot load CA: "${cert.subject}" is not a CA certificate`);
  }
  const publicKey = await cert.publicKey.export();
  let privateKey: CryptoKey;
  try {
    const der = PemConverter.decodeFirst(keyPem);
    privateKey = await crypto.subtle.importKey("pkcs8", der, publicKey.algorithm, true, ["sign"]);
  } catch (error) {
    throw new TypeError(
      `Cannot load CA: the key is not an unencrypted PKCS#8 PEM ${publicKey.algorithm.name} private key`,
      { cause: error },
    );
  }
  const keys = { publicKey, privateKey };
  const proof = crypto.getRandomValues(new Uint8Array(32));
  const params = signingAlgorithmOf(privateKey);
  const signature = await crypto.subtle.sign(params, privateKey, proof);
  if (!(await crypto.subtle.verify(params, publicKey, signature, proof))) {
    throw new TypeError(`Cannot load CA: the key does not belong to "${cert.subject}"`);
  }
  const pem = `${cert.toString("pem")}\n`;
  const selfSigned = await cert.isSelfSigned();
  return {
    certPem: pem,
    keyPem: await privateKeyPem(privateKey),
    der: new Uint8Array(cert.rawData),
    keys,
    intermediatesPem: selfSigned ? "" : pem,
    serial: normalizeHex(cert.serialNumber),
  };
}

async function authority(
  cert: X509Certificate,
  keys: CryptoKeyPair,
  issuer: CertificateAuthority | undefined,
): Promise<CertificateAuthority> {
  const certPem = `${cert.toString("pem")}\n`;
  return {
    certPem,
    keyPem: await privateKeyPem(keys.privateKey),
    der: new Uint8Array(cert.rawData),
    keys,
    intermediatesPem: issuer === undefined ? "" : certPem + issuer.intermediatesPem,
    serial: normalizeHex(cert.serialNumber),
  };
}

/**
 * The subject of a CA's certificate, as the issuer name of what it signs (the CA's
 * own encoding).
 *
 * @param ca The CA.
 * @returns Its subject Name.
 */
export function subjectOf(ca: CertificateAuthority): Name {
  return new X509Certificate(ca.certPem).subjectName;
}
