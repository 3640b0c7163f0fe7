/**
 * The shape of a validated mtlb configuration: one interface per table of the TOML
 * file, field names in camelCase, durations in milliseconds, sizes in bytes, defaults
 * filled in. These types depend on no parser. Each field names its TOML key; what it
 * does, its default and its range are in the reference, docs/CONFIG.md.
 *
 * @module
 */
import type { ConnectionRate } from "../limiter/store.ts";
import type { CrlMissingMode } from "../identity/crl.ts";
import type { ClientEkuMode } from "../identity/certificate.ts";

/** The `[server]` table. */
export interface ServerConfig {
  /** Shared listener, `host:port`; unset when every group has its own (`listen`). */
  listen?: string;
  /** TLS handshake time limit, ms (`handshake_timeout`). */
  handshakeTimeout: number;
  /** Time limit of one dial to an upstream, ms (`connect_timeout`). */
  connectTimeout: number;
  /** Dials made again after a failed one, each to another upstream (`connect_retries`). */
  connectRetries: number;
  /** A connection idle this long both ways is closed, ms (`idle_timeout`). */
  idleTimeout: number;
  /** Time connections get to finish when draining, ms (`drain_timeout`). */
  drainTimeout: number;
  /** Worker count; unset: one per CPU (`workers`). */
  workers?: number;
  /** DNS server of the upstreams looked up in DNS, `IP:port`; unset: the system's (`resolver`). */
  resolver?: string;
  /** Cap on open client connections; unset: from the open-files limit (`max_connections`). */
  maxConnections?: number;
  /** Cap on TLS handshakes in flight; unset: from `max_connections` (`max_handshakes`). */
  maxHandshakes?: number;
  /** What a reload does to live connections it would now refuse (`on_policy_change`). */
  onPolicyChange: "close" | "keep";
  /** The longest a forwarded connection may last, ms; unset: no bound (`max_lifetime`). */
  maxLifetime?: number;
  /** Bytes buffered per connection and direction at most (`max_buffer`). */
  maxBuffer: number;
  /** Reload when the config file or a `[tls]` file changes (`watch`). */
  watch: boolean;
}

/** The `[tls]` table. Paths are resolved against the config file's folder. */
export interface TlsConfig {
  /** CA bundle client certificates must chain to, PEM file path (`ca`). */
  ca: string;
  /** Server certificate (chain), PEM file path (`cert`). */
  cert: string;
  /** Server private key, PEM file path (`key`). */
  key: string;
  /** TLS 1.3 cipher suites, in order of preference (`ciphers`). */
  ciphers: string[];
  /** Certificate revocation lists of the CAs, file path (`crl`). */
  crl?: string;
  /** Whether a client certificate must list clientAuth in its EKU (`client_eku`). */
  clientEku: ClientEkuMode;
  /** With `crl`, what a certificate of a CA without a CRL gets (`crl_missing`). */
  crlMissing: CrlMissingMode;
}

/** The `[limits]` table: defaults for every client. */
export interface LimitsConfig {
  /** Concurrent connections per client identity (`max_connections_per_client`). */
  maxConnectionsPerClient: number;
  /** New connections per client identity per window (`connection_rate`). */
  connectionRate?: ConnectionRate;
  /** Over a rate limit: refuse (`"reject"`) or wait for a token (`"queue"`) (`on_rate_limit`). */
  onRateLimit: "reject" | "queue";
  /** The longest wait in the queue, ms (`queue_timeout`). */
  queueTimeout: number;
  /** Bytes per second per client and direction, over all its connections (`bandwidth`). */
  bandwidth?: number;
}

/** Health check settings: the `[health]` table, or a group's effective settings. */
export interface HealthConfig {
  /** Time between probes, ms (`interval`). */
  interval: number;
  /** Time allowed for one probe, ms (`timeout`). */
  timeout: number;
  /** Consecutive successes that mark an upstream healthy (`rise`). */
  rise: number;
  /** Consecutive failures that mark an upstream unhealthy (`fall`). */
  fall: number;
  /** Bytes to send after connecting; unset: a plain TCP connect check (`send`). */
  send?: string;
  /** Bytes the reply must start with (`expect`). */
  expect?: string;
}

/** Passive outlier detection: the `[outlier]` table, or a group's effective settings. */
export interface OutlierConfig {
  /** Failures of one kind in a row that eject an upstream; 0: never (`consecutive_failures`). */
  consecutiveFailures: number;
  /** The first ejection, ms (`base_ejection_time`). */
  baseEjectionTime: number;
  /** The longest ejection, ms (`max_ejection_time`). */
  maxEjectionTime: number;
  /** The largest share of a group ejected at once, percent (`max_ejected_percent`). */
  maxEjectedPercent: number;
  /** Below this share of available upstreams, percent, panic mode (`panic_threshold`). */
  panicThreshold: number;
}

/** One upstream of a group. */
export interface UpstreamConfig {
  /** `host:port`, port not 0 (`address`). */
  address: string;
  /** Relative weight, 1 to 1000 (`weight`). */
  weight: number;
}

/** An entry of `upstreams` looked up in DNS every `interval` ms (`dns`, `srv`, `interval`). */
export type DnsUpstreamConfig =
  | { type: "dns"; name: string; port: number; interval: number }
  | { type: "srv"; name: string; interval: number };

/** A `[groups.NAME]` table. */
export interface GroupConfig {
  /** The group name (the table key). */
  name: string;
  /** Upstreams given by address, each once; none when every entry is looked up in DNS (`upstreams`). */
  upstreams: UpstreamConfig[];
  /** Entries of `upstreams` looked up in DNS, `{ dns = ... }` and `{ srv = ... }`, in file order. */
  dns: DnsUpstreamConfig[];
  /** Listener of the group's own, `host:port` (`listen`). */
  listen?: string;
  /** Effective health settings: `[health]` overridden key by key (`health`). */
  health: HealthConfig;
  /** Effective outlier settings: `[outlier]` overridden key by key (`outlier`). */
  outlier: OutlierConfig;
  /** PROXY protocol header sent to upstreams (`proxy_protocol`). */
  proxyProtocol?: "v2";
  /** ALPN protocols that may be selected for its clients, in order of preference (`alpn`). */
  alpn?: string[];
  /**
   * `tls`: connect to its upstreams over TLS. Paths are resolved against the config
   * file's folder.
   *
   * @default {undefined}
   */
  tls?: UpstreamTlsConfig;
  /** Concurrent connections to the group over all clients (`max_connections`). */
  maxConnections?: number;
}

/** A group's `tls` table: how mtlb verifies its upstreams and what it presents to them. */
export interface UpstreamTlsConfig {
  /** CA bundle (PEM) the upstreams' certificates must chain to. */
  ca: string;
  /**
   * Client certificate (PEM) presented to upstreams; with `key`.
   *
   * @default {undefined}
   */
  cert?: string;
  /**
   * Its private key (PEM).
   *
   * @default {undefined}
   */
  key?: string;
  /**
   * The name sent as SNI and verified (lowercase); each upstream's host when absent.
   *
   * @default {undefined}
   */
  serverName?: string;
}

/** How a client certificate is recognised; every field given must match. Hex is lowercase. */
export interface ClientMatch {
  /** SHA-256 of the DER SubjectPublicKeyInfo, 64 hex digits (`spki_sha256`). */
  spkiSha256?: string;
  /** Serial number, hex without colons or leading zeros (`serial`). */
  serial?: string;
  /** Subject common name, exact (`cn`). */
  cn?: string;
  /** A URI subject alternative name, such as a SPIFFE ID (`san_uri`). */
  sanUri?: string;
  /** A DNS subject alternative name, lowercase (`san_dns`). */
  sanDns?: string;
  /** SHA-256 of the issuing CA's SubjectPublicKeyInfo, 64 hex digits (`issuer`). */
  issuer?: string;
}

/** A `[clients.NAME]` table. */
export interface ClientConfig {
  /** The client name (the table key). */
  name: string;
  /** How its certificate is recognised (`match`). */
  match: ClientMatch;
  /** Groups it may use, each defined under `[groups]` (`groups`). */
  groups: string[];
  /** Concurrent connection cap instead of `[limits]`'s (`max_connections`). */
  maxConnections?: number;
  /** Rate limit instead of `[limits]`'s (`connection_rate`). */
  connectionRate?: ConnectionRate;
  /** Bytes per second per direction instead of `[limits]`'s (`bandwidth`). */
  bandwidth?: number;
  /** Its limits within some of its groups, by group name (`per_group`). */
  perGroup?: Record<string, ClientGroupLimits>;
}

/** A `[clients.NAME.per_group.GROUP]` table: a client's limits within one group. */
export interface ClientGroupLimits {
  /** Concurrent connections of the client to the group (`max_connections`). */
  maxConnections?: number;
  /** New connections of the client to the group per window (`connection_rate`). */
  connectionRate?: ConnectionRate;
}

/** The `[admin]` table. */
export interface AdminConfig {
  /** Admin endpoint listener, `host:port`; unset: none (`listen`). */
  listen?: string;
  /** Whether `POST /reload` may reload the configuration (`allow_reload`). */
  allowReload: boolean;
  /** Host names accepted besides IP addresses and `localhost`, lowercase (`hosts`). */
  hosts: string[];
  /** File of the bearer token, read by {@linkcode loadAdminToken} (`token_file`). */
  tokenFile?: string;
}

/** The `[cluster]` table: state shared by a fleet of instances. */
export interface ClusterConfig {
  /** The shared store, `redis://...` or `rediss://...` (`store`). */
  store: string;
  /** The store's `host:port`, for permissions. */
  storeAddress: string;
  /** What to do when the store fails or is slow (`on_store_error`). */
  onStoreError: "local" | "closed";
  /** How long a dead instance's slots keep counting, ms (`lease_ttl`). */
  leaseTtl: number;
  /** The longest wait on the store for one connection, ms (`timeout`). */
  timeout: number;
  /** Where `[clients]` comes from: this file or the fleet's store (`clients`). */
  clients: "file" | "shared";
  /** This instance's name in the store; unset: random at each start (`instance_id`). */
  instanceId?: string;
}

/** The `[log]` table. */
export interface LogConfig {
  /** Text, JSON lines, or text on a terminal only (`format`). */
  format: "auto" | "text" | "json";
}

/** A validated mtlb configuration: a field for each table of the file. */
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
  /** `[cluster]`; unset: everything stays in memory, per instance. */
  cluster?: ClusterConfig;
}
