import assert from "node:assert/strict";
import { singleScope } from "../../lib/limiter/store.ts";
import { SharedState } from "../../lib/workers/shared_state.ts";
import { CASE_CLIENTS, storeCases } from "./store_cases.ts";

storeCases({
  name: "SharedMemoryLimiterStore",
  create: () => {
    const state = new SharedState({ upstreams: 1, clients: CASE_CLIENTS.length });
    state.assign([], CASE_CLIENTS);
    // The store under test works on a second view, attached as a Worker attaches.
    const store = SharedState.attach(state.init).limiterStore();
    return Promise.resolve({ store, [Symbol.asyncDispose]: () => Promise.resolve() });
  },
  // Every client has a fixed slot: memory is bounded by construction.
  forgets: { released: false, refilled: false },
});

Deno.test("SharedMemoryLimiterStore starts every slot with a full bucket, at any time", () => {
  const state = new SharedState({ upstreams: 1, clients: 2 });
  state.assign([], ["early", "late"]);
  const store = state.limiterStore();
  const limits = { concurrent: Infinity, rate: { count: 2, per: 1000 } };
  // Times are only compared with each other: a negative one is as good as any.
  for (const [client, now] of [["early", -5_000], ["late", 1.7e12]] as const) {
    assert.deepEqual(store.tryAcquire(singleScope(client, limits), now), { admitted: true });
    assert.deepEqual(store.tryAcquire(singleScope(client, limits), now), { admitted: true });
    assert.deepEqual(store.tryAcquire(singleScope(client, limits), now), {
      admitted: false,
      kind: "rate",
      limit: 2,
      retryAfterMs: 500,
      scope: 0,
    });
  }
});
