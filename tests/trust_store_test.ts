import assert from "node:assert/strict";
import "reflect-metadata";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  type Extension as X509Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { join } from "node:path";
import {
  type CertificateAuthority,
  createCa,
  createIntermediateCa,
} from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import { type KeyAlgorithmName, signingAlgorithmOf } from "../lib/pki/key_algorithms.ts";
import { SignatureCache } from "../lib/identity/signature_cache.ts";
import { TrustStore, TrustStoreError, type VerifyResult } from "../lib/identity/trust_store.ts";
import { identityFromCertificate } from "../lib/identity/certificate.ts";
import { rolloverPki, testPki } from "./_pki_fixtures.ts";

const DAY = 24 * 60 * 60 * 1000;

function reason(result: VerifyResult): string {
  return result.ok ? "ok" : result.reason;
}

/** A certificate with the given extensions, signed by `issuer` (or self-signed). */
async function custom(
  issuer: CertificateAuthority | undefined,
  options: {
    commonName: string;
    extensions: X509Extension[];
    keys?: CryptoKeyPair;
    notBefore?: Date;
    notAfter?: Date;
  },
): Promise<{ der: Uint8Array; authority: CertificateAuthority }> {
  const keys = options.keys ??
    await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair;
  const subject = new Name([{ CN: [{ utf8String: options.commonName }] }]);
  const cert = await X509CertificateGenerator.create({
    serialNumber: "0102",
    subject,
    issuer: issuer === undefined ? subject : new X509Certificate(issuer.certPem).subjectName,
    notBefore: options.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: options.notAfter ?? new Date(Date.now() + 365 * DAY),
    publicKey: keys.publicKey,
    signingKey: (issuer?.keys ?? keys).privateKey,
    signingAlgorithm: signingAlgorithmOf((issuer?.keys ?? keys).privateKey),
    extensions: options.extensions,
  });
  const der = new Uint8Array(cert.rawData);
  const certPem = `${cert.toString("pem")}\n`;
  return {
    der,
    authority: {
      certPem,
      keyPem: "",
      der,
      keys,
      intermediatesPem: issuer === undefined ? "" : certPem + issuer.intermediatesPem,
      serial: "102",
    },
  };
}

const CA_EXTENSIONS = async (keys: CryptoKeyPair, pathLength?: number) => [
  new BasicConstraintsExtension(true, pathLength, true),
  new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
  await SubjectKeyIdentifierExtension.create(keys.publicKey),
];

Deno.test("TrustStore.fromPem() reads every CA of a bundle with its facts", async () => {
  const pki = await testPki();
  const root = pki.ca.authority;
  const intermediate = pki.intermediateCa.authority;
  const store = TrustStore.fromPem(root.certPem + intermediate.certPem + root.certPem);
  assert.equal(store.authorities.length, 2, "a repeated certificate counts once");
  const [first, second] = store.authorities;
  assert.equal(first!.subject, "CN=mtlb test CA");
  assert.equal(first!.spkiSha256, identityFromCertificate(root.der).spkiSha256);
  assert.equal(first!.selfSigned, true);
  assert.equal(first!.issuesCertificates, true);
  assert.equal(first!.signedBy, undefined);
  assert.equal(second!.subject, "CN=mtlb test intermediate");
  assert.equal(second!.selfSigned, false);
  assert.equal(second!.signedBy, first);
  assert.equal(second!.serial, intermediate.serial);
  assert.match(second!.keyId ?? "", /^[0-9a-f]{40}$/);
  assert.ok(Object.isFrozen(second));
  assert.notEqual(first!.id, second!.id);
});

Deno.test("TrustStore.fromPem() throws TrustStoreError on a bundle it cannot use", async (t) => {
  const pki = await testPki();
  const cases: [string, string, RegExp][] = [
    ["no certificate", "hello", /found none/],
    [
      "not base64",
      "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----",
      /found none|not valid base64/,
    ],
    [
      "not a certificate",
      `${pki.ca.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`,
      /certificate number 2 cannot be parsed: Cannot read certificate: malformed DER/,
    ],
  ];
  for (const [name, pem, message] of cases) {
    await t.step(name, () => {
      assert.throws(
        () => TrustStore.fromPem(pem),
        (e: unknown) => e instanceof TrustStoreError && message.test(e.message),
      );
    });
  }
});

Deno.test("TrustStore.issuerOf() finds the one CA of that name without a signature check", async () => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem);
  const found = store.issuerOf(pki.alice.der);
  assert.equal(found?.authority, store.authorities[0]);
  assert.equal(found?.spkiSha256, store.authorities[0]!.spkiSha256);
  assert.equal(store.issuerOf(pki.intruder.der), undefined);
  // Issued by an intermediate outside the bundle: found among the presented ones.
  const via = store.issuerOf(pki.viaIntermediate.der, [
    pki.alice.der,
    pki.intermediateCa.authority.der,
  ]);
  assert.equal(via?.intermediate, 1);
  assert.equal(
    via?.spkiSha256,
    identityFromCertificate(pki.intermediateCa.authority.der).spkiSha256,
  );
  // The intermediate is in the bundle too: the bundle's CA, even when presented.
  const both = TrustStore.fromPem(pki.ca.certPem + pki.intermediateCa.certPem);
  assert.equal(
    both.issuerOf(pki.viaIntermediate.der, [pki.intermediateCa.authority.der])?.authority,
    both.authorities[1],
  );
});

Deno.test("TrustStore.issuerOf() tells two CAs of one name apart, with or without key identifiers", async (t) => {
  const { keyed, bare } = await rolloverPki();
  for (const [name, roll] of [["keyed", keyed], ["bare", bare]] as const) {
    await t.step(name, () => {
      for (const bundle of [roll.bundle, roll.next.certPem + roll.old.certPem]) {
        const store = TrustStore.fromPem(bundle, { cache: new SignatureCache() });
        const [oldCa, nextCa] = bundle === roll.bundle
          ? store.authorities
          : [store.authorities[1], store.authorities[0]];
        assert.equal(store.issuerOf(roll.oldClient.der)?.authority, oldCa);
        assert.equal(store.issuerOf(roll.nextClient.der)?.authority, nextCa);
      }
    });
  }
});

Deno.test("TrustStore.issuerOf() trusts the signature, not a key identifier the certificate claims", async () => {
  const { keyed } = await rolloverPki();
  // Signed by the old CA, but claiming the new CA's key identifier.
  const forged = await custom(keyed.old, {
    commonName: "forged",
    extensions: [
      new BasicConstraintsExtension(false, undefined, true),
      await AuthorityKeyIdentifierExtension.create(keyed.next.keys.publicKey),
      new ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.2"]),
    ],
  });
  const store = TrustStore.fromPem(keyed.bundle, { cache: new SignatureCache() });
  assert.equal(store.issuerOf(forged.der)?.authority, store.authorities[0]);
  const verified = store.verify([forged.der]);
  assert.ok(verified.ok);
  assert.equal(verified.path.anchor, store.authorities[0]);
});

Deno.test("TrustStore.verify() accepts good chains and returns their path", async (t) => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem);
  await t.step("a leaf of the root", () => {
    const result = store.verify([pki.alice.der]);
    assert.ok(result.ok);
    assert.equal(result.path.anchor.subject, "CN=mtlb test CA");
    assert.equal(result.path.certificates.length, 1);
    assert.equal(result.path.certificates[0]!.serial, pki.alice.serial);
    assert.equal(result.path.issuer.authority, result.path.anchor);
  });
  await t.step("a leaf of a presented intermediate", () => {
    const result = store.verify([pki.viaIntermediate.der, pki.intermediateCa.authority.der]);
    assert.ok(result.ok);
    assert.deepEqual(
      result.path.certificates.map((c) => c.serial),
      [pki.viaIntermediate.serial, pki.intermediateCa.serial],
    );
    assert.equal(result.path.issuer.intermediate, 0);
  });
  await t.step("extra and unreadable certificates are ignored", () => {
    const junk = Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x01);
    const result = store.verify([
      pki.viaIntermediate.der,
      junk,
      pki.bob.der,
      pki.intermediateCa.authority.der,
    ]);
    assert.ok(result.ok);
    assert.equal(result.path.issuer.intermediate, 2, "counted from the certificate after the leaf");
  });
  await t.step("an intermediate of the bundle is an anchor", () => {
    const both = TrustStore.fromPem(pki.ca.certPem + pki.intermediateCa.certPem);
    const result = both.verify([pki.viaIntermediate.der]);
    assert.ok(result.ok);
    assert.equal(result.path.anchor.subject, "CN=mtlb test intermediate");
    assert.equal(result.path.anchor.signedBy?.subject, "CN=mtlb test CA");
  });
  await t.step("no extended key usage with client_eku optional", () => {
    assert.equal(reason(store.verify([pki.noEku.der])), "no_client_eku");
    assert.equal(reason(store.verify([pki.noEku.der], { eku: "optional" })), "ok");
  });
});

Deno.test("TrustStore.verify() verifies each supported signature algorithm", async (t) => {
  const algorithms: KeyAlgorithmName[] = ["P-256", "P-384", "RSA", "RSA-PSS", "Ed25519"];
  for (const keyAlgorithm of algorithms) {
    await t.step(keyAlgorithm, async () => {
      const root = await createCa({ commonName: `Root ${keyAlgorithm}`, keyAlgorithm });
      const issuing = await createIntermediateCa(root, { commonName: "Issuing", keyAlgorithm });
      const leaf = await issueCertificate(issuing, {
        commonName: "svc",
        kind: "client",
        keyAlgorithm,
      });
      const store = TrustStore.fromPem(root.certPem, { cache: new SignatureCache() });
      assert.equal(reason(store.verify([leaf.der, issuing.der])), "ok");
      // A flipped bit in the leaf's signature.
      const tampered = leaf.der.slice();
      tampered[tampered.length - 2]! ^= 0x01;
      assert.equal(reason(store.verify([tampered, issuing.der])), "bad_signature");
    });
  }
});

Deno.test("TrustStore.verify() gives each failure its reason", async (t) => {
  const pki = await testPki();
  const root = pki.ca.authority;
  const store = TrustStore.fromPem(pki.ca.certPem, { cache: new SignatureCache() });
  const now = Date.now();
  const client = (commonName: string) => ({ commonName, kind: "client" as const });
  const caKeys = async () =>
    await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair;

  type Case = [VerifyResult, string, RegExp?];
  const cases: [string, () => Case | Promise<Case>][] = [
    ["malformed DER", () => [store.verify([Uint8Array.of(1, 2, 3)]), "bad_certificate"]],
    ["no certificate", () => [store.verify([]), "bad_certificate"]],
    ["a CA certificate as the leaf", () => [
      store.verify([pki.intermediateCa.authority.der]),
      "bad_certificate",
      /is a CA certificate/,
    ]],
    ["an unsupported critical extension", async () => {
      const leaf = await custom(root, {
        commonName: "critical",
        extensions: [
          new BasicConstraintsExtension(false, undefined, true),
          new ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.2"]),
          new Extension("1.2.3.4", true, Uint8Array.of(0x05, 0x00)),
        ],
      });
      return [store.verify([leaf.der]), "bad_certificate", /critical extension 1\.2\.3\.4/];
    }],
    ["a SHA-1 signature", async () => {
      const keys = await crypto.subtle.generateKey(
        {
          name: "RSASSA-PKCS1-v1_5",
          modulusLength: 2048,
          publicExponent: Uint8Array.of(1, 0, 1),
          hash: "SHA-1",
        },
        true,
        ["sign", "verify"],
      ) as CryptoKeyPair;
      const rsa = await custom(undefined, {
        commonName: "SHA-1 root",
        keys,
        extensions: await CA_EXTENSIONS(keys),
      });
      const leaf = await custom(rsa.authority, {
        commonName: "sha1",
        extensions: [new ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.2"])],
      });
      const rsaStore = TrustStore.fromPem(rsa.authority.certPem);
      return [rsaStore.verify([leaf.der]), "bad_certificate", /1\.2\.840\.113549\.1\.1\.5/];
    }],
    ["a foreign CA", () => [store.verify([pki.intruder.der]), "unknown_ca"]],
    ["an intermediate not sent", () => [
      store.verify([pki.viaIntermediate.der]),
      "unknown_ca",
      /issuer CN=mtlb test intermediate/,
    ]],
    ["same issuer name, another key", async () => {
      const impostor = await createCa({ commonName: "mtlb test CA" });
      const leaf = await issueCertificate(impostor, client("impostor"));
      return [store.verify([leaf.der]), "bad_signature"];
    }],
    ["an expired leaf", () => [store.verify([pki.expired.der]), "expired"]],
    ["a leaf not yet valid", () => [store.verify([pki.notYetValid.der]), "not_yet_valid"]],
    ["an expired intermediate", async () => {
      const old = await createIntermediateCa(root, {
        commonName: "old intermediate",
        notBefore: new Date(now - 10 * DAY),
        notAfter: new Date(now - DAY),
      });
      const leaf = await issueCertificate(old, client("late"));
      return [store.verify([leaf.der, old.der]), "expired", /intermediate CA CN=old intermediate/];
    }],
    ["an expired root", async () => {
      const oldRoot = await createCa({
        commonName: "old root",
        notBefore: new Date(now - 10 * DAY),
        notAfter: new Date(now - DAY),
      });
      const leaf = await issueCertificate(oldRoot, {
        ...client("orphan"),
        notBefore: new Date(now - 2 * DAY),
        notAfter: new Date(now + DAY),
      });
      const oldStore = TrustStore.fromPem(oldRoot.certPem);
      return [oldStore.verify([leaf.der]), "expired", /CA CN=old root of the bundle/];
    }],
    ["a leaf as an issuer", async () => {
      const alice = await issueCertificate(root, client("alice-ca"));
      const leaf = await issueCertificate(
        { ...alice, intermediatesPem: alice.certPem } as CertificateAuthority,
        client("grandchild"),
      );
      return [store.verify([leaf.der, alice.der]), "not_a_ca", /not a CA certificate/];
    }],
    ["a CA without keyCertSign", async () => {
      const keys = await caKeys();
      const ca = await custom(root, {
        commonName: "no keyCertSign",
        keys,
        extensions: [
          new BasicConstraintsExtension(true, undefined, true),
          new KeyUsagesExtension(KeyUsageFlags.cRLSign, true),
        ],
      });
      const leaf = await issueCertificate(ca.authority, client("under"));
      return [store.verify([leaf.der, ca.der]), "not_a_ca", /keyCertSign/];
    }],
    ["past a pathLenConstraint", async () => {
      const issuing = pki.intermediateCa.authority; // pathLenConstraint 0
      const sub = await createIntermediateCa(issuing, { commonName: "sub" });
      const leaf = await issueCertificate(sub, client("deep"));
      return [store.verify([leaf.der, sub.der, issuing.der]), "path_too_long", /allows 0/];
    }],
    ["an intermediate for servers only", async () => {
      const keys = await caKeys();
      const ca = await custom(root, {
        commonName: "servers only",
        keys,
        extensions: [
          ...await CA_EXTENSIONS(keys),
          new ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.1"]),
        ],
      });
      const leaf = await issueCertificate(ca.authority, client("via-servers"));
      return [store.verify([leaf.der, ca.der]), "wrong_eku", /intermediate CA/];
    }],
    ["nameConstraints", async () => {
      const keys = await caKeys();
      const ca = await custom(root, {
        commonName: "constrained",
        keys,
        extensions: [
          ...await CA_EXTENSIONS(keys),
          // nameConstraints, critical: permitted dNSName example.org
          new Extension(
            "2.5.29.30",
            true,
            Uint8Array.of(
              0x30,
              0x0f,
              0xa0,
              0x0d,
              0x30,
              0x0b,
              0x82,
              0x09,
              ...new TextEncoder().encode("ample.org"),
            ),
          ),
        ],
      });
      const leaf = await issueCertificate(ca.authority, client("constrained-leaf"));
      return [store.verify([leaf.der, ca.der]), "bad_certificate", /nameConstraints/];
    }],
    ["no extended key usage", () => [store.verify([pki.noEku.der]), "no_client_eku"]],
    ["serverAuth only", () => [store.verify([pki.wrongEku.der]), "wrong_eku"]],
    ["a server certificate", () => [store.verify([pki.server.der]), "wrong_eku"]],
  ];
  for (const [name, run] of cases) {
    await t.step(name, async () => {
      const [result, expected, detail] = await run();
      assert.equal(reason(result), expected, result.ok ? "" : result.detail);
      if (detail !== undefined && !result.ok) assert.match(result.detail, detail);
    });
  }
});

Deno.test("TrustStore takes, of two certificates of one CA (name and key), the one still valid", async () => {
  // A root re-issued with the same key and a longer life: the old certificate has expired.
  const now = Date.now();
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const old = await custom(undefined, {
    commonName: "Reissued root",
    keys,
    extensions: await CA_EXTENSIONS(keys),
    notBefore: new Date(now - 10 * DAY),
    notAfter: new Date(now - DAY),
  });
  const renewed = await custom(undefined, {
    commonName: "Reissued root",
    keys,
    extensions: await CA_EXTENSIONS(keys),
  });
  const leaf = await issueCertificate(renewed.authority, { commonName: "svc", kind: "client" });
  const store = TrustStore.fromPem(old.authority.certPem + renewed.authority.certPem);
  assert.equal(store.authorities[0]!.id, store.authorities[1]!.id, "one CA: one id");
  const result = store.verify([leaf.der]);
  assert.ok(result.ok, result.ok ? "" : result.detail);
  assert.equal(result.path.anchor, store.authorities[1]);
  // The handshake path agrees, without a signature check: one key, one issuer.
  const located = store.locate([leaf.der]);
  assert.ok(located.ok, located.ok ? "" : located.detail);
  assert.equal(located.path.anchor, store.authorities[1]);
});

Deno.test("TrustStore.verify() remembers verified signatures, and only those", async () => {
  const pki = await testPki();
  const cache = new SignatureCache({ maxEntries: 2 });
  const store = TrustStore.fromPem(pki.ca.certPem, { cache });
  assert.ok(store.verify([pki.viaIntermediate.der, pki.intermediateCa.authority.der]).ok);
  assert.equal(cache.size, 2, "the leaf's and the intermediate's signatures");
  assert.ok(store.verify([pki.viaIntermediate.der, pki.intermediateCa.authority.der]).ok);
  const tampered = pki.alice.der.slice();
  tampered[tampered.length - 2]! ^= 0x01;
  assert.equal(reason(store.verify([tampered])), "bad_signature");
  assert.equal(cache.size, 2);
  assert.ok(store.verify([pki.alice.der]).ok);
  assert.equal(cache.size, 2, "the oldest entry made room");
  // Another store over the same cache: the entries name bytes and keys, not a store.
  const other = TrustStore.fromPem(pki.ca.certPem, { cache });
  assert.ok(other.verify([pki.alice.der]).ok);
  assert.throws(() => new SignatureCache({ maxEntries: 0 }), RangeError);
});

Deno.test("TrustStore.locate() follows a verified chain and checks dates", async () => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem);
  const result = store.locate([pki.viaIntermediate.der, pki.intermediateCa.authority.der]);
  assert.ok(result.ok);
  assert.equal(result.path.anchor, store.authorities[0]);
  assert.equal(result.path.certificates[1]!.serial, pki.intermediateCa.serial);
  assert.equal(result.path.issuer.intermediate, 0);
  assert.equal(reason(store.locate([pki.viaIntermediate.der])), "unknown_ca");
  assert.equal(
    reason(store.locate([pki.alice.der], { now: Date.now() + 20 * 365 * DAY })),
    "expired",
  );
  assert.equal(reason(store.locate([])), "bad_certificate");
});

Deno.test({
  name: "TrustStore.verify() agrees with openssl verify -purpose sslclient",
  ignore: !(await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output()
    .then((o) => o.success, () => false)),
  async fn(t) {
    const pki = await testPki();
    const store = TrustStore.fromPem(pki.ca.certPem);
    const sub = await createIntermediateCa(pki.intermediateCa.authority, { commonName: "sub" });
    const deep = await issueCertificate(sub, { commonName: "deep", kind: "client" });
    const impostor = await issueCertificate(await createCa({ commonName: "mtlb test CA" }), {
      commonName: "impostor",
      kind: "client",
    });
    const dir = await Deno.makeTempDir({ prefix: "mtlb_verify_" });
    try {
      const cases: [string, Uint8Array[]][] = [
        ["alice", [pki.alice.der]],
        ["via intermediate", [pki.viaIntermediate.der, pki.intermediateCa.authority.der]],
        ["intermediate missing", [pki.viaIntermediate.der]],
        ["expired", [pki.expired.der]],
        ["not yet valid", [pki.notYetValid.der]],
        ["serverAuth only", [pki.wrongEku.der]],
        ["foreign", [pki.intruder.der]],
        ["impostor", [impostor.der]],
        ["path too long", [deep.der, sub.der, pki.intermediateCa.authority.der]],
      ];
      const pem = (der: Uint8Array) =>
        `-----BEGIN CERTIFICATE-----\n${
          btoa(String.fromCharCode(...der)).replace(/.{64}/g, "$&\n")
        }\n-----END CERTIFICATE-----\n`;
      for (const [name, chain] of cases) {
        await t.step(name, async () => {
          await Deno.writeTextFile(join(dir, "leaf.pem"), pem(chain[0]!));
          await Deno.writeTextFile(join(dir, "untrusted.pem"), chain.slice(1).map(pem).join(""));
          const args = ["verify", "-purpose", "sslclient", "-CAfile", pki.ca.certPath];
          if (chain.length > 1) args.push("-untrusted", join(dir, "untrusted.pem"));
          const out = await new Deno.Command("openssl", {
            args: [...args, join(dir, "leaf.pem")],
            stdout: "null",
            stderr: "null",
          }).output();
          // OpenSSL accepts a client certificate without extended key usage: compare
          // with client_eku = "optional".
          const ours = store.verify(chain, { eku: "optional" });
          assert.equal(ours.ok, out.success, ours.ok ? "" : `${ours.reason}: ${ours.detail}`);
        });
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
