/**
 * TlsListeners: what the runtime's own handshake timer is set to. Deno holds every
 * socket whose handshake fails until that timer expires, so it follows
 * handshake_timeout (with a second to spare) instead of Node's default of 120 s.
 */
import assert from "node:assert/strict";
import { systemClock } from "../lib/core/clock.ts";
import { secureContextOptions, TlsListeners } from "../lib/listener/tls_listeners.ts";
import { testPki } from "./_pki_fixtures.ts";

Deno.test("TlsListeners lets the runtime free a failed handshake a second after handshake_timeout, reloads included", async () => {
  const pki = await testPki();
  let handshakeTimeout = 2000;
  const listeners = new TlsListeners({
    clock: systemClock,
    logListening: false,
    settings: () => ({ caps: { maxConnections: 100, maxHandshakes: 100 }, handshakeTimeout }),
    selectAlpn: () => undefined,
    needsClientHello: () => false,
    onSecure: ({ socket }) => socket.destroy(),
    onFull: () => {},
    onHandshakeError: () => {},
  });
  const listener = await listeners.listen(
    "127.0.0.1:0",
    "echo",
    secureContextOptions(["TLS_AES_128_GCM_SHA256"], {
      ca: pki.ca.certPem,
      cert: pki.server.chainPem,
      key: pki.server.keyPem,
    }),
  );
  const runtimeTimer = () => (listener.server as { _handshakeTimeout?: number })._handshakeTimeout;
  assert.equal(runtimeTimer(), 3000);
  handshakeTimeout = 500;
  listeners.refresh(listener);
  assert.equal(runtimeTimer(), 1500, "a reload's handshake_timeout");
  await listeners.close(listener);
});
