import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/mod.ts";
import type { CertIdentity } from "../lib/identity/certificate.ts";
import { type ClientRule, Policy } from "../lib/policy/policy.ts";
import { ClientTrust } from "../lib/identity/client_trust.ts";
import { TrustStore } from "../lib/identity/trust_store.ts";
import { rolloverPki } from "./_pki_fixtures.ts";

const SPKI = "3f1c" + "00".repeat(28) + "abcd";

const CONFIG = `
[server]
listen = "127.0.0.1:8443"

[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"

[limits]
max_connections_per_client = 10
connection_rate = { count = 100, per = "1m" }

[groups.echo]
upstreams = ["127.0.0.1:7001"]

[groups.Cache]
upstreams = ["127.0.0.1:7003"]

[groups.admin]
upstreams = ["127.0.0.1:7004"]
listen = "127.0.0.1:9443"

[clients.by-spki]
match = { spki_sha256 = "3F:1C:${"00:".repeat(28)}AB:CD" }
groups = ["echo"]

[clients.by-serial]
match = { serial = "00:B0:B0" }
groups = ["echo"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo", "Cache"]
max_connections = 20

[clients.by-uri]
match = { san_uri = "spiffe://example.org/web" }
groups = ["echo"]
connection_rate = { count = 5, per = "1s" }

[clients.by-dns]
match = { san_dns = "Carol.Example.org" }
groups = ["echo"]

[clients.dave]
match = { cn = "dave", serial = "0d", san_dns = "dave.example.org" }
groups = ["admin"]

[clients.eve-cn]
match = { cn = "eve" }
groups = ["echo"]

[clients.eve-dns]
match = { san_dns = "eve.example.org" }
groups = ["echo"]
`;

const policy = new Policy(parseConfig(CONFIG, { path: "lb.toml" }));

/** A certificate identity that matches nothing unless fields are given. */
function cert(fields: Partial<CertIdentity>): CertIdentity {
  return { spkiSha256: "ff".repeat(32), serial: "1", sanUri: [], sanDns: [], ...fields };
}

function clientOf(identity: CertIdentity): string | undefined {
  const result = policy.identify(identity);
  return "client" in result ? result.client.name : undefined;
}

function rule(name: string): ClientRule {
  const result = policy.identify(
    name === "alice" ? cert({ cn: "alice" }) : cert({ serial: "b0b0" }),
  );
  assert.ok("client" in result && result.client.name === name);
  return result.client;
}

Deno.test("Policy.identify() matches each kind of field", async (t) => {
  const cases: [string, CertIdentity, string][] = [
    ["spki_sha256, written with colons and capitals", cert({ spkiSha256: SPKI }), "by-spki"],
    ["serial, written with a leading zero octet", cert({ serial: "b0b0" }), "by-serial"],
    ["cn, exactly", cert({ cn: "alice" }), "alice"],
    [
      "san_uri among several",
      cert({ sanUri: ["spiffe://example.org/other", "spiffe://example.org/web"] }),
      "by-uri",
    ],
    ["san_dns, ignoring case", cert({ sanDns: ["x.example.org", "CAROL.example.org"] }), "by-dns"],
  ];
  for (const [name, identity, expected] of cases) {
    await t.step(name, () => {
      const result = policy.identify(identity);
      assert.ok("client" in result, JSON.stringify(result));
      assert.equal(result.client.name, expected);
    });
  }
});

Deno.test("Policy.identify() requires every given field to match", async (t) => {
  const dave = { cn: "dave", serial: "d", sanDns: ["dave.example.org"] };
  await t.step("all three match", () => assert.equal(clientOf(cert(dave)), "dave"));
  await t.step("serial differs", () => {
    assert.deepEqual(policy.identify(cert({ ...dave, serial: "e" })), {
      deny: "unknown_identity",
    });
  });
  await t.step("cn differs in case", () => {
    assert.equal(clientOf(cert({ ...dave, cn: "Dave" })), undefined);
  });
  await t.step("SAN missing", () => {
    assert.equal(clientOf(cert({ ...dave, sanDns: [] })), undefined);
  });
});

Deno.test("Policy.identify() denies a certificate that matches no client", () => {
  assert.deepEqual(policy.identify(cert({ cn: "mallory", sanDns: ["mallory.example.org"] })), {
    deny: "unknown_identity",
  });
  // A SAN URI equal to another client's CN is not a CN.
  assert.deepEqual(policy.identify(cert({ sanUri: ["alice"] })), { deny: "unknown_identity" });
});

Deno.test("Policy.identify() denies a certificate that matches two clients", () => {
  assert.equal(clientOf(cert({ cn: "eve" })), "eve-cn");
  assert.equal(clientOf(cert({ sanDns: ["eve.example.org"] })), "eve-dns");
  assert.deepEqual(policy.identify(cert({ cn: "eve", sanDns: ["eve.example.org"] })), {
    deny: "ambiguous_identity",
  });
  // Through different kinds of field again: serial and cn.
  assert.deepEqual(policy.identify(cert({ serial: "b0b0", cn: "alice" })), {
    deny: "ambiguous_identity",
  });
});

Deno.test("Policy.identify() finds one client among many through its indexes", () => {
  const clients = Array.from({ length: 5000 }, (_, i) => {
    const match = i % 2 === 0 ? `serial = "${(i + 0x10000).toString(16)}"` : `cn = "client-${i}"`;
    return `[clients.c${i}]\nmatch = { ${match} }\ngroups = ["echo"]\n`;
  });
  const many = new Policy(parseConfig(
    `[server]\nlisten = "127.0.0.1:1"\n[tls]\nca = "a"\ncert = "b"\nkey = "c"\n` +
      `[groups.echo]\nupstreams = ["127.0.0.1:2"]\n${clients.join("")}`,
    { path: "many.toml" },
  ));
  const bySerial = many.identify(cert({ serial: (4998 + 0x10000).toString(16) }));
  assert.ok("client" in bySerial && bySerial.client.name === "c4998");
  // c4999 matches by cn, so no client has this serial.
  assert.deepEqual(many.identify(cert({ serial: (4999 + 0x10000).toString(16) })), {
    deny: "unknown_identity",
  });
  const byCn = many.identify(cert({ cn: "client-4999" }));
  assert.ok("client" in byCn && byCn.client.name === "c4999");
});

Deno.test("Policy.route() fixes the group on a dedicated listener", async (t) => {
  const alice = rule("alice");
  await t.step("an allowed group", () => {
    assert.deepEqual(policy.route(alice, { listenerGroup: "Cache" }), { group: "Cache" });
  });
  await t.step("SNI and ALPN cannot move it", () => {
    assert.deepEqual(
      policy.route(alice, { listenerGroup: "echo", sni: "Cache", alpn: ["Cache"] }),
      {
        group: "echo",
      },
    );
  });
  await t.step("a group the client may not use", () => {
    assert.deepEqual(policy.route(alice, { listenerGroup: "admin" }), {
      deny: "unauthorized_group",
      group: "admin",
    });
  });
});

Deno.test("Policy.route() picks the group named by SNI on the shared listener", async (t) => {
  const alice = rule("alice");
  const bob = rule("by-serial");
  await t.step("exact name", () => {
    assert.deepEqual(policy.route(alice, { sni: "echo" }), { group: "echo" });
  });
  await t.step("any letter case, trailing dot", () => {
    assert.deepEqual(policy.route(alice, { sni: "cache." }), { group: "Cache" });
  });
  await t.step("SNI wins over ALPN", () => {
    assert.deepEqual(policy.route(alice, { sni: "echo", alpn: ["Cache"] }), { group: "echo" });
  });
  await t.step("a group the client may not use", () => {
    assert.deepEqual(policy.route(bob, { sni: "cache" }), {
      deny: "unauthorized_group",
      group: "Cache",
    });
  });
  await t.step("a name that is no group is ignored", () => {
    assert.deepEqual(policy.route(bob, { sni: "localhost" }), { group: "echo" });
    assert.deepEqual(policy.route(alice, { sni: "localhost", alpn: ["Cache"] }), {
      group: "Cache",
    });
  });
});

Deno.test("Policy.route() picks the group named by ALPN on the shared listener", async (t) => {
  const alice = rule("alice");
  const bob = rule("by-serial");
  await t.step("the first offered protocol naming a group", () => {
    assert.deepEqual(policy.route(alice, { alpn: ["h2", "Cache", "echo"] }), { group: "Cache" });
  });
  await t.step("protocols are compared exactly", () => {
    assert.deepEqual(policy.route(alice, { alpn: ["cache"] }), { deny: "no_group" });
  });
  await t.step("a group the client may not use", () => {
    assert.deepEqual(policy.route(bob, { alpn: ["Cache"] }), {
      deny: "unauthorized_group",
      group: "Cache",
    });
  });
});

Deno.test("Policy.route() falls back to the client's only group", () => {
  const bob = rule("by-serial");
  assert.deepEqual(policy.route(bob), { group: "echo" });
  assert.deepEqual(policy.route(bob, { alpn: ["h2", "http/1.1"] }), { group: "echo" });
});

Deno.test("Policy.route() denies a client with several groups and nothing choosing", () => {
  assert.deepEqual(policy.route(rule("alice"), {}), { deny: "no_group" });
  assert.deepEqual(policy.route(rule("alice"), { sni: "localhost", alpn: ["h2"] }), {
    deny: "no_group",
  });
});

Deno.test("Policy.limitsFor() applies client overrides over [limits]", async (t) => {
  await t.step("own max_connections, default rate", () => {
    assert.deepEqual(policy.limitsFor("alice"), {
      concurrent: 20,
      rate: { count: 100, per: 60_000 },
    });
  });
  await t.step("own rate, default max", () => {
    assert.deepEqual(policy.limitsFor("by-uri"), { concurrent: 10, rate: { count: 5, per: 1000 } });
  });
  await t.step("the rule carries the same limits", () => {
    assert.deepEqual(rule("alice").limits, policy.limitsFor("alice"));
  });
  await t.step("no rate when none is configured", () => {
    const plain = new Policy({
      groups: new Map([["app", {}]]),
      clients: new Map([["ci", { name: "ci", match: { cn: "ci" }, groups: ["app"] }]]),
      limits: { maxConnectionsPerClient: 3 },
    });
    assert.deepEqual(plain.limitsFor("ci"), { concurrent: 3 });
  });
  await t.step("an unknown client", () => {
    assert.throws(() => policy.limitsFor("nobody"), RangeError);
  });
});

Deno.test("Policy.identify() with match.issuer admits the pinned CA's certificate only", async () => {
  const { keyed } = await rolloverPki();
  const store = TrustStore.fromPem(keyed.bundle);
  const [oldCa, nextCa] = store.authorities;
  // The pin as a user copies it from `check`: colons and capitals are fine.
  const pin = nextCa!.spkiSha256.toUpperCase().match(/../g)!.join(":");
  const pinned = new Policy(parseConfig(
    `
[server]
listen = "127.0.0.1:8443"
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
[groups.app]
upstreams = ["127.0.0.1:7001"]
[clients.roll]
match = { cn = "roll", serial = "5EED", issuer = "${pin}" }
groups = ["app"]
`,
    { path: "lb.toml" },
  ));
  const trust = new ClientTrust({ store });
  const nameOf = (der: Uint8Array): string => {
    const verdict = trust.checkHandshake([der]);
    assert.ok(verdict.ok, verdict.ok ? "" : verdict.detail);
    const found = pinned.identify(verdict.identity, verdict.issuer);
    return "client" in found ? found.client.name : found.deny;
  };
  // Same CN and serial from both CAs: only the pinned CA's certificate is "roll".
  assert.equal(nameOf(keyed.nextClient.der), "roll");
  assert.equal(nameOf(keyed.oldClient.der), "unknown_identity");
  // Without the issuer, a pinned rule never matches.
  const identity = trust.checkHandshake([keyed.nextClient.der]);
  assert.ok(identity.ok);
  assert.deepEqual(pinned.identify(identity.identity), { deny: "unknown_identity" });
  assert.notEqual(oldCa!.spkiSha256, nextCa!.spkiSha256);
});

Deno.test("Policy.identify() finds a client pinned by issuer alone", () => {
  const ca = "ab".repeat(32);
  const byIssuer = new Policy({
    groups: new Map([["app", {}]]),
    clients: new Map([["fleet", { name: "fleet", match: { issuer: ca }, groups: ["app"] }]]),
    limits: { maxConnectionsPerClient: 10 },
  });
  const found = byIssuer.identify(cert({ cn: "anyone" }), { spkiSha256: ca.toUpperCase() });
  assert.ok("client" in found && found.client.name === "fleet");
  assert.deepEqual(byIssuer.identify(cert({ cn: "anyone" }), { spkiSha256: "cd".repeat(32) }), {
    deny: "unknown_identity",
  });
});
