/**
 * The DNS entries of a group whose look-ups another thread makes (a worker of a
 * `WorkerBalancer`): their upstreams are those it reports, kept by entry across the
 * group's re-creation.
 *
 * @module
 */
import { dnsSourceName } from "../upstream/dns_upstreams.ts";
import type { UpstreamSpec } from "../upstream/least_conn_pool.ts";
import type { DnsEntries, DnsEntry } from "./_group_dns.ts";
import type { DnsReport } from "./records.ts";
import type { DnsEntryState } from "./status.ts";

/**
 * The DNS upstreams reported to a balancer, by group then entry, kept across the
 * groups' re-creation by reloads.
 */
export class DnsReports {
  #groups = new Map<string, Map<string, readonly UpstreamSpec[]>>();

  /**
   * A group's reports, kept up to date by {@linkcode DnsReports.set}.
   *
   * @param group The group name.
   * @returns Upstreams by entry (empty before the first report).
   */
  of(group: string): ReadonlyMap<string, readonly UpstreamSpec[]> {
    return this.#of(group);
  }

  /**
   * Replaces a group's reports.
   *
   * @param group The group name.
   * @param report Every entry's upstreams, by entry.
   */
  set(group: string, report: DnsReport): void {
    const sets = this.#of(group);
    sets.clear();
    for (const [source, upstreams] of Object.entries(report)) sets.set(source, [...upstreams]);
  }

  #of(group: string): Map<string, readonly UpstreamSpec[]> {
    let sets = this.#groups.get(group);
    if (sets === undefined) this.#groups.set(group, sets = new Map());
    return sets;
  }
}

/** A group's DNS entries with the upstreams reported for them. */
export class RelayedDns implements DnsEntries {
  #sets: ReadonlyMap<string, readonly UpstreamSpec[]>;
  #running: DnsEntry[] = [];
  #staged: DnsEntry[] | undefined;

  /**
   * Creates it with no entry.
   *
   * @param sets The reported upstreams by entry, kept up to date by the balancer.
   */
  constructor(sets: ReadonlyMap<string, readonly UpstreamSpec[]>) {
    this.#sets = sets;
  }

  /** How many DNS entries are in force. */
  get size(): number {
    return this.#running.length;
  }

  /** Whether a reload has staged entries it has not committed yet. */
  get staging(): boolean {
    return this.#staged !== undefined;
  }

  /**
   * Stages the entries of a configuration; nothing is looked up.
   *
   * @param entries The group's entries.
   * @returns At once.
   */
  prepare(entries: readonly DnsEntry[]): Promise<void> {
    this.#staged = [...entries];
    return Promise.resolve();
  }

  /**
   * The reported upstreams of the staged entries (during a reload) or of those in force.
   *
   * @returns Every entry's upstreams, in entry order.
   */
  upstreams(): { spec: UpstreamSpec; source: string }[] {
    return (this.#staged ?? this.#running).flatMap((entry) => {
      const source = dnsSourceName(entry);
      return (this.#sets.get(source) ?? []).map((spec) => ({ spec, source }));
    });
  }

  /** Puts the staged entries in force. */
  commit(): void {
    if (this.#staged === undefined) return;
    this.#running = this.#staged;
    this.#staged = undefined;
  }

  /** Drops the staged entries. */
  discard(): void {
    this.#staged = undefined;
  }

  /**
   * The entries for `/status`: their reported upstreams; look-ups are counted by
   * the thread that makes them.
   *
   * @returns One record per entry in force.
   */
  status(): DnsEntryState[] {
    return this.#running.map((entry) => {
      const source = dnsSourceName(entry);
      return {
        source,
        interval: entry.interval,
        upstreams: (this.#sets.get(source) ?? []).map((u) => u.address),
        lookups: 0,
        failures: 0,
      };
    });
  }

  /** Nothing to collect: the look-ups' metrics are the other thread's. */
  collect(): void {}

  /** Drops every entry. */
  close(): void {
    this.#staged = undefined;
    this.#running = [];
  }
}
