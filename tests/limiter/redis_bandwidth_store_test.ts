import assert from "node:assert/strict";
import { BandwidthLimiter } from "../../lib/limiter/bandwidth_limiter.ts";
import { RedisBandwidthStore } from "../../lib/redis/bandwidth_store.ts";
import { RedisServer, redisTest } from "../_redis.ts";

const RATE = 1_000_000; // bytes per second
const READ = 16_384;

/** Draws `bytes` in reads of READ without waiting, and returns the longest wait answered. */
async function draw(limiter: BandwidthLimiter, bytes: number): Promise<number> {
  const { fromClient } = limiter.throttles("app", RATE);
  let longest = 0;
  for (let drawn = 0; drawn < bytes; drawn += READ) {
    longest = Math.max(longest, await fromClient.take(READ));
  }
  return longest;
}

redisTest(
  "RedisBandwidthStore shares one byte bucket per client between instances, by leases",
  async () => {
    await using server = await RedisServer.start();
    await using one = new RedisBandwidthStore({ url: server.url });
    await using two = new RedisBandwidthStore({ url: server.url });
    assert.ok(await one.connect());
    assert.ok(await two.connect());
    const a = new BandwidthLimiter({ store: one });
    const b = new BandwidthLimiter({ store: two });
    // 1 MB read at once over two instances: the last reader must wait about 1 s in all,
    // less the 50 ms burst, give or take one 50 ms lease per instance. Alone, each
    // instance would have answered half of that.
    const [waitA, waitB] = await Promise.all([draw(a, 500_000), draw(b, 500_000)]);
    const longest = Math.max(waitA, waitB);
    assert.ok(longest >= 800 && longest <= 1100, `longest wait ${longest} ms`);
    assert.ok(one.counters.leases >= 4 && two.counters.leases >= 4, "both took leases");
    assert.equal(one.counters.fallbacks + two.counters.fallbacks, 0);
    // The other direction has a bucket of its own.
    assert.equal(await a.throttles("app", RATE).fromUpstream.take(READ), 0);
  },
);

redisTest("RedisBandwidthStore throttles locally while Redis is unavailable", async () => {
  const server = await RedisServer.start();
  const url = server.url;
  await server[Symbol.asyncDispose]();
  await using store = new RedisBandwidthStore({ url, connectTimeout: 200, timeout: 100 });
  assert.equal(await store.connect(), false);
  const longest = await draw(new BandwidthLimiter({ store }), 500_000);
  assert.ok(longest >= 350 && longest <= 600, `longest wait ${longest} ms`);
  assert.equal(store.counters.leases, 0);
  assert.ok(store.counters.fallbacks > 0);
});
