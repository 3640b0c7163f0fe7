/**
 * A development PKI on disk: {@linkcode writeDevPki} writes a CA, a server
 * certificate, client certificates and an untrusted CA with its client, as PEM files;
 * {@linkcode extendDevPki} adds clients signed by the CA already written. For
 * development and tests: the keys never leave the process or the directory they are
 * written to, and a real deployment should use its own CA.
 *
 * @module
 */
import { isIP } from "node:net";
import { join } from "node:path";
import { MAX_COMMON_NAME } from "./_certificate_fields.ts";
import {
  type CertificateAuthority,
  createCa,
  loadCertificateAuthority,
} from "./certificate_authority.ts";
import { issueCertificate, type IssuedCertificate } from "./issue_certificate.ts";

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

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
