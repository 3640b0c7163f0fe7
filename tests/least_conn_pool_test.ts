import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import type { HostPort } from "../lib/core/address.ts";
import { FakeClock } from "../lib/core/clock.ts";
import { dialTcp } from "../lib/upstream/dial.ts";
import { EjectionEvent, HealthChangeEvent } from "../lib/upstream/health_event.ts";
import { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";
import { MemoryUpstreamCounts } from "../lib/upstream/memory_counts.ts";
import { NoHealthyUpstreamError, UpstreamConnectError } from "../lib/upstream/pool_errors.ts";
import type { DialFailureReason } from "../lib/upstream/upstream_connection.ts";
import type { UpstreamCounts } from "../lib/upstream/upstream_counts.ts";
import type { UpstreamLease } from "../lib/upstream/upstream_lease.ts";

const A = "10.0.0.1:80";
const B = "10.0.0.2:80";
const C = "10.0.0.3:80";

/** Acquires and releases at once, `n` times, returning the addresses picked. */
function shortLivedPicks(pool: LeastConnPool, n: number): string[] {
  const picks: string[] = [];
  for (let i = 0; i < n; i++) {
    using lease = pool.acquire();
    picks.push(lease.address);
  }
  return picks;
}

/** Mulberry32: a small seeded PRNG so stress runs are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function refusedError(): Error {
  return Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
}

type Behaviour = "ok" | "refuse" | "error" | "hang";

interface FakeSocket {
  address: string;
}

/**
 * A dialer that follows a per-address script and honours its signal like `dialTcp`.
 * Unknown addresses connect.
 */
class FakeDialer {
  readonly calls: string[] = [];
  readonly script = new Map<string, Behaviour>();
  /** Dials pending on "hang", by address. */
  readonly pending = new Map<string, (socket: FakeSocket) => void>();

  readonly dial = (address: HostPort, signal: AbortSignal): Promise<FakeSocket> => {
    const key = `${address.hostname}:${address.port}`;
    this.calls.push(key);
    if (signal.aborted) return Promise.reject(signal.reason);
    switch (this.script.get(key) ?? "ok") {
      case "ok":
        return Promise.resolve({ address: key });
      case "refuse":
        return Promise.reject(refusedError());
      case "error":
        return Promise.reject(new Error("connect EHOSTUNREACH"));
      case "hang":
        return new Promise((resolve, reject) => {
          const onAbort = () => {
            this.pending.delete(key);
            reject(signal.reason);
          };
          signal.addEventListener("abort", onAbort, { once: true });
          this.pending.set(key, (socket) => {
            signal.removeEventListener("abort", onAbort);
            this.pending.delete(key);
            resolve(socket);
          });
        });
    }
  };
}

function active(pool: LeastConnPool): Record<string, number> {
  return Object.fromEntries(pool.snapshot().map((s) => [s.address, s.active]));
}

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

Deno.test("LeastConnPool.connect() retries on an ejected upstream before dialling a tried one again", async () => {
  const pool = new LeastConnPool([A, B, C], { clock: new FakeClock() });
  pool.setEjected(C, true); // 2 of 3 available: no panic
  const dialer = new FakeDialer();
  dialer.script.set(A, "refuse");
  dialer.script.set(B, "refuse");
  const { socket, lease, failures } = await pool.connect({
    dial: dialer.dial,
    timeout: 100,
    attempts: 3,
  });
  assert.deepEqual(socket, { address: C });
  assert.deepEqual(dialer.calls, [A, B, C]);
  assert.equal(failures.length, 2);
  lease.release();
  // A plain pick still avoids it.
  dialer.script.delete(A);
  assert.deepEqual(shortLivedPicks(pool, 2), [A, B]);
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

Deno.test("LeastConnPool.connect() returns the socket with the lease held", async () => {
  const clock = new FakeClock();
  const pool = new LeastConnPool([A, B], { clock });
  const dialer = new FakeDialer();
  const { socket, lease } = await pool.connect({ dial: dialer.dial, timeout: 1000 });
  assert.deepEqual(socket, { address: A });
  assert.equal(lease.address, A);
  assert.equal(pool.active(A), 1);
  assert.equal(clock.pending, 0, "the connect timer is cleared");
  const second = await pool.connect({ dial: dialer.dial, timeout: 1000 });
  assert.equal(second.socket.address, B, "least connections order");
  lease.release();
  second.lease.release();
  assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
  assert.deepEqual(dialer.calls, [A, B]);
});

Deno.test("LeastConnPool.connect() fails over and reports each failed dial", async (t) => {
  const cases: [Behaviour, DialFailureReason][] = [
    ["refuse", "dial_refused"],
    ["error", "dial_error"],
  ];
  for (const [behaviour, reason] of cases) {
    await t.step(reason, async () => {
      const clock = new FakeClock();
      const pool = new LeastConnPool([A, B, C], { clock });
      const dialer = new FakeDialer();
      dialer.script.set(A, behaviour);
      const reported: [string, DialFailureReason, unknown][] = [];
      const { socket, lease } = await pool.connect({
        dial: dialer.dial,
        timeout: 1000,
        onDialFailure: (address, why, error) => {
          assert.equal(pool.active(address), 0, "count released before the report");
          reported.push([address, why, error]);
        },
      });
      assert.equal(socket.address, B);
      assert.equal(reported.length, 1);
      assert.equal(reported[0]![0], A);
      assert.equal(reported[0]![1], reason);
      assert.ok(reported[0]![2] instanceof Error);
      assert.deepEqual(active(pool), { [A]: 0, [B]: 1, [C]: 0 });
      assert.equal(clock.pending, 0);
      lease.release();
    });
  }
});

Deno.test("LeastConnPool.connect() times out a dial with the injected clock", async () => {
  const clock = new FakeClock();
  const pool = new LeastConnPool([A, B], { clock });
  const dialer = new FakeDialer();
  dialer.script.set(A, "hang");
  const reasons: DialFailureReason[] = [];
  const result = pool.connect({
    dial: dialer.dial,
    timeout: 500,
    onDialFailure: (_address, reason) => reasons.push(reason),
  });
  await Promise.resolve();
  assert.ok(dialer.pending.has(A));
  assert.equal(pool.active(A), 1, "counted while dialling");
  clock.advance(499);
  await Promise.resolve();
  assert.deepEqual(dialer.calls, [A], "not yet timed out");
  clock.advance(1);
  const { socket, lease } = await result;
  assert.equal(socket.address, B);
  assert.deepEqual(reasons, ["dial_timeout"]);
  assert.deepEqual(active(pool), { [A]: 0, [B]: 1 });
  assert.equal(clock.pending, 0);
  lease.release();
});

Deno.test("LeastConnPool.connect() keeps a timed-out dial racing the next attempt", async (t) => {
  await t.step("the late dial connects first and wins", async () => {
    const clock = new FakeClock();
    const pool = new LeastConnPool([A, B], { clock });
    const dialer = new FakeDialer();
    dialer.script.set(A, "hang");
    dialer.script.set(B, "hang");
    const reasons: string[] = [];
    const result = pool.connect({
      dial: dialer.dial,
      timeout: 1000,
      onDialFailure: (address, reason) => reasons.push(`${address} ${reason}`),
    });
    clock.advance(1000); // A's SYN was dropped: B starts, A keeps going
    await Promise.resolve();
    assert.deepEqual(dialer.calls, [A, B]);
    assert.deepEqual(active(pool), { [A]: 1, [B]: 1 });
    clock.advance(500);
    dialer.pending.get(A)!({ address: A }); // the retransmitted SYN got in
    const { socket, lease, failures } = await result;
    assert.equal(socket.address, A);
    assert.deepEqual(reasons, [`${A} dial_timeout`]);
    assert.deepEqual(failures.map((f) => f.reason), ["dial_timeout"]);
    assert.equal(dialer.pending.size, 0, "B was aborted");
    assert.deepEqual(active(pool), { [A]: 1, [B]: 0 });
    assert.equal(clock.pending, 0);
    lease.release();
  });

  await t.step("a dial that connects after another won is closed", async () => {
    const clock = new FakeClock();
    const pool = new LeastConnPool([A, B], { clock });
    const late = Promise.withResolvers<string>();
    const closed: string[] = [];
    const dial = (address: HostPort): Promise<string> =>
      address.hostname === "10.0.0.1" ? late.promise : Promise.resolve("socket B");
    const result = pool.connect({
      dial,
      timeout: 1000,
      close: (socket) => closed.push(socket),
    });
    clock.advance(1000);
    const { socket, lease } = await result;
    assert.equal(socket, "socket B");
    late.resolve("socket A"); // it ignored its abort and connected anyway
    await late.promise;
    await Promise.resolve();
    assert.deepEqual(closed, ["socket A"]);
    assert.deepEqual(active(pool), { [A]: 0, [B]: 1 });
    lease.release();
  });

  await t.step("everything pending is aborted when the last attempt times out", async () => {
    const clock = new FakeClock();
    const pool = new LeastConnPool([A, B], { clock });
    const dialer = new FakeDialer();
    dialer.script.set(A, "hang");
    dialer.script.set(B, "hang");
    let settled = false;
    const result = pool.connect({ dial: dialer.dial, timeout: 1000, attempts: 2 });
    result.catch(() => {}).finally(() => settled = true);
    clock.advance(1999);
    await Promise.resolve();
    assert.equal(settled, false);
    clock.advance(1);
    await assert.rejects(result, (error: unknown) => {
      assert.ok(error instanceof UpstreamConnectError);
      assert.deepEqual(error.attempts.map((a) => [a.address, a.reason]), [
        [A, "dial_timeout"],
        [B, "dial_timeout"],
      ]);
      return true;
    });
    assert.equal(dialer.pending.size, 0);
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
    assert.equal(clock.pending, 0);
  });
});

Deno.test("LeastConnPool.connect() skips upstreams it already tried while others remain", async () => {
  // B and C are busy elsewhere (a shared store), so a refused A, back at 0, stays the
  // least loaded: only the skip rule moves the call on to B and then C.
  const counts = new MemoryUpstreamCounts();
  counts.add(B, 2);
  counts.add(C, 2);
  const pool = new LeastConnPool([A, B, C], { counts, clock: new FakeClock() });
  const dialer = new FakeDialer();
  dialer.script.set(A, "refuse");
  dialer.script.set(B, "refuse");
  const { socket, lease } = await pool.connect({ dial: dialer.dial, timeout: 100 });
  assert.equal(socket.address, C);
  assert.deepEqual(dialer.calls, [A, B, C]);
  assert.deepEqual(active(pool), { [A]: 0, [B]: 2, [C]: 3 });
  lease.release();
});

Deno.test("LeastConnPool.connect() retries tried upstreams when attempts exceed them", async () => {
  const pool = new LeastConnPool([A, B], { clock: new FakeClock() });
  let failuresLeft = 3;
  const calls: string[] = [];
  const dial = (address: HostPort): Promise<string> => {
    calls.push(`${address.hostname}:${address.port}`);
    return failuresLeft-- > 0 ? Promise.reject(refusedError()) : Promise.resolve("socket");
  };
  const { socket, lease, failures } = await pool.connect({ dial, timeout: 100, attempts: 4 });
  assert.equal(socket, "socket");
  assert.deepEqual(calls, [A, B, A, B]);
  assert.deepEqual(failures.map((f) => [f.address, f.reason]), [
    [A, "dial_refused"],
    [B, "dial_refused"],
    [A, "dial_refused"],
  ]);
  lease.release();
  assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
});

Deno.test("LeastConnPool.connect() throws UpstreamConnectError after bounded attempts", async (t) => {
  await t.step("default: each healthy upstream once", async () => {
    const pool = new LeastConnPool([A, B, C], { clock: new FakeClock() });
    pool.setHealthy(C, false);
    const dialer = new FakeDialer();
    dialer.script.set(A, "refuse");
    dialer.script.set(B, "error");
    const error = await pool.connect({ dial: dialer.dial, timeout: 100 }).then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof UpstreamConnectError);
    assert.equal(error.name, "UpstreamConnectError");
    assert.deepEqual(error.attempts.map((a) => [a.address, a.reason]), [
      [A, "dial_refused"],
      [B, "dial_error"],
    ]);
    assert.equal(error.cause, error.attempts[1]!.error);
    assert.match(error.message, /^Cannot connect to an upstream: /);
    assert.deepEqual(dialer.calls, [A, B]);
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0, [C]: 0 });
  });
  await t.step("explicit attempts", async () => {
    const pool = new LeastConnPool([A, B, C], { clock: new FakeClock() });
    const dialer = new FakeDialer();
    for (const address of [A, B, C]) dialer.script.set(address, "refuse");
    await assert.rejects(
      pool.connect({ dial: dialer.dial, timeout: 100, attempts: 2 }),
      (error: unknown) => error instanceof UpstreamConnectError && error.attempts.length === 2,
    );
    assert.equal(dialer.calls.length, 2);
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0, [C]: 0 });
  });
});

Deno.test("LeastConnPool.connect() fails closed when no upstream is healthy", async (t) => {
  await t.step("from the start", async () => {
    const pool = new LeastConnPool([A], { initiallyHealthy: false, clock: new FakeClock() });
    const dialer = new FakeDialer();
    await assert.rejects(pool.connect({ dial: dialer.dial, timeout: 100 }), NoHealthyUpstreamError);
    assert.deepEqual(dialer.calls, []);
  });
  await t.step("after failures leave none healthy", async () => {
    const pool = new LeastConnPool([A, B], { clock: new FakeClock() });
    const dialer = new FakeDialer();
    dialer.script.set(A, "refuse");
    dialer.script.set(B, "refuse");
    const error = await pool.connect({
      dial: dialer.dial,
      timeout: 100,
      attempts: 5,
      onDialFailure: (address) => pool.setHealthy(address, false),
    }).then(() => assert.fail("expected a rejection"), (e: unknown) => e);
    assert.ok(error instanceof UpstreamConnectError);
    assert.deepEqual(error.attempts.map((a) => a.address), [A, B]);
    assert.ok(error.cause instanceof NoHealthyUpstreamError);
    assert.deepEqual(dialer.calls, [A, B]);
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
  });
});

Deno.test("LeastConnPool.connect() stops and rethrows when the caller's signal aborts", async (t) => {
  await t.step("while dialling", async () => {
    const clock = new FakeClock();
    const pool = new LeastConnPool([A, B], { clock });
    const dialer = new FakeDialer();
    dialer.script.set(A, "hang");
    const controller = new AbortController();
    const reported: string[] = [];
    const result = pool.connect({
      dial: dialer.dial,
      timeout: 1000,
      signal: controller.signal,
      onDialFailure: (address) => reported.push(address),
    });
    await Promise.resolve();
    assert.equal(pool.active(A), 1);
    const reason = new Error("client went away");
    controller.abort(reason);
    await assert.rejects(result, (error: unknown) => error === reason);
    assert.deepEqual(dialer.calls, [A], "no further upstream is tried");
    assert.deepEqual(reported, [], "a caller abort is not the upstream's fault");
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
    assert.equal(clock.pending, 0);
  });
  await t.step("before the call", async () => {
    const pool = new LeastConnPool([A], { clock: new FakeClock() });
    const dialer = new FakeDialer();
    const reason = new Error("already gone");
    await assert.rejects(
      pool.connect({ dial: dialer.dial, timeout: 100, signal: AbortSignal.abort(reason) }),
      (error: unknown) => error === reason,
    );
    assert.deepEqual(dialer.calls, []);
    assert.equal(pool.active(A), 0);
  });
  await t.step("after a failed attempt", async () => {
    const pool = new LeastConnPool([A, B], { clock: new FakeClock() });
    const controller = new AbortController();
    const reason = new Error("shutdown");
    const dial = (): Promise<never> => {
      controller.abort(reason); // the caller aborts while the first dial fails
      return Promise.reject(refusedError());
    };
    await assert.rejects(
      pool.connect({ dial, timeout: 100, signal: controller.signal }),
      (error: unknown) => error === reason,
    );
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
  });
  await t.step("a connect timeout leaves the caller's signal alone", async () => {
    const clock = new FakeClock();
    const pool = new LeastConnPool([A], { clock });
    const dialer = new FakeDialer();
    dialer.script.set(A, "hang");
    const controller = new AbortController();
    const result = pool.connect({
      dial: dialer.dial,
      timeout: 50,
      signal: controller.signal,
      attempts: 1,
    });
    await Promise.resolve();
    clock.advance(50);
    const error = await result.then(() => assert.fail("expected a rejection"), (e: unknown) => e);
    assert.ok(error instanceof UpstreamConnectError);
    assert.equal(error.attempts[0]!.reason, "dial_timeout");
    assert.ok(error.cause instanceof DOMException);
    assert.equal(error.cause.name, "TimeoutError");
    assert.equal(controller.signal.aborted, false, "the caller's signal is untouched");
  });
});

Deno.test("LeastConnPool.connect() keeps a socket that connected after the caller aborted", async () => {
  const pool = new LeastConnPool([A], { clock: new FakeClock() });
  const controller = new AbortController();
  const dial = (): Promise<string> => {
    controller.abort(); // connected in the same turn the caller gave up
    return Promise.resolve("socket");
  };
  const { socket, lease } = await pool.connect({ dial, timeout: 100, signal: controller.signal });
  assert.equal(socket, "socket", "returned so the caller can close it");
  assert.equal(pool.active(A), 1);
  lease.release();
});

Deno.test("LeastConnPool.connect() rejects invalid options", async (t) => {
  const pool = new LeastConnPool([A], { clock: new FakeClock() });
  const dialer = new FakeDialer();
  for (const timeout of [0, -1, NaN, Infinity]) {
    await t.step(`timeout ${timeout}`, async () => {
      await assert.rejects(pool.connect({ dial: dialer.dial, timeout }), RangeError);
    });
  }
  for (const attempts of [0, -1, 1.5, NaN]) {
    await t.step(`attempts ${attempts}`, async () => {
      await assert.rejects(pool.connect({ dial: dialer.dial, timeout: 1, attempts }), RangeError);
    });
  }
  assert.deepEqual(dialer.calls, []);
  assert.equal(pool.active(A), 0);
});

Deno.test("LeastConnPool.connect() survives an onDialFailure hook that throws", async () => {
  const pool = new LeastConnPool([A, B], { clock: new FakeClock() });
  const dialer = new FakeDialer();
  dialer.script.set(A, "refuse");
  const { socket, lease } = await pool.connect({
    dial: dialer.dial,
    timeout: 100,
    onDialFailure: () => {
      throw new Error("metrics broke");
    },
  });
  assert.equal(socket.address, B);
  assert.deepEqual(active(pool), { [A]: 0, [B]: 1 });
  lease.release();
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

Deno.test("LeastConnPool.connect() keeps counts exact under random async interleavings", async () => {
  const addresses = ["10.0.2.1:80", "10.0.2.2:80", "10.0.2.3:80", "10.0.2.4:80"];
  const violations: string[] = [];
  const outcomes = {
    connected: 0,
    exhausted: 0,
    noHealthy: 0,
    aborted: 0,
    dial_refused: 0,
    dial_timeout: 0,
    dial_error: 0,
  };
  for (let seed = 1; seed <= 20; seed++) {
    const random = prng(seed);
    const clock = new FakeClock();
    const pool = new LeastConnPool(addresses, { clock });
    const configured = new Set(addresses);
    const healthy = new Set(addresses);
    const settles: (() => void)[] = [];
    const dial = (address: HostPort, signal: AbortSignal): Promise<string> => {
      const key = `${address.hostname}:${address.port}`;
      // A throw here would only count as a failed dial, so violations are collected.
      if (!configured.has(key)) violations.push(`seed ${seed}: dialled removed ${key}`);
      if (!healthy.has(key)) violations.push(`seed ${seed}: dialled unhealthy ${key}`);
      const roll = random();
      if (roll < 0.2) return Promise.reject(refusedError());
      if (roll < 0.3) return Promise.reject(new Error("reset"));
      return new Promise((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        if (roll < 0.45) return; // hangs until the timeout or the caller aborts
        settles.push(() => {
          signal.removeEventListener("abort", onAbort);
          resolve(key);
        });
      });
    };
    const leases: UpstreamLease[] = [];
    const calls: Promise<void>[] = [];
    const aborts: AbortController[] = [];
    for (let step = 0; step < 300; step++) {
      const roll = random();
      if (roll < 0.35) {
        const controller = new AbortController();
        aborts.push(controller);
        calls.push(
          pool.connect({
            dial,
            timeout: 10 + Math.floor(random() * 20),
            signal: controller.signal,
            onDialFailure: (_address, reason) => outcomes[reason]++,
          }).then(
            ({ lease }) => void (outcomes.connected++, leases.push(lease)),
            (error: unknown) => {
              if (error instanceof UpstreamConnectError) outcomes.exhausted++;
              else if (error instanceof NoHealthyUpstreamError) outcomes.noHealthy++;
              else outcomes.aborted++;
            },
          ),
        );
      } else if (roll < 0.55) {
        settles.splice(Math.floor(random() * settles.length), 1)[0]?.();
      } else if (roll < 0.65) {
        aborts.splice(Math.floor(random() * aborts.length), 1)[0]?.abort();
      } else if (roll < 0.8) {
        leases.splice(Math.floor(random() * leases.length), 1)[0]?.release();
      } else if (roll < 0.9) {
        const address = addresses[Math.floor(random() * addresses.length)]!;
        const state = random() < 0.7;
        if (pool.setHealthy(address, state)) {
          if (state) healthy.add(address);
          else healthy.delete(address);
        }
      } else if (roll < 0.95) {
        const next = addresses.filter(() => random() < 0.7);
        pool.setUpstreams(next);
        for (const address of next) {
          if (!configured.has(address) && pool.active(address) === 0) healthy.add(address);
        }
        configured.clear();
        for (const address of next) configured.add(address);
      } else {
        clock.advance(Math.floor(random() * 15));
      }
      await Promise.resolve();
      await Promise.resolve();
    }
    // Let everything finish: connect what is pending, time out the rest, until every
    // call has settled (a failed dial may start another one).
    let settled = 0;
    const all = Promise.all(calls.map((call) => call.then(() => void settled++)));
    for (let round = 0; settled < calls.length; round++) {
      assert.ok(round < 100, `seed ${seed}: calls do not settle`);
      for (const settle of settles.splice(0)) settle();
      clock.advance(1000);
      for (let i = 0; i < 10; i++) await Promise.resolve();
    }
    await all;
    for (const address of addresses) {
      const held = leases.filter((lease) => lease.address === address).length;
      assert.equal(pool.active(address), held, `seed ${seed}: ${address}`);
    }
    for (const lease of leases) lease.release();
    for (const address of addresses) assert.equal(pool.active(address), 0, `seed ${seed}`);
    assert.ok(pool.snapshot().every((s) => s.active === 0 && s.removed === undefined));
    assert.equal(clock.pending, 0, `seed ${seed}: timers left`);
  }
  assert.deepEqual(violations, []);
  for (const [outcome, count] of Object.entries(outcomes)) {
    assert.ok(count > 0, `the run never produced ${outcome}`);
  }
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

function close(server: Server): Promise<void> {
  return new Promise((resolve, reject) =>
    server.close((error) => error ? reject(error) : resolve())
  );
}

Deno.test("LeastConnPool.connect() dials TCP and skips a refused upstream", async () => {
  const closed = createServer();
  const closedPort = await listen(closed);
  await close(closed); // nothing listens here any more: the dial is refused
  const accepted: Socket[] = [];
  const server = createServer((socket) => accepted.push(socket));
  const gotConnection = new Promise<void>((resolve) => server.once("connection", () => resolve()));
  const port = await listen(server);
  try {
    const dead = `127.0.0.1:${closedPort}`;
    const live = `127.0.0.1:${port}`;
    const pool = new LeastConnPool([dead, live]);
    const reported: [string, DialFailureReason][] = [];
    const { socket, lease } = await pool.connect({
      dial: dialTcp,
      timeout: 5000,
      onDialFailure: (address, reason) => reported.push([address, reason]),
    });
    using _lease = lease;
    await gotConnection;
    try {
      assert.deepEqual(reported, [[dead, "dial_refused"]]);
      assert.equal(lease.address, live);
      assert.equal(socket.remotePort, port);
      assert.deepEqual(pool.snapshot().map((s) => s.active), [0, 1]);
    } finally {
      const socketClosed = new Promise((resolve) => socket.once("close", resolve));
      socket.destroy();
      for (const peer of accepted) peer.destroy();
      await socketClosed;
    }
  } finally {
    await close(server);
  }
});
