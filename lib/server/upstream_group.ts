/**
 * A group of upstreams as a balancer runs it: its least-connections pool, its health
 * (active probes and outlier detection, or what another thread reports), its byte
 * and connection counters, and what it contributes to `/status` and `/metrics`.
 *
 * @module
 */
import type { Socket } from "node:net";
import { formatHostPort, type HostPort } from "../core/address.ts";
import type { Clock } from "../core/clock.ts";
import type { GroupConfig } from "../config/mod.ts";
import type { ClientLimiter } from "../limiter/client_limiter.ts";
import type { CounterSeries } from "../metrics/registry.ts";
import type { ForwardStats } from "../proxy/forward.ts";
import type { DnsResolver } from "../upstream/dns_resolver.ts";
import type { Dialer } from "../upstream/dial.ts";
import { HealthProbe } from "../upstream/health_probe.ts";
import { type HealthCheck, tcpCheck } from "../upstream/health_check.ts";
import type { EjectionEvent } from "../upstream/health_event.ts";
import { LeastConnPool, type UpstreamSpec } from "../upstream/least_conn_pool.ts";
import type { UpstreamCounts } from "../upstream/upstream_counts.ts";
import type { OutlierDetector } from "../upstream/outlier_detector.ts";
import type { BalancerMetrics } from "./_balancer_metrics.ts";
import { type DnsEntries, dnsEntriesOf, GroupDns } from "./_group_dns.ts";
import { RelayedDns } from "./_relayed_dns.ts";
import type { ConnectorFactory } from "./group_connector.ts";
import {
  type GroupHealth,
  groupHealthTargets,
  groupOutlierDetector,
  type PassiveSink,
  RelayedHealth,
  type RelayedReport,
} from "./group_health.ts";
import type { PassiveHealthRecord } from "./records.ts";
import { addEjection, addProbeState, type GroupState, type UpstreamState } from "./status.ts";

/** Where a group's health comes from. */
export type GroupHealthSource =
  | {
    /** The balancer probes its upstreams and detects outliers itself, with its connector's check. */
    kind: "probe";
  }
  | {
    /** Another thread reports health (a worker of a `WorkerBalancer`). */
    kind: "external";
    /** The reports for this group, kept across its re-creation. */
    reports: Map<string, RelayedReport>;
    /** Passive signals for the owner of the health checks. */
    onPassive: (record: PassiveHealthRecord) => void;
  };

/** Options of {@linkcode UpstreamGroup}. */
export interface UpstreamGroupOptions {
  /** The time source of probes and ejections. */
  clock: Clock;
  /** The balancer's metric families; the group registers its series in them. */
  metrics: BalancerMetrics;
  /**
   * Where connection counts per upstream live (shared by workers or a fleet).
   *
   * @default {a count of this pool's own}
   */
  counts?: UpstreamCounts | undefined;
  /** Where its health comes from. */
  health: GroupHealthSource;
  /**
   * Answers the look-ups of its DNS entries.
   *
   * @default {none: a group with DNS entries cannot start}
   */
  resolver?: DnsResolver | undefined;
  /**
   * Makes how its sessions and active checks reach its upstreams (see `connectorFor`),
   * given the DNS name each address came from.
   */
  connector: ConnectorFactory;
  /**
   * The upstreams of its DNS entries as another thread reports them, by entry: the
   * group then looks nothing up (see `BalancerOptions.dns`).
   *
   * @default {none: the group looks its entries up with `resolver`}
   */
  dnsReports?: ReadonlyMap<string, readonly UpstreamSpec[]> | undefined;
}

/**
 * One group of upstreams. Created with a group's configuration, updated by reloads
 * ({@linkcode UpstreamGroup.probeTargets} then {@linkcode UpstreamGroup.update}),
 * retired when a reload removes it.
 *
 * @example Usage
 * ```ts ignore
 * const group = new UpstreamGroup(config.groups.get("echo")!, { clock, metrics, health: { kind: "probe" } });
 * await group.probe.ready;
 * const { socket, lease } = await group.pool.connect({ dial: group.dial, timeout: 3000 });
 * ```
 */
export class UpstreamGroup {
  /** The group's configuration in force. */
  config: GroupConfig;
  /** Its upstreams, least connections first. */
  readonly pool: LeastConnPool;
  /** Its active health, or the health another thread reports. */
  readonly probe: GroupHealth;
  /** Where failures and successes seen on traffic go. */
  readonly passive: PassiveSink;
  /** Its outlier detection, when it probes itself. */
  readonly outlier: OutlierDetector | undefined;
  /** Live byte totals: every forward of the group adds to them. */
  readonly stats: ForwardStats = { bytesFromClient: 0, bytesFromUpstream: 0 };
  /** Connections forwarded per upstream address (status only). */
  readonly acceptedBy = new Map<string, number>();
  /** `mtlb_connections_accepted_total` of the group. */
  readonly accepted: CounterSeries;
  /** `mtlb_connect_retries_total` of the group. */
  readonly retries: CounterSeries;
  /** Its DNS entries: upstreams looked up at an interval, or reported. */
  readonly dns: DnsEntries;
  /** Opens a connection to one of its upstreams: TCP, or TLS with `[groups.<name>.tls]`. */
  dial: Dialer<Socket>;
  /** The active check its probe runs; `undefined` for `tcpCheck`. */
  #check: HealthCheck | undefined;
  #metrics: BalancerMetrics;
  /** The DNS entry each resolved upstream comes from. */
  #sources = new Map<string, string>();
  /** A DNS answer came during a reload and waits for its end. */
  #deferred = false;
  #bytesFromClient: CounterSeries;
  #bytesFromUpstream: CounterSeries;
  #follows: Disposable[] = [];

  /**
   * Creates the group and starts its health checks.
   *
   * @param config The group's configuration.
   * @param options Clock, metrics, counts and health source.
   */
  constructor(config: GroupConfig, options: UpstreamGroupOptions) {
    const name = config.name;
    const { clock, metrics, health } = options;
    this.config = config;
    ({ dial: this.dial, check: this.#check } = options.connector((a) => this.dnsName(a)));
    this.#metrics = metrics;
    this.pool = new LeastConnPool(
      config.upstreams.map((u) => ({ address: u.address, weight: u.weight })),
      {
        clock,
        initiallyHealthy: false,
        panicThreshold: config.outlier.panicThreshold,
        name: `Group ${name}`,
        ...(options.counts === undefined ? {} : { counts: options.counts }),
      },
    );
    if (health.kind === "external") {
      const relayed = new RelayedHealth(
        groupHealthTargets(config),
        health.reports,
        clock,
        (record) => health.onPassive({ group: name, ...record }),
      );
      for (const upstream of config.upstreams) {
        this.pool.setHealthy(upstream.address, relayed.isHealthy(upstream.address));
        this.pool.setEjected(upstream.address, relayed.isEjected(upstream.address));
      }
      this.probe = relayed;
      this.passive = relayed;
      this.outlier = undefined;
    } else {
      const active = new HealthProbe(groupHealthTargets(config), {
        // Through a field, so that a reload can swap the connector (new CA, certificate).
        check: (address, settings, signal) => (this.#check ?? tcpCheck)(address, settings, signal),
        clock,
      });
      const detector = groupOutlierDetector(config, active, clock);
      detector.addEventListener("ejection", (event) => {
        const { address, ejected, reason } = (event as EjectionEvent).change;
        if (ejected) metrics.ejections.labels(name, address, reason).inc();
      });
      this.#follows.push(this.pool.followHealth(detector));
      this.probe = active;
      this.passive = this.outlier = detector;
    }
    this.#follows.push(this.pool.followHealth(this.probe));
    this.dns = options.dnsReports !== undefined
      ? new RelayedDns(options.dnsReports)
      : new GroupDns({
        group: name,
        resolver: options.resolver,
        clock,
        metrics,
        onChange: () => this.#resolved(),
      });
    this.probe.start();
    this.accepted = metrics.accepted.labels(name);
    this.retries = metrics.retries.labels(name);
    this.#bytesFromClient = metrics.bytes.labels(name, "from_client");
    this.#bytesFromUpstream = metrics.bytes.labels(name, "from_upstream");
  }

  /**
   * Looks up its DNS entries for the first time (start, or a group a reload adds):
   * their upstreams join the static ones and are probed at once. Nothing to do for a
   * group without DNS entries.
   *
   * @returns When every entry found upstreams (read {@linkcode UpstreamGroup.probe}'s
   *   `ready` afterwards to wait for their first probe).
   * @throws {DnsLookupError} When an entry failed or found none.
   */
  async discover(): Promise<void> {
    const entries = dnsEntriesOf(this.config);
    if (entries.length === 0) return;
    await this.dns.prepare(entries);
    this.dns.commit();
    this.#apply(this.config);
  }

  /**
   * The first step of a reload that keeps the group: look up its new DNS entries,
   * probe its new upstreams, and give outlier detection its new settings. The pool
   * does not change yet.
   *
   * @param config The group's new configuration.
   * @returns When the new upstreams have been probed.
   * @throws {DnsLookupError} When a new DNS entry failed or found none (the reload
   *   fails; nothing of the group changed).
   */
  async probeTargets(config: GroupConfig): Promise<void> {
    await this.dns.prepare(dnsEntriesOf(config));
    const upstreams = this.#upstreams(config);
    this.probe.setTargets(groupHealthTargets(config, upstreams));
    if (this.outlier !== undefined) {
      const { panicThreshold: _, ...settings } = config.outlier;
      this.outlier.setTargets(upstreams.map((u) => u.address), settings);
    }
    await this.probe.ready;
  }

  /**
   * Commits a reload: the pool takes the new upstreams (those that stay keep their
   * counts and health), weights and panic threshold; new DNS entries start looking up
   * at their interval, removed ones stop.
   *
   * @param config The group's new configuration.
   */
  update(config: GroupConfig): void {
    this.config = config;
    this.dns.commit();
    this.pool.setPanicThreshold(config.outlier.panicThreshold);
    this.#apply(config);
  }

  /**
   * A reload failed after {@linkcode UpstreamGroup.probeTargets}: drop the DNS entries
   * it looked up, and apply the answers of the running ones that came meanwhile.
   */
  discardReload(): void {
    if (!this.dns.staging && !this.#deferred) return;
    this.dns.discard();
    this.#apply(this.config);
  }

  /**
   * The upstreams reported for its DNS entries changed (see `BalancerOptions.dns`):
   * applied at once, unless a reload is under way.
   */
  reported(): void {
    this.#resolved();
  }

  /** Static upstreams first, then those of the DNS entries, each address once. */
  #upstreams(config: GroupConfig): UpstreamSpec[] {
    const out: UpstreamSpec[] = config.upstreams.map((u) => ({
      address: u.address,
      weight: u.weight,
    }));
    const seen = new Set(out.map((u) => u.address));
    this.#sources.clear();
    for (const { spec, source } of this.dns.upstreams()) {
      if (seen.has(spec.address)) continue;
      seen.add(spec.address);
      this.#sources.set(spec.address, source);
      out.push(spec);
    }
    return out;
  }

  /**
   * Puts a set of upstreams in force: probes, outlier detection and the pool. New
   * upstreams are unknown, so not picked before their first probe passes; those that
   * stay keep their counts and health; removed ones drain.
   */
  #apply(config: GroupConfig): void {
    this.#deferred = false;
    const upstreams = this.#upstreams(config);
    const addresses = upstreams.map((u) => u.address);
    if (this.probe instanceof RelayedHealth) {
      // One that leaves and comes back is unknown again until reported.
      const staying = new Set(addresses);
      for (const u of this.pool.snapshot()) {
        if (u.removed !== true && !staying.has(u.address)) this.probe.forget(u.address);
      }
    }
    this.probe.setTargets(groupHealthTargets(config, upstreams));
    if (this.outlier !== undefined) {
      const { panicThreshold: _, ...settings } = config.outlier;
      this.outlier.setTargets(addresses, settings);
    }
    this.pool.setUpstreams(upstreams);
    // Addresses come and go with DNS answers: forget the counts of those gone for good.
    const known = new Set(this.pool.snapshot().map((u) => u.address));
    for (const address of this.acceptedBy.keys()) {
      if (!known.has(address)) this.acceptedBy.delete(address);
    }
    const ejections = this.outlier ?? this.probe as RelayedHealth;
    for (const address of addresses) {
      this.pool.setHealthy(address, this.probe.isHealthy(address));
      this.pool.setEjected(address, ejections.isEjected(address));
    }
  }

  /** A DNS entry found another set: applied at once, unless a reload is under way. */
  #resolved(): void {
    if (this.dns.staging) {
      this.#deferred = true; // update() or discardReload() applies the latest sets
      return;
    }
    this.#apply(this.config);
  }

  /**
   * The DNS name an upstream's address was looked up from (`{ dns = "NAME:PORT" }`), the
   * name its certificate is verified against without `server_name`; `undefined` for a
   * configured address or an SRV target (whose host name is not kept).
   *
   * @param address The upstream.
   * @returns The name, or `undefined`.
   */
  dnsName(address: HostPort): string | undefined {
    const source = this.#sources.get(formatHostPort(address));
    if (source === undefined || !source.startsWith("dns ")) return undefined;
    return source.slice(4, source.lastIndexOf(":"));
  }

  /**
   * Swaps how sessions and active checks reach its upstreams (a reload that changed
   * its `[groups.<name>.tls]` files): connections already open are not affected.
   *
   * @param connector Makes the new connector.
   */
  useConnector(connector: ConnectorFactory): void {
    ({ dial: this.dial, check: this.#check } = connector((a) => this.dnsName(a)));
  }

  /**
   * Counts a connection forwarded to an upstream.
   *
   * @param address The upstream.
   */
  countAccepted(address: string): void {
    this.accepted.inc();
    this.acceptedBy.set(address, (this.acceptedBy.get(address) ?? 0) + 1);
  }

  /**
   * Stops its health checks and outlier detection.
   *
   * @returns When the checks in flight settled.
   */
  close(): Promise<void> {
    this.dns.close();
    for (const follow of this.#follows) follow[Symbol.dispose]();
    this.outlier?.close();
    return this.probe.close();
  }

  /**
   * Closes it and removes its metric series (a reload removed the group).
   *
   * @returns When the checks in flight settled.
   */
  retire(): Promise<void> {
    const name = this.config.name;
    const metrics = this.#metrics;
    metrics.accepted.remove(name);
    metrics.retries.remove(name);
    metrics.bytes.remove(name, "from_client");
    metrics.bytes.remove(name, "from_upstream");
    this.dns.close(true);
    return this.close();
  }

  /**
   * Its entry of `/status`.
   *
   * @param iso Turns a clock time into an ISO 8601 wall time.
   * @param limiter The limiter that counts its connections, queued ones included.
   * @returns The group's state, its upstreams configured ones first.
   */
  status(
    iso: (monotonic: number) => string,
    limiter: Pick<ClientLimiter, "activeInGroup">,
  ): GroupState {
    const health = new Map(this.probe.snapshot().map((h) => [h.address, h]));
    const outliers = new Map(this.outlier?.snapshot().map((o) => [o.address, o]));
    const upstreams = this.pool.snapshot().map((u): UpstreamState => {
      const h = health.get(u.address);
      const state: UpstreamState = {
        address: u.address,
        weight: u.weight,
        active: u.active,
        accepted: this.acceptedBy.get(u.address) ?? 0,
        healthy: u.healthy && !u.ejected && u.removed !== true,
        state: u.removed ? "removed" : h?.state ?? "unknown",
      };
      if (u.removed) state.removed = true;
      const source = this.#sources.get(u.address);
      if (source !== undefined) state.source = source;
      addProbeState(state, h, iso);
      if (u.removed !== true) addEjection(state, outliers.get(u.address), iso);
      return state;
    });
    const entry: GroupState = {
      name: this.config.name,
      accepted: this.accepted.value,
      panic: this.pool.panic,
      bytesFromClient: this.stats.bytesFromClient,
      bytesFromUpstream: this.stats.bytesFromUpstream,
      upstreams,
      open: limiter.activeInGroup(this.config.name),
    };
    if (this.config.maxConnections !== undefined) {
      entry.maxConnections = this.config.maxConnections;
    }
    if (this.config.listen !== undefined) entry.listen = this.config.listen;
    if (this.config.proxyProtocol !== undefined) entry.proxyProtocol = "v2";
    if (this.dns.size > 0) entry.dns = this.dns.status(iso);
    return entry;
  }

  /** Brings its series of the per-upstream gauges and byte counters up to date (a scrape). */
  collect(): void {
    const m = this.#metrics;
    const name = this.config.name;
    m.panic.labels(name).set(this.pool.panic ? 1 : 0);
    this.dns.collect();
    grow(this.#bytesFromClient, this.stats.bytesFromClient);
    grow(this.#bytesFromUpstream, this.stats.bytesFromUpstream);
    for (const upstream of this.pool.snapshot()) {
      m.active.labels(name, upstream.address).set(upstream.active);
      if (upstream.removed) continue;
      m.upstreamHealthy.labels(name, upstream.address)
        .set(upstream.healthy && !upstream.ejected ? 1 : 0);
      m.ejected.labels(name, upstream.address).set(upstream.ejected ? 1 : 0);
    }
    for (const health of this.probe.snapshot()) {
      if (health.lastResult === undefined) continue;
      m.probeLatency.labels(name, health.address).set(health.lastResult.latencyMs / 1000);
    }
  }
}

function grow(series: CounterSeries, total: number): void {
  if (total > series.value) series.inc(total - series.value);
}
