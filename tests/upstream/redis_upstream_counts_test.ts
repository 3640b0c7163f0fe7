import assert from "node:assert/strict";
import { RedisUpstreamCounts } from "../../lib/redis/upstream_counts.ts";
import { HAVE_REDIS_SERVER, RedisServer } from "../_redis.ts";
import { countsCases } from "./counts_cases.ts";

countsCases({
  name: "RedisUpstreamCounts",
  ignore: !HAVE_REDIS_SERVER,
  create: async () => {
    const server = await RedisServer.start();
    const counts = new RedisUpstreamCounts({ url: server.url });
    const close = async () => {
      await counts.close();
      await server[Symbol.asyncDispose]();
    };
    try {
      await counts.connect();
      assert.equal(counts.mode, "shared");
    } catch (error) {
      await close();
      throw error;
    }
    return { counts, [Symbol.asyncDispose]: close };
  },
});
