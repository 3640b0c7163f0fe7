/**
 * The client policy store on a real redis-server: versions, announcements, a
 * restart, and Redis ACL users that keep instances read-only.
 */
import assert from "node:assert/strict";
import { ClientLimiter } from "../lib/limiter/client_limiter.ts";
import {
  ClientPolicyPermissionError,
  RedisClientPolicyStore,
} from "../lib/redis/client_policy_store.ts";
import { RedisLimiterStore } from "../lib/redis/limiter_store.ts";
import { RedisUpstreamCounts } from "../lib/redis/upstream_counts.ts";
import { INSTANCE_ACL, PUSH_ACL, RedisProbe, RedisServer, redisTest } from "./_redis.ts";

const A = '[clients.alice]\ngroups = ["echo"]\n\n[clients.alice.match]\ncn = "alice"\n';
const B = A + '\n[clients.bob]\ngroups = ["echo"]\n\n[clients.bob.match]\ncn = "bob"\n';

/** A promise of the next value `listen` passes to the callback it is given. */
function next<T>(): { promise: Promise<T>; callback: (value: T) => void } {
  const { promise, resolve } = Promise.withResolvers<T>();
  return { promise, callback: resolve };
}

/** `redis://user:password@127.0.0.1:port`. */
function asUser(server: RedisServer, user: string, password: string): string {
  return server.url.replace("redis://", `redis://${user}:${password}@`);
}

redisTest(
  "RedisClientPolicyStore numbers pushes, keeps the document whole and announces each version",
  async () => {
    await using redis = await RedisServer.start();
    await using store = new RedisClientPolicyStore({ url: redis.url });
    await using instance = new RedisClientPolicyStore({ url: redis.url });
    assert.ok(await store.connect());
    assert.ok(await instance.connect());
    assert.equal(await instance.read(), undefined);
    assert.equal(await instance.head(), undefined);
    const announced: number[] = [];
    const second = next<void>();
    assert.ok(
      await instance.subscribe((version) => {
        announced.push(version);
        if (version === 2) second.callback();
      }),
    );

    const first = await store.push(A);
    assert.equal(first.version, 1);
    assert.equal(first.unchanged, false);
    assert.equal(first.announced, true);
    const again = await store.push(A);
    assert.equal(again.version, 1, "the same document is no new version");
    assert.equal(again.unchanged, true);
    const pushed = await store.push(B);
    assert.equal(pushed.version, 2);
    await second.promise;
    assert.deepEqual(announced, [1, 2]);

    const read = await instance.read();
    assert.equal(read?.version, 2);
    assert.equal(read?.document, B);
    assert.equal(read?.sha256, pushed.sha256);
    assert.ok(Math.abs(Date.parse(read!.pushedAt) - Date.now()) < 60_000, read?.pushedAt);
    assert.deepEqual(await instance.head(), { version: 2, sha256: pushed.sha256 });
  },
);

redisTest("RedisClientPolicyStore subscribes again after a Redis restart and says so", async () => {
  await using redis = await RedisServer.start();
  let subscribed = next<void>();
  await using instance = new RedisClientPolicyStore({
    url: redis.url,
    onSubscribed: () => subscribed.callback(),
  });
  await instance.connect();
  const versions: number[] = [];
  let announced = next<void>();
  assert.ok(
    await instance.subscribe((v) => {
      versions.push(v);
      announced.callback();
    }),
  );
  await subscribed.promise;
  subscribed = next<void>();
  await redis.stop();
  await redis.restart();
  await subscribed.promise; // the follower checks the store here: versions were missed
  await using store = new RedisClientPolicyStore({ url: redis.url });
  await store.connect();
  announced = next<void>();
  await store.push(A);
  await announced.promise;
  assert.deepEqual(versions, [1]);
});

redisTest(
  "With Redis ACL users, instances read and follow the policy but cannot push it; the push user can",
  async () => {
    await using redis = await RedisServer.start();
    await using admin = await RedisProbe.open(redis);
    assert.equal(await admin.send("ACL", "SETUSER", ...INSTANCE_ACL), "OK");
    assert.equal(await admin.send("ACL", "SETUSER", ...PUSH_ACL), "OK");
    const instanceUrl = asUser(redis, "mtlb", "instance-secret");
    const pushUrl = asUser(redis, "mtlb-push", "push-secret");

    await using instance = new RedisClientPolicyStore({ url: instanceUrl });
    assert.ok(await instance.connect());
    await assert.rejects(
      instance.push(A),
      (e: unknown) =>
        e instanceof ClientPolicyPermissionError &&
        /^the Redis user may not write mtlb:policy:clients \(NOPERM.*\); push as a user allowed to write it$/
          .test(e.message),
    );
    assert.equal(await instance.read(), undefined, "the refused push wrote nothing");
    const announced = next<number>();
    assert.ok(await instance.subscribe(announced.callback), "the instance user may subscribe");

    await using pusher = new RedisClientPolicyStore({ url: pushUrl });
    assert.ok(await pusher.connect());
    const pushed = await pusher.push(B);
    assert.equal(pushed.announced, true);
    assert.equal(await announced.promise, 1);
    assert.equal((await instance.read())?.document, B);
    assert.equal((await instance.head())?.version, 1);

    // The push user reaches nothing else.
    const denied = await admin.send(
      "ACL",
      "DRYRUN",
      "mtlb-push",
      "HSET",
      "mtlb:limiter:x",
      "a",
      "1",
    );
    assert.match(String(denied), /no permissions/);

    // The instance user runs the shared limiter and upstream counts.
    await using limiterStore = new RedisLimiterStore({ url: instanceUrl, leaseTtl: 3000 });
    await limiterStore.connect();
    const limiter = new ClientLimiter({ store: limiterStore, limits: { concurrent: 2 } });
    {
      using _a = await limiter.acquire("alice");
      using _b = await limiter.acquire("alice");
      await assert.rejects(limiter.acquire("alice"), { name: "ClientLimitError" });
    }
    assert.equal(limiterStore.mode, "shared");
    assert.equal(limiterStore.counters.errors, 0);
    await using counts = new RedisUpstreamCounts({ url: instanceUrl });
    await counts.connect();
    counts.add("127.0.0.1:7001", 1);
    assert.equal(counts.mode, "shared");
    assert.equal(counts.counters.errors, 0);
  },
);
