/**
 * What a balancer is built from: its options, and how it loads a configuration and
 * builds the trust it checks clients against.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { Clock } from "../core/clock.ts";
import { type Config, loadConfig, loadTlsMaterial, type TlsMaterial } from "../config/mod.ts";
import { ClientTrust } from "../identity/client_trust.ts";
import { RevocationList } from "../identity/crl.ts";
import { TrustStore } from "../identity/trust_store.ts";
import type { LimiterStore } from "../limiter/store.ts";
import type { BandwidthStore } from "../limiter/bandwidth_store.ts";
import type { MetricsRegistry } from "../metrics/registry.ts";
import type { Dialer } from "../upstream/dial.ts";
import type { DnsResolver } from "../upstream/dns_resolver.ts";
import type { HealthCheck } from "../upstream/health_check.ts";
import type { TlsDialerOptions } from "../upstream/tls_dial.ts";
import type { UpstreamCounts } from "../upstream/upstream_counts.ts";
import type { LoadedConfig } from "./lifecycle.ts";
import type { ClientPolicyStatus } from "./status.ts";

/** Options of `Balancer`. */
export interface BalancerOptions {
  /** A validated configuration (see `loadConfig`). */
  config: Config;
  /** The PEM material the configuration names (see `loadTlsMaterial`). */
  tls: TlsMaterial;
  /**
   * Time source for handshake, connect, idle and drain timeouts and health probes.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Wall-clock time, ms since the epoch: CRL validity and the timestamps of
   * `Balancer.status()`.
   *
   * @default {Date.now}
   */
  wallClock?: () => number;
  /**
   * Opens upstream connections of the groups without `[groups.<name>.tls]`.
   *
   * @default {dialTcp}
   */
  dial?: Dialer<Socket>;
  /**
   * The active health check of every group.
   *
   * @default {tcpCheck; for a group with `[groups.<name>.tls]`, the same exchange over its TLS connector (`dialCheck`)}
   */
  healthCheck?: HealthCheck;
  /**
   * Answers the look-ups of the groups' DNS entries (`{ dns = "NAME:PORT" }`,
   * `{ srv = "NAME" }`).
   *
   * @default {denoResolver() asking `[server] resolver`, else the system resolver}
   */
  resolver?: DnsResolver;
  /**
   * Makes the connector of a group with `[groups.<name>.tls]` from its CA bundle,
   * client certificate, key and `server_name`: its sessions and (without
   * `healthCheck`) its active checks dial with it. Called at start and on each reload.
   *
   * @default {tlsDialer}
   */
  connectTls?: (options: TlsDialerOptions) => Dialer<Socket>;
  /**
   * The registry the `mtlb_*` metrics are registered in.
   *
   * @default {a new MetricsRegistry}
   */
  metrics?: MetricsRegistry;
  /**
   * Reads the configuration again for `Balancer.reload()` called without
   * arguments; it should throw (a `ConfigError`, say) on anything it will not run.
   *
   * @default {loadConfig(path), then loadTlsMaterial}
   */
  load?: (path: string) => Promise<LoadedConfig>;
  /**
   * The client policy this balancer serves, when a fleet shares it: `/status` shows
   * it and the metrics `mtlb_client_policy_version`,
   * `mtlb_client_policy_store_errors_total` and `mtlb_client_policy_refused_total`
   * count it.
   *
   * @default {undefined}
   */
  clientPolicy?: () => ClientPolicyStatus;
  /**
   * Where per-client limit state lives: `SharedState.limiterStore()` for workers of
   * one process, a Redis store for a fleet.
   *
   * @default {a new MemoryLimiterStore}
   */
  limiterStore?: LimiterStore;
  /**
   * Where the client byte buckets of `bandwidth` live: shared memory between workers,
   * Redis across a fleet.
   *
   * @default {a new MemoryBandwidthStore}
   */
  bandwidthStore?: BandwidthStore;
  /**
   * Where active connection counts per upstream live, shared by every group's pool
   * (keyed by upstream address): `SharedState.upstreamCounts()` for workers, a Redis
   * store for a fleet.
   *
   * @default {a MemoryUpstreamCounts per group}
   */
  upstreamCounts?: UpstreamCounts;
  /**
   * Bind listeners with `SO_REUSEPORT`, so several processes or workers can serve
   * the same addresses and the kernel spreads connections among them.
   *
   * @default {false}
   */
  reusePort?: boolean;
  /**
   * Where upstream health comes from. `"probe"`: the balancer runs the active health
   * checks of its config and its own outlier detection (`[outlier]`).
   * `"external"`: it runs neither; every upstream is `unknown` (never picked) until
   * `Balancer.setHealth()` reports it (ejections included), and what is seen
   * on traffic (failed dials, resets before any byte, and the successes that end a
   * streak of them) is dispatched as `"passive_health"` events
   * (`PassiveHealthRecord`) for the owner of the health checks, such as the
   * primary thread of a `WorkerBalancer`.
   *
   * @default {"probe"}
   */
  health?: "probe" | "external";
  /**
   * Where the upstreams of the groups' DNS entries come from. `"lookup"`: the
   * balancer looks each entry up at its interval with `resolver`. `"external"`: it
   * looks nothing up; an entry has the upstreams `Balancer.setDnsUpstreams()`
   * reports for it (none until then), applied as a new answer is: upstreams that
   * stay keep their counts and health, removed ones drain, new ones are picked once
   * healthy. The primary thread of a `WorkerBalancer` looks up for its workers so.
   *
   * @default {"lookup"}
   */
  dns?: "lookup" | "external";
  /**
   * Where the count of open client connections that `[server] max_connections`
   * caps lives: a count shared by the workers of a `WorkerBalancer`, so the cap is
   * for the whole server. `add` returns the new total.
   *
   * @default {a count of this balancer's own connections}
   */
  connectionCount?: { add(delta: number): number };
  /**
   * The open-files limit (`ulimit -n`) that the default `[server] max_connections`
   * and `max_handshakes` derive from.
   *
   * @default {read from /proc/self/limits when allowed, else 32768}
   */
  fileDescriptorLimit?: number;
  /**
   * Whether this balancer logs its own life cycle (listening, reloads, drain). The
   * workers of a `WorkerBalancer` do not: their primary logs it once for all.
   *
   * @default {true}
   */
  logLifecycle?: boolean;
  /**
   * This balancer's share of `[server] max_handshakes`, for one of several workers
   * serving the same listeners: `1 / workers`.
   *
   * @default {1}
   */
  handshakeShare?: number;
}

/**
 * The CA bundle, CRLs and `[tls]` trust settings of a configuration, ready to check
 * clients.
 *
 * @param config The configuration (`[tls] client_eku`, `crl_missing`).
 * @param tls Its TLS material (the CA bundle and CRLs).
 * @param now The current time, ms since the epoch (CRL validity).
 * @returns The checks, and the CRLs for status.
 * @throws {TrustStoreError} When the CA bundle cannot be read.
 * @throws {CrlError} When a CRL cannot be used.
 */
export async function buildTrust(
  config: Config,
  tls: TlsMaterial,
  now: number,
): Promise<{ trust: ClientTrust; crl: RevocationList | undefined }> {
  const store = TrustStore.fromPem(tls.ca);
  const crl = tls.crl === undefined
    ? undefined
    : await RevocationList.parse(tls.crl, store, { now });
  const trust = new ClientTrust({
    store,
    ...(crl === undefined ? {} : { crl }),
    clientEku: config.tls.clientEku,
    crlMissing: config.tls.crlMissing,
  });
  return { trust, crl };
}

/**
 * Reads a configuration file and the TLS material it names: the default `load` of a
 * balancer.
 *
 * @param path The config file.
 * @returns The configuration and its material.
 */
export async function defaultLoad(path: string): Promise<LoadedConfig> {
  const config = await loadConfig(path);
  return { config, tls: await loadTlsMaterial(config) };
}

/**
 * The listeners a configuration asks for: the shared one first, then the groups' own.
 *
 * @param config The configuration.
 * @returns Each listener's address, and its group for a group's own.
 */
export function wantedListeners(config: Config): { address: string; group: string | undefined }[] {
  const wanted: { address: string; group: string | undefined }[] = [];
  if (config.server.listen !== undefined) {
    wanted.push({ address: config.server.listen, group: undefined });
  }
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) wanted.push({ address: group.listen, group: group.name });
  }
  return wanted;
}
