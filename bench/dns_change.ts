/**
 * How long a changed DNS answer takes to carry traffic: a loopback DNS server swaps
 * one SRV target for another (a kept one stays), and clients connect one after the
 * other until one reaches the new target. Measured for one event loop (`Balancer`)
 * and for `WorkerBalancer` with two workers, with `interval = "100ms"`.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read --allow-write --allow-env --allow-sys bench/dns_change.ts [rounds]
 * ```
 *
 * @module
 */
import { join } from "node:path";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { Balancer } from "../lib/server/balancer.ts";
import { WorkerBalancer } from "../lib/workers/worker_balancer.ts";
import { TestDnsServer } from "../tests/_dns_server.ts";
import {
  banner,
  connectClient,
  readAll,
  readBytes,
  TestUpstream,
  text,
} from "../tests/_harness.ts";
import { testPki } from "../tests/_pki_fixtures.ts";

const SRV = "_api._tcp.test";
const rounds = Number(Deno.args[0] ?? 20);

const pki = await testPki();
await using dns = await TestDnsServer.start();
await using kept = await TestUpstream.start(banner("k"));
const swapped = [
  await TestUpstream.start(banner("0")),
  await TestUpstream.start(banner("1")),
];
dns.set("lo.test", { a: ["127.0.0.1"] });
const answer = (i: number) => ({
  srv: [kept.port, swapped[i % 2]!.port].map((port) => ({ weight: 1, port, target: "lo.test" })),
});

const config = parseConfig(
  `[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
[server]
listen = "127.0.0.1:0"
resolver = "${dns.address}"
[health]
interval = "1h"
[groups.api]
upstreams = [{ srv = "${SRV}", interval = "100ms" }]
[clients.alice]
match = { cn = "alice" }
groups = ["api"]
`,
  { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
);
const tls = await loadTlsMaterial(config);

async function visit(port: number): Promise<string> {
  const socket = await connectClient(port, pki.alice);
  const name = text(await readBytes(socket, 2)).trim();
  const closed = readAll(socket);
  socket.destroy();
  await closed;
  return name;
}

/** From each change: to traffic on the new target, and from the answer that told it. */
async function measure(
  balancer: Balancer | WorkerBalancer,
): Promise<{ change: number[]; answer: number[]; visits: number[] }> {
  const port = balancer.listeners()[0]!.address.port;
  // One connection held on the kept target: the new one, with none, is picked first.
  let held = await connectClient(port, pki.alice);
  while (text(await readBytes(held, 2)).trim() !== "k") {
    held.destroy();
    held = await connectClient(port, pki.alice);
  }
  const visits: number[] = [];
  const change: number[] = [];
  const fromAnswer: number[] = [];
  for (let i = 1; i <= rounds; i++) {
    const target = String(i % 2);
    const changed = performance.now();
    dns.set(SRV, answer(i));
    let answered = 0;
    void dns.queried(SRV).then(() => answered = performance.now());
    for (;;) {
      const started = performance.now();
      const reached = await visit(port);
      visits.push(performance.now() - started);
      if (reached === target) break;
      if (performance.now() - changed > 10_000) throw new Error("The new target took no traffic");
    }
    const now = performance.now();
    change.push(now - changed);
    fromAnswer.push(now - answered);
  }
  held.destroy();
  return { change, answer: fromAnswer, visits };
}

function quantiles(times: number[]): string {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return `median ${at(0.5).toFixed(1)} ms, p90 ${at(0.9).toFixed(1)} ms, max ${
    sorted.at(-1)!.toFixed(1)
  } ms`;
}

function summary(
  name: string,
  times: { change: number[]; answer: number[]; visits: number[] },
): string {
  return `${name} (${times.change.length} changes, interval 100 ms)\n  change to traffic: ${
    quantiles(times.change)
  }\n  answer to traffic: ${quantiles(times.answer)}\n  one connection:    ${
    quantiles(times.visits)
  }`;
}

dns.set(SRV, answer(0));
{
  await using one = new Balancer({ config, tls });
  await one.start();
  console.log(summary("one event loop", await measure(one)));
}
dns.set(SRV, answer(0));
{
  await using two = new WorkerBalancer({ config, tls, workers: 2 });
  await two.start();
  console.log(summary("workers = 2   ", await measure(two)));
}
for (const upstream of swapped) await upstream[Symbol.asyncDispose]();
