/**
 * Unit tests of the parts of `WorkerBalancer` that need no worker: the ledger that
 * gives back a dead worker's slots, the parser of the workers' metrics, the
 * permissions of a multi-worker config, and a `Balancer` fed with external health.
 */
import { singleScope } from "../lib/limiter/store.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ClientLimiter, ClientLimitError } from "../lib/limiter/client_limiter.ts";
import { FakeClock } from "../lib/core/clock.ts";
import { parseConfig } from "../lib/config/mod.ts";
import { permissionNeeds, workerCount } from "../lib/control/permission_needs.ts";
import { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";
import { MetricsRegistry } from "../lib/metrics/registry.ts";
import { Balancer } from "../lib/server/balancer.ts";
import type { PassiveHealthRecord } from "../lib/server/records.ts";
import { SharedState } from "../lib/workers/shared_state.ts";
import { WORKER_MODULES_ROOT } from "../lib/workers/options.ts";
import { parseSamples } from "../lib/metrics/prometheus_text.ts";
import { WorkerLedger } from "../lib/workers/ledger.ts";

import {
  banner,
  connectClient,
  nextEvent,
  readAll,
  readBytes,
  startBalancer,
  TestUpstream,
  text,
} from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";

const CAPACITY = { upstreams: 8, clients: 8 };

/** A count in one shared word, as the primary keeps the open connections. */
function sharedCount(): { add(delta: number): number; value(): number } {
  const word = new Int32Array(new SharedArrayBuffer(4));
  return {
    add: (delta) => Atomics.add(word, 0, delta) + delta,
    value: () => Atomics.load(word, 0),
  };
}

Deno.test("WorkerLedger.reclaim() gives back exactly what a dead worker held, and only that", async () => {
  const state = new SharedState(CAPACITY);
  state.assign(["a:1", "b:2"], ["alice", "bob"]);
  const open = sharedCount();
  const clock = new FakeClock(1_000_000);
  // Two workers sharing the state, each with its ledger.
  const memories = [WorkerLedger.allocate(CAPACITY), WorkerLedger.allocate(CAPACITY)];
  const workers = memories.map((memory) => {
    const view = SharedState.attach(state.init);
    const ledger = new WorkerLedger(memory, view.init);
    return {
      pool: new LeastConnPool(["a:1", "b:2"], { counts: ledger.counts(view.upstreamCounts()) }),
      limiter: new ClientLimiter({ store: ledger.store(view.limiterStore()), clock }),
      open: ledger.connections(open),
    };
  });
  const [one, two] = workers as [typeof workers[0], typeof workers[0]];
  const limits = { concurrent: 4 };
  // The first holds 3 of alice's slots, 3 leases and 3 connections; the second 1 of
  // each, plus one of each it gave back.
  const held = [];
  for (let i = 0; i < 3; i++) {
    held.push(await one.limiter.acquire("alice", limits), one.pool.acquire());
    one.open.add(1);
  }
  held.push(await two.limiter.acquire("alice", limits), two.pool.acquire());
  two.open.add(1);
  (await two.limiter.acquire("bob", limits))[Symbol.dispose]();
  two.pool.acquire().release();
  two.open.add(1);
  two.open.add(-1);
  await assert.rejects(two.limiter.acquire("alice", limits), ClientLimitError);
  assert.equal(state.upstreamCounts().get("a:1") + state.upstreamCounts().get("b:2"), 4);
  assert.equal(open.value(), 4);

  // The first dies: the primary gives back its 3 slots, 3 leases and 3 connections.
  const targets = () => ({
    counts: state.upstreamCounts(),
    store: state.limiterStore(),
    connections: open,
    now: clock.now(),
  });
  const released = new WorkerLedger(memories[0]!, state.init).reclaim(targets());
  assert.deepEqual(released, { upstreams: 3, clients: 3, connections: 3 });
  assert.equal(state.upstreamCounts().get("a:1") + state.upstreamCounts().get("b:2"), 1);
  assert.equal(open.value(), 1);
  for (let i = 0; i < 3; i++) held.push(await two.limiter.acquire("alice", limits));
  await assert.rejects(two.limiter.acquire("alice", limits), ClientLimitError, "cap 4 still holds");
  // Reclaiming twice gives nothing more.
  assert.deepEqual(new WorkerLedger(memories[0]!, state.init).reclaim(targets()), {
    upstreams: 0,
    clients: 0,
    connections: 0,
  });
});

Deno.test("WorkerLedger.update() follows slots assigned by a reload", () => {
  const state = new SharedState(CAPACITY);
  state.assign(["a:1"], ["alice"]);
  const memory = WorkerLedger.allocate(CAPACITY);
  const view = SharedState.attach(state.init);
  const ledger = new WorkerLedger(memory, view.init);
  const counts = ledger.counts(view.upstreamCounts());
  state.assign(["c:3"], ["carol"]);
  view.update(state.init);
  ledger.update(state.init);
  counts.add("c:3", 1);
  ledger.store(view.limiterStore()).tryAcquire(singleScope("carol", { concurrent: 1 }), 0);
  const released = new WorkerLedger(memory, state.init).reclaim({
    counts: state.upstreamCounts(),
    store: state.limiterStore(),
    connections: sharedCount(),
    now: 0,
  });
  assert.deepEqual(released, { upstreams: 1, clients: 1, connections: 0 });
  assert.equal(state.upstreamCounts().get("c:3"), 0);
});

Deno.test("parseSamples() reads back every series MetricsRegistry.render() writes", () => {
  const registry = new MetricsRegistry();
  const bytes = registry.counter({
    name: "mtlb_bytes_total",
    help: "Bytes.",
    labelNames: ["group", "direction"],
  });
  const odd = 'we\\ird "group",\nwith } and {';
  bytes.labels(odd, "from_client").inc(42);
  bytes.labels("echo", "from_upstream").inc(7);
  registry.gauge({ name: "mtlb_connections_max", help: "Cap." }).labels().set(Infinity);
  registry.gauge({ name: "mtlb_x", help: "NaN." }).labels().set(NaN);
  const samples = parseSamples(registry.render());
  assert.deepEqual(samples.get("mtlb_bytes_total"), [
    { labels: [odd, "from_client"], value: 42 },
    { labels: ["echo", "from_upstream"], value: 7 },
  ]);
  assert.deepEqual(samples.get("mtlb_connections_max"), [{ labels: [], value: Infinity }]);
  assert.ok(Number.isNaN(samples.get("mtlb_x")![0]!.value));
});

Deno.test("permissionNeeds() asks to read mtlb's modules only for more than one worker", () => {
  const body = (workers: string) =>
    `[server]\nlisten = "127.0.0.1:8443"\n${workers}[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`;
  const lib = fileURLToPath(WORKER_MODULES_ROOT).replace(/\/$/, "");
  const two = parseConfig(body("workers = 2\n"), { path: "/etc/mtlb/lb.toml" });
  const one = parseConfig(body("workers = 1\n"), { path: "/etc/mtlb/lb.toml" });
  const unset = parseConfig(body(""), { path: "/etc/mtlb/lb.toml" });
  assert.equal(lib, join(fileURLToPath(new URL("..", import.meta.url)), "lib"));
  assert.deepEqual(permissionNeeds(two).read.at(-1), lib);
  assert.ok(!permissionNeeds(one).read.includes(lib));
  assert.ok(!permissionNeeds(two, { workers: 1 }).read.includes(lib));
  assert.equal(workerCount(unset), navigator.hardwareConcurrency);
  assert.equal(permissionNeeds(unset).read.includes(lib), navigator.hardwareConcurrency > 1);
});

Deno.test("Balancer with external health picks only what setHealth() reports healthy", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  const group = `[groups.echo]\nupstreams = ["${a.address}", "${b.address}"]\n`;
  await using lb = await startBalancer(
    `[server]\nlisten = "127.0.0.1:0"\n[health]\ninterval = "1h"\n${group}[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["echo"]\n`,
    { health: "external" },
  );
  const pki = await testPki();
  const { balancer } = lb;
  assert.equal(balancer.probe("echo"), undefined, "no probe of its own");
  // Nothing reported yet: every upstream is unknown and nothing is picked.
  const denied = nextEvent<{ reason: string }>(balancer, "deny");
  const first = await connectClient(lb.port(), pki.alice);
  assert.equal((await readAll(first)).data.length, 0);
  assert.equal((await denied).reason, "no_healthy_upstream");
  assert.deepEqual(balancer.status().groups[0]!.upstreams.map((u) => u.state), [
    "unknown",
    "unknown",
  ]);

  balancer.setHealth("echo", { address: b.address, healthy: true, reason: "probe_ok" });
  balancer.setHealth("echo", { address: a.address, healthy: false, reason: "probe_refused" });
  for (let i = 0; i < 3; i++) {
    const socket = await connectClient(lb.port(), pki.alice);
    assert.equal(text(await readBytes(socket, 2)), "b\n");
    const closed = readAll(socket);
    socket.end();
    await closed;
  }
  const status = balancer.status().groups[0]!.upstreams;
  assert.deepEqual(status.map((u) => [u.state, u.reason]), [
    ["unhealthy", "probe_refused"],
    ["healthy", "probe_ok"],
  ]);
  // A balancer that probes by itself takes no reports.
  const probing = new Balancer({
    config: balancer.config,
    tls: { ca: "", cert: "", key: "", certificates: [] },
  });
  assert.throws(
    () => probing.setHealth("echo", { address: a.address, healthy: true, reason: "probe_ok" }),
    TypeError,
  );
  await probing.close();
});

Deno.test("Balancer with external health reports a failed dial and the next success once", async () => {
  await using good = await TestUpstream.start(banner("good"));
  const dead = await TestUpstream.start();
  const deadAddress = dead.address;
  await dead.stop();
  await using lb = await startBalancer(
    `[server]\nlisten = "127.0.0.1:0"\n[groups.echo]\nupstreams = ["${deadAddress}", "${good.address}"]\n[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["echo"]\n`,
    { health: "external" },
  );
  const { balancer } = lb;
  // Both reported healthy: the dead one is dialed first (ties rotate from the start).
  balancer.setHealth("echo", { address: deadAddress, healthy: true, reason: "probe_ok" });
  balancer.setHealth("echo", { address: good.address, healthy: true, reason: "probe_ok" });
  const records: PassiveHealthRecord[] = [];
  balancer.addEventListener("passive_health", (event) => {
    records.push((event as CustomEvent<PassiveHealthRecord>).detail);
  });
  const pki = await testPki();
  const socket = await connectClient(lb.port(), pki.alice);
  assert.equal(text(await readBytes(socket, 5)), "good\n", "failed over to the good one");
  assert.deepEqual(records, [
    { group: "echo", address: deadAddress, outcome: "failure", reason: "dial_refused" },
  ]);
  const closed = readAll(socket);
  socket.end();
  await closed;
  // The dead one is still reported healthy (only the probe owner decides): the next
  // connection dials it again; after the owner takes it out, a good dial does not
  // post anything more for the good one, which never failed.
  balancer.setHealth("echo", { address: deadAddress, healthy: false, reason: "dial_refused" });
  for (let i = 0; i < 2; i++) {
    const again = await connectClient(lb.port(), pki.alice);
    assert.equal(text(await readBytes(again, 5)), "good\n");
    const done = readAll(again);
    again.end();
    await done;
  }
  assert.equal(records.length, 1, JSON.stringify(records));
  // Back up: the next good dial of the dead one (now alive) reports its success once.
  await using revived = await TestUpstream.start(
    banner("revived"),
    Number(deadAddress.split(":")[1]),
  );
  balancer.setHealth("echo", { address: deadAddress, healthy: true, reason: "probe_ok" });
  balancer.setHealth("echo", { address: good.address, healthy: false, reason: "probe_refused" });
  for (let i = 0; i < 2; i++) {
    const back = await connectClient(lb.port(), pki.alice);
    assert.equal(text(await readBytes(back, 8)), "revived\n");
    const done = readAll(back);
    back.end();
    await done;
  }
  assert.deepEqual(records.slice(1), [
    { group: "echo", address: deadAddress, outcome: "success", success: "connected" },
  ]);
  assert.equal(revived.accepted, 2);

  // While the owner counts a streak (`failing`), every success is reported, so that
  // a success seen by any worker ends it; ejections from the owner apply at once.
  records.length = 0;
  balancer.setHealth("echo", {
    address: deadAddress,
    healthy: true,
    reason: "probe_ok",
    failing: true,
  });
  const ended = nextEvent(balancer, "end");
  const answered = await connectClient(lb.port(), pki.alice);
  assert.equal(text(await readBytes(answered, 8)), "revived\n");
  const done = readAll(answered);
  answered.end();
  await done;
  await ended;
  assert.deepEqual(records.map((r) => [r.address, r.outcome, r.success]), [
    [deadAddress, "success", "connected"],
    [deadAddress, "success", "answered"],
  ]);
  balancer.setHealth("echo", { address: good.address, healthy: true, reason: "probe_ok" });
  balancer.setHealth("echo", {
    address: deadAddress,
    healthy: true,
    reason: "probe_ok",
    ejected: true,
  });
  assert.deepEqual(balancer.pool("echo")!.snapshot().map((u) => u.ejected), [true, false]);
  const avoided = await connectClient(lb.port(), pki.alice);
  assert.equal(text(await readBytes(avoided, 5)), "good\n", "the ejected one is avoided");
  avoided.destroy();
});
