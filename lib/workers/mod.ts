/**
 * The balancer on every core: Workers sharing their listeners, with counts and limits in shared memory.
 *
 * @module
 */
export { WorkerBalancer } from "./worker_balancer.ts";
export {
  DEFAULT_COLLECT_TIMEOUT,
  WORKER_MODULE,
  WORKER_MODULES_ROOT,
  type WorkerBalancerOptions,
} from "./options.ts";
export { type WorkerBalancerStatus, type WorkerLifeState, type WorkerStatus } from "./status.ts";
export { type WorkerExitRecord, type WorkerStartRecord } from "./records.ts";
export { type WorkerLogging } from "./worker_logging.ts";
export { type ReleasedSlots } from "./ledger.ts";
export {
  SharedState,
  SharedStateError,
  type SharedStateInit,
  type SharedStateOptions,
} from "./shared_state.ts";
