/**
 * Least-connections selection of upstreams, with weights, health, passive
 * ejection and panic mode, run-time reconfiguration, `Disposable` leases and a
 * dial loop that fails over. The counts stores, the lease, the dial race and the
 * errors have modules of their own beside this one.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type HostPort, parseHostPort } from "../core/address.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { DialRace } from "./_dial_race.ts";
import { EjectionEvent, HealthChangeEvent } from "./health_event.ts";
import { MemoryUpstreamCounts } from "./memory_counts.ts";
import { NoHealthyUpstreamError } from "./pool_errors.ts";
import type { UpstreamConnection, UpstreamConnectOptions } from "./upstream_connection.ts";
import type { UpstreamCounts } from "./upstream_counts.ts";
import { PoolLease, type UpstreamLease } from "./upstream_lease.ts";

/** The store a pool counts on, re-exported for the modules that configure a pool. */

const logger = getLogger(["mtlb", "pool"]);

/** The largest accepted upstream weight; keeps `active * weight` an exact integer. */
const MAX_WEIGHT = 1_000_000;
/** Default share of available upstreams, in percent, below which a pool panics. */
const DEFAULT_PANIC_THRESHOLD = 50;

/** One configured upstream. */
export interface UpstreamSpec {
  /** `host:port` (IPv6 literals in brackets); also the upstream's identity. */
  address: string;
  /**
   * Relative capacity, an integer from 1 to 1,000,000: an upstream of weight 2 is
   * given twice the active connections of one of weight 1.
   *
   * @default {1}
   */
  weight?: number;
}

/** The state of one upstream, as reported by {@linkcode LeastConnPool.snapshot}. */
export interface UpstreamStatus {
  /** `host:port` as configured. */
  address: string;
  /** The configured weight. */
  weight: number;
  /** Active connections, as read from the pool's {@linkcode UpstreamCounts}. */
  active: number;
  /** Whether its health checks pass (see {@linkcode LeastConnPool.setHealthy}). */
  healthy: boolean;
  /** Whether outlier detection ejected it (see {@linkcode LeastConnPool.setEjected}). */
  ejected: boolean;
  /** Present and `true` for an upstream removed by a reload whose leases are still live. */
  removed?: boolean;
}

/** Options of {@linkcode LeastConnPool}. */
export interface LeastConnPoolOptions {
  /**
   * Where active counts live; pass a shared store to balance across pools or workers.
   *
   * @default {new MemoryUpstreamCounts()}
   */
  counts?: UpstreamCounts;
  /**
   * Whether upstreams start healthy when they are first configured. The server runs
   * a first probe round before it listens, so starting healthy avoids a cold start
   * that refuses everything.
   *
   * @default {true}
   */
  initiallyHealthy?: boolean;
  /**
   * Time source of the connect timeout in {@linkcode LeastConnPool.connect}.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Panic mode threshold, in percent from 0 to 100: when fewer than this share of
   * the configured upstreams are available (healthy and not ejected), ejected
   * upstreams are picked again. 0 panics only when no upstream is available. See
   * {@linkcode LeastConnPool}.
   *
   * @default {50}
   */
  panicThreshold?: number;
  /**
   * A name for log messages, such as the group's.
   *
   * @default {"pool"}
   */
  name?: string;
}

interface Entry {
  readonly address: string;
  readonly hostPort: HostPort;
  weight: number;
  healthy: boolean;
  ejected: boolean;
  /** Dropped from the configuration; kept only while `leases > 0`. */
  removed: boolean;
  /** Live leases handed out by this pool (the store may count other pools too). */
  leases: number;
}

/**
 * A group of upstreams balanced by least connections.
 *
 * A pick takes the available (healthy and not ejected), configured upstream with
 * the lowest `active / weight`
 * (compared by cross-multiplication, so exactly) and counts the connection at once,
 * before any dial, so concurrent picks spread out. **Ties rotate**: the scan starts just
 * after the previously picked upstream, so tied upstreams are taken in turn and a burst
 * of short-lived connections does not all land on the first one (as HAProxy and NGINX
 * do). A pick is one O(n) pass that allocates nothing but the lease. With no healthy
 * upstream a pick throws {@linkcode NoHealthyUpstreamError}.
 *
 * **Health and ejection.** Two flags decide whether an upstream may be picked:
 * `healthy`, from the active health checks ({@linkcode LeastConnPool.setHealthy}),
 * and `ejected`, from passive outlier detection ({@linkcode LeastConnPool.setEjected});
 * {@linkcode LeastConnPool.followHealth} keeps both up to date from their events.
 *
 * **Panic mode**, after Envoy's: when fewer than `panicThreshold` percent of the
 * configured upstreams are available, or none is, the pool stops trusting the
 * ejections and picks among every healthy upstream, ejected ones included, rather
 * than pile every connection on the few left or refuse them. Unlike Envoy, an
 * upstream that fails its active health checks stays out even then: the checks are
 * explicit and configured, and a group whose every upstream fails them is down
 * (refusing at once with `NoHealthyUpstreamError` beats making clients wait for
 * connect timeouts). Passive ejection is the signal that can be wrong (a burst, a
 * misbehaving client), so it is the one panic overrides.
 *
 * Upstreams can be replaced at run time with {@linkcode LeastConnPool.setUpstreams};
 * counts of upstreams that stay are kept, and a removed upstream's live leases stay
 * valid until they end while it gets no new picks.
 *
 * @example Usage
 * ```ts
 * import { LeastConnPool } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const pool = new LeastConnPool(["10.0.0.1:6379", { address: "10.0.0.2:6379", weight: 2 }]);
 * {
 *   using first = pool.acquire();
 *   using second = pool.acquire();
 *   assert.equal(first.address, "10.0.0.1:6379");
 *   assert.equal(second.address, "10.0.0.2:6379");
 *   using third = pool.acquire();
 *   assert.equal(third.address, "10.0.0.2:6379"); // 1/2 < 1/1: the heavier one again
 * }
 * assert.equal(pool.active("10.0.0.1:6379"), 0); // released at the end of the block
 * ```
 */
export class LeastConnPool {
  #counts: UpstreamCounts;
  #clock: Clock;
  #initiallyHealthy: boolean;
  /** Configured upstreams, in configuration order: the only ones that can be picked. */
  #upstreams: Entry[] = [];
  /** Configured upstreams plus removed ones that still have live leases. */
  #entries = new Map<string, Entry>();
  /** Index into `#upstreams` where the next scan starts. */
  #cursor = 0;
  #panicThreshold: number;
  #name: string;
  /** Ejected upstreams are picked too (see the class description). */
  #panic = false;
  #onRelease = (entry: Entry): void => {
    entry.leases--;
    if (entry.removed && entry.leases === 0 && this.#entries.get(entry.address) === entry) {
      this.#entries.delete(entry.address);
    }
    this.#counts.add(entry.address, -1);
  };

  /**
   * Creates a pool.
   *
   * @param upstreams The upstreams, as `host:port` strings or {@linkcode UpstreamSpec}s.
   * @param options Counts store, initial health, clock, panic threshold and name.
   * @throws {TypeError} When an address is not `host:port` or appears twice.
   * @throws {RangeError} When a weight is not an integer from 1 to 1,000,000, or the
   * panic threshold not an integer from 0 to 100.
   */
  constructor(
    upstreams: readonly (string | UpstreamSpec)[] = [],
    options: LeastConnPoolOptions = {},
  ) {
    this.#counts = options.counts ?? new MemoryUpstreamCounts();
    this.#clock = options.clock ?? systemClock;
    this.#initiallyHealthy = options.initiallyHealthy ?? true;
    this.#name = options.name ?? "pool";
    this.#panicThreshold = checkPanicThreshold(options.panicThreshold ?? DEFAULT_PANIC_THRESHOLD);
    this.setUpstreams(upstreams);
  }

  /**
   * Picks the available upstream with the lowest `active / weight`, rotating among
   * ties, and counts a connection on it at once. In panic mode, ejected upstreams
   * count as available.
   *
   * @example Ties rotate
   * ```ts
   * import { LeastConnPool } from "./least_conn_pool.ts";
   * import assert from "node:assert/strict";
   *
   * const pool = new LeastConnPool(["10.0.0.1:80", "10.0.0.2:80"]);
   * const picks: string[] = [];
   * for (let i = 0; i < 4; i++) {
   *   using lease = pool.acquire(); // short-lived: released before the next pick
   *   picks.push(lease.address);
   * }
   * assert.deepEqual(picks, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]);
   * ```
   *
   * @returns The lease; dispose it when the connection ends.
   * @throws {NoHealthyUpstreamError} When no configured upstream is healthy.
   */
  acquire(): UpstreamLease {
    const entry = this.#pick(undefined, this.#panic);
    if (entry === undefined) throw this.#noHealthy();
    return this.#lease(entry);
  }

  /**
   * Dials upstreams in least-connections order until one connects. Each attempt holds
   * a lease while it dials and has its own connect timeout. A refused or failed dial
   * releases its count, is reported to `onDialFailure`, and the next upstream is tried.
   * A dial past its timeout is reported too, and the next attempt starts, but the late
   * dial is not abandoned: when a full accept queue dropped its SYN, the kernel sends it
   * again after 1 s, 3 s, ..., so it may still connect, and the first dial to connect
   * wins (the others are aborted, or closed with `close` if they connect anyway). What
   * is still pending when the last attempt's timeout passes is aborted: the call takes
   * at most `attempts × timeout`. Once every healthy upstream was tried, tried ones are
   * dialled again, but not one whose failure `isFinal` says is for good. A socket that connects is returned with its lease,
   * even if `signal` aborted in the meantime (the caller owns it then).
   *
   * @example Failing over
   * ```ts
   * import { LeastConnPool } from "./least_conn_pool.ts";
   * import type { HostPort } from "../core/address.ts";
   * import assert from "node:assert/strict";
   *
   * const pool = new LeastConnPool(["10.0.0.1:80", "10.0.0.2:80"]);
   * const dial = (address: HostPort): Promise<string> =>
   *   address.hostname === "10.0.0.1"
   *     ? Promise.reject(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }))
   *     : Promise.resolve(`socket to ${address.hostname}`);
   * const failures: string[] = [];
   * const { socket, lease } = await pool.connect({
   *   dial,
   *   timeout: 1000,
   *   onDialFailure: (address, reason) => failures.push(`${address} ${reason}`),
   * });
   * assert.equal(socket, "socket to 10.0.0.2");
   * assert.deepEqual(failures, ["10.0.0.1:80 dial_refused"]);
   * assert.equal(pool.active("10.0.0.1:80"), 0);
   * lease[Symbol.dispose]();
   * ```
   *
   * @typeParam S The socket type.
   * @param options The dialer, connect timeout, attempt bound, signal and failure hook.
   * @returns The connected socket, its lease and the dials that failed first.
   * @throws {RangeError} When `timeout` is not a positive finite number or `attempts`
   * not a positive integer.
   * @throws {NoHealthyUpstreamError} When no upstream is healthy to begin with.
   * @throws {UpstreamConnectError} When every attempt failed, or no healthy upstream was
   * left after some did.
   * @throws {unknown} The `signal`'s reason when it aborts.
   */
  async connect<S>(options: UpstreamConnectOptions<S>): Promise<UpstreamConnection<S>> {
    const { timeout } = options;
    if (!(timeout > 0) || !Number.isFinite(timeout)) {
      throw new RangeError(
        `Cannot connect to an upstream: timeout must be a positive number of milliseconds, received ${timeout}`,
      );
    }
    const attempts = options.attempts ?? Math.max(1, this.#healthyCount());
    if (!Number.isSafeInteger(attempts) || attempts < 1) {
      throw new RangeError(
        `Cannot connect to an upstream: attempts must be a positive integer, received ${attempts}`,
      );
    }
    options.signal?.throwIfAborted();
    return await new DialRace<S, Entry>(options, attempts, {
      clock: this.#clock,
      pick: (tried, barred) =>
        this.#pick(tried, this.#panic) ??
          (tried.size === 0 ? undefined : this.#pick(tried, true) ??
            this.#pick(barred.size === 0 ? undefined : barred, this.#panic)),
      lease: (entry) => this.#lease(entry),
      noHealthy: () => this.#noHealthy(),
    }).done;
  }

  /**
   * Replaces the configured upstreams (a config reload). Upstreams that stay keep their
   * counts and health and take the new weight; new ones start with the pool's initial
   * health; removed ones get no new picks but their live leases stay valid until they
   * end. The list is validated in full before anything changes.
   *
   * @example Reload
   * ```ts
   * import { LeastConnPool } from "./least_conn_pool.ts";
   * import assert from "node:assert/strict";
   *
   * const pool = new LeastConnPool(["10.0.0.1:80"]);
   * const lease = pool.acquire();
   * pool.setUpstreams(["10.0.0.2:80"]);
   * using next = pool.acquire();
   * assert.equal(next.address, "10.0.0.2:80");
   * assert.equal(pool.snapshot()[1]?.removed, true); // 10.0.0.1:80 drains
   * lease.release();
   * assert.equal(pool.snapshot().length, 1);
   * ```
   *
   * @param upstreams The new upstreams.
   * @throws {TypeError} When an address is not `host:port` or appears twice.
   * @throws {RangeError} When a weight is not an integer from 1 to 1,000,000.
   */
  setUpstreams(upstreams: readonly (string | UpstreamSpec)[]): void {
    const specs = upstreams.map((spec) => {
      const address = typeof spec === "string" ? spec : spec.address;
      const weight = typeof spec === "string" ? 1 : spec.weight ?? 1;
      const hostPort = parseHostPort(address);
      if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
        throw new RangeError(
          `Cannot set upstreams: weight of "${address}" must be an integer from 1 to ${MAX_WEIGHT}, received ${weight}`,
        );
      }
      return { address, weight, hostPort };
    });
    const seen = new Set<string>();
    for (const { address } of specs) {
      if (seen.has(address)) {
        throw new TypeError(`Cannot set upstreams: duplicate address "${address}"`);
      }
      seen.add(address);
    }

    const previous = this.#upstreams;
    const wasConfigured = new Set(previous);
    for (const entry of previous) entry.removed = true;
    const next: Entry[] = [];
    let added = 0;
    for (const { address, weight, hostPort } of specs) {
      let entry = this.#entries.get(address);
      if (entry === undefined) {
        entry = {
          address,
          hostPort,
          weight,
          healthy: this.#initiallyHealthy,
          ejected: false,
          removed: false,
          leases: 0,
        };
        this.#entries.set(address, entry);
        added++;
      } else {
        if (!wasConfigured.has(entry)) added++; // a draining one is back
        entry.removed = false;
        entry.weight = weight;
      }
      next.push(entry);
    }
    let removed = 0;
    for (const entry of previous) {
      if (!entry.removed) continue;
      removed++;
      if (entry.leases === 0) this.#entries.delete(entry.address);
    }
    this.#upstreams = next;
    if (this.#cursor >= next.length) this.#cursor = 0;
    this.#refresh();
    if (added > 0 || removed > 0) {
      logger.debug("Upstreams changed: {added} added, {removed} removed, {total} configured", {
        added,
        removed,
        total: next.length,
      });
    }
  }

  /**
   * Marks an upstream healthy or unhealthy. Unknown addresses are ignored.
   *
   * @param address The upstream, `host:port` as configured.
   * @param healthy The new state.
   * @returns Whether the address is known to the pool (configured or draining).
   */
  setHealthy(address: string, healthy: boolean): boolean {
    const entry = this.#entries.get(address);
    if (entry === undefined) return false;
    if (entry.healthy !== healthy) {
      entry.healthy = healthy;
      logger.debug("Upstream {address} is now {state}", {
        address,
        state: healthy ? "healthy" : "unhealthy",
      });
      this.#refresh();
    }
    return true;
  }

  /**
   * Marks an upstream ejected by outlier detection, or back in rotation. An ejected
   * upstream is picked only in panic mode. Unknown addresses are ignored.
   *
   * @example Panic mode
   * ```ts
   * import { LeastConnPool } from "./least_conn_pool.ts";
   * import assert from "node:assert/strict";
   *
   * const pool = new LeastConnPool(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
   * pool.setEjected("10.0.0.1:80", true);
   * assert.equal(pool.panic, false); // 2 of 3 available: not below 50%
   * pool.setEjected("10.0.0.2:80", true);
   * assert.equal(pool.panic, true); // 1 of 3: every healthy upstream is picked again
   * const picks = new Set<string>();
   * for (let i = 0; i < 3; i++) picks.add(pool.acquire().address);
   * assert.equal(picks.size, 3);
   * ```
   *
   * @param address The upstream, `host:port` as configured.
   * @param ejected Whether it is ejected.
   * @returns Whether the address is known to the pool (configured or draining).
   */
  setEjected(address: string, ejected: boolean): boolean {
    const entry = this.#entries.get(address);
    if (entry === undefined) return false;
    if (entry.ejected !== ejected) {
      entry.ejected = ejected;
      this.#refresh();
    }
    return true;
  }

  /**
   * Changes the panic threshold (a reload).
   *
   * @param percent From 0 to 100; see {@linkcode LeastConnPoolOptions.panicThreshold}.
   * @throws {RangeError} When it is not an integer from 0 to 100.
   */
  setPanicThreshold(percent: number): void {
    this.#panicThreshold = checkPanicThreshold(percent);
    this.#refresh();
  }

  /**
   * Whether the pool is in panic mode: too few upstreams are available, so ejected
   * ones are picked again (see {@linkcode LeastConnPool}).
   */
  get panic(): boolean {
    return this.#panic;
  }

  /**
   * Applies the `"change"` {@linkcode HealthChangeEvent}s and `"ejection"`
   * {@linkcode EjectionEvent}s that `source` dispatches (a health probe, an outlier
   * detector) until the returned handle is disposed.
   *
   * @example Usage
   * ```ts
   * import { LeastConnPool } from "./least_conn_pool.ts";
   * import { HealthChangeEvent } from "./health_event.ts";
   * import assert from "node:assert/strict";
   *
   * const pool = new LeastConnPool(["10.0.0.1:80"]);
   * const probe = new EventTarget();
   * {
   *   using _follow = pool.followHealth(probe);
   *   probe.dispatchEvent(
   *     new HealthChangeEvent({ address: "10.0.0.1:80", healthy: false, reason: "probe_timeout", at: 0 }),
   *   );
   *   assert.equal(pool.snapshot()[0]?.healthy, false);
   * }
   * ```
   *
   * @param source The event target to listen to.
   * @returns A handle whose disposal stops listening.
   */
  followHealth(source: EventTarget): Disposable {
    const listener = (event: Event): void => {
      if (event instanceof HealthChangeEvent) {
        this.setHealthy(event.change.address, event.change.healthy);
      } else if (event instanceof EjectionEvent) {
        this.setEjected(event.change.address, event.change.ejected);
      }
    };
    source.addEventListener("change", listener);
    source.addEventListener("ejection", listener);
    return {
      [Symbol.dispose]: () => {
        source.removeEventListener("change", listener);
        source.removeEventListener("ejection", listener);
      },
    };
  }

  /**
   * Reads the active connection count of an upstream from the counts store.
   *
   * @param address The upstream, `host:port` as configured.
   * @returns The count; 0 for an unknown address.
   */
  active(address: string): number {
    return this.#counts.get(address);
  }

  /**
   * Describes every upstream for metrics and status pages: the configured ones in
   * configuration order, then removed ones that still have live leases.
   *
   * @returns One fresh record per upstream.
   */
  snapshot(): UpstreamStatus[] {
    const status = (entry: Entry): UpstreamStatus => {
      const record: UpstreamStatus = {
        address: entry.address,
        weight: entry.weight,
        active: this.#counts.get(entry.address),
        healthy: entry.healthy,
        ejected: entry.ejected,
      };
      if (entry.removed) record.removed = true;
      return record;
    };
    const out = this.#upstreams.map(status);
    for (const entry of this.#entries.values()) if (entry.removed) out.push(status(entry));
    return out;
  }

  /**
   * One O(n) pass from the cursor over healthy upstreams (ejected ones too when
   * `ejected`); the first of the lowest `active / weight` wins.
   */
  #pick(exclude: ReadonlySet<Entry> | undefined, ejected: boolean): Entry | undefined {
    const list = this.#upstreams;
    const n = list.length;
    let best: Entry | undefined;
    let bestIndex = 0;
    let bestActive = 0;
    for (let k = 0, i = this.#cursor; k < n; k++, i = i + 1 === n ? 0 : i + 1) {
      const entry = list[i]!;
      if (!entry.healthy || (entry.ejected && !ejected)) continue;
      if (exclude !== undefined && exclude.has(entry)) continue;
      const active = this.#counts.get(entry.address);
      if (best === undefined || active * best.weight < bestActive * entry.weight) {
        best = entry;
        bestIndex = i;
        bestActive = active;
      }
    }
    if (best !== undefined) this.#cursor = bestIndex + 1 === n ? 0 : bestIndex + 1;
    return best;
  }

  #lease(entry: Entry): UpstreamLease {
    this.#counts.add(entry.address, 1);
    entry.leases++;
    return new PoolLease(entry, this.#onRelease);
  }

  #healthyCount(): number {
    let healthy = 0;
    for (const entry of this.#upstreams) {
      if (entry.healthy && (!entry.ejected || this.#panic)) healthy++;
    }
    return healthy;
  }

  /** Recomputes panic mode after a change of health, ejection, upstreams or threshold. */
  #refresh(): void {
    const total = this.#upstreams.length;
    let available = 0;
    let ejected = 0;
    for (const entry of this.#upstreams) {
      if (!entry.healthy) continue;
      if (entry.ejected) ejected++;
      else available++;
    }
    const panic = isPanic({ total, available, ejected }, this.#panicThreshold);
    if (panic === this.#panic) return;
    this.#panic = panic;
    const properties = { name: this.#name, available, total, threshold: this.#panicThreshold };
    if (panic) {
      logger.warn(
        "{name}: panic mode: {available} of {total} upstreams available, below {threshold}%; ejected upstreams are picked again",
        properties,
      );
    } else {
      logger.info(
        "{name}: panic mode over: {available} of {total} upstreams available",
        properties,
      );
    }
  }

  #noHealthy(): NoHealthyUpstreamError {
    return new NoHealthyUpstreamError(
      `No healthy upstream: 0 of ${this.#upstreams.length} upstreams are healthy`,
    );
  }
}

/**
 * The panic mode rule of {@linkcode LeastConnPool}, for code that mirrors a pool's
 * state (the primary thread of a `WorkerBalancer`): panic when fewer than
 * `threshold` percent of the upstreams are available, or none is, and at least one
 * ejected upstream is healthy (otherwise panic would change nothing).
 *
 * @example Usage
 * ```ts
 * import { isPanic } from "./least_conn_pool.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isPanic({ total: 4, available: 1, ejected: 2 }, 50), true);
 * assert.equal(isPanic({ total: 4, available: 2, ejected: 2 }, 50), false);
 * assert.equal(isPanic({ total: 4, available: 1, ejected: 0 }, 50), false);
 * ```
 *
 * @param counts The configured upstreams, those available (healthy and not ejected)
 *   and those ejected but healthy.
 * @param threshold The panic threshold, in percent.
 * @returns Whether ejected upstreams are picked again.
 */
export function isPanic(
  counts: { total: number; available: number; ejected: number },
  threshold: number,
): boolean {
  const { total, available, ejected } = counts;
  return ejected > 0 && (available === 0 || available * 100 < threshold * total);
}

function checkPanicThreshold(percent: number): number {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new RangeError(
      `Cannot set the panic threshold: it must be an integer from 0 to 100, received ${percent}`,
    );
  }
  return percent;
}
