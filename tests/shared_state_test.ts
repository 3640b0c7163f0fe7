import { singleScope } from "../lib/limiter/store.ts";
import assert from "node:assert/strict";
import { SharedState, SharedStateError } from "../lib/workers/shared_state.ts";
import { ClientLimiter, ClientLimitError } from "../lib/limiter/client_limiter.ts";
import { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";
import { FakeClock } from "../lib/core/clock.ts";

Deno.test("SharedState.upstreamCounts() is one count seen from every view", () => {
  const main = new SharedState();
  main.assign(["a:1", "b:2"], []);
  const other = SharedState.attach(main.init);
  assert.equal(main.upstreamCounts().add("a:1", 1), 1);
  assert.equal(other.upstreamCounts().add("a:1", 1), 2);
  assert.equal(main.upstreamCounts().get("a:1"), 2);
  assert.equal(other.upstreamCounts().get("b:2"), 0);
  assert.throws(() => other.upstreamCounts().add("b:2", -1), RangeError);
  assert.equal(main.upstreamCounts().get("b:2"), 0, "a refused release leaves the count");
  assert.throws(() => main.upstreamCounts().get("c:3"), SharedStateError);
});

Deno.test("SharedState backs two LeastConnPools that balance as one", () => {
  const main = new SharedState();
  main.assign(["a:1", "b:2"], []);
  const one = new LeastConnPool(["a:1", "b:2"], { counts: main.upstreamCounts() });
  const two = new LeastConnPool(["a:1", "b:2"], {
    counts: SharedState.attach(main.init).upstreamCounts(),
  });
  const first = one.acquire();
  const second = two.acquire();
  assert.notEqual(first.address, second.address, "the second pool sees the first's lease");
  first.release();
  second.release();
  assert.equal(one.active("a:1") + one.active("b:2"), 0);
});

Deno.test("SharedState.limiterStore() caps a client across limiters", async () => {
  const main = new SharedState();
  main.assign([], ["alice", "bob"]);
  const clock = new FakeClock(1_000_000);
  const a = new ClientLimiter({ store: main.limiterStore(), clock });
  const b = new ClientLimiter({ store: SharedState.attach(main.init).limiterStore(), clock });
  const leases = [];
  for (let i = 0; i < 10; i++) leases.push(await (i % 2 === 0 ? a : b).acquire("alice"));
  await assert.rejects(
    a.acquire("alice"),
    (e) => e instanceof ClientLimitError && e.kind === "concurrency",
  );
  await assert.rejects(b.acquire("alice"), ClientLimitError);
  (await b.acquire("bob"))[Symbol.dispose]();
  leases.pop()![Symbol.dispose]();
  leases.push(await a.acquire("alice"));
  for (const lease of leases) lease[Symbol.dispose]();
});

Deno.test("SharedState.limiterStore() shares the token bucket and says when to retry", () => {
  const main = new SharedState();
  main.assign([], ["alice"]);
  const one = main.limiterStore();
  const two = SharedState.attach(main.init).limiterStore();
  const limits = { concurrent: 100, rate: { count: 2, per: 1000 } };
  const now = 5_000_000;
  assert.equal(
    (one.tryAcquire(singleScope("alice", limits), now) as { admitted: boolean }).admitted,
    true,
  );
  assert.equal(
    (two.tryAcquire(singleScope("alice", limits), now) as { admitted: boolean }).admitted,
    true,
  );
  const refused = one.tryAcquire(singleScope("alice", limits), now + 100);
  assert.deepEqual(refused, {
    admitted: false,
    kind: "rate",
    limit: 2,
    retryAfterMs: 400,
    scope: 0,
  });
  assert.equal(
    (two.tryAcquire(singleScope("alice", limits), now + 500) as { admitted: boolean }).admitted,
    true,
  );
});

Deno.test("SharedState refuses unknown names and a full table", () => {
  const state = new SharedState({ upstreams: 1, clients: 1 });
  state.assign(["a:1"], ["alice"]);
  state.assign(["a:1"], ["alice"]); // already there: no new slot
  assert.throws(() => state.assign(["b:2"], []), SharedStateError);
  assert.throws(() => state.assign([], ["bob"]), SharedStateError);
  assert.throws(
    () => state.limiterStore().tryAcquire(singleScope("bob", { concurrent: 1 }), 0),
    SharedStateError,
  );
  assert.throws(() => new SharedState({ clients: 0 }), RangeError);
});

Deno.test("SharedState.release() gives a drained upstream's slot to the next new address, never a busy one", () => {
  const state = new SharedState({ upstreams: 2, clients: 1 });
  state.assign(["a:1", "b:2"], []);
  const worker = SharedState.attach(state.init);
  worker.upstreamCounts().add("a:1", 1);
  assert.equal(state.release("a:1"), false, "a lease is live");
  assert.equal(state.release("c:3"), false, "no slot");
  assert.throws(() => state.assign(["c:3"], []), SharedStateError);
  worker.upstreamCounts().add("a:1", -1);
  assert.equal(state.release("a:1"), true);
  assert.deepEqual(state.upstreamAddresses().sort(), ["b:2"]);
  state.assign(["c:3"], []);
  assert.equal(state.init.upstreams["c:3"], 0, "the slot of a:1");
  worker.update(state.init);
  assert.equal(worker.upstreamCounts().add("c:3", 1), 1, "starts at zero");
  assert.equal(state.upstreamCounts().get("b:2"), 0);
  assert.throws(() => worker.upstreamCounts().get("a:1"), SharedStateError);
});

Deno.test("SharedState keeps a cap of 10 exact under two Workers racing", async () => {
  const main = new SharedState();
  main.assign(["127.0.0.1:7001"], ["alice"]);
  const rounds = 50_000;
  const run = () => {
    const worker = new Worker(new URL("./fixtures/shared_state_worker.ts", import.meta.url), {
      type: "module",
    });
    const done = new Promise<{ admitted: number; refused: number }>((resolve, reject) => {
      worker.onmessage = (e) => resolve(e.data);
      worker.onerror = (e) => reject(e);
    });
    worker.postMessage({ init: main.init, rounds });
    return done.finally(() => worker.terminate());
  };
  // A lost update (a non-atomic count or lock) leaves slots taken or extra ones free.
  const store = main.limiterStore();
  const results = await Promise.all([run(), run()]);
  for (const r of results) {
    assert.equal(r.admitted + r.refused, rounds);
    assert.ok(r.admitted > 0 && r.refused > 0, "both admissions and refusals happened");
  }
  assert.equal(main.upstreamCounts().get("127.0.0.1:7001"), 0);
  // Every slot came back: exactly 10 can be taken now, not 11.
  for (let i = 0; i < 10; i++) {
    assert.equal(
      (store.tryAcquire(singleScope("alice", { concurrent: 10 }), 0) as { admitted: boolean })
        .admitted,
      true,
    );
  }
  assert.equal(
    (store.tryAcquire(singleScope("alice", { concurrent: 10 }), 0) as { admitted: boolean })
      .admitted,
    false,
  );
});
