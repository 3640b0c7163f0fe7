/**
 * The per-connection cost of the upstream pool: `LeastConnPool.acquire()` and the
 * lease's release, and `LeastConnPool.connect()` with a dialer that connects at once
 * (the dial race, its connect timer and the lease), with the memory counts and the
 * shared-memory counts (the ones Workers share).
 *
 * ```sh
 * deno run --allow-read bench/pool_bench.ts [--ops 50000] [--rounds 25] \
 *   [--baseline ../other-checkout/lib]
 * ```
 *
 * With `--baseline`, the same figures are measured for another checkout's `lib/` in the
 * same run, interleaved round by round, and each line shows this checkout's time
 * against the baseline's.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { HostPort } from "../lib/core/address.ts";
import { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";
import { MemoryUpstreamCounts } from "../lib/upstream/memory_counts.ts";
import type { UpstreamCounts } from "../lib/upstream/upstream_counts.ts";
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
const UPSTREAMS = Array.from({ length: 4 }, (_, i) => `10.0.0.${i + 1}:6379`);
/** Leases held through every sample, so picks compare unequal counts. */
const HELD = 10;

/** What the benchmark needs of a checkout's `lib/`. */
interface Lib {
  LeastConnPool: typeof LeastConnPool;
  MemoryUpstreamCounts: typeof MemoryUpstreamCounts;
  SharedState: typeof SharedState;
}

/** Loads another checkout's `lib/`: `MemoryUpstreamCounts` in its own module or the pool's. */
async function loadLib(dir: string): Promise<Lib> {
  const base = new URL(`${dir.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
  const exists = (path: string) => Deno.stat(new URL(path, base)).then(() => true, () => false);
  const pool = await import(new URL("upstream/least_conn_pool.ts", base).href);
  const counts = await exists("upstream/memory_counts.ts")
    ? await import(new URL("upstream/memory_counts.ts", base).href)
    : pool;
  const shared = await import(new URL("workers/shared_state.ts", base).href);
  return {
    LeastConnPool: pool.LeastConnPool,
    MemoryUpstreamCounts: counts.MemoryUpstreamCounts,
    SharedState: shared.SharedState,
  };
}

interface Variant {
  name: string;
  run: () => Promise<void> | void;
  samples: number[];
}

/** A dialer that connects at once, as a dial to a listening loopback port nearly does. */
const dial = (address: HostPort): Promise<HostPort> => Promise.resolve(address);

function variants(lib: Lib): Variant[] {
  const stores: [string, () => UpstreamCounts][] = [
    ["memory", () => new lib.MemoryUpstreamCounts()],
    ["shared memory", () => {
      const state = new lib.SharedState({ upstreams: 16, clients: 1 });
      state.assign(UPSTREAMS, []);
      return lib.SharedState.attach(state.init).upstreamCounts();
    }],
  ];
  const out: Variant[] = [];
  for (const [store, create] of stores) {
    const pool = (): LeastConnPool => {
      const pool = new lib.LeastConnPool(UPSTREAMS, { counts: create() });
      for (let i = 0; i < HELD; i++) pool.acquire();
      return pool;
    };
    const picks = pool();
    out.push({
      name: `acquire, ${store}`,
      run: () => {
        for (let i = 0; i < OPS; i++) {
          using _lease = picks.acquire();
        }
      },
      samples: [],
    });
    const dials = pool();
    out.push({
      name: `connect, ${store}`,
      run: async () => {
        for (let i = 0; i < OPS; i++) {
          using _lease = (await dials.connect({ dial, timeout: 3_000 })).lease;
        }
      },
      samples: [],
    });
  }
  return out;
}

/** Nanoseconds per operation, over OPS of them. */
async function sample(variant: Variant): Promise<number> {
  const start = performance.now();
  await variant.run();
  return ((performance.now() - start) * 1e6) / OPS;
}

const median = (xs: number[]): number => {
  const sorted = xs.toSorted((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

const current = variants({ LeastConnPool, MemoryUpstreamCounts, SharedState });
const baseline = values.baseline === undefined ? [] : variants(await loadLib(values.baseline));
const all = [...current, ...baseline];

// Warm up every variant (JIT), then interleave: each round runs every variant once,
// starting from a different one, so drift on a shared machine hits all alike.
for (const variant of all) await sample(variant);
for (let round = 0; round < ROUNDS; round++) {
  for (let k = 0; k < all.length; k++) {
    const variant = all[(round + k) % all.length]!;
    variant.samples.push(await sample(variant));
  }
}

console.log(
  `LeastConnPool, ns per acquire + release or connect + release: median and best of ${ROUNDS} samples of ${OPS}, Deno ${Deno.version.deno}`,
);
const figures = (samples: number[]): string =>
  `${median(samples).toFixed(0).padStart(5)} (best ${Math.min(...samples).toFixed(0).padStart(4)})`;
const change = (after: number, before: number): string =>
  `${after >= before ? "+" : ""}${((after / before - 1) * 100).toFixed(1)}%`.padStart(7);
for (const [i, variant] of current.entries()) {
  const line = `${variant.name.padEnd(24)} ${figures(variant.samples)}`;
  const before = baseline[i];
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
