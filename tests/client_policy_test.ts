import assert from "node:assert/strict";
import {
  clientPolicyDocument,
  ConfigError,
  parseConfig,
  parseConfigWithClients,
} from "../lib/config/mod.ts";

const PATH = "/etc/mtlb/lb.toml";
const FILE = `[server]
listen = "127.0.0.1:8443"
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
[limits]
max_connections_per_client = 4
[groups.echo]
upstreams = ["127.0.0.1:7001"]
[groups.web]
upstreams = ["127.0.0.1:7002"]
[clients.alice]
match = { cn = "alice" }
groups = ["echo", "web"]
max_connections = 20
connection_rate = { count = 100, per = "1m" }
[clients."svc-b"]
match.san_uri = "spiffe://example.org/b"
match.issuer = "${"AB:".repeat(31)}AB"
groups = ["web"]
`;

Deno.test("clientPolicyDocument() holds only [clients], and reads back as the file's own clients", () => {
  const document = clientPolicyDocument(FILE, { path: PATH });
  assert.doesNotMatch(document, /\[(?:server|tls|groups|limits)\]/);
  const fromFile = parseConfig(FILE, { path: PATH });
  const served = parseConfigWithClients(FILE, document, { path: PATH, policy: "policy 1" });
  assert.deepEqual(served.clients, fromFile.clients);
  assert.equal(served.clients.get("alice")?.maxConnections, 20);
  assert.deepEqual(served.clients.get("alice")?.connectionRate, { count: 100, per: 60_000 });
  assert.equal(served.clients.get("svc-b")?.match.issuer, "ab".repeat(32));
  // Everything else is the file's.
  assert.deepEqual(served.groups, fromFile.groups);
  assert.equal(served.limits.maxConnectionsPerClient, 4);
  assert.equal(served.path, PATH);
});

Deno.test("clientPolicyDocument() of a file without [clients] is an empty policy", () => {
  const file = FILE.slice(0, FILE.indexOf("[clients.alice]"));
  const document = clientPolicyDocument(file, { path: PATH });
  assert.equal(parseConfigWithClients(FILE, document, { path: PATH, policy: "p" }).clients.size, 0);
});

Deno.test("clientPolicyDocument() refuses a file whose [clients] the config loader refuses", async (t) => {
  for (
    const [name, change, key] of [
      ["an undefined group", ['groups = ["web"]', 'groups = ["nope"]'], "clients.svc-b.groups[0]"],
      ["an unknown key", ["max_connections = 20", "max_connection = 20"], "clients.alice"],
      [
        "a bad value",
        ["max_connections = 20", "max_connections = 0"],
        "clients.alice.max_connections",
      ],
    ] as const
  ) {
    await t.step(name, () => {
      assert.throws(
        () => clientPolicyDocument(FILE.replace(change[0], change[1]), { path: PATH }),
        (e: unknown) =>
          e instanceof ConfigError && e.path === PATH &&
          e.problems.some((p) => p.key?.startsWith(key) ?? false),
      );
    });
  }
});

Deno.test("parseConfigWithClients() refuses a policy naming a group this file lacks, with its line in the policy", () => {
  const document = clientPolicyDocument(FILE, { path: PATH });
  const withoutWeb = FILE.replace('[groups.web]\nupstreams = ["127.0.0.1:7002"]\n', "")
    .replace('groups = ["echo", "web"]', 'groups = ["echo"]');
  assert.throws(
    () => parseConfigWithClients(withoutWeb, document, { path: PATH, policy: "client policy 7" }),
    (e: unknown) => {
      if (!(e instanceof ConfigError)) return false;
      const line = document.split("\n").findIndex((l) => l.includes('"web"')) + 1;
      assert.equal(e.path, "client policy 7");
      assert.equal(e.key, "clients.alice.groups[1]");
      assert.equal(e.line, line);
      assert.match(e.message, /^Cannot load config: client policy 7:\d+: .*must name a group/);
      return true;
    },
  );
});

Deno.test("parseConfigWithClients() refuses a policy holding anything but [clients]", () => {
  assert.throws(
    () =>
      parseConfigWithClients(FILE, '[server]\nlisten = "0.0.0.0:1"\n', {
        path: PATH,
        policy: "client policy 2",
      }),
    { name: "ConfigError", message: /client policy 2: a client policy holds only \[clients\]/ },
  );
});

Deno.test("parseConfigWithClients() reports a broken file as the file", () => {
  const document = clientPolicyDocument(FILE, { path: PATH });
  assert.throws(
    () =>
      parseConfigWithClients(FILE.replace("max_connections_per_client = 4", "x = 1"), document, {
        path: PATH,
        policy: "client policy 3",
      }),
    (e: unknown) => e instanceof ConfigError && e.path === PATH && e.key === "limits.x",
  );
});
