/**
 * Handshakes per second of the clients mtlb could use for its TLS leg to upstreams,
 * on loopback, against one `node:tls` server in the same process that requires a
 * client certificate (ECDSA P-256 everywhere, TLS 1.3): `Deno.connectTls`,
 * `Deno.connect` then `Deno.startTls` (what a `server_name` other than the address
 * would need), and `node:tls` `connect` (verifying itself; with
 * `rejectUnauthorized: false` and the checks made on `"secureConnect"`; with one
 * secure context for every connection, as `tlsDialer` does), and `tlsDialer` itself.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read --allow-env bench/upstream_tls_connect_bench.ts [--rounds 5] [--ms 1500]
 * ```
 *
 * Each round runs every client for `--ms` milliseconds, one handshake at a time, in
 * turn (interleaved, so drift affects all alike); the figure is the median over rounds.
 *
 * Why `tlsDialer` uses `node:tls` although `Deno.connectTls` is faster, on Deno 2.9.6:
 * `Deno.connectTls`'s `caCerts` add to the runtime's root store (Mozilla roots,
 * `DENO_CERT`) instead of replacing it, so an upstream whose certificate does not
 * chain to the group's `ca` can be accepted (tests/upstream/tls_dial_test.ts shows
 * it); it has no server name apart from the host it connects to; and it gives a
 * `Deno.TlsConn`, not the `node:net` socket `forward()` takes. `Deno.startTls`
 * ignores `cert` and `key` (no client certificate is sent: its figure is not
 * comparable). Recorded results: docs/PERFORMANCE.md, "TLS to upstreams".
 *
 * @module
 */
import { parseArgs } from "node:util";
import { connect, createSecureContext, createServer, type TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import { createCa } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import { tlsDialer } from "../lib/upstream/tls_dial.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "5" }, ms: { type: "string", default: "1500" } },
});
const ROUNDS = Number(values.rounds);
const MS = Number(values.ms);

const ca = await createCa({ commonName: "bench upstream CA" });
const server = await issueCertificate(ca, {
  commonName: "upstream",
  kind: "server",
  dnsNames: ["upstream.internal"],
  ipAddresses: ["127.0.0.1"],
});
const client = await issueCertificate(ca, { commonName: "mtlb", kind: "client" });

const listener = createServer({
  cert: server.chainPem,
  key: server.keyPem,
  ca: [ca.certPem],
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: "TLSv1.3",
}, (socket) => socket.end());
listener.on("tlsClientError", () => {});
await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
const port = (listener.address() as AddressInfo).port;

type Client = () => Promise<void>;

const denoConnectTls: Client = async () => {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [ca.certPem],
    cert: client.certPem,
    key: client.keyPem,
  });
  await conn.handshake();
  conn.close();
};

const denoStartTls: Client = async () => {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true);
  const conn = await Deno.startTls(tcp, {
    hostname: "upstream.internal",
    caCerts: [ca.certPem],
    // @ts-ignore: cert and key are accepted by startTls since Deno 2.
    cert: client.certPem,
    key: client.keyPem,
  });
  await conn.handshake();
  conn.close();
};

const shared = createSecureContext({ ca: [ca.certPem], cert: client.certPem, key: client.keyPem });
const nodeShared: Client = () =>
  new Promise<void>((resolve, reject) => {
    const socket: TLSSocket = connect({
      host: "127.0.0.1",
      port,
      servername: "upstream.internal",
      secureContext: shared,
    });
    socket.setNoDelay(true);
    socket.once("secureConnect", () => {
      if (!socket.authorized) reject(new Error(String(socket.authorizationError)));
      socket.destroy();
      resolve();
    });
    socket.once("error", reject);
  });

const nodeConnect = (rejectUnauthorized: boolean): Client => () =>
  new Promise<void>((resolve, reject) => {
    const socket: TLSSocket = connect({
      host: "127.0.0.1",
      port,
      servername: "upstream.internal",
      ca: [ca.certPem],
      cert: client.certPem,
      key: client.keyPem,
      rejectUnauthorized,
    });
    socket.setNoDelay(true);
    socket.once("secureConnect", () => {
      if (!socket.authorized) reject(new Error(String(socket.authorizationError)));
      socket.destroy();
      resolve();
    });
    socket.once("error", reject);
  });

const dial = tlsDialer({
  ca: ca.certPem,
  cert: client.certPem,
  key: client.keyPem,
  serverName: "upstream.internal",
});
const mtlbDialer: Client = async () => {
  const socket = await dial({ hostname: "127.0.0.1", port }, AbortSignal.timeout(5000));
  socket.destroy();
};

const clients: [string, Client][] = [
  ["Deno.connectTls", denoConnectTls],
  ["Deno.connect + Deno.startTls", denoStartTls],
  ["node:tls connect", nodeConnect(true)],
  ["node:tls connect, checks after", nodeConnect(false)],
  ["node:tls connect, one secureContext", nodeShared],
  ["tlsDialer (node:tls)", mtlbDialer],
];

async function run(fn: Client): Promise<number> {
  const end = performance.now() + MS;
  let count = 0;
  const start = performance.now();
  while (performance.now() < end) {
    await fn();
    count++;
  }
  return count / ((performance.now() - start) / 1000);
}

for (const [, fn] of clients) for (let i = 0; i < 50; i++) await fn(); // warm up
const rates = new Map<string, number[]>(clients.map(([name]) => [name, []]));
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, fn] of clients) rates.get(name)!.push(await run(fn));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(rates.get("Deno.connectTls")!);
console.log(`| client | handshakes/s (median of ${ROUNDS}) | ms each | vs Deno.connectTls |`);
console.log("| --- | ---: | ---: | ---: |");
for (const [name, xs] of rates) {
  const m = median(xs);
  console.log(
    `| ${name} | ${m.toFixed(0)} | ${(1000 / m).toFixed(2)} | ${(m / base).toFixed(2)} |`,
  );
}
listener.close();
