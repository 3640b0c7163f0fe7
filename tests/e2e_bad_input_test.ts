/**
 * Bad input: what a hostile or broken client can send instead of a proper mTLS
 * handshake. Each is refused with nothing reaching an upstream, and leaves nothing
 * behind: no open connection, limiter slot or pool count, and the balancer still
 * serves a good client right after. Cases driven by `openssl s_client` are skipped,
 * with a message, when openssl is not installed.
 */
import assert from "node:assert/strict";
import { connect as netConnect, createServer, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { join } from "node:path";
import { FakeClock } from "../lib/core/clock.ts";
import { createCa, createIntermediateCa } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import type { CertificateAuthority } from "../lib/pki/certificate_authority.ts";
import type { IssuedCertificate } from "../lib/pki/issue_certificate.ts";
import type { ConnectionRecord, DenyRecord, HandshakeErrorRecord } from "../lib/server/records.ts";
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
import { testPki } from "./_pki_fixtures.ts";
import { clientArgs, HAVE_OPENSSL, OPENSSL_HELP, sClient } from "./_openssl.ts";
import { guard } from "../testing/guard.ts";

/** The handshake timeout of these tests' balancers. */
const HANDSHAKE_TIMEOUT_MS = 500;

const HAVE_EARLY_DATA = OPENSSL_HELP?.includes("-early_data") ?? false;
if (!HAVE_OPENSSL) console.warn("Skipping openssl cases of e2e_bad_input_test.ts: no openssl");
else if (!HAVE_EARLY_DATA) console.warn("Skipping the 0-RTT case: openssl lacks -early_data");

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A balancer with group "echo" on the shared listener and client alice. */
async function balancer(
  upstream: TestUpstream,
  options: { clients?: string; handshakeTimeout?: string } = {},
): Promise<TestBalancer> {
  return await startBalancer(`[server]
listen = "127.0.0.1:0"
handshake_timeout = "${options.handshakeTimeout ?? `${HANDSHAKE_TIMEOUT_MS}ms`}"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream.address}"]

${
    options.clients ?? `[clients.alice]
match = { cn = "alice" }
groups = ["echo"]`
  }
`);
}

/**
 * Asserts the aftermath of a refused input: nothing of it reached the upstream, a
 * good client is still served, and no connection, slot or count is left.
 */
async function assertStillServes(
  lb: TestBalancer,
  upstream: TestUpstream,
  before: { received: number; accepted: number },
): Promise<void> {
  assert.equal(upstream.received, before.received, "nothing reached the upstream");
  assert.equal(upstream.accepted, before.accepted, "no upstream connection was opened");
  const client = await connectClient(lb.port(), lb.pki.alice);
  client.write("still serving");
  assert.equal(text(await guard(readBytes(client, 13), "echo")), "still serving");
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  client.end();
  client.resume();
  await guard(ended, "end of the good client");
  assert.equal(lb.balancer.counters.active, 0, "counters.active");
  assert.deepEqual([...lb.balancer.limiter.snapshot()], [], "limiter slots");
  assert.equal(lb.balancer.pool("echo")!.active(upstream.address), 0, "pool.active");
}

function snapshot(upstream: TestUpstream): { received: number; accepted: number } {
  return { received: upstream.received, accepted: upstream.accepted };
}

/** Opens a plain TCP connection to the balancer. */
async function rawConnect(port: number): Promise<Socket> {
  const socket = netConnect({ host: "127.0.0.1", port });
  socket.on("error", () => {});
  await new Promise((resolve) => socket.once("connect", resolve));
  return socket;
}

let clientHello: Promise<Uint8Array> | undefined;

/**
 * A real TLS 1.3 ClientHello record, with alice's certificate configured, captured
 * by pointing a TLS client at a plain TCP server.
 */
function capturedClientHello(): Promise<Uint8Array> {
  clientHello ??= (async () => {
    const pki = await testPki();
    const { promise, resolve } = Promise.withResolvers<Uint8Array>();
    const server = createServer((socket) => {
      const chunks: Uint8Array[] = [];
      socket.on("data", (chunk: Uint8Array) => {
        chunks.push(chunk);
        const bytes = new Uint8Array(chunks.flatMap((c) => [...c]));
        if (bytes.length >= 5 && bytes.length >= 5 + ((bytes[3]! << 8) | bytes[4]!)) {
          resolve(bytes.subarray(0, 5 + ((bytes[3]! << 8) | bytes[4]!)));
          socket.destroy();
        }
      });
    });
    await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
    const client = tlsConnect({
      host: "127.0.0.1",
      port: (server.address() as { port: number }).port,
      ca: pki.ca.certPem,
      cert: pki.alice.certPem,
      key: pki.alice.keyPem,
      servername: "localhost",
    });
    client.on("error", () => {});
    const hello = await guard(promise, "ClientHello");
    await new Promise((closed) =>
      client.destroyed ? closed(undefined) : client.once("close", closed)
    );
    await new Promise((closed) => server.close(closed));
    assert.equal(hello[0], 0x16, "a handshake record");
    assert.equal(hello[5], 0x01, "a ClientHello");
    return hello;
  })();
  return clientHello;
}

Deno.test("Balancer refuses bytes that are not a TLS ClientHello", async (t) => {
  await using upstream = await TestUpstream.start();
  await using lb = await balancer(upstream);
  const hello = await capturedClientHello();
  const garbage = new Uint8Array(4096);
  crypto.getRandomValues(garbage);
  garbage[0] = 0x47; // not 0x16: no chance of a well-formed record by accident
  // A handshake record announcing a 16 MiB ClientHello (the length field's maximum).
  const huge = new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]);
  // An SSL 2.0-style ClientHello, as very old clients and scanners send.
  const sslv2 = new Uint8Array([
    0x80,
    0x2e,
    0x01,
    0x00,
    0x02,
    0x00,
    0x15,
    0x00,
    0x00,
    0x00,
    0x10,
    0x07,
    0x00,
    0xc0,
    0x05,
    0x00,
    0x80,
    0x03,
    0x00,
    0x80,
    0x01,
    0x00,
    0x80,
    0x06,
    0x00,
    0x40,
    0x04,
    0x00,
    0x80,
    0x02,
    0x00,
    0x80,
    ...crypto.getRandomValues(new Uint8Array(16)),
  ]);
  // A well-formed record of application data before any handshake.
  const appData = new Uint8Array([0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]);
  // The real ClientHello with its handshake type changed to ServerHello.
  const serverHello = hello.slice();
  serverHello[5] = 0x02;
  const cases: [string, Uint8Array][] = [
    ["4 KiB of random bytes", garbage],
    ["an HTTP request", new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")],
    ["a record announcing a 16 MiB ClientHello", huge],
    ["an SSL 2.0 ClientHello", sslv2],
    ["application data before the handshake", appData],
    ["a ServerHello from the client", serverHello],
  ];
  for (const [name, bytes] of cases) {
    await t.step(name, async () => {
      const before = snapshot(upstream);
      const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
      const socket = await rawConnect(lb.port());
      const closed = readAll(socket);
      socket.write(bytes); // and keep the connection open: the balancer must decide
      const record = await guard(failed, "handshake error");
      assert.ok(record.reason.length > 0);
      const { data } = await guard(closed, "close of the connection");
      assert.ok(data.length <= 7, `at most a TLS alert came back, received ${data.length} bytes`);
      await assertStillServes(lb, upstream, before);
    });
  }
});

Deno.test("Balancer closes truncated ClientHellos at handshake_timeout", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await balancer(upstream);
  const hello = await capturedClientHello();
  const before = snapshot(upstream);
  const errors: HandshakeErrorRecord[] = [];
  lb.balancer.addEventListener("handshake_error", (e) => errors.push((e as CustomEvent).detail));
  // Every interesting cut: inside the record header, right after it, inside the
  // handshake header, and one byte short. All at once, then silence.
  const cuts = [1, 4, 5, 8, 9, 64, hello.length >> 1, hello.length - 1];
  const started = performance.now();
  const results = await guard(
    Promise.all(cuts.map(async (cut) => {
      const socket = await rawConnect(lb.port());
      const closed = readAll(socket);
      socket.write(hello.subarray(0, cut));
      const { data } = await closed;
      return { data, afterMs: performance.now() - started };
    })),
    "close of every truncated handshake",
  );
  for (const { data, afterMs } of results) {
    assert.equal(data.length, 0, "the server has nothing to answer to half a ClientHello");
    assert.ok(afterMs >= HANDSHAKE_TIMEOUT_MS - 50, `closed after ${afterMs} ms`);
  }
  const timeouts = errors.filter((e) => e.reason === "handshake_timeout");
  assert.equal(timeouts.length, cuts.length);
  await assertStillServes(lb, upstream, before);
});

Deno.test("Balancer closes a 1 byte per 100 ms handshake at handshake_timeout", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await balancer(upstream);
  const hello = await capturedClientHello();
  const before = snapshot(upstream);
  const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
  const socket = await rawConnect(lb.port());
  const started = performance.now();
  let sent = 0;
  const drip = setInterval(() => {
    if (sent < hello.length && !socket.destroyed) socket.write(hello.subarray(sent, ++sent));
  }, 100);
  try {
    const { data } = await guard(readAll(socket), "close of the slow client");
    const closedAfterMs = performance.now() - started;
    assert.equal((await failed).reason, "handshake_timeout");
    assert.equal(data.length, 0);
    assert.ok(
      closedAfterMs >= HANDSHAKE_TIMEOUT_MS - 50 && closedAfterMs < HANDSHAKE_TIMEOUT_MS + 1_500,
      `closed after ${closedAfterMs} ms, with ${sent} of ${hello.length} bytes sent`,
    );
    assert.ok(sent < hello.length / 10, "slow bytes do not extend the deadline");
  } finally {
    clearInterval(drip);
  }
  await assertStillServes(lb, upstream, before);
});

Deno.test("Balancer refuses clients that close mid-handshake", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await balancer(upstream);
  const hello = await capturedClientHello();
  const cases: [string, (socket: Socket) => Promise<void>][] = [
    ["FIN after the server's first flight", async (socket) => {
      socket.write(hello);
      await readBytes(socket, 1);
      socket.end();
    }],
    ["destroyed after the server's first flight", async (socket) => {
      socket.write(hello);
      await readBytes(socket, 1);
      socket.destroy();
    }],
    ["FIN after half a ClientHello", (socket) => {
      socket.end(hello.subarray(0, hello.length >> 1));
      return Promise.resolve();
    }],
    ["FIN right after the ClientHello", (socket) => {
      socket.end(hello);
      return Promise.resolve();
    }],
  ];
  // All at once: each may take up to handshake_timeout (see the ignored test below).
  const before = snapshot(upstream);
  const errors: HandshakeErrorRecord[] = [];
  const enough = Promise.withResolvers<void>();
  lb.balancer.addEventListener("handshake_error", (e) => {
    errors.push((e as CustomEvent<HandshakeErrorRecord>).detail);
    if (errors.length >= cases.length) enough.resolve();
  });
  await Promise.all(cases.map(async ([name, act]) => {
    const socket = await rawConnect(lb.port());
    const closed = readAll(socket);
    await act(socket);
    socket.resume();
    await guard(closed, `close of the client (${name})`);
  }));
  await guard(enough.promise, "a handshake error for every case");
  await assertStillServes(lb, upstream, before);
});

Deno.test({
  // BUG (lib/server/balancer.ts, Balancer#listen): the listeners are created with
  // `allowHalfOpen: true`, and Deno 2.9's node:tls then never surfaces a FIN that
  // arrives during the handshake: the raw socket emits no "end" nor "close", so a
  // client that leaves mid-handshake holds its socket (and a `max_connections` slot)
  // until handshake_timeout, and is logged as a timeout. Fix: create the server without
  // `allowHalfOpen` and set `socket.allowHalfOpen = true` on the TLS socket in
  // #onSecure, before reading it (half-close after the handshake is kept, verified).
  name: "Balancer notices at once a client that closes mid-handshake",
  async fn() {
    await using upstream = await TestUpstream.start();
    await using lb = await balancer(upstream, { handshakeTimeout: "10s" });
    const hello = await capturedClientHello();
    const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
    const socket = await rawConnect(lb.port());
    const closed = readAll(socket);
    socket.write(hello);
    await readBytes(socket, 1);
    socket.resume();
    socket.end();
    const record = await guard(failed, "handshake error", 3_000);
    assert.notEqual(record.reason, "handshake_timeout");
    await guard(closed, "close", 3_000);
    assert.equal(lb.balancer.status().connections.open, 0);
  },
});

Deno.test({
  // BUG (lib/server/balancer.ts, Balancer#onConnection and the "tlsClientError" handler): when
  // the handshake timer fires it counts `handshake_timeout` and destroys the raw
  // socket; node:tls then emits "tlsClientError" (ECONNRESET) for the same socket,
  // counted again, with remote "unknown" since the socket is gone. Every timed-out
  // handshake is counted twice. Fix: remember the raw sockets the timer destroyed
  // (a WeakSet, like #refused) and ignore a later tlsClientError for them; and keep
  // the remote address captured in #onConnection for the log of real TLS errors.
  name: "Balancer counts a timed-out handshake once",
  async fn() {
    await using upstream = await TestUpstream.start();
    await using lb = await balancer(upstream);
    const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
    const socket = await rawConnect(lb.port());
    await guard(readAll(socket), "close of the silent client");
    assert.equal((await failed).reason, "handshake_timeout");
    // A full connection later, any second record for it would have been counted.
    await assertStillServes(lb, upstream, snapshot(upstream));
    assert.deepEqual([...lb.balancer.counters.handshakeErrors], [["handshake_timeout", 1]]);
  },
});

/** Presents `chainPem` (leaf first) with `keyPem`; resolves once the balancer refused it. */
async function presentChain(
  lb: TestBalancer,
  credential: { chainPem: string; keyPem: string },
): Promise<HandshakeErrorRecord> {
  const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
  if (HAVE_OPENSSL) {
    // OpenSSL sends any size; Deno's client gives up locally beyond 64 KiB.
    const dir = await Deno.makeTempDir({ prefix: "mtlb_chain_" });
    try {
      const end = "-----END CERTIFICATE-----\n";
      const split = credential.chainPem.indexOf(end) + end.length;
      const intermediates = credential.chainPem.slice(split);
      await Deno.writeTextFile(join(dir, "leaf.pem"), credential.chainPem.slice(0, split));
      await Deno.writeTextFile(join(dir, "chain.pem"), intermediates);
      await Deno.writeTextFile(join(dir, "key.pem"), credential.keyPem);
      const output = await sClient([
        "-connect",
        `127.0.0.1:${lb.port()}`,
        "-CAfile",
        join(lb.pki.dir, "ca.crt"),
        "-cert",
        join(dir, "leaf.pem"),
        ...(intermediates.trim() === "" ? [] : ["-cert_chain", join(dir, "chain.pem")]),
        "-key",
        join(dir, "key.pem"),
      ], "let me in\n");
      assert.ok(!output.text.includes("let me in"), "nothing echoed");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  } else {
    const socket = await connectClient(lb.port(), undefined, {
      cert: credential.chainPem,
      key: credential.keyPem,
    }).catch(() => undefined);
    if (socket !== undefined) {
      socket.write("let me in");
      assert.equal((await readAll(socket)).data.length, 0);
    }
  }
  return await guard(failed, "handshake error");
}

/** A CA made from a leaf certificate: what an attacker holding a client key could try. */
function leafAsCa(leaf: IssuedCertificate, issuer: CertificateAuthority): CertificateAuthority {
  return {
    certPem: leaf.certPem,
    keyPem: leaf.keyPem,
    der: leaf.der,
    keys: leaf.keys,
    intermediatesPem: leaf.certPem + issuer.intermediatesPem,
    serial: leaf.serial,
  };
}

Deno.test("Balancer refuses client certificate chains it cannot verify", async (t) => {
  await using upstream = await TestUpstream.start();
  // Every leaf below is named alice, so only verification can keep them out.
  await using lb = await balancer(upstream);
  const pki = lb.pki;
  const alice = { commonName: "alice", kind: "client" as const };

  await t.step("a chain through an intermediate of a foreign root", async () => {
    const foreignRoot = await createCa({ commonName: "mtlb test CA" }); // same name, other key
    const intermediate = await createIntermediateCa(foreignRoot, { commonName: "foreign sub" });
    const before = snapshot(upstream);
    await presentChain(lb, await issueCertificate(intermediate, alice));
    await assertStillServes(lb, upstream, before);
  });

  await t.step(
    "a chain through an intermediate that is not in the CA bundle nor sent",
    async () => {
      const before = snapshot(upstream);
      const leaf = await issueCertificate(pki.intermediateCa.authority, alice);
      await presentChain(lb, { chainPem: leaf.certPem, keyPem: leaf.keyPem });
      await assertStillServes(lb, upstream, before);
    },
  );

  await t.step("a chain through a client certificate used as a CA", async () => {
    const before = snapshot(upstream);
    const bobLeaf = await issueCertificate(pki.ca.authority, { commonName: "bob", kind: "client" });
    const forged = await issueCertificate(leafAsCa(bobLeaf, pki.ca.authority), alice);
    assert.ok(forged.chainPem.includes(bobLeaf.certPem.trim()));
    await presentChain(lb, forged);
    await assertStillServes(lb, upstream, before);
  });

  await t.step("a chain of 50 intermediates and a 3,000-name leaf, over 100 KB", async () => {
    const before = snapshot(upstream);
    let ca = pki.ca.authority;
    for (let i = 0; i < 50; i++) ca = await createIntermediateCa(ca, { commonName: `level ${i}` });
    const leaf = await issueCertificate(ca, {
      ...alice,
      dnsNames: Array.from({ length: 3_000 }, (_, i) => `host-${i}.alice.example.org`),
    });
    const derBytes = leaf.chainPem.split("-----END CERTIFICATE-----").slice(0, -1)
      .map((pem) => atob(pem.replace(/-----BEGIN CERTIFICATE-----|\s/g, "")).length)
      .reduce((a, b) => a + b, 0);
    assert.ok(derBytes > 100_000, `chain of ${derBytes} bytes`);
    await presentChain(lb, leaf);
    await assertStillServes(lb, upstream, before);
  });

  await t.step("a single 87 KB leaf signed by the trusted CA", async () => {
    const before = snapshot(upstream);
    const leaf = await issueCertificate(pki.ca.authority, {
      ...alice,
      dnsNames: Array.from({ length: 3_000 }, (_, i) => `host-${i}.alice.example.org`),
    });
    assert.ok(leaf.der.length > 65_536, `leaf of ${leaf.der.length} bytes`);
    await presentChain(lb, leaf);
    await assertStillServes(lb, upstream, before);
  });
  assert.equal(lb.balancer.counters.accepted, 5, "only the good clients after each case");
});

/** Runs `openssl s_client ARGS` with `input` on stdin and a time bound; never throws. */
/** `openssl s_client` arguments to reach `lb` as the client whose files are given. */

Deno.test({
  name: "Balancer refuses TLS 1.2 and TLS 1.0 ClientHellos from openssl",
  ignore: !HAVE_OPENSSL,
  async fn(t) {
    await using upstream = await TestUpstream.start();
    await using lb = await balancer(upstream);
    const dir = lb.pki.dir;
    const cases: [string, string[], RegExp][] = [
      ["TLS 1.2", ["-tls1_2"], />>> TLS 1\.2, Handshake \[length [0-9a-f]+\], ClientHello/],
      // OpenSSL 3 refuses to offer TLS 1.0 above security level 0.
      [
        "TLS 1.0",
        ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        />>> TLS 1\.0, Handshake \[length [0-9a-f]+\], ClientHello/,
      ],
    ];
    for (const [name, flags, sentHello] of cases) {
      await t.step(name, async () => {
        const before = snapshot(upstream);
        const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
        const { code, text: output } = await sClient([
          "-connect",
          `127.0.0.1:${lb.port()}`,
          "-CAfile",
          join(dir, "ca.crt"),
          "-cert",
          join(dir, "alice.crt"),
          "-key",
          join(dir, "alice.key"),
          "-msg",
          ...flags,
        ], "let me in\n");
        assert.match(output, sentHello, "openssl sent the old ClientHello");
        assert.notEqual(code, 0, "openssl failed to connect");
        assert.ok((await guard(failed, "handshake error")).reason.length > 0);
        await assertStillServes(lb, upstream, before);
      });
    }
  },
});

Deno.test({
  name: "Balancer never takes 0-RTT early data (openssl -early_data)",
  ignore: !HAVE_EARLY_DATA,
  async fn() {
    // The upstream remembers every byte it gets.
    let seen = "";
    await using upstream = await TestUpstream.start((socket) => {
      socket.on("data", (chunk: Uint8Array) => seen += text(chunk));
      socket.on("end", () => socket.end());
    });
    await using lb = await balancer(upstream); // alice is a client; bob is unknown
    const dir = await Deno.makeTempDir({ prefix: "mtlb_0rtt_" });
    try {
      const early = join(dir, "early.txt");
      await Deno.writeTextFile(early, "EARLY DATA\n");
      const base = (who: "alice" | "bob") => [
        "-connect",
        `127.0.0.1:${lb.port()}`,
        "-CAfile",
        join(lb.pki.dir, "ca.crt"),
        "-cert",
        join(lb.pki.dir, `${who}.crt`),
        "-key",
        join(lb.pki.dir, `${who}.key`),
      ];
      for (const who of ["alice", "bob"] as const) {
        const session = join(dir, `${who}.session`);
        // A full handshake; stay until a session ticket arrived.
        const first = await sClient(
          [...base(who), "-sess_out", session],
          "",
          { holdUntil: "Post-Handshake New Session Ticket arrived" },
        );
        assert.match(first.text, /New Session Ticket arrived/);
        assert.match(first.text, /Max Early Data: 0\b/, "the server offers no 0-RTT");
        // Resume with early data: the client may not send it, and nothing arrives.
        const denied = who === "bob" ? nextEvent<DenyRecord>(lb.balancer, "deny") : undefined;
        const resumed = await sClient(
          [...base(who), "-sess_in", session, "-early_data", early],
          "",
        );
        assert.match(resumed.text, /Early data was (not sent|rejected)/);
        if (denied !== undefined) {
          assert.equal((await guard(denied, "deny")).reason, "unknown_identity");
        }
      }
      assert.ok(!seen.includes("EARLY DATA"), "no early data reached the upstream");
      assert.deepEqual([...lb.balancer.limiter.snapshot()], []);
      assert.equal(lb.balancer.counters.active, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "Balancer forwards a resumed session and knows its client from the certificate",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using upstream = await TestUpstream.start(); // echoes
    await using lb = await balancer(upstream); // alice is a client
    const dir = await Deno.makeTempDir({ prefix: "mtlb_resume_ok_" });
    try {
      const session = join(dir, "session");
      const args = clientArgs(lb, join(lb.pki.dir, "alice.crt"), join(lb.pki.dir, "alice.key"));
      const first = await sClient([...args, "-sess_out", session], "", {
        holdUntil: "Post-Handshake New Session Ticket arrived",
      });
      assert.match(first.text, /^New, TLSv1\.3/m);
      const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
      const payload = "PAYLOAD-resumed-4c1d\n"; // s_client takes a line starting with R as a command
      const resumed = await sClient([...args, "-sess_in", session], payload, {
        holdUntil: payload,
      });
      assert.match(resumed.text, /^Reused, TLSv1\.3/m, "the session was resumed");
      assert.ok(resumed.text.includes(payload), `the echo came back:\n${resumed.text}`);
      const record = await guard(ended, "end");
      assert.equal(record.client, "alice");
      assert.equal(record.identity.cn, "alice");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  // TLS 1.3 resumption skips certificate verification, and Deno 2.9's node:tls server
  // issues session tickets (12 h lifetime) that no option turns off (sessionTimeout,
  // SSL_OP_NO_TICKET are ignored). Without a check of its own, a client whose
  // certificate expired after it got a ticket would still get in for up to 12 hours.
  // The balancer re-reads the peer certificate after every handshake, resumed or not,
  // and refuses it outside its validity period. Driven by openssl: Deno's own client
  // does not resume reliably.
  name: "Balancer refuses a resumed session whose certificate has expired since",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using upstream = await TestUpstream.start();
    await using lb = await balancer(upstream, {
      clients: `[clients.shortlived]
match = { cn = "shortlived" }
groups = ["echo"]`,
    });
    // X.509 times have 1 s resolution: expire on a whole second, 2 s from now.
    const notAfter = new Date(Math.ceil((Date.now() + 2_000) / 1_000) * 1_000);
    const leaf = await issueCertificate(lb.pki.ca.authority, {
      commonName: "shortlived",
      kind: "client",
      notBefore: new Date(Date.now() - 60_000),
      notAfter,
    });
    const dir = await Deno.makeTempDir({ prefix: "mtlb_resume_" });
    try {
      await Deno.writeTextFile(join(dir, "leaf.pem"), leaf.certPem);
      await Deno.writeTextFile(join(dir, "key.pem"), leaf.keyPem);
      const session = join(dir, "session");
      const args = clientArgs(lb, join(dir, "leaf.pem"), join(dir, "key.pem"));
      const first = await sClient([...args, "-sess_out", session], "valid\n", {
        holdUntil: "Post-Handshake New Session Ticket arrived",
      });
      assert.match(first.text, /^New, TLSv1\.3/m);

      // Not waiting for a state of the balancer: for the wall clock to pass notAfter.
      await delay(notAfter.getTime() + 1_100 - Date.now());
      const payload = "PAYLOAD-7f3a\n";
      const fresh = await sClient(args, payload);
      assert.ok(!fresh.text.includes(payload), "a full handshake is refused");
      const before = snapshot(upstream);
      const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
      const resumed = await sClient([...args, "-sess_in", session], payload, {
        holdUntil: payload,
      });
      assert.match(resumed.text, /^Reused, TLSv1\.3/m, "the session was resumed");
      assert.equal(upstream.received, before.received, "nothing reached the upstream");
      assert.ok(!resumed.text.includes(payload), "a resumed session is refused");
      const record = await guard(failed, "handshake_error");
      assert.equal(record.reason, "expired");
      assert.match(record.detail ?? "", /^resumed session: .*CN=shortlived expired on \S+$/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("Balancer sheds the oldest silent handshake at max_handshakes, so an authenticated client still gets in", async () => {
  await using upstream = await TestUpstream.start();
  const clock = new FakeClock();
  await using lb = await startBalancer(
    `[server]
listen = "127.0.0.1:0"
handshake_timeout = "4s"
max_handshakes = 3

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream.address}"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`,
    { clock },
  );
  const silent: Socket[] = [];
  const closes: Promise<unknown>[] = [];
  for (let i = 0; i < 3; i++) {
    const socket = netConnect({ host: "127.0.0.1", port: lb.port() });
    silent.push(socket);
    closes.push(readAll(socket));
  }
  // Three handshakes in flight, all young: a fourth connection is refused, not a silent one shed.
  const refused = nextEvent<DenyRecord>(lb.balancer, "deny");
  const fourth = netConnect({ host: "127.0.0.1", port: lb.port() });
  assert.equal((await refused).reason, "server_full");
  await readAll(fourth);
  assert.equal(lb.balancer.status().connections.handshaking, 3);
  assert.equal(lb.balancer.status().connections.maxHandshakes, 3);

  // A second later (a quarter of handshake_timeout), the oldest silent one makes room.
  clock.advance(1000);
  const shed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
  const alice = await connectClient(lb.port(), lb.pki.alice);
  const record = await shed;
  assert.equal(record.reason, "handshake_shed");
  alice.write("still served");
  assert.equal(text(await readBytes(alice, 12)), "still served");
  alice.destroy();
  await closes[0];
  assert.equal(lb.balancer.counters.handshakeErrors.get("handshake_shed"), 1);
  for (const socket of silent) socket.destroy();
});

Deno.test("Balancer's dedicated listener skips the ClientHello step, and still sheds a silent handshake before one whose client spoke", async () => {
  await using upstream = await TestUpstream.start();
  const clock = new FakeClock();
  await using lb = await startBalancer(
    `[server]
handshake_timeout = "4s"
max_handshakes = 2

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream.address}"]
listen = "127.0.0.1:0"

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`,
    { clock },
  );
  const port = lb.port("echo");
  // A client whose handshake stalls after its ClientHello: a relay passes on its first
  // flight only, and everything the balancer answers.
  const answered = Promise.withResolvers<void>();
  const relay = createServer((inbound) => {
    const outbound = netConnect({ host: "127.0.0.1", port });
    inbound.once("data", (chunk: Uint8Array) => outbound.write(chunk));
    // The ServerHello came back: the balancer has read the ClientHello.
    outbound.once("data", () => answered.resolve());
    outbound.pipe(inbound);
    inbound.on("error", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy());
    inbound.on("close", () => outbound.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const pki = lb.pki;
  const spoke = tlsConnect({
    host: "127.0.0.1",
    port: (relay.address() as { port: number }).port,
    ca: pki.ca.certPem,
    cert: pki.alice.chainPem,
    key: pki.alice.keyPem,
    checkServerIdentity: () => undefined,
  });
  spoke.on("error", () => {});
  await guard(answered.promise, "the ServerHello");
  const silent = netConnect({ host: "127.0.0.1", port });
  const silentClosed = readAll(silent);
  await new Promise<void>((resolve) => silent.once("connect", () => resolve()));
  assert.equal(lb.balancer.status().connections.handshaking, 2);

  // At the cap, the younger silent handshake makes room, not the older one that spoke.
  clock.advance(1000);
  const shed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
  const alice = await connectClient(port, lb.pki.alice);
  const record = await shed;
  assert.equal(record.reason, "handshake_shed");
  assert.match(record.detail ?? "", /^silent for/);
  await guard(silentClosed, "the silent connection to be closed");
  assert.equal(spoke.destroyed, false, "the client that spoke is still connected");
  alice.write("still served");
  assert.equal(text(await readBytes(alice, 12)), "still served");
  alice.destroy();
  spoke.destroy();
  await new Promise<void>((resolve) => relay.close(() => resolve()));
});
