import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { dialCheck, type HealthCheckError } from "../../lib/upstream/health_check.ts";
import { tlsDialer, UpstreamTlsError } from "../../lib/upstream/tls_dial.ts";
import { testPki } from "../_pki_fixtures.ts";
import { TlsUpstream, upstreamCertificates } from "../_upstream_tls_fixtures.ts";

const signal = () => AbortSignal.timeout(5000);

function refusedWith(reason: string, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof UpstreamTlsError, String(error));
    assert.equal(error.reason, reason, error.message);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("tlsDialer() presents its client certificate to an upstream that requires one", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({
    certificate: certs.good,
    requireClientCert: true,
  });
  const dial = tlsDialer({
    ca: pki.ca.certPem,
    cert: certs.client.chainPem,
    key: certs.client.keyPem,
  });
  const socket = await dial({ hostname: "127.0.0.1", port: upstream.port }, signal());
  try {
    assert.equal(socket.getProtocol(), "TLSv1.3");
    socket.on("error", () => {});
    socket.write("ping");
    const [reply] = await once(socket, "data");
    assert.equal(new TextDecoder().decode(reply), "ping");
    assert.deepEqual(upstream.clients, ["mtlb-client"]);
    // An IP address is verified against the certificate's IP addresses, with no SNI.
    assert.deepEqual(upstream.servernames, [""]);
  } finally {
    socket.destroy();
  }
});

Deno.test("tlsDialer() sends server_name as SNI and verifies it instead of the host", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.dbInternal });
  const address = { hostname: "127.0.0.1", port: upstream.port };
  const secured = once(upstream.server, "secureConnection");
  const socket = await tlsDialer({ ca: pki.ca.certPem, serverName: "db.internal" })(
    address,
    signal(),
  );
  await secured;
  socket.destroy();
  assert.deepEqual(upstream.servernames, ["db.internal"]);
  // Without it, the host dialled is verified, and 127.0.0.1 is not in that certificate.
  await assert.rejects(
    tlsDialer({ ca: pki.ca.certPem })(address, signal()),
    refusedWith("upstream_tls_name", /not valid for "127\.0\.0\.1".*DNS:db\.internal/),
  );
});

Deno.test("tlsDialer() refuses an upstream whose certificate does not chain to ca", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.foreign });
  await assert.rejects(
    tlsDialer({ ca: pki.ca.certPem })({ hostname: "127.0.0.1", port: upstream.port }, signal()),
    refusedWith("upstream_tls_untrusted", /issuer CN=mtlb foreign test CA.*does not chain/),
  );
  assert.equal(upstream.received, 0);
});

Deno.test("tlsDialer() refuses an upstream whose certificate is not valid for server_name", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.good });
  await assert.rejects(
    tlsDialer({ ca: pki.ca.certPem, serverName: "db.internal" })(
      { hostname: "127.0.0.1", port: upstream.port },
      signal(),
    ),
    refusedWith("upstream_tls_name", /not valid for "db\.internal" \(DNS:localhost/),
  );
  assert.equal(upstream.received, 0);
});

Deno.test("tlsDialer() refuses an upstream whose certificate expired", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.expired });
  await assert.rejects(
    tlsDialer({ ca: pki.ca.certPem })({ hostname: "127.0.0.1", port: upstream.port }, signal()),
    refusedWith("upstream_tls_expired", /its certificate expired on \d{4}-/),
  );
  // A certificate both expired and from another CA is untrusted, whatever its dates.
  const foreignCa = (await testPki()).foreignCa.certPem;
  await assert.rejects(
    tlsDialer({ ca: foreignCa })({ hostname: "127.0.0.1", port: upstream.port }, signal()),
    refusedWith("upstream_tls_untrusted"),
  );
});

for (
  const [name, certificate, reason] of [
    ["does not chain to ca", "foreign", "upstream_tls_untrusted"],
    ["expired", "expired", "upstream_tls_expired"],
  ] as const
) {
  Deno.test(`tlsDialer() aborts the handshake with an upstream whose certificate ${name}, before its client certificate is sent`, async () => {
    const pki = await testPki();
    const certs = await upstreamCertificates();
    await using upstream = await TlsUpstream.start({
      certificate: certs[certificate],
      requestClientCert: true,
    });
    await assert.rejects(
      tlsDialer({ ca: pki.ca.certPem, cert: certs.client.chainPem, key: certs.client.keyPem })(
        { hostname: "127.0.0.1", port: upstream.port },
        signal(),
      ),
      refusedWith(reason),
    );
    // The chain is read again, to name the refusal, by a handshake with no client
    // certificate; neither sent mtlb's.
    assert.ok(upstream.tcpAccepted >= 1);
    assert.ok(!upstream.clients.includes("mtlb-client"), String(upstream.clients));
    assert.equal(upstream.received, 0);
  });
}

Deno.test("tlsDialer() verifies the name only once the handshake is done (the runtime's order)", async () => {
  // Deno 2.9.6's node:tls leaves the name to checkServerIdentity, after the handshake
  // (ext/node/ops/tls_wrap.rs, NodeServerCertVerifier): an upstream with a certificate
  // of the group's CA for another name sees mtlb's client certificate, then nothing.
  // When this fails, the runtime checks the name in the handshake: update OPERATIONS.md.
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({
    certificate: certs.good,
    requestClientCert: true,
  });
  const secured = once(upstream.server, "secureConnection");
  await assert.rejects(
    tlsDialer({
      ca: pki.ca.certPem,
      cert: certs.client.chainPem,
      key: certs.client.keyPem,
      serverName: "db.internal",
    })({ hostname: "127.0.0.1", port: upstream.port }, signal()),
    refusedWith("upstream_tls_name", /not valid for "db\.internal" \(DNS:localhost/),
  );
  await secured;
  assert.deepEqual(upstream.clients, ["mtlb-client"]);
  assert.equal(upstream.received, 0);
});

Deno.test("tlsDialer() names a failed handshake, and rethrows a refused connection as it is", async () => {
  const pki = await testPki();
  // A plain TCP server that answers garbage: the TCP connection is made, TLS is not.
  const sockets = new Set<Socket>();
  const plain = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.end("+OK not TLS\r\n");
  });
  plain.listen(0, "127.0.0.1");
  await once(plain, "listening");
  const { port } = plain.address() as AddressInfo;
  try {
    await assert.rejects(
      tlsDialer({ ca: pki.ca.certPem })({ hostname: "127.0.0.1", port }, signal()),
      refusedWith("upstream_tls_handshake", /TLS handshake failed/),
    );
  } finally {
    // The runtime may not notice the client's close of a half-closed socket.
    for (const socket of sockets) socket.destroy();
    plain.close();
    await once(plain, "close");
  }
  await assert.rejects(
    tlsDialer({ ca: pki.ca.certPem })({ hostname: "127.0.0.1", port }, signal()),
    (e: NodeJS.ErrnoException) => !(e instanceof UpstreamTlsError) && e.code === "ECONNREFUSED",
  );
});

Deno.test("tlsDialer() rejects with the signal's reason when aborted", async () => {
  const pki = await testPki();
  const reason = new Error("gave up");
  const dial = tlsDialer({ ca: pki.ca.certPem });
  await assert.rejects(
    dial({ hostname: "127.0.0.1", port: 9 }, AbortSignal.abort(reason)),
    (e) => e === reason,
  );
  // A server that accepts and never answers the ClientHello: aborted mid-handshake.
  const silent = createServer((socket) => socket.on("error", () => {}));
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  const { port } = silent.address() as AddressInfo;
  const controller = new AbortController();
  const accepted = once(silent, "connection");
  const pending = dial({ hostname: "127.0.0.1", port }, controller.signal);
  const [server] = await accepted;
  controller.abort(reason);
  await assert.rejects(pending, (e) => e === reason);
  server.destroy();
  silent.close();
  await once(silent, "close");
});

Deno.test("tlsDialer() checks its options", async () => {
  const pki = await testPki();
  assert.throws(() => tlsDialer({ ca: "" }), TypeError);
  assert.throws(() => tlsDialer({ ca: pki.ca.certPem, cert: pki.alice.certPem }), TypeError);
});

Deno.test("tlsDialer() trusts ca alone, not the runtime's root store", async () => {
  // Deno.connectTls would accept this upstream: its caCerts add to the roots that
  // DENO_CERT (and the Mozilla store) hold. tlsDialer's ca replaces them.
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({ certificate: certs.foreign });
  const script = join(pki.dir, "dial_foreign.ts");
  await Deno.writeTextFile(
    script,
    `import { tlsDialer } from ${
      JSON.stringify(new URL("../../lib/upstream/tls_dial.ts", import.meta.url).href)
    };
const ca = ${JSON.stringify(pki.ca.certPem)};
const address = { hostname: "127.0.0.1", port: ${upstream.port} };
let denoConnectTls = "refused";
try { (await Deno.connectTls({ ...address, caCerts: [ca] })).close(); denoConnectTls = "accepted"; } catch { /* refused */ }
let dialer = "refused";
try { (await tlsDialer({ ca })(address, AbortSignal.timeout(5000))).destroy(); dialer = "accepted"; } catch (e) { dialer = e.reason; }
console.log(JSON.stringify({ denoConnectTls, dialer }));
`,
  );
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-net=127.0.0.1", "--allow-read", "--allow-env", script],
    env: { DENO_CERT: pki.foreignCa.certPath },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(output.stdout)), {
    denoConnectTls: "accepted",
    dialer: "upstream_tls_untrusted",
  });
});

Deno.test("dialCheck() over tlsDialer: an upstream refusing the client certificate fails a send/expect probe with probe_tls", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  await using upstream = await TlsUpstream.start({
    certificate: certs.good,
    requireClientCert: true,
  });
  const bytes = (text: string) => new TextEncoder().encode(text);
  const address = { hostname: "127.0.0.1", port: upstream.port };
  const settings = {
    send: bytes("ping"),
    expect: bytes("ping"),
    interval: 1000,
    timeout: 1000,
    rise: 1,
    fall: 1,
    jitter: 0,
  };
  // Without a client certificate: TLS 1.3 lets the upstream refuse it after mtlb's side
  // of the handshake, so only an exchange sees it.
  await assert.rejects(
    dialCheck(tlsDialer({ ca: pki.ca.certPem }))(address, settings, signal()),
    (error: HealthCheckError) =>
      error.reason === "probe_tls" &&
      /CertificateRequired|certificate required/i.test(error.message),
  );
  // With it, the exchange passes.
  await dialCheck(
    tlsDialer({ ca: pki.ca.certPem, cert: certs.client.chainPem, key: certs.client.keyPem }),
  )(
    address,
    settings,
    signal(),
  );
  assert.equal(upstream.received, 4);
});
