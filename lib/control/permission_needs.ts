/**
 * The Deno permissions a configuration needs: every address it listens on or
 * connects to, every file it reads, and the modules its workers load.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";
import { isIP } from "node:net";
import { formatHostPort, parseHostPort } from "../core/address.ts";
import type { Config } from "../config/mod.ts";
import { WORKER_MODULE, WORKER_MODULES_ROOT } from "../workers/options.ts";
import type { PermissionNeeds } from "./permissions.ts";

/**
 * The number of workers `serve` runs for a configuration: `[server] workers`, else
 * one per CPU (`navigator.hardwareConcurrency`); one with `[cluster]`, whose
 * stores are per process.
 *
 * @example Usage
 * ```ts
 * import { workerCount } from "./permission_needs.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(workerCount({ server: { workers: 3 } }), 3);
 * assert.equal(workerCount({ server: {} }), navigator.hardwareConcurrency);
 * ```
 *
 * @param config The configuration (its `[server]` and `[cluster]` sections, its groups).
 * @returns At least 1.
 */
export function workerCount(
  config: {
    server: { workers?: number };
    cluster?: unknown;
  },
): number {
  if (config.cluster !== undefined) return 1;
  return Math.max(1, config.server.workers ?? navigator.hardwareConcurrency);
}

/**
 * Whether a group of the configuration has upstreams looked up in DNS.
 *
 * @param config The configuration (its groups).
 * @returns `true` when a group has a `{ dns = ... }` or `{ srv = ... }` entry.
 */
export function hasDnsUpstreams(
  config: { groups?: ReadonlyMap<string, { name: string; dns?: readonly unknown[] }> },
): boolean {
  for (const group of config.groups?.values() ?? []) {
    if ((group.dns?.length ?? 0) > 0) return true;
  }
  return false;
}

/** Options of {@linkcode permissionNeeds}. */
export interface PermissionNeedsOptions {
  /**
   * The number of workers the balancer runs; with more than one, Deno must read
   * mtlb's own modules to start the Workers.
   *
   * @default {workerCount(config)}
   */
  workers?: number;
}

/**
 * The Deno permissions a configuration needs to run: `net` for every listener
 * (shared, per group, admin) and every upstream (connections and health probes),
 * `read` for the config file, the CA, certificate, key and CRL files, the files of
 * each group's `tls` (CA bundle, client certificate and key), the
 * admin token file (absolute paths), and with more than one worker the folder of mtlb's modules
 * (`lib/`: Deno checks read permission when it loads a Worker's modules).
 *
 * Upstreams looked up in DNS (`{ dns = ... }`, `{ srv = ... }`) need every host
 * (`anyHost`: `--allow-net` with no list): Deno checks the address each dial
 * connects to, and those are known only once DNS answers (Deno takes no IPv6 range,
 * and an SRV answer chooses the port too). That grant covers the DNS server too:
 * `[server] resolver`, else the servers of `/etc/resolv.conf`, which
 * `Deno.resolveDns` needs net permission for.
 *
 * A listener on port 0 needs its host with no port (Deno cannot grant "any
 * port the kernel picks" otherwise). A listener on a host name is resolved
 * before it binds, and Deno checks the address it binds: a listener on
 * `localhost` therefore also needs `127.0.0.1` and `[::1]` with its port. Other
 * host names cannot be resolved here, so listeners should use IP addresses.
 *
 * @example Usage
 * ```ts
 * import { permissionNeeds } from "./permission_needs.ts";
 * import { parseConfig } from "../config/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `[server]
 * listen = "127.0.0.1:0"
 * workers = 1
 * [tls]
 * ca = "ca.crt"
 * cert = "server.crt"
 * key = "server.key"
 * [groups.echo]
 * upstreams = ["127.0.0.1:7001"]
 * `,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * assert.deepEqual(permissionNeeds(config), {
 *   net: ["127.0.0.1", "127.0.0.1:7001"],
 *   read: ["/etc/mtlb/lb.toml", "/etc/mtlb/ca.crt", "/etc/mtlb/server.crt", "/etc/mtlb/server.key"],
 * });
 * ```
 *
 * @param config A validated configuration; its `path` is resolved against the working directory.
 * @param options The number of workers.
 * @returns The `net` and `read` entries, without duplicates, listeners first.
 */
export function permissionNeeds(
  config: Config,
  options: PermissionNeedsOptions = {},
): PermissionNeeds {
  const net: string[] = [];
  const listen = (address: string): void => {
    const { hostname, port } = parseHostPort(address);
    const hosts = hostname.toLowerCase() === "localhost"
      ? [hostname, "127.0.0.1", "::1"]
      : [hostname];
    for (const host of hosts) {
      net.push(port === 0 ? formatHost(host) : formatHostPort({ hostname: host, port }));
    }
  };
  if (config.server.listen !== undefined) listen(config.server.listen);
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) listen(group.listen);
  }
  if (config.admin.listen !== undefined) listen(config.admin.listen);
  for (const group of config.groups.values()) {
    for (const upstream of group.upstreams) net.push(upstream.address);
  }
  const dnsGroups = hasDnsUpstreams(config);
  const resolver = config.server.resolver;
  if (dnsGroups && resolver !== undefined) net.push(resolver);
  if (config.cluster !== undefined) net.push(config.cluster.storeAddress);
  const { tls } = config;
  const read = [resolve(config.path), tls.ca, tls.cert, tls.key];
  if (tls.crl !== undefined) read.push(tls.crl);
  for (const group of config.groups.values()) {
    if (group.tls === undefined) continue;
    read.push(group.tls.ca);
    if (group.tls.cert !== undefined) read.push(group.tls.cert);
    if (group.tls.key !== undefined) read.push(group.tls.key);
  }
  if (config.admin.tokenFile !== undefined) read.push(config.admin.tokenFile);
  if ((options.workers ?? workerCount(config)) > 1 && WORKER_MODULE.protocol === "file:") {
    read.push(fileURLToPath(WORKER_MODULES_ROOT).replace(/\/$/, ""));
  }
  return {
    net: [...new Set(net)],
    ...(dnsGroups ? { anyHost: true } : {}),
    read: [...new Set(read.map((p) => resolve(p)))],
    ...(config.cluster === undefined ? {} : { env: [...REDIS_CLIENT_ENV] }),
  };
}

/** The environment variables the Redis client of `[cluster]` reads. */
const REDIS_CLIENT_ENV = ["REDIS_DEBUG_MAINTENANCE", "REDIS_EMIT_DIAGNOSTICS"] as const;

function formatHost(hostname: string): string {
  return isIP(hostname) === 6 ? `[${hostname}]` : hostname;
}
