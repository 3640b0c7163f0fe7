/**
 * TLS upstreams for tests: a `node:tls` echo server on 127.0.0.1 port 0 that may
 * require a client certificate, counts what it received, and the upstream
 * certificates the tests of `[groups.<name>.tls]` need (generated, never committed).
 *
 * @module
 */
import { createServer, type Server, type TLSSocket } from "node:tls";
import { issueCertificate, type IssuedCertificate } from "../lib/pki/issue_certificate.ts";
import { type TestPki, testPki } from "./_pki_fixtures.ts";
import { LoopbackServer } from "./_loopback_server.ts";

/** Upstream server certificates, all with the names `localhost`, `127.0.0.1` and `::1` unless said. */
export interface UpstreamCertificates {
  /** Signed by the test `ca`. */
  good: IssuedCertificate;
  /** Signed by the test `ca`, for `db.internal` only. */
  dbInternal: IssuedCertificate;
  /** Signed by the test `ca`, valid from 2 days ago to 1 day ago. */
  expired: IssuedCertificate;
  /** Signed by the foreign CA. */
  foreign: IssuedCertificate;
  /** The client certificate mtlb presents (CN=mtlb-client), signed by the test `ca`. */
  client: IssuedCertificate;
}

let cached: Promise<UpstreamCertificates> | undefined;

/**
 * The upstream certificates, generated once per process.
 *
 * @returns The certificates.
 */
export function upstreamCertificates(): Promise<UpstreamCertificates> {
  cached ??= generate();
  return cached;
}

async function generate(): Promise<UpstreamCertificates> {
  const pki = await testPki();
  const day = 86_400_000;
  const names = { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] };
  const root = pki.ca.authority;
  return {
    good: await issueCertificate(root, { commonName: "upstream", kind: "server", ...names }),
    dbInternal: await issueCertificate(root, {
      commonName: "db.internal",
      kind: "server",
      dnsNames: ["db.internal"],
      ipAddresses: [],
    }),
    expired: await issueCertificate(root, {
      commonName: "upstream-expired",
      kind: "server",
      ...names,
      notBefore: new Date(Date.now() - 2 * day),
      notAfter: new Date(Date.now() - day),
    }),
    foreign: await issueCertificate(pki.foreignCa.authority, {
      commonName: "upstream-foreign",
      kind: "server",
      ...names,
    }),
    client: await issueCertificate(root, { commonName: "mtlb-client", kind: "client" }),
  };
}

/** Options of {@linkcode TlsUpstream.start}. */
export interface TlsUpstreamOptions {
  /** The certificate it presents. */
  certificate: IssuedCertificate;
  /**
   * Require a client certificate signed by the test `ca`.
   *
   * @default {false}
   */
  requireClientCert?: boolean;
  /**
   * Ask for a client certificate without requiring one, to see whether one is sent.
   *
   * @default {false}
   */
  requestClientCert?: boolean;
}

/** An echo server over TLS that records who connected and what it received. */
export class TlsUpstream extends LoopbackServer<TLSSocket> {
  /** Bytes received over all connections (decrypted). */
  received = 0;
  /** TCP connections accepted, handshakes completed or not. */
  tcpAccepted = 0;
  /** Handshakes completed. */
  secured = 0;
  /** The client certificate CN of each completed handshake, or `""`. */
  readonly clients: string[] = [];
  /** The SNI of each completed handshake, or `""`. */
  readonly servernames: string[] = [];

  private constructor(server: Server) {
    super(server);
  }

  /**
   * Starts one on 127.0.0.1, port 0.
   *
   * @param options Its certificate, and whether it requires a client certificate.
   * @returns The running upstream.
   */
  static async start(options: TlsUpstreamOptions): Promise<TlsUpstream> {
    const pki: TestPki = await testPki();
    const require = options.requireClientCert ?? false;
    const server = createServer({
      cert: options.certificate.chainPem,
      key: options.certificate.keyPem,
      ca: [pki.ca.certPem],
      requestCert: require || (options.requestClientCert ?? false),
      rejectUnauthorized: require,
      allowHalfOpen: true,
    });
    const upstream = new TlsUpstream(server);
    server.on("connection", () => upstream.tcpAccepted++);
    server.on("tlsClientError", () => {});
    server.on("secureConnection", (socket: TLSSocket) => {
      upstream.secured++;
      upstream.sockets.add(socket);
      const peer = socket.getPeerCertificate();
      upstream.clients.push(peer?.subject?.CN ?? "");
      const servername = (socket as { servername?: unknown }).servername;
      upstream.servernames.push(typeof servername === "string" ? servername : "");
      socket.on("error", () => {});
      socket.on("close", () => upstream.sockets.delete(socket));
      socket.on("data", (chunk: Uint8Array) => {
        upstream.received += chunk.length;
        socket.write(chunk);
      });
      socket.on("end", () => socket.end());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return upstream;
  }
}
