/**
 * The cases every {@linkcode LimiterStore} must pass, registered for one store by
 * {@linkcode storeCases} from that store's test file, so every store is held to the
 * same behaviour.
 *
 * Cases drive the store through {@linkcode ClientLimiter} with a {@linkcode FakeClock},
 * so every answer is exact: the stores take the bucket time from the `now` they are
 * given (the Redis store with `rateClock: "caller"`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import {
  type ClientAcquireOptions,
  clientInGroupScopeKey,
  type ClientLease,
  ClientLimiter,
  type ClientLimiterOptions,
  ClientLimitError,
  groupScopeKey,
} from "../../lib/limiter/client_limiter.ts";
import { type ClientLimits, type LimiterStore, singleScope } from "../../lib/limiter/store.ts";

/** Clients of the random interleavings: one per profile. */
const MODEL_CLIENTS = ["client-0", "client-1", "client-2", "client-3", "client-4"] as const;

/** Every client name the cases use: a store with fixed slots assigns these up front. */
export const CASE_CLIENTS: readonly string[] = [
  "app",
  "other",
  "a",
  "b",
  "long",
  "short",
  "nobody",
  ...MODEL_CLIENTS,
  ...["cache", "web"].flatMap((group) => [
    groupScopeKey(group),
    clientInGroupScopeKey("a", group),
    clientInGroupScopeKey("b", group),
  ]),
];

/** One store under test, fresh for one case or step. */
export interface StoreFixture extends AsyncDisposable {
  /** The store: no client has state yet. */
  readonly store: LimiterStore;
  /**
   * How many clients the store holds state for (an open slot, or a bucket not yet
   * full), counting every call made so far, releases included.
   *
   * @default {undefined} the store cannot tell (it does not forget clients)
   */
  retained?(): Promise<number>;
}

/** A store implementation, as the shared cases see it. */
export interface StoreUnderTest {
  /** The store's name, which starts every test name. */
  name: string;
  /** Creates a fresh store that knows every client of {@linkcode CASE_CLIENTS}. */
  create(): Promise<StoreFixture>;
  /**
   * Which idle clients the store forgets at the release of their last open slot, so
   * its memory stays bounded: `released`, a client that never had a rate limit or
   * whose bucket is full; `refilled`, also one whose bucket became full on the
   * limiter's clock while it held a slot. A store with fixed slots forgets nothing.
   */
  forgets: { released: boolean; refilled: boolean };
  /**
   * Steps of each random interleaving checked against the reference model.
   *
   * @default {5000}
   */
  modelSteps?: number;
  /**
   * Ignores every case (the store needs a program that is not installed).
   *
   * @default {false}
   */
  ignore?: boolean;
}

/**
 * Acquires and expects a refusal by a limit.
 *
 * @param limiter The limiter.
 * @param client The client.
 * @param limits Per-call limits.
 * @returns The refusal, for further checks.
 */
export async function refused(
  limiter: ClientLimiter,
  client: string,
  limits?: ClientLimits | ClientAcquireOptions,
): Promise<ClientLimitError> {
  try {
    using _lease = await limiter.acquire(client, limits);
  } catch (error) {
    assert.ok(error instanceof ClientLimitError, `expected ClientLimitError, got ${error}`);
    return error;
  }
  assert.fail(`expected ${client} to be refused`);
}

/** Acquires and releases at once: one token spent, no slot kept. */
async function spend(
  limiter: ClientLimiter,
  client: string,
  limits?: ClientLimits | ClientAcquireOptions,
): Promise<void> {
  (await limiter.acquire(client, limits))[Symbol.dispose]();
}

/**
 * Waits until the limiter holds `count` leases of "app" (admitted, waiting or not): a
 * store that answers with promises answers after a round trip.
 */
async function eventuallyActive(limiter: ClientLimiter, count: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (limiter.active("app") < count) {
    assert.ok(Date.now() < deadline, `expected ${count} leases of app`);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/** Releases every lease and empties the list. */
function releaseAll(leases: ClientLease[]): void {
  for (const lease of leases.splice(0)) lease[Symbol.dispose]();
}

/** A deterministic PRNG (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A reference token bucket in exact integer arithmetic: the level is kept in units of
 * 1 / per tokens, so with whole-millisecond times no rounding ever happens.
 */
class ModelBucket {
  #level: number;
  #at: number;
  constructor(readonly count: number, readonly per: number, now: number) {
    this.#level = count * per;
    this.#at = now;
  }
  #refill(now: number): void {
    this.#level = Math.min(this.count * this.per, this.#level + (now - this.#at) * this.count);
    this.#at = now;
  }
  /** Milliseconds until a token is available; 0 when one is. */
  wait(now: number): number {
    this.#refill(now);
    return this.#level >= this.per ? 0 : Math.ceil((this.per - this.#level) / this.count);
  }
  take(): void {
    this.#level -= this.per;
  }
}

/**
 * Registers the shared cases for one store: one `Deno.test` per behaviour, each on
 * fresh stores.
 *
 * @param target The store implementation.
 */
export function storeCases(target: StoreUnderTest): void {
  /** A test on a fresh store, making limiters on it with a fake clock. */
  const test = (
    behaviour: string,
    fn: (
      context: {
        store: LimiterStore;
        newLimiter: (options?: ClientLimiterOptions) => ClientLimiter;
      },
      t: Deno.TestContext,
    ) => Promise<void>,
  ): void => {
    Deno.test({
      name: `${target.name} ${behaviour}`,
      ignore: target.ignore ?? false,
      fn: async (t) => {
        await using fixture = await target.create();
        const clock = new FakeClock(1_000_000);
        const newLimiter = (options: ClientLimiterOptions = {}) =>
          new ClientLimiter({ store: fixture.store, clock, ...options });
        await fn({ store: fixture.store, newLimiter }, t);
      },
    });
  };
  /** A test whose steps each have a store of their own. */
  const table = (behaviour: string, fn: (t: Deno.TestContext) => Promise<void>): void => {
    Deno.test({ name: `${target.name} ${behaviour}`, ignore: target.ignore ?? false, fn });
  };
  /** A step on a store of its own, for tables of cases. */
  const step = async (
    t: Deno.TestContext,
    name: string,
    fn: (fixture: StoreFixture) => Promise<void>,
  ): Promise<void> => {
    await t.step(name, async () => {
      await using fixture = await target.create();
      await fn(fixture);
    });
  };

  test("caps each client's concurrent connections", async ({ newLimiter }, t) => {
    const limiter = newLimiter(); // 10 by default
    const leases: ClientLease[] = [];

    await t.step("the 11th is refused by default, with the cap", async () => {
      for (let i = 0; i < 10; i++) leases.push(await limiter.acquire("app"));
      const error = await refused(limiter, "app");
      assert.equal(error.kind, "concurrency");
      assert.equal(error.limit, 10);
      assert.equal(error.retryAfterMs, undefined);
      assert.equal(limiter.active("app"), 10);
    });

    await t.step("another client is not affected", async () => {
      using _other = await limiter.acquire("other");
      assert.equal(limiter.active("other"), 1);
    });

    await t.step("a released slot is taken again, once", async () => {
      leases.shift()![Symbol.dispose]();
      leases.push(await limiter.acquire("app"));
      await refused(limiter, "app");
      releaseAll(leases);
      assert.equal(limiter.active("app"), 0);
    });

    await t.step("Infinity disables the cap", async () => {
      for (let i = 0; i < 1000; i++) {
        leases.push(await limiter.acquire("a", { concurrent: Infinity }));
      }
      assert.equal(limiter.active("a"), 1000);
      releaseAll(leases);
    });
  });

  table("limits the rate with a token bucket", async (t) => {
    const rate = { count: 100, per: 60_000 };
    const limits = { concurrent: Infinity, rate };
    const fresh = (fixture: StoreFixture) => {
      const clock = new FakeClock(1_000_000);
      const limiter = new ClientLimiter({ store: fixture.store, clock, limits });
      return { clock, limiter };
    };

    await step(t, "a full bucket allows a burst of count, then refuses", async (fixture) => {
      const { limiter } = fresh(fixture);
      for (let i = 0; i < 100; i++) await spend(limiter, "app");
      const error = await refused(limiter, "app");
      assert.equal(error.kind, "rate");
      assert.equal(error.limit, 100);
      assert.equal(error.windowMs, 60_000);
      assert.equal(error.retryAfterMs, 600);
    });

    await step(t, "retryAfterMs counts down to the next token, then granted", async (fixture) => {
      const { clock, limiter } = fresh(fixture);
      for (let i = 0; i < 100; i++) await spend(limiter, "app");
      clock.advance(300);
      assert.equal((await refused(limiter, "app")).retryAfterMs, 300);
      clock.advance(299);
      assert.equal((await refused(limiter, "app")).retryAfterMs, 1);
      clock.advance(1);
      await spend(limiter, "app");
      assert.equal((await refused(limiter, "app")).retryAfterMs, 600);
    });

    await step(t, "refill is continuous and capped at count", async (fixture) => {
      const { clock, limiter } = fresh(fixture);
      for (let i = 0; i < 100; i++) await spend(limiter, "app");
      clock.advance(6_000); // 10 tokens
      for (let i = 0; i < 10; i++) await spend(limiter, "app");
      assert.equal((await refused(limiter, "app")).retryAfterMs, 600);
      clock.advance(10 * 60_000); // far more than a window: the bucket holds count, not more
      for (let i = 0; i < 100; i++) await spend(limiter, "app");
      assert.equal((await refused(limiter, "app")).retryAfterMs, 600);
    });

    await step(t, "clients have separate buckets", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const one = { concurrent: Infinity, rate: { count: 1, per: 1000 } };
      const limiter = new ClientLimiter({ store: fixture.store, clock, limits: one });
      await spend(limiter, "a");
      await refused(limiter, "a");
      await spend(limiter, "b");
    });
  });

  table("reports retryAfterMs exactly for uneven intervals", async (t) => {
    const cases = [
      { count: 3, per: 1000, elapsed: 0, retryAfterMs: 334 }, // a token every 333.3 ms
      { count: 3, per: 1000, elapsed: 333, retryAfterMs: 1 },
      { count: 7, per: 60_000, elapsed: 0, retryAfterMs: 8572 }, // 8571.43 ms
      { count: 7, per: 60_000, elapsed: 8571, retryAfterMs: 1 },
      { count: 1, per: 1500, elapsed: 1000, retryAfterMs: 500 },
      { count: 10, per: 1, elapsed: 0, retryAfterMs: 1 }, // 0.1 ms: rounds up to 1
    ];
    for (const { count, per, elapsed, retryAfterMs } of cases) {
      await step(t, `${count} per ${per}ms, ${elapsed}ms after a burst`, async (fixture) => {
        const clock = new FakeClock(1_000_000);
        const limits = { concurrent: Infinity, rate: { count, per } };
        const limiter = new ClientLimiter({ store: fixture.store, limits, clock });
        for (let i = 0; i < count; i++) await spend(limiter, "app");
        clock.advance(elapsed);
        assert.equal((await refused(limiter, "app")).retryAfterMs, retryAfterMs);
        clock.advance(retryAfterMs);
        await spend(limiter, "app");
      });
    }
  });

  table("takes nothing on a refusal", async (t) => {
    await step(t, "a concurrency refusal spends no rate token", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limits = { concurrent: 1, rate: { count: 2, per: 1000 } };
      const limiter = new ClientLimiter({ store: fixture.store, limits, clock });
      const first = await limiter.acquire("app");
      for (let i = 0; i < 5; i++) assert.equal((await refused(limiter, "app")).kind, "concurrency");
      first[Symbol.dispose]();
      using _second = await limiter.acquire("app"); // the second token is still there
      assert.equal(limiter.active("app"), 1);
    });

    await step(t, "a rate refusal takes no slot", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limits = { concurrent: 2, rate: { count: 1, per: 1000 } };
      const limiter = new ClientLimiter({ store: fixture.store, limits, clock });
      using _first = await limiter.acquire("app");
      for (let i = 0; i < 5; i++) assert.equal((await refused(limiter, "app")).kind, "rate");
      clock.advance(1000);
      using _second = await limiter.acquire("app"); // the slot was not taken by the refusals
      await refused(limiter, "app", { concurrent: 2 }); // and both slots are taken now
      assert.equal(limiter.active("app"), 2);
    });

    await step(t, "the store's answers, call by call", async ({ store }) => {
      const at = 1_000_000;
      const limits = { concurrent: 1, rate: { count: 1, per: 1000 } };
      assert.deepEqual(await store.tryAcquire(singleScope("app", limits), at), { admitted: true });
      assert.deepEqual(await store.tryAcquire(singleScope("app", limits), at), {
        admitted: false,
        kind: "concurrency",
        limit: 1,
        scope: 0,
      });
      await store.release(["app"], at);
      assert.deepEqual(await store.tryAcquire(singleScope("app", limits), at + 400), {
        admitted: false,
        kind: "rate",
        limit: 1,
        retryAfterMs: 600,
        scope: 0,
      });
      assert.deepEqual(await store.tryAcquire(singleScope("app", limits), at + 1000), {
        admitted: true,
      });
      await store.release(["app"], at + 1000);
      assert.deepEqual(await store.tryAcquire(singleScope("app", { concurrent: 1 }), at + 1000), {
        admitted: true,
      });
      assert.deepEqual(await store.tryAcquire(singleScope("app", { concurrent: 1 }), at + 1000), {
        admitted: false,
        kind: "concurrency",
        limit: 1,
        scope: 0,
      });
      await store.release(["app"], at + 1000);
    });
  });

  test("caps a client within a group while its other group stays open", async ({ newLimiter }) => {
    // The overall cap still applies inside the group.
    const small = newLimiter({ limits: { concurrent: 1 } });
    {
      using _c = await small.acquire("b", { group: { name: "web", client: { concurrent: 5 } } });
      assert.equal((await refused(small, "b", { group: { name: "web" } })).scope, "client");
    }
    const limiter = newLimiter({ limits: { concurrent: 10 } });
    const cache = { name: "cache", client: { concurrent: 2 } };
    using _one = await limiter.acquire("a", { group: cache });
    using _two = await limiter.acquire("a", { group: cache });
    const error = await refused(limiter, "a", { group: cache });
    assert.equal(error.kind, "concurrency");
    assert.equal(error.scope, "client_in_group");
    assert.equal(error.group, "cache");
    assert.equal(error.limit, 2);
    assert.equal(
      error.message,
      'Cannot accept connection: client "a" is at its limit of 2 concurrent connections in group "cache"',
    );
    // The other group, and the same group for another client, stay open.
    using _web = await limiter.acquire("a", { group: { name: "web", client: { concurrent: 2 } } });
    using _b = await limiter.acquire("b", { group: cache });
  });

  test("caps a group's total over all its clients", async ({ newLimiter }) => {
    const limiter = newLimiter();
    const cache = { name: "cache", total: { concurrent: 3 } };
    const a1 = await limiter.acquire("a", { group: cache });
    using _a2 = await limiter.acquire("a", { group: cache });
    using _b1 = await limiter.acquire("b", { group: cache });
    const error = await refused(limiter, "b", { group: cache });
    assert.equal(error.scope, "group");
    assert.equal(error.kind, "concurrency");
    assert.equal(
      error.message,
      'Cannot accept connection: group "cache" is at its limit of 3 concurrent connections',
    );
    // The refusal took nothing from b's own count; a release in the group frees a slot.
    assert.equal(limiter.active("b"), 1);
    a1[Symbol.dispose]();
    using _b2 = await limiter.acquire("b", { group: cache });
    using _web = await limiter.acquire("b", { group: { name: "web", total: { concurrent: 1 } } });
  });

  test("limits a client's rate within a group, atomically with its other limits", async ({ newLimiter }) => {
    const limiter = newLimiter({ limits: { concurrent: 10, rate: { count: 5, per: 1000 } } });
    const cache = { name: "cache", client: { concurrent: 10, rate: { count: 1, per: 1000 } } };
    await spend(limiter, "a", { group: cache });
    const error = await refused(limiter, "a", { group: cache });
    assert.equal(error.kind, "rate");
    assert.equal(error.scope, "client_in_group");
    assert.equal(error.retryAfterMs, 1000);
    // The refusal spent none of the client's overall tokens: 4 are left.
    for (let i = 0; i < 4; i++) await spend(limiter, "a", { group: { name: "web" } });
    assert.equal((await refused(limiter, "a", { group: { name: "web" } })).scope, "client");
  });

  table("reserves rate tokens for queued connections, in arrival order", async (t) => {
    await step(t, "the store's answers: waits, then a refusal past the wait", async ({ store }) => {
      const at = 1_000_000;
      const request = {
        scopes: [{ key: "app", limits: { concurrent: 10, rate: { count: 2, per: 1000 } } }],
        maxWaitMs: 1000,
      };
      const waits = [];
      for (let i = 0; i < 4; i++) {
        const answer = await store.tryAcquire(request, at);
        assert.ok(answer.admitted);
        waits.push(answer.waitMs ?? 0);
      }
      assert.deepEqual(waits, [0, 0, 500, 1000]);
      // The fifth token is due in 1500 ms: more than the caller waits.
      assert.deepEqual(await store.tryAcquire(request, at), {
        admitted: false,
        kind: "rate",
        limit: 2,
        retryAfterMs: 500,
        scope: 0,
      });
      // A refusal took nothing: 500 ms later, the fifth is due within the wait.
      const later = await store.tryAcquire(request, at + 500);
      assert.deepEqual(later, { admitted: true, waitMs: 1000 });
      for (let i = 0; i < 5; i++) await store.release(["app"], at + 500);
    });

    await step(t, "through ClientLimiter: five at 2 per second", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limits = { concurrent: 5, rate: { count: 2, per: 1000 } };
      const limiter = new ClientLimiter({ store: fixture.store, clock, limits });
      const pending = Array.from(
        { length: 5 },
        () => limiter.acquire("app", { queueTimeout: 5000 }),
      );
      await eventuallyActive(limiter, 5);
      assert.equal(limiter.queued(), 3);
      assert.equal(limiter.queued("app"), 3);
      // Queued connections hold their slots.
      assert.equal((await refused(limiter, "app")).kind, "concurrency");
      clock.advance(1500);
      const leases = await Promise.all(pending);
      assert.deepEqual(leases.map((lease) => lease.queuedMs), [0, 0, 500, 1000, 1500]);
      assert.equal(limiter.queued(), 0);
      releaseAll(leases);
    });

    await step(
      t,
      "a connection whose token is due after its timeout is refused",
      async (fixture) => {
        const clock = new FakeClock(1_000_000);
        const limits = { concurrent: 10, rate: { count: 1, per: 1000 } };
        const limiter = new ClientLimiter({ store: fixture.store, clock, limits });
        await spend(limiter, "app");
        const error = await refused(limiter, "app", { queueTimeout: 500 });
        assert.equal(error.kind, "rate");
        assert.equal(error.retryAfterMs, 500);
        assert.equal(limiter.queueTimeouts, 1);
        assert.equal(limiter.active("app"), 0);
      },
    );

    await step(t, "an aborted wait gives back the slots", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limits = { concurrent: 2, rate: { count: 1, per: 1000 } };
      const limiter = new ClientLimiter({ store: fixture.store, clock, limits });
      await spend(limiter, "app");
      const controller = new AbortController();
      const waiting = limiter.acquire("app", { queueTimeout: 5000, signal: controller.signal });
      await eventuallyActive(limiter, 1);
      assert.equal(limiter.queued(), 1);
      controller.abort(new Error("draining"));
      await assert.rejects(waiting, /draining/);
      assert.equal(limiter.queued(), 0);
      assert.equal(limiter.active("app"), 0);
      // Both slots are free again (the spent tokens are not given back).
      clock.advance(2000);
      using _x = await limiter.acquire("app");
      clock.advance(1000);
      using _y = await limiter.acquire("app");
      assert.equal(limiter.active("app"), 2);
    });
  });

  test("reports concurrency when both limits refuse", async ({ newLimiter }) => {
    const limiter = newLimiter({ limits: { concurrent: 1, rate: { count: 1, per: 1000 } } });
    using _lease = await limiter.acquire("app");
    const error = await refused(limiter, "app");
    assert.equal(error.kind, "concurrency");
    assert.equal(error.limit, 1);
    assert.equal(error.retryAfterMs, undefined);
  });

  test("releases a slot exactly once and never a token", async ({ store, newLimiter }, t) => {
    const limiter = newLimiter({ limits: { concurrent: 2, rate: { count: 3, per: 60_000 } } });

    await t.step("a lease disposed three times gives back one slot", async () => {
      const first = await limiter.acquire("app");
      using _second = await limiter.acquire("app");
      first[Symbol.dispose]();
      first[Symbol.dispose]();
      first[Symbol.dispose]();
      assert.equal(limiter.active("app"), 1);
      // The store still counts the second lease: only one slot is free.
      using _third = await limiter.acquire("app");
      assert.equal((await refused(limiter, "app")).kind, "concurrency");
    });

    await t.step("a release gives back no token", async () => {
      // All three tokens are spent, and both slots are free again.
      assert.equal(limiter.active("app"), 0);
      const error = await refused(limiter, "app");
      assert.equal(error.kind, "rate");
      assert.equal(error.retryAfterMs, 20_000);
    });

    await t.step("a lease is released when its using block throws", async () => {
      const one = newLimiter({ limits: { concurrent: 1 } });
      await assert.rejects(async () => {
        using _lease = await one.acquire("a");
        throw new Error("boom");
      }, /boom/);
      assert.equal(one.active("a"), 0);
      using _again = await one.acquire("a");
    });

    await t.step("releasing a client with nothing open is a no-op", async () => {
      const now = 1_000_000;
      assert.deepEqual(await store.tryAcquire(singleScope("b", { concurrent: 1 }), now), {
        admitted: true,
      });
      await store.release(["b"], now);
      await store.release(["b"], now); // nothing open: must not free a slot in advance
      await store.release(["nobody"], now); // never seen
      assert.deepEqual(await store.tryAcquire(singleScope("b", { concurrent: 1 }), now), {
        admitted: true,
      });
      assert.equal(
        (await store.tryAcquire(singleScope("b", { concurrent: 1 }), now)).admitted,
        false,
        "one slot, not two",
      );
      await store.release(["b"], now);
    });
  });

  table("forgets idle clients", async (t) => {
    const { released, refilled } = target.forgets;
    await t.step({
      name: "without a rate limit, on the last release",
      ignore: !released,
      fn: async () => {
        await using fixture = await target.create();
        const limiter = new ClientLimiter({ store: fixture.store, clock: new FakeClock() });
        const a = await limiter.acquire("app");
        const b = await limiter.acquire("app");
        assert.equal(await fixture.retained!(), 1);
        a[Symbol.dispose]();
        assert.equal(await fixture.retained!(), 1);
        b[Symbol.dispose]();
        assert.equal(await fixture.retained!(), 0);
        assert.deepEqual(limiter.snapshot(), new Map());
      },
    });

    await t.step({
      name: "but keeps a client whose bucket is not full",
      ignore: !released,
      fn: async () => {
        await using fixture = await target.create();
        const clock = new FakeClock(1_000_000);
        const limits = { concurrent: 10, rate: { count: 100, per: 60_000 } };
        const limiter = new ClientLimiter({ limits, store: fixture.store, clock });
        await spend(limiter, "short");
        assert.equal(await fixture.retained!(), 1, "the bucket still misses a token");
      },
    });

    await t.step({
      name: "with a rate limit, on a release after its bucket refilled",
      ignore: !refilled,
      fn: async () => {
        await using fixture = await target.create();
        const clock = new FakeClock(1_000_000);
        const limits = { concurrent: 10, rate: { count: 100, per: 60_000 } };
        const limiter = new ClientLimiter({ limits, store: fixture.store, clock });
        const long = await limiter.acquire("long");
        clock.advance(600); // one token back: the bucket is full again
        long[Symbol.dispose]();
        assert.equal(await fixture.retained!(), 0);
      },
    });
  });

  table("carries state over when limits change between calls", async (t) => {
    const slow = { concurrent: 10, rate: { count: 1, per: 60_000 } };
    const fast = { concurrent: 10, rate: { count: 1, per: 1000 } };

    await step(t, "debt beyond a shorter window is clamped to one window", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limiter = new ClientLimiter({ store: fixture.store, clock });
      await spend(limiter, "app", slow);
      // Under the new, shorter window the client owes at most one window.
      assert.equal((await refused(limiter, "app", fast)).retryAfterMs, 1000);
      clock.advance(999);
      // The clamp sticks: the debt decays from it, not from the old window.
      assert.equal((await refused(limiter, "app", fast)).retryAfterMs, 1);
      clock.advance(1);
      await spend(limiter, "app", fast);
    });

    await step(t, "a call without a rate limit keeps the bucket", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limiter = new ClientLimiter({ store: fixture.store, clock });
      await spend(limiter, "app", fast);
      await spend(limiter, "app", { concurrent: 10 }); // admitted at once, spends nothing
      assert.equal((await refused(limiter, "app", fast)).retryAfterMs, 1000);
    });

    await step(t, "a new count applies to the time the bucket is full again", async (fixture) => {
      const clock = new FakeClock(1_000_000);
      const limiter = new ClientLimiter({ store: fixture.store, clock });
      const ten = { concurrent: Infinity, rate: { count: 10, per: 1000 } };
      const two = { concurrent: Infinity, rate: { count: 2, per: 1000 } };
      for (let i = 0; i < 5; i++) await spend(limiter, "app", ten); // full again in 500 ms
      // Two per second: half the bucket is spent, so one token is left.
      await spend(limiter, "app", two);
      assert.equal((await refused(limiter, "app", two)).retryAfterMs, 500);
      // Ten per second: the same time reads as no token left for 100 ms.
      assert.equal((await refused(limiter, "app", ten)).retryAfterMs, 100);
    });

    await step(t, "a lower cap refuses until enough slots are released", async (fixture) => {
      const limiter = new ClientLimiter({ store: fixture.store, clock: new FakeClock() });
      const leases: ClientLease[] = [];
      for (let i = 0; i < 3; i++) leases.push(await limiter.acquire("app", { concurrent: 5 }));
      assert.equal((await refused(limiter, "app", { concurrent: 2 })).limit, 2);
      leases.pop()![Symbol.dispose]();
      assert.equal((await refused(limiter, "app", { concurrent: 2 })).limit, 2);
      leases.pop()![Symbol.dispose]();
      leases.push(await limiter.acquire("app", { concurrent: 2 }));
      leases.push(await limiter.acquire("app", { concurrent: 5 })); // a higher cap: room again
      releaseAll(leases);
    });
  });

  table("matches a reference model under random interleavings", async (t) => {
    const profiles: ClientLimits[] = [
      { concurrent: 3 },
      { concurrent: 2, rate: { count: 3, per: 1000 } },
      { concurrent: 5, rate: { count: 7, per: 60_000 } },
      { concurrent: Infinity, rate: { count: 10, per: 333 } },
      { concurrent: 1, rate: { count: 1, per: 250 } },
    ];
    const steps = target.modelSteps ?? 5000;
    for (const seed of [1, 2, 3, 42, 2024]) {
      await step(t, `seed ${seed}`, async (fixture) => {
        const next = random(seed);
        const clock = new FakeClock(Math.floor(next() * 1e9));
        const clients: readonly string[] = MODEL_CLIENTS;
        const limiter = new ClientLimiter({
          store: fixture.store,
          clock,
          limitsFor: (client) => profiles[clients.indexOf(client)],
        });
        const held = clients.map((): ClientLease[] => []);
        const buckets = profiles.map((p) =>
          p.rate && new ModelBucket(p.rate.count, p.rate.per, clock.now())
        );
        let admitted = 0;
        let refusedRate = 0;
        let refusedConcurrency = 0;

        for (let step = 0; step < steps; step++) {
          const i = Math.floor(next() * clients.length);
          const client = clients[i]!;
          const roll = next();
          if (roll < 0.5) {
            const limits = profiles[i]!;
            const bucket = buckets[i];
            const wait = bucket?.wait(clock.now()) ?? 0;
            const full = held[i]!.length >= limits.concurrent;
            try {
              held[i]!.push(await limiter.acquire(client));
              assert.ok(!full && wait === 0, `step ${step}: ${client} admitted over its limits`);
              bucket?.take();
              admitted++;
            } catch (error) {
              assert.ok(error instanceof ClientLimitError);
              if (full) {
                assert.equal(error.kind, "concurrency", `step ${step}`);
                refusedConcurrency++;
              } else {
                assert.equal(error.kind, "rate", `step ${step}`);
                assert.equal(error.retryAfterMs, wait, `step ${step}: retryAfterMs`);
                refusedRate++;
              }
            }
          } else if (roll < 0.9) {
            const leases = held[i]!;
            if (leases.length > 0) {
              const [lease] = leases.splice(Math.floor(next() * leases.length), 1);
              lease![Symbol.dispose]();
              if (next() < 0.1) lease![Symbol.dispose](); // a stray double dispose
            }
          } else {
            clock.advance(Math.floor(next() * 400));
          }
          assert.equal(limiter.active(client), held[i]!.length, `step ${step}: active`);
        }
        // Every outcome was exercised.
        assert.ok(admitted > 0 && refusedRate > 0 && refusedConcurrency > 0);

        for (const leases of held) releaseAll(leases);
        assert.deepEqual(limiter.snapshot(), new Map());
        clock.advance(60_000); // every bucket is full again
        // Every slot came back: each capped client gets exactly its cap.
        for (const [i, client] of clients.entries()) {
          const cap = profiles[i]!.concurrent;
          if (cap === Infinity) {
            await spend(limiter, client, { concurrent: cap });
            continue;
          }
          const leases: ClientLease[] = [];
          for (let n = 0; n < cap; n++) {
            leases.push(await limiter.acquire(client, { concurrent: cap }));
          }
          assert.equal((await refused(limiter, client, { concurrent: cap })).kind, "concurrency");
          releaseAll(leases);
        }
        // Each client was released last with a full bucket.
        if (target.forgets.refilled) assert.equal(await fixture.retained!(), 0);
      });
    }
  });
}
