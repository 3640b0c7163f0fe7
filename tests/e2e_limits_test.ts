/**
 * The limits of `[limits]`, `[groups.NAME] max_connections` and
 * `[clients.NAME.per_group.GROUP]` on a real balancer: caps within and over groups,
 * rates within groups, the queue for rate tokens, and bandwidth.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { TLSSocket } from "node:tls";
import {
  connectClient,
  nextEvent,
  readAll,
  readBytes,
  startBalancer,
  type TestBalancer,
  TestUpstream,
  text,
} from "./_harness.ts";
import type { DenyRecord } from "../lib/server/records.ts";
import { until } from "../testing/poll.ts";

/** Two groups, echo and cache, each on an echo upstream; `rest` adds limits and clients. */
function config(echo: string, cache: string, rest: string): string {
  return `[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${echo}"]

[groups.cache]
upstreams = ["${cache}"]
${rest}
`;
}

const ALICE = `[clients.alice]
match = { cn = "alice" }
groups = ["echo", "cache"]`;

const BOB = `[clients.bob]
match = { cn = "bob" }
groups = ["echo", "cache"]`;

/** Two echo upstreams (groups echo and cache) and a balancer with `rest` in front. */
interface Limited extends AsyncDisposable {
  /** The upstream of group echo. */
  echo: TestUpstream;
  /** The balancer. */
  lb: TestBalancer;
}

/** Starts {@linkcode config} with `rest` on two fresh echo upstreams. */
async function startLimited(rest: string): Promise<Limited> {
  await using stack = new AsyncDisposableStack();
  const echo = stack.use(await TestUpstream.start());
  const cache = stack.use(await TestUpstream.start());
  const lb = stack.use(await startBalancer(config(echo.address, cache.address, rest)));
  const started = stack.move();
  return { echo, lb, [Symbol.asyncDispose]: () => started.disposeAsync() };
}

/** Connects to `group` (by SNI) and waits for an echo: the connection is forwarded. */
async function forwarded(
  lb: TestBalancer,
  who: Parameters<typeof connectClient>[1],
  group: string,
): Promise<TLSSocket> {
  const socket = await connectClient(lb.port(), who, { servername: group });
  socket.write("x");
  assert.equal(text(await readBytes(socket, 1)), "x");
  return socket;
}

/** Connects to `group` and expects a refusal with `reason`; returns its record. */
async function refused(
  lb: TestBalancer,
  who: Parameters<typeof connectClient>[1],
  group: string,
  reason: string,
): Promise<DenyRecord> {
  const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
  const socket = await connectClient(lb.port(), who, { servername: group });
  socket.write("x");
  const [record, { data }] = await Promise.all([denied, readAll(socket)]);
  assert.equal(record.reason, reason, record.detail);
  assert.equal(data.length, 0, "a refused client receives nothing");
  return record;
}

/** A series' value in a Prometheus exposition. */
function sample(exposition: string, series: string): number | undefined {
  for (const line of exposition.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

Deno.test("Balancer holds a client's cap within one group while its other group stays open", async () => {
  await using limited = await startLimited(`${ALICE}
[clients.alice.per_group.cache]
max_connections = 2`);
  const { lb } = limited;
  const open = [
    await forwarded(lb, lb.pki.alice, "cache"),
    await forwarded(lb, lb.pki.alice, "cache"),
  ];
  const record = await refused(lb, lb.pki.alice, "cache", "limit_concurrency");
  assert.equal(record.group, "cache");
  assert.match(record.detail!, /at its limit of 2 concurrent connections in group "cache"/);
  // The other group is open to her, up to her overall cap.
  open.push(await forwarded(lb, lb.pki.alice, "echo"));
  open.push(await forwarded(lb, lb.pki.alice, "echo"));
  open.push(await forwarded(lb, lb.pki.alice, "echo"));
  assert.equal(lb.balancer.status().clients.find((c) => c.name === "alice")!.active, 5);
  for (const socket of open) socket.destroy();
});

Deno.test("Balancer holds a group's total cap over all its clients (group_full)", async () => {
  await using limited = await startLimited(`max_connections = 2
${ALICE}
${BOB}`);
  const { lb } = limited;
  const open = [
    await forwarded(lb, lb.pki.alice, "cache"),
    await forwarded(lb, lb.pki.bob, "cache"),
  ];
  const record = await refused(lb, lb.pki.bob, "cache", "group_full");
  assert.match(record.detail!, /group "cache" is at its limit of 2 concurrent connections/);
  open.push(await forwarded(lb, lb.pki.bob, "echo")); // the other group is not capped
  const metrics = lb.balancer.metrics.render();
  assert.equal(sample(metrics, `mtlb_connections_denied_total{reason="group_full"}`), 1);
  const status = lb.balancer.status();
  assert.equal(status.connections.denied.group_full, 1);
  // /status shows each group's connections against its cap.
  const cacheState = status.groups.find((g) => g.name === "cache")!;
  assert.equal(cacheState.open, 2);
  assert.equal(cacheState.maxConnections, 2);
  const echoState = status.groups.find((g) => g.name === "echo")!;
  assert.equal(echoState.open, 1);
  assert.equal(echoState.maxConnections, undefined);
  // A slot freed by one client is taken by another.
  const ended = nextEvent(lb.balancer, "end");
  open.shift()!.destroy();
  await ended;
  open.push(await forwarded(lb, lb.pki.bob, "cache"));
  for (const socket of open) socket.destroy();
});

Deno.test("Balancer limits a client's rate within one group (limit_rate), not in its others", async () => {
  await using limited = await startLimited(`${ALICE}
[clients.alice.per_group.cache]
connection_rate = { count = 1, per = "1h" }`);
  const { lb } = limited;
  (await forwarded(lb, lb.pki.alice, "cache")).destroy();
  const record = await refused(lb, lb.pki.alice, "cache", "limit_rate");
  assert.match(record.detail!, /rate limit of 1 connection per 1h in group "cache"/);
  for (let i = 0; i < 3; i++) (await forwarded(lb, lb.pki.alice, "echo")).destroy();
});

Deno.test("Balancer queues connections over the rate: five at 2 per second all pass, the last after 1 s", async () => {
  await using limited = await startLimited(`[limits]
on_rate_limit = "queue"
queue_timeout = "5s"
${ALICE}
connection_rate = { count = 2, per = "1s" }`);
  const { lb } = limited;
  const probes = limited.echo.accepted; // the first health probe round
  const started = performance.now();
  const sockets = await Promise.all(
    Array.from({ length: 5 }, () => connectClient(lb.port(), lb.pki.alice, { servername: "echo" })),
  );
  // Three wait for their token, holding their slots; no upstream is dialed for them.
  assert.ok(await until(() => lb.balancer.limiter.queued("alice") === 3, 5000, 5));
  const status = lb.balancer.status().clients.find((c) => c.name === "alice")!;
  assert.equal(status.queued, 3);
  assert.equal(status.active, 5);
  assert.equal(lb.balancer.status().groups.find((g) => g.name === "echo")!.open, 5);
  assert.equal(sample(lb.balancer.metrics.render(), "mtlb_limiter_queued"), 3);
  const dialed = limited.echo.accepted - probes;
  assert.ok(dialed <= 2, `${dialed} upstream connections for 2 admitted`);
  const times = await Promise.all(sockets.map(async (socket, i) => {
    socket.write(String(i));
    assert.equal(text(await readBytes(socket, 1)), String(i));
    return performance.now() - started;
  }));
  times.sort((a, b) => a - b);
  assert.ok(times[4]! >= 1000, `the last passed after ${Math.round(times[4]!)} ms`);
  assert.ok(times[4]! < 3000, `the last passed after ${Math.round(times[4]!)} ms`);
  assert.equal(lb.balancer.limiter.queued(), 0);
  assert.equal(lb.balancer.status().connections.denied.limit_rate ?? 0, 0);
  for (const socket of sockets) socket.destroy();
});

Deno.test("Balancer refuses a queued connection whose token is not due within queue_timeout", async () => {
  await using limited = await startLimited(`[limits]
on_rate_limit = "queue"
queue_timeout = "500ms"
${ALICE}
connection_rate = { count = 1, per = "1h" }`);
  const { lb } = limited;
  const first = await forwarded(lb, lb.pki.alice, "echo");
  const record = await refused(lb, lb.pki.alice, "echo", "limit_rate");
  assert.match(record.detail!, /its turn would come in \d+ms, past queue_timeout \(500ms\)/);
  const metrics = lb.balancer.metrics.render();
  assert.equal(sample(metrics, "mtlb_limiter_queue_timeouts_total"), 1);
  assert.equal(lb.balancer.status().connections.queueTimeouts, 1);
  assert.equal(sample(metrics, `mtlb_connections_denied_total{reason="limit_rate"}`), 1);
  first.destroy();
});

Deno.test("Balancer refuses queued connections when it drains (server_closing)", async () => {
  await using limited = await startLimited(`[limits]
on_rate_limit = "queue"
queue_timeout = "30s"
${ALICE}
connection_rate = { count = 1, per = "10s" }`);
  const { lb } = limited;
  const first = await forwarded(lb, lb.pki.alice, "echo");
  const queued = await connectClient(lb.port(), lb.pki.alice, { servername: "echo" });
  queued.write("x");
  assert.ok(await until(() => lb.balancer.limiter.queued() === 1, 5000, 5));
  const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
  const draining = lb.balancer.drain(10_000);
  const [record, { data }] = await Promise.all([denied, readAll(queued)]);
  assert.equal(record.reason, "server_closing");
  assert.equal(data.length, 0);
  assert.equal(lb.balancer.limiter.queued(), 0);
  // The forwarded connection still works during the drain, and ends it.
  first.resume(); // readBytes() pauses it
  first.write("y");
  assert.equal(text(await readBytes(first, 1)), "y");
  first.end();
  assert.equal((await draining).forced, 0);
});

Deno.test("Balancer throttles a client to its bandwidth: 3 MiB echoed at 1 MiB/s take about 3 s, byte-exact", async () => {
  await using limited = await startLimited(`${ALICE}
bandwidth = "1MiB/s"`);
  const { lb } = limited;
  assert.equal(lb.balancer.status().clients.find((c) => c.name === "alice")!.bandwidth, 1048576);
  const size = 3 * 1024 * 1024;
  const payload = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
  const socket = await connectClient(lb.port(), lb.pki.alice, { servername: "echo" });
  const started = performance.now();
  const reply = readBytes(socket, size);
  socket.write(payload);
  const received = await reply;
  const seconds = (performance.now() - started) / 1000;
  assert.equal(
    createHash("sha256").update(received).digest("hex"),
    createHash("sha256").update(payload).digest("hex"),
  );
  assert.ok(seconds >= 2.7 && seconds <= 3.5, `took ${seconds.toFixed(2)} s`);
  socket.destroy();
});
