import assert from "node:assert/strict";
import { SharedState, SharedStateError } from "../../lib/workers/shared_state.ts";
import { CASE_ADDRESSES, countsCases } from "./counts_cases.ts";

countsCases({
  name: "SharedMemoryUpstreamCounts",
  create: () => {
    const state = new SharedState({ upstreams: CASE_ADDRESSES.length, clients: 1 });
    state.assign(CASE_ADDRESSES, []);
    // The store under test works on a second view, attached as a Worker attaches.
    const counts = SharedState.attach(state.init).upstreamCounts();
    return Promise.resolve({
      counts,
      peer: () => state.upstreamCounts(),
      init: state.init,
      [Symbol.asyncDispose]: () => Promise.resolve(),
    });
  },
  threads: new URL("./_shared_memory_counts_worker.ts", import.meta.url),
});

Deno.test("SharedState.upstreamCounts() counts upstreams assigned after it was made", () => {
  const main = new SharedState({ upstreams: 2, clients: 1 });
  main.assign(["a:1"], []);
  const worker = SharedState.attach(main.init);
  const counts = worker.upstreamCounts();
  assert.throws(() => counts.add("b:2", 1), SharedStateError);
  main.assign(["b:2"], []); // a reload adds an upstream
  worker.update(main.init);
  assert.equal(counts.add("b:2", 1), 1);
  assert.equal(main.upstreamCounts().get("b:2"), 1);
  assert.equal(main.upstreamCounts().get("a:1"), 0, "slots are not shared between addresses");
});
