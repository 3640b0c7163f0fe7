/**
 * End-to-end helpers: upstream servers, a balancer on generated certificates,
 * and mTLS clients, all on 127.0.0.1 port 0.
 *
 * @module
 */
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { Balancer } from "../lib/server/balancer.ts";
import type { BalancerOptions } from "../lib/server/options.ts";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { type TestCredential, type TestPki, testPki } from "./_pki_fixtures.ts";
import { LoopbackServer } from "./_loopback_server.ts";

/** A TCP upstream for tests. */
export class TestUpstream extends LoopbackServer {
  /** Bytes received from the balancer over all connections. */
  received = 0;
  /** Connections ever accepted. */
  accepted = 0;
  #handler: (socket: Socket, upstream: TestUpstream) => void;

  private constructor(handler: (socket: Socket, upstream: TestUpstream) => void) {
    super(createServer({ allowHalfOpen: true }));
    this.#handler = handler;
    this.server.on("connection", (socket: Socket) => {
      this.accepted++;
      this.sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("data", (chunk: Uint8Array) => this.received += chunk.length);
      this.#handler(socket, this);
    });
  }

  /**
   * Starts an upstream on `port` (0: any).
   *
   * @param handler What to do with each connection; default: echo, and end when the peer ends.
   * @param port The port.
   */
  static async start(
    handler: (socket: Socket, upstream: TestUpstream) => void = echo,
    port = 0,
  ): Promise<TestUpstream> {
    const upstream = new TestUpstream(handler);
    await upstream.listen(port);
    return upstream;
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen({ host: "127.0.0.1", port }, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
  }
}

/** Echoes bytes back; ends its side when the peer ends. */
export function echo(socket: Socket): void {
  socket.on("data", (chunk: Uint8Array) => {
    if (!socket.write(chunk)) socket.pause();
  });
  socket.on("drain", () => socket.resume());
  socket.on("end", () => socket.end());
}

/** Answers every connection with `name\n` and then echoes. */
export function banner(name: string): (socket: Socket) => void {
  return (socket) => {
    socket.write(`${name}\n`);
    echo(socket);
  };
}

/** A running balancer and the PKI it trusts. */
export interface TestBalancer extends AsyncDisposable {
  balancer: Balancer;
  pki: TestPki;
  /** The port of the shared listener, or of a group's dedicated listener. */
  port(group?: string): number;
}

/**
 * Starts a balancer on a config whose `[tls]` section points at the test PKI.
 *
 * @param body TOML after the `[tls]` section (server, limits, health, groups, clients).
 * @param options Injectables passed to the balancer.
 */
export async function startBalancer(
  body: string,
  options: Omit<BalancerOptions, "config" | "tls"> = {},
): Promise<TestBalancer> {
  const pki = await testPki();
  const text = `[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
${body}`;
  const config = parseConfig(text, { path: join(pki.dir, "lb.toml"), baseDir: pki.dir });
  const tls = await loadTlsMaterial(config);
  const balancer = new Balancer({ config, tls, ...options });
  await balancer.start();
  return {
    balancer,
    pki,
    port(group?: string): number {
      const found = balancer.listeners().find((l) => l.group === group);
      if (found === undefined) throw new Error(`No listener for ${group ?? "shared"}`);
      return found.address.port;
    },
    [Symbol.asyncDispose]: () => balancer.close(),
  };
}

/** Options of {@linkcode connectClient}. */
export interface ClientOptions extends Omit<ConnectionOptions, "port" | "host"> {
  /** Omit the client certificate. */
  noCert?: boolean;
}

/**
 * Opens an mTLS connection as `credential` and resolves once the client side of
 * the handshake is done (in TLS 1.3 the server may still refuse afterwards).
 */
export function connectClient(
  port: number,
  credential: TestCredential | undefined,
  options: ClientOptions = {},
): Promise<TLSSocket> {
  const { noCert, ...rest } = options;
  return testPki().then((pki) =>
    new Promise<TLSSocket>((resolve, reject) => {
      const socket = tlsConnect({
        host: "127.0.0.1",
        port,
        ca: pki.ca.certPem,
        servername: "localhost",
        // SNI selects a group here, so the name is not the certificate's.
        checkServerIdentity: () => undefined,
        ...(credential === undefined || noCert
          ? {}
          : { cert: credential.chainPem, key: credential.keyPem }),
        ...rest,
      });
      socket.once("secureConnect", () => {
        socket.off("error", reject);
        resolve(socket);
      });
      socket.once("error", reject);
    })
  );
}

/** Collects everything a socket receives until it closes; never rejects. */
export function readAll(socket: Socket): Promise<{ data: Uint8Array; error?: Error }> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    let error: Error | undefined;
    socket.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    socket.on("error", (e: Error) => error = e);
    socket.on("close", () => {
      const data = concat(chunks);
      resolve(error === undefined ? { data } : { data, error });
    });
  });
}

/** Reads exactly `n` bytes (resolves early with fewer if the socket ends). */
export function readBytes(socket: Socket, n: number): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    let have = 0;
    const onData = (chunk: Uint8Array) => {
      chunks.push(chunk);
      have += chunk.length;
      if (have >= n) finish();
    };
    const finish = () => {
      socket.off("data", onData);
      socket.off("close", finish);
      socket.pause();
      resolve(concat(chunks));
    };
    socket.on("data", onData);
    socket.once("close", finish);
  });
}

/** Resolves with the detail of the next `type` event of `target`. */
export function nextEvent<T>(target: EventTarget, type: string): Promise<T> {
  return new Promise((resolve) =>
    target.addEventListener(type, (e) => resolve((e as CustomEvent<T>).detail), { once: true })
  );
}

export function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

export const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** An HTTP answer read off a raw connection. */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
}

/**
 * Sends one raw HTTP request to `127.0.0.1:port` (fetch() does not let a test
 * choose the `Host` header, or leave it out) and reads the answer to the end.
 *
 * @param port The server's port.
 * @param lines The request line and header lines; `connection: close` is added.
 */
export async function rawRequest(port: number, lines: string[]): Promise<RawResponse> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(`${lines.join("\r\n")}\r\nconnection: close\r\n\r\n`));
  const response = await new Response(conn.readable).text();
  const end = response.indexOf("\r\n\r\n");
  const [statusLine = "", ...headerLines] = response.slice(0, end).split("\r\n");
  const headers = new Headers();
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const status = Number(statusLine.match(/^HTTP\/1\.[01] (\d{3})/)?.[1]);
  return { status, headers, body: response.slice(end + 4) };
}
