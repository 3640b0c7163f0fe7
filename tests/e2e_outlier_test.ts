/**
 * End-to-end tests of passive health: outlier ejection counts only failures the
 * upstream causes, is capped, panics when too few upstreams are left, and dials are
 * retried. Real sockets on 127.0.0.1 (and a real redis-server when installed).
 */
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { EjectionEvent } from "../lib/upstream/health_event.ts";
import type { OutlierDetector } from "../lib/upstream/outlier_detector.ts";
import { join } from "node:path";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import type { LoadedConfig } from "../lib/server/lifecycle.ts";
import type { ConnectionRecord, DenyRecord } from "../lib/server/records.ts";
import {
  banner,
  type ClientOptions,
  connectClient,
  nextEvent,
  readAll,
  readBytes,
  startBalancer,
  type TestBalancer,
  TestUpstream,
  text,
} from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { RedisServer, redisTest } from "./_redis.ts";

/** A config with group "echo" on the shared listener, client alice, and no probe after the first. */
function config(upstreams: string[], outlier: string, server = ""): string {
  return `[server]
listen = "127.0.0.1:0"
${server}

[health]
interval = "1h"

[outlier]
${outlier}

[groups.echo]
upstreams = ${JSON.stringify(upstreams)}

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
max_connections = 100
`;
}

/** An address nothing listens on (a port just freed). */
async function deadAddress(): Promise<string> {
  const upstream = await TestUpstream.start();
  const address = upstream.address;
  await upstream.stop();
  return address;
}

/**
 * Connects, says hello and hangs up (half-close), and resolves with the first line it
 * got back (the banner; empty when the connection closed first) once the balancer
 * has recorded the connection's end.
 */
async function greeting(lb: TestBalancer): Promise<string> {
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  const socket = await connectClient(lb.port(), lb.pki.alice);
  const all = readAll(socket);
  socket.end("hello\n");
  const { data } = await all;
  await ended;
  return text(data).split("\n")[0]!;
}

/** Reads the first line (the banner) of a connection. */
async function readLine(socket: TLSSocket): Promise<string> {
  let line = "";
  while (!line.includes("\n")) {
    const chunk = await readBytes(socket, 1);
    if (chunk.length === 0) break;
    line += text(chunk);
  }
  return line.split("\n")[0]!;
}

/** Resolves with the first ejection `detector` dispatches. */
function firstEjection(detector: OutlierDetector): Promise<EjectionEvent["change"]> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      const { change } = event as EjectionEvent;
      if (!change.ejected) return;
      detector.removeEventListener("ejection", listener);
      resolve(change);
    };
    detector.addEventListener("ejection", listener);
  });
}

/**
 * A Redis-like upstream: answers `QUIT` with `+OK`, then closes its socket (FIN), so
 * whatever the client writes afterwards is answered by the kernel with a reset.
 * Anything else is echoed.
 */
function quitter(name: string): (socket: Socket) => void {
  return (socket) => {
    socket.write(`${name}\n`);
    socket.on("data", (chunk: Uint8Array) => {
      if (text(chunk).startsWith("QUIT")) {
        socket.end("+OK\r\n", () => socket.destroy());
        return;
      }
      socket.write(chunk);
    });
    socket.on("end", () => socket.end());
  };
}

/** An upstream that resets a connection when its first bytes come in, without a reply. */
function resetOnData(socket: Socket): void {
  socket.once("data", () => socket.resetAndDestroy());
}

/** A client that keeps its side open after the peer's FIN (`node:tls` passes it on to the socket). */
const HALF_OPEN = { allowHalfOpen: true } as ClientOptions;

/** Probes that always pass: passive detection alone decides. */
const PROBES_PASS = { healthCheck: () => Promise.resolve() };

/** Writes `QUIT`, then keeps writing until the balancer closes the connection. */
async function quitAndKeepWriting(socket: TLSSocket): Promise<void> {
  socket.on("error", () => {});
  const closed = new Promise((resolve) => socket.once("close", resolve));
  socket.write("QUIT\r\n");
  const timer = setInterval(() => {
    if (!socket.destroyed && socket.writable) socket.write("PING\r\n");
  }, 5);
  socket.resume();
  try {
    await closed;
  } finally {
    clearInterval(timer);
  }
}

Deno.test("Balancer does not eject an upstream for clients that keep writing after QUIT", async () => {
  await using a = await TestUpstream.start(quitter("a"));
  await using b = await TestUpstream.start(quitter("b"));
  // The strictest settings: one failure would eject, and half the group may go.
  await using lb = await startBalancer(
    config([a.address, b.address], "consecutive_failures = 1\nmax_ejected_percent = 100"),
  );
  const outlier = lb.balancer.outlier("echo")!;
  const ejections: string[] = [];
  outlier.addEventListener("ejection", (e) => ejections.push((e as EjectionEvent).change.address));

  // A bystander holds a connection the whole time.
  const bystander = await connectClient(lb.port(), lb.pki.alice);
  const bystanderName = await readLine(bystander);

  const reasons: string[] = [];
  for (let i = 0; i < 10; i++) {
    const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
    // A half-open client: it keeps writing after the upstream's FIN reaches it.
    const socket = await connectClient(lb.port(), lb.pki.alice, HALF_OPEN);
    assert.match(await readLine(socket), /^[ab]$/);
    await quitAndKeepWriting(socket);
    const record = await ended;
    reasons.push(record.reason);
    assert.ok(record.bytesFromUpstream > 0);
  }
  // The upstream's reset to bytes written after its FIN: seen, and not held against it.
  assert.ok(reasons.includes("upstream_reset"), reasons.join(", "));
  assert.deepEqual(ejections, []);
  assert.deepEqual(outlier.snapshot().map((o) => [o.ejected, o.resetFailures]), [
    [false, 0],
    [false, 0],
  ]);

  // Everyone else is still served, and the bystander still flows.
  for (let i = 0; i < 4; i++) assert.match(await greeting(lb), /^[ab]$/);
  const echoed = readBytes(bystander, 11);
  bystander.resume();
  bystander.write("still here\n");
  assert.equal(text(await echoed), "still here\n");
  assert.match(bystanderName, /^[ab]$/);
  bystander.destroy();
  assert.equal(lb.balancer.counters.denied.size, 0);
});

redisTest("Balancer in front of redis-server: QUIT then more commands ejects nothing", async () => {
  await using first = await RedisServer.start();
  await using second = await RedisServer.start();
  const addresses = [`127.0.0.1:${first.port}`, `127.0.0.1:${second.port}`];
  await using lb = await startBalancer(
    config(addresses, "consecutive_failures = 1\nmax_ejected_percent = 100"),
  );
  const outlier = lb.balancer.outlier("echo")!;
  const reasons: string[] = [];
  for (let i = 0; i < 10; i++) {
    const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
    const socket = await connectClient(lb.port(), lb.pki.alice, HALF_OPEN);
    const reply = readBytes(socket, 5);
    socket.write("QUIT\r\n");
    // Redis closes a connection with unread input: later commands get a reset.
    const writing = quitAndKeepWriting(socket);
    assert.equal(text(await reply), "+OK\r\n");
    await writing;
    reasons.push((await ended).reason);
  }
  assert.ok(
    reasons.every((r) => r === "upstream_reset" || r === "upstream_closed"),
    reasons.join(),
  );
  assert.equal(outlier.ejectedCount, 0);
  // Still serving: PING through the balancer.
  const socket = await connectClient(lb.port(), lb.pki.alice);
  const pong = readBytes(socket, 7);
  socket.write("PING\r\n");
  assert.equal(text(await pong), "+PONG\r\n");
  socket.destroy();
});

Deno.test("Balancer ejects an upstream that resets connections before sending anything", async () => {
  await using resetter = await TestUpstream.start(resetOnData);
  await using good = await TestUpstream.start(banner("good"));
  await using lb = await startBalancer(
    config([resetter.address, good.address], "consecutive_failures = 3"),
    PROBES_PASS,
  );
  const outlier = lb.balancer.outlier("echo")!;
  const ejected = firstEjection(outlier);
  let refusedByReset = 0;
  for (let i = 0; i < 20 && !outlier.isEjected(resetter.address); i++) {
    if (await greeting(lb) === "") refusedByReset++;
  }
  // The dial succeeded each time, yet the streak of resets before any byte ejected it.
  assert.equal(refusedByReset, 3);
  const change = await ejected;
  assert.deepEqual([change.address, change.reason], [resetter.address, "upstream_reset"]);
  const accepted = resetter.accepted;
  for (let i = 0; i < 4; i++) assert.equal(await greeting(lb), "good");
  assert.equal(resetter.accepted, accepted, "no connection reaches the ejected upstream");
  const [state] = lb.balancer.status().groups[0]!.upstreams;
  assert.equal(state!.healthy, false);
  assert.equal(state!.state, "healthy", "its probe still passes");
  assert.equal(state!.ejection?.reason, "upstream_reset");
  assert.equal(state!.ejection?.ejections, 1);
  const until = Date.parse(state!.ejection!.until) - Date.parse(state!.ejection!.since);
  assert.equal(until, 30_000);
  const metrics = lb.balancer.metrics.render();
  const series = (name: string, labels: string) =>
    new RegExp(`${name}\\{group="echo",upstream="${resetter.address}"${labels}\\} (\\d+)\\n`)
      .exec(metrics)?.[1];
  assert.equal(series("mtlb_outlier_ejections_total", ',reason="upstream_reset"'), "1");
  assert.equal(series("mtlb_upstream_ejected", ""), "1");
  assert.equal(series("mtlb_upstream_healthy", ""), "0", "out of rotation");
});

Deno.test("Balancer never ejects both upstreams of a group of two", async () => {
  const [a, b] = [await deadAddress(), await deadAddress()];
  // Both refuse, but the probes (every hour) still call them healthy.
  await using lb = await startBalancer(
    config([a, b], "consecutive_failures = 1\nmax_ejected_percent = 100"),
    { healthCheck: () => Promise.resolve() },
  );
  const outlier = lb.balancer.outlier("echo")!;
  const reasons: string[] = [];
  for (let i = 0; i < 6; i++) {
    const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.on("error", () => {});
    await readAll(socket);
    reasons.push((await denied).reason);
  }
  assert.equal(outlier.ejectedCount, 1);
  assert.deepEqual(
    lb.balancer.status().groups[0]!.upstreams.map((u) => u.ejection !== undefined).sort(),
    [false, true],
  );
  // Clients learn the upstreams failed, not that none was left to try.
  assert.deepEqual(new Set(reasons), new Set(["upstream_unavailable"]));
});

Deno.test("Balancer panics when too few upstreams are left, and picks ejected ones again", async () => {
  const flaky = new Set(["u1", "u2", "u3"]);
  const upstream = (name: string) => (socket: Socket): void => {
    if (flaky.has(name)) resetOnData(socket);
    else banner(name)(socket);
  };
  await using u1 = await TestUpstream.start(upstream("u1"));
  await using u2 = await TestUpstream.start(upstream("u2"));
  await using u3 = await TestUpstream.start(upstream("u3"));
  await using u4 = await TestUpstream.start(upstream("u4"));
  await using lb = await startBalancer(
    config(
      [u1.address, u2.address, u3.address, u4.address],
      "consecutive_failures = 1\nmax_ejected_percent = 100\npanic_threshold = 50",
    ),
    PROBES_PASS,
  );
  const outlier = lb.balancer.outlier("echo")!;
  const pool = lb.balancer.pool("echo")!;
  const panicAt: number[] = [];
  for (let i = 0; i < 30 && outlier.ejectedCount < 3; i++) {
    await greeting(lb);
    if (pool.panic) panicAt.push(outlier.ejectedCount);
  }
  assert.equal(outlier.ejectedCount, 3, "u4, the last one left, stays");
  assert.deepEqual(panicAt, [3], "2 of 4 available is not below 50%; 1 of 4 is");
  assert.equal(lb.balancer.status().groups[0]!.panic, true);
  assert.match(lb.balancer.metrics.render(), /mtlb_group_panic\{group="echo"\} 1\n/);

  // The ejected upstreams recover: in panic mode they take connections again.
  flaky.clear();
  const names = new Set<string>();
  for (let i = 0; i < 8; i++) names.add(await greeting(lb));
  assert.deepEqual([...names].sort(), ["u1", "u2", "u3", "u4"]);
  assert.equal(outlier.ejectedCount, 3, "still ejected: panic overrides, it does not end them");
});

Deno.test("Balancer retries a failed dial on the next upstream, connect_retries times", async (t) => {
  const [deadA, deadB] = [await deadAddress(), await deadAddress()];
  await using good = await TestUpstream.start(banner("good"));
  const upstreams = [deadA, deadB, good.address];
  const options = { healthCheck: () => Promise.resolve() }; // the probes see all healthy

  await t.step("2 retries (the default) reach the good upstream behind two dead ones", async () => {
    await using lb = await startBalancer(config(upstreams, "consecutive_failures = 0"), options);
    for (let i = 0; i < 3; i++) assert.equal(await greeting(lb), "good");
    const retries = /mtlb_connect_retries_total\{group="echo"\} (\d+)\n/.exec(
      lb.balancer.metrics.render(),
    );
    assert.ok(Number(retries?.[1]) >= 2, `retries: ${retries?.[1]}`);
    assert.equal(lb.balancer.counters.denied.size, 0);
  });

  await t.step("without retries the client behind a dead upstream is refused", async () => {
    await using lb = await startBalancer(
      config(upstreams, "consecutive_failures = 0", "connect_retries = 0"),
      options,
    );
    const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.on("error", () => {});
    assert.equal((await readAll(socket)).data.length, 0);
    const record = await denied;
    assert.equal(record.reason, "upstream_unavailable");
    assert.match(record.detail ?? "", /dial_refused$/);
  });
});

Deno.test("Balancer.reload() applies new [outlier] settings and keeps ejections under way", async () => {
  await using resetter = await TestUpstream.start(resetOnData);
  await using good = await TestUpstream.start(banner("good"));
  const body = (outlier: string) => config([resetter.address, good.address], outlier);
  await using lb = await startBalancer(body("consecutive_failures = 1"), PROBES_PASS);
  const outlier = lb.balancer.outlier("echo")!;
  for (let i = 0; i < 4 && !outlier.isEjected(resetter.address); i++) await greeting(lb);
  assert.equal(outlier.isEjected(resetter.address), true);
  const until = outlier.snapshot()[0]!.until;
  assert.equal(lb.balancer.pool("echo")!.panic, false, "1 of 2 is not below 50%");

  const pki = await testPki();
  const next = parseConfig(
    `[tls]\nca = "ca.crt"\ncert = "server.crt"\nkey = "server.key"\n${
      body('consecutive_failures = 4\npanic_threshold = 100\nbase_ejection_time = "1m"')
    }`,
    { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
  );
  const loaded: LoadedConfig = { config: next, tls: await loadTlsMaterial(next) };
  await lb.balancer.reload(loaded);
  assert.equal(outlier.settings.consecutiveFailures, 4);
  assert.equal(outlier.settings.baseEjectionTime, 60_000);
  assert.equal(outlier.isEjected(resetter.address), true, "the ejection goes on");
  assert.equal(outlier.snapshot()[0]!.until, until, "with its end time");
  assert.equal(lb.balancer.pool("echo")!.panic, true, "1 of 2 is below 100%");
  assert.equal(lb.balancer.status().groups[0]!.panic, true);
});
