/**
 * The benchmark's byte sink: a plain TCP server on 127.0.0.1 that reads and discards
 * everything. It prints `{"port":N,"control":C}` once listening, then one JSON line per
 * connection that carried bytes, when that connection ends: `{"bytes":N,"ms":T}` (T from
 * accept to end of stream). Connections with no bytes (health checks, handshake tests)
 * are not reported. A connection to the control port receives the number of connections
 * open on the sink port now, as `{"open":N}`, and is closed.
 *
 * `deno run --allow-net=127.0.0.1 bench/_sink.ts`
 *
 * @module
 */

const BUFFER_BYTES = 256 * 1024;
const encoder = new TextEncoder();
let open = 0;

async function drain(conn: Deno.Conn): Promise<void> {
  open++;
  const started = performance.now();
  const buffer = new Uint8Array(BUFFER_BYTES);
  let bytes = 0;
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      bytes += n;
    }
  } catch {
    // A reset ends the count like an end of stream; the bench checks the byte count.
  } finally {
    open--;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
  if (bytes > 0) {
    const line = JSON.stringify({ bytes, ms: performance.now() - started });
    await Deno.stdout.write(encoder.encode(line + "\n"));
  }
}

async function report(conn: Deno.Conn): Promise<void> {
  try {
    await conn.write(encoder.encode(JSON.stringify({ open }) + "\n"));
  } catch {
    // The bench went away.
  } finally {
    conn.close();
  }
}

async function serve(
  listener: Deno.Listener,
  handle: (conn: Deno.Conn) => Promise<void>,
): Promise<void> {
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return;
      // A connection reset before it was accepted: Deno's accept fails with ENOTCONN
      // (from reading the peer address); the listener itself is fine.
      continue;
    }
    handle(conn);
  }
}

if (import.meta.main) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const control = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ports = { port: listener.addr.port, control: control.addr.port };
  await Deno.stdout.write(encoder.encode(JSON.stringify(ports) + "\n"));
  await Promise.all([serve(listener, drain), serve(control, report)]);
}
