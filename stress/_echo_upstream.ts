/**
 * The stress suites' upstream: a TCP echo server on 127.0.0.1 (Deno's native
 * sockets, so it is not the bottleneck). Prints its port on the first stdout line,
 * echoes every connection until the peer's FIN, then closes; exits when stdin closes.
 *
 * Usage: `deno run --allow-net=127.0.0.1 stress/_echo_upstream.ts`
 *
 * @module
 */

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(listener.addr.port);

async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      for (let at = 0; at < n;) at += await conn.write(buffer.subarray(at, n));
    }
    await conn.closeWrite();
  } catch {
    // A reset peer: nothing to do but close.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

// Stop when the parent closes our stdin (or dies).
(async () => {
  for await (const _ of Deno.stdin.readable) { /* nothing is sent on stdin */ }
  Deno.exit(0);
})();

for await (const conn of listener) {
  conn.setNoDelay(true);
  void echo(conn);
}
