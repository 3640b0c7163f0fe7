/**
 * Core values of mtlb: clocks, durations, sizes, addresses, the named reasons of refusals, errors and the runtime check.
 *
 * @module
 */
export { formatHostPort, type HostPort, parseHostPort } from "./address.ts";
export { type Clock, FakeClock, systemClock, type TimerId } from "./clock.ts";
export { SharedTimerClock } from "./shared_timer_clock.ts";
export { formatDuration, parseDuration } from "./duration.ts";
export { formatSize, parseRate, parseSize } from "./size.ts";
export { assertSupportedRuntime, MIN_DENO_VERSION, UnsupportedRuntimeError } from "./runtime.ts";
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
} from "./reasons.ts";
