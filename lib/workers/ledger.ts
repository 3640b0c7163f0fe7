/**
 * What each worker holds of the state its siblings share (upstream leases, client
 * slots, open connections), recorded in shared memory beside it, so that the primary
 * can give it all back when the worker dies.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { AcquireRequest, Admission, LimiterStore } from "../limiter/store.ts";
import type { UpstreamCounts } from "../upstream/upstream_counts.ts";
import type { SharedStateInit, SharedStateOptions } from "./shared_state.ts";

const log = getLogger(["mtlb", "workers"]);

/** A count shared by threads, such as the open connections `max_connections` caps. */
export interface SharedCount {
  /**
   * Changes the count.
   *
   * @param delta The change.
   * @returns The new count.
   */
  add(delta: number): number;
}

/** The shared state a {@linkcode WorkerLedger} gives back to. */
export interface LedgerTargets {
  /** The shared upstream counts. */
  counts: UpstreamCounts;
  /** The shared limiter store. */
  store: LimiterStore;
  /** The shared count of open client connections. */
  connections: SharedCount;
  /** The time for the store, on the workers' time base. */
  now: number;
}

/** What {@linkcode WorkerLedger.reclaim} gave back. */
export interface ReleasedSlots {
  /** Upstream leases. */
  upstreams: number;
  /** Client slots. */
  clients: number;
  /** Open client connections. */
  connections: number;
}

// Ledger layout, in 32-bit words: [upstream capacity, client capacity, open
// connections] [one word per upstream slot] [one word per client slot].
const LEDGER_HEADER = 3;

/**
 * The connection slots one worker holds in the shared state, kept in shared memory
 * of its own so that the primary can give them back when the worker dies: every
 * change the worker makes to the upstream counts, the client slots and the open
 * connection count is mirrored here in the same synchronous call, so a worker that
 * dies between two tasks leaves an exact ledger.
 *
 * @example Give back what a worker held
 * ```ts
 *
 * import { SharedState } from "./shared_state.ts";
 * import assert from "node:assert/strict";
 *
 * const state = new SharedState({ upstreams: 4, clients: 4 });
 * state.assign(["10.0.0.1:80"], ["alice"]);
 * let open = 0;
 * const connections = { add: (delta: number) => open += delta };
 * const memory = WorkerLedger.allocate({ upstreams: 4, clients: 4 });
 * // In the worker:
 * const ledger = new WorkerLedger(memory, state.init);
 * ledger.counts(state.upstreamCounts()).add("10.0.0.1:80", 1);
 * ledger.store(state.limiterStore()).tryAcquire({
 *   scopes: [{ key: "alice", limits: { concurrent: 1 } }],
 * }, 0);
 * ledger.connections(connections).add(1);
 * // In the primary, once the worker is gone:
 * const released = new WorkerLedger(memory, state.init).reclaim({
 *   counts: state.upstreamCounts(),
 *   store: state.limiterStore(),
 *   connections,
 *   now: 0,
 * });
 * assert.deepEqual(released, { upstreams: 1, clients: 1, connections: 1 });
 * assert.equal(state.upstreamCounts().get("10.0.0.1:80"), 0);
 * assert.equal(open, 0);
 * ```
 */
export class WorkerLedger {
  #words: Int32Array;
  #clientBase: number;
  #upstreams: Map<string, number>;
  #clients: Map<string, number>;

  /**
   * Allocates the memory of one ledger.
   *
   * @param options The capacities of the `SharedState` it mirrors.
   * @returns The memory, to post to the worker.
   */
  static allocate(options: SharedStateOptions = {}): SharedArrayBuffer {
    const upstreams = options.upstreams ?? 1024;
    const clients = options.clients ?? 16384;
    const buffer = new SharedArrayBuffer((LEDGER_HEADER + upstreams + clients) * 4);
    new Int32Array(buffer, 0, 2).set([upstreams, clients]);
    return buffer;
  }

  /**
   * A view of a ledger.
   *
   * @param buffer Memory from {@linkcode WorkerLedger.allocate}.
   * @param init The slots of the `SharedState` (its `init`).
   */
  constructor(buffer: SharedArrayBuffer, init: Pick<SharedStateInit, "upstreams" | "clients">) {
    this.#words = new Int32Array(buffer);
    this.#clientBase = LEDGER_HEADER + this.#words[0]!;
    this.#upstreams = new Map(Object.entries(init.upstreams));
    this.#clients = new Map(Object.entries(init.clients));
  }

  /**
   * Takes the slots assigned since (after a reload).
   *
   * @param init The `SharedState`'s current `init`.
   */
  update(init: Pick<SharedStateInit, "upstreams" | "clients">): void {
    this.#upstreams = new Map(Object.entries(init.upstreams));
    this.#clients = new Map(Object.entries(init.clients));
  }

  /**
   * Upstream counts that record this worker's share.
   *
   * @param inner The shared counts.
   * @returns Counts to give the worker's balancer.
   */
  counts(inner: UpstreamCounts): UpstreamCounts {
    const words = this.#words;
    const slots = (): Map<string, number> => this.#upstreams;
    return {
      add(address: string, delta: number): number {
        const next = inner.add(address, delta);
        const slot = slots().get(address);
        if (slot !== undefined) Atomics.add(words, LEDGER_HEADER + slot, delta);
        return next;
      },
      get: (address: string): number => inner.get(address),
    };
  }

  /**
   * A limiter store that records this worker's client slots.
   *
   * @param inner The shared store.
   * @returns A store to give the worker's balancer.
   */
  store(inner: LimiterStore): LimiterStore {
    const take = (request: AcquireRequest, admission: Admission): Admission => {
      if (admission.admitted) { for (const scope of request.scopes) this.#add(scope.key, 1); }
      return admission;
    };
    return {
      tryAcquire: (request, now) => {
        const admission = inner.tryAcquire(request, now);
        return admission instanceof Promise
          ? admission.then((a) => take(request, a))
          : take(request, admission);
      },
      release: (keys, now) => {
        for (const key of keys) this.#add(key, -1);
        return inner.release(keys, now);
      },
    };
  }

  /**
   * An open connection count that records this worker's share.
   *
   * @param inner The shared count.
   * @returns A count to give the worker's balancer.
   */
  connections(inner: SharedCount): SharedCount {
    const words = this.#words;
    return {
      add(delta: number): number {
        const total = inner.add(delta);
        Atomics.add(words, 2, delta);
        return total;
      },
    };
  }

  /**
   * Gives back everything the ledger holds and empties it. Call it only once the
   * worker is gone.
   *
   * @param targets The shared state to give back to.
   * @returns How many upstream leases, client slots and connections were given back.
   */
  reclaim(targets: LedgerTargets): ReleasedSlots {
    const words = this.#words;
    let upstreams = 0;
    let clients = 0;
    for (const [address, slot] of this.#upstreams) {
      const held = Atomics.exchange(words, LEDGER_HEADER + slot, 0);
      if (held === 0) continue;
      try {
        targets.counts.add(address, -held);
        upstreams += held;
      } catch (error) {
        log.error("Cannot give back {held} leases of upstream {address}: {error}", {
          held,
          address,
          error,
        });
      }
    }
    for (const [client, slot] of this.#clients) {
      const held = Atomics.exchange(words, this.#clientBase + slot, 0);
      for (let i = 0; i < held; i++) void targets.store.release([client], targets.now);
      if (held > 0) clients += held;
    }
    const connections = Atomics.exchange(words, 2, 0);
    if (connections !== 0) targets.connections.add(-connections);
    return { upstreams, clients, connections };
  }

  #add(client: string, delta: number): void {
    const slot = this.#clients.get(client);
    if (slot !== undefined) Atomics.add(this.#words, this.#clientBase + slot, delta);
  }
}
