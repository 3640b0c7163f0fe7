import assert from "node:assert/strict";
import "reflect-metadata";
import {
  BasicConstraintsExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  PemConverter,
  X509Certificate,
  X509CertificateGenerator,
  X509CrlGenerator,
} from "@peculiar/x509";
import { join } from "node:path";
import { type CheckPathOptions, CrlError, crlToPem, RevocationList } from "../lib/identity/crl.ts";
import { createCrl } from "../lib/pki/crl_issuer.ts";
import { createCa, createIntermediateCa } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import { ConfigError, loadTlsMaterial, type TlsConfig } from "../lib/config/mod.ts";
import { TrustStore } from "../lib/identity/trust_store.ts";
import { rolloverPki, testPki } from "./_pki_fixtures.ts";

const DAY = 24 * 60 * 60 * 1000;

function der(pem: string): Uint8Array {
  const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

Deno.test("RevocationList.check() refuses revoked serials of the CRL's issuer only", async () => {
  const pki = await testPki();
  const crl = await createCrl(pki.ca.authority, [pki.bob.serial, "ff"]);
  const list = await RevocationList.parse(crl, pki.ca.certPem);
  assert.equal(list.check(pki.alice.der, pki.alice.serial), "ok");
  assert.equal(list.check(pki.bob.der, pki.bob.serial), "revoked");
  // Same serial, another issuer: the root's CRL does not speak for the intermediate.
  const other = await issueCertificate(pki.intermediateCa.authority, {
    commonName: "twin",
    kind: "client",
    serialNumber: pki.bob.serial,
  });
  assert.equal(list.check(other.der, other.serial), "ok");
  assert.deepEqual(list.lists.map((l) => [l.issuer, l.revoked]), [["CN=mtlb test CA", 2]]);
});

Deno.test("RevocationList.check() fails closed once the issuer's CRL is past nextUpdate", async () => {
  const pki = await testPki();
  const nextUpdate = new Date(Date.now() + DAY);
  const list = await RevocationList.parse(
    await createCrl(pki.ca.authority, [], { nextUpdate }),
    pki.ca.certPem,
  );
  assert.equal(list.nextUpdate?.getTime(), Math.floor(nextUpdate.getTime() / 1000) * 1000);
  assert.equal(list.check(pki.alice.der, pki.alice.serial, nextUpdate.getTime() - 1000), "ok");
  assert.equal(
    list.check(pki.alice.der, pki.alice.serial, nextUpdate.getTime() + 1000),
    "crl_expired",
  );
  // A certificate of an issuer without a CRL is not affected.
  assert.equal(
    list.check(pki.viaIntermediate.der, pki.viaIntermediate.serial, nextUpdate.getTime() + 1000),
    "ok",
  );
});

Deno.test("RevocationList.parse() takes several CRLs, one per CA of the bundle, PEM or DER", async () => {
  const root = await createCa({ commonName: "Root" });
  const intermediate = await createIntermediateCa(root, { commonName: "Issuing" });
  const leaf = await issueCertificate(intermediate, { commonName: "svc", kind: "client" });
  const rootCrl = await createCrl(root, []);
  const issuingCrl = await createCrl(intermediate, [leaf.serial], {
    nextUpdate: new Date(Date.now() + 2 * DAY),
  });
  const list = await RevocationList.parse(
    rootCrl + issuingCrl,
    root.certPem + intermediate.certPem,
  );
  assert.equal(list.lists.length, 2);
  assert.equal(list.check(leaf.der, leaf.serial), "revoked");
  assert.equal(list.nextUpdate?.getTime(), list.lists[1]!.nextUpdate!.getTime());

  const fromDer = await RevocationList.parse(der(issuingCrl), intermediate.certPem);
  assert.equal(fromDer.check(leaf.der, leaf.serial), "revoked");
  assert.equal(crlToPem(der(issuingCrl)), issuingCrl);
  // OpenSSL's older label is accepted too.
  const labelled = issuingCrl.replaceAll("X509 CRL", "CRL");
  assert.equal(crlToPem(labelled), issuingCrl);
});

Deno.test("crlToPem() wraps base64 at 64 characters, as OpenSSL and @peculiar/x509 write it", () => {
  for (let size = 1; size <= 200; size++) {
    const bytes = Uint8Array.from({ length: size }, (_, i) => i === 0 ? 0x30 : (i * 37) % 256);
    assert.equal(crlToPem(bytes), `${PemConverter.encode(bytes, "X509 CRL")}\n`, `${size} bytes`);
  }
});

Deno.test("RevocationList.parse() refuses CRLs it cannot trust or use", async (t) => {
  const pki = await testPki();
  const ca = pki.ca.authority;
  const impostor = await createCa({ commonName: "mtlb test CA" }); // same name, other key
  const cases: [string, () => Promise<RevocationList>, RegExp][] = [
    [
      "signed by a CA outside the bundle",
      async () =>
        RevocationList.parse(await createCrl(pki.foreignCa.authority, []), pki.ca.certPem),
      /issuer CN=mtlb foreign test CA is not a certificate of the CA bundle/,
    ],
    [
      "same issuer name, another key",
      async () => RevocationList.parse(await createCrl(impostor, []), pki.ca.certPem),
      /signature does not verify with the key of any CA of that name/,
    ],
    [
      "same issuer name, another key, no key identifier",
      async () =>
        RevocationList.parse(
          await createCrl(impostor, [], { authorityKeyIdentifier: false }),
          pki.ca.certPem,
        ),
      /signature does not verify/,
    ],
    [
      "two CRLs of one CA",
      async () =>
        RevocationList.parse(
          (await createCrl(ca, [])) + (await createCrl(ca, [pki.bob.serial])),
          pki.ca.certPem,
        ),
      /CRL number 1 is from the same CA .*keep one CRL per CA/,
    ],
    [
      "a CA bundle that cannot be read",
      async () => RevocationList.parse(await createCrl(ca, []), "no certificate"),
      /Cannot use the CRL: Cannot read the CA bundle/,
    ],
    [
      "expired",
      async () =>
        RevocationList.parse(
          await createCrl(ca, [], {
            thisUpdate: new Date(Date.now() - 3 * DAY),
            nextUpdate: new Date(Date.now() - DAY),
          }),
          pki.ca.certPem,
        ),
      /expired on .*nextUpdate/,
    ],
    [
      "not yet valid",
      async () =>
        RevocationList.parse(
          await createCrl(ca, [], {
            thisUpdate: new Date(Date.now() + DAY),
            nextUpdate: new Date(Date.now() + 2 * DAY),
          }),
          pki.ca.certPem,
        ),
      /not valid until/,
    ],
    [
      "a delta CRL (a critical extension)",
      async () => {
        const delta = await X509CrlGenerator.create({
          issuer: new X509Certificate(pki.ca.certPem).subjectName,
          thisUpdate: new Date(Date.now() - 60_000),
          nextUpdate: new Date(Date.now() + DAY),
          // deltaCRLIndicator (2.5.29.27), critical, base CRL number 1
          extensions: [new Extension("2.5.29.27", true, Uint8Array.of(0x02, 0x01, 0x01))],
          signingKey: ca.keys.privateKey,
          signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
        });
        return RevocationList.parse(new Uint8Array(delta.rawData), pki.ca.certPem);
      },
      /critical extension 2\.5\.29\.27 is not supported/,
    ],
    [
      "a certificate instead of a CRL",
      () => RevocationList.parse(pki.alice.certPem, pki.ca.certPem),
      /expected PEM "-----BEGIN X509 CRL-----" blocks or DER/,
    ],
    [
      "a corrupt CRL",
      () =>
        RevocationList.parse(
          "-----BEGIN X509 CRL-----\nMIIBAAAA\n-----END X509 CRL-----\n",
          pki.ca.certPem,
        ),
      /cannot be parsed/,
    ],
  ];
  for (const [name, parse, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        parse(),
        (e: unknown) => e instanceof CrlError && message.test(e.message),
      );
    });
  }
});

Deno.test("createCrl() writes a CRL that OpenSSL verifies", async (t) => {
  const openssl = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
    .output().then((o) => o.success, () => false);
  if (!openssl) {
    console.warn("Skipping: openssl is not installed");
    return;
  }
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_crl_" });
  try {
    const path = join(dir, "ca.crl");
    await Deno.writeTextFile(path, await createCrl(pki.ca.authority, [pki.bob.serial]));
    const out = await new Deno.Command("openssl", {
      args: ["crl", "-in", path, "-CAfile", pki.ca.certPath, "-noout", "-text"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    await t.step("signature verifies", () => assert.match(text, /verify OK/));
    await t.step("lists bob's serial as OpenSSL prints it", () => assert.match(text, /0A1B00/));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RevocationList.parse() reads a 20,000-entry CRL that OpenSSL issued", async () => {
  const openssl = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
    .output().then((o) => o.success, () => false);
  if (!openssl) {
    console.warn("Skipping: openssl is not installed");
    return;
  }
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_crl_" });
  try {
    // An OpenSSL CA database: 20,000 revoked certificates with a reason code, and bob.
    const rows = Array.from(
      { length: 20_000 },
      (_, i) =>
        `R\t301231235959Z\t240101000000Z,keyCompromise\t${
          (0x100000 + i).toString(16).toUpperCase()
        }\tunknown\t/CN=old${i}`,
    );
    rows.push("R\t301231235959Z\t240101000000Z\t0A1B00\tunknown\t/CN=bob");
    await Deno.writeTextFile(join(dir, "index.txt"), `${rows.join("\n")}\n`);
    await Deno.writeTextFile(join(dir, "crlnumber"), "01\n");
    await Deno.writeTextFile(join(dir, "ca.key"), pki.ca.authority.keyPem, { mode: 0o600 });
    await Deno.writeTextFile(
      join(dir, "openssl.cnf"),
      `[ca]\ndefault_ca = mtlb\n[mtlb]\ndatabase = ${dir}/index.txt\ncrlnumber = ${dir}/crlnumber\n` +
        "default_md = sha256\ndefault_crl_days = 7\ncrl_extensions = crl_ext\n" +
        "[crl_ext]\nauthorityKeyIdentifier = keyid:always\n",
    );
    const out = await new Deno.Command("openssl", {
      args: [
        "ca",
        "-gencrl",
        "-config",
        join(dir, "openssl.cnf"),
        "-keyfile",
        join(dir, "ca.key"),
        "-cert",
        pki.ca.certPath,
        "-out",
        join(dir, "ca.crl"),
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const list = await RevocationList.parse(
      await Deno.readTextFile(join(dir, "ca.crl")),
      pki.ca.certPem,
    );
    assert.equal(list.lists[0]?.revoked, 20_001);
    assert.equal(list.check(pki.bob.der, pki.bob.serial), "revoked");
    assert.equal(list.check(pki.alice.der, pki.alice.serial), "ok");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createCrl() refuses a nextUpdate before thisUpdate", async () => {
  const pki = await testPki();
  await assert.rejects(
    createCrl(pki.ca.authority, [], {
      thisUpdate: new Date(2030, 0, 2),
      nextUpdate: new Date(2030, 0, 1),
    }),
    RangeError,
  );
  await assert.rejects(createCrl(pki.ca.authority, ["not hex"]), TypeError);
});

Deno.test("loadTlsMaterial() verifies [tls] crl and reports its lists", async (t) => {
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_crl_" });
  const tls = (crl: string): TlsConfig => ({
    ca: pki.ca.certPath,
    cert: pki.server.certPath,
    key: pki.server.keyPath,
    ciphers: [],
    clientEku: "required",
    crlMissing: "refuse",
    crl,
  });
  try {
    await t.step("a good PEM CRL", async () => {
      const path = join(dir, "good.crl");
      await Deno.writeTextFile(path, await createCrl(pki.ca.authority, [pki.bob.serial]));
      const material = await loadTlsMaterial({ path: "lb.toml", tls: tls(path) });
      assert.match(material.crl ?? "", /^-----BEGIN X509 CRL-----/);
      assert.equal(material.crls?.[0]?.revoked, 1);
    });
    await t.step("a DER CRL is converted to PEM", async () => {
      const path = join(dir, "good.der");
      await Deno.writeFile(path, der(await createCrl(pki.ca.authority, [])));
      const material = await loadTlsMaterial({ path: "lb.toml", tls: tls(path) });
      assert.match(material.crl ?? "", /^-----BEGIN X509 CRL-----/);
    });
    await t.step("a CRL of a foreign CA is a ConfigError on tls.crl", async () => {
      const path = join(dir, "foreign.crl");
      await Deno.writeTextFile(path, await createCrl(pki.foreignCa.authority, []));
      await assert.rejects(
        loadTlsMaterial({ path: "lb.toml", tls: tls(path) }),
        (e: unknown) =>
          e instanceof ConfigError && e.key === "tls.crl" &&
          /cannot be used: the CRL: its issuer CN=mtlb foreign test CA/.test(e.message),
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The verdict of the CRLs on a chain that `store` verifies. */
function judge(
  list: RevocationList,
  store: TrustStore,
  chain: Uint8Array[],
  options: CheckPathOptions = {},
): string {
  const result = store.verify(chain);
  if (!result.ok) throw new Error(`${result.reason}: ${result.detail}`);
  return list.checkPath(result.path, options).status;
}

Deno.test("RevocationList ties each CRL of a rollover to its own CA, in either order", async (t) => {
  const { keyed, bare } = await rolloverPki();
  for (const [name, roll] of [["with key identifiers", keyed], ["without", bare]] as const) {
    const keyIds = name === "with key identifiers";
    const oldCrl = await createCrl(roll.old, [roll.oldClient.serial], {
      authorityKeyIdentifier: keyIds,
    });
    const nextCrl = await createCrl(roll.next, [], { authorityKeyIdentifier: keyIds });
    const orders: [string, string][] = [
      ["old first", oldCrl + nextCrl],
      ["new first", nextCrl + oldCrl],
    ];
    for (const [order, crl] of orders) {
      await t.step(`${name}, ${order}`, async () => {
        const store = TrustStore.fromPem(roll.bundle);
        const list = await RevocationList.parse(crl, store);
        const [oldCa, nextCa] = store.authorities;
        assert.deepEqual(
          list.lists.map((l) => l.issuerSpkiSha256).sort(),
          [oldCa!.spkiSha256, nextCa!.spkiSha256].sort(),
        );
        // The same name and serial: revoked by the old CA only.
        assert.equal(roll.oldClient.serial, roll.nextClient.serial);
        assert.equal(judge(list, store, [roll.oldClient.der]), "revoked");
        assert.equal(judge(list, store, [roll.nextClient.der]), "ok");
        // The older entry point agrees.
        assert.equal(list.check(roll.oldClient.der, roll.oldClient.serial), "revoked");
        assert.equal(list.check(roll.nextClient.der, roll.nextClient.serial), "ok");
      });
    }
  }
});

Deno.test("RevocationList.parse() refuses a CRL that no CA of a rollover signed", async () => {
  const { keyed } = await rolloverPki();
  const third = await createCa({ commonName: "mtlb rollover CA" });
  for (const authorityKeyIdentifier of [true, false]) {
    await assert.rejects(
      RevocationList.parse(
        await createCrl(third, [], { authorityKeyIdentifier }),
        keyed.bundle,
      ),
      (e: unknown) => e instanceof CrlError && /signature does not verify/.test(e.message),
    );
  }
});

Deno.test("RevocationList.checkPath() refuses a client whose intermediate the root revoked", async (t) => {
  const root = await createCa({ commonName: "Root" });
  const issuing = await createIntermediateCa(root, { commonName: "Issuing" });
  const leaf = await issueCertificate(issuing, { commonName: "svc", kind: "client" });
  const rootCrl = await createCrl(root, [issuing.serial]);
  const issuingCrl = await createCrl(issuing, []);
  await t.step("the intermediate in the bundle", async () => {
    const store = TrustStore.fromPem(root.certPem + issuing.certPem);
    const list = await RevocationList.parse(rootCrl + issuingCrl, store);
    assert.equal(judge(list, store, [leaf.der]), "revoked");
    assert.equal(judge(list, store, [leaf.der, issuing.der]), "revoked");
    const path = store.verify([leaf.der]);
    assert.ok(path.ok);
    const verdict = list.checkPath(path.path);
    assert.ok(verdict.status === "revoked");
    assert.match(
      verdict.detail,
      /CA CN=Issuing \(serial [0-9a-f]+\) is revoked by the CRL of CA CN=Root/,
    );
  });
  await t.step("the intermediate sent by the client only", async () => {
    const store = TrustStore.fromPem(root.certPem);
    const list = await RevocationList.parse(rootCrl, store);
    // Revoked outranks the missing CRL of the intermediate the client sent.
    assert.equal(judge(list, store, [leaf.der, issuing.der]), "revoked");
    const clean = await RevocationList.parse(await createCrl(root, []), store);
    assert.equal(judge(clean, store, [leaf.der, issuing.der]), "crl_missing");
    assert.equal(judge(clean, store, [leaf.der, issuing.der], { missing: "allow" }), "ok");
  });
});

Deno.test("RevocationList.checkPath() refuses certificates of a CA without a CRL unless allowed", async () => {
  const root = await createCa({ commonName: "Root" });
  const issuing = await createIntermediateCa(root, { commonName: "Issuing" });
  const viaIssuing = await issueCertificate(issuing, { commonName: "svc", kind: "client" });
  const direct = await issueCertificate(root, { commonName: "direct", kind: "client" });
  const store = TrustStore.fromPem(root.certPem + issuing.certPem);
  const issuingOnly = await RevocationList.parse(await createCrl(issuing, []), store);
  // The root issued `direct`, and the intermediate: it has no CRL.
  assert.equal(judge(issuingOnly, store, [direct.der]), "crl_missing");
  assert.equal(judge(issuingOnly, store, [viaIssuing.der]), "crl_missing");
  assert.equal(judge(issuingOnly, store, [direct.der], { missing: "allow" }), "ok");
  assert.equal(judge(issuingOnly, store, [viaIssuing.der], { missing: "allow" }), "ok");
  const both = await RevocationList.parse(
    (await createCrl(root, [])) + (await createCrl(issuing, [])),
    store,
  );
  assert.equal(judge(both, store, [direct.der]), "ok");
  assert.equal(judge(both, store, [viaIssuing.der]), "ok");
  const result = store.verify([direct.der]);
  assert.ok(result.ok);
  const verdict = issuingOnly.checkPath(result.path);
  assert.match(verdict.status === "ok" ? "" : verdict.detail, /CA CN=Root .* has no CRL/);
});

Deno.test("RevocationList.checkPath() fails closed once a CRL on the path is past nextUpdate", async () => {
  const pki = await testPki();
  const store = TrustStore.fromPem(pki.ca.certPem);
  const nextUpdate = new Date(Date.now() + DAY);
  const list = await RevocationList.parse(
    await createCrl(pki.ca.authority, [], { nextUpdate }),
    store,
  );
  const result = store.verify([pki.alice.der]);
  assert.ok(result.ok);
  assert.equal(list.checkPath(result.path, { now: nextUpdate.getTime() - 1000 }).status, "ok");
  assert.equal(
    list.checkPath(result.path, { now: nextUpdate.getTime() + 1000 }).status,
    "crl_expired",
  );
});

Deno.test("RevocationList.parse() refuses a CRL from a CA whose keyUsage lacks cRLSign", async () => {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const name = new Name([{ CN: [{ utf8String: "No CRL signing" }] }]);
  const cert = await X509CertificateGenerator.create({
    serialNumber: "01",
    subject: name,
    issuer: name,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + DAY),
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new BasicConstraintsExtension(true, undefined, true),
      new KeyUsagesExtension(KeyUsageFlags.keyCertSign, true),
    ],
  });
  const certPem = `${cert.toString("pem")}\n`;
  const ca = {
    certPem,
    keyPem: "",
    der: new Uint8Array(cert.rawData),
    keys,
    intermediatesPem: "",
    serial: "1",
  };
  await assert.rejects(
    RevocationList.parse(await createCrl(ca, []), certPem),
    (e: unknown) => e instanceof CrlError && /may not sign CRLs/.test(e.message),
  );
});
