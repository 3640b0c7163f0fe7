/**
 * The `mtlb_*` metric families of a {@linkcode Balancer}, registered once per
 * balancer, with the series the hot path uses resolved ahead of time.
 *
 * @module
 */
import type { ClientLimitKind } from "../limiter/store.ts";
import { DENY_REASONS } from "../core/reasons.ts";
import type {
  CounterSeries,
  GaugeSeries,
  MetricFamily,
  MetricsRegistry,
} from "../metrics/registry.ts";

/** Distinct handshake failure reasons kept as their own series; later ones count as `other`. */
const MAX_HANDSHAKE_REASONS = 32;

/** The balancer's metric families and pre-resolved series. */
export class BalancerMetrics {
  readonly accepted: MetricFamily<CounterSeries>;
  readonly denied: MetricFamily<CounterSeries>;
  readonly active: MetricFamily<GaugeSeries>;
  readonly open: GaugeSeries;
  readonly maxConnections: GaugeSeries;
  readonly maxHandshakes: GaugeSeries;
  readonly handshaking: GaugeSeries;
  readonly bytes: MetricFamily<CounterSeries>;
  readonly handshakeFailures: MetricFamily<CounterSeries>;
  readonly limiterRefusals: Record<ClientLimitKind, CounterSeries>;
  /** Connections waiting for a rate token (`on_rate_limit = "queue"`). */
  readonly queued: GaugeSeries;
  /** Connections refused because their rate token was not due within `queue_timeout`. */
  readonly queueTimeouts: CounterSeries;
  readonly upstreamHealthy: MetricFamily<GaugeSeries>;
  readonly probeLatency: MetricFamily<GaugeSeries>;
  readonly ejections: MetricFamily<CounterSeries>;
  readonly ejected: MetricFamily<GaugeSeries>;
  readonly panic: MetricFamily<GaugeSeries>;
  readonly retries: MetricFamily<CounterSeries>;
  readonly reloads: { success: CounterSeries; failure: CounterSeries };
  readonly lastReloadSuccessful: GaugeSeries;
  readonly configLoaded: GaugeSeries;
  readonly expiry: MetricFamily<GaugeSeries>;
  readonly upstreamExpiry: MetricFamily<GaugeSeries>;
  readonly clientActive: MetricFamily<GaugeSeries>;
  readonly draining: GaugeSeries;
  readonly sessionEnds: MetricFamily<CounterSeries>;
  readonly dnsFailures: MetricFamily<CounterSeries>;
  readonly dnsUpstreams: MetricFamily<GaugeSeries>;
  readonly dnsAge: MetricFamily<GaugeSeries>;
  readonly #deniedBy = new Map<string, CounterSeries>();
  readonly #handshakeBy = new Map<string, CounterSeries>();

  constructor(registry: MetricsRegistry) {
    this.accepted = registry.counter({
      name: "mtlb_connections_accepted_total",
      help: "Connections authorized and forwarded to an upstream, by group.",
      labelNames: ["group"],
    });
    this.denied = registry.counter({
      name: "mtlb_connections_denied_total",
      help: "Connections refused after (or, for server_full, before) the TLS handshake, by reason.",
      labelNames: ["reason"],
    });
    for (const reason of DENY_REASONS) this.#deniedBy.set(reason, this.denied.labels(reason));
    this.active = registry.gauge({
      name: "mtlb_connections_active",
      help: "Connections being forwarded, by group and upstream.",
      labelNames: ["group", "upstream"],
    });
    this.open = registry.gauge({
      name: "mtlb_connections_open",
      help: "Client TCP connections open, handshaking and forwarding alike.",
    }).labels();
    this.maxConnections = registry.gauge({
      name: "mtlb_connections_max",
      help:
        "The server-wide cap on open client connections ([server] max_connections, by default derived from the open-files limit).",
    }).labels();
    this.handshaking = registry.gauge({
      name: "mtlb_handshakes_in_flight",
      help: "Client connections whose TLS handshake is in flight.",
    }).labels();
    this.maxHandshakes = registry.gauge({
      name: "mtlb_handshakes_max",
      help:
        "The cap on TLS handshakes in flight ([server] max_handshakes); beyond it the oldest is shed.",
    }).labels();
    this.bytes = registry.counter({
      name: "mtlb_bytes_total",
      help: "Bytes forwarded, by group and direction (from_client, from_upstream).",
      labelNames: ["group", "direction"],
    });
    this.handshakeFailures = registry.counter({
      name: "mtlb_handshake_failures_total",
      help:
        "TLS handshakes that failed or timed out, by reason (handshake_timeout or the TLS error code).",
      labelNames: ["reason"],
    });
    const refusals = registry.counter({
      name: "mtlb_limiter_refusals_total",
      help: "Connections refused by a client's limits, by kind (concurrency, rate).",
      labelNames: ["kind"],
    });
    this.limiterRefusals = {
      concurrency: refusals.labels("concurrency"),
      rate: refusals.labels("rate"),
    };
    this.queued = registry.gauge({
      name: "mtlb_limiter_queued",
      help:
        'Connections waiting for a rate token before their upstream is dialed (on_rate_limit = "queue").',
    }).labels();
    this.queueTimeouts = registry.counter({
      name: "mtlb_limiter_queue_timeouts_total",
      help:
        "Connections refused (limit_rate) because their rate token was not due within queue_timeout.",
    }).labels();
    this.upstreamHealthy = registry.gauge({
      name: "mtlb_upstream_healthy",
      help: "1 when the upstream passes its health checks and is not ejected, else 0.",
      labelNames: ["group", "upstream"],
    });
    this.probeLatency = registry.gauge({
      name: "mtlb_probe_latency_seconds",
      help: "Duration of the latest active health probe of the upstream.",
      labelNames: ["group", "upstream"],
    });
    this.ejections = registry.counter({
      name: "mtlb_outlier_ejections_total",
      help:
        "Upstreams ejected by outlier detection, by group, upstream and the failure that ejected them.",
      labelNames: ["group", "upstream", "reason"],
    });
    this.ejected = registry.gauge({
      name: "mtlb_upstream_ejected",
      help:
        "1 while outlier detection has the upstream ejected (picked only in panic mode), else 0.",
      labelNames: ["group", "upstream"],
    });
    this.panic = registry.gauge({
      name: "mtlb_group_panic",
      help:
        "1 while the group is in panic mode (too few upstreams available: ejected ones are picked again), else 0.",
      labelNames: ["group"],
    });
    this.retries = registry.counter({
      name: "mtlb_connect_retries_total",
      help: "Upstream dials made again, to the next upstream, after a failed one, by group.",
      labelNames: ["group"],
    });
    const reloads = registry.counter({
      name: "mtlb_reloads_total",
      help: "Configuration reloads, by outcome (success, failure).",
      labelNames: ["outcome"],
    });
    this.reloads = { success: reloads.labels("success"), failure: reloads.labels("failure") };
    this.lastReloadSuccessful = registry.gauge({
      name: "mtlb_config_last_reload_successful",
      help: "1 when the latest reload succeeded (or none happened yet), 0 when it failed.",
    }).labels();
    this.lastReloadSuccessful.set(1);
    this.configLoaded = registry.gauge({
      name: "mtlb_config_loaded_timestamp_seconds",
      help: "When the running configuration was loaded, seconds since the epoch.",
    }).labels();
    this.expiry = registry.gauge({
      name: "mtlb_certificate_expiry_timestamp_seconds",
      help:
        "When TLS material expires, seconds since the epoch: server certificate, earliest CA certificate, earliest CRL nextUpdate.",
      labelNames: ["which"],
    });
    this.upstreamExpiry = registry.gauge({
      name: "mtlb_upstream_certificate_expiry_timestamp_seconds",
      help:
        "When the TLS material of a group's [groups.<name>.tls] expires, seconds since the epoch: earliest CA certificate, client certificate.",
      labelNames: ["group", "which"],
    });
    this.clientActive = registry.gauge({
      name: "mtlb_client_connections_active",
      help: "Connections being forwarded, by configured client.",
      labelNames: ["client"],
    });
    this.draining = registry.gauge({
      name: "mtlb_draining",
      help: "1 while the balancer drains (stopped accepting, waiting for connections to end).",
    }).labels();
    this.sessionEnds = registry.counter({
      name: "mtlb_connections_closed_total",
      help:
        "Forwarded connections mtlb closed itself, by reason: revoked, policy_changed (after a reload), max_lifetime, buffer_overflow.",
      labelNames: ["reason"],
    });
    this.dnsFailures = registry.counter({
      name: "mtlb_dns_lookup_failures_total",
      help:
        "DNS look-ups of upstreams that kept the last set, by group, entry and reason (empty, timeout, error).",
      labelNames: ["group", "source", "reason"],
    });
    this.dnsUpstreams = registry.gauge({
      name: "mtlb_dns_upstreams",
      help: "Upstreams a DNS entry of a group resolves to now.",
      labelNames: ["group", "source"],
    });
    this.dnsAge = registry.gauge({
      name: "mtlb_dns_lookup_age_seconds",
      help: "Seconds since the last successful DNS look-up of a group's entry.",
      labelNames: ["group", "source"],
    });
  }

  /** The series of a deny reason. */
  deniedFor(reason: string): CounterSeries {
    let series = this.#deniedBy.get(reason);
    if (series === undefined) {
      series = this.denied.labels(reason);
      this.#deniedBy.set(reason, series);
    }
    return series;
  }

  /** The series of a handshake failure reason; bounded, the overflow counts as `other`. */
  handshakeFailureFor(reason: string): CounterSeries {
    let series = this.#handshakeBy.get(reason);
    if (series === undefined) {
      const label = this.#handshakeBy.size < MAX_HANDSHAKE_REASONS ? reason : "other";
      series = this.handshakeFailures.labels(label);
      if (label === reason) this.#handshakeBy.set(reason, series);
    }
    return series;
  }

  /**
   * The `mtlb_connections_closed_total` series of a reason.
   *
   * @param reason Why mtlb closed the connection.
   * @returns The series.
   */
  sessionEndFor(reason: string): CounterSeries {
    return this.sessionEnds.labels(reason);
  }
}
