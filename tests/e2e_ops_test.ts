/**
 * End-to-end tests of the operations features with real sockets: metrics, status,
 * reload under traffic, drain, PROXY protocol v2, CRLs, max_connections; and
 * `main.ts` as a subprocess for SIGHUP and SIGTERM.
 */
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { createHash } from "node:crypto";
import type { Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TLSSocket } from "node:tls";
import { AdminServer } from "../lib/admin/admin_server.ts";
import { formatHostPort, type HostPort } from "../lib/core/address.ts";
import { loadConfig, loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { createCrl } from "../lib/pki/crl_issuer.ts";
import { dialTcp } from "../lib/upstream/dial.ts";
import { FakeClock } from "../lib/core/clock.ts";
import { certificateValidity } from "../lib/identity/certificate.ts";
import { parseProxyV2, PP2_TYPE, tlvText } from "../lib/proxy/proxy_protocol.ts";
import { Balancer } from "../lib/server/balancer.ts";
import type { BalancerOptions } from "../lib/server/options.ts";
import { type LoadedConfig, ReloadError } from "../lib/server/lifecycle.ts";
import type {
  ConnectionRecord,
  DenyRecord,
  HandshakeErrorRecord,
  ReloadRecord,
} from "../lib/server/records.ts";
import { connectClient, nextEvent, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { type TestPki, testPki } from "./_pki_fixtures.ts";
import { lines, waitForRecord } from "../testing/lines.ts";
import { freePort } from "../testing/ports.ts";

const DAY = 24 * 60 * 60 * 1000;

/** A config whose `[tls]` section points at the test PKI (plus `tlsExtra` lines). */
async function load(body: string, tlsExtra = ""): Promise<LoadedConfig> {
  const pki = await testPki();
  const config = parseConfig(
    `[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
${tlsExtra}
${body}`,
    { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
  );
  return { config, tls: await loadTlsMaterial(config) };
}

function echoConfig(upstream: string, clients = ["alice"], extra = ""): string {
  return `[server]
listen = "127.0.0.1:0"
${extra}

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

${
    clients.map((name) => `[clients.${name}]\nmatch = { cn = "${name}" }\ngroups = ["echo"]\n`)
      .join("\n")
  }`;
}

async function startWith(
  loaded: LoadedConfig,
  options: Omit<BalancerOptions, "config" | "tls"> = {},
): Promise<Balancer & AsyncDisposable> {
  const balancer = new Balancer({ ...loaded, ...options });
  await balancer.start();
  return balancer;
}

function port(balancer: Balancer, group?: string): number {
  const found = balancer.listeners().find((l) => l.group === group);
  if (found === undefined) throw new Error(`No listener for ${group ?? "shared"}`);
  return found.address.port;
}

/** The value of one series in Prometheus text, `undefined` when absent. */
function sample(exposition: string, series: string): number | undefined {
  for (const line of exposition.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Sends `data` and reads it back from an echo upstream. */
async function roundTrip(socket: TLSSocket, data: string): Promise<string> {
  socket.write(data);
  const back = text(await readBytes(socket, data.length));
  socket.resume();
  return back;
}

/** Expects a refusal after the handshake: nothing comes back, and the deny event says why. */
async function assertDenied(
  socket: TLSSocket,
  denied: Promise<DenyRecord>,
  reason: string,
): Promise<void> {
  socket.write("hello?");
  const [record, { data }] = await Promise.all([denied, readAll(socket)]);
  assert.equal(record.reason, reason);
  assert.equal(data.length, 0);
}

/** Ends a client whose echo is all read, and waits for the balancer's audit record. */
async function finish(balancer: Balancer, socket: TLSSocket): Promise<ConnectionRecord> {
  const ended = nextEvent<ConnectionRecord>(balancer, "end");
  const closed = readAll(socket);
  socket.end();
  await closed;
  return await ended;
}

Deno.test("Balancer metrics follow connections as they open and close", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(await load(echoConfig(upstream.address)));
  const pki = await testPki();
  const metrics = () => balancer.metrics.render();
  const active = `mtlb_connections_active{group="echo",upstream="${upstream.address}"}`;

  assert.equal(sample(metrics(), active), 0);
  assert.equal(
    sample(metrics(), `mtlb_upstream_healthy{group="echo",upstream="${upstream.address}"}`),
    1,
  );
  assert.equal(sample(metrics(), `mtlb_connections_denied_total{reason="unknown_identity"}`), 0);

  const client = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(client, "x".repeat(1000)), "x".repeat(1000));
  let text = metrics();
  assert.equal(sample(text, active), 1);
  assert.equal(sample(text, `mtlb_client_connections_active{client="alice"}`), 1);
  assert.equal(sample(text, `mtlb_connections_accepted_total{group="echo"}`), 1);
  assert.equal(sample(text, `mtlb_bytes_total{group="echo",direction="from_client"}`), 1000);
  assert.equal(sample(text, `mtlb_bytes_total{group="echo",direction="from_upstream"}`), 1000);
  assert.equal(sample(text, "mtlb_connections_open"), 1);

  const record = await finish(balancer, client);
  assert.equal(Number.isInteger(record.durationMs), true, "duration is rounded");
  text = metrics();
  assert.equal(sample(text, active), 0);
  assert.equal(sample(text, `mtlb_client_connections_active{client="alice"}`), 0);
  assert.equal(sample(text, `mtlb_connections_accepted_total{group="echo"}`), 1);

  // A refusal and a failed handshake are counted by reason.
  const carol = await connectClient(port(balancer), pki.carol);
  const carolDenied = nextEvent<DenyRecord>(balancer, "deny");
  await assertDenied(carol, carolDenied, "unknown_identity");
  assert.equal((await carolDenied).detail, "no client's match fits the certificate");
  const failed = nextEvent(balancer, "handshake_error");
  await connectClient(port(balancer), pki.intruder).then((s) => readAll(s), () => undefined);
  await failed;
  text = metrics();
  assert.equal(sample(text, `mtlb_connections_denied_total{reason="unknown_identity"}`), 1);
  const failures = text.split("\n").filter((l) => l.startsWith("mtlb_handshake_failures_total{"));
  assert.equal(failures.reduce((n, l) => n + Number(l.split(" ")[1]), 0), 1, failures.join("\n"));
  // Certificate expiry is exported in seconds since the epoch.
  const serverExpiry = sample(text, `mtlb_certificate_expiry_timestamp_seconds{which="server"}`);
  assert.ok(serverExpiry !== undefined && serverExpiry * 1000 > Date.now() + 300 * DAY);
});

Deno.test("Balancer.status() and the admin endpoint describe groups, upstreams and clients", async () => {
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(
    await load(echoConfig(upstream.address, ["alice", "bob"])),
  );
  await using admin = AdminServer.start(balancer, { listen: "127.0.0.1:0" });
  const pki = await testPki();
  const client = await connectClient(port(balancer), pki.alice);
  await roundTrip(client, "ping");

  const response = await fetch(`http://${formatHostPort(admin.address)}/status`);
  const status = await response.json();
  assert.equal(status.state, "serving");
  assert.equal(status.config.path, join(pki.dir, "lb.toml"));
  assert.ok(Date.parse(status.config.loadedAt) <= Date.now());
  assert.equal(status.connections.active, 1);
  assert.deepEqual(status.listeners, [{ address: `127.0.0.1:${port(balancer)}` }]);
  assert.equal(status.groups[0].name, "echo");
  const [up] = status.groups[0].upstreams;
  assert.equal(up.address, upstream.address);
  assert.equal(up.active, 1);
  assert.equal(up.accepted, 1, "connections forwarded to this upstream");
  assert.equal(up.healthy, true);
  assert.equal(up.state, "healthy");
  assert.equal(up.lastProbe.ok, true);
  assert.deepEqual(
    status.clients.map((c: { name: string; active: number }) => [c.name, c.active]),
    [["alice", 1], ["bob", 0]],
  );
  const metrics = await (await fetch(`http://${formatHostPort(admin.address)}/metrics`)).text();
  assert.equal(sample(metrics, `mtlb_client_connections_active{client="alice"}`), 1);
  await finish(balancer, client);
});

Deno.test("Balancer.reload() under live traffic drops nothing and applies the new policy", async () => {
  const pki = await testPki();
  // A sink that hashes what it receives and answers with the digest after the client's FIN.
  const threshold = Promise.withResolvers<void>();
  await using upstream = await TestUpstream.start((socket) => {
    const hash = createHash("sha256");
    let received = 0;
    socket.on("data", (chunk: Uint8Array) => {
      hash.update(chunk);
      received += chunk.length;
      if (received >= 8 * 1024 * 1024) threshold.resolve();
    });
    socket.on("end", () => socket.end(hash.digest("hex")));
  });
  await using balancer = await startWith(await load(echoConfig(upstream.address, ["alice"])));
  const pool = balancer.pool("echo")!;

  const stream = await connectClient(port(balancer), pki.alice);
  const reply = readAll(stream);
  const sent = createHash("sha256");
  const chunk = new Uint8Array(1024 * 1024);
  const pump = (async () => {
    for (let i = 0; i < 32; i++) {
      crypto.getRandomValues(chunk.subarray(0, 65536));
      chunk[1] = i;
      sent.update(chunk);
      if (!stream.write(chunk.slice())) await new Promise((r) => stream.once("drain", r));
    }
    stream.end();
  })();

  // Mid-stream: bob joins alice, and a second upstream joins.
  await threshold.promise;
  const early = await connectClient(port(balancer), pki.bob);
  await assertDenied(early, nextEvent(balancer, "deny"), "unknown_identity");
  await using second = await TestUpstream.start();
  const reloaded = nextEvent<ReloadRecord>(balancer, "reload");
  await balancer.reload(
    await load(
      echoConfig(upstream.address, ["alice", "bob"]).replace(
        `upstreams = ["${upstream.address}"]`,
        `upstreams = ["${upstream.address}", "${second.address}"]`,
      ),
    ),
  );
  assert.equal((await reloaded).outcome, "success");
  assert.equal(pool.active(upstream.address), 1, "the live connection is still counted");
  assert.equal(balancer.pool("echo"), pool, "the group's pool survives the reload");
  assert.equal(balancer.probe("echo")!.isHealthy(second.address), true, "probed before use");

  await pump;
  const { data, error } = await reply;
  assert.equal(error, undefined);
  assert.equal(text(data), sent.digest("hex"), "every byte made it, in order");

  // New connections get the new policy: bob is in.
  const bob = await connectClient(port(balancer), pki.bob);
  const bobEnded = nextEvent<ConnectionRecord>(balancer, "end");
  bob.end("hi");
  await readAll(bob);
  assert.equal((await bobEnded).client, "bob");
  const metrics = balancer.metrics.render();
  assert.equal(sample(metrics, `mtlb_reloads_total{outcome="success"}`), 1);
  assert.equal(sample(metrics, "mtlb_config_last_reload_successful"), 1);
});

Deno.test("Balancer.reload() swaps the CA for new handshakes and keeps sessions", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(await load(echoConfig(upstream.address, ["alice"])));
  const live = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(live, "before"), "before");

  // Before: the intruder's CA is not trusted.
  const failed = nextEvent(balancer, "handshake_error");
  await connectClient(port(balancer), pki.intruder).then((s) => readAll(s), () => undefined);
  await failed;

  const dir = await Deno.makeTempDir({ prefix: "mtlb_ops_" });
  try {
    const bundle = join(dir, "bundle.crt");
    await Deno.writeTextFile(bundle, pki.ca.certPem + pki.foreignCa.certPem);
    const { config } = await load(echoConfig(upstream.address, ["alice", "intruder"]));
    config.tls.ca = bundle;
    await balancer.reload({ config, tls: await loadTlsMaterial(config) });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const intruder = await connectClient(port(balancer), pki.intruder);
  assert.equal(await roundTrip(intruder, "now trusted"), "now trusted");
  assert.equal(await roundTrip(live, "after"), "after", "the old session still runs");
  await finish(balancer, intruder);
  await finish(balancer, live);
});

Deno.test("Balancer.reload() that fails keeps the old configuration serving", async (t) => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using blocker = await TestUpstream.start();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_ops_" });
  try {
    const path = join(dir, "lb.toml");
    const tls = `[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"
`;
    await Deno.writeTextFile(path, tls + echoConfig(upstream.address, ["alice"]));
    const config = await loadConfig(path);
    await using balancer = await startWith({ config, tls: await loadTlsMaterial(config) });
    const live = await connectClient(port(balancer), pki.alice);
    assert.equal(await roundTrip(live, "one"), "one");

    await t.step("a TOML error in the file (reload() re-reads it)", async () => {
      await Deno.writeTextFile(path, tls + "[groups.echo\n");
      await assert.rejects(
        balancer.reload(),
        (e: unknown) => e instanceof ReloadError && /invalid TOML/.test(e.message),
      );
      assert.equal(balancer.status().lastReload?.outcome, "failure");
      assert.match(balancer.status().lastReload?.error ?? "", /lb\.toml:\d+:\d+: invalid TOML/);
    });
    await t.step("a new listener on an address already in use", async () => {
      const next = echoConfig(upstream.address, ["alice", "bob"]).replace(
        "[groups.echo]",
        `[groups.echo]\nlisten = "${blocker.address}"`,
      );
      await Deno.writeTextFile(path, tls + next);
      await assert.rejects(balancer.reload(), ReloadError);
      assert.equal(balancer.listeners().length, 1, "no listener was added");
    });
    await t.step("a CRL from an untrusted CA", async () => {
      const crl = join(dir, "ca.crl");
      await Deno.writeTextFile(crl, await createCrl(pki.foreignCa.authority, []));
      const next = await load(echoConfig(upstream.address, ["alice", "bob"]));
      await assert.rejects(
        balancer.reload({
          config: next.config,
          tls: { ...next.tls, crl: await Deno.readTextFile(crl) },
        }),
        /not a certificate of the CA bundle/,
      );
    });

    // Still the old policy: alice forwarded, bob unknown; the live session runs on.
    assert.equal(await roundTrip(live, "two"), "two");
    const alice = await connectClient(port(balancer), pki.alice);
    assert.equal(await roundTrip(alice, "new"), "new");
    const bob = await connectClient(port(balancer), pki.bob);
    await assertDenied(bob, nextEvent(balancer, "deny"), "unknown_identity");
    const metrics = balancer.metrics.render();
    assert.equal(sample(metrics, `mtlb_reloads_total{outcome="failure"}`), 3);
    assert.equal(sample(metrics, `mtlb_reloads_total{outcome="success"}`), 0);
    assert.equal(sample(metrics, "mtlb_config_last_reload_successful"), 0);
    await finish(balancer, alice);
    await finish(balancer, live);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Balancer.reload() adds and removes groups and listeners", async () => {
  const pki = await testPki();
  await using echoUp = await TestUpstream.start();
  await using cacheUp = await TestUpstream.start((socket) => {
    socket.write("cache\n");
    socket.on("end", () => socket.end());
  });
  const first = echoConfig(echoUp.address, ["alice"]);
  await using balancer = await startWith(await load(first));
  const shared = port(balancer);
  const live = await connectClient(shared, pki.alice);
  assert.equal(await roundTrip(live, "x"), "x");

  const withCache = `${first}
[groups.cache]
upstreams = ["${cacheUp.address}"]
listen = "127.0.0.1:0"
`.replace('groups = ["echo"]', 'groups = ["echo", "cache"]');
  await balancer.reload(await load(withCache));
  assert.equal(port(balancer), shared, "the shared listener is kept");
  const cache = await connectClient(port(balancer, "cache"), pki.alice);
  assert.equal(text(await readBytes(cache, 6)), "cache\n");
  cache.destroy();

  // Remove the cache group and its listener again.
  const cachePort = port(balancer, "cache");
  await balancer.reload(await load(first));
  assert.equal(balancer.pool("cache"), undefined);
  assert.deepEqual(balancer.listeners().map((l) => l.group), [undefined]);
  await assert.rejects(connectClient(cachePort, pki.alice), /ECONNREFUSED/);
  assert.doesNotMatch(balancer.metrics.render(), /group="cache"/);
  assert.equal(await roundTrip(live, "y"), "y");
  await finish(balancer, live);
});

Deno.test("Balancer.drain() lets a running transfer finish while /healthz says 503", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(await load(echoConfig(upstream.address)));
  await using admin = AdminServer.start(balancer, { listen: "127.0.0.1:0" });
  const healthz = () => fetch(`http://${formatHostPort(admin.address)}/healthz`);
  const before = await healthz();
  assert.equal(before.status, 200);
  await before.body?.cancel();

  const client = await connectClient(port(balancer), pki.alice);
  const listenPort = port(balancer);
  assert.equal(await roundTrip(client, "first half "), "first half ");
  const state = nextEvent<string>(balancer, "state");
  const drained = balancer.drain(60_000);
  assert.equal(await state, "draining");

  const response = await healthz();
  assert.equal(response.status, 503);
  assert.equal(await response.text(), "draining\n");
  await assert.rejects(connectClient(listenPort, pki.alice), /ECONNREFUSED/, "not accepting");
  // The running connection goes on and ends on its own terms.
  assert.equal(await roundTrip(client, "second half"), "second half");
  const record = await finish(balancer, client);
  assert.equal(record.reason, "client_closed");
  assert.equal(record.bytesFromClient, "first half second half".length);
  const result = await drained;
  assert.equal(result.forced, 0);
  assert.equal(balancer.state, "closed");
});

Deno.test("Balancer.drain() closes what is still open at its deadline", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(await load(echoConfig(upstream.address)));
  const client = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(client, "idle now"), "idle now");
  const closed = readAll(client);
  const ended = nextEvent<ConnectionRecord>(balancer, "end");
  const result = await balancer.drain(50);
  assert.equal(result.forced, 1);
  assert.equal((await ended).reason, "aborted");
  await closed;
});

Deno.test("Balancer sends a PROXY v2 header with addresses and TLVs before the client's bytes", async () => {
  const pki = await testPki();
  const headers: ReturnType<typeof parseProxyV2>[] = [];
  const probe = Promise.withResolvers<number>();
  await using upstream = await TestUpstream.start((socket: Socket) => {
    let buffered = new Uint8Array(0);
    let parsed = false;
    let bytes = 0;
    socket.on("data", (chunk: Uint8Array) => {
      bytes += chunk.length;
      if (parsed) return void socket.write(chunk);
      buffered = new Uint8Array([...buffered, ...chunk]);
      const header = parseProxyV2(buffered);
      if (header === undefined) return;
      parsed = true;
      headers.push(header);
      socket.write(buffered.subarray(header.length));
    });
    socket.on("end", () => socket.end());
    socket.on("close", () => {
      if (!parsed) probe.resolve(bytes);
    });
  });
  await using balancer = await startWith(
    await load(
      echoConfig(upstream.address).replace("[groups.echo]", '[groups.echo]\nproxy_protocol = "v2"'),
    ),
  );
  assert.equal(await probe.promise, 0, "the health probe connected and sent nothing");

  const client = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(client, "after the header"), "after the header");
  const parsed = headers[0]!;
  assert.equal(parsed.header.command, "proxy");
  assert.deepEqual(parsed.header.source, {
    hostname: client.localAddress!,
    port: client.localPort!,
  });
  assert.deepEqual(parsed.header.destination, { hostname: "127.0.0.1", port: port(balancer) });
  const tlvs = parsed.header.tlvs;
  assert.equal(tlvText(tlvs, PP2_TYPE.AUTHORITY), "localhost", "the SNI name");
  assert.equal(tlvText(tlvs, PP2_TYPE.MTLB_CLIENT), "alice");
  assert.equal(tlvText(tlvs, PP2_TYPE.MTLB_SPKI_SHA256), pki.alice.spkiSha256);
  assert.equal(parsed.ssl?.client, 0x03, "SSL and CERT_CONN");
  assert.equal(parsed.ssl?.verify, 0, "the certificate was verified");
  assert.equal(tlvText(parsed.ssl!.tlvs, PP2_TYPE.SSL_VERSION), "TLSv1.3");
  assert.equal(tlvText(parsed.ssl!.tlvs, PP2_TYPE.SSL_CN), "alice");
  assert.match(tlvText(parsed.ssl!.tlvs, PP2_TYPE.SSL_CIPHER) ?? "", /^TLS_AES_/);
  const record = await finish(balancer, client);
  assert.equal(record.bytesFromClient, "after the header".length, "the header is not counted");
});

Deno.test("Balancer refuses a revoked client after a CRL reload and closes its live sessions", async (t) => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_ops_" });
  try {
    const crlPath = join(dir, "ca.crl");
    for (const keep of [false, true]) {
      await t.step(keep ? 'on_policy_change = "keep"' : "by default", async () => {
        await Deno.writeTextFile(crlPath, await createCrl(pki.ca.authority, []));
        const body = echoConfig(
          upstream.address,
          ["alice", "bob"],
          keep ? 'on_policy_change = "keep"' : "",
        );
        await using balancer = await startWith(await load(body, `crl = "${crlPath}"`));
        const bob = await connectClient(port(balancer), pki.bob);
        assert.equal(await roundTrip(bob, "before"), "before");
        const alice = await connectClient(port(balancer), pki.alice);
        assert.equal(await roundTrip(alice, "fine"), "fine");

        const nextUpdate = new Date(Date.now() + 3 * DAY);
        await Deno.writeTextFile(
          crlPath,
          await createCrl(pki.ca.authority, [pki.bob.serial], { nextUpdate }),
        );
        const ended = nextEvent<ConnectionRecord>(balancer, "end");
        const logged: LogRecord[] = [];
        await configure({
          sinks: { test: (record) => logged.push(record) },
          loggers: [
            { category: ["mtlb", "server"], lowestLevel: "info", sinks: ["test"] },
            { category: ["logtape", "meta"], sinks: [] },
          ],
          reset: true,
        });
        try {
          await balancer.reload(await load(body, `crl = "${crlPath}"`));
        } finally {
          await reset();
        }
        const kept = logged.filter((r) => r.rawMessage.toString().startsWith("Keeping"));
        assert.deepEqual(
          kept.map(({ properties: { client, reason } }) => [client, reason]),
          keep ? [["bob", "revoked"]] : [],
        );
        if (keep) {
          assert.equal(await roundTrip(bob, "still on"), "still on", "kept");
        } else {
          const record = await ended;
          assert.equal(record.client, "bob");
          assert.equal(record.reason, "revoked");
          assert.match(record.detail ?? "", /is revoked/);
          assert.equal((await readAll(bob)).data.length, 0);
        }

        const again = await connectClient(port(balancer), pki.bob);
        await assertDenied(again, nextEvent(balancer, "deny"), "revoked");
        assert.equal(await roundTrip(alice, "still fine"), "still fine", "alice is untouched");
        const metrics = balancer.metrics.render();
        assert.equal(sample(metrics, `mtlb_connections_denied_total{reason="revoked"}`), 1);
        assert.equal(
          sample(metrics, `mtlb_connections_closed_total{reason="revoked"}`),
          keep ? undefined : 1,
        );
        assert.equal(
          sample(metrics, `mtlb_certificate_expiry_timestamp_seconds{which="crl"}`),
          Math.floor(nextUpdate.getTime() / 1000),
        );
        assert.equal(
          balancer.status().certificates.crlNextUpdate,
          new Date(Math.floor(nextUpdate.getTime() / 1000) * 1000).toISOString(),
        );
        await finish(balancer, alice);
        if (keep) await finish(balancer, bob);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Balancer closes live connections a reload no longer allows", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using other = await TestUpstream.start();
  const body = (aliceGroups: string, bob: boolean) =>
    `[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream.address}"]

[groups.other]
upstreams = ["${other.address}"]

[clients.alice]
match = { cn = "alice" }
groups = ${aliceGroups}

${bob ? `[clients.bob]\nmatch = { cn = "bob" }\ngroups = ["echo"]\n` : ""}
[clients.carol]
match = { cn = "carol" }
groups = ["echo"]
`;
  await using balancer = await startWith(await load(body('["echo", "other"]', true)));
  const alice = await connectClient(port(balancer), pki.alice, { servername: "other" });
  assert.equal(await roundTrip(alice, "a"), "a");
  const bob = await connectClient(port(balancer), pki.bob);
  assert.equal(await roundTrip(bob, "b"), "b");
  const carol = await connectClient(port(balancer), pki.carol);
  assert.equal(await roundTrip(carol, "c"), "c");

  const records: ConnectionRecord[] = [];
  const twoEnded = Promise.withResolvers<void>();
  balancer.addEventListener("end", (event) => {
    records.push((event as CustomEvent<ConnectionRecord>).detail);
    if (records.length === 2) twoEnded.resolve();
  });
  // alice loses group "other"; bob is removed; carol is unchanged.
  await balancer.reload(await load(body('["echo"]', false)));
  await twoEnded.promise;
  const byClient = new Map(records.map((r) => [r.client, r]));
  assert.equal(byClient.get("alice")?.reason, "policy_changed");
  assert.match(byClient.get("alice")?.detail ?? "", /may no longer use group other/);
  assert.equal(byClient.get("bob")?.reason, "policy_changed");
  assert.match(byClient.get("bob")?.detail ?? "", /matches no client/);
  assert.equal(await roundTrip(carol, "still"), "still");
  assert.equal(
    sample(balancer.metrics.render(), `mtlb_connections_closed_total{reason="policy_changed"}`),
    2,
  );
  await finish(balancer, carol);
});

Deno.test("Balancer closes a connection at [server] max_lifetime", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  const clock = new FakeClock();
  await using balancer = await startWith(
    await load(echoConfig(upstream.address, ["alice"], 'max_lifetime = "1h"\nidle_timeout = "2h"')),
    { clock },
  );
  const alice = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(alice, "hi"), "hi");
  clock.advance(59 * 60_000);
  assert.equal(await roundTrip(alice, "still"), "still");
  const ended = nextEvent<ConnectionRecord>(balancer, "end");
  clock.advance(2 * 60_000);
  const record = await ended;
  assert.equal(record.reason, "max_lifetime");
  assert.equal((await readAll(alice)).data.length, 0);
});

Deno.test("Balancer refuses every client of an issuer whose CRL has expired", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_ops_" });
  try {
    const crlPath = join(dir, "ca.crl");
    const nextUpdate = new Date(Date.now() + DAY);
    await Deno.writeTextFile(crlPath, await createCrl(pki.ca.authority, [], { nextUpdate }));
    let now = Date.now();
    await using balancer = await startWith(
      await load(echoConfig(upstream.address), `crl = "${crlPath}"`),
      { wallClock: () => now },
    );
    now = nextUpdate.getTime() + 1000;
    const alice = await connectClient(port(balancer), pki.alice);
    await assertDenied(alice, nextEvent(balancer, "deny"), "crl_expired");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Balancer refuses connections beyond [server] max_connections before their handshake", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(
    await load(echoConfig(upstream.address, ["alice"], "max_connections = 2")),
  );
  const open = [];
  for (let i = 0; i < 2; i++) {
    const socket = await connectClient(port(balancer), pki.alice);
    assert.equal(await roundTrip(socket, "x"), "x");
    open.push(socket);
  }
  const denied = nextEvent<DenyRecord>(balancer, "deny");
  await assert.rejects(connectClient(port(balancer), pki.alice));
  assert.equal((await denied).reason, "server_full");
  assert.equal(balancer.counters.handshakeErrors.size, 0, "not counted as a handshake failure");
  const metrics = balancer.metrics.render();
  assert.equal(sample(metrics, `mtlb_connections_denied_total{reason="server_full"}`), 1);
  assert.equal(sample(metrics, "mtlb_connections_max"), 2);

  await finish(balancer, open.pop()!);
  const again = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(again, "room again"), "room again");
  await finish(balancer, again);
  await finish(balancer, open.pop()!);
});

// ---------------------------------------------------------------------------------------
// main.ts as a subprocess

const ROOT = fileURLToPath(new URL("..", import.meta.url));

function mainConfig(
  pki: TestPki,
  listen: number,
  admin: number,
  upstream: string,
  clients: string[],
) {
  return `[server]
listen = "127.0.0.1:${listen}"
drain_timeout = "30s"
workers = 2

[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"

[admin]
listen = "127.0.0.1:${admin}"
allow_reload = true

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

${
    clients.map((name) => `[clients.${name}]\nmatch = { cn = "${name}" }\ngroups = ["echo"]\n`)
      .join("\n")
  }`;
}

Deno.test("main.ts reloads on SIGHUP and POST /reload, and drains on SIGTERM", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  const [listen, adminPort] = [await freePort(), await freePort()];
  const dir = await Deno.makeTempDir({ prefix: "mtlb_ops_cli_" });
  const path = join(dir, "lb.toml");
  await Deno.writeTextFile(path, mainConfig(pki, listen, adminPort, upstream.address, ["alice"]));
  // `lib`: with the default of one worker per CPU, Deno must read mtlb's modules.
  const read = [path, pki.ca.certPath, pki.server.certPath, pki.server.keyPath, "lib"].join(",");
  const net = [`127.0.0.1:${listen}`, `127.0.0.1:${adminPort}`, upstream.address].join(",");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--allow-net=${net}`,
      `--allow-read=${read}`,
      "main.ts",
      "--config",
      path,
      "--log-format",
      "json",
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = lines(child.stderr);
  const seen: string[] = [];
  const admin = (route: string, init?: RequestInit) =>
    fetch(`http://127.0.0.1:${adminPort}${route}`, init);
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    const live = await connectClient(listen, pki.alice);
    assert.equal(await roundTrip(live, "live "), "live ");

    // bob is unknown until a SIGHUP reload adds him.
    const bob = await connectClient(listen, pki.bob);
    bob.write("?");
    assert.equal((await readAll(bob)).data.length, 0);
    await Deno.writeTextFile(
      path,
      mainConfig(pki, listen, adminPort, upstream.address, ["alice", "bob"]),
    );
    child.kill("SIGHUP");
    await waitForRecord(reader, seen, (r) => /^Reloaded /.test(String(r.message)));
    const bob2 = await connectClient(listen, pki.bob);
    assert.equal(await roundTrip(bob2, "bob in"), "bob in");
    bob2.end();
    await readAll(bob2);

    // A broken file: SIGHUP logs the failure, POST /reload reports it, nothing changes.
    await Deno.writeTextFile(path, "[server\n");
    child.kill("SIGHUP");
    const failure = await waitForRecord(
      reader,
      seen,
      (r) => /^Reload of .* failed/.test(String(r.message)),
    );
    assert.equal(failure.level, "ERROR");
    const refused = await admin("/reload", { method: "POST" });
    assert.equal(refused.status, 500);
    assert.match((await refused.json()).error, /invalid TOML/);
    const metrics = await (await admin("/metrics")).text();
    assert.equal(sample(metrics, `mtlb_reloads_total{outcome="failure"}`), 2);
    assert.equal(sample(metrics, `mtlb_reloads_total{outcome="success"}`), 1);
    assert.equal(await roundTrip(live, "still "), "still ");

    // SIGTERM: stop accepting, /healthz 503, the live connection finishes, exit 0.
    child.kill("SIGTERM");
    // Logged once both workers closed their listeners.
    await waitForRecord(
      reader,
      seen,
      (r) => /^Draining: stopped accepting; 1 connection open in 2 workers/.test(String(r.message)),
    );
    const health = await admin("/healthz");
    assert.equal(health.status, 503);
    await health.body?.cancel();
    await assert.rejects(connectClient(listen, pki.alice), /ECONNREFUSED/);
    assert.equal(await roundTrip(live, "done"), "done");
    live.end();
    await readAll(live);
    const stopped = await waitForRecord(reader, seen, (r) => r.message === "Stopped");
    assert.equal((stopped.properties as { forced: number }).forced, 0);
    assert.equal((await child.status).code, 0);
    const audits = seen.filter((l) => l.includes('"logger":"mtlb.audit"')).map((l) =>
      JSON.parse(l)
    );
    const last = audits.find((a) => a.properties.bytesFromClient === "live still done".length);
    assert.ok(last, seen.join("\n"));
    assert.equal(last.properties.client, "alice");
    assert.equal(last.properties.reason, "client_closed");
    assert.equal(typeof last.properties.durationMs, "number");
    assert.equal(last.properties.identity.cn, "alice");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    for await (const _ of reader); // Drain stderr so its resource closes.
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts reloads by itself when the config file changes, with [server] watch = true", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  const [listen, adminPort] = [await freePort(), await freePort()];
  const dir = await Deno.makeTempDir({ prefix: "mtlb_ops_watch_" });
  const path = join(dir, "lb.toml");
  const config = (clients: string[]) =>
    mainConfig(pki, listen, adminPort, upstream.address, clients)
      .replace('drain_timeout = "30s"', 'drain_timeout = "30s"\nwatch = true');
  await Deno.writeTextFile(path, config(["alice"]));
  // `lib`: with the default of one worker per CPU, Deno must read mtlb's modules.
  const read = [path, pki.ca.certPath, pki.server.certPath, pki.server.keyPath, "lib"].join(",");
  const net = [`127.0.0.1:${listen}`, `127.0.0.1:${adminPort}`, upstream.address].join(",");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-net=${net}`, `--allow-read=${read}`, "main.ts", "--config", path],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const reader = lines(child.stderr);
  const seen: string[] = [];
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    await Deno.writeTextFile(path, config(["alice", "bob"]));
    await waitForRecord(reader, seen, (r) => /^Reloaded /.test(String(r.message)));
    const bob = await connectClient(listen, pki.bob);
    assert.equal(await roundTrip(bob, "watched"), "watched");
    bob.end();
    await readAll(bob);
    child.kill("SIGTERM");
    await waitForRecord(reader, seen, (r) => r.message === "Stopped");
    assert.equal((await child.status).code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    for await (const _ of reader);
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Balancer refuses a certificate outside its validity period by its own wall clock", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  let now = Date.now();
  await using balancer = await startWith(await load(echoConfig(upstream.address)), {
    wallClock: () => now,
  });
  const { notBefore, notAfter } = certificateValidity(pki.alice.der);
  for (const [at, reason] of [[notAfter + 1000, "expired"], [notBefore - 1000, "not_yet_valid"]]) {
    // The handshake passes (rustls uses the real clock); the balancer's check does not.
    now = at as number;
    const failed = nextEvent<HandshakeErrorRecord>(balancer, "handshake_error");
    const alice = await connectClient(port(balancer), pki.alice);
    alice.write("hello?");
    const [record, { data }] = await Promise.all([failed, readAll(alice)]);
    assert.equal(data.length, 0);
    assert.equal(record.reason, reason);
    assert.equal(record.identity?.cn, "alice");
    assert.equal(
      record.detail,
      `the client certificate is valid from ${new Date(notBefore).toISOString()} to ${
        new Date(notAfter).toISOString()
      }`,
    );
  }
  now = Date.now();
  const alice = await connectClient(port(balancer), pki.alice);
  assert.equal(await roundTrip(alice, "in time"), "in time");
  await finish(balancer, alice);
});

Deno.test("Balancer keeps dialling for a half-closed client, and gives up when it closes", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start(); // echoes, then ends on the client's FIN
  let dialed = Promise.withResolvers<AbortSignal>();
  let gate = Promise.withResolvers<void>();
  // Holds every dial until the gate opens, then dials for real; aborts still count.
  const dial = async (address: HostPort, signal: AbortSignal): Promise<Socket> => {
    dialed.resolve(signal);
    const aborted = new Promise<never>((_resolve, reject) =>
      signal.addEventListener("abort", () => reject(signal.reason), { once: true })
    );
    await Promise.race([gate.promise, aborted]);
    return await dialTcp(address, signal);
  };
  const balancer = await startWith(await load(echoConfig(upstream.address)), { dial });
  try {
    // A client that sends its request and half-closes before the upstream is connected
    // still gets its reply: a FIN is not a client gone (HAProxy without abortonclose).
    const alice = await connectClient(port(balancer), pki.alice);
    alice.write("sent before the upstream\n");
    alice.end();
    const first = await dialed.promise;
    const reply = readAll(alice);
    gate.resolve();
    assert.equal(text((await reply).data), "sent before the upstream\n");
    assert.equal(first.aborted, false);

    // The balancer closes while another dial is pending: it is aborted and refused.
    dialed = Promise.withResolvers<AbortSignal>();
    gate = Promise.withResolvers<void>();
    const closing = nextEvent<DenyRecord>(balancer, "deny");
    const again = await connectClient(port(balancer), pki.alice);
    again.on("error", () => {});
    const second = await dialed.promise;
    const closed = balancer.close();
    assert.equal((await closing).reason, "server_closing");
    assert.equal(second.aborted, true);
    await closed;
    assert.equal(balancer.counters.accepted, 1, "only the first connection was forwarded");
  } finally {
    await balancer.close();
  }
});

Deno.test("Balancer.close() during a drain ends the drain now and counts what it closed", async () => {
  const pki = await testPki();
  await using upstream = await TestUpstream.start();
  await using balancer = await startWith(await load(echoConfig(upstream.address)));
  const held: TLSSocket[] = [];
  for (let i = 0; i < 3; i++) {
    const socket = await connectClient(port(balancer), pki.alice);
    assert.equal(await roundTrip(socket, "x"), "x");
    held.push(socket);
  }
  const closed = held.map((socket) => readAll(socket));
  const drained = balancer.drain(60_000); // would wait a minute for these
  await balancer.close(); // a second SIGTERM
  const result = await drained;
  assert.equal(result.forced, 3);
  assert.ok(result.durationMs < 60_000);
  await Promise.all(closed);
});
