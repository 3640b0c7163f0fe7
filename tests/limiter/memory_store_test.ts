import { singleScope } from "../../lib/limiter/store.ts";
import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { ClientLimiter } from "../../lib/limiter/client_limiter.ts";
import { MemoryLimiterStore } from "../../lib/limiter/memory_store.ts";
import { storeCases } from "./store_cases.ts";

storeCases({
  name: "MemoryLimiterStore",
  create: () => {
    const store = new MemoryLimiterStore();
    return Promise.resolve({
      store,
      retained: () => Promise.resolve(store.size),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    });
  },
  forgets: { released: true, refilled: true },
});

Deno.test("MemoryLimiterStore.prune() forgets idle clients once their buckets refilled", async () => {
  const clock = new FakeClock();
  const store = new MemoryLimiterStore();
  const limits = { concurrent: 10, rate: { count: 100, per: 60_000 } };
  const limiter = new ClientLimiter({ limits, store, clock });
  (await limiter.acquire("short"))[Symbol.dispose]();
  using _open = await limiter.acquire("open");
  assert.equal(store.size, 2); // a bucket that misses a token, and an open slot
  clock.advance(599);
  assert.equal(store.prune(clock.now()), 0);
  clock.advance(1);
  assert.equal(store.prune(clock.now()), 1);
  assert.equal(store.size, 1); // the open slot stays
});

Deno.test("MemoryLimiterStore sweeps idle clients as new clients arrive", async () => {
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

Deno.test("MemoryLimiterStore.tryAcquire() answers synchronously", () => {
  const store = new MemoryLimiterStore();
  const answer = store.tryAcquire(singleScope("app", { concurrent: 1 }), 0);
  assert.ok(!(answer instanceof Promise));
  assert.deepEqual(answer, { admitted: true });
  assert.equal(store.release(["app"], 0), undefined);
  assert.equal(store.size, 0);
});
