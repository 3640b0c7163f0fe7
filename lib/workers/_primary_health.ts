/**
 * Upstream health as the primary of a `WorkerBalancer` decides it: one active probe
 * and one outlier detector per group, fed by the passive signals of every worker,
 * and every change relayed to every worker, so that all of them route alike.
 *
 * @module
 */
import type { HostPort } from "../core/address.ts";
import type { Clock } from "../core/clock.ts";
import type { Config, GroupConfig, TlsMaterial } from "../config/mod.ts";
import type { EjectionEvent, HealthChangeEvent } from "../upstream/health_event.ts";
import { HealthProbe } from "../upstream/health_probe.ts";
import { type HealthCheck, tcpCheck } from "../upstream/health_check.ts";
import { dialTcp } from "../upstream/dial.ts";
import { tlsDialer } from "../upstream/tls_dial.ts";
import { groupConnector } from "../server/group_connector.ts";
import { isPanic, type UpstreamSpec } from "../upstream/least_conn_pool.ts";
import type { OutlierDetector } from "../upstream/outlier_detector.ts";
import type { BalancerMetrics } from "../server/_balancer_metrics.ts";
import { groupHealthTargets, groupOutlierDetector } from "../server/group_health.ts";
import type { HealthReport, PassiveHealthRecord } from "../server/records.ts";
import type { GroupHealthReports, ToWorker } from "./_messages.ts";

/** Options of {@linkcode PrimaryHealth}. */
export interface PrimaryHealthOptions {
  /**
   * The active health check; when undefined, `tcpCheck`, or for a group with
   * `[groups.<name>.tls]` the same exchange over its TLS connector.
   */
  check: HealthCheck | undefined;
  /** Time source of the probes and detectors. */
  clock: Clock;
  /** The families ejections and health gauges are counted in. */
  metrics: BalancerMetrics;
  /** Sends a `health` message to every worker. */
  relay: (message: ToWorker) => void;
  /** A group's upstreams: its static ones, then those its DNS entries found. */
  upstreams: (group: GroupConfig) => UpstreamSpec[];
  /** The DNS name an upstream of a group was looked up from, verified by TLS checks. */
  nameOf: (group: string, address: HostPort) => string | undefined;
}

/**
 * The health side of a reload: new groups are probed and removed upstreams still
 * probed until the reload is committed or reverted.
 */
export interface HealthStage {
  /** Settles once every probe of the new configuration has checked once. */
  ready(): Promise<void>;
  /** What the probes of the new configuration know, for the workers. */
  reports(): GroupHealthReports;
  /** Keeps the new configuration's probes and targets, and closes the removed groups'. */
  commit(): void;
  /** Goes back to the running configuration's targets and closes the probes added. */
  revert(): Promise<void>;
}

/** The primary's probes and outlier detectors, one per group. */
export class PrimaryHealth {
  #check: HealthCheck | undefined;
  #clock: Clock;
  #metrics: BalancerMetrics;
  #relay: (message: ToWorker) => void;
  #upstreams: (group: GroupConfig) => UpstreamSpec[];
  #nameOf: (group: string, address: HostPort) => string | undefined;
  #probes = new Map<string, HealthProbe>();
  /** Each group's check, by name: swapped when a reload changes its TLS material. */
  #checks = new Map<string, HealthCheck | undefined>();
  /** The upstreams each group's probe checks, for a reload to go back to. */
  #targets = new Map<string, UpstreamSpec[]>();
  /** Each group's outlier detection, beside its probe. */
  #outliers = new WeakMap<HealthProbe, OutlierDetector>();

  /**
   * Creates the health of a primary; nothing is probed until
   * {@linkcode PrimaryHealth.start}.
   *
   * @param options The check, clock, metrics and relay to the workers.
   */
  constructor(options: PrimaryHealthOptions) {
    this.#check = options.check;
    this.#clock = options.clock;
    this.#metrics = options.metrics;
    this.#relay = options.relay;
    this.#upstreams = options.upstreams;
    this.#nameOf = options.nameOf;
  }

  /**
   * Probes every group of a configuration.
   *
   * @param config The configuration.
   * @param tls Its TLS material (the groups' `[groups.<name>.tls]`).
   * @returns When every probe has checked once.
   */
  async start(config: Config, tls: Pick<TlsMaterial, "upstreams">): Promise<void> {
    for (const group of config.groups.values()) {
      this.#checks.set(group.name, this.#checkOf(group.name, tls));
      this.#probes.set(group.name, this.#newProbe(group));
    }
    await Promise.all([...this.#probes.values()].map((p) => p.ready));
  }

  /**
   * The health probe of a group.
   *
   * @param group The group name.
   * @returns The probe, or `undefined` for an unknown group.
   */
  probe(group: string): HealthProbe | undefined {
    return this.#probes.get(group);
  }

  /**
   * The outlier detection of a group.
   *
   * @param group The group name.
   * @returns The detector, or `undefined` for an unknown group.
   */
  outlier(group: string): OutlierDetector | undefined {
    const probe = this.#probes.get(group);
    return probe === undefined ? undefined : this.#outliers.get(probe);
  }

  /**
   * Counts a passive signal of a worker toward its group's outlier detection, and
   * tells every worker when a streak of failures starts or ends (workers report
   * successes only while one is under way).
   *
   * @param record The worker's signal.
   */
  passive(record: PassiveHealthRecord): void {
    const { group, address, outcome, reason, success } = record;
    const outlier = this.outlier(group);
    if (outlier === undefined) return;
    const failing = outlier.isFailing(address);
    if (outcome === "success") outlier.reportSuccess(address, success ?? "connected");
    else if (reason !== undefined) outlier.reportFailure(address, reason);
    if (outlier.isFailing(address) !== failing) this.#broadcast(group, address);
  }

  /**
   * What the probes know, for a worker that starts or reloads; unknown targets are
   * left out.
   *
   * @returns The reports of every group.
   */
  reports(): GroupHealthReports {
    return this.#reports(this.#probes);
  }

  /**
   * Whether the workers' pools of a group are in panic mode: the same rule on the
   * same state.
   *
   * @param group The group's configuration.
   * @returns `true` when too few upstreams are available.
   */
  panic(group: GroupConfig): boolean {
    const probe = this.#probes.get(group.name);
    const outlier = probe === undefined ? undefined : this.#outliers.get(probe);
    let available = 0;
    let ejected = 0;
    const upstreams = this.#upstreams(group);
    for (const { address } of upstreams) {
      if (probe?.isHealthy(address) !== true) continue;
      if (outlier?.isEjected(address)) ejected++;
      else available++;
    }
    return isPanic(
      { total: upstreams.length, available, ejected },
      group.outlier.panicThreshold,
    );
  }

  /**
   * Sets the health gauges of `/metrics`: healthy, ejected, panic and probe latency.
   *
   * @param groups The groups of the running configuration.
   */
  updateMetrics(groups: Iterable<GroupConfig>): void {
    const m = this.#metrics;
    m.upstreamHealthy.clear();
    m.probeLatency.clear();
    m.ejected.clear();
    m.panic.clear();
    for (const group of groups) {
      const probe = this.#probes.get(group.name);
      const outlier = probe === undefined ? undefined : this.#outliers.get(probe);
      m.panic.labels(group.name).set(this.panic(group) ? 1 : 0);
      for (const upstream of this.#upstreams(group)) {
        const ejected = outlier?.isEjected(upstream.address) === true;
        m.upstreamHealthy.labels(group.name, upstream.address)
          .set(probe?.isHealthy(upstream.address) && !ejected ? 1 : 0);
        m.ejected.labels(group.name, upstream.address).set(ejected ? 1 : 0);
      }
      for (const health of probe?.snapshot() ?? []) {
        if (health.lastResult === undefined) continue;
        m.probeLatency.labels(group.name, health.address).set(health.lastResult.latencyMs / 1000);
      }
    }
  }

  /**
   * Probes a group's upstreams anew after its DNS entries found another set: new
   * ones are probed at once (each worker picks one once its first probe passes),
   * those that stay keep their state, removed ones stop being probed.
   *
   * @param group The group's configuration in force.
   */
  retarget(group: GroupConfig): void {
    const probe = this.#probes.get(group.name);
    if (probe === undefined) return;
    const upstreams = this.#upstreams(group);
    this.#targets.set(group.name, upstreams);
    probe.setTargets(groupHealthTargets(group, upstreams));
    const { panicThreshold: _, ...settings } = group.outlier;
    this.#outliers.get(probe)?.setTargets(upstreams.map((u) => u.address), settings);
  }

  /**
   * Prepares the health of a reload: new upstreams and groups are probed at once,
   * and the old ones are probed until the end.
   *
   * @param config The configuration to apply (its DNS entries already looked up).
   * @param previous The running configuration.
   * @param tls The TLS material of `config`: new groups are probed with it at once,
   *   kept ones once the stage is committed.
   * @returns The stage, to commit or revert.
   */
  stage(config: Config, previous: Config, tls: Pick<TlsMaterial, "upstreams">): HealthStage {
    const added = new Map<string, HealthProbe>();
    const kept: HealthProbe[] = [];
    const checks = new Map<string, HealthCheck | undefined>();
    const targetsOf = (group: GroupConfig, upstreams = this.#upstreams(group)) =>
      groupHealthTargets(group, upstreams);
    for (const group of config.groups.values()) {
      checks.set(group.name, this.#checkOf(group.name, tls));
      const targets = targetsOf(group);
      const probe = this.#probes.get(group.name);
      if (probe === undefined) {
        if (!this.#checks.has(group.name)) this.#checks.set(group.name, checks.get(group.name));
        added.set(group.name, this.#newProbe(group));
        continue;
      }
      const was = previous.groups.get(group.name)!;
      const old = targetsOf(was, this.#targets.get(group.name));
      probe.setTargets([
        ...targets,
        ...old.filter((o) => !targets.some((t) => t.address === o.address)),
      ]);
      kept.push(probe);
    }
    return {
      ready: async () => {
        await Promise.all([...added.values(), ...kept].map((p) => p.ready));
      },
      reports: () => this.#reports(new Map([...this.#probes, ...added])),
      commit: () => {
        for (const [name, probe] of this.#probes) {
          const group = config.groups.get(name);
          if (group === undefined) {
            this.#probes.delete(name);
            this.#targets.delete(name);
            void this.#closeProbe(probe);
          } else {
            this.retarget(group);
          }
        }
        for (const [name, probe] of added) this.#probes.set(name, probe);
        added.clear();
        this.#checks = checks;
      },
      revert: async () => {
        for (const group of config.groups.values()) {
          const was = previous.groups.get(group.name);
          if (was === undefined) continue;
          this.#probes.get(group.name)?.setTargets(targetsOf(was, this.#targets.get(group.name)));
        }
        await Promise.all([...added.values()].map((p) => this.#closeProbe(p)));
      },
    };
  }

  /**
   * Stops every probe and detector; their last state still answers.
   *
   * @returns When every probe is closed.
   */
  async close(): Promise<void> {
    await Promise.all([...this.#probes.values()].map((p) => this.#closeProbe(p)));
  }

  /** A group's probe and, beside it, its outlier detection: one decision for every worker. */
  /** The check of a group with the TLS material `tls`. */
  #checkOf(group: string, tls: Pick<TlsMaterial, "upstreams">): HealthCheck | undefined {
    return groupConnector(tls.upstreams?.get(group), {
      dial: dialTcp,
      connectTls: tlsDialer,
      healthCheck: this.#check,
      wall: Date.now,
      nameOf: (address) => this.#nameOf(group, address),
    }).check;
  }

  #newProbe(config: GroupConfig): HealthProbe {
    const group = config.name;
    const upstreams = this.#upstreams(config);
    this.#targets.set(group, upstreams);
    const probe = new HealthProbe(groupHealthTargets(config, upstreams), {
      // Through the map, so that a reload can swap the group's TLS material.
      check: (address, settings, signal) =>
        (this.#checks.get(group) ?? tcpCheck)(address, settings, signal),
      clock: this.#clock,
    });
    const outlier = groupOutlierDetector(config, probe, this.#clock);
    const { panicThreshold: _, ...settings } = config.outlier;
    outlier.setTargets(upstreams.map((u) => u.address), settings);
    this.#outliers.set(probe, outlier);
    probe.addEventListener("change", (event) => {
      const { address, healthy, reason } = (event as HealthChangeEvent).change;
      const report: HealthReport = { address, healthy, reason };
      this.#addPassive(report, outlier);
      this.#relay({ type: "health", group, report });
    });
    outlier.addEventListener("ejection", (event) => {
      const { address, ejected, reason } = (event as EjectionEvent).change;
      if (ejected) this.#metrics.ejections.labels(group, address, reason).inc();
      this.#broadcast(group, address);
    });
    probe.start();
    return probe;
  }

  #closeProbe(probe: HealthProbe): Promise<void> {
    this.#outliers.get(probe)?.close();
    return probe.close();
  }

  /** Sends every worker what the primary knows of one upstream (once probed). */
  #broadcast(group: string, address: string): void {
    const probe = this.#probes.get(group);
    const health = probe?.snapshot().find((h) => h.address === address);
    if (probe === undefined || health === undefined || health.state === "unknown") return;
    const report: HealthReport = {
      address,
      healthy: health.state === "healthy",
      reason: health.reason ?? "probe_ok",
    };
    this.#addPassive(report, this.#outliers.get(probe));
    this.#relay({ type: "health", group, report });
  }

  #addPassive(report: HealthReport, outlier: OutlierDetector | undefined): void {
    if (outlier?.isEjected(report.address)) report.ejected = true;
    if (outlier?.isFailing(report.address)) report.failing = true;
  }

  #reports(probes: Map<string, HealthProbe>): GroupHealthReports {
    const reports: GroupHealthReports = {};
    for (const [group, probe] of probes) {
      const outlier = this.#outliers.get(probe);
      reports[group] = probe.snapshot().filter((h) => h.state !== "unknown").map((h) => {
        const report: HealthReport = {
          address: h.address,
          healthy: h.state === "healthy",
          reason: h.reason ?? "probe_ok",
        };
        this.#addPassive(report, outlier);
        return report;
      });
    }
    return reports;
  }
}
