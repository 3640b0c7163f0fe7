/**
 * The balancer: listeners, admission, limits, pools and forwarding, reloadable and drainable, with status and records.
 *
 * @module
 */
export { Balancer } from "./balancer.ts";
export { type BalancerOptions } from "./options.ts";
export { type LoadedConfig, ReloadError, type ReloadSource } from "./lifecycle.ts";
export {
  type BalancerCounters,
  type BalancerState,
  type BalancerStatus,
  type ClientPolicyStatus,
  type ClientState,
  type DnsEntryState,
  type DrainResult,
  type GroupState,
  type ListenerInfo,
  type UpstreamCertificateDates,
  type UpstreamState,
} from "./status.ts";
export {
  type ConnectionRecord,
  type DenyRecord,
  type DnsReport,
  type HandshakeErrorRecord,
  type HealthReport,
  type PassiveHealthRecord,
  type ReloadRecord,
} from "./records.ts";
