import assert from "node:assert/strict";
import type { HostPort } from "../lib/core/address.ts";
import { FakeClock } from "../lib/core/clock.ts";
import {
  HealthCheckError,
  type HealthCheckSettings,
  type ProbeFailureReason,
} from "../lib/upstream/health_check.ts";
import type { HealthChange, HealthChangeEvent } from "../lib/upstream/health_event.ts";
import { HealthProbe, type HealthProbeOptions } from "../lib/upstream/health_probe.ts";

const A = "10.0.0.1:6379";
const B = "10.0.0.2:6379";
const C = "10.0.0.3:6379";
const INTERVAL = 30_000;
const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
const bytes = (value: string): Uint8Array => new TextEncoder().encode(value);

interface Call {
  address: string;
  settings: HealthCheckSettings;
  signal: AbortSignal;
  /** Resolves the check; returns once the probe has handled the result. */
  pass(): Promise<void>;
  /** Rejects the check; returns once the probe has handled the result. */
  fail(reason: ProbeFailureReason): Promise<void>;
  /** Returns once the check has settled and the probe has handled it. */
  settled(): Promise<void>;
}

/**
 * A check the test answers call by call. The probe attaches its reaction to the returned
 * promise when it calls the check, so any reaction the test attaches later (in `pass`,
 * `fail`, `settled`) runs after the probe has handled the result: no ticks are guessed.
 */
class ScriptedCheck {
  readonly calls: Call[] = [];
  #honourAbort: boolean;

  /** @param honourAbort Whether a call rejects with the signal's reason on abort. */
  constructor(honourAbort = true) {
    this.#honourAbort = honourAbort;
  }

  readonly check = (
    address: HostPort,
    settings: HealthCheckSettings,
    signal: AbortSignal,
  ): Promise<void> => {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    if (this.#honourAbort) {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    }
    this.calls.push({
      address: `${address.hostname}:${address.port}`,
      settings,
      signal,
      pass: async () => {
        resolve();
        await promise;
      },
      fail: async (reason) => {
        reject(new HealthCheckError(reason, `Scripted failure: ${reason}`));
        await promise.catch(() => {});
      },
      settled: async () => {
        await promise.catch(() => {});
      },
    });
    return promise;
  };

  of(address: string): Call[] {
    return this.calls.filter((call) => call.address === address);
  }

  last(address: string): Call {
    const calls = this.of(address);
    assert.ok(calls.length > 0, `no check of ${address}`);
    return calls[calls.length - 1]!;
  }
}

function setup(
  targets: Parameters<HealthProbe["setTargets"]>[0],
  options: HealthProbeOptions = {},
  scripted: ScriptedCheck = new ScriptedCheck(),
): { probe: HealthProbe; clock: FakeClock; scripted: ScriptedCheck; changes: HealthChange[] } {
  const clock = options.clock instanceof FakeClock ? options.clock : new FakeClock();
  const probe = new HealthProbe(targets, {
    clock,
    check: scripted.check,
    random: () => 0.5, // no jitter unless a test says otherwise
    ...options,
  });
  const changes: HealthChange[] = [];
  probe.addEventListener("change", (event) => changes.push((event as HealthChangeEvent).change));
  return { probe, clock, scripted, changes };
}

/** A FakeClock whose time can jump without firing timers, as when the event loop stalls. */
class StallingClock extends FakeClock {
  #skew = 0;

  override now(): number {
    return super.now() + this.#skew;
  }

  /** Time passes by `ms` while no timer runs; every pending timer will fire `ms` late. */
  stall(ms: number): void {
    this.#skew += ms;
  }
}

Deno.test("HealthProbe.start() probes every target at once and ready waits for the first round", async () => {
  const { probe, scripted, changes } = setup([A, B]);
  await using _ = probe;
  let ready = false;
  const readyDone = probe.ready.then(() => ready = true);
  assert.equal(scripted.calls.length, 0);

  probe.start();
  assert.deepEqual(scripted.calls.map((call) => call.address), [A, B]);
  assert.equal(probe.isHealthy(A), false);
  assert.deepEqual(probe.snapshot().map((health) => health.state), ["unknown", "unknown"]);

  await scripted.calls[0]!.pass();
  assert.equal(probe.isHealthy(A), true);
  assert.equal(ready, false);
  await scripted.calls[1]!.fail("probe_refused");
  await readyDone;
  assert.equal(probe.isHealthy(B), false);
  assert.deepEqual(changes, [
    { address: A, healthy: true, reason: "probe_ok", at: 0 },
    { address: B, healthy: false, reason: "probe_refused", at: 0 },
  ]);

  probe.start();
  assert.equal(scripted.calls.length, 2, "a second start() must not probe again");
});

Deno.test("HealthProbe applies rise and fall thresholds, including while flapping", async (t) => {
  const cases: { name: string; rise: number; fall: number; results: string; states: string }[] = [
    { name: "defaults flip on every result", rise: 1, fall: 1, results: "+-+", states: "HUH" },
    { name: "fall=3 needs three failures", rise: 1, fall: 3, results: "+---+", states: "HHHUH" },
    { name: "rise=3 needs three successes", rise: 3, fall: 1, results: "-+++-", states: "UUUHU" },
    {
      name: "flapping never reaches fall=2",
      rise: 1,
      fall: 2,
      results: "+-+-+-",
      states: "HHHHHH",
    },
    {
      name: "flapping never reaches rise=2",
      rise: 2,
      fall: 1,
      results: "-+-+-+",
      states: "UUUUUU",
    },
    {
      name: "a success restarts the fall count",
      rise: 1,
      fall: 2,
      results: "+-+--",
      states: "HHHHU",
    },
  ];
  for (const { name, rise, fall, results, states } of cases) {
    await t.step(name, async () => {
      const { probe, clock, scripted, changes } = setup([A], { rise, fall });
      await using _ = probe;
      probe.start();
      const seen: string[] = [];
      for (const [i, result] of [...results].entries()) {
        assert.equal(scripted.calls.length, i + 1, "one probe per interval");
        const call = scripted.calls[i]!;
        if (result === "+") await call.pass();
        else await call.fail("probe_refused");
        const { state, successes, failures } = probe.snapshot()[0]!;
        seen.push(state === "healthy" ? "H" : "U");
        const streak = results.slice(0, i + 1).match(/(\+*|-*)$/)![0].length;
        assert.deepEqual([successes, failures], result === "+" ? [streak, 0] : [0, streak]);
        clock.advance(INTERVAL);
      }
      assert.equal(seen.join(""), states);
      const transitions = [...states].filter((s, i) => i === 0 || s !== states[i - 1]).length;
      assert.equal(changes.length, transitions);
      assert.ok(
        changes.every((c) => c.reason === (c.healthy ? "probe_ok" : "probe_refused")),
      );
    });
  }
});

Deno.test("HealthProbe schedules each probe interval ± jitter after the previous one started", async (t) => {
  const cases = [
    { name: "lowest draw: 90% of the interval", random: 0, jitter: undefined, at: 27_000 },
    { name: "highest draw: just under 110%", random: 1 - 2 ** -53, jitter: undefined, at: 33_000 },
    { name: "middle draw: the interval", random: 0.5, jitter: undefined, at: 30_000 },
    { name: "jitter 0 ignores the draw", random: 0, jitter: 0, at: 30_000 },
    { name: "jitter 0.5, lowest draw", random: 0, jitter: 0.5, at: 15_000 },
    { name: "out-of-range draws are clamped", random: 7, jitter: 0.5, at: 45_000 },
  ];
  for (const { name, random, jitter, at } of cases) {
    await t.step(name, async () => {
      const { probe, clock, scripted } = setup([A], { random: () => random, jitter });
      await using _ = probe;
      probe.start();
      clock.advance(300);
      await scripted.calls[0]!.pass(); // the check took 300 ms; the interval counts from its start
      clock.advance(Math.ceil(at) - 300 - 1);
      assert.equal(scripted.calls.length, 1, "probed too early");
      clock.advance(1);
      assert.equal(scripted.calls.length, 2, "not probed on time");
    });
  }

  await t.step("targets drawing different values do not probe in lockstep", async () => {
    const draws = [0, 0.999];
    const { probe, clock, scripted } = setup([A, B], { random: () => draws.shift() ?? 0.5 });
    await using _ = probe;
    probe.start();
    await scripted.calls[0]!.pass();
    await scripted.calls[1]!.pass();
    clock.advance(27_000);
    assert.deepEqual(scripted.calls.map((call) => call.address), [A, B, A]);
    clock.advance(5_999);
    assert.deepEqual(scripted.calls.map((call) => call.address), [A, B, A, B]);
  });
});

Deno.test("HealthProbe keeps one probe in flight per target", async () => {
  const { probe, clock, scripted } = setup([A], { interval: 1_000, timeout: 60_000 });
  await using _ = probe;
  probe.start();
  clock.advance(5_000);
  assert.equal(scripted.calls.length, 1, "a new probe started while one was in flight");
  await scripted.calls[0]!.pass();
  clock.advance(0); // overdue: the next probe starts right away
  assert.equal(scripted.calls.length, 2);
  clock.advance(999);
  assert.equal(scripted.calls.length, 2);
});

Deno.test("HealthProbe fails a probe with probe_timeout and aborts its check", async () => {
  const { probe, clock, scripted, changes } = setup([A], { timeout: 1_000 });
  await using _ = probe;
  probe.start();
  const call = scripted.calls[0]!;
  clock.advance(999);
  assert.equal(probe.snapshot()[0]!.lastResult, undefined);
  assert.equal(call.signal.aborted, false);

  clock.advance(1);
  assert.deepEqual(probe.snapshot()[0]!.lastResult, {
    ok: false,
    reason: "probe_timeout",
    latencyMs: 1_000,
    at: 1_000,
  });
  assert.equal(call.signal.aborted, true);
  assert.equal((call.signal.reason as DOMException).name, "TimeoutError");
  assert.deepEqual(changes, [{ address: A, healthy: false, reason: "probe_timeout", at: 1_000 }]);

  await call.settled();
  clock.advance(INTERVAL - 1_000 - 1);
  assert.equal(scripted.calls.length, 1);
  clock.advance(1);
  assert.equal(scripted.calls.length, 2, "the next probe counts from the timed-out one's start");
});

Deno.test("HealthProbe grants a check one grace period when the event loop stalled", async (t) => {
  await t.step("a reply that arrives after a stall passes", async () => {
    const clock = new StallingClock();
    const { probe, scripted, changes } = setup([A], { clock, timeout: 1_000 });
    await using _ = probe;
    probe.start();
    const call = scripted.calls[0]!;
    clock.stall(5_000); // e.g. a burst of TLS handshakes blocks the loop for 5 s
    clock.advance(1_000); // the timeout timer runs 5 s late, before the waiting reply
    assert.equal(probe.snapshot()[0]!.lastResult, undefined, "timed out a stalled check");
    assert.equal(call.signal.aborted, false);
    await call.pass();
    assert.equal(probe.isHealthy(A), true);
    assert.deepEqual(changes.map((c) => c.reason), ["probe_ok"]);
  });

  await t.step("a check still silent after the grace period times out", async () => {
    const clock = new StallingClock();
    const { probe, scripted } = setup([A], { clock, timeout: 1_000 });
    await using _ = probe;
    probe.start();
    clock.stall(5_000);
    clock.advance(1_000);
    clock.advance(999);
    assert.equal(probe.snapshot()[0]!.lastResult, undefined);
    clock.advance(1);
    assert.equal(probe.snapshot()[0]!.lastResult?.reason, "probe_timeout");
    assert.equal(scripted.calls[0]!.signal.aborted, true);
  });

  await t.step("a timer late by at most timeout / 2 times out at once", async () => {
    const clock = new StallingClock();
    const { probe } = setup([A], { clock, timeout: 1_000 });
    await using _ = probe;
    probe.start();
    clock.stall(500);
    clock.advance(1_000);
    assert.equal(probe.snapshot()[0]!.lastResult?.reason, "probe_timeout");
  });

  await t.step("the grace period is granted once per probe", async () => {
    const clock = new StallingClock();
    const { probe } = setup([A], { clock, timeout: 1_000 });
    await using _ = probe;
    probe.start();
    clock.stall(5_000);
    clock.advance(1_000);
    assert.equal(probe.snapshot()[0]!.lastResult, undefined);
    clock.stall(5_000);
    clock.advance(1_000);
    assert.equal(probe.snapshot()[0]!.lastResult?.reason, "probe_timeout");
  });
});

Deno.test("HealthProbe maps what a check throws to a reason", async (t) => {
  const cases: { name: string; check: () => Promise<void>; reason: string }[] = [
    {
      name: "a HealthCheckError keeps its reason",
      check: () => Promise.reject(new HealthCheckError("probe_bad_reply", "Bad reply")),
      reason: "probe_bad_reply",
    },
    {
      name: "a TimeoutError is probe_timeout",
      check: () => Promise.reject(new DOMException("Timed out", "TimeoutError")),
      reason: "probe_timeout",
    },
    {
      name: "any other rejection is probe_error",
      check: () => Promise.reject(new Error("boom")),
      reason: "probe_error",
    },
    {
      name: "a synchronous throw is probe_error",
      check: () => {
        throw new Error("boom");
      },
      reason: "probe_error",
    },
  ];
  for (const { name, check, reason } of cases) {
    await t.step(name, async () => {
      await using probe = new HealthProbe([A], { clock: new FakeClock(), check });
      probe.start();
      await probe.ready;
      assert.equal(probe.snapshot()[0]!.lastResult?.reason, reason);
      assert.equal(probe.isHealthy(A), false);
    });
  }
});

Deno.test("HealthProbe counts rise and fall on probes only", async () => {
  const { probe, clock, scripted, changes } = setup([A], { rise: 2, fall: 2 });
  await using _ = probe;
  probe.start();
  await scripted.calls[0]!.fail("probe_refused");
  assert.equal(probe.isHealthy(A), false);
  assert.equal("reportFailure" in probe, false, "passive failures go to an OutlierDetector");
  clock.advance(INTERVAL);
  await scripted.calls[1]!.pass();
  assert.equal(probe.isHealthy(A), false, "one success of rise 2");
  clock.advance(INTERVAL);
  await scripted.calls[2]!.pass();
  assert.equal(probe.isHealthy(A), true);
  clock.advance(INTERVAL);
  await scripted.calls[3]!.fail("probe_timeout");
  assert.equal(probe.isHealthy(A), true, "one failure of fall 2");
  assert.equal(probe.snapshot()[0]!.failures, 1);
  clock.advance(INTERVAL);
  await scripted.calls[4]!.fail("probe_timeout");
  assert.equal(probe.isHealthy(A), false);
  assert.deepEqual(changes.map((c) => [c.healthy, c.reason, c.at]), [
    [false, "probe_refused", 0],
    [true, "probe_ok", 2 * INTERVAL],
    [false, "probe_timeout", 4 * INTERVAL],
  ]);
});

Deno.test("HealthProbe.setTargets() keeps the state of targets that stay", async () => {
  const { probe, clock, scripted, changes } = setup([A, B], {
    rise: 2,
    fall: 2,
    timeout: INTERVAL,
  });
  await using _ = probe;
  probe.start();
  await scripted.last(A).pass(); // B's first probe stays in flight
  clock.advance(INTERVAL / 2);

  probe.setTargets([A, C]);
  assert.equal(scripted.last(B).signal.aborted, true, "the removed target's check goes on");
  assert.equal((scripted.last(B).signal.reason as DOMException).name, "AbortError");
  assert.deepEqual(scripted.calls.map((call) => call.address), [A, B, C], "C probed at once");
  assert.deepEqual(probe.snapshot().map((h) => [h.address, h.state, h.successes]), [
    [A, "healthy", 1],
    [C, "unknown", 0],
  ]);
  assert.equal(probe.isHealthy(B), false);

  let ready = false;
  const readyDone = probe.ready.then(() => ready = true);
  await scripted.last(B).settled();
  assert.equal(ready, false, "ready must wait for the new target");
  await scripted.last(C).fail("probe_refused");
  await readyDone;
  assert.deepEqual(changes.map((c) => c.address), [A, C], "no event for the removed target");

  clock.advance(INTERVAL / 2 - 1);
  assert.equal(scripted.of(A).length, 1);
  clock.advance(1);
  assert.equal(scripted.of(A).length, 2, "A keeps its schedule");
  assert.equal(scripted.of(B).length, 1, "B is no longer probed");
});

Deno.test("HealthProbe.setTargets() reschedules a target whose interval changed", async () => {
  const { probe, clock, scripted } = setup([A]);
  await using _ = probe;
  probe.start();
  await scripted.calls[0]!.pass();
  clock.advance(15_000);
  probe.setTargets([{ address: A, settings: { interval: 20_000 } }]);
  clock.advance(4_999);
  assert.equal(scripted.calls.length, 1);
  clock.advance(1);
  assert.equal(scripted.calls.length, 2);
  assert.equal(scripted.calls[1]!.settings.interval, 20_000);
  probe.setTargets([{ address: A, settings: { interval: 5_000 } }]); // in flight: next time
  await scripted.calls[1]!.pass();
  clock.advance(5_000);
  assert.equal(scripted.calls.length, 3);
  await scripted.calls[2]!.pass();
  assert.equal(probe.snapshot()[0]!.successes, 3, "state survives setting changes");
});

Deno.test("HealthProbe.setTargets() validates the whole list before changing anything", async (t) => {
  const { probe } = setup([A]);
  await using _ = probe;
  await t.step("an address that is not host:port", () => {
    assert.throws(() => probe.setTargets([B, "no-port"]), TypeError);
  });
  await t.step("an address listed twice with different settings", () => {
    assert.throws(
      () => probe.setTargets([B, { address: B, settings: { expect: "+OK" } }]),
      (error: unknown) => error instanceof TypeError && /listed twice/.test(error.message),
    );
  });
  await t.step("a setting out of range names the target", () => {
    assert.throws(
      () => probe.setTargets([{ address: B, settings: { rise: 0 } }]),
      (error: unknown) => error instanceof RangeError && error.message.includes(B),
    );
  });
  assert.deepEqual(probe.snapshot().map((h) => h.address), [A]);
  await t.step("the same address twice with the same settings is one target", () => {
    probe.setTargets([B, B]);
    assert.deepEqual(probe.snapshot().map((h) => h.address), [B]);
  });
});

Deno.test("HealthProbe merges each target's settings over the defaults", async () => {
  const { probe, scripted } = setup(
    [A, { address: B, settings: { expect: bytes("+OK"), timeout: 250 } }],
    { send: "PING\r\n", expect: "+PONG", timeout: 500 },
  );
  await using _ = probe;
  probe.start();
  const [a, b] = [scripted.last(A).settings, scripted.last(B).settings];
  assert.deepEqual([text(a.send), text(a.expect), a.timeout], ["PING\r\n", "+PONG", 500]);
  assert.deepEqual([text(b.send), text(b.expect), b.timeout], ["PING\r\n", "+OK", 250]);
  assert.deepEqual([a.interval, a.rise, a.fall, a.jitter], [30_000, 1, 1, 0.1]);
});

Deno.test("HealthProbe rejects settings out of range", async (t) => {
  const cases: [string, HealthProbeOptions][] = [
    ["interval 0", { interval: 0 }],
    ["interval NaN", { interval: NaN }],
    ["interval past the timer limit", { interval: 2 ** 31 }],
    ["negative timeout", { timeout: -1 }],
    ["rise 0", { rise: 0 }],
    ["fractional fall", { fall: 1.5 }],
    ["jitter above 1", { jitter: 1.5 }],
  ];
  for (const [name, options] of cases) {
    await t.step(name, () => {
      assert.throws(() => new HealthProbe([A], options), RangeError);
    });
  }
});

Deno.test("HealthProbe.close() cancels timers, aborts checks and waits for them", async () => {
  const scripted = new ScriptedCheck(false); // checks that settle only when the test says so
  const { probe, clock, changes } = setup([A, B], {}, scripted);
  probe.start();
  await scripted.last(A).pass(); // A now waits on its interval timer, B is in flight
  assert.equal(clock.pending, 2);

  let closed = false;
  const closing = probe.close().then(() => closed = true);
  assert.equal(clock.pending, 0, "timers left behind");
  assert.equal(scripted.last(B).signal.aborted, true);
  assert.equal((scripted.last(B).signal.reason as DOMException).name, "AbortError");
  await probe.ready; // resolves on close even though B never answered
  assert.equal(closed, false, "close() returned before the check settled");

  await scripted.last(B).pass();
  await closing;
  assert.equal(probe.close(), probe.close(), "close() is idempotent");
  assert.equal(probe.snapshot()[1]!.state, "unknown", "a result after close is ignored");
  probe.start();
  clock.advance(10 * INTERVAL);
  assert.equal(scripted.calls.length, 2);
  assert.deepEqual(changes.map((c) => c.address), [A]);
  assert.equal(probe.isHealthy(A), true, "state stays readable after close");
});

Deno.test("HealthProbe[Symbol.asyncDispose]() closes the probe", async () => {
  const { probe, clock, scripted } = setup([A]);
  {
    await using _ = probe;
    probe.start();
  }
  assert.equal(scripted.calls[0]!.signal.aborted, true);
  assert.equal(clock.pending, 0);
});

Deno.test("HealthProbe closes when its signal aborts", async () => {
  const controller = new AbortController();
  const { probe, clock, scripted } = setup([A], { signal: controller.signal });
  probe.start();
  controller.abort();
  assert.equal(scripted.calls[0]!.signal.aborted, true);
  assert.equal(clock.pending, 0);
  await probe.close();

  const { probe: late, scripted: lateChecks } = setup([A], { signal: AbortSignal.abort() });
  late.start();
  assert.equal(lateChecks.calls.length, 0, "an already aborted signal must keep it closed");
  await late.ready;
});
