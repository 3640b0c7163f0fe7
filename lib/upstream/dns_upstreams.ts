/**
 * The upstreams behind one DNS name, looked up again at an interval: every A and
 * AAAA address of a host name on a port, or every address of the targets of an SRV
 * name with their ports and weights. A failed or empty look-up keeps the last good
 * set.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { isIP } from "node:net";
import { formatHostPort } from "../core/address.ts";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import type { DnsResolver, SrvAnswer } from "./dns_resolver.ts";
import type { UpstreamSpec } from "./least_conn_pool.ts";

const logger = getLogger(["mtlb", "dns"]);

/** The longest a look-up may take by default (the next one starts an interval after it ends). */
const DEFAULT_TIMEOUT = 5_000;
/** While look-ups keep failing, the warning is repeated at most this often, ms. */
const REPEAT_WARNING = 60_000;
/** The largest upstream weight (that of `LeastConnPool`). */
const MAX_WEIGHT = 1_000_000;

/** What to look up. */
export type DnsQuery =
  | {
    /** Every A and AAAA address of `name` is an upstream on `port`. */
    type: "dns";
    /** The host name. */
    name: string;
    /** The port of every address. */
    port: number;
  }
  | {
    /** Every address of every target of the SRV records of `name`, on its port, with its weight. */
    type: "srv";
    /** The service name, such as `_api._tcp.example.org`. */
    name: string;
  };

/** Why a look-up kept the last set: {@linkcode DnsLookupError.reason}. */
export const DNS_FAILURE_REASONS = ["empty", "timeout", "error"] as const;
/** One of {@linkcode DNS_FAILURE_REASONS}. */
export type DnsFailureReason = typeof DNS_FAILURE_REASONS[number];

/** A look-up that found no upstream, or could not be answered. */
export class DnsLookupError extends Error {
  /** The entry, as {@linkcode dnsSourceName} writes it. */
  readonly source: string;
  /**
   * `empty`: no address (NXDOMAIN, no record, or SERVFAIL, which Deno does not tell
   * apart); `timeout`; `error`: any other failure.
   */
  readonly reason: DnsFailureReason;

  /**
   * Creates the error.
   *
   * @param source The entry.
   * @param reason Why.
   * @param message What happened.
   * @param options The cause.
   */
  constructor(source: string, reason: DnsFailureReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DnsLookupError";
    this.source = source;
    this.reason = reason;
  }
}

/** Dispatched as `"change"` when a look-up finds another set of upstreams. */
export class DnsChangeEvent extends Event {
  /** The entry. */
  readonly source: string;
  /** Addresses new in the set. */
  readonly added: readonly string[];
  /** Addresses gone from it. */
  readonly removed: readonly string[];

  /**
   * Creates the event.
   *
   * @param change The entry and what changed.
   */
  constructor(change: { source: string; added: string[]; removed: string[] }) {
    super("change");
    this.source = change.source;
    this.added = change.added;
    this.removed = change.removed;
  }
}

/** Dispatched as `"failure"` when a look-up fails and the last set is kept. */
export class DnsFailureEvent extends Event {
  /** What failed. */
  readonly error: DnsLookupError;

  /**
   * Creates the event.
   *
   * @param error What failed.
   */
  constructor(error: DnsLookupError) {
    super("failure");
    this.error = error;
  }
}

/** The state of one entry, as {@linkcode DnsUpstreams.snapshot} reports it. */
export interface DnsUpstreamsStatus {
  /** The entry, as {@linkcode dnsSourceName} writes it. */
  source: string;
  /** Time between look-ups, ms. */
  interval: number;
  /** The upstreams in force, `host:port`. */
  upstreams: string[];
  /** Look-ups made. */
  lookups: number;
  /** Look-ups that failed or found nothing (the last set was kept). */
  failures: number;
  /** When the last successful look-up ended (clock time). */
  resolvedAt?: number;
  /** Why the last look-up failed, when it did. */
  error?: { reason: DnsFailureReason; message: string; at: number };
}

/** Options of {@linkcode DnsUpstreams}. */
export interface DnsUpstreamsOptions {
  /** Answers the look-ups. */
  resolver: DnsResolver;
  /** Time between the end of a look-up and the start of the next, ms. */
  interval: number;
  /**
   * The longest a look-up may take, ms.
   *
   * @default {5000}
   */
  timeout?: number;
  /**
   * Time source of the interval and the timeout.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

/**
 * How an entry is named in logs, status and metrics: `dns NAME:PORT` or `srv NAME`.
 *
 * @example Usage
 * ```ts
 * import { dnsSourceName } from "./dns_upstreams.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(dnsSourceName({ type: "dns", name: "api.internal", port: 7000 }), "dns api.internal:7000");
 * assert.equal(dnsSourceName({ type: "srv", name: "_api._tcp.internal" }), "srv _api._tcp.internal");
 * ```
 *
 * @param query The entry.
 * @returns Its name.
 */
export function dnsSourceName(query: DnsQuery): string {
  return query.type === "dns" ? `dns ${query.name}:${query.port}` : `srv ${query.name}`;
}

/**
 * The upstreams behind one DNS entry. {@linkcode DnsUpstreams.start} looks the name
 * up once and fails when it finds nothing; from then on it is looked up again every
 * `interval`, and a look-up that finds another set replaces it and dispatches a
 * {@linkcode DnsChangeEvent} (`"change"`). A look-up that fails, times out or finds
 * no address keeps the last set and dispatches a {@linkcode DnsFailureEvent}
 * (`"failure"`): an empty answer is taken for a fault of DNS rather than for every
 * upstream gone, since Deno reports SERVFAIL as "no record".
 *
 * SRV: only the records of the lowest priority are used (the others are backups in
 * RFC 2782, which least connections has no use for); each address of each target is
 * an upstream on the record's port, with the record's weight as its weight (0 counts
 * as 1); an address listed by two records takes the larger weight. A target of `.`
 * is skipped.
 *
 * @example Usage
 * ```ts
 * import { DnsUpstreams } from "./dns_upstreams.ts";
 * import { FakeClock } from "../core/clock.ts";
 * import assert from "node:assert/strict";
 *
 * let answer = ["10.0.0.1", "10.0.0.2"];
 * const resolver = {
 *   addresses: (_name: string, type: "A" | "AAAA") => Promise.resolve(type === "A" ? answer : []),
 *   srv: () => Promise.resolve([]),
 * };
 * const clock = new FakeClock();
 * const dns = new DnsUpstreams({ type: "dns", name: "api.internal", port: 7000 }, {
 *   resolver,
 *   interval: 10_000,
 *   clock,
 * });
 * await dns.start();
 * assert.deepEqual(dns.upstreams.map((u) => u.address), ["10.0.0.1:7000", "10.0.0.2:7000"]);
 * answer = ["10.0.0.2", "10.0.0.3"];
 * assert.equal(await dns.refresh(), true);
 * assert.deepEqual(dns.upstreams.map((u) => u.address), ["10.0.0.2:7000", "10.0.0.3:7000"]);
 * dns.close();
 * ```
 */
export class DnsUpstreams extends EventTarget {
  /** The entry, as {@linkcode dnsSourceName} writes it. */
  readonly source: string;
  readonly #query: DnsQuery;
  readonly #resolver: DnsResolver;
  readonly #clock: Clock;
  #interval: number;
  #timeout: number | undefined;
  #upstreams: UpstreamSpec[] = [];
  #lookups = 0;
  #failures = 0;
  #resolvedAt: number | undefined;
  #error: DnsUpstreamsStatus["error"];
  #timer: TimerId | undefined;
  #inFlight: Promise<boolean> | undefined;
  #started = false;
  #closed = new AbortController();
  /** While look-ups fail in a row: since when, how many, and when it was last logged. */
  #failing: { since: number; count: number; warnedAt: number; reason: string } | undefined;

  /**
   * Creates the entry; nothing is looked up before {@linkcode DnsUpstreams.start}.
   *
   * @param query What to look up.
   * @param options The resolver, interval, timeout and clock.
   * @throws {RangeError} When the interval or timeout is not a positive number.
   */
  constructor(query: DnsQuery, options: DnsUpstreamsOptions) {
    super();
    this.#query = query;
    this.source = dnsSourceName(query);
    this.#resolver = options.resolver;
    this.#clock = options.clock ?? systemClock;
    this.#interval = checkMs("interval", options.interval);
    this.#timeout = options.timeout === undefined ? undefined : checkMs("timeout", options.timeout);
  }

  /** The upstreams of the last good look-up, sorted by address. */
  get upstreams(): readonly UpstreamSpec[] {
    return this.#upstreams;
  }

  /**
   * Looks the name up, then again every interval.
   *
   * @returns When the first look-up found at least one upstream.
   * @throws {DnsLookupError} When it failed or found none; nothing is scheduled then.
   */
  async start(): Promise<void> {
    if (this.#started) throw new TypeError("Cannot start DNS look-ups: already started");
    this.#started = true;
    const found = await this.#lookup();
    if (found instanceof DnsLookupError) {
      this.#started = false;
      throw found;
    }
    this.#apply(found);
    this.#schedule();
  }

  /**
   * Looks the name up now (a look-up in flight is shared), and replaces the set when
   * it finds another one.
   *
   * @returns Whether the set changed; `false` when the look-up failed.
   */
  refresh(): Promise<boolean> {
    if (this.#inFlight !== undefined) return this.#inFlight;
    const run = async (): Promise<boolean> => {
      const found = await this.#lookup();
      this.#inFlight = undefined; // listeners of the events below may look up again
      if (this.#closed.signal.aborted) return false;
      if (found instanceof DnsLookupError) {
        this.#logFailure(found);
        this.dispatchEvent(new DnsFailureEvent(found));
        return false;
      }
      this.#logRecovery();
      return this.#apply(found);
    };
    return this.#inFlight = run();
  }

  /**
   * Changes the interval (a reload); it applies from the next look-up.
   *
   * @param ms Time between look-ups, ms.
   * @throws {RangeError} When it is not a positive number.
   */
  setInterval(ms: number): void {
    this.#interval = checkMs("interval", ms);
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#schedule();
    }
  }

  /**
   * Its state for status and metrics.
   *
   * @returns A fresh record.
   */
  snapshot(): DnsUpstreamsStatus {
    const status: DnsUpstreamsStatus = {
      source: this.source,
      interval: this.#interval,
      upstreams: this.#upstreams.map((u) => u.address),
      lookups: this.#lookups,
      failures: this.#failures,
    };
    if (this.#resolvedAt !== undefined) status.resolvedAt = this.#resolvedAt;
    if (this.#error !== undefined) status.error = { ...this.#error };
    return status;
  }

  /** Stops looking up; a look-up in flight is aborted. */
  close(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#closed.abort(new DOMException("DNS look-ups closed", "AbortError"));
  }

  #schedule(): void {
    if (this.#closed.signal.aborted) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      void this.refresh().finally(() => this.#schedule());
    }, this.#interval);
  }

  /**
   * Logs a failed look-up: the first of a run and a change of reason at once, then at
   * most once a minute while they keep failing (each is still a "failure" event).
   */
  #logFailure(error: DnsLookupError): void {
    const now = this.#clock.now();
    const failing = this.#failing;
    const properties = {
      source: this.source,
      message: error.message,
      reason: error.reason,
      count: this.#upstreams.length,
    };
    if (failing === undefined) {
      this.#failing = { since: now, count: 1, warnedAt: now, reason: error.reason };
      logger.warn("DNS {source}: {message}; keeping the last {count} upstreams", properties);
      return;
    }
    failing.count++;
    if (failing.reason === error.reason && now - failing.warnedAt < REPEAT_WARNING) {
      logger.debug("DNS {source}: {message}", properties);
      return;
    }
    failing.warnedAt = now;
    failing.reason = error.reason;
    logger.warn(
      "DNS {source}: still failing, {failures} look-ups in a row over {seconds} s: {message}; keeping the last {count} upstreams",
      { ...properties, failures: failing.count, seconds: Math.round((now - failing.since) / 1000) },
    );
  }

  /** Logs that look-ups answer again after failing. */
  #logRecovery(): void {
    const failing = this.#failing;
    if (failing === undefined) return;
    this.#failing = undefined;
    logger.info(
      "DNS {source}: look-ups answer again, after {failures} failed over {seconds} s",
      {
        source: this.source,
        failures: failing.count,
        seconds: Math.round((this.#clock.now() - failing.since) / 1000),
      },
    );
  }

  /** Replaces the set; returns whether it changed. */
  #apply(found: UpstreamSpec[]): boolean {
    this.#resolvedAt = this.#clock.now();
    this.#error = undefined;
    const before = new Map(this.#upstreams.map((u) => [u.address, u.weight]));
    const after = new Set(found.map((u) => u.address));
    const added = found.filter((u) => !before.has(u.address)).map((u) => u.address);
    const removed = [...before.keys()].filter((address) => !after.has(address));
    const reweighted = found.some((u) =>
      before.has(u.address) && before.get(u.address) !== u.weight
    );
    const first = !this.#started || this.#upstreams.length === 0;
    this.#upstreams = found;
    if (added.length === 0 && removed.length === 0 && !reweighted) return false;
    if (!first) {
      logger.info("DNS {source}: {added} added, {removed} removed, {count} upstreams", {
        source: this.source,
        added: added.join(", ") || "none",
        removed: removed.join(", ") || "none",
        count: found.length,
      });
    }
    this.dispatchEvent(new DnsChangeEvent({ source: this.source, added, removed }));
    return true;
  }

  /** One look-up with its timeout: the upstreams found, or why none. */
  async #lookup(): Promise<UpstreamSpec[] | DnsLookupError> {
    this.#lookups++;
    const timeout = this.#timeout ?? DEFAULT_TIMEOUT;
    const controller = new AbortController();
    const timer = this.#clock.setTimeout(
      () => controller.abort(new DOMException("DNS look-up timed out", "TimeoutError")),
      timeout,
    );
    const signal = AbortSignal.any([controller.signal, this.#closed.signal]);
    let failure: DnsLookupError;
    try {
      const found = await raceSignal(this.#find(signal), signal);
      if (found.length > 0) return found;
      failure = new DnsLookupError(this.source, "empty", `${this.#what()} answered no address`);
    } catch (error) {
      const timedOut = controller.signal.aborted;
      failure = new DnsLookupError(
        this.source,
        timedOut || error instanceof Deno.errors.TimedOut ? "timeout" : "error",
        timedOut
          ? `${this.#what()} timed out after ${timeout}ms`
          : `${this.#what()} failed: ${runtimeMessage(error)}`,
        { cause: error },
      );
    } finally {
      this.#clock.clearTimeout(timer);
    }
    this.#failures++;
    this.#error = { reason: failure.reason, message: failure.message, at: this.#clock.now() };
    return failure;
  }

  #what(): string {
    const server = this.#resolver.server;
    return `${this.#query.type === "dns" ? "DNS" : "SRV"} look-up of ${this.#query.name}${
      server === undefined ? "" : ` via ${server}`
    }`;
  }

  async #find(signal: AbortSignal): Promise<UpstreamSpec[]> {
    const query = this.#query;
    const found = new Map<string, number>();
    if (query.type === "dns") {
      for (const ip of await this.#addresses(query.name, signal)) {
        found.set(formatHostPort({ hostname: ip, port: query.port }), 1);
      }
    } else {
      const records = preferred(await this.#resolver.srv(query.name, signal));
      const targets = await Promise.all(
        records.map((record) => this.#addresses(record.target.replace(/\.$/, ""), signal)),
      );
      records.forEach((record, i) => {
        const weight = Math.min(MAX_WEIGHT, Math.max(1, record.weight));
        for (const ip of targets[i]!) {
          const address = formatHostPort({ hostname: ip, port: record.port });
          found.set(address, Math.max(weight, found.get(address) ?? 0));
        }
      });
    }
    return [...found].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
      .map(([address, weight]) => ({ address, weight }));
  }

  /** A name's A and AAAA addresses; an IP address is its own. */
  async #addresses(name: string, signal: AbortSignal): Promise<string[]> {
    if (isIP(name) !== 0) return [name];
    const [v4, v6] = await Promise.all([
      this.#resolver.addresses(name, "A", signal),
      this.#resolver.addresses(name, "AAAA", signal),
    ]);
    return [...new Set([...v4, ...v6])];
  }
}

/** The SRV records of the lowest priority with a target. */
function preferred(records: SrvAnswer[]): SrvAnswer[] {
  const usable = records.filter((r) => r.target !== "." && r.target !== "");
  const lowest = Math.min(...usable.map((r) => r.priority));
  return usable.filter((r) => r.priority === lowest);
}

/** The runtime's error message, without its resolver's prefix (`proto error: `). */
function runtimeMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/^proto error: /, "");
}

function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function checkMs(what: string, ms: number): number {
  if (!(ms > 0) || !Number.isFinite(ms)) {
    throw new RangeError(
      `Cannot look upstreams up in DNS: ${what} must be a positive number of milliseconds, received ${ms}`,
    );
  }
  return ms;
}
