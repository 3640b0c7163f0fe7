import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import type { HostPort } from "../lib/core/address.ts";
import { FakeClock } from "../lib/core/clock.ts";
import { dialTcp } from "../lib/upstream/dial.ts";
import { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";
import { MemoryUpstreamCounts } from "../lib/upstream/memory_counts.ts";
import { NoHealthyUpstreamError, UpstreamConnectError } from "../lib/upstream/pool_errors.ts";
import type { DialFailureReason } from "../lib/upstream/upstream_connection.ts";
import type { UpstreamLease } from "../lib/upstream/upstream_lease.ts";
import {
  active,
  type Behaviour,
  FakeDialer,
  prng,
  refusedError,
  shortLivedPicks,
} from "./_pool_fixtures.ts";

const A = "10.0.0.1:80";
const B = "10.0.0.2:80";
const C = "10.0.0.3:80";

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

Deno.test("LeastConnPool.connect() does not dial again an upstream whose failure isFinal says is for good", async (t) => {
  const final = Object.assign(new Error("certificate not trusted"), { final: true });
  const isFinal = (error: unknown) => (error as { final?: boolean }).final === true;
  await t.step("alone: one dial, not three", async () => {
    const pool = new LeastConnPool([A], { clock: new FakeClock() });
    const calls: string[] = [];
    const dial = (address: HostPort): Promise<string> => {
      calls.push(`${address.hostname}:${address.port}`);
      return Promise.reject(final);
    };
    const error = await pool.connect({ dial, timeout: 100, attempts: 3, isFinal }).then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof UpstreamConnectError);
    assert.deepEqual(calls, [A]);
    assert.equal(error.attempts[0]!.error, final);
    assert.ok(error.cause instanceof NoHealthyUpstreamError);
  });
  await t.step("with others: they are tried, and retried after a transient failure", async () => {
    const pool = new LeastConnPool([A, B], { clock: new FakeClock() });
    const calls: string[] = [];
    const dial = (address: HostPort): Promise<string> => {
      const at = `${address.hostname}:${address.port}`;
      calls.push(at);
      return Promise.reject(at === A ? final : refusedError());
    };
    await assert.rejects(pool.connect({ dial, timeout: 100, attempts: 4, isFinal }));
    assert.deepEqual(calls.toSorted(), [A, B, B, B]);
    assert.deepEqual(active(pool), { [A]: 0, [B]: 0 });
  });
  await t.step("a refused dial of a single upstream is retried", async () => {
    const pool = new LeastConnPool([A], { clock: new FakeClock() });
    const dialer = new FakeDialer();
    dialer.script.set(A, "refuse");
    await assert.rejects(pool.connect({ dial: dialer.dial, timeout: 100, attempts: 3, isFinal }));
    assert.deepEqual(dialer.calls, [A, A, A]);
  });
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
