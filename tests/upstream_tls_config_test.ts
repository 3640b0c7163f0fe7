/**
 * `[groups.<name>.tls]`: how it is read and checked, the files it names (loaded,
 * granted read permission, watched), and what `check` shows of it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "../lib/cli/cli.ts";
import { EXIT_OK } from "../lib/cli/exit_codes.ts";
import { ConfigError, loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { diffConfig } from "../lib/config/diff.ts";
import { permissionNeeds } from "../lib/control/permission_needs.ts";
import { testPki } from "./_pki_fixtures.ts";
import { upstreamCertificates } from "./_upstream_tls_fixtures.ts";

const HEAD = `[server]
listen = "127.0.0.1:0"
workers = 1

[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"

[groups.db]
upstreams = ["10.0.0.5:5432"]
`;

function parse(text: string, baseDir = "/etc/mtlb") {
  return parseConfig(text, { path: join(baseDir, "lb.toml"), baseDir });
}

function refused(text: string): ConfigError {
  try {
    parse(text);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error;
  }
  assert.fail("the config was accepted");
}

Deno.test("parseConfig() reads [groups.NAME.tls], its paths against the config's folder", () => {
  const config = parse(`${HEAD}
[groups.db.tls]
ca = "upstream-ca.crt"
cert = "/srv/mtlb-client.crt"
key = "mtlb-client.key"
server_name = "DB.Internal"

[groups.plain]
upstreams = ["10.0.0.6:6379"]
`);
  assert.deepEqual(config.groups.get("db")!.tls, {
    ca: "/etc/mtlb/upstream-ca.crt",
    cert: "/srv/mtlb-client.crt",
    key: "/etc/mtlb/mtlb-client.key",
    serverName: "db.internal",
  });
  assert.equal(config.groups.get("plain")!.tls, undefined);
});

Deno.test("parseConfig() refuses a group's tls without ca, with cert and no key, or unknown keys", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["no ca", 'server_name = "db.internal"', /groups\.db\.tls\.ca/],
    [
      "cert without key",
      'ca = "a.crt"\ncert = "c.crt"',
      /groups\.db\.tls\.key.*must be set with cert/,
    ],
    [
      "key without cert",
      'ca = "a.crt"\nkey = "c.key"',
      /groups\.db\.tls\.cert.*must be set with key/,
    ],
    ["a bad name", 'ca = "a.crt"\nserver_name = "db internal"', /groups\.db\.tls\.server_name/],
    ["an unknown key", 'ca = "a.crt"\nverify = false', /groups\.db\.tls\.verify/],
    [
      "SRV entries and no server_name",
      'ca = "a.crt"',
      /groups\.db\.tls\.server_name.*must be set when the group has \{ srv = \.\.\. \}/,
    ],
  ];
  for (const [name, table, pattern] of cases) {
    await t.step(name, () => {
      const head = name.startsWith("SRV")
        ? HEAD.replace(
          'upstreams = ["10.0.0.5:5432"]',
          'upstreams = [{ srv = "_pg._tcp.db.internal" }]',
        )
        : HEAD;
      const error = refused(`${head}\n[groups.db.tls]\n${table}\n`);
      assert.match(error.message, pattern);
      assert.match(error.message, /lb\.toml:\d+/);
    });
  }
});

Deno.test("loadTlsMaterial() reads each group's tls files and reports the one it cannot use", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "mtlb-client.crt"), certs.client.chainPem);
    await Deno.writeTextFile(join(dir, "mtlb-client.key"), certs.client.keyPem);
    const text = (ca: string, key = "mtlb-client.key") =>
      `[server]\nlisten = "127.0.0.1:0"\n[tls]\nca = ${JSON.stringify(pki.ca.certPath)}\n` +
      `cert = ${JSON.stringify(pki.server.certPath)}\nkey = ${
        JSON.stringify(pki.server.keyPath)
      }\n` +
      `[groups.db]\nupstreams = ["127.0.0.1:5432"]\n[groups.db.tls]\nca = ${JSON.stringify(ca)}\n` +
      `cert = "mtlb-client.crt"\nkey = ${JSON.stringify(key)}\nserver_name = "db.internal"\n`;
    const material = await loadTlsMaterial(parse(text(pki.ca.certPath), dir));
    const db = material.upstreams?.get("db");
    assert.equal(db?.ca, pki.ca.certPem);
    assert.equal(db?.cert, certs.client.chainPem);
    assert.equal(db?.serverName, "db.internal");
    assert.deepEqual(db?.certificates.map((c) => c.which), ["ca", "cert"]);

    await assert.rejects(
      loadTlsMaterial(parse(text("missing-ca.crt"), dir)),
      (error: ConfigError) =>
        error.key === "groups.db.tls.ca" && error.line === 10 && /no such file/.test(error.message),
    );
    // A key that is not the certificate's.
    await Deno.writeTextFile(join(dir, "other.key"), pki.alice.keyPem);
    await assert.rejects(
      loadTlsMaterial(parse(text(pki.ca.certPath, "other.key"), dir)),
      (error: ConfigError) =>
        error.key === "groups.db.tls.cert" && /does not match the private key/.test(error.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("permissionNeeds() grants read on each group's tls files", () => {
  const config = parse(`${HEAD}
[groups.db.tls]
ca = "upstream-ca.crt"
cert = "mtlb-client.crt"
key = "mtlb-client.key"
`);
  const { read } = permissionNeeds(config);
  for (const file of ["upstream-ca.crt", "mtlb-client.crt", "mtlb-client.key"]) {
    assert.ok(read.includes(`/etc/mtlb/${file}`), `${file} in ${read.join(", ")}`);
  }
});

Deno.test("diffConfig() names a group's tls file renewed in place", () => {
  const config = parse(`${HEAD}\n[groups.db.tls]\nca = "upstream-ca.crt"\n`);
  const files = (ca: string) => ({
    ca: "",
    cert: "",
    key: "",
    upstreams: new Map([["db", { ca }]]),
  });
  const changes = diffConfig(config, config, { previous: files("old"), next: files("new") });
  assert.deepEqual(changes.settings, ["groups.db.tls.ca"]);
});

Deno.test("main.ts check shows a group's tls and the expiry of its files", async () => {
  const pki = await testPki();
  const certs = await upstreamCertificates();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "mtlb-client.crt"), certs.client.chainPem);
    await Deno.writeTextFile(join(dir, "mtlb-client.key"), certs.client.keyPem);
    await Deno.writeTextFile(join(dir, "expired-ca.crt"), certs.expired.certPem);
    const path = join(dir, "lb.toml");
    await Deno.writeTextFile(
      path,
      `[server]\nlisten = "127.0.0.1:0"\nworkers = 1\n[tls]\nca = ${
        JSON.stringify(pki.ca.certPath)
      }\ncert = ${JSON.stringify(pki.server.certPath)}\nkey = ${
        JSON.stringify(pki.server.keyPath)
      }\n[groups.db]\nupstreams = ["127.0.0.1:5432"]\n[groups.db.tls]\nca = ${
        JSON.stringify(pki.ca.certPath)
      }\ncert = "mtlb-client.crt"\nkey = "mtlb-client.key"\nserver_name = "db.internal"\n` +
        `[groups.old]\nupstreams = ["127.0.0.1:5433"]\n[groups.old.tls]\nca = "expired-ca.crt"\n` +
        `[groups.api]\nupstreams = [{ dns = "api.internal:7000" }]\n[groups.api.tls]\nca = ${
          JSON.stringify(pki.ca.certPath)
        }\n` +
        `[groups.mixed]\nupstreams = ["127.0.0.1:7001", { dns = "api.internal:7000" }]\n` +
        `[groups.mixed.tls]\nca = ${JSON.stringify(pki.ca.certPath)}\n` +
        `[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["db", "old", "api", "mixed"]\n`,
    );
    let stdout = "";
    let stderr = "";
    const code = await runCli(["check", "--config", path], {
      version: "0.0.0",
      stdout: (t) => stdout += t,
      stderr: (t) => stderr += t,
    });
    assert.equal(code, EXIT_OK, stderr);
    assert.match(
      stdout,
      /upstream tls: verify against .*ca\.crt \(1 CA certificate\), name "db\.internal" \(sent as SNI\); client certificate CN=mtlb-client/,
    );
    assert.match(stdout, /groups\.db\.tls\.cert {2}CN=mtlb-client {2}valid until \d{4}-/);
    // Without server_name, an upstream from DNS is verified against the name looked up.
    assert.match(
      stdout,
      /name "api\.internal" \(sent as SNI\) for the addresses of api\.internal:7000 \(no server_name\)/,
    );
    assert.match(
      stdout,
      /name each listed upstream's host, "api\.internal" \(sent as SNI\) for the addresses of api\.internal:7000 \(no/,
    );
    assert.match(stdout, /name each listed upstream's host \(no server_name\)/);
    assert.match(stdout, /groups\.old\.tls\.ca .* \(expired\)/);
    assert.match(
      stderr,
      /Warning: "groups\.old\.tls\.ca" certificate .* expired on .*: connections to its group will be refused/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
