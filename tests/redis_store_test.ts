import assert from "node:assert/strict";
import {
  type ClientLease,
  ClientLimiter,
  ClientLimitError,
} from "../lib/limiter/client_limiter.ts";
import { type ClientLimits, singleScope, StoreUnavailableError } from "../lib/limiter/store.ts";
import { RedisLimiterStore } from "../lib/redis/limiter_store.ts";
import type { RedisLimiterStoreOptions } from "../lib/redis/limiter_store.ts";
import { RedisUpstreamCounts } from "../lib/redis/upstream_counts.ts";
import { LIMITER_CLIENTS, LimiterProcess, RedisProbe, RedisServer, redisTest } from "./_redis.ts";

/** A short lease so that expiry tests finish quickly; heartbeats every 333 ms. */
const LEASE_TTL = 1_000;
/** Guard for waits on an external state (an expiry, a reconnect): failure only. */
const GUARD_MS = 10_000;

/**
 * Polls `probe` until it returns a truthy value: for states that change outside this
 * process (a lease expiring in Redis, a reconnect). Fails after `guard` milliseconds.
 */
async function eventually<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  guard = GUARD_MS,
): Promise<T> {
  const deadline = performance.now() + guard;
  while (true) {
    const value = await probe();
    if (value) return value;
    if (performance.now() > deadline) assert.fail(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Acquires and expects a refusal; returns the error. */
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

/** Tries to acquire; returns the lease, or undefined when refused by a limit. */
async function tryAcquire(
  limiter: ClientLimiter,
  client: string,
  limits?: ClientLimits,
): Promise<ClientLease | undefined> {
  try {
    return await limiter.acquire(client, limits);
  } catch (error) {
    if (error instanceof ClientLimitError) return undefined;
    throw error;
  }
}

/** One "instance": a store and the limiter on it. */
async function instance(
  server: RedisServer,
  limits: ClientLimits,
  options: Partial<RedisLimiterStoreOptions> = {},
): Promise<{ store: RedisLimiterStore; limiter: ClientLimiter } & AsyncDisposable> {
  const store = new RedisLimiterStore({ url: server.url, leaseTtl: LEASE_TTL, ...options });
  await store.connect();
  assert.equal(store.mode, "shared");
  return {
    store,
    limiter: new ClientLimiter({ store, limits }),
    [Symbol.asyncDispose]: () => store.close(),
  };
}

function release(leases: ClientLease[]): void {
  for (const lease of leases.splice(0)) lease[Symbol.dispose]();
}

Deno.test("RedisLimiterStore() rejects invalid options", () => {
  assert.throws(() => new RedisLimiterStore({ url: "http://127.0.0.1:6379" }), TypeError);
  assert.throws(() => new RedisLimiterStore({ url: "not a url" }), TypeError);
  assert.throws(
    () => new RedisLimiterStore({ url: "redis://u:secret@h", onStoreError: "open" as "local" }),
    TypeError,
  );
  assert.throws(
    () => new RedisLimiterStore({ url: "redis://h", leaseTtl: 600, timeout: 250 }),
    /"leaseTtl" \(600\) must be more than three times "timeout" \(250\)/,
  );
  assert.throws(() => new RedisLimiterStore({ url: "redis://h", timeout: 0 }), RangeError);
  assert.throws(() => new RedisLimiterStore({ url: "redis://h", instanceId: "a#1" }), TypeError);
  assert.throws(
    () => new RedisLimiterStore({ url: "redis://h", rateClock: "local" as "redis" }),
    /"rateClock" must be "redis" or "caller"/,
  );
  // A password never shows in an error.
  assert.throws(
    () => new RedisLimiterStore({ url: "redis://user:secret@/" }),
    (e) => e instanceof TypeError && !e.message.includes("secret"),
  );
});

Deno.test("RedisLimiterStore.tryAcquire() rejects before connect() and after close()", async () => {
  const store = new RedisLimiterStore({ url: "redis://127.0.0.1:1" });
  await assert.rejects(
    store.tryAcquire(singleScope("app", { concurrent: 1 }), 0),
    /call connect\(\) first/,
  );
  await store.close();
  await assert.rejects(store.tryAcquire(singleScope("app", { concurrent: 1 }), 0), /closed/);
  await assert.rejects(store.connect(), /closed/);
});

redisTest("RedisLimiterStore.tryAcquire() caps a client at 10 across two instances", async () => {
  await using server = await RedisServer.start();
  await using a = await instance(server, { concurrent: 10 });
  await using b = await instance(server, { concurrent: 10 });
  const held: ClientLease[] = [];
  for (let i = 0; i < 6; i++) held.push(await a.limiter.acquire("app"));
  for (let i = 0; i < 4; i++) held.push(await b.limiter.acquire("app"));
  assert.equal(a.limiter.active("app"), 6);
  assert.equal(b.limiter.active("app"), 4);

  for (const limiter of [a.limiter, b.limiter]) {
    const error = await refused(limiter, "app");
    assert.equal(error.kind, "concurrency");
    assert.equal(error.limit, 10);
  }
  // Another client is not affected.
  using _other = await b.limiter.acquire("other");

  // A slot released on A can be taken on B, once.
  held.shift()![Symbol.dispose]();
  await eventually("A's release to reach Redis", () => tryAcquire(b.limiter, "app")).then(
    (lease) => held.push(lease),
  );
  await refused(a.limiter, "app");
  assert.equal(a.limiter.active("app") + b.limiter.active("app"), 10);
  release(held);
  assert.deepEqual(a.store.counters, { errors: 0, fallbacks: 0, refusals: 0, resyncs: 1 });
});

redisTest("RedisLimiterStore.tryAcquire() shares one token bucket between instances", async () => {
  await using server = await RedisServer.start();
  const limits = { concurrent: Infinity, rate: { count: 5, per: 60_000 } };
  await using a = await instance(server, limits);
  await using b = await instance(server, limits);
  const held: ClientLease[] = [];
  for (let i = 0; i < 3; i++) held.push(await a.limiter.acquire("app"));
  for (let i = 0; i < 2; i++) held.push(await b.limiter.acquire("app"));
  for (const limiter of [a.limiter, b.limiter]) {
    const error = await refused(limiter, "app");
    assert.equal(error.kind, "rate");
    assert.equal(error.limit, 5);
    assert.equal(error.windowMs, 60_000);
    // One token every 12 s; a little of it has passed already.
    assert.ok(
      error.retryAfterMs! > 10_000 && error.retryAfterMs! <= 12_000,
      `${error.retryAfterMs}`,
    );
  }
  release(held);
  // Releasing gives back no token.
  assert.equal((await refused(b.limiter, "app")).kind, "rate");
  // A shorter window carries the state over, clamped to one window of debt: one
  // token every 200 ms, not a wait of nearly a minute.
  const faster = { concurrent: Infinity, rate: { count: 5, per: 1_000 } };
  const error = await refused(a.limiter, "app", faster);
  assert.ok(error.retryAfterMs! > 0 && error.retryAfterMs! <= 200, `${error.retryAfterMs}`);
  // A token finer than the precision of Redis time in milliseconds still works.
  const fine = { concurrent: Infinity, rate: { count: 1_000_000_000, per: 1_000 } };
  for (let i = 0; i < 3; i++) (await a.limiter.acquire("fine", fine))[Symbol.dispose]();
  assert.equal(a.store.counters.errors, 0);
});

redisTest("RedisLimiterStore forgets a bucket once Redis' clock has refilled it", async () => {
  await using server = await RedisServer.start();
  await using probe = await RedisProbe.open(server);
  const limits = { concurrent: 10, rate: { count: 2, per: 200 } };
  await using a = await instance(server, limits);
  const start = performance.now();
  // One token of two: the bucket is full again 100 ms later on Redis' clock.
  await a.store.tryAcquire(singleScope("app", limits), 0);
  await a.store.release(["app"], 0);
  assert.deepEqual(await probe.run(LIMITER_CLIENTS, "mtlb:"), ["app"]);
  await eventually(
    "the bucket's key to expire",
    async () => (await probe.run(LIMITER_CLIENTS, "mtlb:") as string[]).length === 0,
  );
  const elapsed = performance.now() - start;
  assert.ok(
    elapsed >= 100 - 5 && elapsed <= 100 + 1_000,
    `forgotten after ${Math.round(elapsed)} ms`,
  );
  // Forgotten is a full bucket: both tokens are there.
  (await a.limiter.acquire("app"))[Symbol.dispose]();
  (await a.limiter.acquire("app"))[Symbol.dispose]();
  assert.equal((await refused(a.limiter, "app")).kind, "rate");
});

redisTest(
  "RedisLimiterStore.tryAcquire() reports concurrency when both refuse, and a refusal takes nothing",
  async () => {
    await using server = await RedisServer.start();
    const limits = { concurrent: 1, rate: { count: 2, per: 60_000 } };
    await using a = await instance(server, limits);
    await using b = await instance(server, limits);
    const first = await a.limiter.acquire("app"); // token 1 of 2
    assert.equal((await refused(b.limiter, "app")).kind, "concurrency");
    first[Symbol.dispose]();
    // The concurrency refusal spent no token: B gets the second one.
    const second = await eventually("the release", () => tryAcquire(b.limiter, "app"));
    // Both limits refuse now: concurrency is reported.
    assert.equal((await refused(a.limiter, "app")).kind, "concurrency");
    second[Symbol.dispose]();
    await eventually("the release", async () => (await refused(a.limiter, "app")).kind === "rate");
    // The rate refusal took no slot: without a rate limit, the one slot is free.
    using _third = await a.limiter.acquire("app", { concurrent: 1 });
  },
);

redisTest("RedisLimiterStore frees a crashed instance's slots within the lease TTL", async () => {
  await using server = await RedisServer.start();
  await using crashing = await LimiterProcess.start(server, {
    client: "app",
    count: 10,
    leaseTtl: LEASE_TTL,
  });
  await using a = await instance(server, { concurrent: 10 });
  assert.equal((await refused(a.limiter, "app")).kind, "concurrency");

  await crashing.kill(); // SIGKILL: no cleanup, its lease simply stops being renewed
  const killedAt = performance.now();
  const lease = await eventually(
    "the dead instance's slots to expire",
    () => tryAcquire(a.limiter, "app"),
  );
  const elapsed = performance.now() - killedAt;
  // Bound: LEASE_TTL after its last renewal, which was before the kill; the slack
  // covers this test's polling and a busy machine.
  assert.ok(elapsed <= LEASE_TTL + 1_000, `slots freed after ${Math.round(elapsed)} ms`);
  const held = [lease];
  for (let i = 0; i < 9; i++) held.push(await a.limiter.acquire("app"));
  await refused(a.limiter, "app");
  release(held);
});

redisTest("RedisLimiterStore.close() frees the instance's slots at once", async () => {
  await using server = await RedisServer.start();
  await using b = await instance(server, { concurrent: 10 });
  const leases: ClientLease[] = [];
  {
    await using a = await instance(server, { concurrent: 10 });
    for (let i = 0; i < 10; i++) leases.push(await a.limiter.acquire("app"));
    await refused(b.limiter, "app");
  }
  // Closed: its slots are gone from Redis without waiting for the lease.
  for (let i = 0; i < 10; i++) leases.push(await b.limiter.acquire("app"));
  release(leases); // A's leases release locally only (A is closed); B's through Redis
});

redisTest(
  'RedisLimiterStore.tryAcquire() limits locally while Redis is down ("local"), then resyncs',
  async () => {
    await using server = await RedisServer.start();
    const limits = { concurrent: 3 };
    await using a = await instance(server, limits);
    await using b = await instance(server, limits);
    const held: ClientLease[] = [];
    held.push(await a.limiter.acquire("app"), await a.limiter.acquire("app"));

    await server.stop();
    // Admitted by the local fallback, against A's own 2 open slots and the full cap.
    held.push(await a.limiter.acquire("app"));
    assert.equal(a.store.mode, "local");
    assert.equal(a.store.counters.fallbacks, 1);
    assert.ok(a.store.counters.errors >= 1);
    assert.equal((await refused(a.limiter, "app")).kind, "concurrency");
    assert.equal(a.store.counters.fallbacks, 2);
    held.pop()![Symbol.dispose](); // released locally only: A now has 2 open

    const before = { a: a.store.counters.resyncs, b: b.store.counters.resyncs };
    await server.restart(); // empty: Redis lost everything
    await eventually(
      "both instances to re-register",
      () => a.store.counters.resyncs > before.a && b.store.counters.resyncs > before.b,
    );
    assert.equal(a.store.mode, "shared");
    assert.equal(b.store.mode, "shared");
    // A re-registered its 2 open slots: B gets exactly the one left.
    const third = await b.limiter.acquire("app");
    assert.equal((await refused(b.limiter, "app")).kind, "concurrency");
    // Releases after the resync go to Redis: A's 2 slots free up for B.
    release(held);
    const more = await eventually("A's releases", () => tryAcquire(b.limiter, "app"));
    const last = await eventually("A's releases", () => tryAcquire(b.limiter, "app"));
    await refused(b.limiter, "app");
    release([third, more, last]);
  },
);

redisTest(
  'RedisLimiterStore.tryAcquire() refuses while Redis is down ("closed"), then resyncs',
  async () => {
    await using server = await RedisServer.start();
    await using a = await instance(server, { concurrent: 3 }, { onStoreError: "closed" });
    using _held = await a.limiter.acquire("app");
    await server.stop();
    await assert.rejects(a.limiter.acquire("app"), StoreUnavailableError);
    assert.equal(a.store.mode, "closed");
    await assert.rejects(a.limiter.acquire("app"), (error) => {
      assert.ok(error instanceof StoreUnavailableError);
      assert.ok(error.cause instanceof Error, "the Redis error is the cause");
      return true;
    });
    assert.equal(a.store.counters.refusals, 2);
    assert.equal(a.limiter.active("app"), 1);

    const before = a.store.counters.resyncs;
    await server.restart();
    await eventually("the resync", () => a.store.counters.resyncs > before);
    assert.equal(a.store.mode, "shared");
    using _more = await a.limiter.acquire("app");
  },
);

redisTest(
  "RedisLimiterStore.tryAcquire() answers within its timeout when Redis hangs",
  async () => {
    await using server = await RedisServer.start();
    const timeout = 200;
    await using a = await instance(server, { concurrent: 1 }, { timeout });
    await using b = await instance(server, { concurrent: 2 }, { timeout });
    // Redis caches the scripts from now on, so the late script below runs in full.
    assert.deepEqual(await a.store.tryAcquire(singleScope("warm-up", { concurrent: 1 }), 0), {
      admitted: true,
    });
    await a.store.release(["warm-up"], 0);
    server.pause(); // SIGSTOP: the connection stays up, nothing answers
    const start = performance.now();
    const lease = await a.limiter.acquire("app"); // times out, then the local fallback admits
    const waited = performance.now() - start;
    assert.ok(waited >= timeout - 5 && waited < timeout + 1_000, `waited ${Math.round(waited)} ms`);
    assert.equal(a.store.mode, "local");
    assert.ok(a.store.counters.errors >= 1);

    const before = { a: a.store.counters.resyncs, b: b.store.counters.resyncs };
    server.resume(); // the timed-out script now runs in Redis, late
    await eventually("the resync", () => a.store.counters.resyncs > before.a);
    if (b.store.mode !== "shared") {
      // B's heartbeat timed out too: wait until it decides through Redis again.
      await eventually("B's resync", () => b.store.counters.resyncs > before.b);
    }
    // Redis counts A's one slot exactly once, however the late script ran: B gets the
    // other slot at once, not after A's replaced lease expires.
    const other = await b.limiter.acquire("app");
    assert.equal((await refused(b.limiter, "app")).kind, "concurrency");
    release([lease, other]);
  },
);

Deno.test("RedisUpstreamCounts() rejects invalid options", () => {
  assert.throws(() => new RedisUpstreamCounts({ url: "tcp://h:1" }), TypeError);
  assert.throws(
    () => new RedisUpstreamCounts({ url: "redis://h", ttl: 500, pollInterval: 250 }),
    RangeError,
  );
  assert.throws(
    () => new RedisUpstreamCounts({ url: "redis://h", publishInterval: -1 }),
    RangeError,
  );
});

Deno.test("RedisUpstreamCounts.add() counts locally without Redis", () => {
  const counts = new RedisUpstreamCounts({ url: "redis://127.0.0.1:1" });
  assert.equal(counts.add("10.0.0.1:80", 1), 1);
  assert.equal(counts.add("10.0.0.1:80", 1), 2);
  assert.equal(counts.get("10.0.0.1:80"), 2);
  assert.equal(counts.add("10.0.0.1:80", -2), 0);
  assert.throws(() => counts.add("10.0.0.1:80", -1), RangeError);
  assert.throws(() => counts.add("10.0.0.1:80", 0.5), RangeError);
  assert.equal(counts.mode, "local");
});

redisTest(
  "RedisUpstreamCounts.get() sees the other instances' counts within the staleness bound",
  async () => {
    await using server = await RedisServer.start();
    await using a = new RedisUpstreamCounts({ url: server.url });
    await using b = new RedisUpstreamCounts({ url: server.url });
    await a.connect();
    await b.connect();
    assert.equal(a.mode, "shared");
    const X = "10.0.0.1:80";
    // Bound: publishInterval (100) + pollInterval (250) + 2 round trips (local: ~1 ms).
    const bound = 100 + 250 + 2 * 250;

    for (let i = 0; i < 3; i++) a.add(X, 1);
    assert.equal(a.get(X), 3); // local counts are immediate
    let start = performance.now();
    await eventually("B to see A's 3 connections", () => b.get(X) === 3);
    let elapsed = performance.now() - start;
    assert.ok(elapsed <= bound + 500, `seen after ${Math.round(elapsed)} ms`);

    b.add(X, 1);
    assert.equal(b.get(X), 4); // its own, exact, plus A's as last read
    await eventually("A to see B's connection", () => a.get(X) === 4);

    a.add(X, -3);
    start = performance.now();
    await eventually("B to see A's release", () => b.get(X) === 1);
    elapsed = performance.now() - start;
    assert.ok(elapsed <= bound + 500, `seen after ${Math.round(elapsed)} ms`);

    a.add(X, 2);
    await eventually("B to see A's connections", () => b.get(X) === 3);
    await a.close(); // removes A's counts from Redis
    await eventually("B to forget A", () => b.get(X) === 1);
    b.add(X, -1);
  },
);

redisTest("RedisUpstreamCounts.get() falls back to local counts while Redis is down", async () => {
  await using server = await RedisServer.start();
  await using a = new RedisUpstreamCounts({ url: server.url });
  await using b = new RedisUpstreamCounts({ url: server.url, ttl: 1_000 });
  await a.connect();
  await b.connect();
  a.add("u:1", 2);
  await eventually("B to see A", () => b.get("u:1") === 2);
  await server.stop();
  await eventually("B to notice", () => b.mode === "local");
  b.add("u:1", 1);
  assert.ok(b.get("u:1") >= 1);
  // A's counts, last read, are dropped after B's ttl without Redis.
  await eventually("B to drop A's stale counts", () => b.get("u:1") === 1);
  assert.ok(b.counters.errors >= 1);

  await server.restart(); // empty: both publish again on reconnect
  await eventually("A and B to share again", () => a.mode === "shared" && b.mode === "shared");
  await eventually("B to see A again", () => b.get("u:1") === 3);
  await eventually("A to see B", () => a.get("u:1") === 3);
  a.add("u:1", -2);
  b.add("u:1", -1);
});
