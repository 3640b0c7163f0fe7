/**
 * Upstreams: the least-connections pool and its counts, active health checks, outlier detection, dialing, and upstreams looked up in DNS.
 *
 * @module
 */
export { type Dialer, dialTcp } from "./dial.ts";
export { tlsDialer, type TlsDialerOptions, UpstreamTlsError } from "./tls_dial.ts";
export {
  denoResolver,
  type DenoResolverOptions,
  type DnsResolver,
  type SrvAnswer,
} from "./dns_resolver.ts";
export {
  DNS_FAILURE_REASONS,
  DnsChangeEvent,
  DnsFailureEvent,
  type DnsFailureReason,
  DnsLookupError,
  type DnsQuery,
  dnsSourceName,
  DnsUpstreams,
  type DnsUpstreamsOptions,
  type DnsUpstreamsStatus,
} from "./dns_upstreams.ts";
export {
  type EjectionChange,
  EjectionEvent,
  type HealthChange,
  HealthChangeEvent,
} from "./health_event.ts";
export {
  dialCheck,
  type HealthCheck,
  HealthCheckError,
  type HealthCheckSettings,
  type ProbeFailureReason,
  type ProbeReason,
  tcpCheck,
} from "./health_check.ts";
export {
  type HealthCheckOptions,
  type HealthCheckResult,
  HealthProbe,
  type HealthProbeOptions,
  type HealthState,
  type HealthTarget,
  type TargetHealth,
} from "./health_probe.ts";
export {
  LeastConnPool,
  type LeastConnPoolOptions,
  type UpstreamSpec,
  type UpstreamStatus,
} from "./least_conn_pool.ts";
export { type UpstreamCounts } from "./upstream_counts.ts";
export { MemoryUpstreamCounts } from "./memory_counts.ts";
export { NoHealthyUpstreamError, UpstreamConnectError } from "./pool_errors.ts";
export {
  type DialFailure,
  type DialFailureReason,
  type UpstreamConnection,
  type UpstreamConnectOptions,
} from "./upstream_connection.ts";
export { type UpstreamLease } from "./upstream_lease.ts";
export {
  DEFAULT_OUTLIER_SETTINGS,
  forwardOutcome,
  isLocalDialError,
  OutlierDetector,
  type OutlierDetectorOptions,
  type OutlierSettings,
  type OutlierState,
  PASSIVE_FAILURE_REASONS,
  type PassiveFailureReason,
  type PassiveSuccess,
} from "./outlier_detector.ts";
