import "reflect-metadata";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";
import {
  PemConverter,
  SubjectAlternativeNameExtension,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { FakeClock } from "../lib/core/clock.ts";
import { linkTcpReads } from "../lib/core/tls_reads.ts";
import { BandwidthLimiter } from "../lib/limiter/bandwidth_limiter.ts";
import {
  forward,
  type ForwardOptions,
  type ForwardResult,
  type ForwardSocket,
  type ForwardStats,
} from "../lib/proxy/forward.ts";

const HOST = "127.0.0.1";
const EVENTS = ["data", "end", "finish", "drain", "error", "close"] as const;

// ---------------------------------------------------------------------------------------
// Helpers

/** Fails instead of hanging when a forward bug leaves a promise unsettled. */
async function within<T>(promise: Promise<T>, what: string, ms = 15_000): Promise<T> {
  let id: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    id = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, guard]);
  } finally {
    clearTimeout(id);
  }
}

function closed(socket: net.Socket): Promise<unknown> {
  return socket.closed ? Promise.resolve() : once(socket, "close");
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, HOST);
  await once(server, "listening");
  return (server.address() as net.AddressInfo).port;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves when the peer has closed `socket` (FIN or reset), discarding unread data. */
function peerClosed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("end", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("end", done);
    socket.on("close", done);
    socket.resume();
  });
}

/** Reads `socket` until FIN. */
async function readToEnd(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const onData = (chunk: Buffer) => chunks.push(chunk);
  socket.on("data", onData);
  await once(socket, "end");
  socket.off("data", onData);
  return Buffer.concat(chunks);
}

/** Reads exactly `n` bytes from `socket`. */
function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got < n) return;
      cleanup();
      const all = Buffer.concat(chunks);
      assert.equal(all.length, n, "received more bytes than expected");
      resolve(all);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`Socket ended after ${got} of ${n} bytes`));
    };
    const cleanup = () => {
      socket.off("data", onData);
      socket.off("end", onEnd);
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
  });
}

/** Writes `chunk` and waits until it is flushed. */
function send(socket: net.Socket, chunk: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.write(chunk, (error) => error ? reject(error) : resolve());
  });
}

function echo(socket: net.Socket): void {
  socket.on("data", (chunk: Buffer) => socket.write(chunk));
  socket.on("end", () => socket.end());
}

interface TestCert {
  key: string;
  cert: string;
}

let certPromise: Promise<TestCert> | undefined;

/** A throwaway self-signed P-256 certificate for `localhost`, made in-process. */
function testCert(): Promise<TestCert> {
  return certPromise ??= (async () => {
    const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
    const now = Date.now();
    const cert = await X509CertificateGenerator.createSelfSigned({
      serialNumber: "01",
      name: "CN=localhost",
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
      keys,
      signingAlgorithm: algorithm,
      extensions: [new SubjectAlternativeNameExtension([{ type: "dns", value: "localhost" }])],
    });
    const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
    return { key: PemConverter.encode(pkcs8, "PRIVATE KEY"), cert: cert.toString("pem") };
  })();
}

type On = (
  this: net.Socket,
  event: string | symbol,
  listener: (...args: never[]) => void,
) => net.Socket;

interface HarnessOptions {
  /** The client side speaks TLS to a `node:tls` server, as in production. */
  tls?: boolean;
  /** Put a TCP relay between client and proxy whose `corrupt` flag flips a byte. */
  mitm?: boolean;
  /** Pause the proxy's client socket before forwarding (as a server might during dial). */
  pauseFirst?: boolean;
  /** Link the proxy's TLS client socket's reads to its TCP socket's (as the balancer does). */
  link?: boolean;
  forward?: ForwardOptions;
}

/**
 * client --(tcp or tls)--> [mitm] --> proxy server --forward()--> upstream server
 *
 * `client` and `upstreamPeer` are the test's ends; `proxyClient` and `proxyUpstream`
 * are the sockets handed to `forward()`.
 */
class Harness implements AsyncDisposable {
  readonly servers: net.Server[] = [];
  readonly sockets: net.Socket[] = [];
  client!: net.Socket;
  upstreamPeer!: net.Socket;
  proxyClient!: net.Socket;
  proxyUpstream!: net.Socket;
  result!: Promise<ForwardResult>;
  corrupt = false;
  /** Every listener forward() attached, recorded by wrapping `on` during the call. */
  #attached: [net.Socket, string | symbol, unknown][] = [];

  static async start(options: HarnessOptions = {}): Promise<Harness> {
    const h = new Harness();
    try {
      await h.#start(options);
    } catch (error) {
      await h[Symbol.asyncDispose]();
      throw error;
    }
    return h;
  }

  #track(socket: net.Socket): net.Socket {
    this.sockets.push(socket);
    socket.on("error", () => {});
    return socket;
  }

  async #start(options: HarnessOptions): Promise<void> {
    const upstreamServer = net.createServer({ allowHalfOpen: true });
    this.servers.push(upstreamServer);
    const upstreamPort = await listen(upstreamServer);

    const cert = options.tls ? await testCert() : undefined;
    const proxy = cert
      ? tls.createServer({ key: cert.key, cert: cert.cert, allowHalfOpen: true })
      : net.createServer({ allowHalfOpen: true });
    this.servers.push(proxy);
    const proxyPort = await listen(proxy);
    const accepted = once(proxy, cert ? "secureConnection" : "connection");

    let clientPort = proxyPort;
    if (options.mitm) {
      const relay = net.createServer((a) => {
        const b = this.#track(net.connect({ host: HOST, port: proxyPort }));
        this.#track(a);
        a.on("data", (chunk: Buffer) => {
          if (this.corrupt) {
            chunk = Buffer.from(chunk);
            chunk[chunk.length - 1]! ^= 0xff;
          }
          b.write(chunk);
        });
        b.on("data", (chunk: Buffer) => a.write(chunk));
        a.on("close", () => b.destroy());
        b.on("close", () => a.destroy());
      });
      this.servers.push(relay);
      clientPort = await listen(relay);
    }

    this.client = this.#track(
      cert
        ? tls.connect({
          host: HOST,
          port: clientPort,
          ca: cert.cert,
          servername: "localhost",
        })
        : net.connect({ host: HOST, port: clientPort, allowHalfOpen: true }),
    );
    const clientReady = once(this.client, cert ? "secureConnect" : "connect");
    const [proxyClient] = await accepted as [net.Socket];
    if (options.link) {
      assert.ok(linkTcpReads(proxyClient as tls.TLSSocket), "the runtime links reads");
    }
    this.proxyClient = this.#track(proxyClient);
    await clientReady;

    const upstreamAccepted = once(upstreamServer, "connection");
    this.proxyUpstream = this.#track(
      net.connect({ host: HOST, port: upstreamPort, allowHalfOpen: true, noDelay: true }),
    );
    await once(this.proxyUpstream, "connect");
    const [upstreamPeer] = await upstreamAccepted as [net.Socket];
    this.upstreamPeer = this.#track(upstreamPeer);

    if (options.pauseFirst) this.proxyClient.pause();
    const sockets = [this.proxyClient, this.proxyUpstream];
    for (const socket of sockets) {
      const on = socket.on as On;
      const attached = this.#attached;
      const spy: On = function (event, listener) {
        attached.push([socket, event, listener]);
        return on.call(this, event, listener);
      };
      (socket as unknown as { on: On }).on = spy;
    }
    try {
      this.result = forward(this.proxyClient, this.proxyUpstream, options.forward);
    } finally {
      for (const socket of sockets) delete (socket as { on?: unknown }).on;
    }
    assert.ok(this.#attached.length > 0, "forward() attached no listeners");
  }

  /** Awaits the result and checks the invariants every forward must keep. */
  async ended(): Promise<ForwardResult> {
    const result = await within(this.result, "forward() to resolve");
    for (const socket of [this.proxyClient, this.proxyUpstream]) {
      assert.ok(socket.destroyed, "forward() resolved with a socket not destroyed");
      assert.ok(socket.closed, "forward() resolved with a socket not closed");
    }
    for (const [socket, event, listener] of this.#attached) {
      assert.ok(
        !socket.listeners(event).includes(listener as () => void),
        `forward() left a "${String(event)}" listener attached`,
      );
    }
    assert.ok(result.durationMs >= 0);
    return result;
  }

  /** Sends `text` from the client and waits for the upstream's echo of it. */
  async roundTrip(text: string): Promise<void> {
    const reply = readBytes(this.client, text.length);
    await send(this.client, text);
    assert.equal((await within(reply, "an echo")).toString(), text);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(this.sockets.map(closed));
    if (this.result) await within(this.result, "forward() to resolve on teardown");
    await Promise.all(this.servers.map(closeServer));
  }
}

/** An in-memory duplex for tests that need no network. */
function memorySocket(): Duplex {
  return new Duplex({
    read() {},
    write(_chunk, _encoding, done) {
      done();
    },
  });
}

function codeError(message: string, fields: Record<string, unknown>): Error {
  return Object.assign(new Error(message), fields);
}

// ---------------------------------------------------------------------------------------
// Tests

Deno.test("forward() copies bytes exactly both ways and counts them", async () => {
  await using h = await Harness.start({ pauseFirst: true });
  echo(h.upstreamPeer);
  const every = Uint8Array.from({ length: 256 }, (_, i) => i);
  const reply = readToEnd(h.client);
  await send(h.client, every);
  await send(h.client, "hello\r\n\0");
  h.client.end(every);

  const received = await within(reply, "the echo");
  const expected = Buffer.concat([every, Buffer.from("hello\r\n\0"), every]);
  assert.deepEqual(received, expected);
  const result = await h.ended();
  assert.equal(result.reason, "client_closed");
  assert.equal(result.error, undefined);
  assert.equal(result.bytesFromClient, expected.length);
  assert.equal(result.bytesFromUpstream, expected.length);
});

Deno.test("forward() updates live stats while the connection runs", async () => {
  const stats: ForwardStats = { bytesFromClient: 10, bytesFromUpstream: 20 };
  await using h = await Harness.start({ forward: { stats } });
  echo(h.upstreamPeer);
  await h.roundTrip("abcd");
  assert.deepEqual(stats, { bytesFromClient: 14, bytesFromUpstream: 24 });
  await h.roundTrip("efghij");
  assert.deepEqual(stats, { bytesFromClient: 20, bytesFromUpstream: 30 });

  h.client.end();
  const result = await h.ended();
  assert.equal(result.bytesFromClient, 10, "the result counts this connection only");
  assert.equal(result.bytesFromUpstream, 10);
});

/**
 * 32 MiB each way with both readers stalled until forward() pauses the socket feeding
 * them (which proves backpressure reached the source): byte-exact, buffering bounded.
 */
async function boundedTransfer(options: HarnessOptions): Promise<void> {
  const TOTAL = 32 * 1024 * 1024;
  const CHUNK = 64 * 1024;
  const BOUND = 1024 * 1024;
  await using h = await Harness.start(options);
  const { client, upstreamPeer, proxyClient, proxyUpstream } = h;

  // Both readers start stalled; each resumes only once forward() has paused the
  // socket feeding it, which proves backpressure reached the source.
  client.pause();
  upstreamPeer.pause();
  let maxBuffered = 0;
  const spyPause = (src: net.Socket, dst: net.Socket): Promise<void> => {
    const original = src.pause;
    return new Promise((resolve) => {
      src.pause = function (this: net.Socket) {
        maxBuffered = Math.max(maxBuffered, dst.writableLength);
        resolve();
        return original.call(this);
      };
    });
  };
  const clientPaused = spyPause(proxyClient, proxyUpstream);
  const upstreamPaused = spyPause(proxyUpstream, proxyClient);

  const pump = async (socket: net.Socket): Promise<string> => {
    const hash = createHash("sha256");
    for (let sent = 0; sent < TOTAL; sent += CHUNK) {
      const chunk = crypto.getRandomValues(new Uint8Array(CHUNK));
      hash.update(chunk);
      if (!socket.write(chunk)) await once(socket, "drain");
    }
    socket.end();
    return hash.digest("hex");
  };
  const drain = async (socket: net.Socket, stalled: Promise<void>) => {
    await within(stalled, "forward() to pause the source");
    const hash = createHash("sha256");
    let length = 0;
    socket.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
    });
    socket.resume();
    await once(socket, "end");
    return { length, digest: hash.digest("hex") };
  };

  const [sentUp, sentDown, gotUp, gotDown] = await within(
    Promise.all([
      pump(client),
      pump(upstreamPeer),
      drain(upstreamPeer, clientPaused),
      drain(client, upstreamPaused),
    ]),
    "the transfer",
    60_000,
  );
  assert.deepEqual(gotUp, { length: TOTAL, digest: sentUp });
  assert.deepEqual(gotDown, { length: TOTAL, digest: sentDown });
  assert.ok(maxBuffered <= BOUND, `forward() buffered ${maxBuffered} bytes in a socket`);

  const result = await h.ended();
  assert.ok(["client_closed", "upstream_closed"].includes(result.reason), result.reason);
  assert.equal(result.bytesFromClient, TOTAL);
  assert.equal(result.bytesFromUpstream, TOTAL);
}

Deno.test("forward() keeps buffering bounded with slow readers on 32 MiB each way", async () => {
  await boundedTransfer({});
});

Deno.test("forward() pauses a linked TLS client: 32 MiB each way bounded, its FIN after the data", async () => {
  await boundedTransfer({ tls: true, link: true });
});

Deno.test("forward() pauses a source that can be paused, whatever maxBuffer, rather than cutting it off", async () => {
  // A plain TCP client under the runtime's 64 KiB high-water mark with maxBuffer 32 KiB:
  // it is paused at the mark, its upstream reads everything in the end.
  await using h = await Harness.start({ tls: false, forward: { maxBuffer: 32 * 1024 } });
  h.upstreamPeer.pause();
  const chunk = new Uint8Array(64 * 1024);
  // More than the kernel's socket buffers on loopback take, so the write buffer fills.
  for (let i = 0; i < 512; i++) h.client.write(chunk);
  h.client.end();
  let received = 0;
  h.upstreamPeer.on("data", (data: Uint8Array) => received += data.length);
  const ended = once(h.upstreamPeer, "end");
  h.upstreamPeer.resume();
  await ended;
  assert.equal(received, 512 * chunk.length);
});

Deno.test("forward() ends with buffer_overflow when a source that cannot be paused fills maxBuffer", async () => {
  // An unlinked TLS server socket keeps reading however paused: the cap is the guard.
  await using h = await Harness.start({ tls: true, forward: { maxBuffer: 1024 * 1024 } });
  h.upstreamPeer.pause();
  // More than the kernel's socket buffers on loopback take, so the write buffer grows.
  const chunk = new Uint8Array(64 * 1024);
  for (let i = 0; i < 1024; i++) h.client.write(chunk);
  const result = await h.ended();
  assert.equal(result.reason, "buffer_overflow");
  assert.ok(result.bytesFromClient < 64 * 1024 * 1024, `${result.bytesFromClient}`);
});

Deno.test("forward() propagates half-close", async (t) => {
  await t.step("client FIN first, then the upstream's reply still arrives", async () => {
    await using h = await Harness.start();
    const request = readToEnd(h.upstreamPeer);
    h.client.end("request");
    assert.equal((await within(request, "the request")).toString(), "request");

    const reply = readToEnd(h.client);
    h.upstreamPeer.end("response after FIN");
    assert.equal((await within(reply, "the reply")).toString(), "response after FIN");
    const result = await h.ended();
    assert.equal(result.reason, "client_closed");
    assert.equal(result.bytesFromClient, 7);
    assert.equal(result.bytesFromUpstream, 18);
  });

  await t.step("upstream FIN first, then the client's reply still arrives", async () => {
    await using h = await Harness.start();
    const greeting = readToEnd(h.client);
    h.upstreamPeer.end("greeting");
    assert.equal((await within(greeting, "the greeting")).toString(), "greeting");

    const reply = readToEnd(h.upstreamPeer);
    h.client.end("bye after FIN");
    assert.equal((await within(reply, "the reply")).toString(), "bye after FIN");
    const result = await h.ended();
    assert.equal(result.reason, "upstream_closed");
    assert.equal(result.bytesFromClient, 13);
    assert.equal(result.bytesFromUpstream, 8);
  });

  await t.step("over a node:tls server socket", async () => {
    await using h = await Harness.start({ tls: true });
    const request = readToEnd(h.upstreamPeer);
    h.client.end("tls request");
    assert.equal((await within(request, "the request")).toString(), "tls request");

    const reply = readToEnd(h.client);
    h.upstreamPeer.write("tls ");
    h.upstreamPeer.end("response after FIN");
    assert.equal((await within(reply, "the reply")).toString(), "tls response after FIN");
    const result = await h.ended();
    assert.equal(result.reason, "client_closed");
    assert.equal(result.bytesFromClient, 11);
    assert.equal(result.bytesFromUpstream, 22);
  });
});

Deno.test("forward() delivers a TLS client's FIN that arrives while the upstream is stalled", async () => {
  // Deno 2.9's node:tls loses a FIN that arrives while a server socket is paused, so
  // forward() must not pause the TLS side for backpressure (see its docs).
  await using h = await Harness.start({ tls: true });
  h.upstreamPeer.pause();
  const payload = crypto.getRandomValues(new Uint8Array(65536)).map((b) => b | 1);
  const big = new Uint8Array(4 * 1024 * 1024);
  for (let i = 0; i < big.length; i += payload.length) big.set(payload, i);
  const finArrived = once(h.proxyClient, "end");
  h.client.end(big);
  await within(finArrived, "the client's FIN at the proxy while the upstream is stalled");
  h.upstreamPeer.resume();
  const got = await within(readToEnd(h.upstreamPeer), "the request and its FIN");
  assert.equal(got.length, big.length);
  assert.deepEqual(new Uint8Array(got), big);
  h.upstreamPeer.end();
  const result = await h.ended();
  assert.equal(result.reason, "client_closed");
  assert.equal(result.bytesFromClient, big.length);
});

Deno.test("forward() reports upstream_reset and closes the client promptly", async () => {
  await using h = await Harness.start();
  const partial = readBytes(h.client, 7);
  h.upstreamPeer.write("partial");
  await within(partial, "the partial reply");
  h.upstreamPeer.once("data", () => h.upstreamPeer.resetAndDestroy());
  const clientClosed = peerClosed(h.client);
  h.client.write("more");

  const result = await h.ended();
  await within(clientClosed, "the client to be closed");
  assert.equal(result.reason, "upstream_reset");
  assert.equal((result.error as { code?: string }).code, "ECONNRESET");
  assert.equal(result.bytesFromUpstream, 7);
  assert.equal(result.upstreamEnded, false);
});

Deno.test("forward() reports an upstream reset before any byte with nothing received", async () => {
  await using h = await Harness.start();
  const clientClosed = peerClosed(h.client);
  h.upstreamPeer.resetAndDestroy();

  const result = await h.ended();
  await within(clientClosed, "the client to be closed");
  assert.equal(result.reason, "upstream_reset");
  assert.equal(result.bytesFromUpstream, 0);
  assert.equal(result.upstreamEnded, false);
});

Deno.test("forward() tells a reset that follows the upstream's FIN by upstreamEnded", async () => {
  await using h = await Harness.start();
  // The upstream answers and closes (FIN); the client keeps writing into the closed
  // connection, and the upstream's kernel answers those bytes with a reset.
  const reply = readToEnd(h.client);
  h.upstreamPeer.end("+OK\r\n");
  assert.equal((await within(reply, "the reply and FIN")).toString(), "+OK\r\n");
  const reset = new Promise((resolve) => {
    h.upstreamPeer.once("data", () => resolve(h.upstreamPeer.resetAndDestroy()));
  });
  h.client.write("PING\r\n");
  await within(reset, "the upstream's reset");
  await within(closed(h.upstreamPeer), "the upstream to close");
  // The next write toward the reset connection fails (EPIPE or ECONNRESET).
  h.client.write("PING\r\n");

  const result = await h.ended();
  assert.equal(result.reason, "upstream_reset");
  assert.equal(result.bytesFromUpstream, 5);
  assert.equal(result.upstreamEnded, true);
});

Deno.test("forward() reports client_reset and closes the upstream promptly", async () => {
  await using h = await Harness.start();
  echo(h.upstreamPeer);
  await h.roundTrip("ping");
  const upstreamClosed = peerClosed(h.upstreamPeer);
  h.client.resetAndDestroy();

  const result = await h.ended();
  await within(upstreamClosed, "the upstream to be closed");
  assert.equal(result.reason, "client_reset");
  assert.equal(result.bytesFromClient, 4);
});

Deno.test("forward() reports tls_error for a corrupted TLS record from the client", async () => {
  await using h = await Harness.start({ tls: true, mitm: true });
  echo(h.upstreamPeer);
  await h.roundTrip("before corruption");
  const upstreamClosed = peerClosed(h.upstreamPeer);
  h.corrupt = true;
  h.client.write("tampered");

  const result = await h.ended();
  await within(upstreamClosed, "the upstream to be closed");
  assert.equal(result.reason, "tls_error");
  assert.match(String((result.error as { code?: string }).code), /^ERR_SSL_/);
  assert.equal(result.bytesFromClient, 17, "the tampered record was not forwarded");
});

Deno.test("forward() ends idle connections on the injected clock", async (t) => {
  await t.step("exactly at idleTimeout when no byte ever moves", async () => {
    const clock = new FakeClock();
    await using h = await Harness.start({ forward: { clock, idleTimeout: 1000 } });
    clock.advance(999);
    assert.ok(!h.proxyClient.destroyed);
    clock.advance(1);
    assert.ok(h.proxyClient.destroyed && h.proxyUpstream.destroyed);
    const result = await h.ended();
    assert.equal(result.reason, "idle_timeout");
    assert.equal(result.durationMs, 1000);
    assert.equal(clock.pending, 0, "the idle timer was left armed");
  });

  await t.step("not while bytes flow, and within 1.25 x idleTimeout of the last", async () => {
    const clock = new FakeClock();
    await using h = await Harness.start({ forward: { clock, idleTimeout: 1000 } });
    echo(h.upstreamPeer);
    for (let i = 0; i < 8; i++) {
      await h.roundTrip(`tick ${i}`);
      clock.advance(600);
      assert.ok(!h.proxyClient.destroyed, `timed out at ${clock.now()} ms while active`);
    }
    await h.roundTrip("last");
    clock.advance(999);
    assert.ok(!h.proxyClient.destroyed, "timed out before idleTimeout since the last byte");
    clock.advance(251);
    assert.ok(h.proxyClient.destroyed, "still open 1.25 x idleTimeout after the last byte");
    const result = await h.ended();
    assert.equal(result.reason, "idle_timeout");
    assert.equal(result.bytesFromClient, 8 * 6 + 4);
    assert.equal(clock.pending, 0);
  });

  await t.step("not when the connection ends first", async () => {
    const clock = new FakeClock();
    await using h = await Harness.start({ forward: { clock, idleTimeout: 1000 } });
    echo(h.upstreamPeer);
    h.client.end();
    assert.equal((await h.ended()).reason, "client_closed");
    assert.equal(clock.pending, 0, "the idle timer was left armed");
  });
});

Deno.test("forward() ends with aborted when the signal aborts", async (t) => {
  await t.step("while running", async () => {
    const controller = new AbortController();
    await using h = await Harness.start({ forward: { signal: controller.signal } });
    echo(h.upstreamPeer);
    await h.roundTrip("ping");
    const clientClosed = peerClosed(h.client);
    const upstreamClosed = peerClosed(h.upstreamPeer);
    const reason = new Error("draining");
    controller.abort(reason);

    const result = await h.ended();
    await within(Promise.all([clientClosed, upstreamClosed]), "both peers to be closed");
    assert.equal(result.reason, "aborted");
    assert.equal(result.error, reason);
    assert.equal(result.bytesFromClient, 4);
  });

  await t.step("before it starts", async () => {
    await using h = await Harness.start({ forward: { signal: AbortSignal.abort() } });
    const result = await h.ended();
    assert.equal(result.reason, "aborted");
    assert.equal(result.bytesFromClient, 0);
  });
});

Deno.test("forward() classifies socket errors and keeps the first cause", async (t) => {
  const cases: {
    name: string;
    client?: Error;
    upstream?: Error;
    reason: ForwardResult["reason"];
  }[] = [
    {
      name: "client ECONNRESET",
      client: codeError("reset", { code: "ECONNRESET" }),
      reason: "client_reset",
    },
    { name: "client EPIPE", client: codeError("pipe", { code: "EPIPE" }), reason: "client_reset" },
    {
      name: "client ETIMEDOUT",
      client: codeError("t/o", { code: "ETIMEDOUT" }),
      reason: "client_timeout",
    },
    {
      name: "client ERR_SSL_*",
      client: codeError("bad mac", { code: "ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC" }),
      reason: "tls_error",
    },
    {
      name: "client ERR_TLS_*",
      client: codeError("renegotiation", { code: "ERR_TLS_SESSION_ATTACK" }),
      reason: "tls_error",
    },
    {
      name: "client OpenSSL error without a code",
      client: codeError("decrypt", { library: "SSL routines", reason: "decryption failed" }),
      reason: "tls_error",
    },
    { name: "client error without a code", client: new Error("odd"), reason: "client_reset" },
    {
      name: "upstream ECONNRESET",
      upstream: codeError("reset", { code: "ECONNRESET" }),
      reason: "upstream_reset",
    },
    {
      name: "upstream ETIMEDOUT",
      upstream: codeError("t/o", { code: "ETIMEDOUT" }),
      reason: "upstream_timeout",
    },
    {
      name: "upstream ERR_SSL_* is not a client TLS error",
      upstream: codeError("ssl", { code: "ERR_SSL_WRONG_VERSION_NUMBER" }),
      reason: "upstream_reset",
    },
    {
      name: "client timeout first, upstream reset during teardown",
      client: codeError("t/o", { code: "ETIMEDOUT" }),
      upstream: codeError("reset", { code: "ECONNRESET" }),
      reason: "client_timeout",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const client = memorySocket();
      const upstream = memorySocket();
      const done = forward(client, upstream);
      if (c.client) client.destroy(c.client);
      if (c.upstream) upstream.destroy(c.upstream);
      const result = await within(done, "forward() to resolve");
      assert.equal(result.reason, c.reason);
      assert.equal(result.error, c.client ?? c.upstream);
      assert.ok(client.destroyed && upstream.destroyed);
      for (const e of EVENTS) {
        assert.equal(
          client.listenerCount(e) + upstream.listenerCount(e),
          0,
          `"${e}" listener left`,
        );
      }
    });
  }
});

Deno.test("forward() reports a socket destroyed without an error as reset", async () => {
  const client = memorySocket();
  const upstream = memorySocket();
  const done = forward(client, upstream);
  upstream.destroy();
  const result = await within(done, "forward() to resolve");
  assert.equal(result.reason, "upstream_reset");
  assert.equal(result.error, undefined);
  assert.ok(client.destroyed);
});

Deno.test("forward() handles a socket already closed when called", async () => {
  const client = memorySocket();
  client.destroy();
  await once(client, "close");
  const upstream = memorySocket();
  const result = await within(forward(client, upstream), "forward() to resolve");
  assert.equal(result.reason, "client_reset");
  assert.ok(upstream.destroyed);
});

Deno.test("forward() rejects a non-positive idleTimeout synchronously", async (t) => {
  for (const idleTimeout of [0, -1, NaN]) {
    await t.step(String(idleTimeout), () => {
      const client: ForwardSocket = memorySocket();
      const upstream: ForwardSocket = memorySocket();
      assert.throws(() => forward(client, upstream, { idleTimeout }), RangeError);
      assert.ok(!client.destroyed && !upstream.destroyed, "sockets were touched");
      client.destroy();
      upstream.destroy();
    });
  }
});

Deno.test("forward() throttles each direction to its rate, byte-exact, and never drops", async () => {
  const limiter = new BandwidthLimiter();
  const rate = 1024 * 1024; // 1 MiB/s each way
  await using h = await Harness.start({ forward: { throttle: limiter.throttles("app", rate) } });
  echo(h.upstreamPeer);
  const size = 1536 * 1024;
  const payload = new Uint8Array(size);
  crypto.getRandomValues(payload.subarray(0, 65536));
  for (let i = 65536; i < size; i += 65536) payload.copyWithin(i, 0, 65536);
  payload[size - 1] = 7;
  const started = performance.now();
  const reply = readBytes(h.client, size);
  await send(h.client, payload);
  const received = await within(reply, "the echo");
  const seconds = (performance.now() - started) / 1000;
  assert.deepEqual(
    createHash("sha256").update(received).digest("hex"),
    createHash("sha256").update(payload).digest("hex"),
  );
  // 1.5 MiB at 1 MiB/s, less the 50 ms burst: 1.45 s, read by read.
  assert.ok(seconds >= 1.3 && seconds <= 2, `took ${seconds.toFixed(2)} s`);
  h.client.end();
  const result = await h.ended();
  assert.equal(result.reason, "client_closed");
  assert.equal(result.bytesFromClient, size);
  assert.equal(result.bytesFromUpstream, size);
});

Deno.test("forward() pauses a throttled side until its wait is over, whatever drains meanwhile", async (t) => {
  const clock = new FakeClock();
  const waits: number[] = [];
  const answers: (number | Promise<number>)[] = [];
  const throttle = {
    take(bytes: number) {
      waits.push(bytes);
      return answers.shift() ?? 0;
    },
  };
  const client = memorySocket();
  let holdNext = false;
  let flush = () => {};
  const upstream = new Duplex({
    read() {},
    write(_chunk, _encoding, done) {
      if (!holdNext) return done();
      holdNext = false; // held back until flush(): see the drain step
      flush = done;
    },
  });
  const controller = new AbortController();
  const done = forward(client, upstream, {
    clock,
    signal: controller.signal,
    throttle: { fromClient: throttle },
  });

  await t.step("a wait pauses the side until it is over", () => {
    answers.push(100);
    client.emit("data", new Uint8Array(10));
    assert.deepEqual(waits, [10]);
    assert.ok(client.isPaused());
    clock.advance(99);
    assert.ok(client.isPaused());
    clock.advance(1);
    assert.ok(!client.isPaused());
  });

  await t.step("reads during the pause extend it", () => {
    answers.push(50, 80);
    client.emit("data", new Uint8Array(1));
    client.emit("data", new Uint8Array(1)); // already on its way when paused
    clock.advance(50);
    assert.ok(client.isPaused(), "held until the longer wait is over");
    clock.advance(30);
    assert.ok(!client.isPaused());
  });

  await t.step("a promised wait holds the side until known, then for it", async () => {
    const { promise, resolve } = Promise.withResolvers<number>();
    answers.push(promise);
    client.emit("data", new Uint8Array(1));
    clock.advance(1000);
    assert.ok(client.isPaused());
    resolve(20);
    await promise;
    await Promise.resolve();
    clock.advance(19);
    assert.ok(client.isPaused());
    clock.advance(1);
    assert.ok(!client.isPaused());
  });

  await t.step("a drain during the wait does not resume the side", async () => {
    answers.push(10);
    holdNext = true;
    client.emit("data", new Uint8Array(64 * 1024)); // past the high-water mark
    const drained = once(upstream, "drain");
    flush();
    await drained;
    assert.ok(client.isPaused());
    clock.advance(10);
    assert.ok(!client.isPaused());
  });

  await t.step("the other direction is not throttled", () => {
    upstream.emit("data", new Uint8Array(1000));
    assert.ok(!upstream.isPaused());
  });

  controller.abort();
  assert.equal((await done).reason, "aborted");
  assert.equal(clock.pending, 0, "no timer left behind");
});

Deno.test("forward() pauses the client once 256 KiB wait for a plain upstream, a TLS one at its high-water mark", async (t) => {
  /** A sink that holds every write until flush(), then writes on: its writableLength is what waits. */
  const held = (encrypted: boolean) => {
    let pending: (() => void) | undefined;
    let flowing = false;
    const socket = Object.assign(
      new Duplex({
        read() {},
        write(_chunk, _encoding, done) {
          if (flowing) done();
          else pending = done;
        },
      }),
      { encrypted },
    );
    const flush = () => {
      flowing = true;
      pending?.();
    };
    return { socket, flush };
  };
  const controller = new AbortController();
  const forwards: Promise<{ reason: string }>[] = [];
  const start = (upstream: Duplex, maxBuffer?: number) => {
    const client = memorySocket();
    forwards.push(forward(client, upstream, { signal: controller.signal, maxBuffer }));
    return client;
  };
  const KiB = 1024;

  await t.step("plain: past the high-water mark, reading goes on up to 256 KiB", async () => {
    const upstream = held(false);
    const client = start(upstream.socket);
    for (let i = 0; i < 3; i++) client.emit("data", new Uint8Array(64 * KiB));
    assert.equal(upstream.socket.writableLength, 192 * KiB);
    assert.ok(!client.isPaused());
    client.emit("data", new Uint8Array(64 * KiB));
    assert.ok(client.isPaused(), "paused at 256 KiB waiting");
    const drained = once(upstream.socket, "drain");
    upstream.flush();
    await drained;
    assert.ok(!client.isPaused(), "resumed once it is written");
  });

  await t.step("plain: a quarter of maxBuffer when that is less", () => {
    const upstream = held(false);
    const client = start(upstream.socket, 512 * KiB);
    client.emit("data", new Uint8Array(96 * KiB));
    assert.ok(!client.isPaused());
    client.emit("data", new Uint8Array(32 * KiB));
    assert.ok(client.isPaused(), "paused at 128 KiB waiting");
  });

  await t.step("TLS: paused at the socket's high-water mark", () => {
    const upstream = held(true);
    const client = start(upstream.socket);
    client.emit("data", new Uint8Array(upstream.socket.writableHighWaterMark));
    assert.ok(client.isPaused());
  });

  controller.abort();
  for (const result of await Promise.all(forwards)) assert.equal(result.reason, "aborted");
});
