import assert from "node:assert/strict";
import { EjectionEvent, HealthChangeEvent } from "../lib/upstream/health_event.ts";
import { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";
import { MemoryUpstreamCounts } from "../lib/upstream/memory_counts.ts";
import { NoHealthyUpstreamError } from "../lib/upstream/pool_errors.ts";
import type { UpstreamCounts } from "../lib/upstream/upstream_counts.ts";
import type { UpstreamLease } from "../lib/upstream/upstream_lease.ts";
import { active, prng, shortLivedPicks } from "./_pool_fixtures.ts";

const A = "10.0.0.1:80";
const B = "10.0.0.2:80";
const C = "10.0.0.3:80";

Deno.test("LeastConnPool() rejects invalid upstream lists", async (t) => {
  const cases: [string, (string | { address: string; weight?: number })[], ErrorConstructor][] = [
    ["address without port", ["10.0.0.1"], TypeError],
    ["port out of range", ["10.0.0.1:70000"], TypeError],
    ["duplicate address", [A, { address: A, weight: 2 }], TypeError],
    ["zero weight", [{ address: A, weight: 0 }], RangeError],
    ["fractional weight", [{ address: A, weight: 1.5 }], RangeError],
    ["huge weight", [{ address: A, weight: 1e7 }], RangeError],
    ["NaN weight", [{ address: A, weight: NaN }], RangeError],
  ];
  for (const [name, list, type] of cases) {
    await t.step(name, () => {
      assert.throws(() => new LeastConnPool(list), type);
    });
  }
  await t.step("IPv6 and weights are accepted", () => {
    const pool = new LeastConnPool(["[::1]:443", { address: A, weight: 3 }]);
    assert.deepEqual(pool.snapshot(), [
      { address: "[::1]:443", weight: 1, active: 0, healthy: true, ejected: false },
      { address: A, weight: 3, active: 0, healthy: true, ejected: false },
    ]);
    using lease = pool.acquire();
    assert.deepEqual(lease.hostPort, { hostname: "::1", port: 443 });
  });
});

Deno.test("LeastConnPool.acquire() picks the upstream with the fewest active connections", () => {
  const pool = new LeastConnPool([A, B, C]);
  const a = pool.acquire();
  const b = pool.acquire();
  const c = pool.acquire();
  assert.deepEqual([a.address, b.address, c.address], [A, B, C]);
  const b2 = pool.acquire(); // all at 1: rotation continues with A
  assert.equal(b2.address, A);
  b.release();
  c.release();
  // A has 2, B and C 0: the least loaded win regardless of the cursor.
  const picks = [pool.acquire(), pool.acquire()];
  assert.deepEqual(picks.map((l) => l.address).sort(), [B, C]);
  assert.deepEqual(active(pool), { [A]: 2, [B]: 1, [C]: 1 });
  for (const lease of [a, b2, ...picks]) lease.release();
  assert.deepEqual(active(pool), { [A]: 0, [B]: 0, [C]: 0 });
});

Deno.test("LeastConnPool.acquire() rotates among tied upstreams", async (t) => {
  await t.step("short-lived connections go round-robin", () => {
    const pool = new LeastConnPool([A, B, C]);
    assert.deepEqual(shortLivedPicks(pool, 7), [A, B, C, A, B, C, A]);
  });
  await t.step("only the tied upstreams rotate", () => {
    const pool = new LeastConnPool([A, B, C]);
    using _busy = pool.acquire(); // A holds one: B and C are the tied minimum
    assert.deepEqual(shortLivedPicks(pool, 4), [B, C, B, C]);
  });
  await t.step("weighted ties rotate too", () => {
    const pool = new LeastConnPool([{ address: A, weight: 2 }, { address: B, weight: 4 }]);
    using _a = pool.acquire(); // A: 1/2
    using _b1 = pool.acquire(); // B: 0/4 < 1/2
    using _b2 = pool.acquire(); // B: 1/4 < 1/2 -> B 2/4, tied with A 1/2
    assert.deepEqual([_a.address, _b1.address, _b2.address], [A, B, B]);
    const picks = shortLivedPicks(pool, 4);
    assert.equal(picks.filter((p) => p === A).length, 2);
    assert.equal(picks.filter((p) => p === B).length, 2);
    assert.notEqual(picks[0], picks[1]);
  });
});

Deno.test("LeastConnPool.acquire() balances active/weight exactly", async (t) => {
  await t.step("long-lived connections split by weight", () => {
    const pool = new LeastConnPool([{ address: A, weight: 1 }, { address: B, weight: 3 }]);
    const leases = Array.from({ length: 40 }, () => pool.acquire());
    assert.deepEqual(active(pool), { [A]: 10, [B]: 30 });
    for (const lease of leases) lease.release();
  });
  await t.step("large counts compare without rounding", () => {
    // 3/999999 vs 4/1000000: 3_000_000 < 3_999_996, so A is less loaded, though
    // both ratios are close; a float comparison happens to agree, integers must too.
    const counts = new MemoryUpstreamCounts();
    const pool = new LeastConnPool(
      [{ address: A, weight: 999_999 }, { address: B, weight: 1_000_000 }],
      { counts },
    );
    counts.add(A, 3);
    counts.add(B, 4);
    using lease = pool.acquire();
    assert.equal(lease.address, A);
  });
});

Deno.test("LeastConnPool.acquire() counts at once and the lease releases exactly once", () => {
  const pool = new LeastConnPool([A]);
  const lease: UpstreamLease = pool.acquire();
  assert.equal(pool.active(A), 1);
  assert.equal(lease.address, A);
  assert.equal(lease.weight, 1);
  assert.equal(lease.released, false);
  const other = pool.acquire();
  assert.equal(pool.active(A), 2);
  lease[Symbol.dispose]();
  assert.equal(lease.released, true);
  assert.equal(pool.active(A), 1);
  lease[Symbol.dispose]();
  lease.release();
  assert.equal(pool.active(A), 1, "a second release must not touch another lease's count");
  other.release();
  assert.equal(pool.active(A), 0);
  {
    using _scoped = pool.acquire();
    assert.equal(pool.active(A), 1);
  }
  assert.equal(pool.active(A), 0);
  assert.throws(() => {
    using _lease = pool.acquire();
    throw new Error("handler failed");
  }, /handler failed/);
  assert.equal(pool.active(A), 0, "using releases on throw");
});

Deno.test("LeastConnPool.acquire() picks only healthy upstreams and fails closed", () => {
  const pool = new LeastConnPool([A, B, C]);
  assert.equal(pool.setHealthy(B, false), true);
  assert.deepEqual(shortLivedPicks(pool, 4), [A, C, A, C]);
  pool.setHealthy(A, false);
  pool.setHealthy(C, false);
  assert.throws(() => pool.acquire(), (error: unknown) => {
    assert.ok(error instanceof NoHealthyUpstreamError);
    assert.equal(error.name, "NoHealthyUpstreamError");
    assert.match(error.message, /^No healthy upstream: 0 of 3/);
    return true;
  });
  assert.deepEqual(active(pool), { [A]: 0, [B]: 0, [C]: 0 });
  pool.setHealthy(B, true);
  assert.deepEqual(shortLivedPicks(pool, 2), [B, B]);
  assert.throws(() => new LeastConnPool([]).acquire(), NoHealthyUpstreamError);
});

Deno.test("LeastConnPool() starts upstreams unhealthy when initiallyHealthy is false", () => {
  const pool = new LeastConnPool([A, B], { initiallyHealthy: false });
  assert.deepEqual(pool.snapshot().map((s) => s.healthy), [false, false]);
  assert.throws(() => pool.acquire(), NoHealthyUpstreamError);
  pool.setHealthy(B, true);
  assert.deepEqual(shortLivedPicks(pool, 2), [B, B]);
  pool.setUpstreams([A, B, C]);
  assert.deepEqual(pool.snapshot().map((s) => s.healthy), [false, true, false]);
});

Deno.test("LeastConnPool.setHealthy() ignores unknown addresses", () => {
  const pool = new LeastConnPool([A]);
  assert.equal(pool.setHealthy(B, false), false);
  assert.equal(pool.snapshot().length, 1);
  assert.deepEqual(shortLivedPicks(pool, 1), [A]);
});

Deno.test("LeastConnPool.followHealth() applies change events until disposed", () => {
  const pool = new LeastConnPool([A, B]);
  const probe = new EventTarget();
  const change = (address: string, healthy: boolean) =>
    probe.dispatchEvent(
      new HealthChangeEvent({
        address,
        healthy,
        reason: healthy ? "probe_ok" : "probe_timeout",
        at: 0,
      }),
    );
  const follow = pool.followHealth(probe);
  change(A, false);
  assert.deepEqual(pool.snapshot().map((s) => s.healthy), [false, true]);
  probe.dispatchEvent(new Event("change")); // not a HealthChangeEvent: ignored
  change(C, false); // unknown: ignored
  assert.deepEqual(shortLivedPicks(pool, 2), [B, B]);
  change(A, true);
  assert.deepEqual(pool.snapshot().map((s) => s.healthy), [true, true]);
  follow[Symbol.dispose]();
  change(A, false);
  assert.deepEqual(pool.snapshot().map((s) => s.healthy), [true, true]);
  follow[Symbol.dispose](); // idempotent
});

Deno.test("LeastConnPool.setEjected() takes an upstream out of rotation", () => {
  const pool = new LeastConnPool([A, B, C]);
  assert.equal(pool.setEjected(B, true), true);
  assert.equal(pool.setEjected("10.9.9.9:80", true), false);
  assert.deepEqual(shortLivedPicks(pool, 4), [A, C, A, C]);
  assert.deepEqual(pool.snapshot().map((s) => [s.healthy, s.ejected]), [
    [true, false],
    [true, true],
    [true, false],
  ]);
  assert.equal(pool.panic, false);
  pool.setEjected(B, false);
  assert.deepEqual(new Set(shortLivedPicks(pool, 3)), new Set([A, B, C]));
});

Deno.test("LeastConnPool panics below its threshold and spreads over ejected upstreams", async (t) => {
  await t.step("below 50% of four available", () => {
    const pool = new LeastConnPool([A, B, C, "10.0.0.4:80"]);
    pool.setEjected(A, true);
    pool.setEjected(B, true);
    assert.equal(pool.panic, false, "2 of 4 is not below 50%");
    assert.deepEqual(new Set(shortLivedPicks(pool, 4)), new Set([C, "10.0.0.4:80"]));
    pool.setHealthy(C, false);
    assert.equal(pool.panic, true, "1 of 4");
    assert.deepEqual(new Set(shortLivedPicks(pool, 6)), new Set([A, B, "10.0.0.4:80"]));
    pool.setEjected(A, false);
    assert.equal(pool.panic, false, "2 of 4 again");
  });

  await t.step("an unhealthy upstream stays out even in panic mode", () => {
    const pool = new LeastConnPool([A, B]);
    pool.setEjected(A, true);
    pool.setHealthy(B, false);
    assert.equal(pool.panic, true, "nothing available");
    assert.deepEqual(shortLivedPicks(pool, 3), [A, A, A]);
    pool.setHealthy(A, false);
    assert.equal(pool.panic, false, "no healthy upstream to spread over");
    assert.throws(() => pool.acquire(), NoHealthyUpstreamError);
  });

  await t.step("threshold 0 panics only when nothing is available", () => {
    const pool = new LeastConnPool([A, B, C], { panicThreshold: 0 });
    pool.setEjected(A, true);
    pool.setEjected(B, true);
    assert.equal(pool.panic, false);
    assert.deepEqual(shortLivedPicks(pool, 2), [C, C]);
    pool.setEjected(C, true);
    assert.equal(pool.panic, true);
    assert.deepEqual(new Set(shortLivedPicks(pool, 3)), new Set([A, B, C]));
  });

  await t.step("threshold 100 panics with any ejection; setPanicThreshold() changes it", () => {
    const pool = new LeastConnPool([A, B, C], { panicThreshold: 100 });
    pool.setEjected(A, true);
    assert.equal(pool.panic, true);
    pool.setPanicThreshold(50);
    assert.equal(pool.panic, false);
    assert.throws(() => pool.setPanicThreshold(101), RangeError);
    assert.throws(() => new LeastConnPool([A], { panicThreshold: -1 }), RangeError);
    assert.throws(() => new LeastConnPool([A], { panicThreshold: 0.5 }), RangeError);
  });

  await t.step("upstreams removed by a reload count", () => {
    const pool = new LeastConnPool([A, B, C]);
    pool.setEjected(A, true);
    assert.equal(pool.panic, false);
    pool.setUpstreams([A, B]);
    assert.equal(pool.panic, false, "1 of 2 is not below 50%");
    pool.setUpstreams([A]);
    assert.equal(pool.panic, true);
  });
});

Deno.test("LeastConnPool.followHealth() applies ejection events until disposed", () => {
  const pool = new LeastConnPool([A, B]);
  const detector = new EventTarget();
  const eject = (address: string, ejected: boolean) =>
    detector.dispatchEvent(
      new EjectionEvent({
        address,
        ejected,
        reason: ejected ? "dial_timeout" : "ejection_ended",
        at: 0,
      }),
    );
  const follow = pool.followHealth(detector);
  eject(A, true);
  assert.deepEqual(shortLivedPicks(pool, 2), [B, B]);
  eject(A, false);
  assert.deepEqual(pool.snapshot().map((s) => s.ejected), [false, false]);
  follow[Symbol.dispose]();
  eject(A, true);
  assert.deepEqual(pool.snapshot().map((s) => s.ejected), [false, false]);
});

Deno.test("LeastConnPool.setUpstreams() keeps counts and applies weights of upstreams that stay", () => {
  const pool = new LeastConnPool([A, B]);
  const leases = [pool.acquire(), pool.acquire(), pool.acquire()]; // A 2, B 1
  assert.deepEqual(active(pool), { [A]: 2, [B]: 1 });
  pool.setHealthy(B, false);
  pool.setUpstreams([{ address: B, weight: 4 }, { address: A, weight: 1 }, C]);
  assert.deepEqual(pool.snapshot(), [
    { address: B, weight: 4, active: 1, healthy: false, ejected: false },
    { address: A, weight: 1, active: 2, healthy: true, ejected: false },
    { address: C, weight: 1, active: 0, healthy: true, ejected: false },
  ]);
  assert.equal(leases[1]!.address, B);
  assert.equal(leases[1]!.weight, 4, "a lease reports the current weight");
  pool.setHealthy(B, true);
  // C (0/1) is the least loaded; then B (1/4) beats C (1/1) and A (2/1).
  const more = [pool.acquire(), pool.acquire()];
  assert.deepEqual(more.map((l) => l.address), [C, B]);
  for (const lease of [...leases, ...more]) lease.release();
  assert.deepEqual(active(pool), { [B]: 0, [A]: 0, [C]: 0 });
});

Deno.test("LeastConnPool.setUpstreams() drains removed upstreams without new picks", () => {
  const pool = new LeastConnPool([A, B]);
  const a = pool.acquire();
  const b = pool.acquire();
  pool.setUpstreams([B, C]);
  assert.deepEqual(pool.snapshot(), [
    { address: B, weight: 1, active: 1, healthy: true, ejected: false },
    { address: C, weight: 1, active: 0, healthy: true, ejected: false },
    { address: A, weight: 1, active: 1, healthy: true, ejected: false, removed: true },
  ]);
  assert.equal(a.released, false);
  const picks = shortLivedPicks(pool, 6);
  assert.ok(!picks.includes(A), `removed upstream picked: ${picks}`);
  assert.equal(pool.setHealthy(A, false), true, "a draining upstream still takes health");
  a.release();
  assert.equal(pool.active(A), 0);
  assert.deepEqual(pool.snapshot().map((s) => s.address), [B, C], "drained: forgotten");
  assert.equal(pool.setHealthy(A, true), false);
  assert.ok(!shortLivedPicks(pool, 4).includes(A), "releasing does not resurrect");
  b.release();
  assert.deepEqual(active(pool), { [B]: 0, [C]: 0 });
});

Deno.test("LeastConnPool.setUpstreams() re-adds a draining upstream with its count and health", () => {
  const pool = new LeastConnPool([A, B]);
  const a = pool.acquire();
  pool.setHealthy(A, false);
  pool.setUpstreams([B]);
  pool.setUpstreams([A, B]);
  assert.deepEqual(pool.snapshot(), [
    { address: A, weight: 1, active: 1, healthy: false, ejected: false },
    { address: B, weight: 1, active: 0, healthy: true, ejected: false },
  ]);
  a.release();
  assert.deepEqual(pool.snapshot().map((s) => s.address), [A, B], "still configured");
  pool.setHealthy(A, true);
  assert.deepEqual(shortLivedPicks(pool, 2).sort(), [A, B]);
});

Deno.test("LeastConnPool.setUpstreams() changes nothing when the list is invalid", () => {
  const pool = new LeastConnPool([A]);
  using _lease = pool.acquire();
  assert.throws(() => pool.setUpstreams([B, "nonsense"]), TypeError);
  assert.throws(() => pool.setUpstreams([B, { address: C, weight: -1 }]), RangeError);
  assert.deepEqual(pool.snapshot(), [{
    address: A,
    weight: 1,
    active: 1,
    healthy: true,
    ejected: false,
  }]);
  pool.setUpstreams([]);
  assert.throws(() => pool.acquire(), NoHealthyUpstreamError);
  assert.deepEqual(pool.snapshot(), [
    { address: A, weight: 1, active: 1, healthy: true, ejected: false, removed: true },
  ]);
});

Deno.test("LeastConnPool() balances on a shared counts store", () => {
  const counts = new MemoryUpstreamCounts();
  const worker1 = new LeastConnPool([A, B], { counts });
  const worker2 = new LeastConnPool([A, B], { counts });
  using first = worker1.acquire();
  using second = worker2.acquire();
  assert.equal(first.address, A);
  assert.equal(second.address, B, "worker 2 sees worker 1's connection");
  assert.equal(worker2.active(A), 1);
  assert.equal(counts.get(B), 1);
});

Deno.test("LeastConnPool.acquire() reports through a custom counts store", () => {
  const calls: string[] = [];
  const inner = new MemoryUpstreamCounts();
  const counts: UpstreamCounts = {
    add: (address, delta) => {
      calls.push(`${address} ${delta > 0 ? "+" : ""}${delta}`);
      return inner.add(address, delta);
    },
    get: (address) => inner.get(address),
  };
  const pool = new LeastConnPool([A], { counts });
  const lease = pool.acquire();
  lease.release();
  lease.release();
  assert.deepEqual(calls, [`${A} +1`, `${A} -1`]);
});

Deno.test("LeastConnPool.acquire() keeps counts exact under random interleavings", () => {
  const addresses = ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.1.4:80", "10.0.1.5:80"];
  for (let seed = 1; seed <= 40; seed++) {
    const random = prng(seed);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
    const pool = new LeastConnPool(addresses.slice(0, 3));
    // The model: what the pool should believe.
    const configured = new Map<string, number>(addresses.slice(0, 3).map((a) => [a, 1]));
    const healthy = new Map<string, boolean>(addresses.map((a) => [a, true]));
    const live: UpstreamLease[] = [];
    const expected = new Map<string, number>();
    for (let step = 0; step < 2000; step++) {
      const roll = random();
      if (roll < 0.45) {
        const eligible = [...configured].filter(([a]) => healthy.get(a));
        if (eligible.length === 0) {
          assert.throws(() => pool.acquire(), NoHealthyUpstreamError);
          continue;
        }
        let min = Infinity;
        for (const [a, w] of eligible) min = Math.min(min, (expected.get(a) ?? 0) / w);
        const lease = pool.acquire();
        const weight = configured.get(lease.address);
        assert.ok(weight !== undefined, `seed ${seed}: picked removed ${lease.address}`);
        assert.ok(healthy.get(lease.address), `seed ${seed}: picked unhealthy ${lease.address}`);
        assert.equal((expected.get(lease.address) ?? 0) / weight, min, `seed ${seed}: not least`);
        expected.set(lease.address, (expected.get(lease.address) ?? 0) + 1);
        live.push(lease);
      } else if (roll < 0.85) {
        if (live.length === 0) continue;
        const index = Math.floor(random() * live.length);
        const lease = live[index]!;
        const address = lease.address;
        lease[Symbol.dispose]();
        if (random() < 0.2) lease.release(); // a double release must be a no-op
        live.splice(index, 1);
        expected.set(address, expected.get(address)! - 1);
      } else if (roll < 0.95) {
        const address = pick(addresses);
        const state = random() < 0.5;
        const known = pool.setHealthy(address, state);
        const draining = (expected.get(address) ?? 0) > 0;
        assert.equal(known, configured.has(address) || draining, `seed ${seed}: setHealthy`);
        if (known) healthy.set(address, state);
      } else {
        const next = addresses.filter(() => random() < 0.6);
        const weights = next.map(() => 1 + Math.floor(random() * 4));
        pool.setUpstreams(next.map((address, i) => ({ address, weight: weights[i] })));
        for (const address of addresses) {
          const wasKnown = configured.has(address) || (expected.get(address) ?? 0) > 0;
          if (next.includes(address) && !wasKnown) healthy.set(address, true);
        }
        configured.clear();
        next.forEach((address, i) => configured.set(address, weights[i]!));
      }
      for (const address of addresses) {
        assert.equal(pool.active(address), expected.get(address) ?? 0, `seed ${seed}`);
      }
    }
    for (const lease of live) lease.release();
    for (const address of addresses) assert.equal(pool.active(address), 0, `seed ${seed}`);
    const snapshot = pool.snapshot();
    assert.ok(snapshot.every((s) => s.active === 0 && s.removed === undefined));
    assert.deepEqual(snapshot.map((s) => s.address), [...configured.keys()]);
  }
});
