import { MemoryUpstreamCounts } from "../../lib/upstream/memory_counts.ts";
import { countsCases } from "./counts_cases.ts";

countsCases({
  name: "MemoryUpstreamCounts",
  create: () =>
    Promise.resolve({
      counts: new MemoryUpstreamCounts(),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    }),
});
