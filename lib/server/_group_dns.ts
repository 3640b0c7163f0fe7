/**
 * The DNS entries of a group (`{ dns = "NAME:PORT" }`, `{ srv = "NAME" }`): one
 * `DnsUpstreams` per entry, started before the group is used, swapped by reloads
 * (entries that stay keep their set), and what they add to `/status` and `/metrics`.
 *
 * @module
 */
import type { Clock } from "../core/clock.ts";
import type { GroupConfig, ServerConfig } from "../config/mod.ts";
import { denoResolver, type DnsResolver } from "../upstream/dns_resolver.ts";
import {
  DNS_FAILURE_REASONS,
  type DnsFailureEvent,
  DnsLookupError,
  type DnsQuery,
  dnsSourceName,
  DnsUpstreams,
} from "../upstream/dns_upstreams.ts";
import type { UpstreamSpec } from "../upstream/least_conn_pool.ts";
import type { BalancerMetrics } from "./_balancer_metrics.ts";
import type { DnsEntryState } from "./status.ts";

/** One DNS entry of a group: what to look up, and how often (ms). */
export type DnsEntry = DnsQuery & { interval: number };

/**
 * A group's DNS entries, as {@linkcode UpstreamGroup} runs them: looked up by the
 * group ({@linkcode GroupDns}) or reported by another thread (`RelayedDns`).
 */
export interface DnsEntries {
  /** How many DNS entries are in force. */
  readonly size: number;
  /** Whether a reload has staged entries it has not committed yet. */
  readonly staging: boolean;
  /** Stages the entries of a configuration (start, or the first step of a reload). */
  prepare(entries: readonly DnsEntry[]): Promise<void>;
  /** The upstreams of the staged entries (during a reload) or of those in force. */
  upstreams(): { spec: UpstreamSpec; source: string }[];
  /** Puts the staged entries in force. */
  commit(): void;
  /** Drops what a reload staged. */
  discard(): void;
  /** The entries in force, for `/status`. */
  status(iso: (monotonic: number) => string): DnsEntryState[];
  /** Brings the per-entry gauges up to date (a scrape). */
  collect(): void;
  /** Stops every entry (and removes its metric series when `removeSeries`). */
  close(removeSeries?: boolean): void;
}

/**
 * The DNS entries of a group's configuration.
 *
 * @param config The group.
 * @returns Its entries, in configuration order.
 */
export function dnsEntriesOf(config: GroupConfig): DnsEntry[] {
  return config.dns;
}

/**
 * A resolver that asks the `[server] resolver` of the configuration in force at each
 * look-up (a reload may change it), else the system resolver.
 *
 * @param server The `[server]` section in force.
 * @returns The resolver.
 */
export function configuredResolver(server: () => ServerConfig): DnsResolver {
  const resolver = () => {
    const nameServer = server().resolver;
    return denoResolver(nameServer === undefined ? {} : { nameServer });
  };
  return {
    addresses: (name, type, signal) => resolver().addresses(name, type, signal),
    srv: (name, signal) => resolver().srv(name, signal),
  };
}

/** Options of {@linkcode GroupDns}. */
export interface GroupDnsOptions {
  /** The group's name, for metrics. */
  group: string;
  /** Answers the look-ups; required once the group has an entry. */
  resolver: DnsResolver | undefined;
  /** The time source of the intervals. */
  clock: Clock;
  /** The families the entries are counted in. */
  metrics: BalancerMetrics;
  /** Called when a running entry finds another set of upstreams. */
  onChange: () => void;
}

/** A group's running DNS entries, and those a reload in progress has looked up. */
export class GroupDns implements DnsEntries {
  #options: GroupDnsOptions;
  #running = new Map<string, DnsUpstreams>();
  #staged: Map<string, DnsUpstreams> | undefined;
  #intervals = new Map<string, number>();

  /**
   * Creates it with no entry.
   *
   * @param options Group, resolver, clock, metrics and change hook.
   */
  constructor(options: GroupDnsOptions) {
    this.#options = options;
  }

  /** How many DNS entries run. */
  get size(): number {
    return this.#running.size;
  }

  /** Whether a reload has staged entries it has not committed yet. */
  get staging(): boolean {
    return this.#staged !== undefined;
  }

  /**
   * Looks up every entry not running yet (start, or the first step of a reload) and
   * stages the set; entries that run already are kept as they are.
   *
   * @param entries The group's entries.
   * @returns When every new entry found upstreams.
   * @throws {DnsLookupError} When one failed or found none (nothing is staged then).
   * @throws {TypeError} When an entry is given and no resolver.
   */
  async prepare(entries: readonly DnsEntry[]): Promise<void> {
    this.discard();
    const staged = new Map<string, DnsUpstreams>();
    const started: DnsUpstreams[] = [];
    const intervals = new Map<string, number>();
    for (const entry of entries) {
      const source = dnsSourceName(entry);
      intervals.set(source, entry.interval);
      const running = this.#running.get(source);
      if (running !== undefined) {
        staged.set(source, running);
        continue;
      }
      const resolver = this.#options.resolver;
      if (resolver === undefined) {
        throw new TypeError(`Cannot look up ${source}: the balancer has no DNS resolver`);
      }
      const dns = new DnsUpstreams(entry, {
        resolver,
        interval: entry.interval,
        clock: this.#options.clock,
      });
      staged.set(source, dns);
      started.push(dns);
    }
    // Staged at once: answers of running entries wait for the reload's end.
    this.#staged = staged;
    try {
      await Promise.all(started.map((dns) => dns.start()));
    } catch (error) {
      for (const dns of started) dns.close();
      if (this.#staged === staged) this.#staged = undefined;
      if (!(error instanceof DnsLookupError)) throw error;
      throw new DnsLookupError(
        error.source,
        error.reason,
        `group ${this.#options.group}: ${error.message}`,
        { cause: error.cause },
      );
    }
    this.#intervals = intervals;
  }

  /**
   * The upstreams of the staged entries (during a reload) or of the running ones.
   *
   * @returns Every entry's upstreams, in entry order, each address once.
   */
  upstreams(): { spec: UpstreamSpec; source: string }[] {
    const out: { spec: UpstreamSpec; source: string }[] = [];
    for (const [source, dns] of this.#staged ?? this.#running) {
      for (const spec of dns.upstreams) out.push({ spec, source });
    }
    return out;
  }

  /** Puts the staged entries in force: removed ones stop, new ones start reporting changes. */
  commit(): void {
    const staged = this.#staged;
    if (staged === undefined) return;
    this.#staged = undefined;
    const m = this.#options.metrics;
    const group = this.#options.group;
    for (const [source, dns] of this.#running) {
      if (staged.get(source) === dns) continue;
      dns.close();
      m.dnsUpstreams.remove(group, source);
      m.dnsAge.remove(group, source);
    }
    for (const [source, dns] of staged) {
      dns.setInterval(this.#intervals.get(source) ?? dns.snapshot().interval);
      if (this.#running.get(source) === dns) continue;
      dns.addEventListener("change", () => this.#options.onChange());
      dns.addEventListener("failure", (event) => {
        const { reason } = (event as DnsFailureEvent).error;
        m.dnsFailures.labels(group, source, reason).inc();
      });
    }
    this.#running = staged;
  }

  /** Drops what a reload staged (it failed): entries it started stop. */
  discard(): void {
    const staged = this.#staged;
    this.#staged = undefined;
    if (staged === undefined) return;
    for (const [source, dns] of staged) if (this.#running.get(source) !== dns) dns.close();
  }

  /**
   * The entries for `/status`.
   *
   * @param iso Turns a clock time into an ISO 8601 wall time.
   * @returns One record per running entry.
   */
  status(iso: (monotonic: number) => string): DnsEntryState[] {
    return [...this.#running.values()].map((dns) => {
      const s = dns.snapshot();
      const state: DnsEntryState = {
        source: s.source,
        interval: s.interval,
        upstreams: s.upstreams,
        lookups: s.lookups,
        failures: s.failures,
      };
      if (s.resolvedAt !== undefined) state.resolvedAt = iso(s.resolvedAt);
      if (s.error !== undefined) state.error = { ...s.error, at: iso(s.error.at) };
      return state;
    });
  }

  /** Brings the per-entry gauges up to date (a scrape). */
  collect(): void {
    const m = this.#options.metrics;
    const now = this.#options.clock.now();
    for (const [source, dns] of this.#running) {
      const s = dns.snapshot();
      m.dnsUpstreams.labels(this.#options.group, source).set(s.upstreams.length);
      if (s.resolvedAt !== undefined) {
        m.dnsAge.labels(this.#options.group, source).set((now - s.resolvedAt) / 1000);
      }
    }
  }

  /**
   * Stops every entry, staged ones included, and removes the group's series.
   *
   * @param removeSeries Whether to remove the metric series too (the group is gone).
   */
  close(removeSeries = false): void {
    this.discard();
    for (const [source, dns] of this.#running) {
      dns.close();
      if (!removeSeries) continue;
      const m = this.#options.metrics;
      m.dnsUpstreams.remove(this.#options.group, source);
      m.dnsAge.remove(this.#options.group, source);
    }
    if (removeSeries) {
      for (const source of this.#running.keys()) {
        for (const reason of DNS_FAILURE_REASONS) {
          this.#options.metrics.dnsFailures.remove(this.#options.group, source, reason);
        }
      }
    }
    this.#running.clear();
  }
}
