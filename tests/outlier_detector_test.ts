import assert from "node:assert/strict";
import { FakeClock } from "../lib/core/clock.ts";
import { type EjectionChange, EjectionEvent } from "../lib/upstream/health_event.ts";
import {
  DEFAULT_OUTLIER_SETTINGS,
  forwardOutcome,
  isLocalDialError,
  OutlierDetector,
  type OutlierDetectorOptions,
} from "../lib/upstream/outlier_detector.ts";

const A = "10.0.0.1:80";
const B = "10.0.0.2:80";
const C = "10.0.0.3:80";
const D = "10.0.0.4:80";
const BASE = 30_000;

function setup(addresses: string[], options: OutlierDetectorOptions = {}) {
  const clock = new FakeClock();
  const detector = new OutlierDetector(addresses, { clock, ...options });
  const changes: EjectionChange[] = [];
  detector.addEventListener("ejection", (event) => {
    assert.ok(event instanceof EjectionEvent);
    changes.push(event.change);
  });
  return { clock, detector, changes };
}

function fail(detector: OutlierDetector, address: string, times: number, reason = "dial_timeout") {
  for (let i = 0; i < times; i++) {
    detector.reportFailure(address, reason as "dial_timeout");
  }
}

Deno.test("OutlierDetector defaults follow Envoy's consecutive failures and ejection times", () => {
  assert.deepEqual({ ...DEFAULT_OUTLIER_SETTINGS }, {
    consecutiveFailures: 5,
    baseEjectionTime: 30_000,
    maxEjectionTime: 300_000,
    maxEjectedPercent: 50,
  });
  using detector = new OutlierDetector([A]);
  assert.deepEqual(detector.settings, DEFAULT_OUTLIER_SETTINGS);
});

Deno.test("OutlierDetector.reportFailure() ejects after consecutive failures only", async (t) => {
  await t.step("the fifth consecutive failure ejects", () => {
    const { detector, changes } = setup([A, B]);
    using _ = detector;
    fail(detector, A, 4);
    assert.equal(detector.isEjected(A), false);
    assert.equal(detector.snapshot()[0]!.dialFailures, 4);
    fail(detector, A, 1, "dial_refused");
    assert.equal(detector.isEjected(A), true);
    assert.deepEqual(changes, [
      { address: A, ejected: true, reason: "dial_refused", at: 0, until: BASE },
    ]);
    const [state] = detector.snapshot();
    assert.deepEqual(state, {
      address: A,
      ejected: true,
      reason: "dial_refused",
      since: 0,
      until: BASE,
      ejections: 1,
      dialFailures: 0,
      resetFailures: 0,
    });
    assert.equal(detector.ejectedCount, 1);
  });

  await t.step("a successful dial ends a streak of dial failures", () => {
    const { detector } = setup([A, B]);
    using _ = detector;
    fail(detector, A, 4);
    detector.reportSuccess(A, "connected");
    fail(detector, A, 4);
    assert.equal(detector.isEjected(A), false);
  });

  await t.step("a successful dial does not end a streak of resets before any byte", () => {
    const { detector } = setup([A, B]);
    using _ = detector;
    for (let i = 0; i < 4; i++) {
      detector.reportSuccess(A, "connected"); // the upstream accepts...
      detector.reportFailure(A, "upstream_reset"); // ...and resets before a byte
    }
    assert.equal(detector.snapshot()[0]!.resetFailures, 4);
    detector.reportSuccess(A, "connected");
    detector.reportFailure(A, "upstream_reset");
    assert.equal(detector.isEjected(A), true);
    assert.equal(detector.snapshot()[0]!.reason, "upstream_reset");
  });

  await t.step("an answered connection ends a streak of resets", () => {
    const { detector } = setup([A, B]);
    using _ = detector;
    fail(detector, A, 4, "upstream_reset");
    detector.reportSuccess(A, "answered");
    fail(detector, A, 4, "upstream_timeout");
    assert.equal(detector.isEjected(A), false);
    assert.equal(detector.isFailing(A), true);
    detector.reportSuccess(A, "answered");
    assert.equal(detector.isFailing(A), false);
  });

  await t.step("0 consecutive failures turns ejection off", () => {
    const { detector, changes } = setup([A, B], { consecutiveFailures: 0 });
    using _ = detector;
    fail(detector, A, 100);
    assert.equal(detector.isEjected(A), false);
    assert.deepEqual(changes, []);
  });

  await t.step("unknown addresses are ignored", () => {
    const { detector, changes } = setup([A, B]);
    using _ = detector;
    fail(detector, C, 10);
    detector.reportSuccess(C, "answered");
    assert.equal(detector.isEjected(C), false);
    assert.deepEqual(changes, []);
  });
});

Deno.test("OutlierDetector ejects repeat offenders for longer, up to the maximum", () => {
  const { clock, detector, changes } = setup([A, B], {
    consecutiveFailures: 1,
    maxEjectionTime: 100_000,
  });
  using _ = detector;
  const durations: number[] = [];
  for (let i = 0; i < 5; i++) {
    fail(detector, A, 1);
    const { since, until } = detector.snapshot()[0]!;
    durations.push(until! - since!);
    clock.advance(until! - clock.now());
    assert.equal(detector.isEjected(A), false);
  }
  assert.deepEqual(durations, [30_000, 60_000, 90_000, 100_000, 100_000]);
  assert.deepEqual(
    changes.filter((c) => !c.ejected).map((c) => c.reason),
    Array(5).fill("ejection_ended"),
  );
  assert.equal(detector.snapshot()[0]!.ejections, 4, "capped at ceil(max / base)");

  // One recent ejection is forgiven per base time back in rotation.
  clock.advance(2 * BASE);
  assert.equal(detector.snapshot()[0]!.ejections, 2);
  fail(detector, A, 1);
  const { since, until } = detector.snapshot()[0]!;
  assert.equal(until! - since!, 90_000);
  clock.advance(90_000 + 10 * BASE);
  assert.equal(detector.snapshot()[0]!.ejections, 0);
  fail(detector, A, 1);
  assert.equal(detector.snapshot()[0]!.until! - clock.now(), BASE);
});

Deno.test("OutlierDetector ignores reports about an upstream while it is ejected", () => {
  const { clock, detector } = setup([A, B], { consecutiveFailures: 2 });
  using _ = detector;
  fail(detector, A, 2);
  fail(detector, A, 10);
  assert.equal(detector.snapshot()[0]!.dialFailures, 0);
  assert.equal(detector.snapshot()[0]!.until, BASE, "not extended");
  clock.advance(BASE);
  fail(detector, A, 1);
  assert.equal(detector.isEjected(A), false, "the streak starts over after the ejection");
});

Deno.test("OutlierDetector never ejects beyond its cap", async (t) => {
  await t.step("a group of one is never ejected", () => {
    const { detector, changes } = setup([A], { consecutiveFailures: 1 });
    using _ = detector;
    fail(detector, A, 50);
    assert.equal(detector.isEjected(A), false);
    assert.deepEqual(changes, []);
  });

  await t.step("a group of two keeps one, even at 100%", () => {
    const { detector } = setup([A, B], { consecutiveFailures: 1, maxEjectedPercent: 100 });
    using _ = detector;
    for (let i = 0; i < 20; i++) {
      fail(detector, A, 1);
      fail(detector, B, 1);
    }
    assert.equal(detector.ejectedCount, 1);
    assert.equal(detector.isEjected(A), true);
    assert.equal(detector.isEjected(B), false);
  });

  await t.step("the percentage rounds down but allows one", () => {
    const many = Array.from({ length: 10 }, (_, i) => `10.0.1.${i}:80`);
    for (const [percent, cap] of [[50, 5], [10, 1], [1, 1], [0, 0], [100, 9]]) {
      const { detector } = setup(many, { consecutiveFailures: 1, maxEjectedPercent: percent });
      using _ = detector;
      for (const address of many) fail(detector, address, 3);
      assert.equal(detector.ejectedCount, cap, `${percent}%`);
    }
  });

  await t.step("an upstream is not ejected when no other is healthy and in rotation", () => {
    const down = new Set([B, C]);
    const { detector } = setup([A, B, C, D], {
      consecutiveFailures: 1,
      maxEjectedPercent: 100,
      isHealthy: (address) => !down.has(address),
    });
    using _ = detector;
    fail(detector, A, 1);
    assert.equal(detector.isEjected(A), true);
    fail(detector, D, 5);
    assert.equal(detector.isEjected(D), false, "D is the last one left");
    down.delete(C);
    fail(detector, D, 1);
    assert.equal(detector.isEjected(D), true, "the streak kept counting; C is back");
  });

  await t.step("an ejection that ends makes room for the next", () => {
    const { clock, detector } = setup([A, B, C], { consecutiveFailures: 1 });
    using _ = detector;
    fail(detector, A, 1);
    fail(detector, B, 1);
    assert.deepEqual([detector.isEjected(A), detector.isEjected(B)], [true, false]);
    clock.advance(BASE);
    fail(detector, B, 1);
    assert.deepEqual([detector.isEjected(A), detector.isEjected(B)], [false, true]);
  });
});

Deno.test("OutlierDetector.setTargets() keeps the state of upstreams that stay", () => {
  const { clock, detector, changes } = setup([A, B, C], { consecutiveFailures: 1 });
  using _ = detector;
  fail(detector, A, 1);
  fail(detector, C, 1); // blocked by the cap (1 of 3)
  detector.setTargets([A, D, C], { consecutiveFailures: 3 });
  assert.equal(detector.isEjected(A), true);
  assert.deepEqual(detector.snapshot().map((s) => s.address), [A, D, C]);
  assert.equal(detector.settings.consecutiveFailures, 3);
  assert.equal(detector.snapshot()[2]!.dialFailures, 1);

  detector.setTargets([B, D]); // A's timer goes with it
  assert.equal(detector.ejectedCount, 0);
  assert.equal(clock.pending, 0);
  assert.throws(() => detector.setTargets([B], { maxEjectedPercent: 101 }), RangeError);
  assert.deepEqual(detector.snapshot().map((s) => s.address), [B, D]);

  fail(detector, B, 3);
  assert.equal(detector.isEjected(B), true);
  detector.setTargets([B, D], { consecutiveFailures: 0 });
  assert.equal(detector.isEjected(B), false, "turning ejection off ends ejections");
  assert.equal(changes.at(-1)?.reason, "ejection_ended");
});

Deno.test("OutlierDetector() rejects out-of-range settings", async (t) => {
  const cases: [string, OutlierDetectorOptions][] = [
    ["negative consecutive failures", { consecutiveFailures: -1 }],
    ["fractional consecutive failures", { consecutiveFailures: 1.5 }],
    ["zero base time", { baseEjectionTime: 0 }],
    ["a maximum below the base", { baseEjectionTime: 10_000, maxEjectionTime: 5_000 }],
    ["a percentage above 100", { maxEjectedPercent: 101 }],
  ];
  for (const [name, options] of cases) {
    await t.step(name, () => {
      assert.throws(() => new OutlierDetector([A], options), RangeError);
    });
  }
});

Deno.test("OutlierDetector.close() cancels ejection timers and stops events", () => {
  const { clock, detector, changes } = setup([A, B], { consecutiveFailures: 1 });
  fail(detector, A, 1);
  assert.equal(clock.pending, 1);
  detector[Symbol.dispose]();
  assert.equal(clock.pending, 0);
  fail(detector, B, 1);
  assert.equal(detector.isEjected(B), false);
  assert.equal(changes.length, 1);
});

Deno.test("forwardOutcome() counts only resets before the upstream said anything", async (t) => {
  const base = { reason: "upstream_reset", bytesFromUpstream: 0, upstreamEnded: false } as const;
  const cases = [
    ["reset before any byte", base, "upstream_reset"],
    ["TCP timeout before any byte", { ...base, reason: "upstream_timeout" }, "upstream_timeout"],
    ["reset after a reply", { ...base, bytesFromUpstream: 12 }, "answered"],
    ["reset after the upstream's FIN", { ...base, upstreamEnded: true }, "answered"],
    ["clean close", { ...base, reason: "upstream_closed", upstreamEnded: true }, "answered"],
    ["client reset, nothing received", { ...base, reason: "client_reset" }, undefined],
    ["idle timeout", { ...base, reason: "idle_timeout" }, undefined],
    ["drain", { ...base, reason: "aborted" }, undefined],
  ] as const;
  for (const [name, result, expected] of cases) {
    await t.step(name, () => assert.equal(forwardOutcome(result), expected));
  }
});

Deno.test("isLocalDialError() tells the balancer's own failures from the upstream's", () => {
  const coded = (code: string) => Object.assign(new Error(code), { code });
  for (const code of ["EMFILE", "ENFILE", "EADDRNOTAVAIL", "ENOBUFS"]) {
    assert.ok(isLocalDialError(coded(code)), code);
  }
  assert.ok(isLocalDialError(new Deno.errors.NotCapable("net")));
  for (const code of ["ECONNREFUSED", "EHOSTUNREACH", "ETIMEDOUT", "ECONNRESET"]) {
    assert.ok(!isLocalDialError(coded(code)), code);
  }
  assert.ok(!isLocalDialError(new DOMException("timed out", "TimeoutError")));
  assert.ok(!isLocalDialError(undefined));
});
