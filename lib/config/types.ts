/**
 * The shape of a validated mtlb configuration: one interface per section of the TOML
 * file, field names in camelCase, durations in milliseconds, defaults filled in.
 *
 * These types are what every reader of the file produces and every part of the
 * balancer consumes; they depend on no parser.
 *
 * @module
 */
import type { ConnectionRate } from "../limiter/store.ts";
import type { CrlMissingMode } from "../identity/crl.ts";
import type { ClientEkuMode } from "../identity/certificate.ts";

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
