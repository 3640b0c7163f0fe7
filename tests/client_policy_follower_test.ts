import assert from "node:assert/strict";
import { FakeClock } from "../lib/core/clock.ts";
import {
  ClientPolicyFollower,
  type ClientPolicySource,
} from "../lib/redis/client_policy_follower.ts";
import type { StoredClientPolicy } from "../lib/redis/client_policy_store.ts";

function policy(version: number, document = `# v${version}\n`): StoredClientPolicy {
  return {
    version,
    document,
    sha256: `sha-${document}`,
    pushedAt: "2026-01-01T00:00:00.000Z",
  };
}

/** A store in memory: what it holds, whether it answers, and its subscriber. */
class MemorySource implements ClientPolicySource {
  stored: StoredClientPolicy | undefined;
  down = false;
  reads = 0;
  heads = 0;
  listener: ((version: number) => void) | undefined;

  read(): Promise<StoredClientPolicy | undefined> {
    this.reads++;
    return this.down
      ? Promise.reject(new Error("connection refused"))
      : Promise.resolve(this.stored);
  }

  head(): Promise<{ version: number; sha256: string } | undefined> {
    this.heads++;
    if (this.down) return Promise.reject(new Error("connection refused"));
    return Promise.resolve(
      this.stored && { version: this.stored.version, sha256: this.stored.sha256 },
    );
  }

  subscribe(listener: (version: number) => void): Promise<boolean> {
    this.listener = listener;
    return Promise.resolve(true);
  }

  /** Stores and announces a version, as `clients push` does. */
  push(p: StoredClientPolicy): void {
    this.stored = p;
    this.listener?.(p.version);
  }
}

/** Lets pending promise callbacks run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("ClientPolicyFollower applies an announced version at once, and each version once", async () => {
  const source = new MemorySource();
  source.stored = policy(1);
  const applied: number[] = [];
  const clock = new FakeClock();
  await using follower = new ClientPolicyFollower({
    store: source,
    initial: policy(1),
    clock,
    apply: (p) => {
      applied.push(p.version);
      return Promise.resolve();
    },
  });
  await follower.start();
  assert.deepEqual(applied, [], "the version in force is not applied again");
  source.push(policy(2));
  await follower.check(); // the check the announcement started
  assert.deepEqual(applied, [2]);
  assert.equal(follower.state.version, 2);
  assert.equal(follower.state.source, "store");
  clock.advance(5000);
  await settle();
  assert.deepEqual(applied, [2], "the periodic check finds nothing new");
});

Deno.test("ClientPolicyFollower finds a version whose announcement was missed within one check interval", async () => {
  const source = new MemorySource();
  const clock = new FakeClock();
  const applied: number[] = [];
  await using follower = new ClientPolicyFollower({
    store: source,
    clock,
    checkInterval: 5000,
    apply: (p) => {
      applied.push(p.version);
      return Promise.resolve();
    },
  });
  await follower.start();
  assert.equal(follower.state.source, "file", "nothing stored: the file's clients stay");
  source.stored = policy(4); // written, never announced
  clock.advance(4999);
  await settle();
  assert.deepEqual(applied, []);
  clock.advance(1);
  await settle();
  await follower.check();
  assert.deepEqual(applied, [4]);
  const heads = source.heads;
  clock.advance(5000);
  await settle();
  assert.equal(source.heads, heads + 1, "the periodic check reads the version alone");
});

Deno.test("ClientPolicyFollower keeps the version in force while the store is down, counting each failure", async () => {
  const source = new MemorySource();
  source.stored = policy(3);
  const clock = new FakeClock();
  await using follower = new ClientPolicyFollower({
    store: source,
    clock,
    initial: policy(3),
    apply: () => Promise.reject(new Error("not expected")),
  });
  await follower.start();
  source.down = true;
  clock.advance(5000);
  await settle();
  clock.advance(5000);
  await settle();
  const down = follower.state;
  assert.equal(down.version, 3);
  assert.equal(down.storeReachable, false);
  assert.equal(down.storeErrors, 2);
  assert.match(down.lastError ?? "", /store: connection refused/);
  // Back, but empty (a Redis restart without persistence): still version 3.
  source.down = false;
  source.stored = undefined;
  clock.advance(5000);
  await settle();
  await follower.check();
  assert.equal(follower.state.version, 3);
  assert.equal(follower.state.storeReachable, true);
  assert.equal(follower.state.lastError, undefined);
});

Deno.test("ClientPolicyFollower keeps the version in force when it cannot apply a new one, and tries it again on recheck()", async () => {
  const source = new MemorySource();
  let allowed = false;
  const applied: number[] = [];
  await using follower = new ClientPolicyFollower({
    store: source,
    clock: new FakeClock(),
    initial: policy(1),
    apply: (p) => {
      if (!allowed) return Promise.reject(new Error('group "web" is not defined'));
      applied.push(p.version);
      return Promise.resolve();
    },
  });
  await follower.start();
  source.push(policy(2));
  await follower.check();
  assert.equal(follower.state.version, 1);
  assert.equal(follower.state.storeVersion, 2);
  assert.equal(follower.state.refused, 1);
  assert.match(follower.state.lastError ?? "", /version 2 refused: group "web"/);
  await follower.check();
  assert.equal(follower.state.refused, 1, "a refused version is not tried at every check");
  allowed = true; // the instance's file now defines the group
  await follower.recheck();
  assert.deepEqual(applied, [2]);
  assert.equal(follower.state.version, 2);
  assert.equal(follower.state.lastError, undefined);
});

Deno.test("ClientPolicyFollower runs one check at a time and the latest version wins", async () => {
  const source = new MemorySource();
  const applied: number[] = [];
  let release: (() => void) | undefined;
  await using follower = new ClientPolicyFollower({
    store: source,
    clock: new FakeClock(),
    apply: (p) => {
      applied.push(p.version);
      return p.version === 1 ? new Promise((resolve) => release = resolve) : Promise.resolve();
    },
  });
  await follower.start();
  source.push(policy(1));
  await settle();
  source.push(policy(2));
  source.push(policy(3));
  await settle();
  assert.deepEqual(applied, [1], "no second apply while the first runs");
  release!();
  await follower.check();
  assert.deepEqual(applied, [1, 3]);
  assert.equal(follower.state.version, 3);
});
