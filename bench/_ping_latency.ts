/**
 * Measures request/response round trips to Redis: `PING` and `+PONG`, strictly one at
 * a time per connection. It opens one connection per target, plain TCP (`--plain`) or
 * mutual TLS (`--tls`, with `--ca`, `--cert` and `--key`), and takes turns among them,
 * one round trip each, starting with a different target each turn, so that every target
 * is measured under the same conditions. Prints one JSON line:
 * `{"results":[{"port":P,"p50_us":X,"p99_us":Y}, ...]}`, plain targets first.
 *
 * `deno run --allow-net=127.0.0.1 --allow-read=FILES bench/_ping_latency.ts --count N
 *   [--warmup W] [--plain PORT]... [--tls PORT]... [--ca CA --cert CERT --key KEY]`
 *
 * @module
 */
import { parseArgs } from "node:util";

const PING = new TextEncoder().encode("PING\r\n");
const PONG = "+PONG\r\n";

/** One connection and its samples, in microseconds. */
interface Target {
  port: number;
  conn: Deno.Conn;
  samples: number[];
}

/**
 * The sample at or below which a fraction `p` of the samples fall (nearest rank).
 *
 * @param sorted Samples in ascending order.
 * @param p A fraction in (0, 1].
 * @returns That sample.
 */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

const buffer = new Uint8Array(64);
const decoder = new TextDecoder();

/** One PING round trip on `conn`, in microseconds. */
async function roundTrip(conn: Deno.Conn): Promise<number> {
  const started = performance.now();
  await conn.write(PING);
  let reply = "";
  while (reply.length < PONG.length) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("Connection closed by the server");
    reply += decoder.decode(buffer.subarray(0, n));
  }
  const elapsed = performance.now() - started;
  if (reply !== PONG) throw new Error(`Unexpected reply: ${JSON.stringify(reply)}`);
  return elapsed * 1000;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      count: { type: "string" },
      warmup: { type: "string", default: "200" },
      plain: { type: "string", multiple: true, default: [] },
      tls: { type: "string", multiple: true, default: [] },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
    },
  });
  const count = Number(values.count);
  const warmup = Number(values.warmup);
  const targets: Target[] = [];
  for (const port of values.plain.map(Number)) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    targets.push({ port, conn, samples: [] });
  }
  if (values.tls.length > 0) {
    const caCerts = [await Deno.readTextFile(values.ca!)];
    const cert = await Deno.readTextFile(values.cert!);
    const key = await Deno.readTextFile(values.key!);
    for (const port of values.tls.map(Number)) {
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts, cert, key });
      await conn.handshake();
      targets.push({ port, conn, samples: [] });
    }
  }

  for (let i = 0; i < warmup + count; i++) {
    for (let j = 0; j < targets.length; j++) {
      const target = targets[(i + j) % targets.length]!;
      const micros = await roundTrip(target.conn);
      if (i >= warmup) target.samples.push(micros);
    }
  }
  const results = targets.map(({ port, conn, samples }) => {
    conn.close();
    samples.sort((a, b) => a - b);
    return { port, p50_us: percentile(samples, 0.5), p99_us: percentile(samples, 0.99) };
  });
  console.log(JSON.stringify({ results }));
}
