/**
 * mtlb: building blocks of a layer-4 load balancer that authenticates every
 * client with mutual TLS, and the balancer built from them.
 *
 * - {@linkcode LeastConnPool}: least-connections choice among healthy upstreams,
 *   with `Disposable` leases and a dial helper that fails over.
 * - {@linkcode ClientLimiter}: per-client concurrent cap and token-bucket rate, also
 *   within a group and per group, with an optional queue for rate tokens;
 *   {@linkcode BandwidthLimiter}: per-client bytes per second, shared by its connections.
 * - {@linkcode HealthProbe}: active upstream health checks.
 * - {@linkcode OutlierDetector}: passive ejection of upstreams that fail on traffic.
 * - {@linkcode forward}: the byte forwarder between two sockets.
 * - {@linkcode Balancer}: the mTLS server wiring them to a TOML policy, reloadable
 *   and drainable, with metrics ({@linkcode MetricsRegistry}) and a status snapshot
 *   that {@linkcode AdminServer} serves over HTTP.
 * - {@linkcode encodeProxyV2} / {@linkcode parseProxyV2}: the PROXY protocol v2.
 * - {@linkcode TrustStore}: the CAs of the bundle, issuer lookup and full chain
 *   verification; {@linkcode ClientTrust}: the checks of a client's chain after the
 *   handshake (extended key usage, path, CRLs).
 * - {@linkcode RevocationList}: CRL checks of client certificates.
 *
 * @example Least connections with a lease
 * ```ts
 * import { LeastConnPool } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const pool = new LeastConnPool(["127.0.0.1:7001", "127.0.0.1:7002"]);
 * {
 *   using first = pool.acquire();
 *   using second = pool.acquire();
 *   assert.notEqual(first.address, second.address);
 * }
 * assert.equal(pool.active("127.0.0.1:7001"), 0);
 * ```
 *
 * @module
 */
export { formatHostPort, type HostPort, parseHostPort } from "./lib/core/address.ts";
export {
  AdminServer,
  type AdminServerOptions,
  type AdminTarget,
  RECENT_DENIALS,
  type RecentDenial,
} from "./lib/admin/admin_server.ts";
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
} from "./lib/limiter/client_limiter.ts";
export { MemoryLimiterStore } from "./lib/limiter/memory_store.ts";
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
} from "./lib/limiter/store.ts";
export {
  BandwidthLimiter,
  type BandwidthLimiterOptions,
  type ConnectionThrottles,
  type Throttle,
} from "./lib/limiter/bandwidth_limiter.ts";
export {
  type BandwidthRequest,
  type BandwidthStore,
  BURST_MS,
  type Direction,
  MemoryBandwidthStore,
  MIN_BURST_BYTES,
  takeBytes,
} from "./lib/limiter/bandwidth_store.ts";
export {
  type SharedBandwidthMemory,
  SharedMemoryBandwidthStore,
} from "./lib/limiter/shared_memory_bandwidth_store.ts";
export {
  ClientTrust,
  type ClientTrustOptions,
  type ClientVerdict,
  TRUST_DENIALS,
  type TrustDenial,
} from "./lib/identity/client_trust.ts";
export { type ClusterStores, connectCluster } from "./lib/redis/cluster.ts";
export { type Clock, FakeClock, systemClock, type TimerId } from "./lib/core/clock.ts";
export { SharedTimerClock } from "./lib/core/shared_timer_clock.ts";
export {
  type AdminConfig,
  type ClientConfig,
  type ClientGroupLimits,
  type ClientMatch,
  clientPolicyDocument,
  type ClusterConfig,
  type Config,
  ConfigError,
  type ConfigErrorOptions,
  configJsonSchema,
  type ConfigJsonSchemaOptions,
  type ConfigProblem,
  type DnsUpstreamConfig,
  type GroupConfig,
  type HealthConfig,
  type LimitsConfig,
  loadAdminToken,
  loadConfig,
  loadTlsMaterial,
  loadUpstreamTlsMaterial,
  type LogConfig,
  type OutlierConfig,
  parseConfig,
  type ParseConfigOptions,
  parseConfigWithClients,
  type ParseConfigWithClientsOptions,
  type ServerConfig,
  type TlsCertificateInfo,
  type TlsConfig,
  type TlsMaterial,
  type UpstreamCertificateInfo,
  type UpstreamConfig,
  type UpstreamTlsConfig,
  type UpstreamTlsMaterial,
} from "./lib/config/mod.ts";
export {
  type CheckPathOptions,
  CRL_CLOCK_SKEW_MS,
  CrlError,
  type CrlInfo,
  type CrlMissingMode,
  crlToPem,
  type ParseCrlOptions,
  type RevocationDenial,
  RevocationList,
  type RevocationStatus,
  type RevocationVerdict,
} from "./lib/identity/crl.ts";
export { createCrl, type CreateCrlOptions } from "./lib/pki/crl_issuer.ts";
export { type Dialer, dialTcp } from "./lib/upstream/dial.ts";
export { tlsDialer, type TlsDialerOptions, UpstreamTlsError } from "./lib/upstream/tls_dial.ts";
export { formatDuration, parseDuration } from "./lib/core/duration.ts";
export { formatSize, parseRate, parseSize } from "./lib/core/size.ts";
export {
  forward,
  type ForwardEndReason,
  type ForwardOptions,
  type ForwardResult,
  type ForwardSocket,
  type ForwardStats,
  type ForwardThrottle,
} from "./lib/proxy/forward.ts";
export {
  type EjectionChange,
  EjectionEvent,
  type HealthChange,
  HealthChangeEvent,
} from "./lib/upstream/health_event.ts";
export {
  dialCheck,
  type HealthCheck,
  HealthCheckError,
  type HealthCheckSettings,
  type ProbeFailureReason,
  type ProbeReason,
  tcpCheck,
} from "./lib/upstream/health_check.ts";
export {
  type HealthCheckOptions,
  type HealthCheckResult,
  HealthProbe,
  type HealthProbeOptions,
  type HealthState,
  type HealthTarget,
  type TargetHealth,
} from "./lib/upstream/health_probe.ts";
export {
  type CertIdentity,
  type CertificateFacts,
  certificateValidity,
  type CertValidity,
  checkClientAuthUsage,
  type ClientAuthUsage,
  type ClientEkuMode,
  identityFromCertificate,
  normalizeHex,
  readCertificate,
  spkiSha256FromPem,
} from "./lib/identity/certificate.ts";
export {
  LeastConnPool,
  type LeastConnPoolOptions,
  type UpstreamSpec,
  type UpstreamStatus,
} from "./lib/upstream/least_conn_pool.ts";
export {
  denoResolver,
  type DenoResolverOptions,
  type DnsResolver,
  type SrvAnswer,
} from "./lib/upstream/dns_resolver.ts";
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
} from "./lib/upstream/dns_upstreams.ts";
export { type UpstreamCounts } from "./lib/upstream/upstream_counts.ts";
export { MemoryUpstreamCounts } from "./lib/upstream/memory_counts.ts";
export { NoHealthyUpstreamError, UpstreamConnectError } from "./lib/upstream/pool_errors.ts";
export {
  type DialFailure,
  type DialFailureReason,
  type UpstreamConnection,
  type UpstreamConnectOptions,
} from "./lib/upstream/upstream_connection.ts";
export { type UpstreamLease } from "./lib/upstream/upstream_lease.ts";
export {
  type CounterSeries,
  type GaugeSeries,
  MetricFamily,
  type MetricOptions,
  MetricsRegistry,
  type MetricType,
} from "./lib/metrics/registry.ts";
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
} from "./lib/upstream/outlier_detector.ts";
export {
  checkPermissions,
  permissionFlags,
  type PermissionNeeds,
  type PermissionReport,
} from "./lib/control/permissions.ts";
export {
  type CertificateAuthority,
  createCa,
  type CreateCaOptions,
  createIntermediateCa,
  loadCertificateAuthority,
} from "./lib/pki/certificate_authority.ts";
export {
  type DevPkiAddition,
  type DevPkiClient,
  type DevPkiSummary,
  extendDevPki,
  type ExtendDevPkiOptions,
  writeDevPki,
  type WriteDevPkiOptions,
} from "./lib/pki/dev_pki.ts";
export {
  type ExtendedKeyUsageName,
  issueCertificate,
  type IssueCertificateOptions,
  type IssuedCertificate,
} from "./lib/pki/issue_certificate.ts";
export { type KeyAlgorithmName, signingAlgorithmOf } from "./lib/pki/key_algorithms.ts";
export {
  decodeSslTlv,
  encodeProxyV2,
  encodeSslTlv,
  type ParsedProxyV2,
  parseProxyV2,
  PP2_CLIENT,
  PP2_TYPE,
  PROXY_V2_SIGNATURE,
  ProxyProtocolError,
  type ProxySsl,
  type ProxyTlv,
  type ProxyV2Header,
  textTlv,
  tlvText,
} from "./lib/proxy/proxy_protocol.ts";
export {
  type ClientRule,
  type IdentifyDenial,
  type IdentifyResult,
  Policy,
  type PolicyConfig,
  type RouteDenial,
  type RouteRequest,
  type RouteResult,
} from "./lib/policy/policy.ts";
export {
  type AdmissionContext,
  type AdmissionRequest,
  type AdmissionVerdict,
  admit,
  type Admitted,
  type CertificateRefusal,
  type Denial,
  type LiveAdmission,
  readmit,
  type Withdrawal,
} from "./lib/policy/admission.ts";
export {
  RedisBandwidthStore,
  type RedisBandwidthStoreCounters,
  type RedisBandwidthStoreOptions,
} from "./lib/redis/bandwidth_store.ts";
export {
  RedisLimiterStore,
  type RedisLimiterStoreCounters,
  type RedisLimiterStoreOptions,
  type SharedStoreMode,
  type StoreErrorPolicy,
} from "./lib/redis/limiter_store.ts";
export {
  CLIENT_POLICY_CHECK_MS,
  ClientPolicyFollower,
  type ClientPolicyFollowerOptions,
  type ClientPolicySource,
  type ClientPolicyState,
} from "./lib/redis/client_policy_follower.ts";
export {
  ClientPolicyPermissionError,
  RedisClientPolicyStore,
  type RedisClientPolicyStoreOptions,
  type StoredClientPolicy,
} from "./lib/redis/client_policy_store.ts";
export {
  RedisUpstreamCounts,
  type RedisUpstreamCountsCounters,
  type RedisUpstreamCountsOptions,
} from "./lib/redis/upstream_counts.ts";
export { WorkerBalancer } from "./lib/workers/worker_balancer.ts";
export {
  DEFAULT_COLLECT_TIMEOUT,
  WORKER_MODULE,
  WORKER_MODULES_ROOT,
  type WorkerBalancerOptions,
} from "./lib/workers/options.ts";
export {
  type WorkerBalancerStatus,
  type WorkerLifeState,
  type WorkerStatus,
} from "./lib/workers/status.ts";
export { type WorkerExitRecord, type WorkerStartRecord } from "./lib/workers/records.ts";
export { type WorkerLogging } from "./lib/workers/worker_logging.ts";
export { type ReleasedSlots } from "./lib/workers/ledger.ts";
export {
  SharedState,
  SharedStateError,
  type SharedStateInit,
  type SharedStateOptions,
} from "./lib/workers/shared_state.ts";
export {
  CHAIN_FAILURES,
  type ChainFailure,
  type IssuerMatch,
  type LeafFacts,
  type LocateOptions,
  MAX_INTERMEDIATES,
  type PathCertificate,
  type SignedData,
  type TrustedAuthority,
  TrustStore,
  TrustStoreError,
  type TrustStoreOptions,
  type VerifiedPath,
  type VerifyOptions,
  type VerifyResult,
} from "./lib/identity/trust_store.ts";
export { SignatureCache, type SignatureCacheOptions } from "./lib/identity/signature_cache.ts";
export {
  assertSupportedRuntime,
  MIN_DENO_VERSION,
  UnsupportedRuntimeError,
} from "./lib/core/runtime.ts";
export {
  CERTIFICATE_FAILURES,
  type CertificateFailure,
  DENY_REASONS,
  type DenyReason,
  HANDSHAKE_FAILURES,
  type HandshakeFailure,
  isCertificateFailure,
  SESSION_END_REASONS,
  type SessionEndReason,
  UPSTREAM_TLS_FAILURES,
  type UpstreamTlsFailure,
} from "./lib/core/reasons.ts";
export { Balancer } from "./lib/server/balancer.ts";
export { type BalancerOptions } from "./lib/server/options.ts";
export { type LoadedConfig, ReloadError, type ReloadSource } from "./lib/server/lifecycle.ts";
export { ECDH_CURVES, LISTEN_BACKLOG } from "./lib/listener/tls_listeners.ts";
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
} from "./lib/server/status.ts";
export {
  type ConnectionRecord,
  type DenyRecord,
  type DnsReport,
  type HandshakeErrorRecord,
  type HealthReport,
  type PassiveHealthRecord,
  type ReloadRecord,
} from "./lib/server/records.ts";
