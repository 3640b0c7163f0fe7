/**
 * Per-client limits: the concurrent cap and the token-bucket rate, over a store of your choice.
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
