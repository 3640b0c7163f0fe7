import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { configureLogging } from "../../lib/control/logging.ts";
import type { DnsResolver, SrvAnswer } from "../../lib/upstream/dns_resolver.ts";
import {
  type DnsChangeEvent,
  type DnsFailureEvent,
  DnsLookupError,
  DnsUpstreams,
} from "../../lib/upstream/dns_upstreams.ts";

/** A resolver whose answers a test changes; `fail` makes every look-up reject. */
class FakeResolver implements DnsResolver {
  a = new Map<string, string[]>();
  aaaa = new Map<string, string[]>();
  srvs = new Map<string, SrvAnswer[]>();
  fail: Error | undefined;
  /** When set, look-ups never answer (until aborted). */
  hang = false;
  calls = 0;

  addresses(name: string, type: "A" | "AAAA", signal: AbortSignal): Promise<string[]> {
    return this.#answer(signal, () => (type === "A" ? this.a : this.aaaa).get(name) ?? []);
  }

  srv(name: string, signal: AbortSignal): Promise<SrvAnswer[]> {
    return this.#answer(signal, () => this.srvs.get(name) ?? []);
  }

  #answer<T>(signal: AbortSignal, value: () => T): Promise<T> {
    this.calls++;
    if (this.hang) {
      return new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }
    if (this.fail !== undefined) return Promise.reject(this.fail);
    return Promise.resolve(value());
  }
}

function next<T extends Event>(target: EventTarget, type: string): Promise<T> {
  return new Promise((resolve) =>
    target.addEventListener(type, (event) => resolve(event as T), { once: true })
  );
}

const addresses = (dns: DnsUpstreams) => dns.upstreams.map((u) => u.address);

/** Follows the A and AAAA records of api.internal, on port 7000, every `interval` ms. */
function apiInternal(
  resolver: DnsResolver,
  interval: number,
  clock: FakeClock = new FakeClock(),
): DnsUpstreams {
  return new DnsUpstreams({ type: "dns", name: "api.internal", port: 7000 }, {
    resolver,
    interval,
    clock,
  });
}

Deno.test("DnsUpstreams.start() takes every A and AAAA address on the port", async () => {
  const resolver = new FakeResolver();
  resolver.a.set("api.internal", ["10.0.0.2", "10.0.0.1"]);
  resolver.aaaa.set("api.internal", ["fd00::1"]);
  const clock = new FakeClock();
  const dns = apiInternal(resolver, 10_000, clock);
  await dns.start();
  assert.deepEqual(addresses(dns), ["10.0.0.1:7000", "10.0.0.2:7000", "[fd00::1]:7000"]);
  assert.deepEqual(dns.upstreams.map((u) => u.weight), [1, 1, 1]);
  assert.equal(clock.pending, 1, "the next look-up is scheduled");
  dns.close();
  assert.equal(clock.pending, 0);
});

Deno.test("DnsUpstreams.start() fails on an empty answer and on a failed look-up", async (t) => {
  await t.step("empty", async () => {
    const dns = new DnsUpstreams({ type: "dns", name: "none.internal", port: 7000 }, {
      resolver: new FakeResolver(),
      interval: 1000,
      clock: new FakeClock(),
    });
    const error = await dns.start().then(() => undefined, (e) => e);
    assert.ok(error instanceof DnsLookupError);
    assert.equal(error.reason, "empty");
    assert.equal(error.source, "dns none.internal:7000");
    assert.match(error.message, /none\.internal answered no address/);
  });
  await t.step("refused", async () => {
    const resolver = new FakeResolver();
    resolver.fail = new Error("connection refused");
    const clock = new FakeClock();
    const dns = new DnsUpstreams({ type: "srv", name: "_api._tcp.internal" }, {
      resolver,
      interval: 1000,
      clock,
    });
    const error = await dns.start().then(() => undefined, (e) => e);
    assert.ok(error instanceof DnsLookupError);
    assert.equal(error.reason, "error");
    assert.equal(clock.pending, 0, "nothing scheduled after a failed start");
  });
});

Deno.test("DnsUpstreams looks up again every interval and reports what changed", async () => {
  const resolver = new FakeResolver();
  resolver.a.set("api.internal", ["10.0.0.1", "10.0.0.2"]);
  const clock = new FakeClock();
  const dns = apiInternal(resolver, 10_000, clock);
  await dns.start();
  resolver.a.set("api.internal", ["10.0.0.2", "10.0.0.3"]);
  const changed = next<DnsChangeEvent>(dns, "change");
  clock.advance(9_999);
  assert.deepEqual(addresses(dns), ["10.0.0.1:7000", "10.0.0.2:7000"], "not before the interval");
  clock.advance(1);
  const event = await changed;
  assert.deepEqual(event.added, ["10.0.0.3:7000"]);
  assert.deepEqual(event.removed, ["10.0.0.1:7000"]);
  assert.deepEqual(addresses(dns), ["10.0.0.2:7000", "10.0.0.3:7000"]);
  assert.equal(dns.snapshot().lookups, 2);
  assert.equal(dns.snapshot().resolvedAt, 10_000);
  // An unchanged answer dispatches nothing.
  assert.equal(await dns.refresh(), false);
  dns.close();
});

Deno.test("DnsUpstreams keeps the last set when a look-up fails, times out or finds nothing", async (t) => {
  const resolver = new FakeResolver();
  resolver.a.set("api.internal", ["10.0.0.1"]);
  const clock = new FakeClock();
  const dns = new DnsUpstreams({ type: "dns", name: "api.internal", port: 7000 }, {
    resolver,
    interval: 10_000,
    timeout: 2_000,
    clock,
  });
  await dns.start();
  await t.step("error", async () => {
    resolver.fail = new Error("server unreachable");
    const failed = next<DnsFailureEvent>(dns, "failure");
    assert.equal(await dns.refresh(), false);
    assert.equal((await failed).error.reason, "error");
    assert.deepEqual(addresses(dns), ["10.0.0.1:7000"]);
    resolver.fail = undefined;
  });
  await t.step("empty", async () => {
    resolver.a.set("api.internal", []);
    assert.equal(await dns.refresh(), false);
    assert.deepEqual(addresses(dns), ["10.0.0.1:7000"]);
    assert.equal(dns.snapshot().error?.reason, "empty");
  });
  await t.step("timeout", async () => {
    resolver.hang = true;
    const refreshed = dns.refresh();
    clock.advance(2_000);
    assert.equal(await refreshed, false);
    assert.deepEqual(addresses(dns), ["10.0.0.1:7000"]);
    const status = dns.snapshot();
    assert.equal(status.error?.reason, "timeout");
    assert.equal(status.failures, 3);
    resolver.hang = false;
  });
  await t.step("a good look-up clears the error", async () => {
    resolver.a.set("api.internal", ["10.0.0.1", "10.0.0.9"]);
    assert.equal(await dns.refresh(), true);
    assert.equal(dns.snapshot().error, undefined);
    assert.deepEqual(addresses(dns), ["10.0.0.1:7000", "10.0.0.9:7000"]);
  });
  dns.close();
});

Deno.test("DnsUpstreams maps SRV records of the lowest priority to upstreams with their weights", async () => {
  const resolver = new FakeResolver();
  resolver.srvs.set("_api._tcp.internal", [
    { priority: 10, weight: 5, port: 7000, target: "a.internal." },
    { priority: 10, weight: 0, port: 7001, target: "b.internal." },
    { priority: 20, weight: 9, port: 7002, target: "backup.internal." },
    { priority: 5, weight: 9, port: 7003, target: "." },
  ]);
  resolver.a.set("a.internal", ["10.0.0.1", "10.0.0.2"]);
  resolver.aaaa.set("b.internal", ["fd00::2"]);
  resolver.a.set("backup.internal", ["10.0.0.3"]);
  const dns = new DnsUpstreams({ type: "srv", name: "_api._tcp.internal" }, {
    resolver,
    interval: 10_000,
    clock: new FakeClock(),
  });
  await dns.start();
  assert.deepEqual(dns.upstreams, [
    { address: "10.0.0.1:7000", weight: 5 },
    { address: "10.0.0.2:7000", weight: 5 },
    { address: "[fd00::2]:7001", weight: 1 },
  ]);
  // A new weight is a change.
  resolver.srvs.get("_api._tcp.internal")![0]!.weight = 7;
  assert.equal(await dns.refresh(), true);
  assert.equal(dns.upstreams[0]?.weight, 7);
  dns.close();
});

Deno.test("DnsUpstreams.close() aborts a look-up in flight and stops the schedule", async () => {
  const resolver = new FakeResolver();
  resolver.a.set("api.internal", ["10.0.0.1"]);
  const clock = new FakeClock();
  const dns = apiInternal(resolver, 1_000, clock);
  await dns.start();
  resolver.hang = true;
  const refreshed = dns.refresh();
  dns.close();
  assert.equal(await refreshed, false);
  const calls = resolver.calls;
  clock.advance(10_000);
  assert.equal(resolver.calls, calls);
  assert.equal(clock.pending, 0);
});

Deno.test("DnsUpstreams names the server in its messages, and takes the runtime's timeout for a timeout", async () => {
  const resolver = Object.assign(new FakeResolver(), { server: "127.0.0.1:9" });
  resolver.fail = new Deno.errors.TimedOut("proto error: request timed out");
  const dns = apiInternal(resolver, 10_000);
  const error = await dns.start().then(() => assert.fail("expected a rejection"), (e) => e);
  assert.ok(error instanceof DnsLookupError);
  assert.equal(error.reason, "timeout");
  assert.equal(
    error.message,
    "DNS look-up of api.internal via 127.0.0.1:9 failed: request timed out",
  );
  resolver.fail = new Error("connection refused");
  const refused = await dns.start().then(() => assert.fail("expected a rejection"), (e) => e);
  assert.equal(refused.reason, "error");
  assert.match(
    refused.message,
    /^DNS look-up of api\.internal via 127\.0\.0\.1:9 failed: connection refused$/,
  );
  dns.close();
});

Deno.test("DnsUpstreams logs when look-ups start failing and when they answer again, and at most once a minute between", async () => {
  const logged: { level: string; message: string }[] = [];
  await using _logging = await configureLogging({
    format: "json",
    write: (line) => logged.push(JSON.parse(line)),
  });
  const resolver = Object.assign(new FakeResolver(), { server: "127.0.0.1:9" });
  resolver.a.set("api.internal", ["10.0.0.1"]);
  const clock = new FakeClock();
  // Look-ups are made by refresh() below, a second apart, not by the schedule.
  const dns = apiInternal(resolver, 3_600_000, clock);
  await dns.start();
  let failures = 0;
  dns.addEventListener("failure", () => failures++);
  resolver.fail = new Deno.errors.TimedOut("proto error: request timed out");
  // 150 look-ups a second apart: the first is logged, then one a minute (at 60 s, 120 s).
  for (let i = 0; i < 150; i++) {
    assert.equal(await dns.refresh(), false);
    clock.advance(1_000);
  }
  resolver.fail = undefined;
  assert.equal(await dns.refresh(), false, "the same set");
  dns.close();
  const ours = logged.filter((l) => l.message.startsWith("DNS dns api.internal:7000"));
  assert.deepEqual(ours.map((l) => [l.level, l.message]), [
    [
      "WARN",
      "DNS dns api.internal:7000: DNS look-up of api.internal via 127.0.0.1:9 failed: request timed out; keeping the last 1 upstreams",
    ],
    [
      "WARN",
      "DNS dns api.internal:7000: still failing, 61 look-ups in a row over 60 s: DNS look-up of api.internal via 127.0.0.1:9 failed: request timed out; keeping the last 1 upstreams",
    ],
    [
      "WARN",
      "DNS dns api.internal:7000: still failing, 121 look-ups in a row over 120 s: DNS look-up of api.internal via 127.0.0.1:9 failed: request timed out; keeping the last 1 upstreams",
    ],
    ["INFO", "DNS dns api.internal:7000: look-ups answer again, after 150 failed over 150 s"],
  ]);
  // Every failure is still an event (mtlb_dns_lookup_failures_total counts them).
  assert.equal(failures, 150);
  assert.equal(dns.snapshot().failures, 150);
});
