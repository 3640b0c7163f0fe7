/**
 * The snapshot a balancer gives of itself (`/status`), and the pieces of it that a
 * single balancer and the primary of its workers build alike.
 *
 * @module
 */
import type { HostPort } from "../core/address.ts";
import type { DenyReason } from "../core/reasons.ts";
import type { HealthState, TargetHealth } from "../upstream/health_probe.ts";
import type { OutlierState } from "../upstream/outlier_detector.ts";
import type { ReloadRecord } from "./records.ts";
import type { Config } from "../config/mod.ts";
import type { ClientPolicyStatus } from "../config/client_policy.ts";
import type { ClientLimiter } from "../limiter/client_limiter.ts";

/** Counters kept by the balancer, for metrics and tests. */
export interface BalancerCounters {
  /** Connections that completed the handshake and reached an upstream. */
  accepted: number;
  /** Connections refused, by reason. */
  denied: Map<DenyReason, number>;
  /** Handshakes that failed or timed out, by reason. */
  handshakeErrors: Map<string, number>;
  /** Connections being forwarded now. */
  active: number;
}

/** A bound listener. */
export interface ListenerInfo {
  /** The group a dedicated listener serves; absent for the shared listener. */
  group?: string;
  /** The address actually bound (port 0 resolved). */
  address: HostPort;
}

/**
 * The life of a balancer: `idle` until {@linkcode Balancer.start}, `serving`, then
 * `draining` (no longer accepting, live connections finishing) and `closed`.
 */
export type BalancerState = "idle" | "serving" | "draining" | "closed";

/** Result of {@linkcode Balancer.drain}. */
export interface DrainResult {
  /** Connections still open at the deadline, and closed by force. */
  forced: number;
  /** Milliseconds the drain took. */
  durationMs: number;
}

/** One upstream in {@linkcode BalancerStatus}. */
export interface UpstreamState {
  /** `host:port` as configured. */
  address: string;
  /** The configured weight. */
  weight: number;
  /** Connections being forwarded to it. */
  active: number;
  /** Connections forwarded to it since the group was created (for a connection rate). */
  accepted: number;
  /**
   * Whether it may be picked: its health checks pass and outlier detection has not
   * ejected it (in panic mode, ejected ones are picked too).
   */
  healthy: boolean;
  /**
   * Its health state, `unknown` before its first probe; `removed` for an upstream a
   * reload or a DNS answer removed while connections to it are live (never picked).
   */
  state: HealthState | "removed";
  /** Present, with `state` `removed`, for an upstream removed while connections to it are live. */
  removed?: true;
  /**
   * The DNS entry it was resolved from (`dns NAME:PORT`, `srv NAME`); absent for an
   * upstream listed by address.
   */
  source?: string;
  /** Why it entered its state. */
  reason?: string;
  /** When it entered its state, ISO 8601. */
  since?: string;
  /** The latest active probe. */
  lastProbe?: { ok: boolean; reason: string; latencyMs: number; at: string };
  /**
   * Present while outlier detection has it ejected: the failure behind it, when it
   * began and when it ends (ISO 8601), and its recent ejections (the n-th lasts n
   * times the base ejection time).
   */
  ejection?: { reason: string; since: string; until: string; ejections: number };
}

/** One group in {@linkcode BalancerStatus}. */
export interface GroupState {
  /** The group name. */
  name: string;
  /** Its dedicated listener, as configured. */
  listen?: string;
  /** Whether upstreams receive a PROXY protocol header. */
  proxyProtocol?: "v2";
  /** Connections forwarded since start (or since the group was added). */
  accepted: number;
  /**
   * Panic mode: too few upstreams are available, so ejected ones are picked again.
   */
  panic: boolean;
  /** Bytes received from clients. */
  bytesFromClient: number;
  /** Bytes received from upstreams. */
  bytesFromUpstream: number;
  /** Its upstreams, configured ones first. */
  upstreams: UpstreamState[];
  /** Its DNS entries, when it has any. */
  dns?: DnsEntryState[];
  /**
   * Connections admitted to it and open now, queued ones included: what
   * `max_connections` counts (this balancer's share, with a shared store).
   */
  open: number;
  /** Its `max_connections` over all clients, when it has one. */
  maxConnections?: number;
}

/** One DNS entry of a group in {@linkcode GroupState}. */
export interface DnsEntryState {
  /** `dns NAME:PORT` or `srv NAME`. */
  source: string;
  /** Time between look-ups, ms. */
  interval: number;
  /** The upstreams it resolves to now. */
  upstreams: string[];
  /** Look-ups made. */
  lookups: number;
  /** Look-ups that failed or found nothing (the last set was kept). */
  failures: number;
  /** When the last successful look-up ended, ISO 8601. */
  resolvedAt?: string;
  /** Why the last look-up failed, while the next has not succeeded. */
  error?: { reason: string; message: string; at: string };
}

/** One configured client in {@linkcode BalancerStatus}. */
export interface ClientState {
  /** The client name. */
  name: string;
  /** The groups it may use. */
  groups: string[];
  /** Connections it has open now, queued ones included. */
  active: number;
  /** Of those, connections waiting for a rate token (`on_rate_limit = "queue"`). */
  queued: number;
  /** Its concurrent connection cap. */
  maxConnections: number;
  /** Its `bandwidth` (or `[limits]`'s), bytes per second per direction, when it has one. */
  bandwidth?: number;
}

export type { ClientPolicyStatus };

/**
 * A JSON-ready snapshot of a running balancer, served by the admin endpoint's
 * `/status`. Times are ISO 8601 strings.
 */
export interface BalancerStatus {
  /** The life-cycle state. */
  state: BalancerState;
  /** When the balancer started listening. */
  startedAt?: string;
  /** The configuration in use. */
  config: { path: string; loadedAt: string };
  /** The latest reload, when there was one. */
  lastReload?: ReloadRecord;
  /** Connection totals. */
  connections: {
    /** Client connections open: handshaking, being refused, or forwarded. */
    open: number;
    /** Connections whose TLS handshake is in flight. */
    handshaking: number;
    /** `[server] max_connections`, configured or derived from the open-files limit. */
    max: number;
    /** `[server] max_handshakes`, configured or derived. */
    maxHandshakes: number;
    /** Connections being forwarded. */
    active: number;
    /** Connections forwarded since start. */
    accepted: number;
    /** Refusals since start, by reason. */
    denied: Record<string, number>;
    /** Failed handshakes since start, by reason. */
    handshakeFailures: Record<string, number>;
    /**
     * Queued connections refused because their rate token was not due within
     * `queue_timeout`, since start (also counted in `denied.limit_rate`).
     */
    queueTimeouts: number;
  };
  /** The bound listeners. */
  listeners: { address: string; group?: string }[];
  /** The groups. */
  groups: GroupState[];
  /** The configured clients. */
  clients: ClientState[];
  /** The client policy, when the balancer was given one to report (`BalancerOptions.clientPolicy`). */
  clientPolicy?: ClientPolicyStatus;
  /**
   * When TLS material expires: the server certificate, the earliest CA certificate
   * of the bundle, the earliest `nextUpdate` of the CRLs, and for each group with
   * `[groups.<name>.tls]`, the earliest certificate of its `ca` and its client
   * certificate.
   */
  certificates: {
    server?: string;
    ca?: string;
    crlNextUpdate?: string;
    upstreams?: Record<string, UpstreamCertificateDates>;
  };
}

/** When a group's `[groups.<name>.tls]` material expires, ISO 8601. */
export interface UpstreamCertificateDates {
  /** The earliest `notAfter` of its `ca` bundle. */
  ca?: string;
  /** The `notAfter` of its client certificate, when it has one. */
  cert?: string;
}

/**
 * Copies a probe's view of an upstream (reason, since, last probe) into its status
 * entry; shared by `Balancer.status()` and the workers' primary.
 *
 * @param state The status entry to fill in.
 * @param health The probe's snapshot of the upstream, if it has one.
 * @param iso Turns a clock time into an ISO 8601 wall time.
 */
export function addProbeState(
  state: UpstreamState,
  health: TargetHealth | undefined,
  iso: (monotonic: number) => string,
): void {
  if (health?.reason !== undefined) state.reason = health.reason;
  if (health?.since !== undefined) state.since = iso(health.since);
  const r = health?.lastResult;
  if (r !== undefined) {
    state.lastProbe = { ok: r.ok, reason: r.reason, latencyMs: r.latencyMs, at: iso(r.at) };
  }
}

/**
 * Copies an outlier detector's view of an upstream into its status entry while it
 * is ejected; shared by `Balancer.status()` and the workers' primary.
 *
 * @param state The status entry to fill in.
 * @param outlier The detector's snapshot of the upstream, if it has one.
 * @param iso Turns a clock time into an ISO 8601 wall time.
 */
export function addEjection(
  state: UpstreamState,
  outlier: OutlierState | undefined,
  iso: (monotonic: number) => string,
): void {
  if (outlier?.ejected !== true) return;
  state.healthy = false;
  state.ejection = {
    reason: outlier.reason ?? "unknown",
    since: iso(outlier.since ?? 0),
    until: iso(outlier.until ?? 0),
    ejections: outlier.ejections,
  };
}

/**
 * The configured clients as `/status` shows them: their groups, their connections
 * open and queued (this balancer's share, with a shared store), their cap and
 * bandwidth; shared by `Balancer.status()` and the workers' primary.
 *
 * @param config The configuration in force.
 * @param limiter The balancer's limiter.
 * @returns One entry per configured client, in config order.
 */
export function clientStates(
  config: Pick<Config, "clients" | "limits">,
  limiter: Pick<ClientLimiter, "active" | "queued">,
): ClientState[] {
  return [...config.clients.values()].map((c) => {
    const state: ClientState = {
      name: c.name,
      groups: [...c.groups],
      active: limiter.active(c.name),
      queued: limiter.queued(c.name),
      maxConnections: c.maxConnections ?? config.limits.maxConnectionsPerClient,
    };
    const bandwidth = c.bandwidth ?? config.limits.bandwidth;
    if (bandwidth !== undefined) state.bandwidth = bandwidth;
    return state;
  });
}
