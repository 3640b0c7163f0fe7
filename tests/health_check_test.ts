import assert from "node:assert/strict";
import { type AddressInfo, createServer, type Socket } from "node:net";
import type { HostPort } from "../lib/core/address.ts";
import {
  HealthCheckError,
  type ProbeFailureReason,
  tcpCheck,
} from "../lib/upstream/health_check.ts";
import { HealthProbe } from "../lib/upstream/health_probe.ts";

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
const bytes = (value: string): Uint8Array => new TextEncoder().encode(value);

// tcpCheck against real sockets on 127.0.0.1.

interface TestServer extends AsyncDisposable {
  address: HostPort;
}

async function listen(onSocket: (socket: Socket) => void): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    onSocket(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    address: { hostname: "127.0.0.1", port },
    async [Symbol.asyncDispose]() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** Answers `reply` once the client sent "PING\r\n"; records what it received. */
function pingServer(reply: string, received: string[] = []): Promise<TestServer> {
  return listen((socket) => {
    let data = "";
    socket.on("data", (chunk: Uint8Array) => {
      data += text(chunk);
      if (data === "PING\r\n") {
        received.push(data);
        socket.write(reply);
      }
    });
  });
}

const PING = { send: bytes("PING\r\n"), expect: bytes("+PONG") };

function rejectsWith(reason: ProbeFailureReason): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof HealthCheckError, `not a HealthCheckError: ${error}`);
    assert.equal(error.reason, reason, error.message);
    return true;
  };
}

Deno.test("tcpCheck() passes an upstream that answers +PONG", async () => {
  const received: string[] = [];
  await using server = await pingServer("+PONG\r\n", received);
  await tcpCheck(server.address, PING, AbortSignal.timeout(5_000));
  assert.deepEqual(received, ["PING\r\n"]);
});

Deno.test("tcpCheck() passes a connect-only check", async () => {
  let connected = 0;
  await using server = await listen(() => connected++);
  await tcpCheck(
    server.address,
    { send: bytes(""), expect: bytes("") },
    AbortSignal.timeout(5_000),
  );
  assert.equal(connected, 1);
});

Deno.test("tcpCheck() fails a wrong reply with probe_bad_reply", async () => {
  await using server = await pingServer("-ERR unknown command\r\n");
  await assert.rejects(
    tcpCheck(server.address, PING, AbortSignal.timeout(5_000)),
    (error: unknown) => rejectsWith("probe_bad_reply")(error) && /-ERR/.test(String(error)),
  );
});

Deno.test("tcpCheck() fails a connection closed before the reply with probe_closed", async () => {
  await using server = await listen((socket) => socket.end());
  await assert.rejects(
    tcpCheck(server.address, PING, AbortSignal.timeout(5_000)),
    rejectsWith("probe_closed"),
  );
});

Deno.test("tcpCheck() fails a closed port with probe_refused", async () => {
  const server = await listen(() => {});
  const address = server.address;
  await server[Symbol.asyncDispose]();
  await assert.rejects(
    tcpCheck(address, PING, AbortSignal.timeout(5_000)),
    rejectsWith("probe_refused"),
  );
});

Deno.test("tcpCheck() fails an upstream that never answers with probe_timeout", async () => {
  await using server = await listen(() => {});
  await assert.rejects(
    tcpCheck(server.address, PING, AbortSignal.timeout(200)),
    rejectsWith("probe_timeout"),
  );
});

Deno.test("tcpCheck() rejects with the signal's reason on any other abort", async () => {
  const controller = new AbortController();
  const stop = new Error("stop");
  await using server = await listen(() => controller.abort(stop));
  await assert.rejects(tcpCheck(server.address, PING, controller.signal), (e) => e === stop);
});

Deno.test("HealthProbe uses tcpCheck by default", async () => {
  await using up = await pingServer("+PONG\r\n");
  await using wrong = await pingServer("+PANG\r\n");
  const addresses = [up, wrong].map((s) => `127.0.0.1:${s.address.port}`);
  await using probe = new HealthProbe(addresses, {
    send: "PING\r\n",
    expect: "+PONG",
    timeout: 5_000,
  });
  probe.start();
  await probe.ready;
  assert.deepEqual(
    probe.snapshot().map((h) => [h.state, h.lastResult?.reason]),
    [["healthy", "probe_ok"], ["unhealthy", "probe_bad_reply"]],
  );
});
