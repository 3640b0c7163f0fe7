import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, loadTlsMaterial, parseConfig, type TlsConfig } from "../lib/config/mod.ts";
import { identityFromCertificate } from "../lib/identity/certificate.ts";
import { testPki } from "./_pki_fixtures.ts";
import { BASE, PATH } from "./_config_fixtures.ts";

Deno.test("loadTlsMaterial() names an unreadable file by its key", async () => {
  const tls: TlsConfig = {
    ca: "/nonexistent/ca.crt",
    cert: "/nonexistent/server.crt",
    key: "/nonexistent/server.key",
    ciphers: [],
    clientEku: "required",
    crlMissing: "refuse",
  };
  await assert.rejects(loadTlsMaterial({ path: PATH, tls }), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.key, "tls.ca");
    assert.equal(error.path, PATH);
    assert.ok(
      error.message.includes('"tls.ca" cannot be read from "/nonexistent/ca.crt"'),
      error.message,
    );
    return true;
  });
});

Deno.test("loadTlsMaterial() names the config line of the key whose file is missing", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_tls_lines_" });
  try {
    const pki = await testPki();
    const path = join(dir, "lb.toml");
    // BASE names certs/ca.crt (line 5), certs/server.crt (6) and certs/server.key (7).
    await Deno.mkdir(join(dir, "certs"));
    const files = { "ca.crt": pki.ca.certPath, "server.crt": pki.server.certPath };
    const cases: [missing: string, key: string, line: number][] = [
      ["ca.crt", "tls.ca", 5],
      ["server.crt", "tls.cert", 6],
      ["server.key", "tls.key", 7],
    ];
    for (const [missing, key, line] of cases) {
      await t.step(key, async () => {
        const all = { ...files, "server.key": pki.server.keyPath };
        for (const [name, source] of Object.entries(all)) {
          await Deno.remove(join(dir, "certs", name)).catch(() => {});
          if (name !== missing) await Deno.copyFile(source, join(dir, "certs", name));
        }
        const config = parseConfig(BASE, { path });
        await assert.rejects(loadTlsMaterial(config), (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.key, key);
          assert.equal(error.line, line);
          assert.equal(
            error.message,
            `Cannot load config: ${path}:${line}: "${key}" cannot be read from "${
              join(dir, "certs", missing)
            }": no such file`,
          );
          return true;
        });
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const canWrite = (await Deno.permissions.query({ name: "write" })).state === "granted";
if (!canWrite) {
  console.warn("Skipping loadTlsMaterial() PKI tests: they need --allow-write for the test PKI");
}

Deno.test({
  name: "loadTlsMaterial() returns the PEM texts and certificate dates",
  ignore: !canWrite,
  fn: async () => {
    const pki = await testPki();
    const tls: TlsConfig = {
      ca: pki.ca.certPath,
      cert: pki.server.chainPath,
      key: pki.server.keyPath,
      ciphers: [],
      clientEku: "required",
      crlMissing: "refuse",
    };
    const material = await loadTlsMaterial({ path: PATH, tls });
    assert.equal(material.ca, pki.ca.certPem);
    assert.equal(material.cert, pki.server.chainPem);
    assert.equal(material.key, pki.server.keyPem);
    assert.equal(material.crl, undefined);
    assert.deepEqual(material.certificates.map((c) => [c.key, c.subject]), [
      ["tls.ca", "CN=mtlb test CA"],
      ["tls.cert", "CN=localhost"],
    ]);
    for (const cert of material.certificates) {
      assert.ok(cert.notBefore.getTime() < Date.now() && Date.now() < cert.notAfter.getTime());
    }
    assert.deepEqual(material.authorities?.map((a) => [a.subject, a.spkiSha256]), [
      ["CN=mtlb test CA", identityFromCertificate(pki.ca.authority.der).spkiSha256],
    ]);
  },
});

Deno.test({
  name: "loadTlsMaterial() rejects bad certificate material with its key",
  ignore: !canWrite,
  fn: async (t) => {
    const pki = await testPki();
    const good: TlsConfig = {
      ca: pki.ca.certPath,
      cert: pki.server.certPath,
      key: pki.server.keyPath,
      ciphers: [],
      clientEku: "required",
      crlMissing: "refuse",
    };
    const garbage = await Deno.makeTempFile({ suffix: ".crt" });
    await Deno.writeTextFile(
      garbage,
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    // A CA certificate node:crypto reads, whose outer signature algorithm (SHA-384)
    // differs from the one it was signed with (SHA-256): not usable as a trust anchor.
    const mismatched = pki.ca.authority.der.slice();
    const tbsEnd = 4 + ((mismatched[6]! << 8) | mismatched[7]!) + 4;
    assert.equal(mismatched[tbsEnd + 11], 0x02, "ecdsa-with-SHA256 ends in 02");
    mismatched[tbsEnd + 11] = 0x03;
    const mismatchedPath = await Deno.makeTempFile({ suffix: ".crt" });
    await Deno.writeTextFile(
      mismatchedPath,
      `-----BEGIN CERTIFICATE-----\n${
        btoa(String.fromCharCode(...mismatched))
      }\n-----END CERTIFICATE-----\n`,
    );
    const cases: [string, Partial<TlsConfig>, string, string][] = [
      [
        "a corrupt certificate",
        { cert: garbage },
        "tls.cert",
        "holds a certificate that cannot be parsed",
      ],
      [
        "certificate and key mismatch",
        { key: pki.alice.keyPath },
        "tls.cert",
        "does not match the private key",
      ],
      [
        "a key where the certificate belongs",
        { cert: pki.server.keyPath },
        "tls.cert",
        "must hold PEM certificates",
      ],
      [
        "a certificate where the key belongs",
        { key: pki.server.certPath },
        "tls.key",
        "must be an unencrypted PEM private key",
      ],
      [
        "a key where the CA belongs",
        { ca: pki.alice.keyPath },
        "tls.ca",
        "must hold PEM certificates",
      ],
      [
        "a CA certificate that is not a usable trust anchor",
        { ca: mismatchedPath },
        "tls.ca",
        "cannot be used",
      ],
      [
        "a certificate where the CRL belongs",
        { crl: pki.ca.certPath },
        "tls.crl",
        "must hold a PEM CRL",
      ],
      [
        "an unreadable key",
        { key: join(pki.dir, "missing.key") },
        "tls.key",
        "cannot be read from",
      ],
    ];
    for (const [name, change, key, fragment] of cases) {
      await t.step(name, async () => {
        await assert.rejects(
          loadTlsMaterial({ path: PATH, tls: { ...good, ...change } }),
          (error: unknown) => {
            assert.ok(error instanceof ConfigError, String(error));
            assert.equal(error.key, key, error.message);
            assert.ok(error.message.includes(fragment), error.message);
            return true;
          },
        );
      });
    }
    await Deno.remove(garbage);
    await Deno.remove(mismatchedPath);
  },
});
