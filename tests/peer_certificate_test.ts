import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import * as tls from "node:tls";
import { peerCertificateChain, peerCertificateDer } from "../lib/identity/_peer_certificate.ts";
import { type TestCredential, testPki } from "./_pki_fixtures.ts";

/** Connects `client` to a mutual-TLS server on port 0 and returns what each reading gives. */
async function readBoth(
  client: TestCredential,
): Promise<{ der: Uint8Array | undefined; legacy: Uint8Array; chain: Uint8Array[] }> {
  const pki = await testPki();
  const server = tls.createServer({
    cert: pki.server.certPem,
    key: pki.server.keyPem,
    ca: pki.ca.certPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
  });
  const secured = once(server, "secureConnection") as Promise<[tls.TLSSocket]>;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const socket = tls.connect({
    host: "127.0.0.1",
    port,
    ca: pki.ca.certPem,
    cert: client.chainPem,
    key: client.keyPem,
    servername: "localhost",
  });
  socket.on("error", () => {});
  try {
    const [accepted] = await secured;
    const result = {
      der: peerCertificateDer(accepted),
      legacy: accepted.getPeerCertificate(true).raw as Uint8Array,
      chain: peerCertificateChain(accepted),
    };
    accepted.destroy();
    return result;
  } finally {
    socket.destroy();
    server.close();
    await once(server, "close");
  }
}

Deno.test("peerCertificateDer() returns the leaf a client presented, as getPeerCertificate does", async () => {
  const pki = await testPki();
  const direct = await readBoth(pki.alice);
  assert.deepEqual(direct.der, pki.alice.der);
  assert.deepEqual(direct.der, new Uint8Array(direct.legacy));
});

Deno.test("peerCertificateDer() returns the leaf, not the intermediate, of a chain", async () => {
  const pki = await testPki();
  const chained = await readBoth(pki.viaIntermediate);
  assert.deepEqual(chained.der, pki.viaIntermediate.der);
});

Deno.test("peerCertificateDer() falls back to getPeerCertificate(false) without a usable handle", () => {
  const der = Uint8Array.of(0x30, 0x00);
  let detailed: unknown;
  const fake = (handle: unknown, raw: unknown) =>
    ({
      _handle: handle,
      getPeerCertificate(d: boolean) {
        detailed = d;
        return raw === undefined ? {} : { raw };
      },
    }) as unknown as tls.TLSSocket;
  assert.equal(peerCertificateDer(fake(null, der)), der);
  assert.equal(detailed, false, "the cheap legacy object, without the issuer chain");
  assert.equal(peerCertificateDer(fake({}, der)), der);
  const throwing = {
    getPeerCertificateChain: () => {
      throw new Error("closed");
    },
  };
  assert.equal(peerCertificateDer(fake(throwing, der)), der);
  const empty = { getPeerCertificateChain: () => ({ certificates: [] }) };
  assert.equal(peerCertificateDer(fake(empty, der)), der);
  assert.equal(peerCertificateDer(fake(empty, undefined)), undefined);
  assert.equal(peerCertificateDer(fake(null, new Uint8Array(0))), undefined);
});

Deno.test("peerCertificateChain() returns the presented chain, leaf first", async () => {
  const pki = await testPki();
  assert.deepEqual((await readBoth(pki.alice)).chain, [pki.alice.der]);
  assert.deepEqual((await readBoth(pki.viaIntermediate)).chain, [
    pki.viaIntermediate.der,
    pki.intermediateCa.authority.der,
  ]);
});

Deno.test("peerCertificateChain() falls back to the leaf alone, or nothing", () => {
  const der = Uint8Array.of(0x30, 0x00);
  const fake = (handle: unknown, raw: unknown) =>
    ({
      _handle: handle,
      getPeerCertificate: () => raw === undefined ? {} : { raw },
    }) as unknown as tls.TLSSocket;
  assert.deepEqual(peerCertificateChain(fake(null, der)), [der]);
  const broken = { getPeerCertificateChain: () => ({ certificates: [der, "not DER"] }) };
  assert.deepEqual(peerCertificateChain(fake(broken, der)), [der]);
  assert.deepEqual(peerCertificateChain(fake(null, undefined)), []);
});
