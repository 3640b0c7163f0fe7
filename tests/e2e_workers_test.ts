/**
 * End-to-end tests of `[server] workers`: a `WorkerBalancer` with two Workers on
 * real sockets (in-process), and `main.ts` with `workers = 2` as a subprocess with
 * its narrow permissions.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TLSSocket } from "node:tls";
import { AdminServer } from "../lib/admin/admin_server.ts";
import { formatHostPort } from "../lib/core/address.ts";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import type { EjectionEvent } from "../lib/upstream/health_event.ts";
import { type LoadedConfig, ReloadError } from "../lib/server/lifecycle.ts";
import type { DenyRecord } from "../lib/server/records.ts";
import { WorkerBalancer } from "../lib/workers/worker_balancer.ts";
import type { WorkerExitRecord } from "../lib/workers/records.ts";
import { MetricsRegistry } from "../lib/metrics/registry.ts";
import { BalancerMetrics } from "../lib/server/_balancer_metrics.ts";
import {
  banner,
  connectClient,
  nextEvent,
  readAll,
  readBytes,
  TestUpstream,
  text,
} from "./_harness.ts";
import { type TestCredential, testPki } from "./_pki_fixtures.ts";
import { lines, waitForRecord } from "../testing/lines.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The worker module with test powers: dies on demand, worker 2 can refuse a reload. */
const TEST_WORKER = new URL("./fixtures/workers_test_worker.ts", import.meta.url);
/** How long a subprocess may take to print what a test waits for. */

/** A config whose `[tls]` section points at the test PKI; `name` is the file name. */
async function load(body: string, name = "lb.toml"): Promise<LoadedConfig> {
  const pki = await testPki();
  const config = parseConfig(
    `[tls]\nca = "ca.crt"\ncert = "server.crt"\nkey = "server.key"\n${body}`,
    { path: join(pki.dir, name), baseDir: pki.dir },
  );
  return { config, tls: await loadTlsMaterial(config) };
}

function body(upstreams: string[], extra = ""): string {
  return `[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = [${upstreams.map((u) => JSON.stringify(u)).join(", ")}]
${extra}
[clients.alice]
match = { cn = "alice" }
groups = ["echo"]

[clients.bob]
match = { cn = "bob" }
groups = ["echo"]
max_connections = 100
`;
}

async function startWorkers(loaded: LoadedConfig): Promise<WorkerBalancer> {
  const balancer = new WorkerBalancer({ ...loaded, workers: 2, module: TEST_WORKER });
  await balancer.start();
  return balancer;
}

function port(balancer: WorkerBalancer, group?: string): number {
  const found = balancer.listeners().find((l) => l.group === group);
  if (found === undefined) throw new Error(`No listener for ${group ?? "shared"}`);
  return found.address.port;
}

/** Connects and sends one byte: resolves with the socket if it is echoed (forwarded), else undefined. */
async function tryForward(port: number, who: TestCredential): Promise<TLSSocket | undefined> {
  const socket = await connectClient(port, who);
  socket.write("x");
  const echoed = await readBytes(socket, 1);
  if (echoed.length === 1) return socket;
  socket.destroy();
  return undefined;
}

/** The first line an upstream with a banner sends, over `n` new connections. */
async function greetings(port: number, who: TestCredential, n: number): Promise<string[]> {
  return await Promise.all(Array.from({ length: n }, async () => {
    const socket = await connectClient(port, who);
    const closed = readAll(socket);
    const greeting = text(await readBytes(socket, 2));
    socket.resume();
    socket.end();
    await closed;
    return greeting;
  }));
}

/** Closes sockets still open and waits until they are. */
async function closeAll(sockets: TLSSocket[]): Promise<void> {
  await Promise.all(
    sockets.filter((s) => !s.destroyed).map((s) => {
      const closed = readAll(s);
      s.destroy();
      return closed;
    }),
  );
}

/** The value of one series in Prometheus text, `undefined` when absent. */
function sample(exposition: string, series: string): number | undefined {
  for (const line of exposition.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

Deno.test("WorkerBalancer serves in both workers and caps a client at exactly 10 across them", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWorkers(
    await load(body([upstream.address], "max_connections = 100\n")),
  );
  await using admin = AdminServer.start(balancer, { listen: "127.0.0.1:0" });
  const pki = await testPki();

  // 40 of bob's connections: the kernel spreads them over both workers.
  const bob = await Promise.all(
    Array.from({ length: 40 }, () => tryForward(port(balancer), pki.bob)),
  );
  assert.ok(bob.every((s) => s !== undefined), "bob is under his cap of 100");
  let status = balancer.status();
  assert.equal(status.workers.length, 2);
  assert.ok(
    status.workers.every((w) => w.state === "serving" && w.connections!.active > 0),
    JSON.stringify(status.workers),
  );
  assert.equal(status.connections.active, 40);
  assert.equal(status.clients.find((c) => c.name === "bob")!.active, 40);

  // 30 of alice's at once, capped at 10: exactly 10 get through, wherever they land.
  const attempts = await Promise.all(
    Array.from({ length: 30 }, () => tryForward(port(balancer), pki.alice)),
  );
  const alice = attempts.filter((s): s is TLSSocket => s !== undefined);
  assert.equal(alice.length, 10);
  assert.equal(await tryForward(port(balancer), pki.alice), undefined, "the 11th is refused");

  status = balancer.status();
  assert.equal(status.clients.find((c) => c.name === "alice")!.active, 10);
  assert.equal(status.connections.active, 50);
  assert.equal(status.connections.accepted, 50);
  assert.equal(status.connections.denied.limit_concurrency, 21);
  assert.equal(status.groups[0]!.upstreams[0]!.active, 50);
  assert.equal(status.groups[0]!.upstreams[0]!.accepted, 50, "summed over the workers");
  assert.equal(status.groups[0]!.open, 50, "the group's connections, summed over the workers");
  assert.equal(status.groups[0]!.maxConnections, 100);
  assert.equal(status.connections.queueTimeouts, 0);
  assert.equal(
    status.workers.reduce((n, w) => n + w.connections!.active, 0),
    50,
    "the workers' shares add up",
  );

  // /metrics has the single balancer's families, summed over the workers.
  const metrics = await (await fetch(`http://${formatHostPort(admin.address)}/metrics`)).text();
  assert.equal(sample(metrics, `mtlb_connections_accepted_total{group="echo"}`), 50);
  assert.equal(
    sample(metrics, `mtlb_connections_active{group="echo",upstream="${upstream.address}"}`),
    50,
  );
  assert.equal(sample(metrics, `mtlb_client_connections_active{client="alice"}`), 10);
  assert.equal(sample(metrics, `mtlb_connections_denied_total{reason="limit_concurrency"}`), 21);
  assert.equal(sample(metrics, `mtlb_limiter_refusals_total{kind="concurrency"}`), 21);
  assert.equal(sample(metrics, `mtlb_bytes_total{group="echo",direction="from_client"}`), 50);
  assert.equal(
    sample(metrics, `mtlb_upstream_healthy{group="echo",upstream="${upstream.address}"}`),
    1,
  );
  assert.equal(sample(metrics, "mtlb_connections_open"), 50);
  assert.equal(sample(metrics, "mtlb_handshakes_in_flight"), 0);
  assert.ok((sample(metrics, "mtlb_handshakes_max") ?? 0) > 0, "the cap, not 0");
  const headers = (text: string) => text.split("\n").filter((l) => l.startsWith("# "));
  const single = new MetricsRegistry();
  new BalancerMetrics(single);
  // Followed by the admin endpoint's own family, as with a single balancer.
  const adminFamily = / mtlb_admin_requests_refused_total /;
  assert.deepEqual(
    headers(metrics).filter((l) => !adminFamily.test(l)),
    headers(single.render()),
    "a single balancer's families",
  );
  assert.equal(headers(metrics).filter((l) => adminFamily.test(l)).length, 2);

  await closeAll([...bob.filter((s) => s !== undefined), ...alice]);
});

Deno.test("WorkerBalancer caps [server] max_connections for the whole server, not per worker", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWorkers(
    await load(body([upstream.address]).replace("[health]", "max_connections = 10\n\n[health]")),
  );
  const pki = await testPki();
  const denied = nextEvent<DenyRecord>(balancer, "deny");
  const before = Date.now();
  const attempts = await Promise.allSettled(
    Array.from({ length: 30 }, () => tryForward(port(balancer), pki.bob)),
  );
  const held = attempts.flatMap((r) => r.status === "fulfilled" && r.value ? [r.value] : []);
  assert.equal(held.length, 10);
  const status = balancer.status();
  assert.equal(status.connections.max, 10);
  assert.equal(status.connections.open, 10);
  // Refused at the cap, or (on a loaded machine, a handshake whose ClientHello was not
  // read 100 ms after it connected) shed to make room for a newcomer.
  const shed = status.connections.handshakeFailures.handshake_shed ?? 0;
  assert.equal((status.connections.denied.server_full ?? 0) + shed, 20);
  // Refusals reach the primary in batches, for the admin endpoint's /denials.
  const record = await denied;
  assert.equal(record.reason, "server_full");
  // With the time the worker refused it (and logged it), not the time it was relayed.
  assert.ok(typeof record.at === "number" && record.at >= before, String(record.at));
  await closeAll(held);
});

Deno.test("WorkerBalancer restarts a worker that dies and gives back the slots it held", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWorkers(await load(body([upstream.address])));
  const pki = await testPki();
  const alice: TLSSocket[] = [];
  for (let i = 0; i < 10; i++) alice.push((await tryForward(port(balancer), pki.alice))!);
  assert.equal(await tryForward(port(balancer), pki.alice), undefined, "capped at 10");
  const shares = balancer.status().workers.map((w) => w.connections!.active);

  let lost = 0;
  const allLost = Promise.withResolvers<void>();
  const survivors = alice.map((socket) =>
    readAll(socket).then(() => {
      if (++lost === shares[0]) allLost.resolve();
    })
  );
  const exited = nextEvent<WorkerExitRecord>(balancer, "worker_exit");
  const restarted = nextEvent<{ index: number; restarts: number }>(balancer, "worker_start");
  const channel = new BroadcastChannel("mtlb-test-workers");
  channel.postMessage({ crash: 1 });
  const exit = await exited;
  channel.close();
  assert.equal(exit.index, 1);
  assert.match(exit.error, /worker 1 dies on purpose/);
  assert.equal(exit.restartInMs, 0, "the first death restarts at once");
  assert.equal(exit.released.upstreams, shares[0]);
  assert.equal(exit.released.clients, shares[0]);
  // Open connections also count the refused 11th if it landed on this worker and its
  // socket was still closing when the worker died.
  assert.ok(
    exit.released.connections === shares[0] || exit.released.connections === shares[0]! + 1,
    `released ${exit.released.connections} open connections, held ${shares[0]}`,
  );
  if (shares[0]! > 0) await allLost.promise;
  assert.deepEqual(await restarted, { index: 1, restarts: 1 });

  // The worker's slots are free again: alice gets exactly as many as she lost.
  const status = balancer.status();
  assert.deepEqual(status.workers.map((w) => [w.state, w.restarts]), [["serving", 1], [
    "serving",
    0,
  ]]);
  assert.equal(status.clients.find((c) => c.name === "alice")!.active, 10 - shares[0]!);
  assert.equal(status.connections.accepted, 10, "the dead worker's counts are kept");
  const again: TLSSocket[] = [];
  for (let i = 0; i < shares[0]!; i++) again.push((await tryForward(port(balancer), pki.alice))!);
  assert.equal(await tryForward(port(balancer), pki.alice), undefined, "and not one more");
  for (const socket of alice) socket.destroy();
  await Promise.all([...survivors, closeAll(again)]);
});

Deno.test("WorkerBalancer ejects once for all workers: an upstream the workers find dead is avoided by all", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  await using balancer = await startWorkers(
    await load(body([a.address, b.address], "outlier = { consecutive_failures = 2 }")),
  );
  const pki = await testPki();
  const probe = balancer.probe("echo")!;
  const outlier = balancer.outlier("echo")!;
  assert.ok(probe.isHealthy(a.address) && probe.isHealthy(b.address));
  const aPort = a.port;
  const aAddress = a.address;
  await a.stop();
  // A worker that dials `a` fails over to `b` and tells the primary, whose one detector
  // counts the refusals of every worker and ejects `a` everywhere.
  let ejection: EjectionEvent["change"] | undefined;
  outlier.addEventListener("ejection", (e) => ejection ??= (e as EjectionEvent).change);
  for (let i = 0; i < 40 && ejection === undefined; i++) {
    assert.deepEqual(await greetings(port(balancer), pki.alice, 1), ["b\n"]);
  }
  assert.deepEqual([ejection?.address, ejection?.ejected, ejection?.reason], [
    aAddress,
    true,
    "dial_refused",
  ]);
  // status() answers only after every worker has read the messages before it.
  const [group] = balancer.status().groups;
  assert.deepEqual(group!.upstreams.map((u) => [u.state, u.healthy, u.ejection?.reason]), [
    ["healthy", false, "dial_refused"],
    ["healthy", true, undefined],
  ]);
  assert.equal(group!.panic, false, "1 of 2 available is not below 50%");
  const metrics = balancer.metrics.render();
  assert.match(
    metrics,
    new RegExp(
      `mtlb_outlier_ejections_total\\{group="echo",upstream="${aAddress}",reason="dial_refused"\\} 1\n`,
    ),
  );
  assert.match(
    metrics,
    new RegExp(`mtlb_upstream_ejected\\{group="echo",upstream="${aAddress}"\\} 1\n`),
  );
  assert.match(metrics, /mtlb_connect_retries_total\{group="echo"\} [2-9]/);
  // `a` is back but ejected for 30 s (and unprobed): a worker that missed the news
  // would pick it.
  await a.listen(aPort);
  const before = a.accepted; // the primary's first probe
  const seen = await greetings(port(balancer), pki.alice, 10);
  assert.deepEqual(seen, Array(10).fill("b\n"));
  assert.equal(a.accepted, before);
});

Deno.test("WorkerBalancer.reload() reaches every worker, or none", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  await using balancer = await startWorkers(await load(body([a.address])));
  const pki = await testPki();
  assert.deepEqual(await greetings(port(balancer), pki.alice, 10), Array(10).fill("a\n"));

  // To `b`, with a new group on a new listener on port 0: one port for both workers.
  const other = `[groups.other]\nupstreams = ["${b.address}"]\nlisten = "127.0.0.1:0"\n`;
  const next = body([b.address], other).replace(
    'groups = ["echo"]\nmax_connections',
    'groups = ["echo", "other"]\nmax_connections',
  );
  await balancer.reload(await load(next));
  assert.deepEqual(await greetings(port(balancer), pki.alice, 10), Array(10).fill("b\n"));
  const otherPort = port(balancer, "other");
  assert.deepEqual(await greetings(otherPort, pki.bob, 10), Array(10).fill("b\n"));
  await balancer.reload(await load(next));
  assert.equal(port(balancer, "other"), otherPort, "a reload keeps the port it got");

  // Worker 2 refuses the next one: worker 1, which took it, goes back.
  const failed = balancer.reload(await load(body([a.address]), "fail-in-worker-2.toml"));
  await assert.rejects(
    failed,
    (e) => e instanceof ReloadError && /injected failure/.test(e.message),
  );
  const probed = a.accepted; // the first ten, and the primary's probes of `a`
  assert.deepEqual(await greetings(port(balancer), pki.alice, 10), Array(10).fill("b\n"));
  assert.equal(a.accepted, probed, "nothing more went to `a`");
  const status = balancer.status();
  assert.equal(status.lastReload?.outcome, "failure");
  assert.equal(status.lastReload?.error, "injected failure in worker 2");
  assert.deepEqual(status.groups.map((g) => g.name), ["echo", "other"]);
  const metrics = balancer.metrics.render();
  assert.equal(sample(metrics, `mtlb_reloads_total{outcome="success"}`), 2);
  assert.equal(sample(metrics, `mtlb_reloads_total{outcome="failure"}`), 1);
  assert.equal(sample(metrics, "mtlb_config_last_reload_successful"), 0);
});

Deno.test("WorkerBalancer.drain() drains every worker and sums what it had to close", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWorkers(await load(body([upstream.address])));
  await using admin = AdminServer.start(balancer, { listen: "127.0.0.1:0" });
  const pki = await testPki();
  const held = await Promise.all(
    Array.from({ length: 6 }, () => tryForward(port(balancer), pki.bob)),
  );
  const closed = held.map((s) => readAll(s!));
  const drained = balancer.drain(200);
  assert.equal(balancer.state, "draining");
  const health = await fetch(`http://${formatHostPort(admin.address)}/healthz`);
  assert.equal(health.status, 503);
  await health.body?.cancel();
  const result = await drained;
  assert.equal(result.forced, 6);
  assert.equal(balancer.state, "closed");
  await Promise.all(closed);
  assert.equal(balancer.status().workers.every((w) => w.state === "closed"), true);
});

Deno.test("WorkerBalancer.close() during a drain ends it now, as a second SIGTERM does", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWorkers(await load(body([upstream.address])));
  const pki = await testPki();
  const held = await Promise.all(
    Array.from({ length: 4 }, () => tryForward(port(balancer), pki.bob)),
  );
  const closed = held.map((s) => readAll(s!));
  // A drain that would wait a minute for these connections ...
  const drained = balancer.drain(60_000);
  assert.equal(balancer.state, "draining");
  // ... is cut short: the workers close at once and the drain returns. Before the fix,
  // the workers' close waited behind their drain and the drain never returned.
  await balancer.close();
  const result = await drained;
  assert.equal(result.forced, 4);
  assert.equal(balancer.state, "closed");
  await Promise.all(closed);
  assert.equal(balancer.status().workers.every((w) => w.state === "closed"), true);
});

// -------------------------------------------------------------------------------------
// main.ts as a subprocess

Deno.test("main.ts with workers = 2 runs on its narrow flags, reloads every worker on SIGHUP, exits 0 on SIGTERM", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_e2e_workers_" });
  const path = join(dir, "lb.toml");
  const config = (upstream: string) =>
    `[server]
listen = "127.0.0.1:0"
workers = 2
drain_timeout = "5s"

[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"

[admin]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
max_connections = 100
`;
  try {
    // The flags `permissions` prints for a config with both upstreams, so the reload
    // to `b` is allowed: they include the read permission for lib/.
    await Deno.writeTextFile(path, config(`${a.address}", "${b.address}`));
    const printed = await new Deno.Command(Deno.execPath(), {
      args: ["run", `--allow-read=${path}`, "main.ts", "permissions", "--config", path],
      cwd: ROOT,
      stdin: "null",
    }).output();
    const line = new TextDecoder().decode(printed.stdout).trimEnd();
    assert.ok(
      line.includes(`,${join(ROOT, "lib")} ${join(ROOT, "main.ts")} --config `),
      line,
    );
    const flags = line.split(" ").slice(2, 4);
    await Deno.writeTextFile(path, config(a.address));

    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, "main.ts", "--config", path, "--log-format", "json"],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = lines(child.stderr);
    const seen: string[] = [];
    try {
      const started = await waitForRecord(
        reader,
        seen,
        (r) => r.logger === "mtlb.main" && /started: listening on/.test(String(r.message)),
      );
      const properties = started.properties as { addresses: string[]; admin: string };
      const lbPort = Number(properties.addresses[0]!.split(":")[1]);
      const status = async () =>
        await (await fetch(`http://${properties.admin}/status`)).json() as {
          workers: { state: string; connections: { accepted: number } }[];
          connections: { accepted: number };
        };
      assert.deepEqual((await status()).workers.map((w) => w.state), ["serving", "serving"]);

      assert.deepEqual(await greetings(lbPort, pki.alice, 20), Array(20).fill("a\n"));
      const served = (await status()).workers.map((w) => w.connections.accepted);
      assert.equal(served[0]! + served[1]!, 20);
      assert.ok(served.every((n) => n > 0), `both workers served: ${served}`);

      await Deno.writeTextFile(path, config(b.address));
      child.kill("SIGHUP");
      const reloaded = await waitForRecord(
        reader,
        seen,
        (r) => /^Reloaded .*: groups ~echo$/.test(String(r.message)),
      );
      assert.equal(
        (reloaded.properties as { worker?: number }).worker,
        undefined,
        "logged by the primary",
      );
      assert.deepEqual(await greetings(lbPort, pki.alice, 20), Array(20).fill("b\n"));
      assert.equal((await status()).connections.accepted, 40);
      // Each connection's audit record comes from the worker that served it.
      assert.equal(seen.filter((l) => l.includes('"logger":"mtlb.audit"')).length >= 20, true);

      child.kill("SIGTERM");
      await waitForRecord(reader, seen, (r) => r.logger === "mtlb.main" && r.message === "Stopped");
      assert.equal((await child.status).code, 0);
      assert.ok(!seen.some((l) => /"level":"(ERROR|FATAL)"/.test(l)), seen.join("\n"));
      // Each event once: not once per worker.
      for (
        const message of [/"message":"Reloaded /, /"message":"Draining/, /"message":"Listening/]
      ) {
        assert.ok(seen.filter((l) => message.test(l)).length <= 1, `${message} logged once`);
      }
      // A connection's record names the worker that served it.
      const audit = seen.find((l) => l.includes('"logger":"mtlb.audit"'))!;
      assert.match(audit, /"worker":[12]\b/);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      for await (const _ of reader); // Drain stderr so its resource closes.
      await child.status;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("WorkerBalancer holds a group's total cap and a client's cap within it exactly across workers", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWorkers(
    await load(
      body([upstream.address], "max_connections = 15\n") +
        "[clients.alice.per_group.echo]\nmax_connections = 4\n",
    ),
  );
  const pki = await testPki();
  const tries = (who: TestCredential, n: number) =>
    Promise.all(Array.from({ length: n }, () => tryForward(port(balancer), who)));
  const alice = (await tries(pki.alice, 10)).filter((s) => s !== undefined);
  assert.equal(alice.length, 4, "alice's cap within the group, wherever they land");
  const bob = (await tries(pki.bob, 30)).filter((s) => s !== undefined);
  assert.equal(bob.length, 11, "the group's 15 over both clients");
  const status = balancer.status();
  assert.equal(status.connections.denied.limit_concurrency, 6);
  assert.equal(status.connections.denied.group_full, 19);
  assert.equal(status.connections.active, 15);
  for (const socket of [...alice, ...bob]) socket!.destroy();
});
