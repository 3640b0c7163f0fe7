/**
 * The mtlb configuration file: TOML in, a typed and validated {@linkcode Config} out.
 *
 * {@linkcode parseConfig} is pure and synchronous (tests, fuzzing, `check`);
 * {@linkcode loadConfig} reads the file first; {@linkcode loadTlsMaterial} reads and
 * checks the certificates a loaded config names. Every problem is a
 * {@linkcode ConfigError} carrying the file, the key path and, where known, the line.
 * Validation fails fast: the first problem found is reported.
 *
 * @module
 */
import { parse, TomlError } from "smol-toml";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { dirname, isAbsolute, join, normalize, resolve } from "node:path";
import { formatHostPort, type HostPort, parseHostPort } from "../core/address.ts";
import type { ConnectionRate } from "../limiter/store.ts";
import {
  CrlError,
  type CrlInfo,
  type CrlMissingMode,
  crlToPem,
  RevocationList,
} from "../identity/crl.ts";
import { formatDuration, parseDuration } from "../core/duration.ts";
import { parseSize } from "../core/size.ts";
import { type ClientEkuMode, normalizeHex } from "../identity/certificate.ts";
import { type TrustedAuthority, TrustStore, TrustStoreError } from "../identity/trust_store.ts";

/** The `[server]` section. Durations are milliseconds. */
export interface ServerConfig {
  /**
   * Shared listener, `host:port`; optional when every group has its own.
   *
   * @default {undefined}
   */
  listen?: string;
  /** Time allowed for the TLS handshake, ms (`handshake_timeout`, default `"5s"`). */
  handshakeTimeout: number;
  /** Time allowed to connect to an upstream, ms (`connect_timeout`, default `"3s"`). */
  connectTimeout: number;
  /**
   * Dials to make again, to the next upstream, after a failed one (`connect_retries`,
   * 0 to 10, default 2: three attempts in all).
   */
  connectRetries: number;
  /** A connection idle this long both ways is closed, ms (`idle_timeout`, default `"15m"`). */
  idleTimeout: number;
  /** Time connections get to finish when draining, ms (`drain_timeout`, default `"30s"`). */
  drainTimeout: number;
  /**
   * Worker count, at least 1.
   *
   * @default {undefined}
   */
  workers?: number;
  /**
   * Cap on open client connections for the whole server, at least 1; beyond it new
   * connections are closed at once, before their handshake (`server_full`). Unset:
   * derived from the open-files limit (see `defaultMaxConnections`).
   *
   * @default {undefined}
   */
  maxConnections?: number;
  /**
   * Cap on TLS handshakes in flight, at least 1. When a new connection would exceed
   * it (or `max_connections`), a handshake in flight makes room: the oldest whose
   * client has sent nothing for 100 ms (a silent connection), else the oldest in flight
   * for a quarter of `handshake_timeout` (`handshake_shed`); with neither, the new
   * connection is refused (`server_full`). A flood of silent connections then cycles
   * through while clients that speak get in, and a burst of real clients is not cut
   * short. Unset: `max_connections`, at most 4096 (see `defaultMaxHandshakes`).
   *
   * @default {undefined}
   */
  maxHandshakes?: number;
  /**
   * What a reload or CRL update does to live connections it would now refuse
   * (certificate revoked, client removed, group withdrawn, CA removed): `"close"`
   * ends them (`revoked`, `policy_changed`); `"keep"` lets them run to their end
   * (`on_policy_change`, default `"close"`).
   */
  onPolicyChange: "close" | "keep";
  /**
   * The longest a forwarded connection may last, ms; it is then closed
   * (`max_lifetime`). Unset: no bound.
   *
   * @default {undefined}
   */
  maxLifetime?: number;
  /**
   * Bytes buffered per connection and direction at most (`max_buffer`, default
   * `"1MiB"`). A side that sends faster than the other reads is paused (the balancer
   * stops reading it) well before that; a connection whose buffer passes it anyway is
   * closed (`buffer_overflow`).
   */
  maxBuffer: number;
  /**
   * Reload when the config file or a `[tls]` file changes (`watch`, default false).
   */
  watch: boolean;
}

/** The `[tls]` section. Paths are resolved against the config file's folder. */
export interface TlsConfig {
  /** CA bundle that client certificates must chain to, PEM file path. */
  ca: string;
  /** Server certificate (chain), PEM file path. */
  cert: string;
  /** Server private key, PEM file path. */
  key: string;
  /** TLS 1.3 cipher suites in preference order (default AES-256-GCM, AES-128-GCM). */
  ciphers: string[];
  /**
   * Certificate revocation lists of the CAs, file path: PEM (one or more
   * `X509 CRL` blocks) or one DER CRL.
   *
   * @default {undefined}
   */
  crl?: string;
  /**
   * Whether a client certificate must carry an extended key usage extension listing
   * clientAuth (`"required"`, the default), or may also carry none (`"optional"`,
   * weaker). An extension without clientAuth is always refused.
   */
  clientEku: ClientEkuMode;
  /**
   * With `crl` set, what certificates issued by a CA that has no CRL in it get:
   * refused (`"refuse"`, the default, as OpenSSL-based proxies do) or accepted
   * (`"allow"`).
   */
  crlMissing: CrlMissingMode;
}

/** The `[limits]` section: defaults for every client. */
export interface LimitsConfig {
  /** Concurrent connections per client identity (`max_connections_per_client`, default 10). */
  maxConnectionsPerClient: number;
  /**
   * New connections per client identity per window.
   *
   * @default {undefined}
   */
  connectionRate?: ConnectionRate;
}

/** Health check settings: the `[health]` section, or a group's effective settings. */
export interface HealthConfig {
  /** Time between probes, ms (default `"30s"`). */
  interval: number;
  /** Time allowed for one probe, ms (default `"1s"`). */
  timeout: number;
  /** Consecutive successes that mark an upstream healthy (default 1). */
  rise: number;
  /** Consecutive failures that mark an upstream unhealthy (default 1). */
  fall: number;
  /**
   * Bytes to send after connecting; a plain TCP connect check without it.
   *
   * @default {undefined}
   */
  send?: string;
  /**
   * Bytes the reply must start with; with no `send`, a banner check.
   *
   * @default {undefined}
   */
  expect?: string;
}

/**
 * Passive outlier detection and panic mode: the `[outlier]` section, or a group's
 * effective settings. Durations are milliseconds.
 */
export interface OutlierConfig {
  /**
   * Consecutive failures of one kind (failed dials, or connections reset before the
   * upstream sent anything) that eject an upstream; 0 turns ejection off
   * (`consecutive_failures`, default 5).
   */
  consecutiveFailures: number;
  /** The first ejection, ms; the n-th lasts n times as long (`base_ejection_time`, default `"30s"`). */
  baseEjectionTime: number;
  /** The longest ejection, ms (`max_ejection_time`, default `"5m"`). */
  maxEjectionTime: number;
  /**
   * The largest share of a group that may be ejected at once, in percent; at least
   * one upstream when above 0, never all (`max_ejected_percent`, default 50).
   */
  maxEjectedPercent: number;
  /**
   * Below this share of available upstreams, in percent, the group spreads over its
   * ejected upstreams too (`panic_threshold`, default 50; 0 only when none is left).
   */
  panicThreshold: number;
}

/** One upstream of a group. */
export interface UpstreamConfig {
  /** `host:port`, port not 0. */
  address: string;
  /** Relative weight, 1 to 1000 (default 1). */
  weight: number;
}

/** A `[groups.NAME]` table. */
export interface GroupConfig {
  /** The group name (the table key). */
  name: string;
  /** Upstreams, at least one, no duplicates. */
  upstreams: UpstreamConfig[];
  /**
   * Dedicated listener, `host:port`.
   *
   * @default {undefined}
   */
  listen?: string;
  /** Effective health settings: `[health]` overridden field by field by the group's `health`. */
  health: HealthConfig;
  /** Effective outlier settings: `[outlier]` overridden field by field by the group's `outlier`. */
  outlier: OutlierConfig;
  /**
   * PROXY protocol header sent to upstreams.
   *
   * @default {undefined}
   */
  proxyProtocol?: "v2";
  /**
   * ALPN protocols the balancer may select for this group's clients, in order of
   * preference (`alpn = ["h2", "http/1.1"]`), so that HTTP/2 and gRPC clients get the
   * protocol their upstream speaks. A protocol is selected only when the client offers
   * it; with none selected the handshake goes on without ALPN.
   *
   * @default {[]}
   */
  alpn?: string[];
}

/**
 * How a client certificate is recognised; every given field must match.
 * Hex fields are canonical: lowercase, no colons.
 */
export interface ClientMatch {
  /** SHA-256 of the DER SubjectPublicKeyInfo, 64 hex digits. */
  spkiSha256?: string;
  /** Serial number, hex without leading zeros (`"0"` for zero). */
  serial?: string;
  /** Subject common name, exact. */
  cn?: string;
  /** A URI subject alternative name the certificate must carry (a SPIFFE ID, say). */
  sanUri?: string;
  /** A DNS subject alternative name the certificate must carry, lowercase. */
  sanDns?: string;
  /**
   * SHA-256 of the SubjectPublicKeyInfo of the CA that issued the certificate (its
   * direct issuer), 64 hex digits: pins the client to one CA of the bundle.
   */
  issuer?: string;
}

/** A `[clients.NAME]` table. */
export interface ClientConfig {
  /** The client name (the table key). */
  name: string;
  /** How its certificate is recognised. */
  match: ClientMatch;
  /** Groups it may use, at least one, each defined under `[groups]`. */
  groups: string[];
  /**
   * Concurrent connection cap overriding `limits.max_connections_per_client`.
   *
   * @default {undefined}
   */
  maxConnections?: number;
  /**
   * Rate limit overriding `limits.connection_rate`.
   *
   * @default {undefined}
   */
  connectionRate?: ConnectionRate;
}

/** The `[admin]` section. */
export interface AdminConfig {
  /**
   * Admin endpoint listener, `host:port`.
   *
   * @default {undefined}
   */
  listen?: string;
  /** Whether the admin endpoint may trigger a config reload (default false). */
  allowReload: boolean;
  /**
   * Host names the admin endpoint answers for besides IP addresses and `localhost`
   * (`hosts`, lowercase, default none): a request whose `Host` is anything else is
   * refused, which defeats DNS rebinding.
   */
  hosts: string[];
  /**
   * The file holding the admin endpoint's bearer token (`token_file`, an absolute
   * path); read by {@linkcode loadAdminToken}. Unset: no token is asked for.
   *
   * @default {undefined}
   */
  tokenFile?: string;
}

/**
 * The `[cluster]` section: state shared by a fleet of mtlb instances. Absent:
 * everything stays in memory, per instance.
 */
export interface ClusterConfig {
  /** The shared store, `redis://[user:password@]host:port[/db]` or `rediss://...`. */
  store: string;
  /** The store's `host:port`, for permissions. */
  storeAddress: string;
  /** What to do when the store fails or is slow: `"local"` limits or `"closed"` (default local). */
  onStoreError: "local" | "closed";
  /** How long a dead instance's slots keep counting, ms (default 15 s). */
  leaseTtl: number;
  /** The longest wait on the store for one connection, ms (default 250 ms). */
  timeout: number;
  /**
   * This instance's name in the store.
   *
   * @default {random at each start}
   */
  instanceId?: string;
}

/** The `[log]` section. */
export interface LogConfig {
  /** `"auto"` (text on a terminal, JSON lines otherwise), `"text"` or `"json"` (default auto). */
  format: "auto" | "text" | "json";
}

/** A validated mtlb configuration. Field names are the TOML keys in camelCase. */
export interface Config {
  /** The config file this was read from, as given to {@linkcode parseConfig}. */
  path: string;
  /** `[server]`. */
  server: ServerConfig;
  /** `[tls]`. */
  tls: TlsConfig;
  /** `[limits]`. */
  limits: LimitsConfig;
  /** `[health]`: the defaults groups start from. */
  health: HealthConfig;
  /** `[outlier]`: the defaults groups start from. */
  outlier: OutlierConfig;
  /** `[groups.NAME]`, by name. */
  groups: ReadonlyMap<string, GroupConfig>;
  /** `[clients.NAME]`, by name. */
  clients: ReadonlyMap<string, ClientConfig>;
  /** `[admin]`. */
  admin: AdminConfig;
  /** `[log]`. */
  log: LogConfig;
  /**
   * `[cluster]`.
   *
   * @default {undefined}
   */
  cluster?: ClusterConfig;
}

/** Where a {@linkcode ConfigError} comes from. */
export interface ConfigErrorOptions extends ErrorOptions {
  /** The config file. */
  path: string;
  /**
   * Key path of the offending value, such as `groups.cache.upstreams[1]`.
   *
   * @default {undefined}
   */
  key?: string;
  /**
   * 1-based line in the config file.
   *
   * @default {undefined}
   */
  line?: number;
  /**
   * 1-based column, for TOML syntax errors.
   *
   * @default {undefined}
   */
  column?: number;
}

/**
 * A configuration that cannot be used: bad TOML, a bad value, an unknown key, an
 * unreadable or mismatched certificate. The message reads
 * `Cannot load config: FILE:LINE: "KEY" must be ..., received ...`.
 *
 * @example Usage
 * ```ts
 * import { ConfigError, parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => parseConfig("[server]\nlisten = 8443\n", { path: "lb.toml" }),
 *   (e: unknown) => e instanceof ConfigError && e.key === "server.listen" && e.line === 2,
 * );
 * ```
 */
export class ConfigError extends Error {
  /** The config file. */
  readonly path: string;
  /** Key path of the offending value, when one is to blame. */
  readonly key: string | undefined;
  /** 1-based line in the config file, when known. */
  readonly line: number | undefined;
  /** 1-based column, for TOML syntax errors. */
  readonly column: number | undefined;
  /** The message without the `Cannot load config: FILE:LINE:` prefix. */
  readonly detail: string;

  /**
   * Creates the error.
   *
   * @param detail What is wrong, such as `"tls.ca" must be a string, received 1`.
   * @param options Where, and the cause.
   */
  constructor(detail: string, options: ConfigErrorOptions) {
    let where = options.path;
    if (options.line !== undefined) where += `:${options.line}`;
    if (options.line !== undefined && options.column !== undefined) where += `:${options.column}`;
    super(`Cannot load config: ${where}: ${detail}`, { cause: options.cause });
    this.name = "ConfigError";
    this.path = options.path;
    this.key = options.key;
    this.line = options.line;
    this.column = options.column;
    this.detail = detail;
  }
}

/** Options for {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** The file name used in errors and stored as {@linkcode Config.path}. */
  path: string;
  /**
   * Folder that relative paths (`tls.ca`, `tls.cert`, `tls.key`, `tls.crl`) resolve against.
   *
   * @default {dirname(path)}
   */
  baseDir?: string;
}

const TLS13_CIPHERS: readonly string[] = [
  "TLS_AES_256_GCM_SHA384",
  "TLS_AES_128_GCM_SHA256",
  "TLS_CHACHA20_POLY1305_SHA256",
];
const DEFAULT_CIPHERS: readonly string[] = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"];
/** Longest delay a JavaScript timer honours (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const ALPN_RE = /^[\x21-\x7e]{1,255}$/;
const HEX_RE = /^[0-9a-fA-F]+(?::[0-9a-fA-F]+)*$/;
const MATCH_KEYS = ["spki_sha256", "serial", "cn", "san_uri", "san_dns", "issuer"] as const;
const HEALTH_KEYS = ["interval", "timeout", "rise", "fall", "send", "expect"];
const OUTLIER_KEYS = [
  "consecutive_failures",
  "base_ejection_time",
  "max_ejection_time",
  "max_ejected_percent",
  "panic_threshold",
];
const HOST_NAME_RE =
  /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** Shortest admin token accepted: 128 bits as hex. */
const MIN_TOKEN_LENGTH = 32;
/**
 * The line of `admin.token_file` in the config text, for the errors of
 * {@linkcode loadAdminToken} (the file is read after the text is gone).
 */
const TOKEN_FILE_LINES = new WeakMap<AdminConfig, number | undefined>();
/**
 * The lines of the `[tls]` file keys in the config text, for the errors of
 * {@linkcode loadTlsMaterial}.
 */
const TLS_FILE_LINES = new WeakMap<TlsConfig, Record<string, number | undefined>>();

/**
 * Parses and validates config text. Pure: reads no files (certificates are checked
 * by {@linkcode loadTlsMaterial}). Fails on the first problem found.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `
 * [server]
 * listen = "127.0.0.1:8443"
 * [tls]
 * ca = "certs/ca.crt"
 * cert = "certs/server.crt"
 * key = "certs/server.key"
 * [groups.cache]
 * upstreams = ["127.0.0.1:6379", { address = "127.0.0.1:6380", weight = 2 }]
 * [clients.alice]
 * match = { cn = "alice" }
 * groups = ["cache"]
 * `,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * assert.equal(config.tls.ca, "/etc/mtlb/certs/ca.crt");
 * assert.equal(config.server.idleTimeout, 15 * 60_000);
 * assert.deepEqual(config.groups.get("cache")?.upstreams[1], { address: "127.0.0.1:6380", weight: 2 });
 * ```
 *
 * @param text The TOML text.
 * @param options The file name (for errors) and the folder relative paths resolve against.
 * @returns The validated configuration, defaults filled in.
 * @throws {ConfigError} When the text is not valid TOML or not a valid configuration.
 */
export function parseConfig(text: string, options: ParseConfigOptions): Config {
  text = text.replace(/^\uFEFF/, "");
  const r = new _Reader(text, options.path);
  const baseDir = options.baseDir ?? dirname(options.path);
  let doc: Table;
  try {
    doc = parse(text, { integersAsBigInt: true, maxDepth: 32 }) as Table;
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0]! : String(error);
    throw new ConfigError(`invalid TOML: ${reason.replace(/^Invalid TOML document: /, "")}`, {
      path: options.path,
      line: error instanceof TomlError ? error.line : undefined,
      column: error instanceof TomlError ? error.column : undefined,
      cause: error,
    });
  }
  r.keys(doc, "", [
    "server",
    "tls",
    "limits",
    "health",
    "outlier",
    "groups",
    "clients",
    "admin",
    "log",
    "cluster",
  ]);

  const server = readServer(r, r.table(doc, "", "server", false));
  const tls = readTls(r, r.table(doc, "", "tls", true), baseDir);
  const limits = readLimits(r, r.table(doc, "", "limits", false));
  const healthTable = r.table(doc, "", "health", false);
  r.keys(healthTable, "health", HEALTH_KEYS);
  const health = readHealth(r, healthTable, "health", {
    interval: 30_000,
    timeout: 1000,
    rise: 1,
    fall: 1,
  });
  const outlierTable = r.table(doc, "", "outlier", false);
  r.keys(outlierTable, "outlier", OUTLIER_KEYS);
  const outlier = readOutlier(r, outlierTable, "outlier", {
    consecutiveFailures: 5,
    baseEjectionTime: 30_000,
    maxEjectionTime: 300_000,
    maxEjectedPercent: 50,
    panicThreshold: 50,
  });
  const groups = readGroups(r, r.table(doc, "", "groups", true), health, outlier);
  const clients = readClients(r, r.table(doc, "", "clients", false), groups);
  const admin = readAdmin(r, r.table(doc, "", "admin", false), baseDir);
  const logTable = r.table(doc, "", "log", false);
  r.keys(logTable, "log", ["format"]);
  const format = r.oneOf(logTable, "log", "format", ["auto", "text", "json"] as const) ?? "auto";

  const cluster = readCluster(r, r.table(doc, "", "cluster", false));

  checkListeners(r, server, groups, admin);
  checkAmbiguousClients(r, clients);
  return {
    path: options.path,
    server,
    tls,
    limits,
    health,
    outlier,
    groups,
    clients,
    admin,
    log: { format },
    ...(cluster === undefined ? {} : { cluster }),
  };
}

/**
 * Reads and validates a config file; relative paths in it resolve against its folder.
 * Certificates are not read: see {@linkcode loadTlsMaterial}.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * console.log([...config.groups.keys()]);
 * ```
 *
 * @param path The config file.
 * @returns The validated configuration; `path` is made absolute.
 * @throws {ConfigError} When the file cannot be read or is not a valid configuration.
 */
export async function loadConfig(path: string): Promise<Config> {
  const file = resolve(path);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new ConfigError(`cannot read the file: ${fileError(error)}`, {
      path: file,
      cause: error,
    });
  }
  return parseConfig(text, { path: file });
}

/** Facts about one certificate in {@linkcode TlsMaterial}, for `check` and expiry warnings. */
export interface TlsCertificateInfo {
  /** Which config key the certificate came from. */
  key: "tls.ca" | "tls.cert";
  /** Subject distinguished name, as node:crypto prints it. */
  subject: string;
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
  notAfter: Date;
}

/** The PEM texts a config's `[tls]` section names, checked. */
export interface TlsMaterial {
  /** CA bundle, PEM. */
  ca: string;
  /** Server certificate chain, PEM. */
  cert: string;
  /** Server private key, PEM. */
  key: string;
  /**
   * Certificate revocation lists, PEM (DER files are converted).
   *
   * @default {undefined}
   */
  crl?: string;
  /** Every certificate of `ca` and `cert`, in file order. */
  certificates: TlsCertificateInfo[];
  /**
   * The CRLs of `crl`, verified, in file order.
   *
   * @default {undefined}
   */
  crls?: CrlInfo[];
  /**
   * The CAs of `ca`, in file order, with their SPKI SHA-256 (what `match.issuer` pins).
   * {@linkcode loadTlsMaterial} always sets it.
   *
   * @default {undefined}
   */
  authorities?: readonly TrustedAuthority[];
}

/**
 * Reads the CA bundle, server certificate, private key and CRL a config names and
 * checks them: each certificate parses, the key parses (unencrypted), the first
 * certificate of `tls.cert` belongs to the key, the CA bundle can be read as a
 * `TrustStore`, and each CRL is signed by a CA of the bundle and current (see
 * `RevocationList.parse`). Certificate expiry is reported, not judged.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig, loadTlsMaterial } from "@mtlb/mtlb";
 *
 * const material = await loadTlsMaterial(await loadConfig("config/lb.toml"));
 * for (const cert of material.certificates) console.log(cert.subject, cert.notAfter);
 * ```
 *
 * @param config The config (its `path` is used in errors).
 * @returns The PEM texts and certificate facts.
 * @throws {ConfigError} With key `tls.ca`, `tls.cert`, `tls.key` or `tls.crl` when a file
 *   cannot be read or parsed (a CA certificate whose key is not supported included),
 *   with key `tls.cert` when certificate and key do not match,
 *   or with key `tls.crl` when a CRL is not from a CA of the bundle, badly signed,
 *   expired or not yet valid.
 */
export async function loadTlsMaterial(config: Pick<Config, "path" | "tls">): Promise<TlsMaterial> {
  const lines = TLS_FILE_LINES.get(config.tls);
  const fail = (key: string, detail: string, cause?: unknown): never => {
    throw new ConfigError(`${JSON.stringify(key)} ${detail}`, {
      path: config.path,
      key,
      line: lines?.[key],
      cause,
    });
  };
  const read = async (key: string, file: string): Promise<string> => {
    try {
      return await Deno.readTextFile(file);
    } catch (error) {
      return fail(key, `cannot be read from ${JSON.stringify(file)}: ${fileError(error)}`, error);
    }
  };
  const certificates: TlsCertificateInfo[] = [];
  const parseCerts = (key: "tls.ca" | "tls.cert", file: string, pem: string): X509Certificate[] => {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) {
      fail(key, `must hold PEM certificates, found none in ${JSON.stringify(file)}`);
    }
    return blocks.map((block, index) => {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(block);
      } catch (error) {
        return fail(
          key,
          `holds a certificate that cannot be parsed (number ${index + 1} in ${
            JSON.stringify(file)
          }): ${errorMessage(error)}`,
          error,
        );
      }
      certificates.push({
        key,
        subject: cert.subject,
        notBefore: new Date(cert.validFrom),
        notAfter: new Date(cert.validTo),
      });
      return cert;
    });
  };

  const { tls } = config;
  const readBytes = async (key: string, file: string): Promise<Uint8Array> => {
    try {
      return await Deno.readFile(file);
    } catch (error) {
      return fail(key, `cannot be read from ${JSON.stringify(file)}: ${fileError(error)}`, error);
    }
  };
  // Read together, awaited in key order: when several fail, the first key is reported,
  // whichever read failed first.
  const reads = [
    read("tls.ca", tls.ca),
    read("tls.cert", tls.cert),
    read("tls.key", tls.key),
    tls.crl === undefined ? undefined : readBytes("tls.crl", tls.crl),
  ] as const;
  for (const pending of reads) pending?.catch(() => {});
  const ca = await reads[0];
  const cert = await reads[1];
  const key = await reads[2];
  const crlBytes = await reads[3];
  parseCerts("tls.ca", tls.ca, ca);
  let store: TrustStore;
  try {
    store = TrustStore.fromPem(ca);
  } catch (error) {
    if (!(error instanceof TrustStoreError)) throw error;
    return fail(
      "tls.ca",
      `cannot be used (${JSON.stringify(tls.ca)}): ${
        error.message.replace(/^Cannot read the CA bundle: /, "")
      }`,
      error,
    );
  }
  const authorities = store.authorities;
  const leaf = parseCerts("tls.cert", tls.cert, cert)[0]!;
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    return fail(
      "tls.key",
      `must be an unencrypted PEM private key, ${JSON.stringify(tls.key)} is not: ${
        errorMessage(error)
      }`,
      error,
    );
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    fail(
      "tls.cert",
      `does not match the private key: the certificate in ${
        JSON.stringify(tls.cert)
      } was not issued for the key in ${JSON.stringify(tls.key)}`,
    );
  }
  if (crlBytes === undefined) return { ca, cert, key, certificates, authorities };
  let crl: string;
  try {
    crl = crlToPem(crlBytes);
  } catch (error) {
    if (!(error instanceof CrlError)) throw error;
    return fail(
      "tls.crl",
      `must hold a PEM CRL ("-----BEGIN X509 CRL-----") or a DER CRL, ${
        JSON.stringify(tls.crl)
      } holds neither`,
      error,
    );
  }
  let list: RevocationList;
  try {
    list = await RevocationList.parse(crl, store);
  } catch (error) {
    if (!(error instanceof CrlError)) throw error;
    return fail(
      "tls.crl",
      `cannot be used: ${error.message.replace(/^Cannot use /, "")} (in ${
        JSON.stringify(tls.crl)
      })`,
      error,
    );
  }
  return { ca, cert, key, crl, certificates, crls: list.lists, authorities };
}

/**
 * Reads the admin endpoint's bearer token from `[admin] token_file`: the file's
 * text with surrounding whitespace trimmed, which must be at least 32 visible
 * ASCII characters (`openssl rand -hex 32` makes one).
 *
 * @example Usage
 * ```ts
 * import { loadAdminToken, parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/admin.token`, "0123456789abcdef0123456789abcdef\n");
 * const config = parseConfig(
 *   `[tls]
 * ca = "ca.crt"
 * cert = "server.crt"
 * key = "server.key"
 * [admin]
 * listen = "127.0.0.1:9000"
 * token_file = "admin.token"
 * [groups.echo]
 * upstreams = ["127.0.0.1:7001"]
 * listen = "127.0.0.1:8443"
 * `,
 *   { path: `${dir}/lb.toml` },
 * );
 * assert.equal(await loadAdminToken(config), "0123456789abcdef0123456789abcdef");
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param config The config (its `path` is used in errors).
 * @returns The token, or `undefined` when `token_file` is not set.
 * @throws {ConfigError} With key `admin.token_file` when the file cannot be read, is
 *   empty, or holds anything but one token of at least 32 visible ASCII characters.
 */
export async function loadAdminToken(
  config: Pick<Config, "path" | "admin">,
): Promise<string | undefined> {
  const file = config.admin.tokenFile;
  if (file === undefined) return undefined;
  const key = "admin.token_file";
  const fail = (detail: string, cause?: unknown): never => {
    throw new ConfigError(`${JSON.stringify(key)} ${detail}`, {
      path: config.path,
      key,
      line: TOKEN_FILE_LINES.get(config.admin),
      cause,
    });
  };
  let token: string;
  try {
    token = (await Deno.readTextFile(file)).trim();
  } catch (error) {
    return fail(`cannot be read from ${JSON.stringify(file)}: ${fileError(error)}`, error);
  }
  if (token === "") fail(`names an empty file, ${JSON.stringify(file)}: it must hold the token`);
  if (!/^[\x21-\x7e]+$/.test(token)) {
    fail(
      `must hold one token of visible ASCII characters (no spaces or lines), ${
        JSON.stringify(file)
      } holds something else`,
    );
  }
  if (token.length < MIN_TOKEN_LENGTH) {
    fail(
      `must hold a token of at least ${MIN_TOKEN_LENGTH} characters (openssl rand -hex 32), ${
        JSON.stringify(file)
      } holds ${token.length}`,
    );
  }
  return token;
}

// ---------------------------------------------------------------------------------------
// Sections

type Table = Record<string, unknown>;

function readServer(r: _Reader, t: Table): ServerConfig {
  const p = "server";
  r.keys(t, p, [
    "listen",
    "handshake_timeout",
    "connect_timeout",
    "connect_retries",
    "idle_timeout",
    "drain_timeout",
    "workers",
    "max_connections",
    "max_handshakes",
    "on_policy_change",
    "max_lifetime",
    "max_buffer",
    "watch",
  ]);
  const server: ServerConfig = {
    handshakeTimeout: r.duration(t, p, "handshake_timeout") ?? 5000,
    connectTimeout: r.duration(t, p, "connect_timeout") ?? 3000,
    connectRetries: r.integer(t, p, "connect_retries", 0, 10) ?? 2,
    idleTimeout: r.duration(t, p, "idle_timeout") ?? 15 * 60_000,
    drainTimeout: r.duration(t, p, "drain_timeout") ?? 30_000,
    watch: r.boolean(t, p, "watch") ?? false,
    onPolicyChange: r.oneOf(t, p, "on_policy_change", ["close", "keep"] as const) ?? "close",
    maxBuffer: r.size(t, p, "max_buffer", 16 * 1024) ?? 1024 * 1024,
  };
  const listen = r.address(t, p, "listen", true);
  const workers = r.integer(t, p, "workers", 1, 1024);
  const maxConnections = r.integer(t, p, "max_connections", 1);
  if (listen !== undefined) server.listen = listen;
  if (workers !== undefined) server.workers = workers;
  if (maxConnections !== undefined) server.maxConnections = maxConnections;
  const maxHandshakes = r.integer(t, p, "max_handshakes", 1);
  if (maxHandshakes !== undefined) server.maxHandshakes = maxHandshakes;
  const maxLifetime = r.duration(t, p, "max_lifetime");
  if (maxLifetime !== undefined) server.maxLifetime = maxLifetime;
  return server;
}

function readTls(r: _Reader, t: Table, baseDir: string): TlsConfig {
  const p = "tls";
  r.keys(t, p, ["ca", "cert", "key", "ciphers", "crl", "client_eku", "crl_missing"]);
  const file = (key: string, required: boolean): string | undefined => {
    const value = r.string(t, p, key, required);
    return value === undefined
      ? undefined
      : isAbsolute(value)
      ? normalize(value)
      : join(baseDir, value);
  };
  const tls: TlsConfig = {
    ca: file("ca", true)!,
    cert: file("cert", true)!,
    key: file("key", true)!,
    ciphers: [...DEFAULT_CIPHERS],
    clientEku: r.oneOf(t, p, "client_eku", ["required", "optional"] as const) ?? "required",
    crlMissing: r.oneOf(t, p, "crl_missing", ["refuse", "allow"] as const) ?? "refuse",
  };
  const ciphers = r.array(t, p, "ciphers", false);
  if (ciphers !== undefined) {
    if (ciphers.length === 0) r.fail("tls.ciphers", "must list at least one cipher suite");
    tls.ciphers = ciphers.map((value, i) => {
      const key = `tls.ciphers[${i}]`;
      if (typeof value !== "string" || !TLS13_CIPHERS.includes(value)) {
        r.fail(
          key,
          `must be a TLS 1.3 cipher suite (${TLS13_CIPHERS.join(", ")}), received ${
            describe(value)
          }`,
        );
      }
      if (ciphers.indexOf(value) !== i) r.fail(key, `repeats ${describe(value)}`);
      return value;
    });
  }
  const crl = file("crl", false);
  if (crl !== undefined) tls.crl = crl;
  TLS_FILE_LINES.set(
    tls,
    Object.fromEntries(["ca", "cert", "key", "crl"].map((k) => [`${p}.${k}`, r.line(`${p}.${k}`)])),
  );
  return tls;
}

function readLimits(r: _Reader, t: Table): LimitsConfig {
  r.keys(t, "limits", ["max_connections_per_client", "connection_rate"]);
  const limits: LimitsConfig = {
    maxConnectionsPerClient: r.integer(t, "limits", "max_connections_per_client", 1) ?? 10,
  };
  const rate = readRate(r, t, "limits");
  if (rate !== undefined) limits.connectionRate = rate;
  return limits;
}

function readRate(r: _Reader, t: Table, path: string): ConnectionRate | undefined {
  if (t.connection_rate === undefined) return undefined;
  const rt = r.table(t, path, "connection_rate", true);
  const p = `${path}.connection_rate`;
  r.keys(rt, p, ["count", "per"]);
  return {
    count: r.integer(rt, p, "count", 1, undefined, true)!,
    per: r.duration(rt, p, "per", true)!,
  };
}

function readHealth(r: _Reader, t: Table, path: string, base: HealthConfig): HealthConfig {
  const health: HealthConfig = {
    interval: r.duration(t, path, "interval") ?? base.interval,
    timeout: r.duration(t, path, "timeout") ?? base.timeout,
    rise: r.integer(t, path, "rise", 1, 1000) ?? base.rise,
    fall: r.integer(t, path, "fall", 1, 1000) ?? base.fall,
  };
  // An empty string turns a probe step off, so a group can drop an inherited send/expect.
  const send = r.string(t, path, "send", false, true) ?? base.send;
  const expect = r.string(t, path, "expect", false, true) ?? base.expect;
  if (send !== undefined && send !== "") health.send = send;
  if (expect !== undefined && expect !== "") health.expect = expect;
  return health;
}

function readOutlier(r: _Reader, t: Table, path: string, base: OutlierConfig): OutlierConfig {
  const outlier: OutlierConfig = {
    consecutiveFailures: r.integer(t, path, "consecutive_failures", 0, 1000) ??
      base.consecutiveFailures,
    baseEjectionTime: r.duration(t, path, "base_ejection_time") ?? base.baseEjectionTime,
    maxEjectionTime: r.duration(t, path, "max_ejection_time") ?? base.maxEjectionTime,
    maxEjectedPercent: r.integer(t, path, "max_ejected_percent", 0, 100) ??
      base.maxEjectedPercent,
    panicThreshold: r.integer(t, path, "panic_threshold", 0, 100) ?? base.panicThreshold,
  };
  if (outlier.maxEjectionTime < outlier.baseEjectionTime) {
    const max = formatDuration(outlier.maxEjectionTime);
    const base = formatDuration(outlier.baseEjectionTime);
    if (t.max_ejection_time !== undefined) {
      r.fail(
        `${path}.max_ejection_time`,
        `must be at least base_ejection_time ("${base}"), received "${max}"`,
      );
    }
    r.fail(
      `${path}.base_ejection_time`,
      `must be at most max_ejection_time ("${max}"), received "${base}"`,
    );
  }
  return outlier;
}

function readGroups(
  r: _Reader,
  t: Table,
  health: HealthConfig,
  outlier: OutlierConfig,
): Map<string, GroupConfig> {
  const groups = new Map<string, GroupConfig>();
  const lowerNames = new Map<string, string>();
  for (const name of Object.keys(t)) {
    const p = `groups.${name}`;
    r.name(p, name);
    const other = lowerNames.get(name.toLowerCase());
    if (other !== undefined) {
      r.fail(p, `differs from group "${other}" only in letter case: TLS SNI names ignore case`);
    }
    lowerNames.set(name.toLowerCase(), name);
    const g = r.table(t, "groups", name, true);
    r.keys(g, p, ["upstreams", "listen", "health", "outlier", "proxy_protocol", "alpn"]);

    const list = r.array(g, p, "upstreams", true)!;
    if (list.length === 0) r.fail(`${p}.upstreams`, "must list at least one upstream");
    const seen = new Map<string, number>();
    const upstreams = list.map((item, i): UpstreamConfig => {
      const key = `${p}.upstreams[${i}]`;
      let upstream: UpstreamConfig;
      if (typeof item === "string") {
        upstream = { address: r.parseAddress(key, item, false), weight: 1 };
      } else if (isTable(item)) {
        r.keys(item, key, ["address", "weight"]);
        upstream = {
          address: r.address(item, key, "address", false, true)!,
          weight: r.integer(item, key, "weight", 1, 1000) ?? 1,
        };
      } else {
        return r.fail(
          key,
          `must be "host:port" or { address, weight }, received ${describe(item)}`,
        );
      }
      const id = upstream.address.toLowerCase();
      const first = seen.get(id);
      if (first !== undefined) {
        r.fail(
          key,
          `repeats ${JSON.stringify(upstream.address)}, already ${p}.upstreams[${first}]`,
        );
      }
      seen.set(id, i);
      return upstream;
    });

    let groupHealth = health;
    if (g.health !== undefined) {
      const h = r.table(g, p, "health", true);
      r.keys(h, `${p}.health`, HEALTH_KEYS);
      groupHealth = readHealth(r, h, `${p}.health`, health);
    }
    let groupOutlier = outlier;
    if (g.outlier !== undefined) {
      const o = r.table(g, p, "outlier", true);
      r.keys(o, `${p}.outlier`, OUTLIER_KEYS);
      groupOutlier = readOutlier(r, o, `${p}.outlier`, outlier);
    }
    const group: GroupConfig = { name, upstreams, health: groupHealth, outlier: groupOutlier };
    const listen = r.address(g, p, "listen", true);
    if (listen !== undefined) group.listen = listen;
    const proxy = r.oneOf(g, p, "proxy_protocol", ["v2"] as const);
    if (proxy !== undefined) group.proxyProtocol = proxy;
    const alpn = r.array(g, p, "alpn", false);
    if (alpn !== undefined) {
      group.alpn = alpn.map((item, i) => {
        if (typeof item !== "string" || !ALPN_RE.test(item)) {
          return r.fail(
            `${p}.alpn[${i}]`,
            `must be an ALPN protocol name (1 to 255 printable ASCII characters, such as "h2"), received ${
              describe(item)
            }`,
          );
        }
        return item;
      });
    }
    groups.set(name, group);
  }
  if (groups.size === 0) r.fail("groups", "must define at least one group, such as [groups.app]");
  return groups;
}

function readClients(
  r: _Reader,
  t: Table,
  groups: ReadonlyMap<string, GroupConfig>,
): Map<string, ClientConfig> {
  const clients = new Map<string, ClientConfig>();
  for (const name of Object.keys(t)) {
    const p = `clients.${name}`;
    r.name(p, name);
    const c = r.table(t, "clients", name, true);
    r.keys(c, p, ["match", "groups", "max_connections", "connection_rate"]);

    const m = r.table(c, p, "match", true);
    const mp = `${p}.match`;
    r.keys(m, mp, [...MATCH_KEYS]);
    if (!MATCH_KEYS.some((key) => m[key] !== undefined)) {
      r.fail(mp, `must give at least one of ${MATCH_KEYS.join(", ")}`);
    }
    const match: ClientMatch = {};
    const sha256 = (key: string, what: string): string | undefined => {
      const value = r.string(m, mp, key, false);
      if (value === undefined) return undefined;
      const trimmed = value.trim();
      const hex = HEX_RE.test(trimmed) ? trimmed.replaceAll(":", "").toLowerCase() : "";
      if (hex.length !== 64) {
        r.fail(
          `${mp}.${key}`,
          `must be ${what} in hex (64 digits, colons optional), received ${describe(value)}`,
        );
      }
      return hex;
    };
    const spki = sha256("spki_sha256", "a SHA-256");
    if (spki !== undefined) match.spkiSha256 = spki;
    const issuer = sha256(
      "issuer",
      "the SHA-256 of the issuing CA's public key (as `check` lists it)",
    );
    if (issuer !== undefined) match.issuer = issuer;
    const serial = r.string(m, mp, "serial", false);
    if (serial !== undefined) {
      try {
        match.serial = normalizeHex(serial);
      } catch {
        r.fail(
          `${mp}.serial`,
          `must be a serial number in hex (colons optional), received ${describe(serial)}`,
        );
      }
    }
    const cn = r.string(m, mp, "cn", false);
    const sanUri = r.string(m, mp, "san_uri", false);
    const sanDns = r.string(m, mp, "san_dns", false);
    if (cn !== undefined) match.cn = cn;
    if (sanUri !== undefined) match.sanUri = sanUri;
    if (sanDns !== undefined) match.sanDns = sanDns.toLowerCase();

    const list = r.array(c, p, "groups", true)!;
    if (list.length === 0) r.fail(`${p}.groups`, "must list at least one group");
    const allowed = list.map((group, i) => {
      const key = `${p}.groups[${i}]`;
      if (typeof group !== "string") {
        r.fail(key, `must be a group name, received ${describe(group)}`);
      }
      if (!groups.has(group)) {
        r.fail(key, `must name a group defined under [groups], received ${describe(group)}`);
      }
      if (list.indexOf(group) !== i) r.fail(key, `repeats ${describe(group)}`);
      return group;
    });

    const client: ClientConfig = { name, match, groups: allowed };
    const max = r.integer(c, p, "max_connections", 1);
    if (max !== undefined) client.maxConnections = max;
    const rate = readRate(r, c, p);
    if (rate !== undefined) client.connectionRate = rate;
    clients.set(name, client);
  }
  return clients;
}

function readAdmin(r: _Reader, t: Table, baseDir: string): AdminConfig {
  const p = "admin";
  r.keys(t, p, ["listen", "allow_reload", "hosts", "token_file"]);
  const admin: AdminConfig = {
    allowReload: r.boolean(t, p, "allow_reload") ?? false,
    hosts: (r.array(t, p, "hosts", false) ?? []).map((value, i, list) => {
      const key = `${p}.hosts[${i}]`;
      const name = typeof value === "string" ? value.toLowerCase() : "";
      if (name.length > 253 || !HOST_NAME_RE.test(name)) {
        r.fail(
          key,
          `must be a host name such as "mtlb.internal" (no port, no wildcard), received ${
            describe(value)
          }`,
        );
      }
      const first = list.findIndex((other) =>
        typeof other === "string" && other.toLowerCase() === name
      );
      if (first !== i) r.fail(key, `repeats ${describe(value)}, already ${p}.hosts[${first}]`);
      return name;
    }),
  };
  const listen = r.address(t, p, "listen", true);
  if (listen !== undefined) admin.listen = listen;
  const tokenFile = r.string(t, p, "token_file", false);
  if (tokenFile !== undefined) {
    admin.tokenFile = isAbsolute(tokenFile) ? normalize(tokenFile) : join(baseDir, tokenFile);
    TOKEN_FILE_LINES.set(admin, r.line(`${p}.token_file`));
  }
  return admin;
}

function readCluster(r: _Reader, t: Table): ClusterConfig | undefined {
  const p = "cluster";
  r.keys(t, p, ["store", "on_store_error", "lease_ttl", "timeout", "instance_id"]);
  if (Object.keys(t).length === 0) return undefined;
  const store = r.string(t, p, "store", true)!;
  let url: URL | undefined;
  try {
    url = new URL(store);
  } catch {
    url = undefined;
  }
  if (
    url === undefined || (url.protocol !== "redis:" && url.protocol !== "rediss:") || !url.hostname
  ) {
    r.fail(
      `${p}.store`,
      `must be a Redis URL such as "redis://127.0.0.1:6379", received ${describe(store)}`,
    );
  }
  const host = url!.hostname;
  const storeAddress = `${host}:${url!.port === "" ? 6379 : url!.port}`;
  const cluster: ClusterConfig = {
    store,
    storeAddress,
    onStoreError: r.oneOf(t, p, "on_store_error", ["local", "closed"] as const) ?? "local",
    leaseTtl: r.duration(t, p, "lease_ttl") ?? 15_000,
    timeout: r.duration(t, p, "timeout") ?? 250,
  };
  if (cluster.leaseTtl < 1000) r.fail(`${p}.lease_ttl`, "must be at least 1s");
  const id = r.string(t, p, "instance_id", false);
  if (id !== undefined) cluster.instanceId = id;
  return cluster;
}

// ---------------------------------------------------------------------------------------
// Cross-checks

function checkListeners(
  r: _Reader,
  server: ServerConfig,
  groups: ReadonlyMap<string, GroupConfig>,
  admin: AdminConfig,
): void {
  const listeners: [key: string, address: string][] = [];
  if (server.listen !== undefined) listeners.push(["server.listen", server.listen]);
  for (const group of groups.values()) {
    if (group.listen !== undefined) listeners.push([`groups.${group.name}.listen`, group.listen]);
  }
  if (listeners.length === 0) {
    r.fail("server.listen", "must be set when no group has its own listen: nothing would listen");
  }
  if (server.listen === undefined) {
    for (const group of groups.values()) {
      if (group.listen === undefined) {
        r.fail(
          `groups.${group.name}`,
          `needs a listen address: "server.listen" is not set, so no listener reaches this group`,
        );
      }
    }
  }
  if (admin.listen !== undefined) listeners.push(["admin.listen", admin.listen]);
  for (let i = 0; i < listeners.length; i++) {
    const [key, address] = listeners[i]!;
    const a = parseHostPort(address);
    for (const [otherKey, otherAddress] of listeners.slice(0, i)) {
      if (bindConflict(a, parseHostPort(otherAddress))) {
        r.fail(key, `uses ${JSON.stringify(address)}, which "${otherKey}" already listens on`);
      }
    }
  }
}

/** Two listeners cannot both bind: same port (not 0) on the same or an overlapping host. */
function bindConflict(a: HostPort, b: HostPort): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  const x = a.hostname.toLowerCase();
  const y = b.hostname.toLowerCase();
  if (x === y || x === "::" || y === "::") return true;
  return (x === "0.0.0.0" && !y.includes(":")) || (y === "0.0.0.0" && !x.includes(":"));
}

/**
 * A client whose match fields include all of another client's fields can never be
 * identified alone: every certificate it matches matches the other one too.
 */
function checkAmbiguousClients(r: _Reader, clients: ReadonlyMap<string, ClientConfig>): void {
  const entries = (c: ClientConfig): string[] =>
    Object.entries(c.match).map(([field, value]) => `${field}=${value}`);
  const byEntry = new Map<string, ClientConfig[]>();
  for (const client of clients.values()) {
    for (const entry of entries(client)) {
      const list = byEntry.get(entry);
      if (list === undefined) byEntry.set(entry, [client]);
      else list.push(client);
    }
  }
  for (const client of clients.values()) {
    const mine = new Set(entries(client));
    const candidates = new Set<ClientConfig>();
    for (const entry of mine) for (const other of byEntry.get(entry)!) candidates.add(other);
    for (const other of candidates) {
      if (other === client) continue;
      const theirs = entries(other);
      if (!theirs.every((entry) => mine.has(entry))) continue;
      if (theirs.length === mine.size) {
        // Identical sets: report the later entry of the two, once.
        if ([...clients.values()].indexOf(other) > [...clients.values()].indexOf(client)) continue;
        r.fail(
          `clients.${client.name}.match`,
          `is the same as "clients.${other.name}.match": a certificate matching one matches both`,
        );
      }
      r.fail(
        `clients.${client.name}.match`,
        `can never match alone: every certificate it matches also matches "clients.${other.name}.match"`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------
// Typed reads with key paths and lines

function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

function describe(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  }
  if (typeof value === "bigint" || typeof value === "number" || typeof value === "boolean") {
    return String(value);
  }
  if (value instanceof Date) return "a date";
  if (Array.isArray(value)) return "an array";
  return "a table";
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Why a file named by the config could not be read, without the OS error's repetition of the path. */
function fileError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied (file mode)";
  if (error instanceof Deno.errors.IsADirectory) return "it is a folder";
  return errorMessage(error);
}

class _Reader {
  #text: string;
  #path: string;
  #lines: Map<string, number> | undefined;

  constructor(text: string, path: string) {
    this.#text = text;
    this.#path = path;
  }

  fail(key: string, detail: string): never {
    throw new ConfigError(`${JSON.stringify(key)} ${detail}`, {
      path: this.#path,
      key,
      line: this.line(key),
    });
  }

  line(key: string): number | undefined {
    this.#lines ??= keyLines(this.#text);
    return lineOf(this.#lines, key);
  }

  keys(t: Table, path: string, allowed: readonly string[]): void {
    for (const key of Object.keys(t)) {
      if (!allowed.includes(key)) {
        this.fail(
          path === "" ? key : `${path}.${key}`,
          `is not a known key: expected one of ${allowed.join(", ")}`,
        );
      }
    }
  }

  name(path: string, name: string): void {
    if (!NAME_RE.test(name)) {
      this.fail(
        path,
        `has a bad name: expected letters, digits, "_", "." or "-", not starting with a symbol, received ${
          describe(name)
        }`,
      );
    }
  }

  table(t: Table, path: string, key: string, required: boolean): Table {
    const value = t[key];
    const p = path === "" ? key : `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return {};
    }
    if (!isTable(value)) this.fail(p, `must be a table, received ${describe(value)}`);
    return value;
  }

  array(t: Table, path: string, key: string, required: boolean): unknown[] | undefined {
    const value = t[key];
    if (value === undefined) {
      if (required) this.fail(`${path}.${key}`, "is required");
      return undefined;
    }
    if (!Array.isArray(value)) {
      this.fail(`${path}.${key}`, `must be an array, received ${describe(value)}`);
    }
    return value;
  }

  string(
    t: Table,
    path: string,
    key: string,
    required: boolean,
    allowEmpty = false,
  ): string | undefined {
    const value = t[key];
    if (value === undefined) {
      if (required) this.fail(`${path}.${key}`, "is required");
      return undefined;
    }
    if (typeof value !== "string" || (!allowEmpty && value === "")) {
      this.fail(`${path}.${key}`, `must be a non-empty string, received ${describe(value)}`);
    }
    return value;
  }

  boolean(t: Table, path: string, key: string): boolean | undefined {
    const value = t[key];
    if (value === undefined || typeof value === "boolean") return value;
    return this.fail(`${path}.${key}`, `must be true or false, received ${describe(value)}`);
  }

  oneOf<T extends string>(
    t: Table,
    path: string,
    key: string,
    choices: readonly T[],
  ): T | undefined {
    const value = t[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
      this.fail(
        `${path}.${key}`,
        `must be ${choices.map((c) => JSON.stringify(c)).join(" or ")}, received ${
          describe(value)
        }`,
      );
    }
    return value as T;
  }

  integer(
    t: Table,
    path: string,
    key: string,
    min: number,
    max: number = Number.MAX_SAFE_INTEGER,
    required = false,
  ): number | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return undefined;
    }
    if (typeof value !== "bigint") this.fail(p, `must be an integer, received ${describe(value)}`);
    if (value < BigInt(min) || value > BigInt(max)) {
      this.fail(
        p,
        max === Number.MAX_SAFE_INTEGER
          ? `must be at least ${min}, received ${value}`
          : `must be from ${min} to ${max}, received ${value}`,
      );
    }
    return Number(value);
  }

  size(t: Table, path: string, key: string, min = 1): number | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) return undefined;
    let bytes = NaN;
    if (typeof value === "string") {
      try {
        bytes = parseSize(value);
      } catch {
        // Reported below with the key path.
      }
    }
    if (Number.isNaN(bytes)) {
      this.fail(
        p,
        `must be a size such as "64KiB", "1MiB" or "10MB" (B, KB, MB, GB, KiB, MiB, GiB), received ${
          describe(value)
        }`,
      );
    }
    if (bytes < min) this.fail(p, `must be at least ${min} bytes, received ${describe(value)}`);
    return bytes;
  }

  duration(t: Table, path: string, key: string, required = false): number | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return undefined;
    }
    let ms = NaN;
    if (typeof value === "string") {
      try {
        ms = parseDuration(value);
      } catch {
        // Reported below with the key path.
      }
    }
    if (Number.isNaN(ms)) {
      this.fail(
        p,
        `must be a duration such as "500ms", "30s", "5m" or "1h", received ${describe(value)}`,
      );
    }
    if (ms <= 0) this.fail(p, `must be longer than zero, received ${describe(value)}`);
    if (ms > MAX_TIMER_MS) this.fail(p, `must be at most "596h", received ${describe(value)}`);
    return ms;
  }

  address(
    t: Table,
    path: string,
    key: string,
    allowPortZero: boolean,
    required = false,
  ): string | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return undefined;
    }
    return this.parseAddress(p, value, allowPortZero);
  }

  parseAddress(key: string, value: unknown, allowPortZero: boolean): string {
    let address: HostPort | undefined;
    if (typeof value === "string") {
      try {
        address = parseHostPort(value);
      } catch {
        // Reported below with the key path.
      }
    }
    if (address === undefined) this.fail(key, `must be "host:port", received ${describe(value)}`);
    if (address.port === 0 && !allowPortZero) {
      this.fail(key, `must have a port from 1 to 65535, received ${describe(value)}`);
    }
    return formatHostPort(address);
  }
}

/** Finds the line of `key`, else of its nearest recorded parent (`a.b[1].c` -> `a.b[1]` -> `a.b`). */
function lineOf(lines: Map<string, number>, key: string): number | undefined {
  for (let k = key;;) {
    const line = lines.get(k);
    if (line !== undefined) return line;
    const cut = Math.max(k.lastIndexOf("."), k.lastIndexOf("["));
    if (cut <= 0) return undefined;
    k = k.slice(0, cut);
  }
}

/**
 * Maps key paths (`groups.cache`, `groups.cache.upstreams[1]`, `clients.a.match.cn`) to
 * the line they start on. Runs only after the TOML parser accepted the text, and only
 * when an error is reported; best effort: on anything unexpected it stops and returns
 * what it has.
 */
function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  const n = text.length;
  let i = 0;
  let line = 1;

  const skip = (newlines: boolean): void => {
    while (i < n) {
      const c = text[i];
      if (c === " " || c === "\t" || c === "\r") i++;
      else if (c === "\n" && newlines) {
        line++;
        i++;
      } else if (c === "#") {
        while (i < n && text[i] !== "\n") i++;
      } else break;
    }
  };
  const string = (): string => {
    const quote = text[i]!;
    const triple = text.startsWith(quote.repeat(3), i);
    const close = triple ? quote.repeat(3) : quote;
    i += close.length;
    let value = "";
    while (i < n && !text.startsWith(close, i)) {
      if (quote === '"' && text[i] === "\\") value += text[i++];
      if (text[i] === "\n") line++;
      value += text[i++];
    }
    if (i >= n) throw new SyntaxError("unterminated string");
    i += close.length;
    if (triple) { while (text[i] === quote) i++; // """a"""" ends with a quote in the value.
     }
    return value;
  };
  const key = (): string[] => {
    const parts: string[] = [];
    for (;;) {
      skip(false);
      if (text[i] === '"' || text[i] === "'") parts.push(string());
      else {
        const start = i;
        while (i < n && /[A-Za-z0-9_-]/.test(text[i]!)) i++;
        if (i === start) throw new SyntaxError("key expected");
        parts.push(text.slice(start, i));
      }
      skip(false);
      if (text[i] !== ".") return parts;
      i++;
    }
  };
  const value = (path: string): void => {
    skip(false);
    const c = text[i];
    if (c === "[") {
      i++;
      for (let index = 0;; index++) {
        skip(true);
        if (text[i] === "]") break;
        const p = `${path}[${index}]`;
        lines.set(p, line);
        value(p);
        skip(true);
        if (text[i] === ",") i++;
        else if (text[i] !== "]") throw new SyntaxError("array");
      }
      i++;
    } else if (c === "{") {
      i++;
      for (;;) {
        skip(true);
        if (text[i] === "}") break;
        const p = [path, ...key()].join(".");
        lines.set(p, line);
        if (text[i] !== "=") throw new SyntaxError("= expected");
        i++;
        value(p);
        skip(true);
        if (text[i] === ",") i++;
        else if (text[i] !== "}") throw new SyntaxError("inline table");
      }
      i++;
    } else if (c === '"' || c === "'") {
      string();
    } else {
      const start = i;
      while (i < n && !/[,\]}\s#]/.test(text[i]!)) i++;
      if (i === start) throw new SyntaxError("value expected");
    }
  };

  try {
    let table = "";
    const arrayCounts = new Map<string, number>();
    for (;;) {
      skip(true);
      if (i >= n) break;
      if (text[i] === "[") {
        const isArray = text[i + 1] === "[";
        i += isArray ? 2 : 1;
        table = key().join(".");
        if (isArray) {
          const index = arrayCounts.get(table) ?? 0;
          arrayCounts.set(table, index + 1);
          if (!lines.has(table)) lines.set(table, line);
          table = `${table}[${index}]`;
        }
        if (!lines.has(table)) lines.set(table, line);
      } else {
        const p = [table, ...key()].filter((part) => part !== "").join(".");
        if (!lines.has(p)) lines.set(p, line);
        if (text[i] !== "=") throw new SyntaxError("= expected");
        i++;
        value(p);
      }
      while (i < n && text[i] !== "\n") i++; // Rest of the line: "]", a comment, a date's time.
    }
  } catch {
    // Best effort: keep what was found before the scanner lost its way.
  }
  return lines;
}
