/**
 * Measures large replies one at a time: Redis `GET`s of a value of each size, strictly
 * one at a time on one mutual-TLS connection per target, the reply read to its last
 * byte before the next request goes out. A balancer that holds the tail of a reply back
 * (Nagle's algorithm against a client that delays its ACKs) shows here as tens of
 * milliseconds per reply, where a request-rate run with small values shows nothing.
 *
 * Each connection first `SET`s a value of each size (on its own upstream: the balancer
 * picks one per connection). Then, per size, the targets take turns in blocks of
 * `--block` GETs, the first target rotating between blocks, so every target is
 * measured at the same moments without idle gaps inside a block. Prints one JSON line:
 * `{"results":[{"port":P,"size":B,"ms_per_get":X,"gets_per_s":Y,"p50_ms":Z}, ...]}`.
 *
 * `deno run --allow-net=127.0.0.1 --allow-read=FILES bench/_sequential_gets.ts
 *   --count N [--block B] [--sizes 16384,65536,409600] --tls PORT [--tls PORT]...
 *   --ca CA --cert CERT --key KEY`
 *
 * @module
 */
import { parseArgs } from "node:util";

const encoder = new TextEncoder();

/** One connection, with its read buffer. */
interface Connection {
  port: number;
  conn: Deno.TlsConn;
  buffer: Uint8Array;
}

/** The RESP command `args`, as bytes. */
function command(...args: (string | Uint8Array)[]): Uint8Array {
  const parts: Uint8Array[] = [encoder.encode(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === "string" ? encoder.encode(arg) : arg;
    parts.push(encoder.encode(`$${bytes.length}\r\n`), bytes, encoder.encode("\r\n"));
  }
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Writes all of `bytes`. */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/**
 * Reads one reply: a simple string (`+OK`) or a bulk string of `expected` bytes.
 *
 * @returns The bytes of the value (0 for a simple string).
 */
async function readReply(c: Connection, expected: number): Promise<number> {
  let have = 0;
  let total = -1;
  while (total < 0 || have < total) {
    const n = await c.conn.read(c.buffer.subarray(have));
    if (n === null) throw new Error(`Port ${c.port}: connection closed by the server`);
    have += n;
    if (total < 0) {
      const eol = c.buffer.subarray(0, have).indexOf(10);
      if (eol < 0) continue;
      const header = new TextDecoder().decode(c.buffer.subarray(0, eol - 1));
      if (header.startsWith("+")) return 0;
      if (!header.startsWith("$")) throw new Error(`Port ${c.port}: unexpected reply ${header}`);
      const length = Number(header.slice(1));
      if (length !== expected) {
        throw new Error(`Port ${c.port}: expected ${expected} bytes, received ${length}`);
      }
      total = eol + 1 + length + 2;
      if (total > c.buffer.length) throw new Error(`Port ${c.port}: reply too large`);
    }
  }
  return expected;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      count: { type: "string", default: "100" },
      block: { type: "string", default: "20" },
      sizes: { type: "string", default: "16384,65536,409600" },
      tls: { type: "string", multiple: true, default: [] },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
    },
  });
  const count = Number(values.count);
  const block = Number(values.block);
  const sizes = values.sizes.split(",").map(Number);
  const caCerts = [await Deno.readTextFile(values.ca!)];
  const cert = await Deno.readTextFile(values.cert!);
  const key = await Deno.readTextFile(values.key!);
  const largest = Math.max(...sizes);
  const connections: Connection[] = [];
  for (const port of values.tls.map(Number)) {
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts, cert, key });
    await conn.handshake();
    connections.push({ port, conn, buffer: new Uint8Array(largest + 64) });
  }
  const results = [];
  for (const size of sizes) {
    const name = `mtlb-bench:sequential:${size}`;
    const value = new Uint8Array(size).fill(120);
    for (const c of connections) {
      await writeAll(c.conn, command("SET", name, value));
      await readReply(c, 0);
    }
    const get = command("GET", name);
    const samples = new Map<Connection, number[]>(connections.map((c) => [c, []]));
    // One GET each first, not counted: the value's first trip through every layer.
    for (const c of connections) {
      await writeAll(c.conn, get);
      await readReply(c, size);
    }
    for (let done = 0, turn = 0; done < count; done += block, turn++) {
      const n = Math.min(block, count - done);
      for (let j = 0; j < connections.length; j++) {
        const c = connections[(turn + j) % connections.length]!;
        const list = samples.get(c)!;
        for (let i = 0; i < n; i++) {
          const started = performance.now();
          await writeAll(c.conn, get);
          await readReply(c, size);
          list.push(performance.now() - started);
        }
      }
    }
    for (const c of connections) {
      const list = samples.get(c)!.sort((a, b) => a - b);
      const mean = list.reduce((sum, ms) => sum + ms, 0) / list.length;
      results.push({
        port: c.port,
        size,
        ms_per_get: mean,
        gets_per_s: 1000 / mean,
        p50_ms: list[Math.floor(list.length / 2)]!,
      });
    }
  }
  for (const c of connections) c.conn.close();
  console.log(JSON.stringify({ results }));
}
