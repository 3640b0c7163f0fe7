/**
 * End-to-end tests of TLS to upstreams (`[groups.<name>.tls]`): a group reaches a
 * TLS upstream that requires a client certificate byte-exact; an upstream whose
 * certificate does not chain to the group's CA, lacks its name or expired is refused
 * before any client byte leaves, with a named reason, counted against the upstream;
 * health probes run over TLS; a reload swaps the CA. Real sockets on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo, Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { linkTcpReads } from "../lib/core/tls_reads.ts";
import { configureLogging } from "../lib/control/logging.ts";
import type { Dialer } from "../lib/upstream/dial.ts";
import type { DnsResolver } from "../lib/upstream/dns_resolver.ts";
import { tlsDialer, type TlsDialerOptions } from "../lib/upstream/tls_dial.ts";
import { join } from "node:path";
import { loadConfig, loadTlsMaterial } from "../lib/config/mod.ts";
import { Balancer } from "../lib/server/balancer.ts";
import { WorkerBalancer } from "../lib/workers/worker_balancer.ts";
import type { BalancerOptions } from "../lib/server/options.ts";
import type { ConnectionRecord, DenyRecord } from "../lib/server/records.ts";
import type { IssuedCertificate } from "../lib/pki/issue_certificate.ts";
import { connectClient, nextEvent, readAll, readBytes, text } from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { TlsUpstream, upstreamCertificates } from "./_upstream_tls_fixtures.ts";

/** A temporary folder with lb.toml and the upstream TLS files, removed by dispose. */
class Setup implements AsyncDisposable {
  readonly dir = Deno.makeTempDirSync({ prefix: "mtlb-upstream-tls-" });

  /** Writes `name` in the folder and returns its path. */
  write(name: string, text: string): string {
    const path = join(this.dir, name);
    Deno.writeTextFileSync(path, text, { mode: 0o600 });
    return path;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/**
 * Writes lb.toml: group "db" on the shared listener with `tls` (the test CA in
 * upstream-ca.crt unless `ca` says otherwise), client alice, one probe round.
 */
async function writeConfig(
  setup: Setup,
  upstreams: string[],
  options: { ca?: string; client?: IssuedCertificate; serverName?: string; extra?: string } = {},
): Promise<string> {
  const pki = await testPki();
  setup.write("upstream-ca.crt", options.ca ?? pki.ca.certPem);
  const lines = ['ca = "upstream-ca.crt"'];
  if (options.client !== undefined) {
    setup.write("mtlb-client.crt", options.client.chainPem);
    setup.write("mtlb-client.key", options.client.keyPem);
    lines.push('cert = "mtlb-client.crt"', 'key = "mtlb-client.key"');
  }
  if (options.serverName !== undefined) lines.push(`server_name = "${options.serverName}"`);
  return setup.write(
    "lb.toml",
    `[tls]
ca = ${JSON.stringify(pki.ca.certPath)}
cert = ${JSON.stringify(pki.server.certPath)}
key = ${JSON.stringify(pki.server.keyPath)}

[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.db]
upstreams = ${JSON.stringify(upstreams)}
${options.extra ?? ""}

[groups.db.tls]
${lines.join("\n")}

[clients.alice]
match = { cn = "alice" }
groups = ["db"]
`,
  );
}

async function start(
  path: string,
  options: Omit<BalancerOptions, "config" | "tls"> = {},
): Promise<Balancer> {
  const config = await loadConfig(path);
  const balancer = new Balancer({ config, tls: await loadTlsMaterial(config), ...options });
  await balancer.start();
  return balancer;
}

function port(balancer: Balancer): number {
  return balancer.listeners()[0]!.address.port;
}

/** Probes that always pass: the session's own dial meets the certificate first. */
const passing = { healthCheck: () => Promise.resolve() };

Deno.test("A group with tls reaches an upstream that requires a client certificate, byte-exact", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({
    certificate: certs.good,
    requireClientCert: true,
  });
  await using setup = new Setup();
  await using balancer = await start(
    await writeConfig(setup, [upstream.address], { client: certs.client }),
  );
  // The active probe ran over TLS, with the client certificate.
  assert.equal(balancer.probe("db")!.snapshot()[0]!.state, "healthy");
  const payload = new Uint8Array(256 * 1024).map((_, i) => (i * 7 + 3) & 0xff);
  const ended = nextEvent<ConnectionRecord>(balancer, "end");
  const socket = await connectClient(port(balancer), pki.alice);
  const all = readAll(socket);
  socket.end(payload);
  const { data } = await all;
  assert.deepEqual(data, payload);
  const record = await ended;
  assert.equal(record.bytesFromClient, payload.length);
  assert.equal(record.bytesFromUpstream, payload.length);
  assert.equal(upstream.received, payload.length);
  assert.ok(upstream.clients.includes("mtlb-client"));
  // Expiry of the group's CA and client certificate: in metrics and status.
  const caEnd = Date.parse(new X509Certificate(pki.ca.certPem).validTo);
  const metrics = balancer.metrics.render();
  const series = (which: string) =>
    Number(
      metrics.match(
        new RegExp(
          `mtlb_upstream_certificate_expiry_timestamp_seconds\\{group="db",which="${which}"\\} (\\S+)`,
        ),
      )?.[1],
    );
  const dates = balancer.status().certificates.upstreams?.db;
  assert.equal(series("cert") * 1000, Date.parse(dates?.cert ?? ""));
  assert.equal(series("ca") * 1000, Date.parse(dates?.ca ?? ""));
  assert.equal(series("ca") * 1000, caEnd);
  assert.equal(
    series("cert") * 1000,
    Date.parse(new X509Certificate(certs.client.certPem).validTo),
  );
});

for (
  const [name, certificate, serverName, reason, detail] of [
    ["does not chain to ca", "foreign", undefined, "upstream_tls_untrusted", /does not chain/],
    ["is not for server_name", "good", "db.internal", "upstream_tls_name", /"db\.internal"/],
    ["expired", "expired", undefined, "upstream_tls_expired", /expired on/],
  ] as const
) {
  Deno.test(`An upstream whose certificate ${name} is refused before any client byte, with ${reason}`, async () => {
    const pki = await testPki();
    const certs = await upstreamCertificates();
    await using upstream = await TlsUpstream.start({ certificate: certs[certificate] });
    await using setup = new Setup();
    const logged: string[] = [];
    await using _logging = await configureLogging({ format: "json", write: (l) => logged.push(l) });
    await using balancer = await start(
      await writeConfig(setup, [upstream.address], serverName === undefined ? {} : { serverName }),
      passing,
    );
    const denied = nextEvent<DenyRecord>(balancer, "deny");
    const socket = await connectClient(port(balancer), pki.alice);
    const all = readAll(socket);
    socket.write("secret client bytes");
    const { data } = await all;
    assert.equal(data.length, 0);
    const record = await denied;
    assert.equal(record.reason, reason);
    assert.match(record.detail ?? "", detail);
    assert.match(record.detail ?? "", new RegExp(upstream.address.replaceAll(".", "\\.")));
    // The handshake was made (the upstream was reached over TCP), and nothing after it.
    assert.ok(upstream.tcpAccepted >= 1);
    assert.equal(upstream.received, 0);
    assert.equal(balancer.counters.denied.get(reason), 1);
    const line = logged.map((l) => JSON.parse(l)).find((r) => r.message.startsWith("Denied"));
    assert.equal(line?.properties.reason, reason);
    assert.match(line?.properties.detail, detail);
    assert.match(
      balancer.metrics.render(),
      new RegExp(`mtlb_connections_denied_total\\{reason="${reason}"\\} 1`),
    );
    // A certificate refused is not retried on the same upstream (connect_retries = 2):
    // one dial, counted once by passive health. The chain of an untrusted or expired
    // upstream is read again by a second handshake, without a client certificate.
    assert.equal(balancer.outlier("db")!.snapshot()[0]!.dialFailures, 1);
    assert.equal(upstream.tcpAccepted, reason === "upstream_tls_name" ? 1 : 2);
  });
}

Deno.test("A health probe over TLS marks an upstream with a bad certificate down, with probe_tls", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using good = await TlsUpstream.start({ certificate: certs.good });
  await using foreign = await TlsUpstream.start({ certificate: certs.foreign });
  await using setup = new Setup();
  const logged: string[] = [];
  await using _logging = await configureLogging({ format: "json", write: (l) => logged.push(l) });
  await using balancer = await start(await writeConfig(setup, [good.address, foreign.address]));
  // The log says which check failed.
  const down = logged.map((l) => JSON.parse(l)).find((r) =>
    r.message.includes("is unhealthy") && r.properties.address === foreign.address
  );
  assert.equal(down?.properties.reason, "probe_tls");
  assert.match(
    down?.properties.detail,
    /upstream_tls_untrusted: .*does not chain to the group's ca/,
  );
  const states = new Map(balancer.probe("db")!.snapshot().map((h) => [h.address, h]));
  assert.equal(states.get(good.address)!.state, "healthy");
  assert.equal(states.get(foreign.address)!.state, "unhealthy");
  assert.equal(states.get(foreign.address)!.reason, "probe_tls");
  // The one healthy upstream serves.
  const socket = await connectClient(port(balancer), pki.alice);
  socket.write("ping");
  assert.equal(text(await readBytes(socket, 4)), "ping");
  socket.destroy();
  assert.equal(foreign.received, 0);
});

Deno.test("A reload swaps the CA a group verifies its upstreams with", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.foreign });
  await using setup = new Setup();
  await using balancer = await start(await writeConfig(setup, [upstream.address]), passing);
  const tryOnce = async () => {
    const outcome = Promise.race([
      nextEvent<DenyRecord>(balancer, "deny").then((r) => r.reason),
      nextEvent<ConnectionRecord>(balancer, "end").then(() => "forwarded"),
    ]);
    const socket = await connectClient(port(balancer), pki.alice);
    const all = readAll(socket);
    socket.end("hi");
    const { data } = await all;
    return { outcome: await outcome, reply: text(data) };
  };
  assert.deepEqual(await tryOnce(), { outcome: "upstream_tls_untrusted", reply: "" });
  // The file changes, the config does not: a reload reads it again.
  setup.write("upstream-ca.crt", pki.foreignCa.certPem);
  await balancer.reload();
  assert.deepEqual(await tryOnce(), { outcome: "forwarded", reply: "hi" });
  setup.write("upstream-ca.crt", pki.ca.certPem);
  await balancer.reload();
  assert.deepEqual(await tryOnce(), { outcome: "upstream_tls_untrusted", reply: "" });
});

Deno.test("The PROXY v2 header goes inside the TLS session", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.good });
  await using setup = new Setup();
  await using balancer = await start(
    await writeConfig(setup, [upstream.address], { extra: 'proxy_protocol = "v2"' }),
    passing,
  );
  const socket = await connectClient(port(balancer), pki.alice);
  socket.write("after-header");
  // The upstream echoes what it decrypted: the v2 signature, then the client's bytes.
  const signature = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  const head = await readBytes(socket, 12);
  assert.deepEqual([...head.subarray(0, 12)], signature);
  socket.destroy();
});

Deno.test("A TLS upstream faster than its client is paused, not cut at max_buffer: 32 MiB arrive whole", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  const TOTAL = 32 * 1024 * 1024;
  const CHUNK = 64 * 1024;
  const sent = Promise.withResolvers<string>();
  const server = createTlsServer({ cert: certs.good.chainPem, key: certs.good.keyPem });
  server.on("secureConnection", async (socket: TLSSocket) => {
    socket.on("error", () => {});
    const hash = createHash("sha256");
    try {
      for (let n = 0; n < TOTAL; n += CHUNK) {
        const chunk = crypto.getRandomValues(new Uint8Array(CHUNK));
        hash.update(chunk);
        if (!socket.write(chunk)) await once(socket, "drain");
      }
      socket.end();
      sent.resolve(hash.digest("hex"));
    } catch (error) {
      sent.resolve(`the upstream could not send: ${error}`);
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  // The injected connector: tlsDialer, watched for forward() pausing its socket.
  const paused = Promise.withResolvers<void>();
  const connectTls = (options: TlsDialerOptions): Dialer<Socket> => {
    const dial = tlsDialer(options);
    return async (target, signal) => {
      const socket = await dial(target, signal);
      const pause = socket.pause;
      socket.pause = function (this: TLSSocket) {
        paused.resolve();
        return pause.call(this);
      };
      return socket;
    };
  };
  try {
    await using setup = new Setup();
    await using balancer = await start(await writeConfig(setup, [address]), {
      ...passing,
      connectTls,
    });
    const ended = nextEvent<ConnectionRecord>(balancer, "end");
    const client = await connectClient(port(balancer), pki.alice);
    // The client reads nothing until mtlb has paused the upstream: backpressure reached it.
    assert.ok(linkTcpReads(client), "the runtime links the client's reads");
    client.pause();
    await Promise.race([
      paused.promise,
      ended.then((r) => assert.fail(`the connection ended first: ${r.reason}`)),
    ]);
    const hash = createHash("sha256");
    let length = 0;
    client.on("data", (chunk: Uint8Array) => {
      hash.update(chunk);
      length += chunk.length;
    });
    client.resume();
    await once(client, "end");
    client.destroy();
    assert.equal(length, TOTAL);
    assert.equal(hash.digest("hex"), await sent.promise);
    assert.equal((await ended).reason, "upstream_closed");
  } finally {
    server.close();
  }
});

Deno.test("With workers, the primary probes over TLS and the workers forward over TLS", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using good = await TlsUpstream.start({ certificate: certs.good, requireClientCert: true });
  await using foreign = await TlsUpstream.start({ certificate: certs.foreign });
  await using setup = new Setup();
  const config = await loadConfig(
    await writeConfig(setup, [good.address, foreign.address], { client: certs.client }),
  );
  await using balancer = new WorkerBalancer({
    config,
    tls: await loadTlsMaterial(config),
    workers: 2,
  });
  await balancer.start();
  const states = new Map(balancer.probe("db")!.snapshot().map((h) => [h.address, h]));
  assert.equal(states.get(good.address)!.state, "healthy");
  assert.equal(states.get(foreign.address)!.reason, "probe_tls");
  for (let i = 0; i < 4; i++) {
    const socket = await connectClient(balancer.listeners()[0]!.address.port, pki.alice);
    socket.write(`ping ${i}`);
    assert.equal(text(await readBytes(socket, 6)), `ping ${i}`);
    socket.destroy();
  }
  assert.equal(foreign.received, 0);
  assert.ok(good.clients.filter((cn) => cn === "mtlb-client").length >= 4);
  assert.ok(balancer.status().certificates.upstreams?.db?.cert !== undefined);
  assert.match(
    balancer.metrics.render(),
    /mtlb_upstream_certificate_expiry_timestamp_seconds\{group="db",which="cert"\} \d+/,
  );
});

Deno.test("An upstream from { dns = NAME:PORT } is verified against NAME, sent as SNI", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  // A certificate for db.internal only: its address (127.0.0.1) is not in it.
  await using upstream = await TlsUpstream.start({ certificate: certs.dbInternal });
  const resolver: DnsResolver = {
    addresses: (name, type) =>
      Promise.resolve(name === "db.internal" && type === "A" ? ["127.0.0.1"] : []),
    srv: () => Promise.resolve([]),
  };
  await using setup = new Setup();
  const path = await writeConfig(setup, [upstream.address]);
  // The same upstream as a DNS entry instead of an address.
  const toml = (await Deno.readTextFile(path)).replace(
    `upstreams = ["${upstream.address}"]`,
    `upstreams = [{ dns = "db.internal:${upstream.port}" }]`,
  );
  await Deno.writeTextFile(path, toml);
  await using balancer = await start(path, { resolver });
  assert.equal(balancer.probe("db")!.snapshot()[0]!.state, "healthy");
  const socket = await connectClient(port(balancer), pki.alice);
  socket.write("dns");
  assert.equal(text(await readBytes(socket, 3)), "dns");
  socket.destroy();
  assert.ok(upstream.servernames.length >= 2);
  assert.ok(
    upstream.servernames.every((name) => name === "db.internal"),
    `${upstream.servernames}`,
  );
});

Deno.test("An upstream that refuses mtlb without a client certificate ends the connection as upstream_reset", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({
    certificate: certs.good,
    requireClientCert: true,
  });
  await using setup = new Setup();
  // No cert/key in the group's tls; probes pass (connect-only cannot see the refusal).
  await using balancer = await start(await writeConfig(setup, [upstream.address]), passing);
  const ended = nextEvent<ConnectionRecord>(balancer, "end");
  const socket = await connectClient(port(balancer), pki.alice);
  const all = readAll(socket);
  socket.write("hello");
  const { data } = await all;
  assert.equal(data.length, 0);
  const record = await ended;
  assert.equal(record.reason, "upstream_reset");
  assert.equal(record.bytesFromUpstream, 0);
  assert.equal(upstream.received, 0);
  assert.equal(balancer.outlier("db")!.snapshot()[0]!.resetFailures, 1);
});
