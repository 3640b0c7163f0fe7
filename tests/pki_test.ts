import "reflect-metadata";
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate as NodeX509Certificate } from "node:crypto";
import { join } from "node:path";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
} from "@peculiar/x509";
import {
  type CertificateAuthority,
  createCa,
  createIntermediateCa,
  loadCertificateAuthority,
} from "../lib/pki/certificate_authority.ts";
import { extendDevPki, writeDevPki } from "../lib/pki/dev_pki.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import type { KeyAlgorithmName } from "../lib/pki/key_algorithms.ts";
import { spkiSha256FromPem } from "../lib/identity/certificate.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const EC_P256: EcKeyImportParams = { name: "ECDSA", namedCurve: "P-256" };
/** Tests that write files run under `deno task test` (which grants it) and are skipped without it. */
const CAN_WRITE = (await Deno.permissions.query({ name: "write" })).state === "granted";
const OPENSSL = CAN_WRITE && await hasOpenssl();

async function hasOpenssl(): Promise<boolean> {
  if ((await Deno.permissions.query({ name: "run", command: "openssl" })).state !== "granted") {
    return false;
  }
  try {
    return (await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

async function openssl(args: string[]): Promise<{ ok: boolean; out: string }> {
  const result = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  return { ok: result.success, out: text };
}

let sharedCa: Promise<CertificateAuthority> | undefined;
function ca(): Promise<CertificateAuthority> {
  sharedCa ??= createCa({ commonName: "pki test CA" });
  return sharedCa;
}

function pemDer(pem: string): ArrayBuffer {
  const body = pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0)).buffer;
}

/** The DER of the serialNumber INTEGER's contents, read back with OpenSSL-independent parsing. */
function serialOctets(cert: X509Certificate): Uint8Array {
  const der = new Uint8Array(cert.rawData);
  // Certificate and TBSCertificate headers, then [0] version (a0 03 02 01 02), then INTEGER.
  let at = 0;
  for (let depth = 0; depth < 2; depth++) {
    at += der[at + 1]! & 0x80 ? 2 + (der[at + 1]! & 0x7f) : 2;
  }
  at += 5;
  assert.equal(der[at], 0x02, "serialNumber is an INTEGER");
  return der.subarray(at + 2, at + 2 + der[at + 1]!);
}

/** Parses a generated certificate. */
function x509(issued: { certPem: string }): X509Certificate {
  return new X509Certificate(issued.certPem);
}

/** The EKU OIDs, as a plain array. */
function ekus(cert: X509Certificate): string[] | undefined {
  const extension = cert.getExtension(ExtendedKeyUsageExtension);
  return extension === null ? undefined : Array.from(extension.usages, String);
}

async function assertKeyMatches(certPem: string, keyPem: string): Promise<void> {
  assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  const privateKey = await crypto.subtle.importKey("pkcs8", pemDer(keyPem), EC_P256, false, [
    "sign",
  ]);
  const publicKey = await new X509Certificate(certPem).publicKey.export(EC_P256, ["verify"]);
  const data = new TextEncoder().encode("proof of possession");
  const params = { name: "ECDSA", hash: "SHA-256" };
  const signature = await crypto.subtle.sign(params, privateKey, data);
  assert.ok(await crypto.subtle.verify(params, publicKey, signature, data));
  assert.equal(createPrivateKey(keyPem).asymmetricKeyType, "ec");
}

Deno.test("createCa() makes a self-signed P-256 CA with critical CA constraints", async () => {
  const root = await createCa({ commonName: 'Root, "quoted" CA' });
  const cert = new X509Certificate(root.certPem);
  assert.deepEqual(cert.subjectName.getField("CN"), ['Root, "quoted" CA']);
  assert.equal(cert.subject, cert.issuer);
  assert.ok(await cert.verify({ publicKey: cert.publicKey, signatureOnly: true }));
  assert.equal(cert.publicKey.algorithm.name, "ECDSA");
  assert.equal((cert.publicKey.algorithm as EcKeyAlgorithm).namedCurve, "P-256");
  assert.equal(cert.signatureAlgorithm.name, "ECDSA");
  assert.equal(cert.signatureAlgorithm.hash.name, "SHA-256");
  const basic = cert.getExtension(BasicConstraintsExtension);
  assert.ok(basic?.ca);
  assert.ok(basic.critical);
  const usage = cert.getExtension(KeyUsagesExtension);
  assert.equal(usage?.usages, KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign);
  assert.ok(usage?.critical);
  assert.equal(root.intermediatesPem, "");
  await assertKeyMatches(root.certPem, root.keyPem);
});

Deno.test("createCa() honours validity and defaults to ten years from just before now", async () => {
  const before = Date.now();
  const root = await createCa({ commonName: "Defaults" });
  assert.ok(x509(root).notBefore.getTime() <= before);
  assert.ok(x509(root).notBefore.getTime() >= before - 10 * 60 * 1000);
  const lifetime = x509(root).notAfter.getTime() - x509(root).notBefore.getTime();
  assert.equal(lifetime, 3650 * DAY_MS);

  const notBefore = new Date("2030-01-02T03:04:05Z");
  const notAfter = new Date("2031-01-02T03:04:05Z");
  const fixed = await createCa({ commonName: "Fixed", notBefore, notAfter });
  assert.equal(x509(fixed).notBefore.getTime(), notBefore.getTime());
  assert.equal(x509(fixed).notAfter.getTime(), notAfter.getTime());
});

Deno.test("createCa() rejects bad arguments", async (t) => {
  const cases: [
    string,
    Parameters<typeof createCa>[0],
    ErrorConstructor | RangeErrorConstructor,
  ][] = [
    ["empty common name", { commonName: "" }, TypeError],
    ["65-character common name", { commonName: "x".repeat(65) }, RangeError],
    ["validity ending at its start", {
      commonName: "x",
      notBefore: new Date(1e12),
      notAfter: new Date(1e12),
    }, RangeError],
    ["non-hex serial", { commonName: "x", serialNumber: "xyz" }, TypeError],
    ["zero serial", { commonName: "x", serialNumber: "00:00" }, RangeError],
    ["21-octet serial", { commonName: "x", serialNumber: "01".repeat(21) }, RangeError],
    ["20 octets plus a sign octet", { commonName: "x", serialNumber: "ff".repeat(20) }, RangeError],
  ];
  for (const [name, options, error] of cases) {
    await t.step(name, async () => {
      await assert.rejects(createCa(options), error);
    });
  }
});

Deno.test("issueCertificate() makes a server certificate for localhost, 127.0.0.1 and ::1", async () => {
  const root = await ca();
  const server = await issueCertificate(root, { commonName: "localhost", kind: "server" });
  const cert = new X509Certificate(server.certPem);
  assert.equal(cert.issuer, x509(root).subject);
  assert.ok(await cert.verify({ publicKey: x509(root).publicKey, signatureOnly: true }));
  assert.deepEqual(ekus(cert), [
    ExtendedKeyUsage.serverAuth,
  ]);
  assert.deepEqual(cert.getExtension(SubjectAlternativeNameExtension)?.names.toJSON(), [
    { type: "dns", value: "localhost" },
    { type: "ip", value: "127.0.0.1" },
    { type: "ip", value: "::1" },
  ]);
  const basic = cert.getExtension(BasicConstraintsExtension);
  assert.equal(basic?.ca, false);
  assert.ok(basic?.critical);
  assert.equal(cert.getExtension(KeyUsagesExtension)?.usages, KeyUsageFlags.digitalSignature);
  assert.equal(cert.notAfter.getTime() - cert.notBefore.getTime(), 365 * DAY_MS);
  assert.ok(cert.notBefore.getTime() <= Date.now());
  assert.equal(server.chainPem, server.certPem);
  await assertKeyMatches(server.certPem, server.keyPem);
});

Deno.test("issueCertificate() makes a client certificate with clientAuth and the SANs given", async () => {
  const root = await ca();
  const plain = await issueCertificate(root, { commonName: "alice", kind: "client" });
  assert.deepEqual(ekus(x509(plain)), [
    ExtendedKeyUsage.clientAuth,
  ]);
  assert.equal(x509(plain).getExtension(SubjectAlternativeNameExtension), null);
  assert.deepEqual(x509(plain).subjectName.getField("CN"), ["alice"]);
  await assertKeyMatches(plain.certPem, plain.keyPem);

  const named = await issueCertificate(root, {
    commonName: "carol",
    kind: "client",
    uris: ["spiffe://example.org/carol"],
    dnsNames: ["carol.example.org"],
    ipAddresses: ["10.0.0.7"],
  });
  assert.deepEqual(x509(named).getExtension(SubjectAlternativeNameExtension)?.names.toJSON(), [
    { type: "dns", value: "carol.example.org" },
    { type: "ip", value: "10.0.0.7" },
    { type: "url", value: "spiffe://example.org/carol" },
  ]);
  assert.notEqual(named.spkiSha256, plain.spkiSha256);
});

Deno.test("issueCertificate() replaces the EKU when asked, or omits it for an empty list", async () => {
  const root = await ca();
  const wrong = await issueCertificate(root, {
    commonName: "wrong",
    kind: "client",
    extendedKeyUsage: ["serverAuth"],
  });
  assert.deepEqual(ekus(x509(wrong)), [
    ExtendedKeyUsage.serverAuth,
  ]);
  const none = await issueCertificate(root, {
    commonName: "none",
    kind: "client",
    extendedKeyUsage: [],
  });
  assert.equal(x509(none).getExtension(ExtendedKeyUsageExtension), null);
});

Deno.test("issueCertificate() draws distinct positive 16-octet serials", async () => {
  const root = await ca();
  const serials = new Set<string>();
  for (let i = 0; i < 8; i++) {
    const leaf = await issueCertificate(root, { commonName: `c${i}`, kind: "client" });
    const octets = serialOctets(x509(leaf));
    assert.equal(octets.length, 16);
    assert.ok(octets[0]! >= 0x40 && octets[0]! <= 0x7f, "positive, no leading zero octet");
    assert.match(leaf.serial, /^[0-9a-f]{32}$/);
    serials.add(leaf.serial);
  }
  assert.equal(serials.size, 8);
});

Deno.test("issueCertificate() encodes a given serial and reports it canonically", async (t) => {
  const root = await ca();
  const cases: [given: string, serial: string, octets: number[]][] = [
    ["0A:1B", "a1b", [0x0a, 0x1b]],
    ["ff", "ff", [0x00, 0xff]],
    ["00:00:01", "1", [0x01]],
    ["7fffffffffffffffffffffffffffffffffffffff", "7f" + "ff".repeat(19), [
      0x7f,
      ...Array(19).fill(0xff),
    ]],
  ];
  for (const [given, serial, octets] of cases) {
    await t.step(`"${given}"`, async () => {
      const leaf = await issueCertificate(root, {
        commonName: "s",
        kind: "client",
        serialNumber: given,
      });
      assert.equal(leaf.serial, serial);
      assert.deepEqual([...serialOctets(x509(leaf))], octets);
    });
  }
});

Deno.test("issueCertificate() honours explicit validity, past or future", async () => {
  const root = await ca();
  const now = Date.now();
  const notBefore = new Date(Math.floor((now - 2 * DAY_MS) / 1000) * 1000);
  const notAfter = new Date(Math.floor((now - DAY_MS) / 1000) * 1000);
  const expired = await issueCertificate(root, {
    commonName: "expired",
    kind: "client",
    notBefore,
    notAfter,
  });
  assert.equal(x509(expired).notBefore.getTime(), notBefore.getTime());
  assert.equal(x509(expired).notAfter.getTime(), notAfter.getTime());
  assert.equal(await x509(expired).verify({ publicKey: x509(root).publicKey }), false);
  assert.ok(
    await x509(expired).verify({
      publicKey: x509(root).publicKey,
      date: new Date(now - 1.5 * DAY_MS),
    }),
  );
});

Deno.test("issueCertificate() rejects bad arguments", async (t) => {
  const root = await ca();
  const cases: [string, Parameters<typeof issueCertificate>[1], ErrorConstructor][] = [
    ["unknown kind", { commonName: "x", kind: "peer" as "client" }, TypeError],
    ["malformed IP", { commonName: "x", kind: "client", ipAddresses: ["300.1.1.1"] }, TypeError],
    ["relative URI", { commonName: "x", kind: "client", uris: ["/carol"] }, TypeError],
    ["empty DNS name", { commonName: "x", kind: "client", dnsNames: [""] }, TypeError],
    ["unknown EKU", {
      commonName: "x",
      kind: "client",
      extendedKeyUsage: ["codeSigning" as "clientAuth"],
    }, TypeError],
    ["empty common name", { commonName: "", kind: "client" }, TypeError],
    ["validity backwards", {
      commonName: "x",
      kind: "client",
      notBefore: new Date(2e12),
      notAfter: new Date(1e12),
    }, RangeError],
  ];
  for (const [name, options, error] of cases) {
    await t.step(name, async () => {
      await assert.rejects(issueCertificate(root, options), error);
    });
  }
});

Deno.test("createCa() and issueCertificate() make each key type, signed by the issuer's key", async (t) => {
  const cases: [KeyAlgorithmName, string][] = [
    ["P-256", "1.2.840.10045.4.3.2"], // ecdsa-with-SHA256
    ["P-384", "1.2.840.10045.4.3.3"], // ecdsa-with-SHA384
    ["RSA", "1.2.840.113549.1.1.11"], // sha256WithRSAEncryption
    ["RSA-PSS", "1.2.840.113549.1.1.10"], // RSASSA-PSS
    ["Ed25519", "1.3.101.112"],
  ];
  for (const [keyAlgorithm, signatureOid] of cases) {
    await t.step(keyAlgorithm, async () => {
      const root = await createCa({ commonName: `Root ${keyAlgorithm}`, keyAlgorithm });
      // A P-256 leaf: signed with the root's algorithm all the same.
      const leaf = await issueCertificate(root, { commonName: "leaf", kind: "client" });
      // Deno 2.9's X509Certificate#verify does not do RSA-PSS (OpenSSL verifies these, and
      // TrustStore's tests check every key type).
      if (keyAlgorithm !== "RSA-PSS") {
        const cert = new NodeX509Certificate(leaf.certPem);
        assert.ok(cert.verify(new NodeX509Certificate(root.certPem).publicKey));
      }
      assert.ok(oidIn(leaf.der, signatureOid), `${keyAlgorithm} signs with ${signatureOid}`);
    });
  }
  await assert.rejects(
    createCa({ commonName: "x", keyAlgorithm: "DSA" as KeyAlgorithmName }),
    TypeError,
  );
});

Deno.test("createCa() and issueCertificate() leave out key identifiers when asked", async () => {
  const root = await createCa({ commonName: "Bare", keyIdentifiers: false });
  const leaf = await issueCertificate(root, {
    commonName: "leaf",
    kind: "client",
    keyIdentifiers: false,
  });
  assert.equal(x509(root).getExtension(SubjectKeyIdentifierExtension), null);
  assert.equal(x509(leaf).getExtension(AuthorityKeyIdentifierExtension), null);
  assert.equal(x509(leaf).getExtension(SubjectKeyIdentifierExtension), null);
  const keyed = await issueCertificate(root, { commonName: "keyed", kind: "client" });
  assert.ok(x509(keyed).getExtension(AuthorityKeyIdentifierExtension));
});

/** Whether the DER holds the OBJECT IDENTIFIER `oid` (dotted), encoded. */
function oidIn(der: Uint8Array, oid: string): boolean {
  const [first, second, ...rest] = oid.split(".").map(Number);
  const bytes = [first! * 40 + second!];
  for (const arc of rest) {
    const groups: number[] = [];
    let value = arc;
    do {
      groups.unshift(value & 0x7f);
      value = Math.floor(value / 128);
    } while (value > 0);
    bytes.push(...groups.map((g, i) => i < groups.length - 1 ? g | 0x80 : g));
  }
  const needle = [0x06, bytes.length, ...bytes];
  outer: for (let i = 0; i + needle.length <= der.length; i++) {
    for (let j = 0; j < needle.length; j++) if (der[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("createIntermediateCa() issues leaves that chain to the root", async () => {
  const root = await ca();
  const intermediate = await createIntermediateCa(root, { commonName: "Intermediate" });
  const icert = new X509Certificate(intermediate.certPem);
  assert.equal(icert.issuer, x509(root).subject);
  assert.ok(await icert.verify({ publicKey: x509(root).publicKey, signatureOnly: true }));
  const basic = icert.getExtension(BasicConstraintsExtension);
  assert.ok(basic?.ca);
  assert.equal(basic.pathLength, 0);
  assert.equal(intermediate.intermediatesPem, intermediate.certPem);

  const leaf = await issueCertificate(intermediate, { commonName: "leaf", kind: "client" });
  assert.equal(x509(leaf).issuer, icert.subject);
  assert.ok(await x509(leaf).verify({ publicKey: icert.publicKey, signatureOnly: true }));
  assert.equal(leaf.chainPem, leaf.certPem + intermediate.certPem);
});

Deno.test({
  name: "issueCertificate() output verifies with openssl for its purpose",
  ignore: !OPENSSL,
  async fn() {
    const root = await ca();
    const intermediate = await createIntermediateCa(root, { commonName: "Intermediate" });
    const dir = await Deno.makeTempDir({ prefix: "mtlb_pki_test_" });
    try {
      const write = async (name: string, text: string) => {
        await Deno.writeTextFile(join(dir, name), text);
        return join(dir, name);
      };
      const caFile = await write("ca.crt", root.certPem);
      const untrusted = await write("intermediate.crt", intermediate.certPem);
      const server = await issueCertificate(root, { commonName: "localhost", kind: "server" });
      const client = await issueCertificate(root, { commonName: "alice", kind: "client" });
      const chained = await issueCertificate(intermediate, { commonName: "bob", kind: "client" });
      const serverFile = await write("server.crt", server.certPem);
      const clientFile = await write("client.crt", client.certPem);
      const chainedFile = await write("chained.crt", chained.certPem);
      const keyFile = await write("client.key", client.keyPem);

      const verify = (purpose: string, file: string, ...extra: string[]) =>
        openssl(["verify", "-CAfile", caFile, "-purpose", purpose, ...extra, file]);
      assert.ok((await verify("sslserver", serverFile)).ok);
      assert.ok((await verify("sslclient", clientFile)).ok);
      assert.equal((await verify("sslclient", serverFile)).ok, false);
      assert.equal((await verify("sslserver", clientFile)).ok, false);
      assert.equal((await verify("sslclient", chainedFile)).ok, false);
      assert.ok((await verify("sslclient", chainedFile, "-untrusted", untrusted)).ok);
      const hostCheck = await openssl([
        "x509",
        "-in",
        serverFile,
        "-noout",
        "-checkhost",
        "localhost",
        "-checkip",
        "::1",
      ]);
      assert.match(hostCheck.out, /does match certificate/);
      assert.doesNotMatch(hostCheck.out, /does NOT match/);
      const key = await openssl(["pkey", "-in", keyFile, "-noout", "-text"]);
      assert.ok(key.ok);
      assert.match(key.out, /prime256v1|P-256/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "writeDevPki() writes a CA, server, clients and an intruder with private key modes",
  ignore: !CAN_WRITE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_devpki_" });
  try {
    const summary = await writeDevPki(join(dir, "certs"), { clients: ["alice", "bob"] });
    assert.equal(summary.caCert, join(dir, "certs", "ca.crt"));
    assert.deepEqual(summary.clients.map((c) => c.name), ["alice", "bob"]);
    const root = new X509Certificate(await Deno.readTextFile(summary.caCert));
    assert.ok(root.getExtension(BasicConstraintsExtension)?.ca);
    await assertKeyMatches(root.toString("pem"), await Deno.readTextFile(summary.caKey));

    const server = new X509Certificate(await Deno.readTextFile(summary.serverCert));
    assert.ok(await server.verify({ publicKey: root.publicKey, signatureOnly: true }));
    assert.deepEqual(ekus(server), [
      ExtendedKeyUsage.serverAuth,
    ]);
    await assertKeyMatches(
      await Deno.readTextFile(summary.serverCert),
      await Deno.readTextFile(summary.serverKey),
    );

    for (const client of summary.clients) {
      const pem = await Deno.readTextFile(client.cert);
      const cert = new X509Certificate(pem);
      assert.deepEqual(cert.subjectName.getField("CN"), [client.name]);
      assert.ok(await cert.verify({ publicKey: root.publicKey, signatureOnly: true }));
      assert.equal(client.spkiSha256, spkiSha256FromPem(pem));
      assert.equal(client.serial, cert.serialNumber.toLowerCase().replace(/^0+/, ""));
      await assertKeyMatches(pem, await Deno.readTextFile(client.key));
    }

    const foreign = new X509Certificate(await Deno.readTextFile(summary.foreignCaCert));
    const intruder = new X509Certificate(await Deno.readTextFile(summary.intruderCert));
    assert.equal(intruder.issuer, foreign.subject);
    assert.ok(await intruder.verify({ publicKey: foreign.publicKey, signatureOnly: true }));
    assert.equal(await intruder.verify({ publicKey: root.publicKey, signatureOnly: true }), false);
    await assertKeyMatches(intruder.toString("pem"), await Deno.readTextFile(summary.intruderKey));
    await assert.rejects(Deno.stat(join(dir, "certs", "foreign-ca.key")), Deno.errors.NotFound);

    if (Deno.build.os !== "windows") {
      for (
        const key of [
          summary.caKey,
          summary.serverKey,
          summary.intruderKey,
          ...summary.clients.map((c) => c.key),
        ]
      ) {
        assert.equal((await Deno.stat(key)).mode! & 0o777, 0o600, key);
      }
      assert.equal((await Deno.stat(summary.caCert)).mode! & 0o777, 0o644);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "writeDevPki() refuses to replace files unless told to overwrite",
  ignore: !CAN_WRITE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_devpki_" });
  try {
    const first = await writeDevPki(dir, { clients: ["alice"] });
    const caKey = await Deno.readTextFile(first.caKey);
    await assert.rejects(writeDevPki(dir, { clients: ["zed"] }), Deno.errors.AlreadyExists);
    assert.equal(await Deno.readTextFile(first.caKey), caKey);
    await assert.rejects(Deno.stat(join(dir, "zed.crt")), Deno.errors.NotFound);

    await Deno.chmod(first.caKey, 0o644);
    const second = await writeDevPki(dir, { clients: ["alice"], overwrite: true });
    assert.notEqual(await Deno.readTextFile(second.caKey), caKey);
    assert.notEqual(second.clients[0]!.spkiSha256, first.clients[0]!.spkiSha256);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(second.caKey)).mode! & 0o777, 0o600);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "writeDevPki() rejects malformed, reserved and repeated client names before writing",
  ignore: !CAN_WRITE,
}, async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_devpki_" });
  try {
    const cases: [string, string[]][] = [
      ["empty", [""]],
      ["path traversal", ["../alice"]],
      ["slash", ["a/b"]],
      ["leading dash", ["-alice"]],
      ["too long", ["a".repeat(65)]],
      ["reserved ca", ["ca"]],
      ["reserved server", ["Server"]],
      ["reserved intruder", ["intruder"]],
      ["reserved foreign-ca", ["foreign-ca"]],
      ["repeated", ["alice", "ALICE"]],
    ];
    for (const [name, clients] of cases) {
      await t.step(name, async () => {
        await assert.rejects(writeDevPki(dir, { clients }), TypeError);
      });
    }
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "writeDevPki() issues the server certificate for the names given, IP addresses apart",
  ignore: !CAN_WRITE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_devpki_" });
  try {
    const summary = await writeDevPki(dir, {
      clients: [],
      serverNames: ["localhost", "127.0.0.1", "[::1]", "Cache", "*.lb.example.com", "cache"],
    });
    assert.deepEqual(summary.serverNames, [
      "localhost",
      "127.0.0.1",
      "::1",
      "cache",
      "*.lb.example.com",
    ]);
    const server = new X509Certificate(await Deno.readTextFile(summary.serverCert));
    const san = server.getExtension(SubjectAlternativeNameExtension)!;
    assert.deepEqual(san.names.items.map((n) => [n.type, n.value]), [
      ["dns", "localhost"],
      ["dns", "cache"],
      ["dns", "*.lb.example.com"],
      ["ip", "127.0.0.1"],
      ["ip", "::1"],
    ]);
    for (const bad of [["exa mple"], ["a..b"], ["*"], ["a.*.b"], [""], []]) {
      await assert.rejects(
        writeDevPki(join(dir, "bad"), { clients: [], serverNames: bad }),
        TypeError,
        JSON.stringify(bad),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadCertificateAuthority() reads a CA and its key back, for each key type", async (t) => {
  for (const algorithm of ["P-256", "P-384", "RSA", "Ed25519"] as const) {
    await t.step(algorithm, async () => {
      const original = await createCa({ commonName: `CA ${algorithm}`, keyAlgorithm: algorithm });
      const loaded = await loadCertificateAuthority(original.certPem, original.keyPem);
      assert.equal(loaded.serial, original.serial);
      assert.equal(loaded.intermediatesPem, "");
      const leaf = await issueCertificate(loaded, { commonName: "dave", kind: "client" });
      const cert = new X509Certificate(leaf.certPem);
      assert.ok(await cert.verify({ publicKey: x509(original).publicKey, signatureOnly: true }));
    });
  }
  await t.step("refusals", async () => {
    const root = await ca();
    const other = await createCa({ commonName: "other" });
    const leaf = await issueCertificate(root, { commonName: "leaf", kind: "client" });
    await assert.rejects(
      loadCertificateAuthority(root.certPem, other.keyPem),
      TypeError,
      "does not belong",
    );
    await assert.rejects(loadCertificateAuthority(leaf.certPem, leaf.keyPem), /not a CA/);
    await assert.rejects(loadCertificateAuthority("garbage", root.keyPem), /not a PEM X\.509/);
    await assert.rejects(loadCertificateAuthority(root.certPem, "garbage"), /PKCS#8/);
  });
});

Deno.test({
  name: "extendDevPki() adds clients signed by the folder's CA and never replaces a file",
  ignore: !CAN_WRITE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_devpki_" });
  try {
    const first = await writeDevPki(dir, { clients: ["alice"] });
    const root = new X509Certificate(await Deno.readTextFile(first.caCert));
    const before = await Deno.readTextFile(first.serverCert);

    const added = await extendDevPki(dir, { clients: ["dave", "erin"] });
    assert.deepEqual(added.clients.map((c) => c.name), ["dave", "erin"]);
    assert.equal(added.server, undefined);
    for (const client of added.clients) {
      const pem = await Deno.readTextFile(client.cert);
      const cert = new X509Certificate(pem);
      assert.ok(await cert.verify({ publicKey: root.publicKey, signatureOnly: true }));
      assert.deepEqual(ekus(cert), [ExtendedKeyUsage.clientAuth]);
      assert.equal(client.spkiSha256, spkiSha256FromPem(pem));
      await assertKeyMatches(pem, await Deno.readTextFile(client.key));
      if (Deno.build.os !== "windows") {
        assert.equal((await Deno.stat(client.key)).mode! & 0o777, 0o600);
      }
    }
    assert.equal(await Deno.readTextFile(first.serverCert), before);

    // Existing targets: an error naming every one, and nothing written.
    await assert.rejects(
      extendDevPki(dir, { clients: ["frank", "alice", "dave"] }),
      (error: unknown) => {
        assert.ok(error instanceof Deno.errors.AlreadyExists);
        for (const name of ["alice.crt", "alice.key", "dave.crt", "dave.key"]) {
          assert.ok(error.message.includes(JSON.stringify(join(dir, name))), error.message);
        }
        return true;
      },
    );
    await assert.rejects(Deno.stat(join(dir, "frank.crt")), Deno.errors.NotFound);
    await assert.rejects(extendDevPki(dir, { clients: ["ca"] }), TypeError);
    await assert.rejects(extendDevPki(dir, { clients: [] }), TypeError);

    // A server certificate, once the old one is removed, from the same CA.
    await assert.rejects(
      extendDevPki(dir, { clients: [], serverNames: ["cache"] }),
      Deno.errors.AlreadyExists,
    );
    await Deno.remove(first.serverCert);
    await Deno.remove(first.serverKey);
    const server = await extendDevPki(dir, { clients: [], serverNames: ["localhost", "cache"] });
    assert.deepEqual(server.server?.names, ["localhost", "cache"]);
    const cert = new X509Certificate(await Deno.readTextFile(first.serverCert));
    assert.ok(await cert.verify({ publicKey: root.publicKey, signatureOnly: true }));

    // Without the CA key there is nothing to sign with.
    await Deno.remove(first.caKey);
    await assert.rejects(extendDevPki(dir, { clients: ["gina"] }), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
