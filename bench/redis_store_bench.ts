/**
 * Acquire+release rate of the limiter stores, side by side in one run: the in-memory
 * store and the Redis store (one Lua script per acquire and per release).
 *
 * ```sh
 * deno run --allow-run=redis-server --allow-net=127.0.0.1 --allow-read --allow-write \
 *   --allow-env bench/redis_store_bench.ts [--url redis://127.0.0.1:6379] [--ops 20000] [--concurrency 50]
 * ```
 *
 * Without `--url` it starts a throwaway `redis-server` on a free port of 127.0.0.1.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { MemoryLimiterStore } from "../lib/limiter/memory_store.ts";
import { type ClientLimits, type LimiterStore, singleScope } from "../lib/limiter/store.ts";
import { RedisLimiterStore } from "../lib/redis/limiter_store.ts";
import { RedisServer } from "../tests/_redis.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    url: { type: "string" },
    ops: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "50" },
  },
});
const OPS = Number(values.ops);
const CONCURRENCY = Number(values.concurrency);
const CLIENTS = 10;
/** Never refuses: the benchmark measures the cost of the check, not refusals. */
const LIMITS: ClientLimits = { concurrent: 1_000, rate: { count: 1_000_000, per: 1_000 } };

interface Result {
  opsPerSecond: number;
  p50: number;
  p99: number;
}

/** Runs OPS acquire+release pairs from CONCURRENCY workers; each pair awaits both. */
async function measure(store: LimiterStore): Promise<Result> {
  const latencies = new Float64Array(OPS);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < OPS) {
      const i = next++;
      const client = `client-${i % CLIENTS}`;
      const start = performance.now();
      const admission = await store.tryAcquire(singleScope(client, LIMITS), start);
      if (!admission.admitted) throw new Error(`Unexpected refusal: ${JSON.stringify(admission)}`);
      await store.release([client], performance.now());
      latencies[i] = performance.now() - start;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - start) / 1000;
  latencies.sort();
  return {
    opsPerSecond: OPS / seconds,
    p50: latencies[Math.floor(OPS * 0.5)]!,
    p99: latencies[Math.floor(OPS * 0.99)]!,
  };
}

const format = (r: Result): string =>
  `${Math.round(r.opsPerSecond).toLocaleString("en-US").padStart(11)} ops/s  (p50 ${
    r.p50.toFixed(3)
  } ms, p99 ${r.p99.toFixed(3)} ms per acquire+release)`;

const server = values.url === undefined ? await RedisServer.start() : undefined;
const url = values.url ?? server!.url;
const redis = new RedisLimiterStore({ url });
try {
  await redis.connect();
  if (redis.mode !== "shared") throw new Error(`Cannot reach Redis at ${url}`);
  const memory = new MemoryLimiterStore();
  // Warm up both (JIT, script cache), then measure.
  await measure(memory);
  await measure(redis);
  const m = await measure(memory);
  const r = await measure(redis);
  console.log(
    `${OPS} acquire+release pairs, ${CONCURRENCY} concurrent, ${CLIENTS} clients, Deno ${Deno.version.deno}`,
  );
  console.log(`memory store: ${format(m)}`);
  console.log(`redis store:  ${format(r)}`);
  console.log(`memory / redis: ${(m.opsPerSecond / r.opsPerSecond).toFixed(1)}x`);
  const { errors, fallbacks } = redis.counters;
  if (errors > 0 || fallbacks > 0) {
    throw new Error(`The Redis store fell back to local limits: ${errors} errors`);
  }
} finally {
  await redis.close();
  await server?.[Symbol.asyncDispose]();
}
