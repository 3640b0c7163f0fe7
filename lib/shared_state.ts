/**
 * Least-connection counts and per-client limits shared exactly between Workers
 * through one `SharedArrayBuffer` and `Atomics`, so several event loops can serve
 * the same listeners (`reusePort`) as one balancer: a client capped at 10 gets 10
 * across all workers, and every worker sees every connection of every upstream.
 *
 * Names (upstream addresses, client names) map to fixed slots. The thread that
 * creates the state assigns the slots ({@linkcode SharedState.assign}) and hands
 * {@linkcode SharedState.init} to each worker, which calls
 * {@linkcode SharedState.attach}. Slots are never reused, so a reload only appends.
 *
 * @module
 */
import type { Admission, ClientLimits, LimiterStore } from "./limiter/store.ts";
import type { UpstreamCounts } from "./least_conn_pool.ts";

/** What a worker needs to attach to a {@linkcode SharedState}: structured-cloneable. */
export interface SharedStateInit {
  /** The shared memory. */
  buffer: SharedArrayBuffer;
  /** Upstream address to slot. */
  upstreams: Record<string, number>;
  /** Client name to slot. */
  clients: Record<string, number>;
}

/** Capacity of a {@linkcode SharedState}. */
export interface SharedStateOptions {
  /**
   * Upstream slots (every address ever configured, reloads included).
   *
   * @default {1024}
   */
  upstreams?: number;
  /**
   * Client slots (every client name ever configured, reloads included).
   *
   * @default {16384}
   */
  clients?: number;
}

/** Thrown when a name has no slot, or the state has no room for another name. */
export class SharedStateError extends Error {
  /**
   * Creates the error.
   *
   * @param message What went wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "SharedStateError";
  }
}

// Layout, in 32-bit words: [header: upstream capacity, client capacity]
// [upstream counts] [client locks] [client active] then, 8-byte aligned,
// [client fullAt in microseconds as BigInt64].
const HEADER = 2;
const EPSILON_US = 1n;
const ADMITTED: Admission = Object.freeze({ admitted: true });

/**
 * Counts and limits in shared memory. Create it once, assign names, share
 * {@linkcode SharedState.init} with workers; each side builds its pool counts with
 * {@linkcode SharedState.upstreamCounts} and its limiter store with
 * {@linkcode SharedState.limiterStore}.
 *
 * @example Two views of one state
 * ```ts
 * import { SharedState } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const main = new SharedState();
 * main.assign(["127.0.0.1:7001"], ["alice"]);
 * const worker = SharedState.attach(main.init); // in a Worker, from a message
 * worker.upstreamCounts().add("127.0.0.1:7001", 1);
 * assert.equal(main.upstreamCounts().get("127.0.0.1:7001"), 1);
 * ```
 */
export class SharedState {
  #buffer: SharedArrayBuffer;
  #words: Int32Array;
  #fullAt: BigInt64Array;
  #upstreamCapacity: number;
  #clientCapacity: number;
  #upstreams: Map<string, number>;
  #clients: Map<string, number>;
  static #attaching: SharedStateInit | undefined;

  /**
   * Allocates a new state.
   *
   * @param options Capacities.
   * @throws {RangeError} When a capacity is not a positive integer.
   */
  constructor(options: SharedStateOptions = {}) {
    const attaching = SharedState.#attaching;
    if (attaching !== undefined) {
      SharedState.#attaching = undefined;
      const [upstreams, clients] = new Int32Array(attaching.buffer, 0, HEADER) as unknown as [
        number,
        number,
      ];
      const words = HEADER + upstreams + 2 * clients;
      const wordBytes = Math.ceil((words * 4) / 8) * 8;
      this.#buffer = attaching.buffer;
      this.#words = new Int32Array(attaching.buffer, 0, words);
      this.#fullAt = new BigInt64Array(attaching.buffer, wordBytes, clients);
      this.#upstreamCapacity = upstreams;
      this.#clientCapacity = clients;
      this.#upstreams = new Map(Object.entries(attaching.upstreams));
      this.#clients = new Map(Object.entries(attaching.clients));
      return;
    }
    const upstreams = options.upstreams ?? 1024;
    const clients = options.clients ?? 16384;
    for (const [name, value] of [["upstreams", upstreams], ["clients", clients]] as const) {
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(`Cannot create shared state: "${name}" must be a positive integer`);
      }
    }
    const words = HEADER + upstreams + 2 * clients;
    const wordBytes = Math.ceil((words * 4) / 8) * 8;
    const buffer = new SharedArrayBuffer(wordBytes + clients * 8);
    new Int32Array(buffer, 0, HEADER).set([upstreams, clients]);
    this.#buffer = buffer;
    this.#words = new Int32Array(buffer, 0, words);
    this.#fullAt = new BigInt64Array(buffer, wordBytes, clients);
    this.#upstreamCapacity = upstreams;
    this.#clientCapacity = clients;
    this.#upstreams = new Map();
    this.#clients = new Map();
  }

  /**
   * Attaches to a state created elsewhere (typically in a Worker).
   *
   * @param init {@linkcode SharedState.init} of the creating side.
   * @returns A view of the same memory with the same slots.
   */
  static attach(init: SharedStateInit): SharedState {
    SharedState.#attaching = init;
    return new SharedState();
  }

  /**
   * Gives slots to names that have none (existing names keep theirs).
   *
   * @param upstreams Upstream addresses.
   * @param clients Client names.
   * @throws {SharedStateError} When there is no room left.
   */
  assign(upstreams: Iterable<string>, clients: Iterable<string>): void {
    for (const address of upstreams) {
      if (this.#upstreams.has(address)) continue;
      if (this.#upstreams.size >= this.#upstreamCapacity) {
        throw new SharedStateError(
          `Cannot assign upstream ${address}: all ${this.#upstreamCapacity} shared slots are used`,
        );
      }
      this.#upstreams.set(address, this.#upstreams.size);
    }
    for (const client of clients) {
      if (this.#clients.has(client)) continue;
      if (this.#clients.size >= this.#clientCapacity) {
        throw new SharedStateError(
          `Cannot assign client ${client}: all ${this.#clientCapacity} shared slots are used`,
        );
      }
      this.#clients.set(client, this.#clients.size);
    }
  }

  /**
   * Updates the slot maps from the creating side after it assigned more names.
   *
   * @param init The creator's current {@linkcode SharedState.init}.
   */
  update(init: SharedStateInit): void {
    this.#upstreams = new Map(Object.entries(init.upstreams));
    this.#clients = new Map(Object.entries(init.clients));
  }

  /** What a worker needs to attach; post it to the worker. */
  get init(): SharedStateInit {
    return {
      buffer: this.#buffer,
      upstreams: Object.fromEntries(this.#upstreams),
      clients: Object.fromEntries(this.#clients),
    };
  }

  /**
   * Pool counts backed by this state, for `LeastConnPool`'s `counts` option.
   *
   * @returns The counts.
   */
  upstreamCounts(): UpstreamCounts {
    const words = this.#words;
    const slot = (address: string): number => {
      const index = this.#upstreams.get(address);
      if (index === undefined) {
        throw new SharedStateError(`Cannot count upstream ${address}: it has no shared slot`);
      }
      return HEADER + index;
    };
    return {
      add(address: string, delta: number): number {
        if (!Number.isInteger(delta)) {
          throw new RangeError(
            `Cannot add to a count: delta must be an integer, received ${delta}`,
          );
        }
        const at = slot(address);
        const next = Atomics.add(words, at, delta) + delta;
        if (next < 0) {
          Atomics.sub(words, at, delta);
          throw new RangeError(`Cannot release upstream ${address}: its count would go below zero`);
        }
        return next;
      },
      get(address: string): number {
        return Atomics.load(words, slot(address));
      },
    };
  }

  /**
   * A limiter store backed by this state. Its `now` must be on one time base in
   * every worker: give the `ClientLimiter`s a clock such as
   * `{ now: () => performance.timeOrigin + performance.now(), ... }`.
   *
   * @returns The store; same semantics as `MemoryLimiterStore` (token bucket).
   */
  limiterStore(): LimiterStore {
    return new SharedLimiterStore(this.#words, this.#fullAt, this.#upstreamCapacity, (client) => {
      const index = this.#clients.get(client);
      if (index === undefined) {
        throw new SharedStateError(`Cannot limit client ${client}: it has no shared slot`);
      }
      return index;
    });
  }
}

class SharedLimiterStore implements LimiterStore {
  #words: Int32Array;
  #fullAt: BigInt64Array;
  #locks: number;
  #active: number;
  #slot: (client: string) => number;

  constructor(
    words: Int32Array,
    fullAt: BigInt64Array,
    upstreams: number,
    slot: (client: string) => number,
  ) {
    this.#words = words;
    this.#fullAt = fullAt;
    const clients = fullAt.length;
    this.#locks = HEADER + upstreams;
    this.#active = this.#locks + clients;
    this.#slot = slot;
  }

  tryAcquire(client: string, limits: ClientLimits, now: number): Admission {
    const index = this.#slot(client);
    const lock = this.#locks + index;
    // The critical section is a few loads and stores: spin, never wait.
    while (Atomics.compareExchange(this.#words, lock, 0, 1) !== 0) {
      // spin
    }
    try {
      const active = Atomics.load(this.#words, this.#active + index);
      if (active >= limits.concurrent) {
        return { admitted: false, kind: "concurrency", limit: limits.concurrent };
      }
      const rate = limits.rate;
      if (rate !== undefined) {
        const nowUs = BigInt(Math.round(now * 1000));
        const perUs = BigInt(Math.round(rate.per * 1000));
        const stepUs = BigInt(Math.round((rate.per * 1000) / rate.count));
        let from = Atomics.load(this.#fullAt, index);
        if (from < nowUs) from = nowUs;
        if (from > nowUs + perUs) from = nowUs + perUs;
        const fullAt = from + stepUs;
        const waitUs = fullAt - perUs - nowUs;
        if (waitUs > EPSILON_US) {
          return {
            admitted: false,
            kind: "rate",
            limit: rate.count,
            retryAfterMs: Math.ceil(Number(waitUs) / 1000),
          };
        }
        Atomics.store(this.#fullAt, index, fullAt);
      }
      Atomics.add(this.#words, this.#active + index, 1);
      return ADMITTED;
    } finally {
      Atomics.store(this.#words, lock, 0);
    }
  }

  release(client: string): void {
    const at = this.#active + this.#slot(client);
    // Never below zero, even on a double release by a buggy caller.
    let current = Atomics.load(this.#words, at);
    while (current > 0) {
      const seen = Atomics.compareExchange(this.#words, at, current, current - 1);
      if (seen === current) return;
      current = seen;
    }
  }
}
