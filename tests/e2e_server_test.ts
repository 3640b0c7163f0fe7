import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
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
import type { ConnectionRecord, DenyRecord, HandshakeErrorRecord } from "../lib/server/records.ts";
import { testPki } from "./_pki_fixtures.ts";

interface Layout {
  upstreams: string[];
  server?: string;
  health?: string;
  extraGroups?: string;
  clients?: string;
}

/** A config with one group "echo" on the shared listener and client alice. */
function config(layout: Layout): string {
  return `[server]
listen = "127.0.0.1:0"
${layout.server ?? ""}

[health]
${layout.health ?? 'interval = "1h"'}

[groups.echo]
upstreams = ${JSON.stringify(layout.upstreams)}

${layout.extraGroups ?? ""}

${
    layout.clients ?? `[clients.alice]
match = { cn = "alice" }
groups = ["echo"]`
  }
`;
}

/** Reads up to the first newline (the banner of a `banner()` upstream). */
async function readLine(socket: Socket): Promise<string> {
  let line = "";
  while (!line.endsWith("\n")) {
    const chunk = await readBytes(socket, 1);
    if (chunk.length === 0) break;
    line += text(chunk);
    socket.resume();
  }
  return line.trim();
}

/** Expects the balancer to refuse `socket` after its handshake, with `reason`. */
async function assertDenied(
  socket: Socket,
  denied: Promise<DenyRecord>,
  reason: string,
): Promise<DenyRecord> {
  socket.write("hello?");
  const [record, { data }] = await Promise.all([denied, readAll(socket)]);
  assert.equal(record.reason, reason);
  assert.equal(data.length, 0, "a denied client receives nothing");
  return record;
}

Deno.test("Balancer forwards bytes both ways, byte-exact, and reports the connection", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const client = await connectClient(lb.port(), lb.pki.alice);
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  const payload = new Uint8Array(256 * 256).map((_, i) => i % 256);
  client.write(payload);
  assert.deepEqual(await readBytes(client, payload.length), payload);
  client.end();
  await readAll(client);
  const record = await ended;
  assert.equal(record.client, "alice");
  assert.equal(record.group, "echo");
  assert.equal(record.upstream, upstream.address);
  assert.equal(record.identity.cn, "alice");
  assert.equal(record.bytesFromClient, payload.length);
  assert.equal(record.bytesFromUpstream, payload.length);
  assert.equal(record.reason, "client_closed");
  assert.equal(lb.balancer.counters.active, 0);
  assert.equal(lb.balancer.limiter.active("alice"), 0);
  assert.equal(lb.balancer.pool("echo")!.active(upstream.address), 0);
});

Deno.test("Balancer sends a large reply whole at once, without waiting for the client's ACK", async () => {
  // Each request byte is answered with 64 KiB. With Nagle's algorithm on the client's
  // socket, the tail of each reply waits for the ACK of its start, which a client
  // delays by about 40 ms: 20 replies took about 880 ms; without it, a few ms each.
  const reply = new Uint8Array(64 * 1024).fill(7);
  await using upstream = await TestUpstream.start((socket) => {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => {
      for (let i = 0; i < chunk.length; i++) socket.write(reply);
    });
    socket.on("end", () => socket.end());
  });
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const client = await connectClient(lb.port(), lb.pki.alice);
  const times: number[] = [];
  for (let i = 0; i < 21; i++) {
    const started = performance.now();
    client.write("?");
    assert.equal((await readBytes(client, reply.length)).length, reply.length);
    client.resume();
    if (i > 0) times.push(performance.now() - started); // The first one warms up.
  }
  client.end();
  await readAll(client);
  times.sort((a, b) => a - b);
  // The median reply, not the total: a loaded machine may slow a few of them.
  const median = times[times.length >> 1]!;
  assert.ok(median < 20, `median reply took ${median.toFixed(1)} ms (${times.map(Math.round)})`);
});

Deno.test("Balancer moves 100 MiB intact each way", async () => {
  // A sink that hashes what it receives and answers with its digest.
  await using upstream = await TestUpstream.start((socket) => {
    const hash = createHash("sha256");
    socket.on("data", (chunk: Uint8Array) => hash.update(chunk));
    socket.on("end", () => socket.end(hash.digest("hex")));
  });
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const client = await connectClient(lb.port(), lb.pki.alice);
  const sent = createHash("sha256");
  const chunk = new Uint8Array(1024 * 1024);
  const total = 100;
  const reply = readAll(client);
  for (let i = 0; i < total; i++) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    chunk.copyWithin(65536, 0, 65536 * 15);
    chunk[0] = i;
    sent.update(chunk);
    if (!client.write(chunk.slice())) {
      await new Promise((resolve) => client.once("drain", resolve));
    }
  }
  client.end();
  const { data, error } = await reply;
  assert.equal(error, undefined);
  assert.equal(text(data), sent.digest("hex"));
  assert.equal(upstream.received, total * chunk.length);

  // And the other way: the upstream streams 100 MiB to the client.
  await using source = await TestUpstream.start((socket) => {
    const block = new Uint8Array(1024 * 1024).fill(7);
    let left = total;
    const pump = () => {
      while (left > 0) {
        left--;
        if (!socket.write(block)) return void socket.once("drain", pump);
      }
      socket.end();
    };
    pump();
  });
  await using lb2 = await startBalancer(config({ upstreams: [source.address] }));
  const reader = await connectClient(lb2.port(), lb2.pki.alice);
  let received = 0;
  let wrong = 0;
  reader.on("data", (c: Uint8Array) => {
    received += c.length;
    for (const b of c) if (b !== 7) wrong++;
  });
  // The upstream's FIN reaches the client after the last byte; the client ends then.
  reader.on("end", () => reader.end());
  await readAll(reader);
  assert.equal(received, total * 1024 * 1024);
  assert.equal(wrong, 0);
});

Deno.test("Balancer propagates half-close: the client's FIN still lets the reply through", async () => {
  // Replies only after the client has finished sending.
  await using upstream = await TestUpstream.start((socket) => {
    let n = 0;
    socket.on("data", (chunk: Uint8Array) => n += chunk.length);
    socket.on("end", () => socket.end(`got ${n} bytes`));
  });
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const client = await connectClient(lb.port(), lb.pki.alice);
  const reply = readAll(client);
  client.end("x".repeat(1000));
  const { data } = await reply;
  assert.equal(text(data), "got 1000 bytes");
});

Deno.test("Balancer propagates half-close: the upstream's FIN keeps the client's direction open", async () => {
  // Sends a greeting and FIN at once, then keeps reading.
  const { promise: heard, resolve } = Promise.withResolvers<string>();
  await using upstream = await TestUpstream.start((socket) => {
    socket.end("bye early\n");
    let got = "";
    socket.on("data", (chunk: Uint8Array) => got += new TextDecoder().decode(chunk));
    socket.on("end", () => resolve(got));
  });
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const client = await connectClient(lb.port(), lb.pki.alice);
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  const first = await readBytes(client, "bye early\n".length);
  assert.equal(text(first), "bye early\n");
  client.end("still talking");
  assert.equal(await heard, "still talking");
  assert.equal((await ended).reason, "upstream_closed");
});

Deno.test("Balancer refuses clients that fail certificate verification", async (t) => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const pki = lb.pki;
  const cases = [
    ["no client certificate", pki.alice, { noCert: true }, "no_certificate"],
    ["a certificate from a foreign CA", pki.intruder, {}, "unknown_ca"],
    ["an expired certificate", pki.expired, {}, "expired"],
    ["a certificate that is not yet valid", pki.notYetValid, {}, "not_yet_valid"],
    ["a certificate without the clientAuth EKU", pki.wrongEku, {}, "wrong_eku"],
    ["a certificate without any EKU", pki.noEku, {}, "no_client_eku"],
    ["a leaf whose intermediate is not sent nor trusted", pki.viaIntermediate, {
      cert: pki.viaIntermediate.certPem,
    }, "unknown_ca"],
  ] as const;
  for (const [name, credential, options, reason] of cases) {
    await t.step(name, async () => {
      const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
      const before = upstream.received;
      // TLS 1.3: the client finishes first; the server's verdict arrives after.
      const socket = await connectClient(lb.port(), credential, options).catch(() => undefined);
      if (socket !== undefined) {
        socket.write("let me in");
        const { data } = await readAll(socket);
        assert.equal(data.length, 0);
      }
      const record = await failed;
      assert.equal(record.reason, reason);
      assert.equal(upstream.received, before, "nothing reached the upstream");
    });
  }
  assert.equal(lb.balancer.counters.accepted, 0);
});

Deno.test("Balancer accepts a client that sends its intermediate in the chain", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({
    upstreams: [upstream.address],
    clients: `[clients.via]
match = { cn = "via-intermediate" }
groups = ["echo"]`,
  }));
  const client = await connectClient(lb.port(), lb.pki.viaIntermediate);
  client.write("ping");
  assert.equal(text(await readBytes(client, 4)), "ping");
  client.destroy();
});

Deno.test("Balancer refuses TLS 1.2, plaintext and silent clients", async (t) => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({
    upstreams: [upstream.address],
    server: `handshake_timeout = "300ms"`,
  }));
  await t.step("TLS 1.2-only client", async () => {
    const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
    await assert.rejects(connectClient(lb.port(), lb.pki.alice, { maxVersion: "TLSv1.2" }));
    const record = await failed;
    assert.equal(record.reason, "protocol_version", record.detail);
  });
  await t.step("plaintext bytes", async () => {
    const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
    const socket = netConnect({ host: "127.0.0.1", port: lb.port() });
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const { data } = await readAll(socket);
    assert.ok(!text(data).includes("HTTP/1.1 200"));
    assert.equal((await failed).reason, "not_tls");
  });
  await t.step("silent client closed at handshake_timeout", async () => {
    const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
    const socket = netConnect({ host: "127.0.0.1", port: lb.port() });
    const closed = readAll(socket);
    assert.equal((await failed).reason, "handshake_timeout");
    assert.equal((await closed).data.length, 0);
  });
  assert.equal(upstream.received, 0, "nothing reached the upstream");
});

Deno.test("Balancer denies an unknown identity after the handshake", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({ upstreams: [upstream.address] }));
  const socket = await connectClient(lb.port(), lb.pki.carol);
  const record = await assertDenied(
    socket,
    nextEvent<DenyRecord>(lb.balancer, "deny"),
    "unknown_identity",
  );
  assert.equal(record.identity?.cn, "carol");
  assert.equal(upstream.received, 0, "nothing reached the upstream");
});

Deno.test("Balancer matches clients by spki_sha256, serial, san_uri and routes by SNI", async () => {
  await using echoUp = await TestUpstream.start(banner("echo"));
  await using cacheUp = await TestUpstream.start(banner("cache"));
  const pki = await testPki();
  await using lb = await startBalancer(config({
    upstreams: [echoUp.address],
    extraGroups: `[groups.cache]
upstreams = ["${cacheUp.address}"]`,
    clients: `[clients.alice]
match = { spki_sha256 = "${pki.alice.spkiSha256.toUpperCase().match(/../g)!.join(":")}" }
groups = ["echo", "cache"]

[clients.bob]
match = { serial = "0A:1B:00" }
groups = ["echo"]

[clients.carol]
match = { san_uri = "spiffe://example.org/carol" }
groups = ["cache"]`,
  }));
  const greet = async (credential: typeof pki.alice, servername?: string) => {
    const socket = await connectClient(lb.port(), credential, servername ? { servername } : {});
    const line = await readLine(socket);
    socket.destroy();
    return line;
  };
  assert.equal(await greet(pki.alice, "cache"), "cache");
  assert.equal(await greet(pki.alice, "echo"), "echo");
  assert.equal(await greet(pki.bob), "echo", "bob's only group");
  assert.equal(await greet(pki.carol), "cache", "carol's only group");

  // alice has two groups and names neither.
  const vague = await connectClient(lb.port(), pki.alice);
  await assertDenied(vague, nextEvent(lb.balancer, "deny"), "no_group");
  // bob may not use cache.
  const bob = await connectClient(lb.port(), pki.bob, { servername: "cache" });
  const record = await assertDenied(bob, nextEvent(lb.balancer, "deny"), "unauthorized_group");
  assert.equal(record.client, "bob");
  assert.equal(cacheUp.received, 0, "nothing of bob's reached cache");
});

Deno.test("Balancer routes by ALPN and by dedicated listener", async () => {
  await using echoUp = await TestUpstream.start(banner("echo"));
  await using cacheUp = await TestUpstream.start(banner("cache"));
  await using lb = await startBalancer(config({
    upstreams: [echoUp.address],
    extraGroups: `[groups.cache]
upstreams = ["${cacheUp.address}"]
listen = "127.0.0.1:0"`,
    clients: `[clients.alice]
match = { cn = "alice" }
groups = ["echo", "cache"]

[clients.bob]
match = { cn = "bob" }
groups = ["echo"]`,
  }));
  const alpn = await connectClient(lb.port(), lb.pki.alice, { ALPNProtocols: ["h2", "cache"] });
  assert.equal(alpn.alpnProtocol, false, "a group name is not echoed before authentication");
  assert.equal(text(await readBytes(alpn, 6)), "cache\n");
  alpn.destroy();

  const dedicated = await connectClient(lb.port("cache"), lb.pki.alice);
  assert.equal(text(await readBytes(dedicated, 6)), "cache\n");
  dedicated.destroy();

  // A group with its own listener is chosen by SNI on the shared listener too: so the
  // server certificate must name it (check and serve warn when it does not).
  const bySni = await connectClient(lb.port(), lb.pki.alice, { servername: "cache" });
  assert.equal(text(await readBytes(bySni, 6)), "cache\n");
  bySni.destroy();

  // The dedicated listener serves only its group: bob is not allowed there.
  const bob = await connectClient(lb.port("cache"), lb.pki.bob);
  await assertDenied(bob, nextEvent(lb.balancer, "deny"), "unauthorized_group");
});

Deno.test("Balancer never fails a handshake over ALPN, and selects the protocols a group declares", async (t) => {
  await using echoUp = await TestUpstream.start(banner("echo"));
  await using cacheUp = await TestUpstream.start(banner("cache"));
  await using lb = await startBalancer(config({
    upstreams: [echoUp.address],
    extraGroups: `[groups.cache]
upstreams = ["${cacheUp.address}"]
alpn = ["h2", "http/1.1"]`,
    clients: `[clients.alice]
match = { cn = "alice" }
groups = ["echo", "cache"]

[clients.bob]
match = { cn = "bob" }
groups = ["echo"]`,
  }));
  const browser = ["h2", "http/1.1"];
  await t.step("its only group, offering h2 and http/1.1", async () => {
    const bob = await connectClient(lb.port(), lb.pki.bob, { ALPNProtocols: browser });
    assert.equal(bob.alpnProtocol, false, "echo declares no protocol: none selected");
    assert.equal(text(await readBytes(bob, 5)), "echo\n");
    bob.destroy();
  });
  await t.step("a group by SNI, which declares h2", async () => {
    const alice = await connectClient(lb.port(), lb.pki.alice, {
      ALPNProtocols: browser,
      servername: "cache",
    });
    assert.equal(alice.alpnProtocol, "h2");
    assert.equal(text(await readBytes(alice, 6)), "cache\n");
    alice.destroy();
  });
  await t.step("the group's next protocol when the client lacks the first", async () => {
    const alice = await connectClient(lb.port(), lb.pki.alice, {
      ALPNProtocols: ["http/1.1"],
      servername: "cache",
    });
    assert.equal(alice.alpnProtocol, "http/1.1");
    alice.destroy();
  });
  await t.step(
    "protocols naming no group, with several groups: no_group names the choice",
    async () => {
      const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
      const alice = await connectClient(lb.port(), lb.pki.alice, { ALPNProtocols: browser });
      assert.equal(alice.alpnProtocol, false);
      const record = await denied;
      assert.equal(record.reason, "no_group");
      assert.match(record.detail ?? "", /may use echo, cache: choose one with SNI or ALPN/);
      alice.destroy();
    },
  );
  await t.step("a denial records the group asked for", async () => {
    const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
    const bob = await connectClient(lb.port(), lb.pki.bob, {
      ALPNProtocols: browser,
      servername: "cache",
    });
    assert.equal(bob.alpnProtocol, "h2");
    const record = await denied;
    assert.equal(record.reason, "unauthorized_group");
    assert.equal(record.group, "cache");
    bob.destroy();
  });
});

Deno.test("Balancer refuses the 11th concurrent connection of a client capped at 10", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({
    upstreams: [upstream.address],
    clients: `[clients.alice]
match = { cn = "alice" }
groups = ["echo"]

[clients.bob]
match = { cn = "bob" }
groups = ["echo"]`,
  }));
  const open = [];
  for (let i = 0; i < 10; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("x");
    await readBytes(socket, 1); // forwarded: its slot is taken
    open.push(socket);
  }
  assert.equal(lb.balancer.limiter.active("alice"), 10);
  const eleventh = await connectClient(lb.port(), lb.pki.alice);
  await assertDenied(eleventh, nextEvent(lb.balancer, "deny"), "limit_concurrency");

  // Another client is unaffected.
  const bob = await connectClient(lb.port(), lb.pki.bob);
  bob.write("hi");
  assert.equal(text(await readBytes(bob, 2)), "hi");
  bob.destroy();

  // Releasing one slot re-admits alice.
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  open.pop()!.destroy();
  await ended;
  const again = await connectClient(lb.port(), lb.pki.alice);
  again.write("y");
  assert.equal(text(await readBytes(again, 1)), "y");
  for (const socket of [...open, again]) socket.destroy();
});

Deno.test("Balancer refuses over the connection rate with limit_rate", async () => {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(config({
    upstreams: [upstream.address],
    clients: `[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
connection_rate = { count = 2, per = "1h" }`,
  }));
  for (let i = 0; i < 2; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("x");
    await readBytes(socket, 1);
    socket.destroy();
  }
  const third = await connectClient(lb.port(), lb.pki.alice);
  await assertDenied(third, nextEvent(lb.balancer, "deny"), "limit_rate");
});

Deno.test("Balancer spreads connections by least connections over real upstreams", async () => {
  await using a = await TestUpstream.start();
  await using b = await TestUpstream.start();
  await using c = await TestUpstream.start();
  await using lb = await startBalancer(config({ upstreams: [a.address, b.address, c.address] }));
  const open = [];
  for (let i = 0; i < 6; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("x");
    await readBytes(socket, 1);
    open.push(socket);
  }
  assert.deepEqual([a.sockets.size, b.sockets.size, c.sockets.size], [2, 2, 2]);
  // Free two on `a`: the next two go there, since it has the fewest.
  const pool = lb.balancer.pool("echo")!;
  const onA = open.filter((_, i) => i % 3 === 0);
  for (const socket of onA) {
    const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
    socket.destroy();
    await ended;
  }
  assert.equal(pool.active(a.address), 0);
  for (let i = 0; i < 2; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("x");
    await readBytes(socket, 1);
    open.push(socket);
  }
  assert.equal(pool.active(a.address), 2);
  for (const socket of open) socket.destroy();
});

Deno.test("Balancer takes a stopped upstream out by health checks and back when it returns", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  await using lb = await startBalancer(config({
    upstreams: [a.address, b.address],
    health: `interval = "100ms"
timeout = "500ms"`,
  }));
  const probe = lb.balancer.probe("echo")!;
  const port = a.port;
  const aAddress = a.address;
  const down = nextEvent<never>(probe, "change");
  await a.stop();
  await down;
  assert.equal(probe.isHealthy(aAddress), false);
  for (let i = 0; i < 4; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    assert.equal(text(await readBytes(socket, 2)), "b\n");
    socket.destroy();
  }
  const up = nextEvent<never>(probe, "change");
  await a.listen(port);
  await up;
  assert.equal(probe.isHealthy(aAddress), true);
  const sockets = [];
  for (let i = 0; i < 2; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    sockets.push(socket);
  }
  const greetings = await Promise.all(sockets.map((s) => readBytes(s, 2).then(text)));
  assert.deepEqual(greetings.sort(), ["a\n", "b\n"]);
  for (const socket of sockets) socket.destroy();
});

Deno.test("Balancer fails closed when no upstream is healthy, and fails over a dead one", async () => {
  await using alive = await TestUpstream.start(banner("alive"));
  const dead = await TestUpstream.start();
  const deadAddress = dead.address;
  await dead.stop();
  await using lb = await startBalancer(config({
    upstreams: [deadAddress, alive.address],
    health: `interval = "100ms"`,
  }));
  // The first probe round found the dead one: every connection goes to the live one.
  const socket = await connectClient(lb.port(), lb.pki.alice);
  assert.equal(text(await readBytes(socket, 6)), "alive\n");
  socket.destroy();

  const aliveAddress = alive.address;
  const probe = lb.balancer.probe("echo")!;
  const down = nextEvent<never>(probe, "change");
  await alive.stop();
  await down; // the probe (every 100 ms here) found it down too
  assert.equal(probe.isHealthy(aliveAddress), false);
  const refused = await connectClient(lb.port(), lb.pki.alice);
  await assertDenied(refused, nextEvent(lb.balancer, "deny"), "no_healthy_upstream");
});
