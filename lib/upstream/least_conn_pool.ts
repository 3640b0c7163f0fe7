/**
 * Least-connections selection of upstreams, with weights, health, passive
 * ejection and panic mode, run-time reconfiguration, `Disposable` leases and a
 * dial loop that fails over.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type HostPort, parseHostPort } from "../core/address.ts";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import type { Dialer } from "./dial.ts";
import { EjectionEvent, HealthChangeEvent } from "./health_event.ts";

const logger = getLogger(["mtlb", "pool"]);

/** The largest accepted upstream weight; keeps `active * weight` an exact integer. */
const MAX_WEIGHT = 1_000_000;
/** Default share of available upstreams, in percent, below which a pool panics. */
const DEFAULT_PANIC_THRESHOLD = 50;

/**
 * Where active connection counts live, keyed by upstream address.
 *
 * The pool calls {@linkcode UpstreamCounts.add} with `+1` when it hands out a lease and
 * with `-1` exactly once when that lease ends, and reads {@linkcode UpstreamCounts.get}
 * for every upstream it considers on a pick. Both are synchronous and on the hot path.
 * The default is {@linkcode MemoryUpstreamCounts}; a store shared between workers
 * (`SharedArrayBuffer` and `Atomics`) or an eventually consistent remote tally can
 * implement the same two methods, so that several pools balance on the same counts.
 */
export interface UpstreamCounts {
  /**
   * Changes the count of `address` by `delta`.
   *
   * @param address The upstream, `host:port` as configured.
   * @param delta `+1` when a connection starts, `-1` when it ends.
   * @returns The new count.
   */
  add(address: string, delta: number): number;
  /**
   * Reads the count of `address`.
   *
   * @param address The upstream, `host:port` as configured.
   * @returns The active connections; 0 for an address never counted.
   */
  get(address: string): number;
}

/**
 * Active connection counts in a `Map` of this process: the default
 * {@linkcode UpstreamCounts}. Entries that reach zero are dropped, so addresses
 * removed by a reload leave nothing behind.
 *
 * @example Usage
 * ```ts
 * import { MemoryUpstreamCounts } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const counts = new MemoryUpstreamCounts();
 * assert.equal(counts.add("10.0.0.1:6379", 1), 1);
 * assert.equal(counts.get("10.0.0.1:6379"), 1);
 * assert.equal(counts.add("10.0.0.1:6379", -1), 0);
 * assert.throws(() => counts.add("10.0.0.1:6379", -1), RangeError);
 * ```
 */
export class MemoryUpstreamCounts implements UpstreamCounts {
  #counts = new Map<string, number>();

  /**
   * Changes the count of `address` by `delta`.
   *
   * @param address The upstream.
   * @param delta A whole number.
   * @returns The new count.
   * @throws {RangeError} When `delta` is not an integer or the count would go below zero
   * (a release without a matching acquire).
   */
  add(address: string, delta: number): number {
    const next = (this.#counts.get(address) ?? 0) + delta;
    if (!Number.isSafeInteger(delta) || next < 0) {
      throw new RangeError(
        `Cannot change connection count of "${address}" by ${delta}: the count would be ${next}`,
      );
    }
    if (next === 0) this.#counts.delete(address);
    else this.#counts.set(address, next);
    return next;
  }

  /**
   * Reads the count of `address`.
   *
   * @param address The upstream.
   * @returns The count, 0 when unknown.
   */
  get(address: string): number {
    return this.#counts.get(address) ?? 0;
  }
}

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

/**
 * One connection's hold on an upstream: counted from the moment it is handed out
 * until it is disposed. Disposing (or {@linkcode UpstreamLease.release}) releases the
 * count exactly once; later calls do nothing.
 */
export interface UpstreamLease extends Disposable {
  /** The upstream, `host:port` as configured. */
  readonly address: string;
  /** The upstream's parsed address, ready for a {@linkcode Dialer}. */
  readonly hostPort: HostPort;
  /** The upstream's current weight. */
  readonly weight: number;
  /** Whether the lease has been released. */
  readonly released: boolean;
  /** Releases the count; does nothing when already released. */
  release(): void;
}

/** Why a dial counted as failed: refused, timed out, or any other error. */
export type DialFailureReason = "dial_refused" | "dial_timeout" | "dial_error";

/** One failed dial made by {@linkcode LeastConnPool.connect}. */
export interface DialFailure {
  /** The upstream dialled. */
  address: string;
  /** How the dial failed. */
  reason: DialFailureReason;
  /** The dialer's error, or the timeout's `TimeoutError`. */
  error: unknown;
}

/**
 * Options of {@linkcode LeastConnPool.connect}.
 *
 * @typeParam S The socket type the dialer produces.
 */
export interface UpstreamConnectOptions<S> {
  /** Opens the connection; it must reject (and close what it opened) when its signal aborts. */
  dial: Dialer<S>;
  /** Connect timeout of each attempt, in milliseconds (positive). */
  timeout: number;
  /**
   * The most dials to make. Each retry goes to an upstream this call has not tried
   * yet: an available one if any is left, else an ejected one whose health checks
   * pass (as a redispatch would); only when every healthy upstream has been tried
   * are tried ones dialled again.
   *
   * @default {the number of healthy upstreams when the call starts (at least 1)}
   */
  attempts?: number;
  /** Aborts the whole call; its reason is rethrown. */
  signal?: AbortSignal;
  /**
   * Called for each failed dial: a passive health signal. A refused or failed dial is
   * reported with its count already released; a dial past its connect timeout is
   * reported then (`dial_timeout`), while it keeps racing the next attempt. Errors it
   * throws are logged and otherwise ignored.
   */
  onDialFailure?: (address: string, reason: DialFailureReason, error: unknown) => void;
  /**
   * Closes a socket that connected after another attempt won (or after the call
   * failed), which nobody will use.
   *
   * @default {calls the socket's `destroy()`, if it has one}
   */
  close?: (socket: S) => void;
}

/**
 * A connected upstream socket and the lease that counts it; dispose the lease when
 * the socket closes.
 *
 * @typeParam S The socket type.
 */
export interface UpstreamConnection<S> {
  /** The connected socket, now owned by the caller. */
  socket: S;
  /** The count held for the connection. */
  lease: UpstreamLease;
  /** The dials that failed before this one connected, in order: the retries made. */
  failures: readonly DialFailure[];
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

/**
 * Thrown when a pick finds no healthy upstream: the pool fails closed rather than
 * send a connection to an upstream known to be down.
 *
 * @example Usage
 * ```ts
 * import { LeastConnPool, NoHealthyUpstreamError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const pool = new LeastConnPool(["10.0.0.1:6379"], { initiallyHealthy: false });
 * assert.throws(() => pool.acquire(), NoHealthyUpstreamError);
 * ```
 */
export class NoHealthyUpstreamError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was found.
   * @param options The `cause`, if any.
   */
  constructor(message = "No healthy upstream", options?: ErrorOptions) {
    super(message, options);
    this.name = "NoHealthyUpstreamError";
  }
}

/**
 * Thrown by {@linkcode LeastConnPool.connect} when every attempt failed. `attempts`
 * lists each failed dial in order; `cause` is the error that ended the loop (the last
 * dial's error, or a {@linkcode NoHealthyUpstreamError} when none was left to try).
 *
 * @example Usage
 * ```ts
 * import { UpstreamConnectError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const refused = new Error("connect ECONNREFUSED");
 * const error = new UpstreamConnectError(
 *   [{ address: "10.0.0.1:6379", reason: "dial_refused", error: refused }],
 *   { cause: refused },
 * );
 * assert.equal(error.attempts.length, 1);
 * assert.equal(error.cause, refused);
 * ```
 */
export class UpstreamConnectError extends Error {
  /** The failed dials, in order. */
  readonly attempts: readonly DialFailure[];

  /**
   * Creates the error.
   *
   * @param attempts The failed dials, in order.
   * @param options The `cause`.
   */
  constructor(attempts: readonly DialFailure[], options?: ErrorOptions) {
    super(
      `Cannot connect to an upstream: ${
        attempts.length === 0
          ? "no attempt was made"
          : attempts.map((a) => `${a.address} ${a.reason}`).join(", ")
      }`,
      options,
    );
    this.name = "UpstreamConnectError";
    this.attempts = attempts;
  }
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

class Lease implements UpstreamLease {
  #entry: Entry;
  #onRelease: (entry: Entry) => void;
  #released = false;

  constructor(entry: Entry, onRelease: (entry: Entry) => void) {
    this.#entry = entry;
    this.#onRelease = onRelease;
  }

  get address(): string {
    return this.#entry.address;
  }

  get hostPort(): HostPort {
    return this.#entry.hostPort;
  }

  get weight(): number {
    return this.#entry.weight;
  }

  get released(): boolean {
    return this.#released;
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#onRelease(this.#entry);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

function isRefused(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionRefused ||
    (typeof error === "object" && error !== null &&
      (error as { code?: unknown }).code === "ECONNREFUSED");
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
   * at most `attempts × timeout`. A socket that connects is returned with its lease,
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
    return await new DialRace<S>(options, attempts, {
      clock: this.#clock,
      pick: (tried) =>
        this.#pick(tried, this.#panic) ??
          (tried.size === 0
            ? undefined
            : this.#pick(tried, true) ?? this.#pick(undefined, this.#panic)),
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
    return new Lease(entry, this.#onRelease);
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

/** What a {@linkcode DialRace} needs from its pool. */
interface RacePool {
  clock: Clock;
  /** The next upstream to dial, not among `tried` if it can help it; none when nothing is healthy. */
  pick(tried: ReadonlySet<Entry>): Entry | undefined;
  lease(entry: Entry): UpstreamLease;
  noHealthy(): NoHealthyUpstreamError;
}

interface Attempt {
  readonly entry: Entry;
  readonly lease: UpstreamLease;
  readonly controller: AbortController;
  timer: TimerId | undefined;
  /** Its connect timeout passed (and was reported); it may still connect. */
  timedOut: boolean;
}

/**
 * One {@linkcode LeastConnPool.connect} call: dials in turn, and when a dial's connect
 * timeout passes, starts the next attempt without abandoning it (a SYN that a full
 * accept queue dropped is sent again by the kernel after 1 s, 3 s, ...), so the first
 * of them to connect wins. Every dial still pending when the last attempt's timeout
 * passes is aborted.
 */
class DialRace<S> {
  readonly done: Promise<UpstreamConnection<S>>;
  #resolve!: (connection: UpstreamConnection<S>) => void;
  #reject!: (error: unknown) => void;
  readonly #options: UpstreamConnectOptions<S>;
  readonly #attempts: number;
  readonly #pool: RacePool;
  readonly #failures: DialFailure[] = [];
  readonly #tried = new Set<Entry>();
  readonly #live = new Set<Attempt>();
  #started = 0;
  #settled = false;
  #cause: unknown;

  constructor(options: UpstreamConnectOptions<S>, attempts: number, pool: RacePool) {
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#options = options;
    this.#attempts = attempts;
    this.#pool = pool;
    options.signal?.addEventListener("abort", this.#onAbort, { once: true });
    this.#next();
  }

  /**
   * Starts the next attempt; with none left, ends the call when nothing is pending, or
   * aborts what is pending once all of it is past its own timeout.
   */
  #next(): void {
    if (this.#settled) return;
    if (this.#started < this.#attempts) {
      const entry = this.#pool.pick(this.#tried);
      if (entry !== undefined) return this.#start(entry);
      this.#cause = this.#pool.noHealthy();
      if (this.#started === 0) return this.#fail(this.#cause);
      this.#started = this.#attempts; // nothing left to try: wait for the pending ones
    }
    if (this.#live.size === 0) {
      return this.#fail(new UpstreamConnectError(this.#failures, { cause: this.#cause }));
    }
    for (const live of this.#live) if (!live.timedOut) return;
    const error = new DOMException(
      `Upstream connect timed out after ${this.#options.timeout}ms`,
      "TimeoutError",
    );
    for (const live of this.#live) live.controller.abort(error);
  }

  #start(entry: Entry): void {
    this.#started++;
    this.#tried.add(entry);
    const attempt: Attempt = {
      entry,
      lease: this.#pool.lease(entry),
      controller: new AbortController(),
      timer: undefined,
      timedOut: false,
    };
    // Pending before the dial starts: a dialer may abort the caller's signal at once.
    this.#live.add(attempt);
    attempt.timer = this.#pool.clock.setTimeout(
      () => this.#onTimeout(attempt),
      this.#options.timeout,
    );
    let dial: Promise<S>;
    try {
      dial = Promise.resolve(this.#options.dial(entry.hostPort, attempt.controller.signal));
    } catch (error) {
      dial = Promise.reject(error);
    }
    dial.then(
      (socket) => this.#onConnected(attempt, socket),
      (error) => this.#onError(attempt, error),
    );
  }

  /** Reports the timeout and starts the next attempt; the late dial keeps racing it. */
  #onTimeout(attempt: Attempt): void {
    attempt.timer = undefined;
    if (this.#settled) return;
    attempt.timedOut = true;
    const error = new DOMException(
      `Upstream connect timed out after ${this.#options.timeout}ms`,
      "TimeoutError",
    );
    this.#record(attempt.entry, "dial_timeout", error);
    this.#cause = error;
    this.#next();
  }

  #onConnected(attempt: Attempt, socket: S): void {
    this.#end(attempt);
    if (this.#settled) {
      // Another attempt won, or the call failed: this one is not wanted.
      attempt.lease.release();
      closeSocket(socket, this.#options.close);
      return;
    }
    this.#settle();
    for (const live of this.#live) {
      live.controller.abort(new DOMException("Another upstream connected first", "AbortError"));
    }
    this.#resolve({ socket, lease: attempt.lease, failures: this.#failures });
  }

  #onError(attempt: Attempt, error: unknown): void {
    this.#end(attempt);
    attempt.lease.release();
    if (this.#settled) return;
    const signal = this.#options.signal;
    if (signal?.aborted) {
      if (this.#live.size === 0) this.#fail(signal.reason);
      return;
    }
    if (!attempt.timedOut) {
      this.#record(attempt.entry, isRefused(error) ? "dial_refused" : "dial_error", error);
      this.#cause = error;
      this.#next();
      return;
    }
    // A dial already reported as timed out failed for good; the attempt that took over
    // from it, if any, goes on.
    if (this.#live.size === 0 || this.#started >= this.#attempts) this.#next();
  }

  /** The caller gave up: abort every pending dial; a socket that connects anyway is returned. */
  #onAbort = (): void => {
    for (const live of this.#live) live.controller.abort(this.#options.signal!.reason);
    if (this.#live.size === 0 && !this.#settled) this.#fail(this.#options.signal!.reason);
  };

  #record(entry: Entry, reason: DialFailureReason, error: unknown): void {
    const address = entry.address;
    this.#failures.push({ address, reason, error });
    logger.debug("Dial to {address} failed: {reason}", { address, reason, error });
    const hook = this.#options.onDialFailure;
    if (hook === undefined) return;
    try {
      hook(address, reason, error);
    } catch (hookError) {
      logger.error("onDialFailure threw for {address}: {error}", { address, error: hookError });
    }
  }

  #end(attempt: Attempt): void {
    this.#live.delete(attempt);
    if (attempt.timer !== undefined) this.#pool.clock.clearTimeout(attempt.timer);
    attempt.timer = undefined;
  }

  #settle(): void {
    this.#settled = true;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
  }

  #fail(error: unknown): void {
    this.#settle();
    this.#reject(error);
  }
}

/** Closes a socket nobody wants: with `close`, else its `destroy()` if it has one. */
function closeSocket<S>(socket: S, close: ((socket: S) => void) | undefined): void {
  try {
    if (close !== undefined) close(socket);
    else (socket as { destroy?: () => void } | null)?.destroy?.();
  } catch (error) {
    logger.error("Closing an unwanted upstream socket failed: {error}", { error });
  }
}

function checkPanicThreshold(percent: number): number {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new RangeError(
      `Cannot set the panic threshold: it must be an integer from 0 to 100, received ${percent}`,
    );
  }
  return percent;
}
