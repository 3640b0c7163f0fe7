import assert from "node:assert/strict";
import { FakeClock } from "../lib/core/clock.ts";
import { SharedTimerClock } from "../lib/core/shared_timer_clock.ts";

Deno.test("SharedTimerClock fires every timer at its time, in order, on one base timer", () => {
  const base = new FakeClock();
  const clock = new SharedTimerClock(base);
  const fired: [string, number][] = [];
  const at = (name: string) => () => fired.push([name, clock.now()]);
  clock.setTimeout(at("c"), 300);
  clock.setTimeout(at("a"), 100);
  clock.setTimeout(at("b1"), 200);
  clock.setTimeout(at("b2"), 200);
  clock.setTimeout(at("zero"), -5);
  assert.equal(base.pending, 1);
  assert.equal(clock.pending, 5);
  base.advance(150);
  assert.deepEqual(fired, [["zero", 0], ["a", 100]]);
  base.advance(1000);
  assert.deepEqual(fired.slice(2), [["b1", 200], ["b2", 200], ["c", 300]]);
  assert.equal(base.pending, 0);
  assert.equal(clock.pending, 0);
});

Deno.test("SharedTimerClock.clearTimeout() cancels one timer, and the base timer once none is left", () => {
  const base = new FakeClock();
  const clock = new SharedTimerClock(base);
  const fired: number[] = [];
  const ids = Array.from({ length: 50 }, (_, i) => clock.setTimeout(() => fired.push(i), 10 + i));
  for (const [i, id] of ids.entries()) if (i % 2 === 0) clock.clearTimeout(id);
  clock.clearTimeout(ids[0]!); // twice: ignored
  clock.clearTimeout(12345); // unknown: ignored
  base.advance(100);
  assert.deepEqual(fired, Array.from({ length: 25 }, (_, i) => 2 * i + 1));
  const id = clock.setTimeout(() => fired.push(-1), 10);
  assert.equal(base.pending, 1);
  clock.clearTimeout(id);
  assert.equal(base.pending, 0, "no timer left: the base timer is cleared");
});

Deno.test("SharedTimerClock re-arms for an earlier timer, and runs timers set by a callback", () => {
  const base = new FakeClock();
  const clock = new SharedTimerClock(base);
  const fired: [string, number][] = [];
  clock.setTimeout(() => fired.push(["late", clock.now()]), 1000);
  clock.setTimeout(() => {
    fired.push(["early", clock.now()]);
    clock.setTimeout(() => fired.push(["chained", clock.now()]), 50);
  }, 100);
  base.advance(2000);
  assert.deepEqual(fired, [["early", 100], ["chained", 150], ["late", 1000]]);
});

Deno.test("SharedTimerClock keeps the other timers when a callback throws", () => {
  const base = new FakeClock();
  const clock = new SharedTimerClock(base);
  let later = false;
  clock.setTimeout(() => {
    throw new Error("boom");
  }, 10);
  clock.setTimeout(() => later = true, 20);
  assert.throws(() => base.advance(10), /boom/);
  base.advance(10);
  assert.ok(later);
});

Deno.test("SharedTimerClock never arms its base timer with a negative delay", () => {
  // A base clock whose time moves between two readings, as a real one does.
  let time = 0;
  const delays: number[] = [];
  const base = {
    now: () => time += 0.25,
    setTimeout: (_fn: () => void, ms: number) => (delays.push(ms), delays.length),
    clearTimeout: () => {},
  };
  const clock = new SharedTimerClock(base);
  clock.setTimeout(() => {}, 0);
  clock.setTimeout(() => {}, -5);
  assert.ok(delays.length > 0);
  for (const ms of delays) assert.ok(ms >= 0, `armed with ${ms} ms`);
});
