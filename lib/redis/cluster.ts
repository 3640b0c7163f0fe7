/**
 * The state a fleet of mtlb instances shares through `[cluster] store`: per-client
 * limits ({@linkcode RedisLimiterStore}), per-client bandwidth
 * ({@linkcode RedisBandwidthStore}) and per-upstream connection counts
 * ({@linkcode RedisUpstreamCounts}), built from a {@linkcode ClusterConfig}.
 *
 * @module
 */
import type { Clock } from "../core/clock.ts";
import type { ClusterConfig } from "../config/mod.ts";
import { RedisBandwidthStore } from "./bandwidth_store.ts";
import { RedisLimiterStore } from "./limiter_store.ts";
import { RedisUpstreamCounts } from "./upstream_counts.ts";

/** The shared stores of one instance. */
export interface ClusterStores extends AsyncDisposable {
  /** For `BalancerOptions.limiterStore`. */
  limiterStore: RedisLimiterStore;
  /** For `BalancerOptions.upstreamCounts`. */
  upstreamCounts: RedisUpstreamCounts;
  /** For `BalancerOptions.bandwidthStore`. */
  bandwidthStore: RedisBandwidthStore;
  /** Closes the stores and removes this instance's keys. */
  close(): Promise<void>;
}

/**
 * Connects this instance to the fleet's Redis. A Redis that does not answer is not
 * an error here: the limiter applies `on_store_error` and both stores keep trying.
 *
 * @example Usage
 * ```ts ignore
 * import { Balancer, connectCluster, loadConfig, loadTlsMaterial } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * await using stores = await connectCluster(config.cluster!);
 * const balancer = new Balancer({
 *   config,
 *   tls: await loadTlsMaterial(config),
 *   limiterStore: stores.limiterStore,
 *   upstreamCounts: stores.upstreamCounts,
 * });
 * ```
 *
 * @param cluster The `[cluster]` section.
 * @param clock The clock for heartbeats and timeouts (default: the system clock).
 * @returns The connected stores.
 */
export async function connectCluster(
  cluster: ClusterConfig,
  clock?: Clock,
): Promise<ClusterStores> {
  const common = {
    url: cluster.store,
    timeout: cluster.timeout,
    ...(cluster.instanceId === undefined ? {} : { instanceId: cluster.instanceId }),
    ...(clock === undefined ? {} : { clock }),
  };
  const limiterStore = new RedisLimiterStore({
    ...common,
    onStoreError: cluster.onStoreError,
    leaseTtl: cluster.leaseTtl,
  });
  const upstreamCounts = new RedisUpstreamCounts(common);
  const bandwidthStore = new RedisBandwidthStore(common);
  await Promise.all([limiterStore.connect(), upstreamCounts.connect(), bandwidthStore.connect()]);
  const close = async (): Promise<void> => {
    await Promise.all([limiterStore.close(), upstreamCounts.close(), bandwidthStore.close()]);
  };
  return { limiterStore, upstreamCounts, bandwidthStore, close, [Symbol.asyncDispose]: close };
}
