/**
 * Opens N mutual-TLS connections to 127.0.0.1:PORT and holds them, for the benchmark's
 * memory-per-idle-connection figure. Prints `{"open":N}` once every handshake has
 * completed, then holds the connections until its standard input closes, and exits.
 *
 * `deno run --allow-net=127.0.0.1:PORT --allow-read=FILES bench/_hold_connections.ts
 *   --port PORT --count N --ca CA --cert CERT --key KEY [--parallel P]`
 *
 * @module
 */
import { parseArgs } from "node:util";

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      count: { type: "string" },
      parallel: { type: "string", default: "16" },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
    },
  });
  const port = Number(values.port);
  const count = Number(values.count);
  const parallel = Number(values.parallel);
  const caCerts = [await Deno.readTextFile(values.ca!)];
  const cert = await Deno.readTextFile(values.cert!);
  const key = await Deno.readTextFile(values.key!);

  const conns: Deno.TlsConn[] = [];
  let next = 0;
  const open = async (): Promise<void> => {
    while (next < count) {
      next++;
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts, cert, key });
      conns.push(conn);
      await conn.handshake();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, open));
  console.log(JSON.stringify({ open: conns.length }));

  // Hold until the bench closes our standard input.
  for await (const _ of Deno.stdin.readable) { /* ignore input */ }
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed by the peer.
    }
  }
}
