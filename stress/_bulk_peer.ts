/**
 * One end of a bulk transfer through the balancer, for the memory suite
 * (`memory_flood.ts`): an mTLS client or a plain TCP upstream that sends or receives
 * `--bytes` bytes and hashes them (SHA-256), and either end can hold still, not
 * reading, until told to. Reads commands on stdin (one per line) and writes one JSON
 * report per line on stdout.
 *
 * Roles (first argument):
 * - `sink` (upstream): prints its port and accepts connections, reading nothing from
 *   any until `read`; then reads each to its FIN and reports `received` for the one
 *   that carried bytes (byte count and hash; the others are the balancer's health
 *   probes, which connect and close), sends its FIN and closes.
 * - `drain` (upstream): prints its port, accepts connections and reads each to its FIN
 *   at once, reporting `received` for each that carried bytes, then sends its FIN.
 * - `source` (upstream): prints its port, accepts connections and reads one byte from
 *   each (a health probe closes instead); on the first that sends one (the client's
 *   request) it reports `accepted` and writes `--bytes` at once (`stalled` once a write
 *   has waited `--stall-ms`, `sent` with the hash when all is written), then its FIN;
 *   then reads to the peer's FIN (`closed`).
 * - `push` (client): connects (`connected`), waits for `go`, writes `--bytes`
 *   (`stalled`, `sent`), then its FIN, and reads to the balancer's FIN (`closed`).
 * - `pull` (client): connects, writes a one-byte request (`connected`) and reads
 *   nothing until `read`; then reads to the FIN (`received`), sends its own FIN and
 *   closes (`closed`).
 *
 * The bytes are 64 KiB chunks of one random MiB, each chunk stamped with its index,
 * so that a lost, repeated or reordered chunk changes the hash.
 *
 * Usage: `deno run --allow-net=127.0.0.1 [--allow-read=DIR] stress/_bulk_peer.ts ROLE
 * [--bytes=N] [--stall-ms=1000] [--port=P --ca=FILE --cert=FILE --key=FILE]`
 *
 * @module
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";

type Role = "sink" | "drain" | "source" | "push" | "pull";
const role = Deno.args[0] as Role;
const { values } = parseArgs({
  args: Deno.args.slice(1),
  options: {
    bytes: { type: "string", default: String(256 * 1024 * 1024) },
    "stall-ms": { type: "string", default: "1000" },
    port: { type: "string" },
    ca: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
  },
});
const BYTES = Number(values.bytes);
const STALL_MS = Number(values["stall-ms"]);
const CHUNK = 64 * 1024;

const report = (event: string, extra: Record<string, unknown> = {}): void =>
  console.log(JSON.stringify({ event, at: Date.now(), ...extra }));

const commands = (async function* (): AsyncGenerator<string> {
  let buffer = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    for (let at = buffer.indexOf("\n"); at >= 0; at = buffer.indexOf("\n")) {
      yield buffer.slice(0, at).trim();
      buffer = buffer.slice(at + 1);
    }
  }
})();

/** Waits for the command `name` on stdin; exits if stdin closes first. */
async function command(name: string): Promise<void> {
  for (;;) {
    const next = await commands.next();
    if (next.done) Deno.exit(0);
    if (next.value === name) return;
  }
}

/** Writes `BYTES` bytes; reports `stalled` once a write waited `STALL_MS`, then `sent`. */
async function send(conn: Deno.Conn): Promise<void> {
  const base = new Uint8Array(1024 * 1024);
  for (let at = 0; at < base.length; at += 65536) {
    crypto.getRandomValues(base.subarray(at, at + 65536));
  }
  const chunk = new Uint8Array(CHUNK);
  const stamp = new DataView(chunk.buffer);
  const hash = createHash("sha256");
  const started = performance.now();
  let written = 0;
  let lastProgress = performance.now();
  let stalled: { bytes: number; afterMs: number } | undefined;
  const watch = setInterval(() => {
    if (stalled === undefined && performance.now() - lastProgress >= STALL_MS) {
      stalled = { bytes: written, afterMs: Math.round(lastProgress - started) };
      report("stalled", stalled);
    }
  }, 100);
  try {
    for (let index = 0; written < BYTES; index++) {
      const offset = (index * CHUNK) % base.length;
      const size = Math.min(CHUNK, BYTES - written);
      chunk.set(base.subarray(offset, offset + CHUNK));
      stamp.setUint32(0, index);
      const piece = chunk.subarray(0, size);
      hash.update(piece);
      for (let at = 0; at < size;) {
        at += await conn.write(piece.subarray(at));
        lastProgress = performance.now();
      }
      written += size;
    }
  } finally {
    clearInterval(watch);
  }
  report("sent", {
    bytes: written,
    sha256: hash.digest("hex"),
    stalled: stalled !== undefined,
    ms: Math.round(performance.now() - started),
  });
}

/** Reads to the FIN; returns the byte count and hash. */
async function receive(conn: Deno.Conn): Promise<{ bytes: number; sha256: string }> {
  const buffer = new Uint8Array(256 * 1024);
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      bytes += n;
    }
  } catch (error) {
    if (bytes > 0) throw error; // a probe may reset; the transfer may not
  }
  return { bytes, sha256: hash.digest("hex") };
}

/** Reads to the FIN, expecting nothing; reports `closed`. */
async function awaitFin(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(1024);
  let extra = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    extra += n;
  }
  report("closed", { unexpectedBytes: extra });
}

/** Listens on 127.0.0.1 and prints the port. */
function listen(): Deno.Listener<Deno.TcpConn> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(listener.addr.port);
  return listener;
}

/** `sink`: accepts everything, reads nothing until `read`, then reads every connection. */
async function sink(): Promise<void> {
  const listener = listen();
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  await command("read");
  const started = performance.now();
  const results = await Promise.all(accepted.map(async (conn) => {
    const result = await receive(conn);
    try {
      await conn.closeWrite();
    } catch {
      // A probe that is gone.
    }
    conn.close();
    return result;
  }));
  const carried = results.filter((r) => r.bytes > 0);
  report("received", {
    ...(carried[0] ?? { bytes: 0, sha256: "" }),
    connections: accepted.length,
    carrying: carried.length,
    ms: Math.round(performance.now() - started),
  });
  listener.close();
  await accepting.catch(() => {});
}

/** `drain`: reads every connection as it comes. */
async function drain(): Promise<void> {
  for await (const conn of listen()) {
    void (async () => {
      const started = performance.now();
      const result = await receive(conn).catch(() => ({ bytes: 0, sha256: "" }));
      if (result.bytes > 0) {
        report("received", { ...result, ms: Math.round(performance.now() - started) });
      }
      try {
        await conn.closeWrite();
      } catch {
        // A probe that is gone.
      }
      conn.close();
    })();
  }
}

/** `source`: the first connection that sends a byte gets `BYTES`. */
async function source(): Promise<void> {
  const listener = listen();
  const request = Promise.withResolvers<Deno.Conn>();
  void (async () => {
    for await (const conn of listener) {
      void (async () => {
        try {
          if (await conn.read(new Uint8Array(1)) === 1) return request.resolve(conn);
        } catch {
          // A probe that reset.
        }
        conn.close();
      })();
    }
  })();
  const conn = await request.promise;
  listener.close();
  report("accepted");
  await send(conn);
  await conn.closeWrite();
  await awaitFin(conn);
  conn.close();
}

async function connect(): Promise<Deno.TlsConn> {
  const read = (name: "ca" | "cert" | "key"): string => {
    const path = values[name];
    if (path === undefined) throw new TypeError(`Missing --${name}`);
    return Deno.readTextFileSync(path);
  };
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: Number(values.port),
    caCerts: [read("ca")],
    cert: read("cert"),
    key: read("key"),
  });
  await conn.handshake();
  return conn;
}

// Stop when the parent closes our stdin (or dies) while nothing is awaited on it.
try {
  if (role === "sink") {
    await sink();
  } else if (role === "drain") {
    await drain();
  } else if (role === "source") {
    await source();
  } else if (role === "push") {
    const conn = await connect();
    report("connected");
    await command("go");
    await send(conn);
    await conn.closeWrite();
    await awaitFin(conn);
    conn.close();
  } else if (role === "pull") {
    const conn = await connect();
    await conn.write(new Uint8Array([0x47]));
    report("connected");
    await command("read");
    const started = performance.now();
    report("received", { ...(await receive(conn)), ms: Math.round(performance.now() - started) });
    await conn.closeWrite();
    conn.close();
    report("closed");
  } else {
    throw new TypeError(`Unknown role ${JSON.stringify(role)}: sink, drain, source, push or pull`);
  }
} catch (error) {
  report("error", { error: String(error) });
  Deno.exit(1);
}
Deno.exit(0);
