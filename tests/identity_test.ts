import "reflect-metadata";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, X509Certificate as NodeX509Certificate } from "node:crypto";
import * as tls from "node:tls";
import {
  ExtendedKeyUsageExtension,
  Name,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import {
  certificateValidity,
  checkClientAuthUsage,
  type ClientAuthUsage,
  type ClientEkuMode,
  identityFromCertificate,
  normalizeHex,
  readCertificate,
  spkiSha256FromPem,
} from "../lib/identity/certificate.ts";
import { createCa } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import { type TestCredential, type TestPki, testPki } from "./_pki_fixtures.ts";

/** The openssl test reads the fixture files, so it needs `--allow-write` as well as `--allow-run`. */
const OPENSSL = (await Deno.permissions.query({ name: "write" })).state === "granted" &&
  await hasOpenssl();

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

/** Runs `openssl args...`, feeding `input`, and returns stdout. */
async function openssl(args: string[], input?: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command("openssl", {
    args,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(input);
    await writer.close();
  }
  const { success, stdout, stderr } = await child.output();
  assert.ok(success, new TextDecoder().decode(stderr));
  return stdout;
}

/** A certificate with a subject of our choosing, signed by its own key. */
async function certWithSubject(subject: Name): Promise<Uint8Array> {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const cert = await X509CertificateGenerator.createSelfSigned({
    name: subject,
    keys,
    serialNumber: "01",
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  });
  return new Uint8Array(cert.rawData);
}

Deno.test("normalizeHex() canonicalizes hex as openssl prints it", async (t) => {
  const cases: [string, string][] = [
    ["0A:1b:00", "a1b00"],
    ["00ff", "ff"],
    ["0", "0"],
    ["000", "0"],
    ["00:00", "0"],
    ["DEADBEEF", "deadbeef"],
    ["de:ad:be:ef", "deadbeef"],
    ["  0a1b\n", "a1b"],
    ["7", "7"],
  ];
  for (const [text, expected] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.equal(normalizeHex(text), expected);
    });
  }
});

Deno.test("normalizeHex() throws TypeError on anything but hex and single colons", async (t) => {
  const cases: unknown[] = [
    "",
    " ",
    "xyz",
    "0x1f",
    "12g4",
    ":ab",
    "ab:",
    "ab::cd",
    "ab cd",
    "ab-cd",
    "serial=0A",
    "１２",
    42,
    undefined,
  ];
  for (const text of cases) {
    await t.step(JSON.stringify(text) ?? String(text), () => {
      assert.throws(() => normalizeHex(text as string), TypeError);
    });
  }
});

Deno.test("identityFromCertificate() reads the test clients' CN, serial, SPKI and SANs", async () => {
  const pki = await testPki();
  assert.deepEqual(identityFromCertificate(pki.alice.der), {
    spkiSha256: pki.alice.spkiSha256,
    serial: pki.alice.serial,
    cn: "alice",
    sanUri: [],
    sanDns: [],
  });
  assert.deepEqual(identityFromCertificate(pki.bob.der), {
    spkiSha256: pki.bob.spkiSha256,
    serial: "a1b00",
    cn: "bob",
    sanUri: [],
    sanDns: [],
  });
  assert.deepEqual(identityFromCertificate(pki.carol.der), {
    spkiSha256: pki.carol.spkiSha256,
    serial: pki.carol.serial,
    cn: "carol",
    sanUri: ["spiffe://example.org/carol"],
    sanDns: ["carol.example.org"],
  });
  const server = identityFromCertificate(pki.server.der);
  assert.deepEqual(server.sanDns, ["localhost"]);
  assert.equal(server.cn, "localhost");
  const names = new Set([pki.alice, pki.bob, pki.carol].map((c) => c.spkiSha256));
  assert.equal(names.size, 3);
});

/** Every leaf of the test PKI: root- and intermediate-issued, valid, expired, not yet valid. */
function everyLeaf(pki: TestPki): TestCredential[] {
  return [
    pki.server,
    pki.alice,
    pki.bob,
    pki.carol,
    pki.intruder,
    pki.expired,
    pki.notYetValid,
    pki.wrongEku,
    pki.viaIntermediate,
  ];
}

Deno.test("identityFromCertificate() agrees with node:crypto on serial and SPKI for every test cert", async () => {
  const pki = await testPki();
  for (const credential of everyLeaf(pki)) {
    const node = new NodeX509Certificate(credential.der);
    const spki = node.publicKey.export({ type: "spki", format: "der" });
    const identity = identityFromCertificate(credential.der);
    assert.equal(identity.spkiSha256, createHash("sha256").update(spki).digest("hex"));
    assert.equal(identity.serial, normalizeHex(node.serialNumber));
    assert.equal(identity.cn, credential.cn);
  }
});

Deno.test("certificateValidity() agrees with node:crypto on every test cert", async () => {
  const pki = await testPki();
  for (const credential of everyLeaf(pki)) {
    const node = new NodeX509Certificate(credential.der);
    assert.deepEqual(certificateValidity(credential.der), {
      notBefore: node.validFromDate.getTime(),
      notAfter: node.validToDate.getTime(),
    });
  }
  assert.ok(certificateValidity(pki.expired.der).notAfter < Date.now());
  assert.ok(certificateValidity(pki.notYetValid.der).notBefore > Date.now());
});

Deno.test("readCertificate() gives what identityFromCertificate() and certificateValidity() do", async () => {
  const pki = await testPki();
  for (const credential of everyLeaf(pki)) {
    const facts = readCertificate(credential.der);
    assert.deepEqual(facts.identity, identityFromCertificate(credential.der));
    assert.deepEqual(facts.validity, certificateValidity(credential.der));
  }
  assert.throws(() => readCertificate(pki.alice.der.subarray(0, 40)), TypeError);
});

Deno.test("readCertificate() reads clientAuth usage, issuer name and authority key identifier", async () => {
  const pki = await testPki();
  assert.equal(readCertificate(pki.alice.der).clientAuth, "client_auth");
  assert.equal(readCertificate(pki.wrongEku.der).clientAuth, "other");
  assert.equal(readCertificate(pki.server.der).clientAuth, "other");
  assert.equal(readCertificate(pki.noEku.der).clientAuth, "absent");

  const alice = readCertificate(pki.alice.der);
  const caSubject = new X509Certificate(pki.ca.certPem).subjectName.toArrayBuffer();
  assert.deepEqual(alice.issuer, new Uint8Array(caSubject));
  // The CA's subject key identifier.
  const ski = new X509Certificate(pki.ca.certPem).getExtension(SubjectKeyIdentifierExtension);
  assert.equal(alice.authorityKeyId, ski?.keyId);

  const bare = await createCa({ commonName: "No key ids", keyIdentifiers: false });
  const leaf = await issueCertificate(bare, {
    commonName: "leaf",
    kind: "client",
    keyIdentifiers: false,
  });
  assert.equal(readCertificate(leaf.der).authorityKeyId, undefined);
});

Deno.test("readCertificate() refuses a repeated extended key usage extension", async () => {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const eku = new ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.2"]);
  const cert = await X509CertificateGenerator.createSelfSigned({
    name: "CN=twice",
    keys,
    serialNumber: "01",
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [eku, eku],
  });
  assert.throws(
    () => readCertificate(new Uint8Array(cert.rawData)),
    (e: unknown) => e instanceof TypeError && /repeated extKeyUsage/.test(e.message),
  );
});

Deno.test("checkClientAuthUsage() applies [tls] client_eku", async (t) => {
  const cases: [ClientAuthUsage, ClientEkuMode, string | undefined][] = [
    ["client_auth", "required", undefined],
    ["client_auth", "optional", undefined],
    ["absent", "required", "no_client_eku"],
    ["absent", "optional", undefined],
    ["other", "required", "wrong_eku"],
    ["other", "optional", "wrong_eku"],
  ];
  for (const [usage, mode, expected] of cases) {
    await t.step(`${usage} with ${mode}`, () => {
      assert.equal(checkClientAuthUsage(usage, mode), expected);
    });
  }
});

Deno.test("certificateValidity() reads GeneralizedTime from 2050 on and UTCTime before", async () => {
  const ca = await createCa({ commonName: "Time CA" });
  const notBefore = new Date(Date.UTC(1999, 11, 31, 23, 59, 58));
  const notAfter = new Date(Date.UTC(2051, 0, 2, 3, 4, 5));
  const leaf = await issueCertificate(ca, { commonName: "t", kind: "client", notBefore, notAfter });
  assert.deepEqual(certificateValidity(leaf.der), {
    notBefore: notBefore.getTime(),
    notAfter: notAfter.getTime(),
  });
});

Deno.test("certificateValidity() refuses malformed DER with a TypeError", async () => {
  const pki = await testPki();
  const der = pki.alice.der;
  for (const bad of [new Uint8Array(0), der.subarray(0, 40), Uint8Array.of(0x30, 0x03, 1, 2, 3)]) {
    assert.throws(() => certificateValidity(bad), TypeError);
  }
  assert.throws(() => certificateValidity("x" as unknown as Uint8Array), TypeError);
});

Deno.test("certificateValidity() refuses times that are not a date and time", async () => {
  const pki = await testPki();
  const der = pki.alice.der;
  // Alice's notBefore is a UTCTime "YYMMDDHHMMSSZ": find it and spoil one field at a time.
  const { notBefore } = certificateValidity(der);
  const stamp = new Date(notBefore).toISOString().replace(/[-:T]/g, "").slice(2, 14) + "Z";
  const at = Buffer.from(der).indexOf(stamp, 0, "latin1");
  assert.ok(at > 0, "found notBefore in the DER");
  for (
    const [offset, value] of [[2, "13"], [4, "00"], [4, "32"], [6, "24"], [8, "60"], [
      10,
      "60",
    ]] as const
  ) {
    const spoiled = Uint8Array.from(der);
    spoiled.set(new TextEncoder().encode(value), at + offset);
    assert.throws(() => certificateValidity(spoiled), TypeError, `${value} at ${offset}`);
  }
});

Deno.test("identityFromCertificate() keeps SAN values with commas whole", async () => {
  const pki = await testPki();
  const tricky = await issueCertificate(pki.ca.authority, {
    commonName: "eve, CN=admin",
    kind: "client",
    dnsNames: ["a, URI:spiffe://example.org/admin"],
    uris: ["spiffe://example.org/eve?x=1,2"],
  });
  const identity = identityFromCertificate(tricky.der);
  assert.equal(identity.cn, "eve, CN=admin");
  assert.deepEqual(identity.sanDns, ["a, URI:spiffe://example.org/admin"]);
  assert.deepEqual(identity.sanUri, ["spiffe://example.org/eve?x=1,2"]);
});

Deno.test("identityFromCertificate() decodes CN string types and takes the first CN", async (t) => {
  const cases: [string, Name, string | undefined][] = [
    ["UTF8String", new Name([{ CN: [{ utf8String: "Zoë 日本" }] }]), "Zoë 日本"],
    ["PrintableString", new Name([{ CN: [{ printableString: "Plain Name" }] }]), "Plain Name"],
    ["BMPString", new Name([{ CN: [{ bmpString: "Bmp Ω" }] }]), "Bmp Ω"],
    ["first of two", new Name([{ CN: ["first"] }, { CN: ["second"] }]), "first"],
    ["after other attributes", new Name([{ O: ["Acme"] }, { CN: ["svc"] }]), "svc"],
    ["no CN", new Name([{ O: ["Acme"] }]), undefined],
  ];
  for (const [name, subject, cn] of cases) {
    await t.step(name, async () => {
      const identity = identityFromCertificate(await certWithSubject(subject));
      assert.equal(identity.cn, cn);
      assert.equal("cn" in identity, cn !== undefined);
      assert.equal(identity.serial, "1");
    });
  }
});

Deno.test("identityFromCertificate() throws TypeError on malformed DER", async (t) => {
  const pki = await testPki();
  const der = pki.alice.der;
  const corrupt = (at: number, value: number) => {
    const copy = der.slice();
    copy[at] = value;
    return copy;
  };
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array()],
    ["one byte", new Uint8Array([0x30])],
    ["truncated", der.subarray(0, der.length - 1)],
    ["half", der.subarray(0, der.length >> 1)],
    ["trailing byte", Uint8Array.from([...der, 0])],
    ["not a SEQUENCE", corrupt(0, 0x31)],
    ["indefinite length", corrupt(1, 0x80)],
    ["PEM text", new TextEncoder().encode(pki.alice.certPem)],
    ["zeros", new Uint8Array(64)],
  ];
  for (const [name, bytes] of cases) {
    await t.step(name, () => {
      assert.throws(() => identityFromCertificate(bytes), TypeError);
    });
  }
  await t.step("not a Uint8Array", () => {
    assert.throws(
      () => identityFromCertificate(pki.alice.certPem as unknown as Uint8Array),
      TypeError,
    );
  });
});

Deno.test("identityFromCertificate() reads the DER that node:tls gives for a verified peer", async () => {
  const pki = await testPki();
  const { promise: seen, resolve } = Promise.withResolvers<Uint8Array>();
  const server = tls.createServer({
    requestCert: true,
    rejectUnauthorized: true,
    ca: pki.ca.certPem,
    cert: pki.server.chainPem,
    key: pki.server.keyPem,
    minVersion: "TLSv1.3",
  }, (socket) => {
    resolve(socket.getPeerCertificate(true).raw);
    socket.end();
  });
  const listening = Promise.withResolvers<void>();
  server.listen(0, "127.0.0.1", () => listening.resolve());
  await listening.promise;
  try {
    const { port } = server.address() as { port: number };
    const client = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: pki.ca.certPem,
      cert: pki.carol.certPem,
      key: pki.carol.keyPem,
    });
    const closed = Promise.withResolvers<void>();
    client.on("error", () => {});
    client.on("close", () => closed.resolve());
    client.resume();
    const raw = await seen;
    await closed.promise;
    assert.deepEqual(new Uint8Array(raw), pki.carol.der);
    const identity = identityFromCertificate(raw);
    assert.equal(identity.spkiSha256, pki.carol.spkiSha256);
    assert.deepEqual(identity.sanUri, ["spiffe://example.org/carol"]);
  } finally {
    const closed = Promise.withResolvers<void>();
    server.close(() => closed.resolve());
    await closed.promise;
  }
});

Deno.test("spkiSha256FromPem() hashes the first certificate's SPKI", async () => {
  const pki = await testPki();
  assert.equal(spkiSha256FromPem(pki.alice.certPem), pki.alice.spkiSha256);
  assert.equal(spkiSha256FromPem(pki.viaIntermediate.chainPem), pki.viaIntermediate.spkiSha256);
  assert.equal(
    spkiSha256FromPem(`subject=CN=alice\n${pki.alice.certPem.replaceAll("\n", "\r\n")}`),
    pki.alice.spkiSha256,
  );
});

Deno.test("spkiSha256FromPem() throws TypeError without a well-formed certificate", async (t) => {
  const pki = await testPki();
  const cases: [string, string][] = [
    ["empty", ""],
    ["private key only", pki.alice.keyPem],
    ["bad base64", "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"],
    ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
  ];
  for (const [name, pem] of cases) {
    await t.step(name, () => {
      assert.throws(() => spkiSha256FromPem(pem), TypeError);
    });
  }
});

Deno.test({
  name: "spkiSha256FromPem() and serial agree with openssl's output",
  ignore: !OPENSSL,
  async fn() {
    const pki = await testPki();
    for (const credential of [pki.alice, pki.bob, pki.carol]) {
      const pubkey = await openssl(["x509", "-in", credential.certPath, "-pubkey", "-noout"]);
      const der = await openssl(["pkey", "-pubin", "-outform", "der"], pubkey);
      const expected = createHash("sha256").update(der).digest("hex");
      assert.equal(spkiSha256FromPem(credential.certPem), expected);
      assert.equal(identityFromCertificate(credential.der).spkiSha256, expected);

      const serialLine = new TextDecoder().decode(
        await openssl(["x509", "-in", credential.certPath, "-serial", "-noout"]),
      );
      const printed = serialLine.trim().replace(/^serial=/, "");
      assert.equal(normalizeHex(printed), identityFromCertificate(credential.der).serial);
    }
    const bob = new TextDecoder().decode(
      await openssl(["x509", "-in", pki.bob.certPath, "-serial", "-noout"]),
    );
    assert.equal(bob.trim(), "serial=0A1B00");
  },
});
