import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  type ClientLease,
  ClientLimiter,
  ClientLimitError,
} from "../lib/limiter/client_limiter.ts";
import { MemoryLimiterStore } from "../lib/limiter/memory_store.ts";
import type { Admission, ClientLimits, LimiterStore } from "../lib/limiter/store.ts";
import { FakeClock } from "../lib/clock.ts";

/** Acquires and expects a refusal; returns the error for further checks. */
async function refused(
  limiter: ClientLimiter,
  client: string,
  limits?: ClientLimits,
): Promise<ClientLimitError> {
  try {
    using _lease = await limiter.acquire(client, limits);
  } catch (error) {
    assert.ok(error instanceof ClientLimitError, `expected ClientLimitError, got ${error}`);
    return error;
  }
  assert.fail(`expected ${client} to be refused`);
}

Deno.test("ClientLimiter.acquire() refuses the 11th concurrent connection by default", async () => {
  const limiter = new ClientLimiter({ clock: new FakeClock() });
  const leases: ClientLease[] = [];
  for (let i = 0; i < 10; i++) leases.push(await limiter.acquire("app"));
  assert.equal(limiter.active("app"), 10);

  const error = await refused(limiter, "app");
  assert.equal(error.name, "ClientLimitError");
  assert.equal(error.kind, "concurrency");
  assert.equal(error.client, "app");
  assert.equal(error.limit, 10);
  assert.equal(error.retryAfterMs, undefined);
  assert.equal(
    error.message,
    'Cannot accept connection: client "app" is at its limit of 10 concurrent connections',
  );
  assert.equal(limiter.active("app"), 10);

  // Another client is unaffected.
  using _other = await limiter.acquire("other");
  assert.equal(limiter.active("other"), 1);

  for (const lease of leases) lease[Symbol.dispose]();
  assert.equal(limiter.active("app"), 0);
});

Deno.test("ClientLimiter.acquire() re-admits after a lease is released", async () => {
  const limiter = new ClientLimiter({ limits: { concurrent: 2 }, clock: new FakeClock() });
  using _a = await limiter.acquire("app");
  {
    using _b = await limiter.acquire("app");
    await refused(limiter, "app");
  }
  using c = await limiter.acquire("app");
  assert.equal(c.client, "app");
  assert.equal(limiter.active("app"), 2);
});

Deno.test("ClientLease[Symbol.dispose]() releases exactly once", async () => {
  const store = new MemoryLimiterStore();
  const limiter = new ClientLimiter({ limits: { concurrent: 2 }, store, clock: new FakeClock() });
  const first = await limiter.acquire("app");
  using _second = await limiter.acquire("app");
  first[Symbol.dispose]();
  first[Symbol.dispose]();
  first[Symbol.dispose]();
  assert.equal(limiter.active("app"), 1);
  // The store still counts the second lease: only one slot is free.
  using _third = await limiter.acquire("app");
  await refused(limiter, "app");
  assert.equal(limiter.active("app"), 2);
});

Deno.test("ClientLimiter.acquire() releases the lease when a using block throws", async () => {
  const limiter = new ClientLimiter({ limits: { concurrent: 1 }, clock: new FakeClock() });
  await assert.rejects(async () => {
    using _lease = await limiter.acquire("app");
    throw new Error("boom");
  }, /boom/);
  assert.equal(limiter.active("app"), 0);
  using _again = await limiter.acquire("app");
});

Deno.test("ClientLimiter.acquire() applies per-client and per-call limits", async (t) => {
  const limiter = new ClientLimiter({
    limits: { concurrent: 3 },
    limitsFor: (client) => client === "small" ? { concurrent: 1 } : undefined,
    clock: new FakeClock(),
  });

  await t.step("limitsFor() overrides the default", async () => {
    using _lease = await limiter.acquire("small");
    assert.equal((await refused(limiter, "small")).limit, 1);
  });

  await t.step("limitsFor() returning undefined falls back to the default", async () => {
    const leases = [
      await limiter.acquire("big"),
      await limiter.acquire("big"),
      await limiter.acquire("big"),
    ];
    assert.equal((await refused(limiter, "big")).limit, 3);
    for (const lease of leases) lease[Symbol.dispose]();
  });

  await t.step("per-call limits override limitsFor()", async () => {
    using _a = await limiter.acquire("small", { concurrent: 2 });
    using _b = await limiter.acquire("small", { concurrent: 2 });
    assert.equal((await refused(limiter, "small", { concurrent: 2 })).limit, 2);
    // Back under limitsFor()'s cap of 1, the client is over it.
    assert.equal((await refused(limiter, "small")).limit, 1);
  });

  await t.step("Infinity disables the cap", async () => {
    const leases: ClientLease[] = [];
    for (let i = 0; i < 1000; i++) {
      leases.push(await limiter.acquire("unbounded", { concurrent: Infinity }));
    }
    assert.equal(limiter.active("unbounded"), 1000);
    for (const lease of leases) lease[Symbol.dispose]();
  });
});

Deno.test("ClientLimiter.acquire() limits the rate with a token bucket", async (t) => {
  const rate = { count: 100, per: 60_000 };

  await t.step("a full bucket allows a burst of count, then refuses", async () => {
    const clock = new FakeClock();
    const limiter = new ClientLimiter({ limits: { concurrent: Infinity, rate }, clock });
    for (let i = 0; i < 100; i++) (await limiter.acquire("app"))[Symbol.dispose]();
    const error = await refused(limiter, "app");
    assert.equal(error.kind, "rate");
    assert.equal(error.client, "app");
    assert.equal(error.limit, 100);
    assert.equal(error.windowMs, 60_000);
    assert.equal(error.retryAfterMs, 600);
    assert.equal(
      error.message,
      'Cannot accept connection: client "app" is over its rate limit of 100 connections per 1m, retry after 600ms',
    );
  });

  await t.step("retryAfterMs counts down to the next token, which is then granted", async () => {
    const clock = new FakeClock();
    const limiter = new ClientLimiter({ limits: { concurrent: Infinity, rate }, clock });
    for (let i = 0; i < 100; i++) (await limiter.acquire("app"))[Symbol.dispose]();
    clock.advance(300);
    assert.equal((await refused(limiter, "app")).retryAfterMs, 300);
    clock.advance(299);
    assert.equal((await refused(limiter, "app")).retryAfterMs, 1);
    clock.advance(1);
    (await limiter.acquire("app"))[Symbol.dispose]();
    assert.equal((await refused(limiter, "app")).retryAfterMs, 600);
  });

  await t.step("refill is continuous and capped at count", async () => {
    const clock = new FakeClock();
    const limiter = new ClientLimiter({ limits: { concurrent: Infinity, rate }, clock });
    for (let i = 0; i < 100; i++) (await limiter.acquire("app"))[Symbol.dispose]();
    clock.advance(6_000); // 10 tokens
    for (let i = 0; i < 10; i++) (await limiter.acquire("app"))[Symbol.dispose]();
    assert.equal((await refused(limiter, "app")).retryAfterMs, 600);
    clock.advance(10 * 60_000); // far more than a window: the bucket holds count, not more
    for (let i = 0; i < 100; i++) (await limiter.acquire("app"))[Symbol.dispose]();
    assert.equal((await refused(limiter, "app")).retryAfterMs, 600);
  });

  await t.step("clients have separate buckets", async () => {
    const clock = new FakeClock();
    const limiter = new ClientLimiter({
      limits: { concurrent: Infinity, rate: { count: 1, per: 1000 } },
      clock,
    });
    (await limiter.acquire("a"))[Symbol.dispose]();
    await refused(limiter, "a");
    (await limiter.acquire("b"))[Symbol.dispose]();
  });
});

Deno.test("ClientLimiter.acquire() reports retryAfterMs exactly for uneven intervals", async (t) => {
  const cases = [
    { count: 3, per: 1000, elapsed: 0, retryAfterMs: 334 }, // a token every 333.3 ms
    { count: 3, per: 1000, elapsed: 333, retryAfterMs: 1 },
    { count: 7, per: 60_000, elapsed: 0, retryAfterMs: 8572 }, // 8571.43 ms
    { count: 7, per: 60_000, elapsed: 8571, retryAfterMs: 1 },
    { count: 1, per: 1500, elapsed: 1000, retryAfterMs: 500 },
    { count: 10, per: 1, elapsed: 0, retryAfterMs: 1 }, // 0.1 ms: rounds up to 1
  ];
  for (const { count, per, elapsed, retryAfterMs } of cases) {
    await t.step(`${count} per ${per}ms, ${elapsed}ms after a burst`, async () => {
      const clock = new FakeClock(1_000_000);
      const limits = { concurrent: Infinity, rate: { count, per } };
      const limiter = new ClientLimiter({ limits, clock });
      for (let i = 0; i < count; i++) (await limiter.acquire("app"))[Symbol.dispose]();
      clock.advance(elapsed);
      const error = await refused(limiter, "app");
      assert.equal(error.retryAfterMs, retryAfterMs);
      clock.advance(retryAfterMs);
      (await limiter.acquire("app"))[Symbol.dispose]();
    });
  }
});

Deno.test("ClientLimiter.acquire() checks concurrency and rate atomically", async (t) => {
  await t.step("a concurrency refusal spends no rate token", async () => {
    const clock = new FakeClock();
    const limits = { concurrent: 1, rate: { count: 2, per: 1000 } };
    const limiter = new ClientLimiter({ limits, clock });
    const first = await limiter.acquire("app");
    for (let i = 0; i < 5; i++) assert.equal((await refused(limiter, "app")).kind, "concurrency");
    first[Symbol.dispose]();
    using _second = await limiter.acquire("app"); // the second token is still there
    assert.equal(limiter.active("app"), 1);
  });

  await t.step("a rate refusal takes no slot", async () => {
    const clock = new FakeClock();
    const limits = { concurrent: 2, rate: { count: 1, per: 1000 } };
    const limiter = new ClientLimiter({ limits, clock });
    using _first = await limiter.acquire("app");
    for (let i = 0; i < 5; i++) assert.equal((await refused(limiter, "app")).kind, "rate");
    assert.equal(limiter.active("app"), 1);
    clock.advance(1000);
    using _second = await limiter.acquire("app"); // the slot was not taken by the refusals
    assert.equal(limiter.active("app"), 2);
  });

  await t.step("when both limits refuse, concurrency is reported", async () => {
    const clock = new FakeClock();
    const limits = { concurrent: 1, rate: { count: 1, per: 1000 } };
    const limiter = new ClientLimiter({ limits, clock });
    using _lease = await limiter.acquire("app");
    const error = await refused(limiter, "app");
    assert.equal(error.kind, "concurrency");
    assert.equal(error.retryAfterMs, undefined);
  });
});

Deno.test("ClientLimiter.acquire() clamps rate state when limits change", async () => {
  const clock = new FakeClock();
  const limiter = new ClientLimiter({ clock });
  const slow = { concurrent: 10, rate: { count: 1, per: 60_000 } };
  const fast = { concurrent: 10, rate: { count: 1, per: 1000 } };
  (await limiter.acquire("app", slow))[Symbol.dispose]();
  // Under the new, shorter window the client owes at most one window.
  const error = await refused(limiter, "app", fast);
  assert.equal(error.retryAfterMs, 1000);
  assert.equal(
    error.message,
    'Cannot accept connection: client "app" is over its rate limit of 1 connection per 1s, retry after 1s',
  );
  clock.advance(999);
  assert.equal((await refused(limiter, "app", fast)).retryAfterMs, 1);
  clock.advance(1);
  (await limiter.acquire("app", fast))[Symbol.dispose]();
  // Dropping the rate limit admits at once, and the bucket carries over to the next
  // call with a rate limit: it is not refilled by a call without one.
  (await limiter.acquire("app", { concurrent: 10 }))[Symbol.dispose]();
  assert.equal((await refused(limiter, "app", fast)).retryAfterMs, 1000);
});

Deno.test("MemoryLimiterStore forgets idle clients with a full bucket", async (t) => {
  await t.step("without a rate limit, on the last release", async () => {
    const store = new MemoryLimiterStore();
    const limiter = new ClientLimiter({ store, clock: new FakeClock() });
    const a = await limiter.acquire("app");
    const b = await limiter.acquire("app");
    assert.equal(store.size, 1);
    a[Symbol.dispose]();
    assert.equal(store.size, 1);
    b[Symbol.dispose]();
    assert.equal(store.size, 0);
    assert.deepEqual(limiter.snapshot(), new Map());
  });

  await t.step("with a rate limit, once the bucket has refilled", async () => {
    const clock = new FakeClock();
    const store = new MemoryLimiterStore();
    const limits = { concurrent: 10, rate: { count: 100, per: 60_000 } };
    const limiter = new ClientLimiter({ limits, store, clock });

    const long = await limiter.acquire("long");
    clock.advance(600); // one token back: the bucket is full again
    long[Symbol.dispose]();
    assert.equal(store.size, 0);

    (await limiter.acquire("short"))[Symbol.dispose]();
    assert.equal(store.size, 1); // the bucket still misses a token
    clock.advance(599);
    assert.equal(store.prune(clock.now()), 0);
    clock.advance(1);
    assert.equal(store.prune(clock.now()), 1);
    assert.equal(store.size, 0);
  });

  await t.step("by sweeping as new clients arrive", async () => {
    const clock = new FakeClock();
    const store = new MemoryLimiterStore();
    const limits = { concurrent: 10, rate: { count: 1, per: 1000 } };
    const limiter = new ClientLimiter({ limits, store, clock });
    for (let i = 0; i < 5000; i++) (await limiter.acquire(`c${i}`))[Symbol.dispose]();
    // Every client holds a half-empty bucket, so nothing could be swept yet.
    assert.equal(store.size, 5000);
    clock.advance(1000);
    for (let i = 0; i < 5000; i++) (await limiter.acquire(`d${i}`))[Symbol.dispose]();
    // The refilled c* clients were swept as d* arrived (without a sweep: 10000).
    assert.equal(store.size, 5000);
    clock.advance(1000);
    (await limiter.acquire("c0"))[Symbol.dispose]();
    assert.equal(store.prune(clock.now()), 5000);
    assert.equal(store.size, 1);
  });
});

Deno.test("MemoryLimiterStore.tryAcquire() leaves state unchanged on refusal", () => {
  const store = new MemoryLimiterStore();
  const limits = { concurrent: 1, rate: { count: 1, per: 1000 } };
  assert.deepEqual(store.tryAcquire("app", limits, 0), { admitted: true });
  assert.deepEqual(store.tryAcquire("app", limits, 0), {
    admitted: false,
    kind: "concurrency",
    limit: 1,
  });
  store.release("app", 0);
  assert.deepEqual(store.tryAcquire("app", limits, 400), {
    admitted: false,
    kind: "rate",
    limit: 1,
    retryAfterMs: 600,
  });
  assert.deepEqual(store.tryAcquire("app", limits, 1000), { admitted: true });
  store.release("app", 1000);
  // A release with nothing open (and one for an unknown client) is a no-op.
  store.release("app", 1000);
  store.release("nobody", 1000);
  assert.deepEqual(store.tryAcquire("app", { concurrent: 1 }, 1000), { admitted: true });
  assert.deepEqual(store.tryAcquire("app", { concurrent: 1 }, 1000), {
    admitted: false,
    kind: "concurrency",
    limit: 1,
  });
});

Deno.test("ClientLimiter.acquire() admits synchronously with the memory store", async () => {
  const clock = new FakeClock();
  const limiter = new ClientLimiter({
    limits: { concurrent: 1, rate: { count: 5, per: 1 } },
    clock,
  });
  const pending = limiter.acquire("app");
  // Admission already happened inside the call, without a timer.
  assert.equal(limiter.active("app"), 1);
  assert.equal(clock.pending, 0);
  using _lease = await pending;
  await refused(limiter, "app");
  assert.equal(clock.pending, 0);
});

Deno.test("ClientLimiter.active() and snapshot() report open leases per client", async () => {
  const limiter = new ClientLimiter({ clock: new FakeClock() });
  assert.equal(limiter.active("app"), 0);
  using _a1 = await limiter.acquire("a");
  const a2 = await limiter.acquire("a");
  using _b = await limiter.acquire("b");
  const snapshot = limiter.snapshot();
  assert.deepEqual(snapshot, new Map([["a", 2], ["b", 1]]));
  a2[Symbol.dispose]();
  // The snapshot is a copy.
  assert.equal(snapshot.get("a"), 2);
  assert.deepEqual(limiter.snapshot(), new Map([["a", 1], ["b", 1]]));
});

Deno.test("ClientLimiter rejects invalid clients and limits", async (t) => {
  const limiter = new ClientLimiter({ clock: new FakeClock() });
  for (const client of ["", 42 as unknown as string]) {
    await t.step(`client ${JSON.stringify(client)}`, async () => {
      await assert.rejects(limiter.acquire(client), TypeError);
    });
  }
  const bad: ClientLimits[] = [
    { concurrent: 0 },
    { concurrent: 1.5 },
    { concurrent: NaN },
    { concurrent: -1 },
    { concurrent: 1, rate: { count: 0, per: 1000 } },
    { concurrent: 1, rate: { count: 2.5, per: 1000 } },
    { concurrent: 1, rate: { count: 1, per: 0 } },
    { concurrent: 1, rate: { count: 1, per: Infinity } },
  ];
  for (const limits of bad) {
    await t.step(`limits ${JSON.stringify(limits)}`, async () => {
      await assert.rejects(limiter.acquire("app", limits), RangeError);
      assert.throws(() => new ClientLimiter({ limits }), RangeError);
    });
  }
  await t.step("limitsFor() result", async () => {
    const custom = new ClientLimiter({ limitsFor: () => ({ concurrent: -3 }) });
    await assert.rejects(custom.acquire("app"), /"concurrent" must be a positive integer/);
  });
  assert.equal(limiter.active("app"), 0);
});

/** A store that answers with promises, like a remote one would. */
class AsyncStore implements LimiterStore {
  inner = new MemoryLimiterStore();
  failRelease = false;
  releases = 0;
  tryAcquire(client: string, limits: ClientLimits, now: number): Promise<Admission> {
    return Promise.resolve(this.inner.tryAcquire(client, limits, now));
  }
  release(client: string, now: number): Promise<void> {
    this.releases++;
    if (this.failRelease) return Promise.reject(new Error("store unavailable"));
    this.inner.release(client, now);
    return Promise.resolve();
  }
}

Deno.test("ClientLimiter works with a store that answers with promises", async () => {
  const clock = new FakeClock();
  const store = new AsyncStore();
  const limiter = new ClientLimiter({
    limits: { concurrent: 1, rate: { count: 2, per: 1000 } },
    store,
    clock,
  });
  const lease = await limiter.acquire("app");
  assert.equal((await refused(limiter, "app")).kind, "concurrency");
  lease[Symbol.dispose]();
  lease[Symbol.dispose]();
  assert.equal(store.releases, 1);
  (await limiter.acquire("app"))[Symbol.dispose]();
  const error = await refused(limiter, "app");
  assert.equal(error.kind, "rate");
  assert.equal(error.retryAfterMs, 500);
  assert.equal(store.inner.size, 1);
});

Deno.test("ClientLease[Symbol.dispose]() logs a store release failure instead of throwing", async () => {
  const records: LogRecord[] = [];
  await configure({
    sinks: { buffer: (record) => records.push(record) },
    loggers: [
      { category: ["mtlb"], sinks: ["buffer"], lowestLevel: "error" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
    ],
  });
  try {
    const store = new AsyncStore();
    const limiter = new ClientLimiter({ store, clock: new FakeClock() });
    const lease = await limiter.acquire("app");
    store.failRelease = true;
    lease[Symbol.dispose]();
    assert.equal(limiter.active("app"), 0);
    await Promise.resolve(); // let the rejection handler run
    await Promise.resolve();
    assert.equal(records.length, 1);
    assert.deepEqual(records[0]!.category, ["mtlb", "limiter"]);
    assert.equal(records[0]!.properties.client, "app");

    const throwing: LimiterStore = {
      tryAcquire: () => ({ admitted: true }),
      release: () => {
        throw new Error("broken");
      },
    };
    const other = new ClientLimiter({ store: throwing, clock: new FakeClock() });
    (await other.acquire("app"))[Symbol.dispose]();
    assert.equal(records.length, 2);
  } finally {
    await reset();
  }
});

/** A deterministic PRNG (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A reference token bucket in exact integer arithmetic: the level is kept in units of
 * 1 / per tokens, so with whole-millisecond times no rounding ever happens.
 */
class ModelBucket {
  #level: number;
  #at: number;
  constructor(readonly count: number, readonly per: number, now: number) {
    this.#level = count * per;
    this.#at = now;
  }
  #refill(now: number): void {
    this.#level = Math.min(this.count * this.per, this.#level + (now - this.#at) * this.count);
    this.#at = now;
  }
  /** Milliseconds until a token is available; 0 when one is. */
  wait(now: number): number {
    this.#refill(now);
    return this.#level >= this.per ? 0 : Math.ceil((this.per - this.#level) / this.count);
  }
  take(): void {
    this.#level -= this.per;
  }
}

Deno.test("ClientLimiter matches a reference model under random interleavings", async (t) => {
  const profiles: ClientLimits[] = [
    { concurrent: 3 },
    { concurrent: 2, rate: { count: 3, per: 1000 } },
    { concurrent: 5, rate: { count: 7, per: 60_000 } },
    { concurrent: Infinity, rate: { count: 10, per: 333 } },
    { concurrent: 1, rate: { count: 1, per: 250 } },
  ];
  for (const seed of [1, 2, 3, 42, 2024]) {
    await t.step(`seed ${seed}`, async () => {
      const next = random(seed);
      const clock = new FakeClock(Math.floor(next() * 1e9));
      const store = new MemoryLimiterStore();
      const clients = profiles.map((_, i) => `client-${i}`);
      const limiter = new ClientLimiter({
        store,
        clock,
        limitsFor: (client) => profiles[clients.indexOf(client)],
      });
      const held = clients.map((): ClientLease[] => []);
      const buckets = profiles.map((p) =>
        p.rate && new ModelBucket(p.rate.count, p.rate.per, clock.now())
      );
      let admitted = 0;
      let refusedRate = 0;
      let refusedConcurrency = 0;

      for (let step = 0; step < 5000; step++) {
        const i = Math.floor(next() * clients.length);
        const client = clients[i]!;
        const roll = next();
        if (roll < 0.5) {
          const limits = profiles[i]!;
          const bucket = buckets[i];
          const wait = bucket?.wait(clock.now()) ?? 0;
          const full = held[i]!.length >= limits.concurrent;
          try {
            held[i]!.push(await limiter.acquire(client));
            assert.ok(!full && wait === 0, `step ${step}: ${client} admitted over its limits`);
            bucket?.take();
            admitted++;
          } catch (error) {
            assert.ok(error instanceof ClientLimitError);
            if (full) {
              assert.equal(error.kind, "concurrency", `step ${step}`);
              refusedConcurrency++;
            } else {
              assert.equal(error.kind, "rate", `step ${step}`);
              assert.equal(error.retryAfterMs, wait, `step ${step}: retryAfterMs`);
              refusedRate++;
            }
          }
        } else if (roll < 0.9) {
          const leases = held[i]!;
          if (leases.length > 0) {
            const [lease] = leases.splice(Math.floor(next() * leases.length), 1);
            lease![Symbol.dispose]();
            if (next() < 0.1) lease![Symbol.dispose](); // a stray double dispose
          }
        } else {
          clock.advance(Math.floor(next() * 400));
        }
        assert.equal(limiter.active(client), held[i]!.length, `step ${step}: active`);
      }
      // Every outcome was exercised.
      assert.ok(admitted > 0 && refusedRate > 0 && refusedConcurrency > 0);

      for (const leases of held) for (const lease of leases) lease[Symbol.dispose]();
      assert.deepEqual(limiter.snapshot(), new Map());
      for (const client of clients) assert.equal(limiter.active(client), 0);
      clock.advance(60_000);
      store.prune(clock.now());
      assert.equal(store.size, 0);
    });
  }
});
