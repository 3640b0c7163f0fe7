/**
 * The readers of each section of the config file: each takes the section's table,
 * refuses unknown keys and bad values through {@linkcode _Reader}, and returns the
 * typed section with its defaults filled in.
 *
 * @module
 */
import { isAbsolute, join, normalize } from "node:path";
import type { ConnectionRate } from "../limiter/store.ts";
import { formatDuration } from "../core/duration.ts";
import { normalizeHex } from "../identity/certificate.ts";
import type {
  AdminConfig,
  ClientConfig,
  ClientMatch,
  ClusterConfig,
  GroupConfig,
  HealthConfig,
  LimitsConfig,
  OutlierConfig,
  ServerConfig,
  TlsConfig,
  UpstreamConfig,
} from "./types.ts";
import { type _Reader, describe, isTable, type Table } from "./_reader.ts";
import { rememberLines } from "./_section_lines.ts";

const TLS13_CIPHERS: readonly string[] = [
  "TLS_AES_256_GCM_SHA384",
  "TLS_AES_128_GCM_SHA256",
  "TLS_CHACHA20_POLY1305_SHA256",
];
const DEFAULT_CIPHERS: readonly string[] = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"];
const ALPN_RE = /^[\x21-\x7e]{1,255}$/;
const HEX_RE = /^[0-9a-fA-F]+(?::[0-9a-fA-F]+)*$/;
const MATCH_KEYS = ["spki_sha256", "serial", "cn", "san_uri", "san_dns", "issuer"] as const;
/** The keys of `[health]` and of a group's `health`. */
export const HEALTH_KEYS: readonly string[] = [
  "interval",
  "timeout",
  "rise",
  "fall",
  "send",
  "expect",
];
/** The keys of `[outlier]` and of a group's `outlier`. */
export const OUTLIER_KEYS: readonly string[] = [
  "consecutive_failures",
  "base_ejection_time",
  "max_ejection_time",
  "max_ejected_percent",
  "panic_threshold",
];
const HOST_NAME_RE =
  /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** Reads `[server]`. */
export function readServer(r: _Reader, t: Table): ServerConfig {
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

/** Reads `[tls]`; relative paths resolve against `baseDir`. */
export function readTls(r: _Reader, t: Table, baseDir: string): TlsConfig {
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
  rememberLines(
    tls,
    Object.fromEntries(["ca", "cert", "key", "crl"].map((k) => [`${p}.${k}`, r.line(`${p}.${k}`)])),
  );
  return tls;
}

/** Reads `[limits]`. */
export function readLimits(r: _Reader, t: Table): LimitsConfig {
  r.keys(t, "limits", ["max_connections_per_client", "connection_rate"]);
  const limits: LimitsConfig = {
    maxConnectionsPerClient: r.integer(t, "limits", "max_connections_per_client", 1) ?? 10,
  };
  const rate = readRate(r, t, "limits");
  if (rate !== undefined) limits.connectionRate = rate;
  return limits;
}

/** Reads the `connection_rate` of `[limits]` or of a client; `undefined` when absent. */
export function readRate(r: _Reader, t: Table, path: string): ConnectionRate | undefined {
  if (t.connection_rate === undefined) return undefined;
  const rt = r.table(t, path, "connection_rate", true);
  const p = `${path}.connection_rate`;
  r.keys(rt, p, ["count", "per"]);
  return {
    count: r.integer(rt, p, "count", 1, undefined, true)!,
    per: r.duration(rt, p, "per", true)!,
  };
}

/** Reads `[health]` or a group's `health`, each unset field taken from `base`. */
export function readHealth(r: _Reader, t: Table, path: string, base: HealthConfig): HealthConfig {
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

/** Reads `[outlier]` or a group's `outlier`, each unset field taken from `base`. */
export function readOutlier(
  r: _Reader,
  t: Table,
  path: string,
  base: OutlierConfig,
): OutlierConfig {
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

/** Reads `[groups]`: each group over the `[health]` and `[outlier]` defaults. */
export function readGroups(
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

/** Reads `[clients]`; each client's groups must be among `groups`. */
export function readClients(
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

/** Reads `[admin]`; a relative `token_file` resolves against `baseDir`. */
export function readAdmin(r: _Reader, t: Table, baseDir: string): AdminConfig {
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
    rememberLines(admin, { [`${p}.token_file`]: r.line(`${p}.token_file`) });
  }
  return admin;
}

/** Reads `[cluster]`; `undefined` when the section is absent or empty. */
export function readCluster(r: _Reader, t: Table): ClusterConfig | undefined {
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
