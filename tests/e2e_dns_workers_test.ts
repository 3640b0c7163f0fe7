/**
 * End-to-end tests of upstreams looked up in DNS with `[server] workers = 2`: the
 * primary looks each entry up once and relays every answer to both workers, while a
 * loopback DNS server changes its answers and clients connect.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import type { LoadedConfig } from "../lib/server/lifecycle.ts";
import { Balancer } from "../lib/server/balancer.ts";
import { WorkerBalancer } from "../lib/workers/worker_balancer.ts";
import type { SharedStateOptions } from "../lib/workers/shared_state.ts";
import {
  adminGroup,
  body,
  group,
  mainConfig,
  reaches,
  sample,
  serveMain,
  SRV,
  upstream,
  WAIT_MS,
} from "./_dns_fixtures.ts";
import { TestDnsServer, type TestSrv } from "./_dns_server.ts";
import { banner, connectClient, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { type TestCredential, testPki } from "./_pki_fixtures.ts";
import { configDir } from "./_subprocess.ts";
import { waitForRecord } from "../testing/lines.ts";
import { ROOT } from "../testing/paths.ts";
import { until } from "../testing/poll.ts";
import { freePort } from "../testing/ports.ts";
import { runMain } from "../testing/run_main.ts";

async function load(text: string): Promise<LoadedConfig> {
  const pki = await testPki();
  const config = parseConfig(
    `[tls]\nca = "ca.crt"\ncert = "server.crt"\nkey = "server.key"\n${text}`,
    { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
  );
  return { config, tls: await loadTlsMaterial(config) };
}

async function startWorkers(text: string, shared?: SharedStateOptions): Promise<WorkerBalancer> {
  const balancer = new WorkerBalancer({
    ...await load(text),
    workers: 2,
    ...(shared === undefined ? {} : { shared }),
  });
  await balancer.start();
  return balancer;
}

function port(balancer: WorkerBalancer): number {
  return balancer.listeners()[0]!.address.port;
}

/** Connects as alice and reads the one-line banner of the upstream it reached. */
async function connectTo(
  balancer: WorkerBalancer,
  who: TestCredential,
): Promise<{ socket: TLSSocket; name: string }> {
  const socket = await connectClient(port(balancer), who);
  const name = text(await readBytes(socket, 2)).trim();
  return { socket, name };
}

/** One short connection: the upstream it reached, once it is closed. */
async function visit(balancer: WorkerBalancer, who: TestCredential): Promise<string> {
  const { socket, name } = await connectTo(balancer, who);
  const closed = readAll(socket);
  socket.destroy();
  await closed;
  return name;
}

function srv(...ports: number[]): { srv: TestSrv[] } {
  return { srv: ports.map((port) => ({ weight: 1, port, target: "lo.test" })) };
}

Deno.test("WorkerBalancer looks an SRV name up once for both workers: added targets take connections, kept ones keep their counts, removed ones drain and give their shared count to the next", async () => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  await using c = await TestUpstream.start(banner("c"));
  await using d = await TestUpstream.start(banner("d"));
  const { alice } = await testPki();
  dns.set("lo.test", { a: ["127.0.0.1"] });
  dns.set(SRV, srv(a.port, b.port));
  // Three shared counts: d can only have the one a leaves.
  await using balancer = await startWorkers(
    body(dns.address, `[{ srv = "${SRV}", interval = "100ms" }]`),
    { upstreams: 3, clients: 4 },
  );
  const source = `srv ${SRV}`;
  assert.deepEqual(
    group(balancer).upstreams.map((u) => [u.address, u.healthy, u.source]),
    [a.address, b.address].sort().map((address) => [address, true, source]),
  );

  // Four connections, one after the other, whichever worker accepts each: two on each.
  const first: { socket: TLSSocket; name: string }[] = [];
  for (let i = 0; i < 4; i++) first.push(await connectTo(balancer, alice));
  assert.deepEqual(first.map((f) => f.name).sort(), ["a", "a", "b", "b"]);
  assert.equal(upstream(balancer, a.address)?.active, 2);
  assert.equal(upstream(balancer, b.address)?.active, 2);

  // a leaves the answer, c joins it, b stays, while clients keep connecting.
  dns.set(SRV, srv(b.port, c.port));
  const seen: string[] = [];
  while (!seen.includes("c")) {
    seen.push(await visit(balancer, alice));
    assert.ok(seen.length < 500, "c takes connections");
  }
  assert.ok(seen.every((name) => ["a", "b", "c"].includes(name)), seen.join(" "));
  const removed = upstream(balancer, a.address);
  assert.equal(removed?.removed, true, "a drains");
  assert.equal(removed?.state, "removed");
  assert.ok(
    await until(() => upstream(balancer, a.address)?.active === 2, WAIT_MS, 10),
    "a keeps its live connections (short ones end)",
  );
  assert.ok(await until(() => upstream(balancer, b.address)?.active === 2, WAIT_MS, 10));
  assert.ok(await until(() => upstream(balancer, c.address)?.active === 0, WAIT_MS, 10));
  assert.equal(upstream(balancer, c.address)?.source, source);

  // Least connections over both workers: c has none, so it takes the next two.
  const next = [await connectTo(balancer, alice), await connectTo(balancer, alice)];
  assert.deepEqual(next.map((n) => n.name), ["c", "c"]);
  const status = balancer.status();
  const counts = status.groups[0]!.upstreams.map((u) => [u.address, u.active]);
  const answered = [b.address, c.address].sort().map((address) => [address, 2]);
  assert.deepEqual(counts, [...answered, [a.address, 2]], "a drains after the answer's upstreams");
  assert.equal(
    status.workers.reduce((sum, w) => sum + (w.connections?.active ?? 0), 0),
    6,
    "the workers' shares add up",
  );

  // One look-up per interval for the process, not one per worker.
  const entry = group(balancer).dns?.[0];
  const queries = dns.queries.filter((q) => q.type === "SRV").length;
  assert.equal(entry?.source, source);
  assert.deepEqual(entry?.upstreams, [b.address, c.address].sort());
  assert.ok(entry !== undefined && entry.resolvedAt !== undefined && entry.failures === 0);
  assert.ok(
    queries >= entry.lookups - 1 && queries <= entry.lookups + 1,
    `${queries} SRV queries for ${entry.lookups} look-ups`,
  );
  assert.equal(
    sample(balancer.metrics.render(), `mtlb_dns_upstreams{group="api",source="${source}"}`),
    2,
  );

  // a is gone for good once its last connection ends; d then takes its shared count.
  for (const f of first.filter((f) => f.name === "a")) f.socket.destroy();
  assert.ok(await until(() => upstream(balancer, a.address) === undefined, WAIT_MS, 10));
  dns.set(SRV, srv(b.port, c.port, d.port));
  assert.ok(
    await until(() => upstream(balancer, d.address)?.healthy === true, WAIT_MS, 10),
    "d is probed and taken in",
  );
  const toD = await connectTo(balancer, alice);
  assert.equal(toD.name, "d", "d has the fewest connections");
  assert.equal(upstream(balancer, d.address)?.active, 1, "d's count starts at zero");
  for (const f of [...first, ...next, toD]) f.socket.destroy();
});

Deno.test("WorkerBalancer keeps the last set while look-ups fail, in every worker", async () => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  const { alice } = await testPki();
  dns.set("lo.test", { a: ["127.0.0.1"] });
  dns.set(SRV, srv(a.port, b.port));
  await using balancer = await startWorkers(
    body(dns.address, `[{ srv = "${SRV}", interval = "100ms" }]`),
  );
  dns.set(SRV, { fail: true });
  assert.ok(
    await until(() => (group(balancer).dns?.[0]?.failures ?? 0) >= 2, WAIT_MS, 10),
    "look-ups fail",
  );
  const failing = group(balancer);
  assert.equal(failing.dns?.[0]?.error?.reason, "empty");
  assert.match(failing.dns?.[0]?.error?.message ?? "", /answered no address/);
  assert.deepEqual(
    failing.upstreams.map((u) => [u.address, u.healthy, u.removed ?? false]),
    [a.address, b.address].sort().map((address) => [address, true, false]),
  );
  const held = [await connectTo(balancer, alice), await connectTo(balancer, alice)];
  assert.deepEqual(held.map((h) => h.name).sort(), ["a", "b"], "both still take connections");
  const metrics = balancer.metrics.render();
  assert.ok(
    (sample(
      metrics,
      `mtlb_dns_lookup_failures_total{group="api",source="srv ${SRV}",reason="empty"}`,
    ) ?? 0) >= 2,
  );
  assert.equal(sample(metrics, `mtlb_dns_upstreams{group="api",source="srv ${SRV}"}`), 2);

  // A good answer again: the error clears, the set follows it.
  dns.set(SRV, srv(b.port));
  assert.ok(await until(() => upstream(balancer, a.address)?.removed === true, WAIT_MS, 10));
  assert.equal(group(balancer).dns?.[0]?.error, undefined);
  for (const h of held) h.socket.destroy();
});

Deno.test("WorkerBalancer.reload() adds a DNS entry to both workers, fails on one that finds nothing, and removes one", async () => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  const { alice } = await testPki();
  dns.set("lo.test", { a: ["127.0.0.1"] });
  await using balancer = await startWorkers(body(dns.address, `["${a.address}"]`));
  const held = await connectTo(balancer, alice);
  assert.equal(held.name, "a");
  assert.equal(group(balancer).dns, undefined);

  const entry = `{ dns = "lo.test:${b.port}", interval = "1h" }`;
  await balancer.reload(await load(body(dns.address, `["${a.address}", ${entry}]`)));
  assert.deepEqual(
    group(balancer).upstreams.map((u) => [u.address, u.healthy, u.active, u.source]),
    [[a.address, true, 1, undefined], [b.address, true, 0, `dns lo.test:${b.port}`]],
  );
  assert.deepEqual(group(balancer).dns?.map((d) => [d.source, d.upstreams]), [
    [`dns lo.test:${b.port}`, [b.address]],
  ]);
  // Whichever worker accepts it, the next one goes to b, which has none.
  const toB = await connectTo(balancer, alice);
  assert.equal(toB.name, "b");
  assert.equal(upstream(balancer, b.address)?.active, 1);

  await assert.rejects(
    async () =>
      balancer.reload(
        await load(body(dns.address, `[${entry}, { dns = "none.test:7000", interval = "1h" }]`)),
      ),
    /group api: DNS look-up of none\.test answered no address/,
  );
  assert.deepEqual(group(balancer).upstreams.map((u) => [u.address, u.removed]), [
    [a.address, undefined],
    [b.address, undefined],
  ]);

  await balancer.reload(await load(body(dns.address, `["${a.address}"]`)));
  assert.equal(group(balancer).dns, undefined);
  assert.equal(upstream(balancer, b.address)?.removed, true, "b drains");
  for (const s of [held, toB]) s.socket.destroy();
  assert.ok(await until(() => upstream(balancer, b.address) === undefined, WAIT_MS, 10));
});

Deno.test('Balancer with dns: "external" takes the upstreams setDnsUpstreams() reports, as a new answer', async () => {
  const entry = `{ srv = "${SRV}", interval = "10s" }`;
  const loaded = await load(body("127.0.0.1:53", `["127.0.0.1:7000", ${entry}]`));
  assert.throws(
    () => new Balancer(loaded).setDnsUpstreams("api", {}),
    TypeError,
    'Cannot set DNS upstreams: the balancer looks them up (dns is "lookup")',
  );
  await using balancer = new Balancer({ ...loaded, health: "external", dns: "external" });
  const source = `srv ${SRV}`;
  const spec = (port: number) => ({ address: `127.0.0.1:${port}`, weight: 1 });
  // Reported before start: kept until the group exists.
  balancer.setDnsUpstreams("api", { [source]: [spec(7001), spec(7002)] });
  for (const port of [7000, 7001, 7002]) {
    balancer.setHealth("api", { address: `127.0.0.1:${port}`, healthy: true, reason: "probe_ok" });
  }
  await balancer.start();
  const rows = () =>
    balancer.status().groups[0]!.upstreams.map((u) => [u.address, u.healthy, u.source]);
  assert.deepEqual(rows(), [
    ["127.0.0.1:7000", true, undefined],
    ["127.0.0.1:7001", true, source],
    ["127.0.0.1:7002", true, source],
  ]);
  assert.deepEqual(balancer.status().groups[0]!.dns?.map((d) => [d.source, d.upstreams]), [
    [source, ["127.0.0.1:7001", "127.0.0.1:7002"]],
  ]);

  // 7001 leaves, 7003 comes: unknown (not picked) until its health is reported.
  balancer.setDnsUpstreams("api", { [source]: [spec(7002), spec(7003)] });
  assert.deepEqual(rows(), [
    ["127.0.0.1:7000", true, undefined],
    ["127.0.0.1:7002", true, source],
    ["127.0.0.1:7003", false, source],
  ]);
  balancer.setHealth("api", { address: "127.0.0.1:7003", healthy: true, reason: "probe_ok" });
  assert.equal(balancer.status().groups[0]!.upstreams[2]!.healthy, true);

  // 7001 comes back: what was reported of it before it left is forgotten.
  balancer.setDnsUpstreams("api", { [source]: [spec(7001)] });
  assert.deepEqual(rows(), [
    ["127.0.0.1:7000", true, undefined],
    ["127.0.0.1:7001", false, source],
  ]);
});

Deno.test("main.ts serve with workers = 2 follows DNS answers, with the permissions `permissions` prints", async () => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  const pki = await testPki();
  const port = await freePort();
  const admin = await freePort();
  dns.set("lo.test", { a: ["127.0.0.1"] });
  dns.set(SRV, srv(a.port));
  await using dir = await configDir(
    mainConfig({ resolver: dns.address, srv: SRV, port, workers: 2, admin }, pki),
  );
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  assert.equal(printed.code, 0, printed.stderr);
  const flags = printed.stdout.trim().split(" ").filter((f) => f.startsWith("--allow-"));
  assert.ok(flags.includes("--allow-net"), printed.stdout);
  assert.ok(flags.some((f) => f.startsWith("--allow-read=") && f.includes(join(ROOT, "lib"))));

  await using main = serveMain(flags, dir.path);
  const { child, reader, seen } = main;
  await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
  assert.ok(seen.some((l) => /Started 2 workers/.test(l)), seen.join("\n"));
  assert.ok(!seen.some((l) => /one event loop/.test(l)), seen.join("\n"));
  assert.deepEqual((await adminGroup(admin)).upstreams.map((u) => u.address), [a.address]);
  dns.set(SRV, srv(b.port));
  const change = await waitForRecord(reader, seen, (r) => /^DNS srv /.test(String(r.message)));
  assert.match(String(change.message), new RegExp(`${b.port} added.*${a.port} removed`));
  assert.ok(await reaches(port, pki.alice, "b"), "b takes connections");
  const entry = (await adminGroup(admin)).dns?.[0];
  assert.deepEqual(entry?.upstreams, [b.address]);
  assert.ok(entry?.resolvedAt !== undefined);
  const logged = seen.filter((l) => l.includes("DNS srv")).length;
  assert.equal(logged, 1, "the primary logs the change once, not once per worker");
  child.kill("SIGTERM");
  await waitForRecord(reader, seen, (r) => r.message === "Stopped");
});
