/**
 * The per-connection cost of the client limiter: `ClientLimiter.acquire()` and the
 * lease's release, with the memory store and the shared-memory store (the one
 * Workers share), for a client with a concurrent cap alone and with a rate too.
 *
 * ```sh
 * deno run --allow-read bench/limiter_bench.ts [--ops 50000] [--rounds 25] \
 *   [--baseline ../other-checkout/lib]
 * ```
 *
 * With `--baseline`, the same figures are measured for another checkout's `lib/` (the
 * old flat layout or the `lib/limiter/` one) in the same run, interleaved round by
 * round, and each line shows this checkout's time against the baseline's.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Clock, systemClock } from "../lib/core/clock.ts";
import { ClientLimiter } from "../lib/limiter/client_limiter.ts";
import { MemoryLimiterStore } from "../lib/limiter/memory_store.ts";
import type { ClientLimits, LimiterStore } from "../lib/limiter/store.ts";
import { SharedState } from "../lib/workers/shared_state.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ops: { type: "string", default: "50000" },
    rounds: { type: "string", default: "25" },
    baseline: { type: "string" },
  },
});
const OPS = Number(values.ops);
const ROUNDS = Number(values.rounds);
const CLIENTS = Array.from({ length: 10 }, (_, i) => `client-${i}`);
/** Never refused: the benchmark measures the cost of admitting, not of refusing. */
const PROFILES: Record<string, ClientLimits> = {
  "cap": { concurrent: 10 },
  "cap+rate": { concurrent: 10, rate: { count: 1_000_000_000, per: 1_000 } },
};
/** The workers' common time base (see `SharedState.limiterStore()`). */
const workerClock: Clock = {
  ...systemClock,
  now: () => performance.timeOrigin + performance.now(),
};

/** What the benchmark needs of a checkout's `lib/`. */
interface Lib {
  ClientLimiter: typeof ClientLimiter;
  MemoryLimiterStore: typeof MemoryLimiterStore;
  SharedState: typeof SharedState;
}

/** Loads another checkout's `lib/`, in either layout. */
async function loadLib(dir: string): Promise<Lib> {
  const base = new URL(`${dir.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
  const exists = (path: string) => Deno.stat(new URL(path, base)).then(() => true, () => false);
  const nested = await exists("limiter/client_limiter.ts");
  const limiter = await import(
    new URL(nested ? "limiter/client_limiter.ts" : "client_limiter.ts", base).href
  );
  const memory = await import(
    new URL(nested ? "limiter/memory_store.ts" : "client_limiter.ts", base).href
  );
  const shared = await import(new URL("shared_state.ts", base).href);
  return {
    ClientLimiter: limiter.ClientLimiter,
    MemoryLimiterStore: memory.MemoryLimiterStore,
    SharedState: shared.SharedState,
  };
}

interface Variant {
  name: string;
  checkout: string;
  limiter: ClientLimiter;
  samples: number[];
}

function variants(lib: Lib, checkout: string): Variant[] {
  const stores: [string, () => LimiterStore, Clock][] = [
    ["memory", () => new lib.MemoryLimiterStore(), systemClock],
    ["shared memory", () => {
      const state = new lib.SharedState({ upstreams: 1, clients: 64 });
      state.assign([], CLIENTS);
      return lib.SharedState.attach(state.init).limiterStore();
    }, workerClock],
  ];
  const out: Variant[] = [];
  for (const [store, create, clock] of stores) {
    for (const [profile, limits] of Object.entries(PROFILES)) {
      out.push({
        name: `${store}, ${profile}`,
        checkout,
        limiter: new lib.ClientLimiter({ store: create(), clock, limitsFor: () => limits }),
        samples: [],
      });
    }
  }
  return out;
}

/** Nanoseconds per acquire+release, over OPS of them, round-robin over the clients. */
async function sample(limiter: ClientLimiter): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < OPS; i++) {
    using _lease = await limiter.acquire(CLIENTS[i % CLIENTS.length]!);
  }
  return ((performance.now() - start) * 1e6) / OPS;
}

const median = (xs: number[]): number => {
  const sorted = xs.toSorted((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

const current = variants({ ClientLimiter, MemoryLimiterStore, SharedState }, "this checkout");
const baseline = values.baseline === undefined
  ? []
  : variants(await loadLib(values.baseline), "baseline");
const all = [...current, ...baseline];

// Warm up every variant (JIT), then interleave: each round runs every variant once,
// starting from a different one, so drift on a shared machine hits all alike.
for (const variant of all) await sample(variant.limiter);
for (let round = 0; round < ROUNDS; round++) {
  for (let k = 0; k < all.length; k++) {
    const variant = all[(round + k) % all.length]!;
    variant.samples.push(await sample(variant.limiter));
  }
}

console.log(
  `ClientLimiter.acquire() + release, ns per pair: median and best of ${ROUNDS} samples of ${OPS}, Deno ${Deno.version.deno}`,
);
const figures = (samples: number[]): string =>
  `${median(samples).toFixed(0).padStart(5)} (best ${Math.min(...samples).toFixed(0).padStart(4)})`;
const change = (after: number, before: number): string =>
  `${after >= before ? "+" : ""}${((after / before - 1) * 100).toFixed(1)}%`.padStart(7);
for (const variant of current) {
  const line = `${variant.name.padEnd(24)} ${figures(variant.samples)}`;
  const before = baseline.find((b) => b.name === variant.name);
  if (before === undefined) {
    console.log(line);
    continue;
  }
  console.log(
    `${line}   baseline ${figures(before.samples)}   median ${
      change(median(variant.samples), median(before.samples))
    }, best ${change(Math.min(...variant.samples), Math.min(...before.samples))}`,
  );
}
