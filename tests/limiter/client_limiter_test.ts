import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { FakeClock } from "../../lib/core/clock.ts";
import { type ClientLease, ClientLimiter } from "../../lib/limiter/client_limiter.ts";
import { MemoryLimiterStore } from "../../lib/limiter/memory_store.ts";
import type {
  AcquireRequest,
  Admission,
  ClientLimits,
  LimiterStore,
} from "../../lib/limiter/store.ts";
import { refused } from "./store_cases.ts";

Deno.test("ClientLimiter.acquire() refuses with a ClientLimitError that names the limit", async (t) => {
  await t.step("the concurrent cap", async () => {
    const limiter = new ClientLimiter({ clock: new FakeClock() });
    const leases: ClientLease[] = [];
    for (let i = 0; i < 10; i++) leases.push(await limiter.acquire("app"));
    const error = await refused(limiter, "app");
    assert.equal(error.name, "ClientLimitError");
    assert.equal(error.kind, "concurrency");
    assert.equal(error.client, "app");
    assert.equal(error.limit, 10);
    assert.equal(error.windowMs, undefined);
    assert.equal(error.retryAfterMs, undefined);
    assert.equal(
      error.message,
      'Cannot accept connection: client "app" is at its limit of 10 concurrent connections',
    );
    for (const lease of leases) lease[Symbol.dispose]();
  });

  await t.step("the rate", async () => {
    const limits = { concurrent: Infinity, rate: { count: 100, per: 60_000 } };
    const limiter = new ClientLimiter({ limits, clock: new FakeClock() });
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

  await t.step("in the singular", async () => {
    const limits = { concurrent: 1, rate: { count: 1, per: 1000 } };
    const limiter = new ClientLimiter({ limits, clock: new FakeClock() });
    (await limiter.acquire("app"))[Symbol.dispose]();
    assert.equal(
      (await refused(limiter, "app")).message,
      'Cannot accept connection: client "app" is over its rate limit of 1 connection per 1s, retry after 1s',
    );
    using _lease = await limiter.acquire("app", { concurrent: 1 });
    assert.equal(
      (await refused(limiter, "app", { concurrent: 1 })).message,
      'Cannot accept connection: client "app" is at its limit of 1 concurrent connection',
    );
  });
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

Deno.test("ClientLimiter.activeInGroup() counts open leases per group over all clients", async () => {
  const limiter = new ClientLimiter({ clock: new FakeClock() });
  const cache = { name: "cache", total: { concurrent: 3 } };
  using _a = await limiter.acquire("a", { group: cache });
  const b = await limiter.acquire("b", { group: cache });
  using _web = await limiter.acquire("a", { group: { name: "web" } });
  using _none = await limiter.acquire("a");
  assert.equal(limiter.activeInGroup("cache"), 2);
  assert.equal(limiter.activeInGroup("web"), 1);
  b[Symbol.dispose]();
  b[Symbol.dispose](); // twice: released once
  assert.equal(limiter.activeInGroup("cache"), 1);
  assert.equal(limiter.activeInGroup("other"), 0);
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
  tryAcquire(request: AcquireRequest, now: number): Promise<Admission> {
    return Promise.resolve(this.inner.tryAcquire(request, now));
  }
  release(keys: readonly string[], now: number): Promise<void> {
    this.releases++;
    if (this.failRelease) return Promise.reject(new Error("store unavailable"));
    this.inner.release(keys, now);
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
