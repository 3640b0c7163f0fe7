/**
 * The cases every {@linkcode UpstreamCounts} store must pass, registered for one store
 * by {@linkcode countsCases} from that store's test file, so every store is held to
 * the same behaviour: what `UpstreamCounts` promises, and what `LeastConnPool` needs
 * of it.
 *
 * A store shared exactly between threads also names a Worker module that serves
 * {@linkcode countingWorker}, and the cases count from several views and Workers at
 * once.
 *
 * @module
 */
import assert from "node:assert/strict";
import { LeastConnPool } from "../../lib/upstream/least_conn_pool.ts";
import type { UpstreamCounts } from "../../lib/upstream/upstream_counts.ts";
import type { UpstreamLease } from "../../lib/upstream/upstream_lease.ts";

/** Every address the cases count: a store with fixed slots assigns these up front. */
export const CASE_ADDRESSES: readonly string[] = [
  "10.0.0.1:80",
  "10.0.0.2:80",
  "10.0.0.3:80",
  "[::1]:6379",
];
const [A, B, C, D] = CASE_ADDRESSES as [string, string, string, string];

/** One store under test, fresh for one case. */
export interface CountsFixture extends AsyncDisposable {
  /** The store: nothing counted yet. */
  readonly counts: UpstreamCounts;
  /**
   * For a store shared between threads: another view of the same counts (another
   * Worker's, say), which sees every change at once.
   */
  peer?(): UpstreamCounts;
  /**
   * For a store shared between threads: what a Worker builds its own view from (see
   * {@linkcode countingWorker}); structured-cloneable.
   */
  init?: unknown;
}

/** A store implementation, as the shared cases see it. */
export interface CountsUnderTest {
  /** The store's name, which starts every test name. */
  name: string;
  /** Creates a fresh store that can count every address of {@linkcode CASE_ADDRESSES}. */
  create(): Promise<CountsFixture>;
  /**
   * A store shared exactly between threads (every view sees every add at once, and no
   * add is lost when threads count at once): the Worker module that serves
   * {@linkcode countingWorker} for it. Its fixtures then have `peer` and `init`.
   *
   * @default {undefined} the store makes no such claim
   */
  threads?: URL;
  /**
   * Ignores every case (the store needs a program that is not installed).
   *
   * @default {false}
   */
  ignore?: boolean;
}

/** A deterministic PRNG (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Reads every case address. */
function read(counts: UpstreamCounts): number[] {
  return CASE_ADDRESSES.map((address) => counts.get(address));
}

/**
 * Registers the shared cases for one store: one `Deno.test` per behaviour, each on a
 * fresh store.
 *
 * @param target The store implementation.
 */
export function countsCases(target: CountsUnderTest): void {
  const { name, threads } = target;
  const test = (title: string, fn: (fixture: CountsFixture) => Promise<void> | void): void => {
    Deno.test({
      name: `${name}${title}`,
      ignore: target.ignore ?? false,
      fn: async () => {
        await using fixture = await target.create();
        await fn(fixture);
      },
    });
  };

  test(".get() reads 0 for an address never counted", ({ counts }) => {
    assert.deepEqual(read(counts), [0, 0, 0, 0]);
  });

  test(".add() returns the new count, as get() then reads it", ({ counts }) => {
    assert.equal(counts.add(A, 1), 1);
    assert.equal(counts.get(A), 1);
    assert.equal(counts.add(A, 1), 2);
    assert.equal(counts.add(A, 3), 5);
    assert.equal(counts.add(A, 0), 5);
    assert.equal(counts.get(A), 5);
    assert.equal(counts.add(A, -4), 1);
    assert.equal(counts.add(A, -1), 0);
    assert.equal(counts.get(A), 0);
  });

  test(".add() counts each address apart", ({ counts }) => {
    counts.add(A, 1);
    counts.add(B, 2);
    counts.add(D, 3);
    assert.deepEqual(read(counts), [1, 2, 0, 3]);
    counts.add(B, -2);
    assert.deepEqual(read(counts), [1, 0, 0, 3]);
  });

  test(".add() never takes a count below zero, and a refused add changes nothing", ({ counts }) => {
    assert.throws(() => counts.add(A, -1), RangeError, "a release without an acquire");
    assert.equal(counts.get(A), 0);
    counts.add(B, 2);
    assert.throws(() => counts.add(B, -3), RangeError);
    assert.equal(counts.get(B), 2);
    assert.equal(counts.add(B, -2), 0);
    assert.throws(() => counts.add(B, -1), RangeError, "a second release of the same lease");
    assert.deepEqual(read(counts), [0, 0, 0, 0]);
  });

  test(".add() refuses a delta that is not an integer", ({ counts }) => {
    counts.add(C, 1);
    for (const delta of [0.5, -0.5, NaN, Infinity, -Infinity]) {
      assert.throws(() => counts.add(C, delta), RangeError, String(delta));
      assert.equal(counts.get(C), 1, `the count after a delta of ${delta}`);
    }
  });

  test(" keeps counts exact under random adds and releases", ({ counts }) => {
    const next = random(0x5eed);
    const model = new Map<string, number>();
    for (let step = 0; step < 2000; step++) {
      const address = CASE_ADDRESSES[Math.floor(next() * CASE_ADDRESSES.length)]!;
      const delta = [1, 1, 1, -1, -1, 2, -2, 0][Math.floor(next() * 8)]!;
      const expected = (model.get(address) ?? 0) + delta;
      if (expected < 0) {
        assert.throws(() => counts.add(address, delta), RangeError, `step ${step}`);
      } else {
        assert.equal(counts.add(address, delta), expected, `step ${step}`);
        model.set(address, expected);
      }
      assert.equal(counts.get(address), model.get(address) ?? 0, `step ${step}`);
    }
    assert.deepEqual(read(counts), CASE_ADDRESSES.map((address) => model.get(address) ?? 0));
  });

  test(" backs a LeastConnPool: picks spread and every release counts down to zero", ({ counts }) => {
    const pool = new LeastConnPool([A, B, C], { counts });
    const leases: UpstreamLease[] = [];
    for (let i = 0; i < 6; i++) leases.push(pool.acquire());
    assert.deepEqual(read(counts), [2, 2, 2, 0]);
    assert.deepEqual(pool.snapshot().map((s) => s.active), [2, 2, 2]);
    for (const lease of leases) {
      lease.release();
      lease.release(); // released once only
    }
    assert.deepEqual(read(counts), [0, 0, 0, 0]);
  });

  if (threads === undefined) return;

  test(" is one count seen from every view", (fixture) => {
    const { counts } = fixture;
    const peer = fixture.peer!();
    assert.equal(counts.add(A, 1), 1);
    assert.equal(peer.add(A, 1), 2);
    assert.equal(counts.get(A), 2);
    assert.throws(() => peer.add(B, -1), RangeError);
    assert.equal(counts.get(B), 0);
    const one = new LeastConnPool([A, B], { counts });
    const two = new LeastConnPool([A, B], { counts: peer });
    using first = one.acquire();
    using second = two.acquire();
    assert.deepEqual([first.address, second.address], [B, B], "both pools see A's 2");
    assert.deepEqual([one.active(B), two.active(B)], [2, 2]);
    counts.add(A, -1);
    peer.add(A, -1);
  });

  test(".add() loses no update when several threads count at once", async (fixture) => {
    const { counts, init } = fixture;
    const count = 3;
    const rounds = 1_000_000;
    const gate = new Int32Array(new SharedArrayBuffer(4));
    const workers = Array.from({ length: count }, () => new CountingThread(threads));
    try {
      await Promise.all(
        workers.map((w) => w.send({ init, address: A, rounds, gate: gate.buffer }, "ready")),
      );
      // Every thread waits at the gate: open it for all at once.
      const up = Promise.all(workers.map((w) => w.next("up")));
      Atomics.store(gate, 0, 1);
      Atomics.notify(gate, 0);
      await up;
      assert.equal(counts.get(A), count * rounds, "an increment was lost");
      await Promise.all(workers.map((w) => w.send("down", "down")));
      assert.equal(counts.get(A), 0, "a release was lost");
    } finally {
      for (const worker of workers) worker.terminate();
    }
  });
}

/** What {@linkcode countingWorker} is sent first. */
interface CountingOrder {
  /** What the worker builds its view of the store from. */
  init: unknown;
  /** The address to count. */
  address: string;
  /** How many times each thread adds 1, then -1. */
  rounds: number;
  /** One 32-bit word: the worker starts counting once it is not 0. */
  gate: SharedArrayBuffer;
}

/** One Worker serving {@linkcode countingWorker}, driven step by step. */
class CountingThread {
  #worker: Worker;
  #messages: string[] = [];
  #waiting: ((message: string) => void) | undefined;
  #failed: unknown;
  #fail: ((error: unknown) => void) | undefined;

  constructor(url: URL) {
    this.#worker = new Worker(url, { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<string>) => {
      const resolve = this.#waiting;
      this.#waiting = undefined;
      if (resolve !== undefined) resolve(event.data);
      else this.#messages.push(event.data);
    };
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.#failed = new Error(`Counting worker failed: ${event.message}`);
      this.#fail?.(this.#failed);
    };
  }

  /** Posts `message`, then waits for the worker to answer `expected`. */
  send(message: CountingOrder | "down", expected: string): Promise<void> {
    this.#worker.postMessage(message);
    return this.next(expected);
  }

  /** Waits for the worker's next message, which must be `expected`. */
  async next(expected: string): Promise<void> {
    const message = this.#messages.shift() ?? await new Promise<string>((resolve, reject) => {
      if (this.#failed !== undefined) return reject(this.#failed);
      this.#fail = reject;
      this.#waiting = resolve;
    });
    this.#fail = undefined;
    assert.equal(message, expected);
  }

  terminate(): void {
    this.#worker.terminate();
  }
}

/**
 * Serves the threads of the concurrency case from a Worker module: builds a view of
 * the store with `attach`, waits at the gate, adds 1 `rounds` times, says `"up"`;
 * on `"down"`, adds -1 `rounds` times and says `"down"`.
 *
 * @param attach Builds this thread's view of the store from the fixture's `init`.
 */
export function countingWorker(attach: (init: unknown) => UpstreamCounts): void {
  const scope = self as unknown as {
    onmessage: ((event: MessageEvent<CountingOrder | "down">) => void) | null;
    postMessage(message: string): void;
  };
  let order: CountingOrder | undefined;
  let counts: UpstreamCounts | undefined;
  scope.onmessage = (event) => {
    if (event.data !== "down") {
      order = event.data;
      counts = attach(order.init);
      scope.postMessage("ready");
      const gate = new Int32Array(order.gate);
      Atomics.wait(gate, 0, 0);
      for (let i = 0; i < order.rounds; i++) counts.add(order.address, 1);
      scope.postMessage("up");
      return;
    }
    for (let i = 0; i < order!.rounds; i++) counts!.add(order!.address, -1);
    scope.postMessage("down");
  };
}
