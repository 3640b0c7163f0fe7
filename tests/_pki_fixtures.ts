/**
 * A test PKI generated once per process: `await testPki()` returns the same
 * certificates to every test file that imports it, in memory and as files in a
 * temporary directory (for tests that hand paths to `openssl s_client` and the like).
 * Nothing here is committed, so nothing lapses.
 *
 * The files are written, synchronously, on the first read of `dir` or of any `*Path`
 * field, and removed when the process exits: a test that uses only the PEMs needs no
 * `--allow-write`.
 *
 * @module
 */
import {
  type CertificateAuthority,
  createCa,
  createIntermediateCa,
} from "../lib/pki/certificate_authority.ts";
import {
  issueCertificate,
  type IssueCertificateOptions,
  type IssuedCertificate,
} from "../lib/pki/issue_certificate.ts";
import { join } from "node:path";
import { identityFromCertificate } from "../lib/identity/certificate.ts";

/** A CA certificate, in memory and on disk. */
export interface TestCa {
  /** The certificate, PEM. */
  certPem: string;
  /** Path of a file holding `certPem`. */
  readonly certPath: string;
  /** Serial number, canonical hex. */
  serial: string;
  /** The CA with its key, for a test that must issue a certificate of its own. */
  authority: CertificateAuthority;
}

/** A certificate with its key, in memory and on disk. */
export interface TestCredential {
  /** The certificate alone, PEM. */
  certPem: string;
  /** The private key, PKCS#8 PEM. */
  keyPem: string;
  /** The certificate followed by its issuer's intermediates, PEM (what a peer sends). */
  chainPem: string;
  /** The certificate alone, DER, as `getPeerCertificate(true).raw` gives it. */
  der: Uint8Array;
  /** Path of a file holding `certPem`. */
  readonly certPath: string;
  /** Path of a file holding `keyPem` (mode 0600). */
  readonly keyPath: string;
  /** Path of a file holding `chainPem`; the same file as `certPath` for a root-issued one. */
  readonly chainPath: string;
  /** The subject common name. */
  cn: string;
  /** Serial number, canonical hex (see `normalizeHex`). */
  serial: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, 64 lowercase hex digits. */
  spkiSha256: string;
}

/** Everything {@linkcode testPki} generates. All leaves are ECDSA P-256. */
export interface TestPki {
  /** The temporary directory holding every file below (written on first read). */
  readonly dir: string;
  /** The trusted root (`ca.crt`): the server's client CA bundle and the clients' trust anchor. */
  ca: TestCa;
  /** Server certificate for `localhost`, `127.0.0.1` and `::1` (serverAuth), signed by `ca`. */
  server: TestCredential;
  /** Client `alice` (CN=alice, clientAuth, no SAN), signed by `ca`. */
  alice: TestCredential;
  /**
   * Client `bob` (CN=bob, clientAuth, no SAN), signed by `ca`, with the fixed serial
   * `a1b00`, which `openssl x509 -serial` prints as `serial=0A1B00`.
   */
  bob: TestCredential;
  /**
   * Client `carol` (CN=carol, clientAuth), signed by `ca`, with SAN URI
   * `spiffe://example.org/carol` and SAN DNS `carol.example.org`.
   */
  carol: TestCredential;
  /** A root the server does not trust (`foreign-ca.crt`). */
  foreignCa: TestCa;
  /** Client `intruder` (CN=intruder, clientAuth), signed by `foreignCa`: must be refused. */
  intruder: TestCredential;
  /** Client `expired` (clientAuth), signed by `ca`, valid from 2 days ago to 1 day ago. */
  expired: TestCredential;
  /** Client `not-yet-valid` (clientAuth), signed by `ca`, valid from 1 day ahead to 2 days ahead. */
  notYetValid: TestCredential;
  /** Client `wrong-eku`, signed by `ca`, with serverAuth as its only EKU. */
  wrongEku: TestCredential;
  /** Client `no-eku`, signed by `ca`, without an extended key usage extension. */
  noEku: TestCredential;
  /** An intermediate CA signed by `ca` (`intermediate-ca.crt`), not in the CA bundle. */
  intermediateCa: TestCa;
  /**
   * Client `via-intermediate` (clientAuth), signed by `intermediateCa`. `certPath`
   * holds the leaf alone (unverifiable against `ca` by itself); `chainPath` holds
   * the leaf and the intermediate (verifiable against `ca`).
   */
  viaIntermediate: TestCredential;
}

let cached: Promise<TestPki> | undefined;

/**
 * Returns the process-wide test PKI, generating it on the first call.
 *
 * @returns The certificates, keys and (lazily written) file paths.
 */
export function testPki(): Promise<TestPki> {
  cached ??= generate();
  return cached;
}

/** The files of the PKI, written to a fresh temporary directory on first use. */
class LazyFiles {
  #dir: string | undefined;
  #files: [name: string, text: string, mode: number][] = [];

  add(name: string, text: string, mode = 0o644): void {
    this.#files.push([name, text, mode]);
  }

  get dir(): string {
    if (this.#dir === undefined) {
      const dir = Deno.makeTempDirSync({ prefix: "mtlb_pki_" });
      globalThis.addEventListener("unload", () => {
        try {
          Deno.removeSync(dir, { recursive: true });
        } catch {
          // Best effort: the OS cleans its temporary directory anyway.
        }
      });
      for (const [name, text, mode] of this.#files) {
        Deno.writeTextFileSync(join(dir, name), text, { mode });
      }
      this.#dir = dir;
    }
    return this.#dir;
  }

  path(name: string): string {
    return join(this.dir, name);
  }
}

async function generate(): Promise<TestPki> {
  const files = new LazyFiles();
  const now = Date.now();
  const day = 24 * 60 * 60 * 1000;
  const client = (cn: string) => ({ commonName: cn, kind: "client" as const });

  const root = await createCa({ commonName: "mtlb test CA" });
  const foreignRoot = await createCa({ commonName: "mtlb foreign test CA" });
  const intermediate = await createIntermediateCa(root, { commonName: "mtlb test intermediate" });
  const issue = async (name: string, ca: CertificateAuthority, options: IssueCertificateOptions) =>
    credential(files, name, await issueCertificate(ca, options));

  return {
    get dir() {
      return files.dir;
    },
    ca: authority(files, "ca", root),
    foreignCa: authority(files, "foreign-ca", foreignRoot),
    intermediateCa: authority(files, "intermediate-ca", intermediate),
    server: await issue("server", root, { commonName: "localhost", kind: "server" }),
    alice: await issue("alice", root, client("alice")),
    bob: await issue("bob", root, { ...client("bob"), serialNumber: "0a1b00" }),
    carol: await issue("carol", root, {
      ...client("carol"),
      uris: ["spiffe://example.org/carol"],
      dnsNames: ["carol.example.org"],
    }),
    intruder: await issue("intruder", foreignRoot, client("intruder")),
    expired: await issue("expired", root, {
      ...client("expired"),
      notBefore: new Date(now - 2 * day),
      notAfter: new Date(now - day),
    }),
    notYetValid: await issue("not-yet-valid", root, {
      ...client("not-yet-valid"),
      notBefore: new Date(now + day),
      notAfter: new Date(now + 2 * day),
    }),
    wrongEku: await issue("wrong-eku", root, {
      ...client("wrong-eku"),
      extendedKeyUsage: ["serverAuth"],
    }),
    noEku: await issue("no-eku", root, { ...client("no-eku"), extendedKeyUsage: [] }),
    viaIntermediate: await issue("via-intermediate", intermediate, client("via-intermediate")),
  };
}

function authority(files: LazyFiles, name: string, ca: CertificateAuthority): TestCa {
  files.add(`${name}.crt`, ca.certPem);
  return {
    certPem: ca.certPem,
    get certPath() {
      return files.path(`${name}.crt`);
    },
    serial: ca.serial,
    authority: ca,
  };
}

function credential(files: LazyFiles, name: string, issued: IssuedCertificate): TestCredential {
  files.add(`${name}.crt`, issued.certPem);
  files.add(`${name}.key`, issued.keyPem, 0o600);
  const chained = issued.chainPem !== issued.certPem;
  if (chained) files.add(`${name}-chain.crt`, issued.chainPem);
  return {
    certPem: issued.certPem,
    keyPem: issued.keyPem,
    chainPem: issued.chainPem,
    der: issued.der,
    get certPath() {
      return files.path(`${name}.crt`);
    },
    get keyPath() {
      return files.path(`${name}.key`);
    },
    get chainPath() {
      return files.path(chained ? `${name}-chain.crt` : `${name}.crt`);
    },
    cn: identityFromCertificate(issued.der).cn ?? "",
    serial: issued.serial,
    spkiSha256: issued.spkiSha256,
  };
}

/**
 * A CA rollover: two CAs with the same subject name and different keys, each with a
 * client of the same common name and serial number.
 */
export interface Rollover {
  /** The CA being retired (`CN=mtlb rollover CA`). */
  old: CertificateAuthority;
  /** Its successor: same subject name, another key. */
  next: CertificateAuthority;
  /** Client `roll` (serial `5eed`), signed by `old`. */
  oldClient: IssuedCertificate;
  /** Client `roll` (serial `5eed`), signed by `next`. */
  nextClient: IssuedCertificate;
  /** Both CA certificates, PEM, old first. */
  bundle: string;
}

/** Both rollovers {@linkcode rolloverPki} makes. */
export interface RolloverPki {
  /** CAs with subject key identifiers, clients with authority key identifiers. */
  keyed: Rollover;
  /** No key identifiers anywhere: only signatures tell the CAs apart. */
  bare: Rollover;
}

let rollovers: Promise<RolloverPki> | undefined;

/**
 * Returns the process-wide rollover PKIs, generating them on the first call.
 *
 * @returns Two rollovers, with and without key identifiers.
 */
export function rolloverPki(): Promise<RolloverPki> {
  rollovers ??= (async () => ({
    keyed: await rollover(true),
    bare: await rollover(false),
  }))();
  return rollovers;
}

async function rollover(keyIdentifiers: boolean): Promise<Rollover> {
  const old = await createCa({ commonName: "mtlb rollover CA", keyIdentifiers });
  const next = await createCa({ commonName: "mtlb rollover CA", keyIdentifiers });
  const client = {
    commonName: "roll",
    kind: "client",
    serialNumber: "5eed",
    keyIdentifiers,
  } as const;
  return {
    old,
    next,
    oldClient: await issueCertificate(old, client),
    nextClient: await issueCertificate(next, client),
    bundle: old.certPem + next.certPem,
  };
}
