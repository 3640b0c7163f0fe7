/**
 * End-to-end tests of upstreams looked up in DNS: a loopback DNS server whose answers
 * change while the balancer runs (in process, then through `main.ts`).
 */
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { join } from "node:path";
import { Balancer } from "../lib/server/balancer.ts";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import type { DnsResolver } from "../lib/upstream/dns_resolver.ts";
import { DnsLookupError } from "../lib/upstream/dns_upstreams.ts";
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
import { TestDnsServer } from "./_dns_server.ts";
import {
  banner,
  connectClient,
  readBytes,
  startBalancer,
  type TestBalancer,
  TestUpstream,
  text,
} from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { configDir } from "./_subprocess.ts";
import { waitForRecord } from "../testing/lines.ts";
import { until } from "../testing/poll.ts";
import { freePort } from "../testing/ports.ts";
import { runMain } from "../testing/run_main.ts";

/** Connects as alice and reads the one-line banner of the upstream it reached. */
async function connectTo(test: TestBalancer): Promise<{ socket: TLSSocket; name: string }> {
  const socket = await connectClient(test.port(), test.pki.alice);
  const name = text(await readBytes(socket, 2)).trim();
  return { socket, name };
}

/** Sends a line through and reads its echo: the connection still carries bytes. */
async function echoes(socket: Socket, line: string): Promise<boolean> {
  const reading = readBytes(socket, line.length);
  socket.resume();
  socket.write(line);
  return text(await reading) === line;
}

Deno.test("Balancer follows an SRV name: added targets take connections, kept ones keep their counts, removed ones drain", async () => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  await using c = await TestUpstream.start(banner("c"));
  dns.set("lo.test", { a: ["127.0.0.1"] });
  dns.set(SRV, {
    srv: [{ weight: 1, port: a.port, target: "lo.test" }, {
      weight: 1,
      port: b.port,
      target: "lo.test.",
    }],
  });
  await using test = await startBalancer(
    body(dns.address, `[{ srv = "${SRV}", interval = "100ms" }]`),
  );
  const { balancer } = test;
  assert.deepEqual(
    group(balancer).upstreams.map((u) => [u.address, u.healthy, u.source]),
    [a.address, b.address].sort().map((address) => [address, true, `srv ${SRV}`]),
  );

  // Four connections: two on each.
  const first = await Promise.all([0, 1, 2, 3].map(() => connectTo(test)));
  assert.deepEqual(first.map((f) => f.name).sort(), ["a", "a", "b", "b"]);
  assert.equal(upstream(balancer, a.address)?.active, 2);
  assert.equal(upstream(balancer, b.address)?.active, 2);

  // a leaves the answer, c joins it; b stays.
  dns.set(SRV, {
    srv: [{ weight: 1, port: b.port, target: "lo.test" }, {
      weight: 1,
      port: c.port,
      target: "lo.test",
    }],
  });
  assert.ok(
    await until(
      () => upstream(balancer, c.address)?.healthy === true,
      WAIT_MS,
      10,
    ),
    "c is probed and taken in",
  );
  const removed = upstream(balancer, a.address);
  assert.equal(removed?.removed, true, "a drains");
  assert.equal(removed?.state, "removed");
  assert.equal(removed?.healthy, false);
  assert.equal(removed?.active, 2, "a keeps its live connections");
  assert.equal(upstream(balancer, b.address)?.active, 2, "b keeps its count");
  for (const { socket } of first) assert.ok(await echoes(socket, "still here\n"));

  // New connections go to b and c only; c has none, so it takes both.
  const next = await Promise.all([0, 1].map(() => connectTo(test)));
  assert.deepEqual(next.map((n) => n.name), ["c", "c"]);
  assert.equal(upstream(balancer, c.address)?.active, 2);

  // a disappears once its last connection ends.
  for (const f of first.filter((f) => f.name === "a")) f.socket.destroy();
  assert.ok(await until(() => upstream(balancer, a.address) === undefined, WAIT_MS, 10));
  const entry = group(balancer).dns?.[0];
  assert.equal(entry?.source, `srv ${SRV}`);
  assert.deepEqual(entry?.upstreams, [b.address, c.address].sort());
  assert.ok(entry?.resolvedAt !== undefined && entry.failures === 0);
  const metrics = balancer.metrics.render();
  assert.equal(sample(metrics, `mtlb_dns_upstreams{group="api",source="srv ${SRV}"}`), 2);
  for (const f of [...first, ...next]) f.socket.destroy();
});

Deno.test("Balancer takes every A and AAAA address of a name, and keeps the last set while look-ups fail", async () => {
  await using dns = await TestDnsServer.start();
  await using v4 = await TestUpstream.start(banner("4"));
  await using _v6 = await listenV6(v4.port, "6");
  dns.set("api.test", { a: ["127.0.0.1"], aaaa: ["::1"] });
  await using test = await startBalancer(
    body(dns.address, `[{ dns = "api.test:${v4.port}", interval = "100ms" }]`),
  );
  const { balancer } = test;
  const both = [`127.0.0.1:${v4.port}`, `[::1]:${v4.port}`];
  assert.deepEqual(group(balancer).upstreams.map((u) => [u.address, u.healthy]), [
    [both[0], true],
    [both[1], true],
  ]);
  const names = await Promise.all([0, 1].map(() => connectTo(test)));
  assert.deepEqual(names.map((n) => n.name).sort(), ["4", "6"]);

  // SERVFAIL (Deno reports it as no record): the set stays, the failure is counted.
  dns.set("api.test", { fail: true });
  assert.ok(
    await until(() => (group(balancer).dns?.[0]?.failures ?? 0) >= 2, WAIT_MS, 10),
    "look-ups fail",
  );
  const failing = group(balancer);
  assert.equal(failing.dns?.[0]?.error?.reason, "empty");
  assert.match(failing.dns?.[0]?.error?.message ?? "", /api\.test answered no address/);
  assert.deepEqual(failing.upstreams.map((u) => [u.address, u.removed ?? false]), [
    [both[0], false],
    [both[1], false],
  ]);
  assert.ok(
    (sample(
      balancer.metrics.render(),
      `mtlb_dns_lookup_failures_total{group="api",source="dns api.test:${v4.port}",reason="empty"}`,
    ) ?? 0) >= 2,
  );
  const during = await connectTo(test);
  assert.ok(["4", "6"].includes(during.name), "still serving");

  // A good answer again, without the IPv6 address: it drains, the error clears.
  dns.set("api.test", { a: ["127.0.0.1"] });
  assert.ok(
    await until(() => upstream(balancer, both[1]!)?.removed === true, WAIT_MS, 10),
    "[::1] leaves",
  );
  assert.equal(group(balancer).dns?.[0]?.error, undefined);
  for (const n of [...names, during]) n.socket.destroy();
  assert.ok(await until(() => upstream(balancer, both[1]!) === undefined, WAIT_MS, 10));
  assert.equal((await connectTo(test)).name, "4");
});

Deno.test("Balancer.start() refuses an entry that resolves to nothing, before it listens", async () => {
  await using dns = await TestDnsServer.start();
  await using up = await TestUpstream.start();
  const pki = await testPki();
  const config = parseConfig(
    `[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
${body(dns.address, `["${up.address}", { dns = "none.test:7000", interval = "10s" }]`)}`,
    { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
  );
  await using balancer = new Balancer({ config, tls: await loadTlsMaterial(config) });
  const error = await balancer.start().then(() => undefined, (e: unknown) => e);
  assert.ok(error instanceof DnsLookupError, String(error));
  assert.equal(error.reason, "empty");
  assert.equal(error.message, "group api: DNS look-up of none.test answered no address");
  assert.deepEqual(balancer.listeners(), []);
  assert.equal(balancer.state, "closed");
});

Deno.test("Balancer.reload() keeps the set of an entry that stays, looks a new one up first, and fails on one that finds nothing", async () => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  dns.set("lo.test", { a: ["127.0.0.1"] });
  dns.set(SRV, { srv: [{ weight: 1, port: a.port, target: "lo.test" }] });
  const srv = `{ srv = "${SRV}", interval = "1h" }`;
  await using test = await startBalancer(body(dns.address, `[${srv}]`));
  const { balancer } = test;
  const held = await connectTo(test);
  assert.equal(held.name, "a");
  const lookups = group(balancer).dns?.[0]?.lookups;
  const reload = (upstreams: string) => {
    const config = parseConfig(
      `[tls]\nca = "ca.crt"\ncert = "server.crt"\nkey = "server.key"\n${
        body(dns.address, upstreams)
      }`,
      { path: join(test.pki.dir, "lb.toml"), baseDir: test.pki.dir },
    );
    return loadTlsMaterial(config).then((tls) => balancer.reload({ config, tls }));
  };

  // A new entry is looked up and probed before the reload commits; the kept one is not
  // looked up again and keeps its upstream and its count.
  await reload(`[${srv}, { dns = "lo.test:${b.port}", interval = "1h" }]`);
  assert.deepEqual(
    group(balancer).upstreams.map((u) => [u.address, u.healthy, u.active, u.source]),
    [
      [a.address, true, 1, `srv ${SRV}`],
      [b.address, true, 0, `dns lo.test:${b.port}`],
    ],
  );
  assert.equal(group(balancer).dns?.[0]?.lookups, lookups);
  const toB = await connectTo(test);
  assert.equal(toB.name, "b");
  toB.socket.destroy();

  // An entry that finds nothing fails the reload, which changes nothing.
  await assert.rejects(
    reload(`[${srv}, { dns = "none.test:7000", interval = "1h" }]`),
    /group api: DNS look-up of none\.test answered no address/,
  );
  assert.deepEqual(group(balancer).dns?.map((d) => d.source), [
    `srv ${SRV}`,
    `dns lo.test:${b.port}`,
  ]);
  assert.equal(upstream(balancer, b.address)?.removed, undefined);

  // An entry a reload removes stops; its upstreams drain.
  await reload(`[{ dns = "lo.test:${b.port}", interval = "1h" }]`);
  assert.deepEqual(group(balancer).dns?.map((d) => d.source), [`dns lo.test:${b.port}`]);
  assert.equal(upstream(balancer, a.address)?.removed, true);
  assert.ok(await echoes(held.socket, "draining\n"));
  held.socket.destroy();
  assert.ok(await until(() => upstream(balancer, a.address) === undefined, WAIT_MS, 10));
});

Deno.test("Balancer applies an answer that came during a reload once the reload fails", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  let answer = [{ priority: 1, weight: 1, port: a.port, target: "127.0.0.1" }];
  const blocked = Promise.withResolvers<string[]>();
  let blocking = false;
  const resolver: DnsResolver = {
    srv: () => Promise.resolve(answer),
    addresses: (name) => blocking && name === "slow.test" ? blocked.promise : Promise.resolve([]),
  };
  await using test = await startBalancer(
    body("127.0.0.1:53", `[{ srv = "${SRV}", interval = "100ms" }]`),
    { resolver },
  );
  const { balancer } = test;
  assert.deepEqual(group(balancer).upstreams.map((u) => u.address), [a.address]);

  // A reload whose new entry is slow to answer; meanwhile the SRV answer changes.
  blocking = true;
  const config = parseConfig(
    `[tls]\nca = "ca.crt"\ncert = "server.crt"\nkey = "server.key"\n${
      body("127.0.0.1:53", `[{ srv = "${SRV}", interval = "100ms" }, { dns = "slow.test:7000" }]`)
    }`,
    { path: join(test.pki.dir, "lb.toml"), baseDir: test.pki.dir },
  );
  const reloading = balancer.reload({ config, tls: await loadTlsMaterial(config) });
  answer = [{ priority: 1, weight: 1, port: b.port, target: "127.0.0.1" }];
  const lookups = group(balancer).dns![0]!.lookups;
  assert.ok(await until(() => group(balancer).dns![0]!.lookups >= lookups + 2, WAIT_MS, 10));
  assert.deepEqual(
    group(balancer).upstreams.map((u) => u.address),
    [a.address],
    "not applied while the reload is under way",
  );
  blocked.resolve([]);
  await assert.rejects(reloading, /slow\.test answered no address/);
  assert.equal(upstream(balancer, a.address), undefined, "applied once it failed");
  assert.ok(await until(() => upstream(balancer, b.address)?.healthy === true, WAIT_MS, 10));
});

Deno.test("main.ts serve follows DNS answers through [server] resolver, and exits 1 when an entry resolves to nothing", async (t) => {
  await using dns = await TestDnsServer.start();
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  const pki = await testPki();
  const port = await freePort();
  const admin = await freePort();
  const config = (srv: string) =>
    mainConfig({ resolver: dns.address, srv, port, workers: 1, admin }, pki);
  dns.set("lo.test", { a: ["127.0.0.1"] });
  dns.set(SRV, { srv: [{ weight: 1, port: a.port, target: "lo.test" }] });

  await t.step("permissions asks for every host", async () => {
    await using dir = await configDir(config(SRV));
    const printed = await runMain([`--allow-read=${dir.path}`], [
      "permissions",
      "--config",
      dir.path,
    ]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, / --allow-net --allow-read=/);
    assert.match(
      printed.stderr,
      /^Note: --allow-net has no list because group api looks upstreams up in DNS/,
    );
  });

  await t.step("an entry that resolves to nothing: exit 1 before listening", async () => {
    await using dir = await configDir(config("_none._tcp.test"));
    const result = await runMain(
      ["--allow-net", `--allow-read=${dir.path},${pki.dir}`],
      ["--config", dir.path, "--log-format", "json"],
    );
    assert.equal(result.code, 1, result.stderr);
    const error = result.stderr.trimEnd().split("\n").map((l) => JSON.parse(l)).find((r) =>
      r.level === "ERROR"
    );
    assert.match(
      error?.message,
      /^Cannot start: group api: SRV look-up of _none\._tcp\.test answered no address/,
    );
    assert.doesNotMatch(result.stderr, /started/);
  });

  await t.step("answers change while it serves", async () => {
    await using dir = await configDir(config(SRV));
    await using main = serveMain(["--allow-net", `--allow-read=${dir.path},${pki.dir}`], dir.path);
    const { child, reader, seen } = main;
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    assert.deepEqual((await adminGroup(admin)).upstreams.map((u) => u.address), [a.address]);
    const added = performance.now();
    dns.set(SRV, { srv: [{ weight: 1, port: b.port, target: "lo.test" }] });
    const change = await waitForRecord(reader, seen, (r) => /^DNS srv /.test(String(r.message)));
    assert.match(String(change.message), new RegExp(`${b.port} added.*${a.port} removed`));
    assert.ok(await reaches(port, pki.alice, "b"), "b takes connections");
    // About 170 ms with this 100 ms interval: the interval, the look-up, the first probe.
    assert.ok(performance.now() - added < WAIT_MS);
    const entry = (await adminGroup(admin)).dns?.[0];
    assert.deepEqual(entry?.upstreams, [b.address]);
    assert.ok(entry?.resolvedAt !== undefined);
    child.kill("SIGTERM");
    await waitForRecord(reader, seen, (r) => r.message === "Stopped");
  });
});

/** A banner upstream on [::1]:port. */
async function listenV6(
  port: number,
  name: string,
): Promise<AsyncDisposable & { server: Server }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    banner(name)(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "::1", port }, () => resolve());
  });
  return {
    server,
    [Symbol.asyncDispose]: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
