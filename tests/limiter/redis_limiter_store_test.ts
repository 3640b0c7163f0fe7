import assert from "node:assert/strict";
import { singleScope } from "../../lib/limiter/store.ts";
import { RedisLimiterStore } from "../../lib/redis/limiter_store.ts";
import { HAVE_REDIS_SERVER, LIMITER_CLIENTS, RedisProbe, RedisServer } from "../_redis.ts";
import { storeCases } from "./store_cases.ts";

storeCases({
  name: "RedisLimiterStore",
  ignore: !HAVE_REDIS_SERVER,
  create: async () => {
    const server = await RedisServer.start();
    // Buckets on the limiter's FakeClock, so that every answer is exact.
    const store = new RedisLimiterStore({ url: server.url, rateClock: "caller" });
    let probe: RedisProbe | undefined;
    const close = async () => {
      await store.close();
      await probe?.[Symbol.asyncDispose]();
      await server[Symbol.asyncDispose]();
    };
    try {
      await store.connect();
      assert.equal(store.mode, "shared");
      probe = await RedisProbe.open(server);
      // Have Redis cache the scripts, so that none is sent twice (EVALSHA, then EVAL):
      // calls then run in Redis in the order they are made.
      assert.deepEqual(await store.tryAcquire(singleScope("~warm-up", { concurrent: 1 }), 0), {
        admitted: true,
      });
      await store.release(["~warm-up"], 0);
    } catch (error) {
      await close();
      throw error;
    }
    return {
      store,
      retained: async () => {
        // The leases' releases are on their way on the store's connection: a call
        // after them returns once Redis has run them.
        await store.tryAcquire(singleScope("~barrier", { concurrent: Infinity }), 0);
        await store.release(["~barrier"], 0);
        return (await probe!.run(LIMITER_CLIENTS, "mtlb:") as string[]).length;
      },
      [Symbol.asyncDispose]: close,
    };
  },
  // Bucket keys expire on Redis' own clock (tests/redis_store_test.ts), not the limiter's.
  forgets: { released: true, refilled: false },
  modelSteps: 2000,
});
