/**
 * What the TLS leg to upstreams costs per connection through mtlb: a group whose
 * upstream speaks TLS 1.3 and requires mtlb's client certificate
 * (`[groups.<name>.tls]`), against the same group with a plain TCP upstream. Each
 * connection is a full mTLS handshake with mtlb and one byte echoed by the upstream,
 * one connection at a time; the figure is the time from the client's connect until its
 * byte reached the upstream (mtlb's handshake, admission, the upstream dial and, for
 * TLS, its handshake), median per round.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read --allow-write --allow-env --allow-sys bench/upstream_tls_leg_bench.ts [--rounds 5] [--ms 2000]
 * ```
 *
 * The balancer, the upstreams and the client share this process (one event loop).
 * Rounds alternate TCP and TLS (interleaved); the table shows medians over rounds, and
 * connections/s. The latter includes the echo's way back to the client, which mtlb's
 * listener sockets (Nagle on) delay by the client's delayed ACK when a ticket is still
 * unacknowledged: it is about 40 ms per connection for both, and hides the leg's cost.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { connect as tlsConnect, createServer as createTlsServer } from "node:tls";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { Balancer } from "../lib/server/balancer.ts";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { writeDevPki } from "../lib/pki/dev_pki.ts";
import { createCa } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "5" }, ms: { type: "string", default: "2000" } },
});
const ROUNDS = Number(values.rounds);
const MS = Number(values.ms);

const dir = await Deno.makeTempDir({ prefix: "mtlb-upstream-tls-" });
const pki = await writeDevPki(dir, { clients: ["bench"] });
const client = pki.clients[0]!;
const upstreamCa = await createCa({ commonName: "bench upstream CA" });
const upstreamCert = await issueCertificate(upstreamCa, { commonName: "upstream", kind: "server" });
const mtlbClient = await issueCertificate(upstreamCa, { commonName: "mtlb", kind: "client" });

function echo(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on("error", () => {});
  socket.on("data", (chunk: Uint8Array) => {
    upstreamGotAt = performance.now();
    socket.write(chunk);
  });
  socket.on("end", () => socket.end());
}
const plain = createServer({ allowHalfOpen: true }, echo);
const secure = createTlsServer({
  cert: upstreamCert.chainPem,
  key: upstreamCert.keyPem,
  ca: [upstreamCa.certPem],
  requestCert: true,
  rejectUnauthorized: true,
  allowHalfOpen: true,
}, echo);
secure.on("tlsClientError", () => {});
await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
await new Promise<void>((resolve) => secure.listen(0, "127.0.0.1", resolve));
const at = (server: { address(): unknown }) =>
  `127.0.0.1:${(server.address() as AddressInfo).port}`;

const config = parseConfig(
  `[tls]
ca = ${JSON.stringify(pki.caCert)}
cert = ${JSON.stringify(pki.serverCert)}
key = ${JSON.stringify(pki.serverKey)}

[health]
interval = "1h"

[groups.plain]
listen = "127.0.0.1:0"
upstreams = ["${at(plain)}"]

[groups.tls]
listen = "127.0.0.1:0"
upstreams = ["${at(secure)}"]

[clients.bench]
match = { cn = "bench" }
groups = ["plain", "tls"]
max_connections = 1000
`,
  { path: join(dir, "lb.toml"), baseDir: dir },
);
const tls = await loadTlsMaterial(config);
tls.upstreams = new Map([["tls", {
  ca: upstreamCa.certPem,
  cert: mtlbClient.chainPem,
  key: mtlbClient.keyPem,
  certificates: [],
}]]);
const balancer = new Balancer({ config, tls });
await balancer.start();
const portOf = (group: string) => balancer.listeners().find((l) => l.group === group)!.address.port;

const caPem = await Deno.readTextFile(pki.caCert);
const certPem = await Deno.readTextFile(client.cert);
const keyPem = await Deno.readTextFile(client.key);

/** When the upstream last received a byte, `performance.now()`. */
let upstreamGotAt = 0;

/**
 * One connection: the ms from the client's connect until its byte reached the upstream
 * (mtlb's handshake, admission, the upstream dial and, for TLS, its handshake).
 */
function once(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = tlsConnect({
      host: "127.0.0.1",
      port,
      ca: caPem,
      cert: certPem,
      key: keyPem,
      checkServerIdentity: () => undefined,
    });
    socket.setNoDelay(true);
    socket.on("error", reject);
    socket.once("secureConnect", () => socket.write("x"));
    socket.once("data", () => {
      socket.destroy();
      resolve(upstreamGotAt - started);
    });
  });
}

/** Connections for `MS` ms: the median ms until the upstream got the byte, and connections/s. */
async function round(port: number): Promise<{ ms: number; rate: number }> {
  const start = performance.now();
  const end = start + MS;
  const times: number[] = [];
  while (performance.now() < end) times.push(await once(port));
  return { ms: median(times), rate: times.length / ((performance.now() - start) / 1000) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (let i = 0; i < 50; i++) await once(portOf("plain"));
for (let i = 0; i < 50; i++) await once(portOf("tls"));
const plainRounds: { ms: number; rate: number }[] = [];
const tlsRounds: { ms: number; rate: number }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  plainRounds.push(await round(portOf("plain")));
  tlsRounds.push(await round(portOf("tls")));
}
const p = median(plainRounds.map((r) => r.ms));
const t = median(tlsRounds.map((r) => r.ms));
console.log(
  `| upstream leg | ms from connect to the byte at the upstream (median of ${ROUNDS} rounds) | connections/s |`,
);
console.log("| --- | ---: | ---: |");
console.log(`| TCP | ${p.toFixed(2)} | ${median(plainRounds.map((r) => r.rate)).toFixed(0)} |`);
console.log(
  `| TLS 1.3 with client certificate | ${t.toFixed(2)} | ${
    median(tlsRounds.map((r) => r.rate)).toFixed(0)
  } |`,
);
console.log(
  `TLS/TCP: ${(t / p).toFixed(2)}; the TLS leg adds ${(t - p).toFixed(2)} ms per connection`,
);
console.log(
  `rounds (ms): TCP ${plainRounds.map((r) => r.ms.toFixed(2)).join(", ")}; TLS ${
    tlsRounds.map((r) => r.ms.toFixed(2)).join(", ")
  }`,
);
await balancer.close();
plain.close();
secure.close();
await Deno.remove(dir, { recursive: true });
