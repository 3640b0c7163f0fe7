import assert from "node:assert/strict";
import { ClientTrust, type ClientVerdict, TRUST_DENIALS } from "../lib/identity/client_trust.ts";
import { RevocationList } from "../lib/identity/crl.ts";
import { createCrl } from "../lib/pki/crl_issuer.ts";
import { SignatureCache } from "../lib/identity/signature_cache.ts";
import { TrustStore } from "../lib/identity/trust_store.ts";
import { rolloverPki, testPki } from "./_pki_fixtures.ts";

const DAY = 24 * 60 * 60 * 1000;

function outcome(verdict: ClientVerdict): string {
  return verdict.ok ? "ok" : verdict.reason;
}

Deno.test("ClientTrust.checkHandshake() and verifyChain() agree on chains the runtime accepts", async (t) => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem, { cache: new SignatureCache() });
  const trust = new ClientTrust({ store });
  const optional = new ClientTrust({ store, clientEku: "optional" });
  const cases: [string, Uint8Array[], string, string?][] = [
    ["a client of the root", [pki.alice.der], "ok"],
    ["a client of a presented intermediate", [
      pki.viaIntermediate.der,
      pki.intermediateCa.authority.der,
    ], "ok"],
    ["no extended key usage", [pki.noEku.der], "no_client_eku", "ok"],
    ["serverAuth only", [pki.wrongEku.der], "wrong_eku", "wrong_eku"],
    ["expired", [pki.expired.der], "expired"],
    ["not yet valid", [pki.notYetValid.der], "not_yet_valid"],
    ["no certificate", [], "bad_certificate"],
    ["not DER", [Uint8Array.of(1, 2, 3)], "bad_certificate"],
  ];
  for (const [name, chain, expected, withOptional] of cases) {
    await t.step(name, () => {
      assert.equal(outcome(trust.checkHandshake(chain)), expected);
      assert.equal(outcome(trust.verifyChain(chain)), expected);
      const loose = withOptional ?? expected;
      assert.equal(outcome(optional.checkHandshake(chain)), loose);
      assert.equal(outcome(optional.verifyChain(chain)), loose);
    });
  }
  await t.step("the verdict carries identity and issuer", () => {
    const verdict = trust.checkHandshake([
      pki.viaIntermediate.der,
      pki.intermediateCa.authority.der,
    ]);
    assert.ok(verdict.ok);
    assert.equal(verdict.identity.cn, "via-intermediate");
    assert.equal(verdict.issuer.intermediate, 0);
    const refused = trust.checkHandshake([pki.noEku.der]);
    assert.ok(!refused.ok);
    assert.equal(refused.identity?.cn, "no-eku");
    assert.match(refused.detail, /client_eku = "optional"/);
  });
  assert.ok(TRUST_DENIALS.includes("crl_missing"));
});

Deno.test("ClientTrust.verifyChain() checks what a resumed session skipped", async () => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem, { cache: new SignatureCache() });
  const trust = new ClientTrust({ store });
  const tampered = pki.alice.der.slice();
  tampered[tampered.length - 2]! ^= 0x01;
  // A full handshake would never hand this to checkHandshake: the runtime refuses it.
  assert.equal(outcome(trust.verifyChain([tampered])), "bad_signature");
  assert.equal(outcome(trust.verifyChain([pki.intruder.der])), "unknown_ca");
  assert.equal(outcome(trust.verifyChain([pki.viaIntermediate.der])), "unknown_ca");
});

Deno.test("ClientTrust.verifyChain() judges a live connection by the trust in force after a reload", async () => {
  const pki = await testPki();
  const before = new ClientTrust({
    store: TrustStore.fromPem(pki.ca.certPem + pki.foreignCa.certPem),
  });
  assert.equal(outcome(before.verifyChain([pki.intruder.der])), "ok");
  // The reload drops the foreign CA and adds a CRL revoking bob.
  const store = TrustStore.fromPem(pki.ca.certPem);
  const after = new ClientTrust({
    store,
    crl: await RevocationList.parse(await createCrl(pki.ca.authority, [pki.bob.serial]), store),
  });
  assert.equal(outcome(after.verifyChain([pki.intruder.der])), "unknown_ca");
  assert.equal(outcome(after.verifyChain([pki.bob.der])), "revoked");
  assert.equal(outcome(after.verifyChain([pki.alice.der])), "ok");
  // Later, the CRL is past its nextUpdate: fail closed.
  assert.equal(outcome(after.verifyChain([pki.alice.der], Date.now() + 8 * DAY)), "crl_expired");
});

Deno.test("ClientTrust refuses a CA without a CRL unless crl_missing is allow", async () => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem);
  const crl = await RevocationList.parse(await createCrl(pki.ca.authority, []), store);
  const chain = [pki.viaIntermediate.der, pki.intermediateCa.authority.der];
  const strict = new ClientTrust({ store, crl });
  const lenient = new ClientTrust({ store, crl, crlMissing: "allow" });
  assert.equal(outcome(strict.checkHandshake(chain)), "crl_missing");
  assert.equal(outcome(strict.verifyChain(chain)), "crl_missing");
  assert.equal(outcome(lenient.checkHandshake(chain)), "ok");
  assert.equal(outcome(lenient.verifyChain(chain)), "ok");
  assert.equal(outcome(strict.checkHandshake([pki.alice.der])), "ok");
});

Deno.test("ClientTrust refuses the revoked client of a rollover and admits the other CA's, in both CRL orders", async (t) => {
  const { keyed, bare } = await rolloverPki();
  for (const [name, roll] of [["keyed", keyed], ["bare", bare]] as const) {
    const oldCrl = await createCrl(roll.old, [roll.oldClient.serial]);
    const nextCrl = await createCrl(roll.next, []);
    for (const crlPem of [oldCrl + nextCrl, nextCrl + oldCrl]) {
      await t.step(`${name}, ${crlPem.startsWith(oldCrl) ? "old" : "new"} CRL first`, async () => {
        const store = TrustStore.fromPem(roll.bundle, { cache: new SignatureCache() });
        const trust = new ClientTrust({
          store,
          crl: await RevocationList.parse(crlPem, store),
        });
        assert.equal(outcome(trust.checkHandshake([roll.oldClient.der])), "revoked");
        assert.equal(outcome(trust.verifyChain([roll.oldClient.der])), "revoked");
        const admitted = trust.checkHandshake([roll.nextClient.der]);
        assert.ok(admitted.ok);
        assert.equal(admitted.issuer.authority, store.authorities[1]);
        assert.equal(outcome(trust.verifyChain([roll.nextClient.der])), "ok");
      });
    }
  }
});

Deno.test("ClientTrust.checkHandshake() remembers the path's signatures, so verifyChain() of the chain checks none again", async () => {
  const pki = await testPki();
  const cache = new SignatureCache();
  const store = TrustStore.fromPem(pki.ca.certPem, { cache });
  const trust = new ClientTrust({ store });
  const chain = [pki.viaIntermediate.der, pki.intermediateCa.authority.der];
  assert.equal(cache.size, 0);
  assert.equal(outcome(trust.checkHandshake(chain)), "ok");
  assert.equal(cache.size, 2, "the leaf's and the intermediate's signatures");
  assert.equal(outcome(trust.verifyChain(chain)), "ok");
  assert.equal(cache.size, 2, "nothing new had to be verified");
  // A chain that was never located is verified, and then remembered.
  assert.equal(outcome(trust.verifyChain([pki.bob.der])), "ok");
  assert.equal(cache.size, 3);
});

Deno.test("ClientTrust reads a certificate it has seen once, and still judges its validity at every call", async () => {
  const pki = await testPki();
  const trust = new ClientTrust({ store: TrustStore.fromPem(pki.ca.certPem) });
  const first = trust.checkHandshake([pki.alice.der]);
  // The same bytes in another buffer, as the runtime hands them over on each connection.
  const again = trust.checkHandshake([pki.alice.der.slice()]);
  assert.ok(first.ok && again.ok);
  assert.equal(again.identity, first.identity, "read once, not parsed again");
  const bob = trust.checkHandshake([pki.bob.der]);
  assert.ok(bob.ok);
  assert.notEqual(bob.identity, first.identity);
  assert.equal(bob.identity.cn, "bob");
  // Remembered, a certificate is still refused once it has expired.
  const later = trust.checkHandshake([pki.alice.der], first.validity.notAfter + 1);
  assert.equal(outcome(later), "expired");
  assert.equal(outcome(trust.verifyChain([pki.alice.der], first.validity.notAfter + 1)), "expired");
});
