/**
 * The DNS entries of a `WorkerBalancer`, looked up by its primary thread: one
 * look-up per entry for the whole process, whose answers the primary relays to
 * every worker (`setDnsUpstreams` of their balancers). Reloads stage new entries as
 * a `Balancer` does: entries that stay keep their set, new ones are looked up first.
 *
 * @module
 */
import { formatHostPort, type HostPort } from "../core/address.ts";
import type { Clock } from "../core/clock.ts";
import type { Config, GroupConfig } from "../config/mod.ts";
import type { DnsResolver } from "../upstream/dns_resolver.ts";
import type { UpstreamSpec } from "../upstream/least_conn_pool.ts";
import type { BalancerMetrics } from "../server/_balancer_metrics.ts";
import { dnsEntriesOf, GroupDns } from "../server/_group_dns.ts";
import type { DnsReport } from "../server/records.ts";
import type { DnsEntryState } from "../server/status.ts";
import type { GroupDnsReports } from "./_messages.ts";

/** Options of {@linkcode PrimaryDns}. */
export interface PrimaryDnsOptions {
  /** Answers the look-ups. */
  resolver: DnsResolver;
  /** Time source of the intervals. */
  clock: Clock;
  /** The families the entries are counted in. */
  metrics: BalancerMetrics;
  /** Called when a running entry of a group finds another set. */
  onChange: (group: string) => void;
}

/** Every group's DNS entries, looked up once for all workers. */
export class PrimaryDns {
  #options: PrimaryDnsOptions;
  #groups = new Map<string, GroupDns>();
  /** Groups a reload adds, until it is committed or discarded. */
  #added = new Map<string, GroupDns>();

  /**
   * Creates it with no entry.
   *
   * @param options Resolver, clock, metrics and change hook.
   */
  constructor(options: PrimaryDnsOptions) {
    this.#options = options;
  }

  /**
   * Looks up every entry of a configuration (start).
   *
   * @param config The configuration.
   * @returns When every entry found upstreams.
   * @throws {DnsLookupError} When one failed or found none.
   */
  async start(config: Config): Promise<void> {
    await this.prepare(config);
    this.commit(config);
  }

  /**
   * Looks up the entries a reload adds; entries that stay keep their set.
   *
   * @param config The configuration to apply.
   * @returns When every new entry found upstreams.
   * @throws {DnsLookupError} When one failed or found none (nothing is staged then).
   */
  async prepare(config: Config): Promise<void> {
    this.discard();
    const steps: Promise<void>[] = [];
    for (const group of config.groups.values()) {
      let dns = this.#groups.get(group.name);
      if (dns === undefined) this.#added.set(group.name, dns = this.#newGroup(group.name));
      steps.push(dns.prepare(dnsEntriesOf(group)));
    }
    const settled = await Promise.allSettled(steps);
    const failed = settled.find((s) => s.status === "rejected");
    if (failed !== undefined) {
      this.discard();
      throw failed.reason;
    }
  }

  /**
   * Puts the staged entries in force; groups the configuration removed stop.
   *
   * @param config The configuration now in force.
   */
  commit(config: Config): void {
    for (const [name, dns] of this.#added) this.#groups.set(name, dns);
    this.#added.clear();
    for (const [name, dns] of this.#groups) {
      if (config.groups.has(name)) {
        dns.commit();
        continue;
      }
      dns.close(true);
      this.#groups.delete(name);
    }
  }

  /** Drops what a reload staged (it failed). */
  discard(): void {
    for (const dns of this.#added.values()) dns.close();
    this.#added.clear();
    for (const dns of this.#groups.values()) dns.discard();
  }

  /**
   * A group's upstreams: its static ones first, then those of its DNS entries
   * (staged ones during a reload), each address once.
   *
   * @param group The group's configuration.
   * @returns The upstreams.
   */
  upstreams(group: GroupConfig): UpstreamSpec[] {
    const out: UpstreamSpec[] = group.upstreams.map((u) => ({
      address: u.address,
      weight: u.weight,
    }));
    const seen = new Set(out.map((u) => u.address));
    for (const { spec } of this.#of(group.name)?.upstreams() ?? []) {
      if (seen.has(spec.address)) continue;
      seen.add(spec.address);
      out.push(spec);
    }
    return out;
  }

  /**
   * The DNS entry each upstream of a group comes from (static ones are left out).
   *
   * @param group The group's configuration.
   * @returns Address to entry.
   */
  sources(group: GroupConfig): Map<string, string> {
    const sources = new Map<string, string>();
    const static_ = new Set(group.upstreams.map((u) => u.address));
    for (const { spec, source } of this.#of(group.name)?.upstreams() ?? []) {
      if (!static_.has(spec.address) && !sources.has(spec.address)) {
        sources.set(spec.address, source);
      }
    }
    return sources;
  }

  /**
   * The DNS name an upstream of a group was looked up from (`{ dns = "NAME:PORT" }`),
   * which a TLS check verifies its certificate against without `server_name`.
   *
   * @param group The group name.
   * @param address The upstream.
   * @returns The name; `undefined` for a configured address or an SRV target.
   */
  dnsName(group: string, address: HostPort): string | undefined {
    const wanted = formatHostPort(address);
    const found = this.#of(group)?.upstreams().find((u) => u.spec.address === wanted);
    if (found === undefined || !found.source.startsWith("dns ")) return undefined;
    return found.source.slice(4, found.source.lastIndexOf(":"));
  }

  /**
   * A group's DNS upstreams by entry, for its workers.
   *
   * @param group The group name.
   * @returns The report (empty for a group without entries).
   */
  report(group: string): DnsReport {
    const report: Record<string, UpstreamSpec[]> = {};
    for (const { spec, source } of this.#of(group)?.upstreams() ?? []) {
      (report[source] ??= []).push(spec);
    }
    return report;
  }

  /**
   * Every group's DNS upstreams (staged ones during a reload), for a worker that
   * starts or reloads.
   *
   * @returns The reports by group.
   */
  reports(): GroupDnsReports {
    const reports: GroupDnsReports = {};
    for (const name of new Set([...this.#groups.keys(), ...this.#added.keys()])) {
      reports[name] = this.report(name);
    }
    return reports;
  }

  /**
   * A group's entries for `/status`.
   *
   * @param group The group name.
   * @param iso Turns a clock time into an ISO 8601 wall time.
   * @returns One record per entry in force; `undefined` when it has none.
   */
  status(group: string, iso: (monotonic: number) => string): DnsEntryState[] | undefined {
    const dns = this.#groups.get(group);
    return dns === undefined || dns.size === 0 ? undefined : dns.status(iso);
  }

  /** Brings the per-entry gauges up to date (a scrape). */
  collect(): void {
    for (const dns of this.#groups.values()) dns.collect();
  }

  /** Stops every look-up. */
  close(): void {
    this.discard();
    for (const dns of this.#groups.values()) dns.close();
  }

  #of(group: string): GroupDns | undefined {
    return this.#added.get(group) ?? this.#groups.get(group);
  }

  #newGroup(group: string): GroupDns {
    return new GroupDns({
      group,
      resolver: this.#options.resolver,
      clock: this.#options.clock,
      metrics: this.#options.metrics,
      onChange: () => this.#options.onChange(group),
    });
  }
}
