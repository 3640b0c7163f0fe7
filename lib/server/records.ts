/**
 * The records a balancer dispatches as events: a refusal (`"deny"`), a failed
 * handshake (`"handshake_error"`), an ended connection (`"end"`, the audit record), a
 * reload (`"reload"`), and between workers and their primary, upstream health
 * (`HealthReport`, `"passive_health"`) and the upstreams of DNS entries (`DnsReport`).
 *
 * @module
 */
import type { CertIdentity } from "../identity/certificate.ts";
import type { DenyReason, HandshakeFailure, SessionEndReason } from "../core/reasons.ts";
import type { ForwardEndReason } from "../proxy/forward.ts";
import type { PassiveFailureReason, PassiveSuccess } from "../upstream/outlier_detector.ts";
import type { UpstreamSpec } from "../upstream/least_conn_pool.ts";

/** Detail of a `"deny"` event. */
export interface DenyRecord {
  /** Why the connection was refused. */
  reason: DenyReason;
  /** The configured client name, once identified. */
  client?: string;
  /** The certificate identity, once read. */
  identity?: CertIdentity;
  /** The group asked for, once routed. */
  group?: string;
  /** The client's address, `host:port`. */
  remote: string;
  /** Human-readable detail for the log (never sent to the client). */
  detail?: string;
  /**
   * When it was refused, ms since the epoch: taken once, when the balancer counts and
   * logs it, so that `/denials` shows the time of its log line even when a worker
   * relays it later.
   */
  at?: number;
}

/** Detail of an `"end"` event: one audit record per forwarded connection. */
export interface ConnectionRecord {
  /** The configured client name. */
  client: string;
  /** The certificate identity the client was matched by. */
  identity: CertIdentity;
  /** The group served. */
  group: string;
  /** The upstream used, `host:port`. */
  upstream: string;
  /** The client's address, `host:port`. */
  remote: string;
  /** Bytes the client sent. */
  bytesFromClient: number;
  /** Bytes the upstream sent. */
  bytesFromUpstream: number;
  /** Connection lifetime after the upstream connected, in whole milliseconds. */
  durationMs: number;
  /** How it ended. */
  reason: ForwardEndReason | SessionEndReason;
  /** Why mtlb ended it, for `revoked` and `policy_changed`. */
  detail?: string;
}

/** Detail of a `"handshake_error"` event. */
export interface HandshakeErrorRecord {
  /** The cause. */
  reason: HandshakeFailure;
  /** The client's address, `host:port`, when known. */
  remote: string;
  /** The certificate's identity, when the client presented one. */
  identity?: CertIdentity;
  /** Detail for the log: the runtime's error code, or what failed in the certificate. */
  detail?: string;
  /**
   * When it failed, ms since the epoch: taken once, when the balancer counts and
   * logs it, so that `/denials` shows the time of its log line even when a worker
   * relays it later.
   */
  at?: number;
}

/** Detail of a `"reload"` event, and the last reload in {@linkcode BalancerStatus}. */
export interface ReloadRecord {
  /** Whether the new configuration is now in use. */
  outcome: "success" | "failure";
  /** When the reload finished, ISO 8601. */
  at: string;
  /** The config file. */
  path: string;
  /** Why it failed; the old configuration keeps running. */
  error?: string;
}

/** An upstream's health as an external source reports it to {@linkcode Balancer.setHealth}. */
export interface HealthReport {
  /** The upstream, `host:port` as configured. */
  address: string;
  /** Whether its active health checks pass. */
  healthy: boolean;
  /** Why it is in this state: a probe reason, such as `probe_ok`. */
  reason: string;
  /**
   * Whether outlier detection ejected it: it is then picked only in panic mode.
   *
   * @default {false}
   */
  ejected?: boolean;
  /**
   * Whether the source counts a streak of passive failures for it: the balancer then
   * reports the next successes too (`"passive_health"`), so that they end the streak.
   *
   * @default {false}
   */
  failing?: boolean;
}

/**
 * Detail of a `"passive_health"` event (balancers with `health: "external"` only):
 * a failure seen on traffic, or a success that may end a streak of failures (the
 * first after a failure this balancer saw, or any while the source says `failing`).
 */
export interface PassiveHealthRecord {
  /** The group whose pool dialed. */
  group: string;
  /** The upstream, `host:port` as configured. */
  address: string;
  /** `failure` or `success`. */
  outcome: "failure" | "success";
  /** What failed, for a failure. */
  reason?: PassiveFailureReason;
  /** What went right, for a success. */
  success?: PassiveSuccess;
}

/**
 * The upstreams of a group's DNS entries, as the owner of the look-ups (the primary
 * thread of a `WorkerBalancer`) found them: by entry, named `dns NAME:PORT` or
 * `srv NAME`, each with its upstreams sorted by address. An entry left out has no
 * upstream yet.
 */
export type DnsReport = Record<string, readonly UpstreamSpec[]>;
