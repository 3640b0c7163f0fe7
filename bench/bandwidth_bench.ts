/**
 * Client bandwidth: how close a throttled client gets to its limit over 10 s, how its
 * connections share it, and what throttling costs in CPU per MB.
 *
 * One process runs the balancer, an echo upstream and the clients. Each run streams
 * through mTLS for `--seconds` and counts the bytes echoed back per second:
 *
 * - `throttled`: `bandwidth = RATE` in the config, the client writes as fast as
 *   backpressure lets it (1 and 4 connections);
 * - `paced`: no bandwidth limit, the client paces its own writes to RATE: the same
 *   bytes through the same path without the throttle, the baseline of CPU per MB.
 *
 * CPU is the process's user + system time (`process.cpuUsage()`), so it includes the
 * client and the upstream; the difference between the two runs is the throttle's.
 *
 * ```sh
 * deno run -A bench/bandwidth_bench.ts --rate 10 --seconds 10
 * ```
 *
 * @module
 */
import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import type { TLSSocket } from "node:tls";
import { connectClient, startBalancer, TestUpstream } from "../tests/_harness.ts";

const args = parseArgs({
  options: {
    rate: { type: "string", default: "10" }, // MiB/s
    seconds: { type: "string", default: "10" },
  },
});
const MIB = 1024 * 1024;
const rate = Number(args.values.rate) * MIB;
const seconds = Number(args.values.seconds);
const CHUNK = 64 * 1024;

interface Run {
  name: string;
  connections: number;
  bandwidth: boolean;
}

async function run({ name, connections, bandwidth }: Run): Promise<void> {
  await using upstream = await TestUpstream.start();
  await using lb = await startBalancer(`[server]
listen = "127.0.0.1:0"
max_buffer = "4MiB"
[health]
interval = "1h"
[groups.echo]
upstreams = ["${upstream.address}"]
[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
${bandwidth ? `bandwidth = "${rate}B/s"` : ""}
`);
  const sockets: TLSSocket[] = [];
  for (let i = 0; i < connections; i++) sockets.push(await connectClient(lb.port(), lb.pki.alice));
  const chunk = new Uint8Array(CHUNK);
  const received = sockets.map(() => 0);
  let stop = false;
  const started = performance.now();
  const cpuBefore = cpuUsage();
  const done = sockets.map((socket, i) =>
    new Promise<void>((resolve) => {
      socket.on("data", (data: Uint8Array) => received[i]! += data.length);
      if (bandwidth) {
        // As fast as backpressure allows.
        const pump = () => {
          while (!stop && socket.write(chunk)) {
            // keep writing
          }
          if (stop) resolve();
        };
        socket.on("drain", pump);
        pump();
      } else {
        // Paced by the client to the same rate, in 64 KiB writes.
        const share = rate / connections;
        let sent = 0;
        const tick = () => {
          if (stop) return resolve();
          const due = (share * (performance.now() - started)) / 1000;
          while (sent + CHUNK <= due) {
            socket.write(chunk);
            sent += CHUNK;
          }
          setTimeout(tick, 5);
        };
        tick();
      }
    })
  );
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const elapsed = (performance.now() - started) / 1000;
  const counted = [...received];
  const total = counted.reduce((a, b) => a + b, 0);
  const cpu = cpuUsage(cpuBefore);
  stop = true;
  await Promise.all(done);
  for (const socket of sockets) socket.destroy();
  const mbps = total / elapsed / MIB;
  // Each byte crosses the balancer twice (to the echo and back): count both directions.
  const mb = (2 * total) / 1e6;
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const shares = counted.map((r) => ((100 * r) / total).toFixed(1) + "%").join(" ");
  console.log(
    `${name.padEnd(22)} ${mbps.toFixed(3)} MiB/s each way (${
      ((100 * mbps * MIB) / rate).toFixed(1)
    }% of ${rate / MIB} MiB/s)  CPU ${(cpuMs / elapsed / 10).toFixed(1)}%  ${
      (cpuMs / mb).toFixed(3)
    } ms per MB forwarded  shares ${shares}`,
  );
}

console.log(
  `rate ${rate / MIB} MiB/s, ${seconds} s per run, ${Deno.build.os} ${Deno.version.deno}`,
);
for (
  const r of [
    { name: "throttled, 1 conn", connections: 1, bandwidth: true },
    { name: "throttled, 4 conns", connections: 4, bandwidth: true },
    { name: "paced by client, 1", connections: 1, bandwidth: false },
    { name: "paced by client, 4", connections: 4, bandwidth: false },
  ]
) await run(r);
