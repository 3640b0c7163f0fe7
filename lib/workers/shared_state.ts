/**
 * Least-connection counts and per-client limits shared exactly between Workers
 * through one `SharedArrayBuffer` and `Atomics`, so several event loops can serve
 * the same listeners (`reusePort`) as one balancer: a client capped at 10 gets 10
 * across all workers, and every worker sees every connection of every upstream.
 *
 * Names (upstream addresses, client names) map to fixed slots. The thread that
 * creates the state assigns the slots ({@linkcode SharedState.assign}) and hands
 * {@linkcode SharedState.init} to each worker, which calls
 * {@linkcode SharedState.attach}. A name keeps its slot while it is used; the slot of
 * an upstream gone for good (its count back to zero, no worker able to pick it) is
 * given back with {@linkcode SharedState.release} and taken by the next new address,
 * so upstreams that come and go with DNS answers do not exhaust the table.
 *
 * @module
 */
import type { LimiterStore } from "../limiter/store.ts";
import type { BandwidthStore } from "../limiter/bandwidth_store.ts";
import { SharedMemoryBandwidthStore } from "../limiter/shared_memory_bandwidth_store.ts";
import {
  type SharedLimiterMemory,
  SharedMemoryLimiterStore,
} from "../limiter/shared_memory_store.ts";
import { SharedMemoryUpstreamCounts } from "../upstream/shared_memory_counts.ts";
import type { UpstreamCounts } from "../upstream/upstream_counts.ts";

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
   * Upstream slots: every address in use at once (configured or answered by DNS),
   * and those a reload or DNS answer removed until their last connection ends.
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
// [client token buckets: fullAt in milliseconds as Float64] (see SharedLimiterMemory)
// [client byte buckets from client] [client byte buckets from upstream] (Float64, see
// SharedBandwidthMemory; they share the limiter's locks).
const HEADER = 2;

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
  #limiter: SharedLimiterMemory;
  #upstreamCapacity: number;
  #clientCapacity: number;
  #upstreams: Map<string, number>;
  #clients: Map<string, number>;
  /** Upstream slots given back, lowest first, for the next new addresses. */
  #freeUpstreams: number[] = [];
  /** Upstream slots ever used: the next slot when none was given back. */
  #usedUpstreams = 0;
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
      this.#buffer = attaching.buffer;
      this.#words = new Int32Array(attaching.buffer, 0, HEADER + upstreams + 2 * clients);
      this.#limiter = limiterMemory(this.#words, upstreams, clients);
      this.#upstreamCapacity = upstreams;
      this.#clientCapacity = clients;
      this.#upstreams = new Map(Object.entries(attaching.upstreams));
      this.#clients = new Map(Object.entries(attaching.clients));
      this.#usedUpstreams = this.#upstreams.size;
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
    const buffer = new SharedArrayBuffer(bucketsOffset(words) + 3 * clients * 8);
    new Int32Array(buffer, 0, HEADER).set([upstreams, clients]);
    this.#buffer = buffer;
    this.#words = new Int32Array(buffer, 0, words);
    this.#limiter = limiterMemory(this.#words, upstreams, clients);
    // No client has drawn on a bucket yet.
    new Float64Array(buffer, bucketsOffset(words), 3 * clients).fill(-Infinity);
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
      const free = this.#freeUpstreams.shift();
      if (free !== undefined) {
        this.#upstreams.set(address, free);
        continue;
      }
      if (this.#usedUpstreams >= this.#upstreamCapacity) {
        throw new SharedStateError(
          `Cannot assign upstream ${address}: all ${this.#upstreamCapacity} shared slots are used`,
        );
      }
      this.#upstreams.set(address, this.#usedUpstreams++);
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
   * Gives back the slot of an upstream gone for good, for the next new address.
   * Call it only once no thread can count on that address any more: every worker
   * has dropped it from its pools (it picks it no more) and its count is zero (no
   * lease of it is live); the workers then get the new {@linkcode SharedState.init}.
   *
   * @example Usage
   * ```ts
   * import { SharedState } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const state = new SharedState({ upstreams: 2, clients: 1 });
   * state.assign(["10.0.0.1:80", "10.0.0.2:80"], []);
   * assert.equal(state.release("10.0.0.1:80"), true);
   * state.assign(["10.0.0.3:80"], []); // takes the slot of 10.0.0.1:80
   * assert.deepEqual(Object.keys(state.init.upstreams).sort(), ["10.0.0.2:80", "10.0.0.3:80"]);
   * ```
   *
   * @param address The upstream.
   * @returns `false` when it has no slot, or its count is not zero (nothing changes then).
   */
  release(address: string): boolean {
    const index = this.#upstreams.get(address);
    if (index === undefined || Atomics.load(this.#words, HEADER + index) !== 0) return false;
    this.#upstreams.delete(address);
    this.#freeUpstreams.push(index);
    this.#freeUpstreams.sort((a, b) => a - b);
    return true;
  }

  /**
   * The upstream addresses that have a slot.
   *
   * @returns Them, in no order.
   */
  upstreamAddresses(): string[] {
    return [...this.#upstreams.keys()];
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
   * Pool counts backed by this state, for `LeastConnPool`'s `counts` option: a
   * `SharedMemoryUpstreamCounts` on its upstream slots.
   *
   * @returns The counts.
   */
  upstreamCounts(): UpstreamCounts {
    const counts = this.#words.subarray(HEADER, HEADER + this.#upstreamCapacity);
    return new SharedMemoryUpstreamCounts(counts, (address) => {
      const index = this.#upstreams.get(address);
      if (index === undefined) {
        throw new SharedStateError(`Cannot count upstream ${address}: it has no shared slot`);
      }
      return index;
    });
  }

  /**
   * A limiter store backed by this state: a `SharedMemoryLimiterStore` on its client
   * slots. Its `now` must be on one time base in every worker: give the
   * `ClientLimiter`s a clock such as
   * `{ now: () => performance.timeOrigin + performance.now(), ... }`.
   *
   * @returns The store; same semantics as `MemoryLimiterStore` (token bucket).
   */
  limiterStore(): LimiterStore {
    return new SharedMemoryLimiterStore(this.#limiter, this.#clientSlot);
  }

  /**
   * A bandwidth store backed by this state: a `SharedMemoryBandwidthStore` on its
   * client slots, with the same time base requirement as
   * {@linkcode SharedState.limiterStore}.
   *
   * @returns The store.
   */
  bandwidthStore(): BandwidthStore {
    const buckets = bucketsOffset(this.#words.length) + this.#clientCapacity * 8;
    return new SharedMemoryBandwidthStore({
      locks: this.#limiter.locks,
      fromClient: new Float64Array(this.#buffer, buckets, this.#clientCapacity),
      fromUpstream: new Float64Array(
        this.#buffer,
        buckets + this.#clientCapacity * 8,
        this.#clientCapacity,
      ),
    }, this.#clientSlot);
  }

  #clientSlot = (client: string): number => {
    const index = this.#clients.get(client);
    if (index === undefined) {
      throw new SharedStateError(`Cannot limit client ${client}: it has no shared slot`);
    }
    return index;
  };
}

/** The byte offset of the token buckets: after the 32-bit words, 8-byte aligned. */
function bucketsOffset(words: number): number {
  return Math.ceil((words * 4) / 8) * 8;
}

/** The limiter's views of a state's memory, given its 32-bit words and capacities. */
function limiterMemory(words: Int32Array, upstreams: number, clients: number): SharedLimiterMemory {
  const locks = HEADER + upstreams;
  return {
    locks: words.subarray(locks, locks + clients),
    active: words.subarray(locks + clients, locks + 2 * clients),
    fullAt: new Float64Array(words.buffer, bucketsOffset(words.length), clients),
  };
}
