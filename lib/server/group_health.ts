/**
 * Where a group's upstream health comes from: its own active probes and outlier
 * detection (`HealthProbe`, `OutlierDetector`), or what another thread reports
 * (`RelayedHealth`, in the workers of a `WorkerBalancer`), and the group's probe
 * targets and detector as a balancer configures them.
 *
 * @module
 */
import type { Clock } from "../core/clock.ts";
import type { GroupConfig, HealthConfig } from "../config/mod.ts";
import type { ProbeReason } from "../upstream/health_check.ts";
import type { HealthTarget, TargetHealth } from "../upstream/health_probe.ts";
import { EjectionEvent, HealthChangeEvent } from "../upstream/health_event.ts";
import {
  OutlierDetector,
  type PassiveFailureReason,
  type PassiveSuccess,
} from "../upstream/outlier_detector.ts";
import type { HealthReport, PassiveHealthRecord } from "./records.ts";

/** What a group needs from its health source: a `HealthProbe`, or a `RelayedHealth`. */
export interface GroupHealth extends EventTarget {
  /** Settles after the first round of checks. */
  readonly ready: Promise<void>;
  /** Starts checking. */
  start(): void;
  /** Replaces the upstreams checked (a reload). */
  setTargets(targets: Iterable<HealthTarget>): void;
  /** Whether an upstream's checks pass. */
  isHealthy(address: string): boolean;
  /** Every upstream's state, for status. */
  snapshot(): TargetHealth[];
  /** Stops checking. */
  close(): Promise<void>;
}

/** Where a group's passive signals go: its `OutlierDetector`, or a `RelayedHealth`. */
export interface PassiveSink {
  /** A failure the upstream caused, seen on traffic. */
  reportFailure(address: string, reason: PassiveFailureReason): void;
  /** A success that ends a streak of failures. */
  reportSuccess(address: string, kind: PassiveSuccess): void;
}

/**
 * A group's outlier detector as a `Balancer` runs it: the group's
 * `[outlier]` settings, its upstreams, and its active health checks as the floor.
 *
 * @param config The group.
 * @param probe Its active health checks.
 * @param clock The time source.
 * @returns A detector; close it with the group.
 */
export function groupOutlierDetector(
  config: GroupConfig,
  probe: { isHealthy(address: string): boolean },
  clock: Clock,
): OutlierDetector {
  const { consecutiveFailures, baseEjectionTime, maxEjectionTime, maxEjectedPercent } =
    config.outlier;
  return new OutlierDetector(config.upstreams.map((u) => u.address), {
    consecutiveFailures,
    baseEjectionTime,
    maxEjectionTime,
    maxEjectedPercent,
    clock,
    isHealthy: (address) => probe.isHealthy(address),
  });
}

/**
 * A group's health targets as a `Balancer` probes them, with every
 * setting explicit (an empty `send`/`expect` switches the step off), so a reload
 * can change or drop any of them.
 *
 * @example Usage
 * ```ts
 * import { groupHealthTargets } from "./group_health.ts";
 * import { parseConfig } from "../config/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `[server]\nlisten = "127.0.0.1:8443"\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * const [target] = groupHealthTargets(config.groups.get("echo")!);
 * assert.equal(target?.address, "127.0.0.1:7001");
 * assert.equal(target?.settings?.send, "");
 * ```
 *
 * @param config The group.
 * @param upstreams Its upstreams, those resolved from DNS included.
 * @returns One target per upstream, in configuration order.
 */
export function groupHealthTargets(
  config: GroupConfig,
  upstreams: readonly { address: string }[] = config.upstreams,
): HealthTarget[] {
  const settings = (health: HealthConfig) => ({
    interval: health.interval,
    timeout: health.timeout,
    rise: health.rise,
    fall: health.fall,
    send: health.send ?? "",
    expect: health.expect ?? "",
  });
  return upstreams.map((u) => ({ address: u.address, settings: settings(config.health) }));
}

/** A reported health, with when it entered that state (balancer clock). */
export interface RelayedReport extends HealthReport {
  /** When it entered its state (balancer clock). */
  since: number;
}

/** Stores a report; returns whether the upstream's healthiness changed (or was unknown). */
export function storeReport(
  reports: Map<string, RelayedReport>,
  report: HealthReport,
  now: number,
): boolean {
  const previous = reports.get(report.address);
  const changed = previous === undefined || previous.healthy !== report.healthy;
  const stored: RelayedReport = {
    address: report.address,
    healthy: report.healthy,
    reason: report.reason,
    since: changed ? now : previous.since,
  };
  if (report.ejected === true) stored.ejected = true;
  if (report.failing === true) stored.failing = true;
  reports.set(report.address, stored);
  return changed;
}

/**
 * A group's health as reported from outside (`health: "external"`): the state of
 * each target, ejections included, is what `Balancer.setHealth()` last
 * said, `unknown` before that. Passive failures go to `onPassive`, and so do
 * successes after a failure this balancer saw or while the source says the
 * upstream is `failing`, so a stream of good connections costs nothing.
 */
export class RelayedHealth extends EventTarget implements GroupHealth, PassiveSink {
  #targets: string[];
  #reports: Map<string, RelayedReport>;
  #clock: Clock;
  #onPassive: (record: Omit<PassiveHealthRecord, "group">) => void;
  /** Upstreams with a failure reported and no success since. */
  #failed = new Set<string>();
  #closed = false;

  constructor(
    targets: Iterable<HealthTarget>,
    reports: Map<string, RelayedReport>,
    clock: Clock,
    onPassive: (record: Omit<PassiveHealthRecord, "group">) => void,
  ) {
    super();
    this.#targets = [...targets].map((t) => t.address);
    this.#reports = reports;
    this.#clock = clock;
    this.#onPassive = onPassive;
  }

  get ready(): Promise<void> {
    return Promise.resolve();
  }

  start(): void {}

  setTargets(targets: Iterable<HealthTarget>): void {
    this.#targets = [...targets].map((t) => t.address);
  }

  isHealthy(address: string): boolean {
    return this.#reports.get(address)?.healthy === true && this.#targets.includes(address);
  }

  isEjected(address: string): boolean {
    return this.#reports.get(address)?.ejected === true && this.#targets.includes(address);
  }

  snapshot(): TargetHealth[] {
    return this.#targets.map((address): TargetHealth => {
      const report = this.#reports.get(address);
      if (report === undefined) return { address, state: "unknown", successes: 0, failures: 0 };
      return {
        address,
        state: report.healthy ? "healthy" : "unhealthy",
        reason: report.reason as ProbeReason,
        since: report.since,
        successes: 0,
        failures: 0,
      };
    });
  }

  reportFailure(address: string, reason: PassiveFailureReason): void {
    if (this.#closed) return;
    this.#failed.add(address);
    this.#onPassive({ address, outcome: "failure", reason });
  }

  reportSuccess(address: string, kind: PassiveSuccess): void {
    if (this.#closed) return;
    const mine = this.#failed.delete(address);
    if (!mine && this.#reports.get(address)?.failing !== true) return;
    this.#onPassive({ address, outcome: "success", success: kind });
  }

  apply(report: HealthReport): void {
    const at = this.#clock.now();
    const previous = this.#reports.get(report.address);
    const wasEjected = previous?.ejected === true;
    const changed = storeReport(this.#reports, report, at);
    if (this.#closed || !this.#targets.includes(report.address)) return;
    if (changed) {
      this.dispatchEvent(
        new HealthChangeEvent({
          address: report.address,
          healthy: report.healthy,
          reason: report.reason,
          at,
        }),
      );
    }
    if ((report.ejected === true) !== wasEjected) {
      this.dispatchEvent(
        new EjectionEvent({
          address: report.address,
          ejected: report.ejected === true,
          reason: report.ejected === true ? "ejected" : "ejection_ended",
          at,
        }),
      );
    }
  }

  /**
   * Drops what was reported of an upstream that left the group: if it comes back,
   * it is unknown until reported again.
   *
   * @param address The upstream.
   */
  forget(address: string): void {
    this.#reports.delete(address);
    this.#failed.delete(address);
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}
