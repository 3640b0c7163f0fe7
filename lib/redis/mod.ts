/**
 * A fleet of balancers sharing client limits and upstream counts through Redis.
 *
 * @module
 */
export { type ClusterStores, connectCluster } from "./cluster.ts";
export {
  RedisLimiterStore,
  type RedisLimiterStoreCounters,
  type RedisLimiterStoreOptions,
  type SharedStoreMode,
  type StoreErrorPolicy,
} from "./limiter_store.ts";
export {
  RedisUpstreamCounts,
  type RedisUpstreamCountsCounters,
  type RedisUpstreamCountsOptions,
} from "./upstream_counts.ts";
