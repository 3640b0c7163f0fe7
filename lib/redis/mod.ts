/**
 * A fleet of balancers sharing client limits, upstream counts and the client policy
 * through Redis.
 *
 * @module
 */
export {
  CLIENT_POLICY_CHECK_MS,
  ClientPolicyFollower,
  type ClientPolicyFollowerOptions,
  type ClientPolicySource,
  type ClientPolicyState,
} from "./client_policy_follower.ts";
export {
  ClientPolicyPermissionError,
  RedisClientPolicyStore,
  type RedisClientPolicyStoreOptions,
  type StoredClientPolicy,
} from "./client_policy_store.ts";
export { type ClusterStores, connectCluster } from "./cluster.ts";
export {
  RedisBandwidthStore,
  type RedisBandwidthStoreCounters,
  type RedisBandwidthStoreOptions,
} from "./bandwidth_store.ts";
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
