import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import { dialTcp } from "../lib/upstream/dial.ts";

Deno.test("dialTcp() keeps shared listeners, and a later error still throws when unhandled", async () => {
  const server = createServer((socket) => socket.on("error", () => {}));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const controller = new AbortController();
  const a = await dialTcp({ hostname: "127.0.0.1", port }, controller.signal);
  const b = await dialTcp({ hostname: "127.0.0.1", port }, controller.signal);
  try {
    // Removing the only listener of an event would delete its key from `_events` and
    // turn it into a V8 dictionary for the socket's life; shared ones stay instead.
    for (const event of ["connect", "error"]) {
      assert.equal(a.listenerCount(event), 1, event);
      assert.equal(a.listeners(event)[0], b.listeners(event)[0], event);
    }
    // A late abort or connect event does nothing to a connected socket.
    controller.abort();
    a.emit("connect");
    assert.equal(a.destroyed, false);
    // Unhandled, an error throws as it would with no listener at all ...
    const boom = new Error("boom");
    assert.throws(() => a.emit("error", boom), (error) => error === boom);
    // ... and with a listener of the caller's, it reaches that listener only.
    const seen: unknown[] = [];
    a.on("error", (error) => seen.push(error));
    a.emit("error", boom);
    assert.deepEqual(seen, [boom]);
  } finally {
    a.destroy();
    b.destroy();
    server.close();
    await once(server, "close");
  }
});

Deno.test("dialTcp() rejects with the signal's reason and destroys the socket on abort", async () => {
  const reason = new Error("gave up");
  const aborted = AbortSignal.abort(reason);
  await assert.rejects(dialTcp({ hostname: "127.0.0.1", port: 9 }, aborted), (e) => e === reason);
  // Aborted while connecting: a port that accepts nothing yet (listen backlog full is
  // not portable), so abort right after the call, before the connect can complete.
  const controller = new AbortController();
  const pending = dialTcp({ hostname: "127.0.0.1", port: 9 }, controller.signal);
  controller.abort(reason);
  await assert.rejects(pending, (e) => e === reason);
});

Deno.test("dialTcp() rejects with the socket error when the port refuses", async () => {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, "close");
  await assert.rejects(
    dialTcp({ hostname: "127.0.0.1", port }, new AbortController().signal),
    (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED",
  );
});
