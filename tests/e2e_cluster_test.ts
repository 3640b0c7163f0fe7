/**
 * Two mtlb instances sharing one real redis-server through `[cluster] store`.
 * Skipped, with a message, when redis-server is not installed.
 */
import assert from "node:assert/strict";
import { connectCluster } from "../lib/redis/cluster.ts";
import type { DenyRecord } from "../lib/server/records.ts";
import { connectClient, nextEvent, readBytes, startBalancer, TestUpstream } from "./_harness.ts";
import { RedisServer, redisTest } from "./_redis.ts";

function config(upstreams: string[], store: string, extra = ""): string {
  return `[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ${JSON.stringify(upstreams)}

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]

[clients.bob]
match = { cn = "bob" }
groups = ["echo"]

[cluster]
store = "${store}"
lease_ttl = "2s"
${extra}
`;
}

/** Two balancers on one config, each with its own connection to the shared store. */
async function fleet(text: string) {
  const first = await startBalancer(text, {});
  const cfg = first.balancer.config.cluster!;
  const [a, b] = await Promise.all([connectCluster(cfg), connectCluster(cfg)]);
  // Restart both on the stores (startBalancer built the first without them).
  await first[Symbol.asyncDispose]();
  const one = await startBalancer(text, {
    limiterStore: a.limiterStore,
    upstreamCounts: a.upstreamCounts,
  });
  const two = await startBalancer(text, {
    limiterStore: b.limiterStore,
    upstreamCounts: b.upstreamCounts,
  });
  return {
    one,
    two,
    async [Symbol.asyncDispose]() {
      await one[Symbol.asyncDispose]();
      await two[Symbol.asyncDispose]();
      await a.close();
      await b.close();
    },
  };
}

redisTest("Two instances cap a client at exactly 10 across the fleet", async () => {
  await using redis = await RedisServer.start();
  await using upstream = await TestUpstream.start();
  await using f = await fleet(config([upstream.address], redis.url));
  const open = [];
  for (let i = 0; i < 10; i++) {
    const lb = i % 2 === 0 ? f.one : f.two;
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("x");
    await readBytes(socket, 1);
    open.push(socket);
  }
  for (const lb of [f.one, f.two]) {
    const eleventh = await connectClient(lb.port(), lb.pki.alice);
    const denied = await nextEvent<DenyRecord>(lb.balancer, "deny");
    assert.equal(denied.reason, "limit_concurrency");
    eleventh.destroy();
  }
  // Another client is unaffected.
  const bob = await connectClient(f.two.port(), f.two.pki.bob);
  bob.write("y");
  assert.equal((await readBytes(bob, 1))[0], "y".charCodeAt(0));
  bob.destroy();
  for (const socket of open) socket.destroy();
});

redisTest("Two instances share least-connection counts through Redis", async () => {
  await using redis = await RedisServer.start();
  await using a = await TestUpstream.start();
  await using b = await TestUpstream.start();
  await using f = await fleet(config([a.address, b.address], redis.url));
  // Four connections through instance one: two on each upstream.
  const open = [];
  for (let i = 0; i < 4; i++) {
    const socket = await connectClient(f.one.port(), f.one.pki.alice);
    socket.write("x");
    await readBytes(socket, 1);
    open.push(socket);
  }
  // Instance two sees them once the counts have been exchanged (at most ~0.85 s).
  const pool = f.two.balancer.pool("echo")!;
  const deadline = Date.now() + 5000;
  while (pool.active(a.address) + pool.active(b.address) < 4) {
    assert.ok(Date.now() < deadline, "instance two never saw instance one's connections");
    await new Promise((resolve) => setTimeout(resolve, 50)); // waiting for the store's own poll
  }
  assert.equal(pool.active(a.address), 2);
  assert.equal(pool.active(b.address), 2);
  for (const socket of open) socket.destroy();
});

redisTest(
  "An instance refuses with limit_store_unavailable when Redis is down and the policy is closed",
  async () => {
    await using redis = await RedisServer.start();
    await using upstream = await TestUpstream.start();
    await using f = await fleet(
      config([upstream.address], redis.url, `on_store_error = "closed"\ntimeout = "200ms"`),
    );
    const ok = await connectClient(f.one.port(), f.one.pki.alice);
    ok.write("x");
    await readBytes(ok, 1);
    ok.destroy();
    await redis.stop();
    const refused = await connectClient(f.one.port(), f.one.pki.alice);
    const denied = await nextEvent<DenyRecord>(f.one.balancer, "deny");
    assert.equal(denied.reason, "limit_store_unavailable");
    refused.destroy();
  },
);

redisTest(
  "An instance falls back to local limits when Redis is down and the policy is local",
  async () => {
    await using redis = await RedisServer.start();
    await using upstream = await TestUpstream.start();
    await using f = await fleet(config([upstream.address], redis.url, `timeout = "200ms"`));
    await redis.stop();
    const socket = await connectClient(f.one.port(), f.one.pki.alice);
    socket.write("z");
    assert.equal((await readBytes(socket, 1))[0], "z".charCodeAt(0));
    socket.destroy();
  },
);
