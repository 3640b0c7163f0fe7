/**
 * Per-client limits: the concurrent cap and the token-bucket rate (per client, per client
 * within a group, per group), and per-client bandwidth, over stores of your choice.
 *
 * @module
 */
export {
  type ClientAcquireOptions,
  clientInGroupScopeKey,
  type ClientLease,
  ClientLimiter,
  type ClientLimiterOptions,
  ClientLimitError,
  type ClientLimitErrorOptions,
  type GroupLimits,
  groupScopeKey,
  type LimitScope,
} from "./client_limiter.ts";
export { MemoryLimiterStore } from "./memory_store.ts";
export {
  BandwidthLimiter,
  type BandwidthLimiterOptions,
  type ConnectionThrottles,
  type Throttle,
} from "./bandwidth_limiter.ts";
export {
  type BandwidthRequest,
  type BandwidthStore,
  BURST_MS,
  type Direction,
  MemoryBandwidthStore,
  MIN_BURST_BYTES,
  takeBytes,
} from "./bandwidth_store.ts";
export {
  type SharedBandwidthMemory,
  SharedMemoryBandwidthStore,
} from "./shared_memory_bandwidth_store.ts";
export {
  type AcquireRequest,
  type Admission,
  type ClientLimitKind,
  type ClientLimits,
  type ConnectionRate,
  type LimiterStore,
  type ScopeLimits,
  singleScope,
  StoreUnavailableError,
} from "./store.ts";
