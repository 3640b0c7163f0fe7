/**
 * Per-client limits: the concurrent cap and the token-bucket rate, over a store of your choice.
 *
 * @module
 */
export {
  type ClientLease,
  ClientLimiter,
  type ClientLimiterOptions,
  ClientLimitError,
  type ClientLimitErrorOptions,
} from "./client_limiter.ts";
export { MemoryLimiterStore } from "./memory_store.ts";
export {
  type Admission,
  type ClientLimitKind,
  type ClientLimits,
  type ConnectionRate,
  type LimiterStore,
  StoreUnavailableError,
} from "./store.ts";
