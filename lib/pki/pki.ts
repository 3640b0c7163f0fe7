/**
 * A development PKI: a CA, an optional intermediate, server and client certificates,
 * generated in-process with WebCrypto and `@peculiar/x509`, written as PEM files that
 * `node:tls`, OpenSSL and rustls accept.
 *
 * Keys are ECDSA P-256 by default (P-384, RSA and Ed25519 on request, for tests of
 * signature algorithms) and each certificate is signed with its issuer's key
 * (ECDSA-SHA256 for P-256). The original
 * design asked for secp256k1, but TLS 1.3 (RFC 8446, section 4.2.3) defines no
 * signature scheme for that curve, so no TLS 1.3 stack will use such a certificate;
 * P-256 (`ecdsa_secp256r1_sha256`) is the curve every TLS 1.3 implementation must support.
 *
 * Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Serial numbers are
 * random, positive and 16 bytes long unless given. This is for development and tests:
 * the keys never leave the process or the directory they are written to, nothing here
 * revokes, and a real deployment should use its own CA.
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
  Name,
  PemConverter,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import { join } from "node:path";
import { normalizeHex } from "../identity/certificate.ts";

/** The WebCrypto parameters of each {@linkcode KeyAlgorithmName}. */
const KEY_ALGORITHMS: Record<
  KeyAlgorithmName,
  AlgorithmIdentifier | RsaHashedKeyGenParams | EcKeyGenParams
> = {
  "P-256": { name: "ECDSA", namedCurve: "P-256" },
  "P-384": { name: "ECDSA", namedCurve: "P-384" },
  "RSA": {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  },
  "RSA-PSS": {
    name: "RSA-PSS",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  },
  "Ed25519": { name: "Ed25519" },
};
const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;
/** How far `notBefore` is backdated by default, so a peer whose clock lags still accepts. */
const BACKDATE_MS = 5 * MINUTE_MS;
const CA_LIFETIME_MS = 3650 * DAY_MS;
const LEAF_LIFETIME_MS = 365 * DAY_MS;
/** RFC 5280, section 4.1.2.2: a serial number takes at most 20 octets. */
const MAX_SERIAL_OCTETS = 20;
/** X.520 upper bound for a common name. */
const MAX_COMMON_NAME = 64;

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

/**
 * The key type of a generated certificate, which also decides how it signs what it
 * issues: ECDSA P-256 with SHA-256, P-384 with SHA-384, RSA-2048 PKCS#1 v1.5 with
 * SHA-256, RSA-2048 PSS with SHA-256 (salt 32), or Ed25519.
 */
export type KeyAlgorithmName = "P-256" | "P-384" | "RSA" | "RSA-PSS" | "Ed25519";

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

/** Options for {@linkcode writeDevPki}. */
export interface WriteDevPkiOptions {
  /**
   * Client names: each gets `<name>.crt` and `<name>.key` with common name `<name>`.
   * Letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 64
   * characters; not `ca`, `server`, `foreign-ca` or `intruder`.
   */
  clients: readonly string[];
  /**
   * Replace existing files. Without it nothing is written when any target exists,
   * so an existing CA key is never clobbered by accident.
   *
   * @default {false}
   */
  overwrite?: boolean;
  /**
   * The names the server certificate is for: IP addresses become IP address subject
   * alternative names, everything else DNS names (a wildcard `*.example.com` included).
   * A client that checks host names accepts the server only under one of them, so list
   * every name clients connect by, the group names they send as SNI included.
   *
   * @default {["localhost", "127.0.0.1", "::1"]}
   */
  serverNames?: readonly string[];
}

/** One client written by {@linkcode writeDevPki}. */
export interface DevPkiClient {
  /** The client name, also its certificate's common name. */
  name: string;
  /** Path of the certificate. */
  cert: string;
  /** Path of the private key. */
  key: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, 64 lowercase hex digits, for a policy file. */
  spkiSha256: string;
  /** Serial number, canonical hex, for a policy file. */
  serial: string;
}

/** What {@linkcode writeDevPki} wrote, with paths joined onto its `dir`. */
export interface DevPkiSummary {
  /** The directory written to. */
  dir: string;
  /** The CA certificate (`ca.crt`): the server's client CA bundle and the clients' trust anchor. */
  caCert: string;
  /** The CA private key (`ca.key`). */
  caKey: string;
  /** The server certificate (`server.crt`), for `serverNames`. */
  serverCert: string;
  /** The server private key (`server.key`). */
  serverKey: string;
  /** The names the server certificate is for, in the order given, duplicates removed. */
  serverNames: string[];
  /** A CA the server does not trust (`foreign-ca.crt`); its key is not kept. */
  foreignCaCert: string;
  /** A client certificate signed by the foreign CA (`intruder.crt`), which the server must refuse. */
  intruderCert: string;
  /** The intruder's private key (`intruder.key`). */
  intruderKey: string;
  /** The clients, in the order given. */
  clients: DevPkiClient[];
}

const RESERVED_NAMES = new Set(["ca", "server", "foreign-ca", "intruder"]);
const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const DEFAULT_SERVER_NAMES = ["localhost", "127.0.0.1", "::1"];
/** A DNS name of a server certificate: labels of letters, digits, "-" and "_", a leading "*" label allowed. */
const SERVER_DNS_NAME =
  /^(?:\*\.)?[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$/;

function checkClientNames(clients: readonly string[], what: string): void {
  const seen = new Set<string>();
  for (const name of clients) {
    if (typeof name !== "string" || !CLIENT_NAME.test(name)) {
      throw new TypeError(
        `Cannot ${what}: client name must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit, received ${
          JSON.stringify(name)
        }`,
      );
    }
    if (RESERVED_NAMES.has(name.toLowerCase())) {
      throw new TypeError(`Cannot ${what}: client name "${name}" is reserved`);
    }
    if (seen.has(name.toLowerCase())) {
      throw new TypeError(`Cannot ${what}: client name "${name}" is repeated`);
    }
    seen.add(name.toLowerCase());
  }
}

/** Server names split into DNS names (lower case) and IP addresses, duplicates removed. */
function splitServerNames(
  names: readonly string[],
): { all: string[]; dns: string[]; ips: string[] } {
  const all: string[] = [];
  for (const raw of names) {
    if (typeof raw !== "string" || raw === "") {
      throw new TypeError("Cannot write development PKI: a server name must be a non-empty string");
    }
    const ip = raw.replace(/^\[(.*)\]$/, "$1");
    const name = isIP(ip) === 0 ? raw.toLowerCase() : ip;
    if (isIP(name) === 0 && (name.length > 253 || !SERVER_DNS_NAME.test(name))) {
      throw new TypeError(
        `Cannot write development PKI: server name ${
          JSON.stringify(raw)
        } is neither an IP address nor a DNS name (labels of letters, digits and "-", "*." allowed first)`,
      );
    }
    if (!all.includes(name)) all.push(name);
  }
  if (all.length === 0) {
    throw new TypeError("Cannot write development PKI: the server certificate needs a name");
  }
  return {
    all,
    dns: all.filter((n) => isIP(n) === 0),
    ips: all.filter((n) => isIP(n) !== 0),
  };
}

function issueServer(
  ca: CertificateAuthority,
  names: { dns: string[]; ips: string[] },
): Promise<IssuedCertificate> {
  return issueCertificate(ca, {
    commonName: names.dns.find((n) => n.length <= MAX_COMMON_NAME) ?? names.ips[0] ?? "server",
    kind: "server",
    dnsNames: names.dns,
    ipAddresses: names.ips,
  });
}

/**
 * Generates a development PKI into `dir` (created if missing): `ca.crt`, `ca.key`,
 * `server.crt`, `server.key`, `<client>.crt` and `<client>.key` for each client, plus
 * `foreign-ca.crt` and `intruder.crt`/`intruder.key`, a client of an untrusted CA
 * for demonstrating refusal. Keys are written with mode 0600, certificates 0644.
 *
 * @example Usage
 * ```ts ignore
 * import { writeDevPki } from "@mtlb/mtlb";
 *
 * const summary = await writeDevPki("certs", { clients: ["alice", "bob"] });
 * for (const c of summary.clients) {
 *   console.log(`[clients.${c.name}]\nspki_sha256 = "${c.spkiSha256}"`);
 * }
 * ```
 *
 * @param dir The directory to write to.
 * @param options The clients to issue, and whether to overwrite.
 * @returns The paths written and each client's SPKI digest and serial.
 * @throws {TypeError} When a client name is malformed, reserved or repeated.
 * @throws {Deno.errors.AlreadyExists} When a target file exists and `overwrite` is not set.
 */
export async function writeDevPki(
  dir: string,
  options: WriteDevPkiOptions,
): Promise<DevPkiSummary> {
  checkClientNames(options.clients, "write development PKI");
  const serverNames = splitServerNames(options.serverNames ?? DEFAULT_SERVER_NAMES);
  const path = (file: string) => join(dir, file);
  const ca = await createCa({ commonName: "mtlb development CA" });
  const server = await issueServer(ca, serverNames);
  const foreign = await createCa({ commonName: "mtlb foreign CA (untrusted)" });
  const intruder = await issueCertificate(foreign, { commonName: "intruder", kind: "client" });
  const clients: { name: string; issued: IssuedCertificate }[] = [];
  for (const name of options.clients) {
    clients.push({
      name,
      issued: await issueCertificate(ca, { commonName: name, kind: "client" }),
    });
  }

  const files: [file: string, text: string, mode: number][] = [
    ["ca.crt", ca.certPem, 0o644],
    ["ca.key", ca.keyPem, 0o600],
    ["server.crt", server.chainPem, 0o644],
    ["server.key", server.keyPem, 0o600],
    ["foreign-ca.crt", foreign.certPem, 0o644],
    ["intruder.crt", intruder.chainPem, 0o644],
    ["intruder.key", intruder.keyPem, 0o600],
  ];
  for (const { name, issued } of clients) {
    files.push([`${name}.crt`, issued.chainPem, 0o644], [`${name}.key`, issued.keyPem, 0o600]);
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const overwrite = options.overwrite ?? false;
  if (!overwrite) {
    for (const [file] of files) {
      if (await exists(path(file))) {
        throw new Deno.errors.AlreadyExists(
          `Cannot write development PKI: "${path(file)}" exists, pass overwrite to replace it`,
        );
      }
    }
  }
  for (const [file, text, mode] of files) {
    await Deno.writeTextFile(path(file), text, { mode, createNew: !overwrite });
    // `mode` applies only when the file is created; enforce it on a replaced file too.
    if (Deno.build.os !== "windows") await Deno.chmod(path(file), mode);
  }
  return {
    dir,
    caCert: path("ca.crt"),
    caKey: path("ca.key"),
    serverCert: path("server.crt"),
    serverKey: path("server.key"),
    serverNames: serverNames.all,
    foreignCaCert: path("foreign-ca.crt"),
    intruderCert: path("intruder.crt"),
    intruderKey: path("intruder.key"),
    clients: clients.map(({ name, issued }) => ({
      name,
      cert: path(`${name}.crt`),
      key: path(`${name}.key`),
      spkiSha256: issued.spkiSha256,
      serial: issued.serial,
    })),
  };
}

/** Options for {@linkcode extendDevPki}. */
export interface ExtendDevPkiOptions {
  /**
   * New clients, named as for {@linkcode writeDevPki}: each gets `<name>.crt` and
   * `<name>.key`, signed by the CA in the folder.
   */
  clients: readonly string[];
  /**
   * When given, also issue `server.crt` and `server.key` for these names (see
   * {@linkcode WriteDevPkiOptions.serverNames}); they must not exist.
   *
   * @default {undefined (no server certificate)}
   */
  serverNames?: readonly string[];
}

/** What {@linkcode extendDevPki} wrote, with paths joined onto its `dir`. */
export interface DevPkiAddition {
  /** The directory written to. */
  dir: string;
  /** The CA certificate that signed everything written (`ca.crt`). */
  caCert: string;
  /** The CA private key used (`ca.key`). */
  caKey: string;
  /**
   * The server certificate and key written, and the names it is for; absent when
   * `serverNames` was not given.
   */
  server?: { cert: string; key: string; names: string[] };
  /** The clients written, in the order given. */
  clients: DevPkiClient[];
}

/**
 * Adds to a development PKI that {@linkcode writeDevPki} wrote: issues certificates
 * for new clients (and, on request, a server certificate) signed by the CA in `dir`
 * (`ca.crt` and `ca.key`), so existing certificates stay valid. Never replaces a file:
 * when any target exists nothing is written. Keys are written with mode 0600,
 * certificates 0644.
 *
 * @example Usage
 * ```ts ignore
 * import { extendDevPki } from "@mtlb/mtlb";
 *
 * const added = await extendDevPki("certs", { clients: ["dave"] });
 * console.log(`[clients.dave]\nmatch = { spki_sha256 = "${added.clients[0]!.spkiSha256}" }`);
 * ```
 *
 * @param dir The folder holding `ca.crt` and `ca.key`.
 * @param options The clients to add, and the names of a server certificate to add.
 * @returns The paths written and each client's SPKI digest and serial.
 * @throws {TypeError} When a client or server name is malformed, reserved or repeated,
 *   or `ca.crt`/`ca.key` is not a CA certificate with its private key.
 * @throws {Deno.errors.NotFound} When `ca.crt` or `ca.key` is missing.
 * @throws {Deno.errors.AlreadyExists} When a target file exists; the message names every
 *   such file.
 */
export async function extendDevPki(
  dir: string,
  options: ExtendDevPkiOptions,
): Promise<DevPkiAddition> {
  checkClientNames(options.clients, "add to development PKI");
  const serverNames = options.serverNames === undefined
    ? undefined
    : splitServerNames(options.serverNames);
  if (options.clients.length === 0 && serverNames === undefined) {
    throw new TypeError("Cannot add to development PKI: name at least one client");
  }
  const path = (file: string) => join(dir, file);
  const targets = [
    ...(serverNames === undefined ? [] : ["server.crt", "server.key"]),
    ...options.clients.flatMap((name) => [`${name}.crt`, `${name}.key`]),
  ];
  const existing: string[] = [];
  for (const file of targets) if (await exists(path(file))) existing.push(path(file));
  if (existing.length > 0) {
    throw new Deno.errors.AlreadyExists(
      `Cannot add to development PKI: ${existing.map((file) => JSON.stringify(file)).join(", ")} ${
        existing.length === 1 ? "exists" : "exist"
      }`,
    );
  }
  const read = async (file: string): Promise<string> => {
    try {
      return await Deno.readTextFile(path(file));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      throw new Deno.errors.NotFound(
        `Cannot add to development PKI: "${path(file)}" is missing; write a new PKI first`,
        { cause: error },
      );
    }
  };
  const ca = await loadCertificateAuthority(await read("ca.crt"), await read("ca.key"));
  const server = serverNames === undefined ? undefined : await issueServer(ca, serverNames);
  const clients: { name: string; issued: IssuedCertificate }[] = [];
  for (const name of options.clients) {
    clients.push({
      name,
      issued: await issueCertificate(ca, { commonName: name, kind: "client" }),
    });
  }
  const files: [file: string, text: string, mode: number][] = [];
  if (server !== undefined) {
    files.push(["server.crt", server.chainPem, 0o644], ["server.key", server.keyPem, 0o600]);
  }
  for (const { name, issued } of clients) {
    files.push([`${name}.crt`, issued.chainPem, 0o644], [`${name}.key`, issued.keyPem, 0o600]);
  }
  for (const [file, text, mode] of files) {
    await Deno.writeTextFile(path(file), text, { mode, createNew: true });
  }
  return {
    dir,
    caCert: path("ca.crt"),
    caKey: path("ca.key"),
    ...(serverNames === undefined
      ? {}
      : { server: { cert: path("server.crt"), key: path("server.key"), names: serverNames.all } }),
    clients: clients.map(({ name, issued }) => ({
      name,
      cert: path(`${name}.crt`),
      key: path(`${name}.key`),
      spkiSha256: issued.spkiSha256,
      serial: issued.serial,
    })),
  };
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

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function generateKeys(algorithm: KeyAlgorithmName = "P-256"): Promise<CryptoKeyPair> {
  const params = KEY_ALGORITHMS[algorithm];
  if (params === undefined) {
    throw new TypeError(
      `Cannot create certificate: "keyAlgorithm" must be one of ${
        Object.keys(KEY_ALGORITHMS).join(", ")
      }, received ${JSON.stringify(algorithm)}`,
    );
  }
  return await crypto.subtle.generateKey(params, true, ["sign", "verify"]) as CryptoKeyPair;
}

/**
 * The WebCrypto signing parameters for a private key generated by this module:
 * ECDSA with SHA-256 (P-256) or SHA-384 (P-384), RSA PKCS#1 v1.5 or PSS (salt 32)
 * with the key's hash, Ed25519.
 *
 * @example Usage
 * ```ts
 * import { createCa } from "@mtlb/mtlb";
 * import { signingAlgorithmOf } from "./pki.ts";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA", keyAlgorithm: "P-384" });
 * assert.deepEqual(signingAlgorithmOf(ca.keys.privateKey), { name: "ECDSA", hash: "SHA-384" });
 * ```
 *
 * @param key The private key that signs.
 * @returns The parameters for `X509CertificateGenerator` and `X509CrlGenerator`.
 * @throws {TypeError} When the key is of another type.
 */
export function signingAlgorithmOf(key: CryptoKey): Algorithm | EcdsaParams | RsaPssParams {
  const algorithm = key.algorithm as { name: string; namedCurve?: string };
  switch (algorithm.name) {
    case "ECDSA":
      return { name: "ECDSA", hash: algorithm.namedCurve === "P-384" ? "SHA-384" : "SHA-256" };
    case "RSASSA-PKCS1-v1_5":
      return { name: "RSASSA-PKCS1-v1_5" };
    case "RSA-PSS":
      return { name: "RSA-PSS", saltLength: 32 } as RsaPssParams;
    case "Ed25519":
      return { name: "Ed25519" };
  }
  throw new TypeError(`Cannot sign: keys of type ${algorithm.name} are not supported`);
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return `${PemConverter.encode(der, "PRIVATE KEY")}\n`;
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

/** The subject of a CA's certificate, as the issuer name of what it signs. */
function subjectOf(ca: CertificateAuthority): Name {
  return new X509Certificate(ca.certPem).subjectName;
}

function subjectName(commonName: string): Name {
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

function validity(
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
function serialFor(serialNumber: string | undefined): string {
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
