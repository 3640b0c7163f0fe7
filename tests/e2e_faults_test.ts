/**
 * Fault tests: what breaks around the balancer (upstream processes killed, upstreams
 * that hang, flap or all go away, clients that vanish) and how it keeps serving. Real
 * sockets and processes on 127.0.0.1; every wait is on an event, guarded by a
 * generous timeout that only fails a broken implementation.
 */
import assert from "node:assert/strict";
import { connect as netConnect, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { EjectionEvent, HealthChangeEvent } from "../lib/upstream/health_event.ts";
import type { HealthProbe } from "../lib/upstream/health_probe.ts";
import type { OutlierDetector } from "../lib/upstream/outlier_detector.ts";
import type { ConnectionRecord, DenyRecord } from "../lib/server/records.ts";
import {
  banner,
  connectClient,
  echo,
  nextEvent,
  readAll,
  readBytes,
  startBalancer,
  type TestBalancer,
  TestUpstream,
  text,
} from "./_harness.ts";
import { lines } from "../testing/lines.ts";

/** How long any single awaited event may take before the test fails. */
const GUARD_MS = 10_000;

/** Resolves with `promise`, or rejects once `ms` passed: a failure guard, never a wait. */
async function guard<T>(promise: Promise<T>, what: string, ms = GUARD_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A config with group "echo" on the shared listener and client alice. */
function config(upstreams: string[], health: string, server = "", outlier = ""): string {
  return `[server]
listen = "127.0.0.1:0"
${server}

[health]
${health}

[outlier]
${outlier}

[groups.echo]
upstreams = ${JSON.stringify(upstreams)}

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`;
}

/** The next health change of `address`. */
function nextChange(probe: HealthProbe, address: string): Promise<HealthChangeEvent["change"]> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      const { change } = event as HealthChangeEvent;
      if (change.address !== address) return;
      probe.removeEventListener("change", listener);
      resolve(change);
    };
    probe.addEventListener("change", listener);
  });
}

/** The next ejection (or return) of `address`. */
function nextEjection(
  detector: OutlierDetector,
  address: string,
): Promise<EjectionEvent["change"]> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      const { change } = event as EjectionEvent;
      if (change.address !== address) return;
      detector.removeEventListener("ejection", listener);
      resolve(change);
    };
    detector.addEventListener("ejection", listener);
  });
}

/** Reads up to and including the first newline. */
async function readLine(socket: Socket): Promise<string> {
  let line = "";
  while (!line.endsWith("\n")) {
    const chunk = await readBytes(socket, 1);
    if (chunk.length === 0) break;
    line += text(chunk);
    socket.resume();
  }
  return line;
}

/** Opens a client as alice and returns it with the banner of the upstream it reached. */
async function greeted(lb: TestBalancer): Promise<{ socket: TLSSocket; name: string }> {
  const socket = await connectClient(lb.port(), lb.pki.alice);
  const name = (await guard(readLine(socket), "banner")).trim();
  return { socket, name };
}

/** Closes a forwarded client and waits for its audit record. */
async function hangUp(lb: TestBalancer, socket: TLSSocket): Promise<ConnectionRecord> {
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  socket.end();
  socket.resume();
  return await guard(ended, "end of a closed connection");
}

/** Asserts that no connection, limiter slot or pool count is left. */
function assertIdle(lb: TestBalancer, upstreams: string[]): void {
  assert.equal(lb.balancer.counters.active, 0, "counters.active");
  assert.deepEqual([...lb.balancer.limiter.snapshot()], [], "limiter slots");
  const pool = lb.balancer.pool("echo")!;
  for (const address of upstreams) assert.equal(pool.active(address), 0, `pool.active(${address})`);
}

/** Resolves once every connection the upstream holds now has closed. */
function allClosed(upstream: TestUpstream): Promise<unknown> {
  return Promise.all(
    [...upstream.sockets].map((socket) =>
      socket.closed ? undefined : new Promise((resolve) => socket.once("close", resolve))
    ),
  );
}

/** A `deno eval` child process that talks to the test over stdout lines. */
class Child implements AsyncDisposable {
  #process: Deno.ChildProcess;
  #lines: AsyncGenerator<string>;
  #stderr: Promise<string>;

  constructor(code: string, env: Record<string, string> = {}) {
    this.#process = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#lines = lines(this.#process.stdout);
    this.#stderr = new Response(this.#process.stderr).text();
  }

  /** The next line the child prints. */
  async line(): Promise<string> {
    const next = await guard(this.#lines.next(), "line from the child process");
    if (next.done) throw new Error(`Child process exited early: ${await this.#stderr}`);
    return next.value;
  }

  /** Sends SIGKILL: the kernel closes its sockets (RST where bytes were left unread). */
  kill(): void {
    this.#process.kill("SIGKILL");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#process.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#process.status;
    for await (const _ of this.#lines) { /* drain until the pipe closes */ }
    await this.#stderr;
  }
}

/**
 * An echo upstream in its own process: greets with `child\n`, echoes, and stops
 * reading (without closing) once it has echoed `STALL_AT` bytes of a connection,
 * printing `stalled`, so the test can kill it with bytes in flight.
 */
const CHILD_UPSTREAM = `
const stallAt = Number(Deno.env.get("STALL_AT"));
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(listener.addr.port);
async function writeAll(conn, bytes) {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}
for await (const conn of listener) {
  (async () => {
    await writeAll(conn, new TextEncoder().encode("child\\n"));
    const buffer = new Uint8Array(16384);
    let total = 0;
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return conn.close();
      await writeAll(conn, buffer.subarray(0, n));
      total += n;
      if (total >= stallAt) return console.log("stalled");
    }
  })().catch(() => {});
}
`;

Deno.test("Balancer closes the client of an upstream process killed mid-transfer and ejects it", async () => {
  await using child = new Child(CHILD_UPSTREAM, { STALL_AT: String(64 * 1024) });
  const childAddress = `127.0.0.1:${await child.line()}`;
  await using other = await TestUpstream.start(banner("other"));
  await using lb = await startBalancer(
    config([childAddress, other.address], `interval = "1h"`, "", "consecutive_failures = 1"),
  );
  const probe = lb.balancer.probe("echo")!;
  const outlier = lb.balancer.outlier("echo")!;
  assert.ok(probe.isHealthy(childAddress));

  // One client on each upstream (least connections with two open).
  const first = await greeted(lb);
  const second = await greeted(lb);
  const byName = new Map([first, second].map((c) => [c.name, c.socket]));
  assert.deepEqual([...byName.keys()].sort(), ["child", "other"]);
  const victim = byName.get("child")!;
  const bystander = byName.get("other")!;

  // The victim streams until its connection dies; the child stalls after 64 KiB.
  const victimClosed = readAll(victim);
  let sent = 0;
  const chunk = new Uint8Array(16 * 1024).fill(0x61);
  const pump = (): void => {
    while (!victim.destroyed && victim.writable) {
      sent += chunk.length;
      if (!victim.write(chunk)) return void victim.once("drain", pump);
    }
  };
  victim.on("error", () => {});
  const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
  pump();
  assert.equal(await child.line(), "stalled");

  const killedAt = performance.now();
  child.kill();
  await guard(victimClosed, "close of the victim client", 2_000);
  const closedAfterMs = performance.now() - killedAt;

  const record = await guard(ended, "end of the victim connection");
  assert.equal(record.upstream, childAddress);
  assert.equal(record.reason, "upstream_reset");
  assert.ok(record.bytesFromClient >= 64 * 1024 && record.bytesFromClient <= sent);
  assert.ok(closedAfterMs < 2_000, `client closed ${closedAfterMs} ms after the kill`);
  // The reset came after the child had answered: not held against it.
  assert.equal(outlier.isEjected(childAddress), false);
  assert.equal(outlier.snapshot()[0]!.resetFailures, 0);

  // The bystander keeps flowing, byte-exact, and new clients all go to the survivor.
  const payload = crypto.getRandomValues(new Uint8Array(32 * 1024));
  bystander.write(payload);
  assert.deepEqual(await guard(readBytes(bystander, payload.length), "bystander echo"), payload);
  bystander.resume();
  // The next client is dialled to the child first (fewer connections): refused, the
  // dial is retried on the survivor, and the refusal ejects the child.
  const ejected = nextEjection(outlier, childAddress);
  for (let i = 0; i < 3; i++) {
    const { socket, name } = await greeted(lb);
    assert.equal(name, "other");
    await hangUp(lb, socket);
  }
  const change = await guard(ejected, "ejection of the killed upstream");
  assert.deepEqual([change.ejected, change.reason], [true, "dial_refused"]);
  assert.equal(probe.isHealthy(childAddress), true, "the probe (every hour) did not run");
  const status = lb.balancer.status().groups[0]!.upstreams[0]!;
  assert.equal(status.healthy, false);
  assert.equal(status.ejection?.reason, "dial_refused");
  await hangUp(lb, bystander);
  assertIdle(lb, [childAddress, other.address]);
});

Deno.test("Balancer takes out a blackholed upstream by probe timeout", async () => {
  // Answers PING with +PONG until blackholed; then accepts and reads, never answers.
  let blackholed = false;
  const pong = (name: string) => (socket: Socket) => {
    socket.once("data", (first: Uint8Array) => {
      if (text(first).startsWith("PING")) {
        if (!blackholed || name === "b") socket.end("+PONG\r\n");
        return;
      }
      socket.write(`${name}\n`);
      socket.write(first);
      echo(socket);
    });
  };
  await using a = await TestUpstream.start(pong("a"));
  await using b = await TestUpstream.start(pong("b"));
  await using lb = await startBalancer(config(
    [a.address, b.address],
    `interval = "50ms"
timeout = "200ms"
send = "PING\\r\\n"
expect = "+PONG"`,
  ));
  const probe = lb.balancer.probe("echo")!;
  assert.ok(probe.isHealthy(a.address) && probe.isHealthy(b.address));

  const down = nextChange(probe, a.address);
  blackholed = true;
  const change = await guard(down, "probe timeout of the blackholed upstream");
  assert.deepEqual([change.healthy, change.reason], [false, "probe_timeout"]);
  const last = probe.snapshot().find((t) => t.address === a.address)!.lastResult!;
  assert.equal(last.reason, "probe_timeout");
  assert.ok(last.latencyMs >= 190, `timed out after ${last.latencyMs} ms`);

  for (let i = 0; i < 3; i++) {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("?");
    assert.equal(text(await guard(readBytes(socket, 3), "reply")), "b\n?");
    await hangUp(lb, socket);
  }
  assertIdle(lb, [a.address, b.address]);
});

/**
 * Fills the accept queue of a listener that never accepts, so that the next connect
 * to it hangs (Linux drops the SYN of a full queue; the client retries for seconds).
 * Resolves once a connect has been seen hanging for `hangMs`.
 */
async function fillBacklog(port: number, hangMs: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  for (let batch = 0; batch < 64; batch++) {
    const opened = Array.from({ length: 64 }, () => {
      const socket = netConnect({ host: "127.0.0.1", port });
      socket.on("error", () => {});
      sockets.push(socket);
      return new Promise<boolean>((resolve) => socket.once("connect", () => resolve(true)));
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = new Promise<boolean>((resolve) =>
      timer = setTimeout(() => resolve(false), hangMs)
    );
    const all = await Promise.race([Promise.all(opened).then(() => true), hung]);
    clearTimeout(timer);
    if (!all) return sockets;
  }
  throw new Error("The accept queue never filled: connects to it do not hang here");
}

Deno.test("Balancer times out a connect to an upstream with a full backlog and uses the next", async () => {
  // A listener that never accepts. Its first probe connects fine (the queue has room).
  using stuck = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const stuckAddress = `127.0.0.1:${stuck.addr.port}`;
  await using b = await TestUpstream.start(banner("b"));
  await using lb = await startBalancer(
    config(
      [stuckAddress, b.address],
      `interval = "1h"`,
      `connect_timeout = "300ms"`,
      "consecutive_failures = 1",
    ),
  );
  const probe = lb.balancer.probe("echo")!;
  const outlier = lb.balancer.outlier("echo")!;
  assert.ok(probe.isHealthy(stuckAddress));
  const fillers = await fillBacklog(stuck.addr.port, 300);
  try {
    // The pool tries the stuck upstream first (ties start at the first upstream).
    const ejected = nextEjection(outlier, stuckAddress);
    const { socket, name } = await greeted(lb);
    assert.equal(name, "b", "served by the next upstream after the connect timeout");
    const change = await guard(ejected, "ejection of the stuck upstream");
    assert.deepEqual([change.ejected, change.reason], [true, "dial_timeout"]);
    await hangUp(lb, socket);

    // Now out of the pool: the next client goes straight to b.
    const again = await greeted(lb);
    assert.equal(again.name, "b");
    await hangUp(lb, again.socket);
    assertIdle(lb, [stuckAddress, b.address]);
  } finally {
    for (const socket of fillers) socket.destroy();
  }
});

/** Answers health probes from a script the test feeds, one reply per probe. */
class ScriptedHealth {
  #replies: boolean[] = [];
  #waiting: ((healthy: boolean) => void) | undefined;
  #idle = Promise.withResolvers<void>();

  /** Queues probe outcomes: `true` answers `+PONG`, `false` a wrong reply. */
  push(...replies: boolean[]): void {
    this.#replies.push(...replies);
    this.#idle = Promise.withResolvers<void>();
    this.#serve();
  }

  /**
   * Resolves once every queued outcome was consumed and the next probe is waiting: the
   * probe starts a new check only after recording the previous one, so all are applied.
   */
  applied(): Promise<void> {
    return guard(this.#idle.promise, "next health probe");
  }

  /** The reply to the next probe, when the test has queued one. */
  next(): Promise<boolean> {
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#waiting = resolve;
    this.#serve();
    return promise;
  }

  #serve(): void {
    if (this.#waiting === undefined) return;
    const reply = this.#replies.shift();
    if (reply === undefined) return this.#idle.resolve();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting(reply);
  }
}

Deno.test("Balancer with rise 2 and fall 2 keeps a flapping upstream from taking traffic", async () => {
  const script = new ScriptedHealth();
  const clients = new Map<string, number>();
  const upstream = (name: string, replies?: ScriptedHealth) => (socket: Socket) => {
    socket.once("data", async (first: Uint8Array) => {
      if (text(first).startsWith("PING")) {
        const healthy = replies === undefined ? true : await replies.next();
        if (!socket.destroyed) socket.end(healthy ? "+PONG\r\n" : "-ERR flapping\r\n");
        return;
      }
      clients.set(name, (clients.get(name) ?? 0) + 1);
      socket.write(`${name}\n`);
      socket.write(first);
      echo(socket);
    });
  };
  await using a = await TestUpstream.start(upstream("a", script));
  await using b = await TestUpstream.start(upstream("b"));
  script.push(true); // first round: healthy
  await using lb = await startBalancer(config(
    [a.address, b.address],
    `interval = "20ms"
timeout = "5s"
rise = 2
fall = 2
send = "PING\\r\\n"
expect = "+PONG"`,
  ));
  const probe = lb.balancer.probe("echo")!;
  const changes: string[] = [];
  probe.addEventListener("change", (event) => {
    const { address, healthy, reason } = (event as HealthChangeEvent).change;
    if (address === a.address) changes.push(`${healthy ? "up" : "down"} ${reason}`);
  });
  /** Which upstreams `n` concurrent clients reach. */
  const spread = async (n: number): Promise<string[]> => {
    const sockets = await Promise.all(
      Array.from({ length: n }, () => connectClient(lb.port(), lb.pki.alice)),
    );
    const names = await Promise.all(sockets.map(async (socket) => {
      socket.write("x");
      return text(await guard(readBytes(socket, 3), "reply")).trim().slice(0, 1);
    }));
    for (const socket of sockets) await hangUp(lb, socket);
    return names.sort();
  };
  await script.applied();
  assert.ok(probe.isHealthy(a.address));

  // Isolated failures (never two in a row) do not take a healthy upstream out.
  script.push(false, true, false, true, false);
  await script.applied();
  assert.deepEqual(changes, []);
  assert.deepEqual(await spread(2), ["a", "b"]);

  // Two failures in a row do (traffic to it just now reset the streak: a successful
  // dial counts as a success).
  script.push(false, false);
  await script.applied();
  assert.deepEqual(changes, ["down probe_bad_reply"]);

  // Flapping (never two successes in a row) does not bring it back: no traffic.
  script.push(true, false, true, false, true, false);
  await script.applied();
  assert.deepEqual(changes, ["down probe_bad_reply"]);
  assert.deepEqual(await spread(4), ["b", "b", "b", "b"]);
  assert.equal(clients.get("a"), 1, "a took no client while flapping");

  // Two successes in a row do.
  script.push(true, true);
  await script.applied();
  assert.deepEqual(changes, ["down probe_bad_reply", "up probe_ok"]);
  assert.deepEqual(await spread(2), ["a", "b"]);
  assertIdle(lb, [a.address, b.address]);
});

Deno.test("Balancer refuses clients cleanly while every upstream is down, and recovers", async () => {
  await using a = await TestUpstream.start(banner("a"));
  await using b = await TestUpstream.start(banner("b"));
  await using lb = await startBalancer(config(
    [a.address, b.address],
    `interval = "50ms"
timeout = "500ms"`,
  ));
  const probe = lb.balancer.probe("echo")!;
  const [aAddress, bAddress, aPort] = [a.address, b.address, a.port];
  const down = Promise.all([nextChange(probe, aAddress), nextChange(probe, bAddress)]);
  await Promise.all([a.stop(), b.stop()]);
  for (const change of await guard(down, "both upstreams down")) {
    assert.deepEqual([change.healthy, change.reason], [false, "probe_refused"]);
  }

  for (let i = 0; i < 3; i++) {
    const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("anyone?");
    const [record, { data, error }] = await guard(
      Promise.all([denied, readAll(socket)]),
      "refusal",
    );
    assert.equal(record.reason, "no_healthy_upstream");
    assert.equal(record.client, "alice");
    assert.equal(data.length, 0, "a refused client receives nothing");
    assert.equal(error, undefined, "closed with close_notify and FIN, not reset");
  }
  assert.equal(lb.balancer.counters.denied.get("no_healthy_upstream"), 3);
  assertIdle(lb, [aAddress, bAddress]);

  // One comes back: the next probe sees it and traffic resumes, all to it.
  const up = nextChange(probe, aAddress);
  await a.listen(aPort);
  assert.deepEqual((await guard(up, "recovery")).healthy, true);
  for (let i = 0; i < 3; i++) {
    const { socket, name } = await greeted(lb);
    assert.equal(name, "a");
    await hangUp(lb, socket);
  }
  assert.equal(lb.balancer.counters.accepted, 3);
  assertIdle(lb, [aAddress, bAddress]);
});

/**
 * An mTLS client in its own process (Deno's native TLS, which reads only when asked):
 * connects, sends `flood`, reads one chunk of the reply and prints `reading`, then
 * reads nothing more, so the rest of the flood waits unread in its socket buffer.
 */
const CHILD_CLIENT = `
const conn = await Deno.connectTls({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT")),
  caCerts: [Deno.env.get("CA")],
  cert: Deno.env.get("CERT"),
  key: Deno.env.get("KEY"),
});
await conn.handshake();
await conn.write(new TextEncoder().encode("flood"));
// Reads a part of the flood, so that more of it is on its way when the process is killed:
// the kernel resets a socket closed with unread bytes.
const buffer = new Uint8Array(64 * 1024);
let received = 0;
while (received < 256 * 1024) {
  const n = await conn.read(buffer);
  if (n === null) break;
  received += n;
}
console.log(received < 256 * 1024 ? "closed" : "reading");
setInterval(() => {}, 60_000); // stay alive until killed
`;

Deno.test("Balancer releases every count when a client vanishes without FIN", async (t) => {
  // Answers "flood" with 4 MiB, more than the client will read.
  await using upstream = await TestUpstream.start((socket) => {
    echo(socket);
    socket.once("data", (first: Uint8Array) => {
      if (text(first) === "flood") socket.write(new Uint8Array(4 * 1024 * 1024).fill(0x66));
    });
  });
  await using lb = await startBalancer(
    config([upstream.address], `interval = "1h"`, `idle_timeout = "300ms"`),
  );

  await t.step(
    "a client process killed with unread bytes ends its connection and releases its counts",
    async () => {
      await using child = new Child(CHILD_CLIENT, {
        PORT: String(lb.port()),
        CA: lb.pki.ca.certPem,
        CERT: lb.pki.alice.certPem,
        KEY: lb.pki.alice.keyPem,
      });
      assert.equal(await child.line(), "reading");
      assert.equal(lb.balancer.counters.active, 1);
      assert.equal(lb.balancer.limiter.active("alice"), 1);
      const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
      child.kill();
      const record = await guard(ended, "end of the vanished client");
      // The kernel resets the socket; Deno 2.9.6's node:tls reports a peer's reset either as
      // an error or, when it comes while nothing is being written, as an end of stream.
      assert.ok(
        record.reason === "client_reset" || record.reason === "client_closed",
        `reason ${record.reason}`,
      );
      assert.equal(record.bytesFromClient, 5);
      assertIdle(lb, [upstream.address]);
      await guard(allClosed(upstream), "close of the upstream side");
    },
  );

  await t.step("a client that goes silent is closed at idle_timeout", async () => {
    const socket = await connectClient(lb.port(), lb.pki.alice);
    socket.write("hi");
    socket.pause(); // reads nothing more, sends nothing more, never closes
    const ended = nextEvent<ConnectionRecord>(lb.balancer, "end");
    const closed = readAll(socket);
    const record = await guard(ended, "idle timeout");
    assert.equal(record.reason, "idle_timeout");
    socket.resume();
    await guard(closed, "close of the silent client");
    assertIdle(lb, [upstream.address]);
  });

  // And the balancer still serves.
  const socket = await connectClient(lb.port(), lb.pki.alice);
  socket.write("still there");
  assert.equal(text(await guard(readBytes(socket, 11), "echo")), "still there");
  await hangUp(lb, socket);
  assertIdle(lb, [upstream.address]);
});
