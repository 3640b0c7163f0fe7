/**
 * End-to-end tests of TLS to upstreams (`[groups.<name>.tls]`): a group reaches a
 * TLS upstream that requires a client certificate byte-exact; an upstream whose
 * certificate does not chain to the group's CA, lacks its name or expired is refused
 * before any client byte leaves, with a named reason, counted against the upstream;
 * health probes run over TLS; a reload swaps the CA. Real sockets on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTlsMaterial, parseConfig, type UpstreamTlsMaterial } from "../lib/config/mod.ts";
import { Balancer } from "../lib/server/balancer.ts";
import type { BalancerOptions } from "../lib/server/options.ts";
import type { ConnectionRecord, DenyRecord } from "../lib/server/records.ts";
import type { IssuedCertificate } from "../lib/pki/issue_certificate.ts";
import { connectClient, nextEvent, readAll, readBytes, text } from "./_harness.ts";
import { type TestPki, testPki } from "./_pki_fixtures.ts";
import { TlsUpstream, upstreamCertificates } from "./_upstream_tls_fixtures.ts";

/** A config with group "db" on the shared listener and client alice. */
function body(upstreams: string[], extra = ""): string {
  return `[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.db]
upstreams = ${JSON.stringify(upstreams)}
${extra}

[clients.alice]
match = { cn = "alice" }
groups = ["db"]
`;
}

/** The material of `[groups.db.tls]`: the test CA, and optionally a client certificate. */
function material(
  ca: string,
  options: { client?: IssuedCertificate; serverName?: string } = {},
): UpstreamTlsMaterial {
  return {
    ca,
    ...(options.client === undefined
      ? {}
      : { cert: options.client.chainPem, key: options.client.keyPem }),
    ...(options.serverName === undefined ? {} : { serverName: options.serverName }),
    certificates: [],
  };
}

async function loaded(pki: TestPki, text: string, upstream: UpstreamTlsMaterial | undefined) {
  const config = parseConfig(
    `[tls]\nca = "ca.crt"\ncert = "server.crt"\nkey = "server.key"\n${text}`,
    { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
  );
  const tls = await loadTlsMaterial(config);
  if (upstream !== undefined) tls.upstreams = new Map([["db", upstream]]);
  return { config, tls };
}

async function start(
  upstreams: string[],
  upstream: UpstreamTlsMaterial | undefined,
  options: Omit<BalancerOptions, "config" | "tls"> = {},
): Promise<Balancer & AsyncDisposable> {
  const pki = await testPki();
  const balancer = new Balancer({ ...await loaded(pki, body(upstreams), upstream), ...options });
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
  await using balancer = await start(
    [upstream.address],
    material(pki.ca.certPem, { client: certs.client }),
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
    await using balancer = await start(
      [upstream.address],
      material(pki.ca.certPem, serverName === undefined ? {} : { serverName }),
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
    assert.match(
      balancer.metrics.render(),
      new RegExp(`mtlb_connections_denied_total\\{reason="${reason}"\\} 1`),
    );
    // Passive health counted each attempt (connect_retries) as the upstream's failure.
    assert.equal(balancer.outlier("db")!.snapshot()[0]!.dialFailures, upstream.tcpAccepted);
  });
}

Deno.test("A health probe over TLS marks an upstream with a bad certificate down, with probe_tls", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using good = await TlsUpstream.start({ certificate: certs.good });
  await using foreign = await TlsUpstream.start({ certificate: certs.foreign });
  await using balancer = await start([good.address, foreign.address], material(pki.ca.certPem));
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
  await using balancer = await start([upstream.address], material(pki.ca.certPem), passing);
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
  await balancer.reload(
    await loaded(pki, body([upstream.address]), material(pki.foreignCa.certPem)),
  );
  assert.deepEqual(await tryOnce(), { outcome: "forwarded", reply: "hi" });
  await balancer.reload(await loaded(pki, body([upstream.address]), material(pki.ca.certPem)));
  assert.deepEqual(await tryOnce(), { outcome: "upstream_tls_untrusted", reply: "" });
});

Deno.test("The PROXY v2 header goes inside the TLS session", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.good });
  await using balancer = new Balancer({
    ...await loaded(
      pki,
      body([upstream.address], 'proxy_protocol = "v2"'),
      material(pki.ca.certPem),
    ),
    ...passing,
  });
  await balancer.start();
  const socket = await connectClient(port(balancer), pki.alice);
  socket.write("after-header");
  // The upstream echoes what it decrypted: the v2 signature, then the client's bytes.
  const signature = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  const head = await readBytes(socket, 12);
  assert.deepEqual([...head.subarray(0, 12)], signature);
  socket.destroy();
});
