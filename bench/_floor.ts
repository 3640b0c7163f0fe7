/**
 * The benchmark's "Deno floor": the least a mutual-TLS forwarder on Deno can do, with
 * none of mtlb. A `node:tls` server (TLS 1.3, client certificate required and verified
 * against the CA; the only Deno API that can verify one) whose connections are piped
 * to a `node:net` connection to the next upstream in turn (`pipe()` one way; the other
 * way writes every chunk, as `pipe()` would lose a FIN on Deno 2.9). No identity,
 * policy, limits, health, metrics, logs or timeouts. It is the runtime's own cost: the
 * benchmark runs it beside mtlb and HAProxy to show how much of a gap is mtlb's and how
 * much is Deno's. Not a product: it has no error handling beyond not crashing.
 *
 * `--tcp-route` adds a plain `node:net` listener (no TLS) piped both ways the same way,
 * for the runtime's cost without TLS. Prints `{"listening":[P1,P2,...]}` once every
 * listener is up.
 *
 * `deno run --allow-net=127.0.0.1 --allow-read=FILES bench/_floor.ts --ca CA --cert CERT
 *   --key KEY --route LISTEN_PORT=UPSTREAM_PORT[,UPSTREAM_PORT...] [--route ...]
 *   [--tcp-route LISTEN_PORT=UPSTREAM_PORT[,...]]`
 *
 * @module
 */
import {
  connect,
  createServer as createTcpServer,
  type Server as NetServer,
  type Socket,
} from "node:net";
import { createServer, type TLSSocket } from "node:tls";
import { parseArgs } from "node:util";

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      route: { type: "string", multiple: true },
      "tcp-route": { type: "string", multiple: true },
    },
  });
  const options = {
    ca: await Deno.readTextFile(values.ca!),
    cert: await Deno.readTextFile(values.cert!),
    key: await Deno.readTextFile(values.key!),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3" as const,
    // Nagle off on every socket, as any proxy: a reply's tail is not held back for
    // the ACK of its start (about 40 ms against a client that delays its ACKs).
    noDelay: true,
  };
  const listening: number[] = [];
  /** Listens on a route's port and wires each client to the next upstream in turn. */
  const serve = async (
    route: string,
    make: (onClient: (client: Socket) => void) => NetServer,
    wire: (client: Socket, upstream: Socket) => void,
  ): Promise<void> => {
    const [listen, targets] = route.split("=");
    const upstreams = targets!.split(",").map(Number);
    let next = 0;
    const server = make((client) => {
      const upstream = connect({
        port: upstreams[next++ % upstreams.length]!,
        host: "127.0.0.1",
        noDelay: true,
      });
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
      wire(client, upstream);
    });
    await new Promise<void>((resolve) =>
      server.listen({ host: "127.0.0.1", port: Number(listen), backlog: 4096 }, resolve)
    );
    listening.push(Number(listen));
  };
  for (const route of values.route ?? []) {
    await serve(
      route,
      (onClient) =>
        createServer(options, (client: TLSSocket) => onClient(client)).on(
          "tlsClientError",
          () => {},
        ),
      (client, upstream) => {
        // Not client.pipe(upstream): Deno 2.9's node:tls loses a FIN that arrives while
        // a server socket is paused, which pipe() does under backpressure (see
        // lib/proxy/forward.ts). The TLS side is never paused; the upstream side may be.
        client.on("data", (chunk: Uint8Array) => upstream.write(chunk));
        client.on("end", () => upstream.end());
        upstream.pipe(client);
      },
    );
  }
  for (const route of values["tcp-route"] ?? []) {
    await serve(route, (onClient) => createTcpServer({ noDelay: true }, onClient), (
      client,
      upstream,
    ) => {
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }
  console.log(JSON.stringify({ listening }));
}
