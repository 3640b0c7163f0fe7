/**
 * The config keys of upstreams from DNS (`{ dns = ... }`, `{ srv = ... }` in a group's
 * `upstreams`, `[server] resolver`), what `check` shows of them, and the permissions
 * and worker count they lead to.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "../lib/cli/cli.ts";
import { EXIT_OK } from "../lib/cli/exit_codes.ts";
import { ConfigError, parseConfig } from "../lib/config/mod.ts";
import { hasDnsUpstreams, permissionNeeds, workerCount } from "../lib/control/permission_needs.ts";
import { checkPermissions, formatRunCommand, permissionFlags } from "../lib/control/permissions.ts";
import { testPki } from "./_pki_fixtures.ts";

const PATH = "/etc/mtlb/lb.toml";

function config(upstreams: string, server = ""): string {
  return `[server]
listen = "127.0.0.1:8443"
${server}
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"

[groups.api]
upstreams = ${upstreams}
`;
}

function problems(text: string): string[] {
  try {
    parseConfig(text, { path: PATH });
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.problems.map((p) => `${p.key}: ${p.detail.replace(`"${p.key}" `, "")}`);
  }
  return assert.fail("expected a ConfigError");
}

Deno.test("parseConfig() reads dns and srv entries of upstreams beside addresses, and [server] resolver", () => {
  const parsed = parseConfig(
    config(
      `["10.0.0.9:7000", { dns = "api.internal:7000" }, { srv = "_api._tcp.internal.", interval = "30s" }, { address = "10.0.0.8:7000", weight = 2 }]`,
      'resolver = "127.0.0.1:5353"',
    ),
    { path: PATH },
  );
  const group = parsed.groups.get("api")!;
  assert.deepEqual(group.upstreams, [
    { address: "10.0.0.9:7000", weight: 1 },
    { address: "10.0.0.8:7000", weight: 2 },
  ]);
  assert.deepEqual(group.dns, [
    { type: "dns", name: "api.internal", port: 7000, interval: 10_000 },
    { type: "srv", name: "_api._tcp.internal", interval: 30_000 },
  ]);
  assert.equal(parsed.server.resolver, "127.0.0.1:5353");
  const plain = parseConfig(config(`["10.0.0.9:7000"]`), { path: PATH });
  assert.deepEqual(plain.groups.get("api")!.dns, []);
  assert.equal(plain.server.resolver, undefined);
  // A group may be made of DNS entries only.
  assert.deepEqual(
    parseConfig(config(`[{ dns = "api.internal:7000" }]`), { path: PATH }).groups.get("api")!
      .upstreams,
    [],
  );
});

Deno.test("parseConfig() refuses malformed dns and srv entries and resolvers, with their key path", async (t) => {
  for (
    const [name, text, expected] of [
      [
        "dns without a port",
        config(`[{ dns = "api.internal" }]`),
        /^groups\.api\.upstreams\[0\]\.dns: must be "host:port", received "api\.internal"/,
      ],
      [
        "srv that is not a name",
        config(`[{ srv = "_api._tcp..internal" }]`),
        /^groups\.api\.upstreams\[0\]\.srv: must be a DNS name/,
      ],
      [
        "interval below 100ms",
        config(`[{ dns = "api.internal:7000", interval = "10ms" }]`),
        /^groups\.api\.upstreams\[0\]\.interval: must be at least/,
      ],
      [
        "dns and srv in one table",
        config(`[{ dns = "api.internal:7000", srv = "_api._tcp.internal" }]`),
        /^groups\.api\.upstreams\[0\]/,
      ],
      [
        "the same entry twice",
        config(`[{ dns = "api.internal:7000" }, { dns = "API.internal:7000", interval = "5s" }]`),
        /^groups\.api\.upstreams\[1\]: repeats "dns api\.internal:7000", already groups\.api\.upstreams\[0\]/,
      ],
      [
        "a resolver given by name",
        config(`["10.0.0.9:7000"]`, 'resolver = "dns.internal:53"'),
        /^server\.resolver: must be an IP address and port, received "dns\.internal:53"/,
      ],
    ] as const
  ) {
    await t.step(name, () => {
      const found = problems(text);
      assert.ok(found.some((p) => expected.test(p)), found.join("\n"));
    });
  }
});

Deno.test("permissionNeeds() asks for every host with upstreams from DNS, and the workers' modules", () => {
  const dns = parseConfig(
    config(`["10.0.0.9:7000", { srv = "_api._tcp.internal" }]`, 'resolver = "10.0.0.53:53"'),
    { path: PATH },
  );
  assert.equal(hasDnsUpstreams(dns), true);
  assert.equal(workerCount({ ...dns, server: { ...dns.server, workers: 4 } }), 4);
  assert.equal(
    permissionNeeds(dns, { workers: 4 }).read.length,
    permissionNeeds(dns, { workers: 1 }).read.length + 1,
    "workers load lib/",
  );
  const needs = permissionNeeds(dns, { workers: 1 });
  assert.equal(needs.anyHost, true);
  assert.deepEqual(needs.net, ["127.0.0.1:8443", "10.0.0.9:7000", "10.0.0.53:53"]);
  assert.deepEqual(permissionFlags(needs).slice(0, 1), ["--allow-net"]);
  assert.match(formatRunCommand(needs, { main: "main.ts" }), /^deno run --allow-net --allow-read=/);

  // These tests run with --allow-net for a few hosts: not every host.
  const report = checkPermissions({ net: [], read: [], anyHost: true });
  assert.equal(report.missing.anyHost, true);
  assert.deepEqual(permissionFlags(report.missing), ["--allow-net"]);
  assert.equal(checkPermissions({ net: [], read: [] }).missing.anyHost, undefined);

  const plain = parseConfig(config(`["10.0.0.9:7000"]`, 'resolver = "10.0.0.53:53"'), {
    path: PATH,
  });
  assert.equal(hasDnsUpstreams(plain), false);
  const narrow = permissionNeeds(plain, { workers: 1 });
  assert.equal(narrow.anyHost, undefined);
  assert.deepEqual(
    narrow.net,
    ["127.0.0.1:8443", "10.0.0.9:7000"],
    "an unused resolver needs nothing",
  );
});

Deno.test("main.ts check shows each DNS entry, its interval and the resolver", async () => {
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_dns_check_" });
  try {
    const path = join(dir, "lb.toml");
    await Deno.writeTextFile(
      path,
      config(
        `["10.0.0.9:7000", { dns = "api.internal:7000" }, { srv = "_api._tcp.internal", interval = "1m" }]`,
        'workers = 4\nresolver = "127.0.0.1:5353"',
      ).replace('ca = "ca.crt"', `ca = "${pki.ca.certPath}"`)
        .replace('cert = "server.crt"', `cert = "${pki.server.certPath}"`)
        .replace('key = "server.key"', `key = "${pki.server.keyPath}"`),
    );
    let stdout = "";
    const code = await runCli(["check", "--config", path], {
      version: "0",
      stdout: (s) => stdout += s,
      stderr: () => {},
    });
    assert.equal(code, EXIT_OK, stdout);
    for (
      const line of [
        "    10.0.0.9:7000  weight 1\n",
        "    dns api.internal:7000  every A and AAAA address, looked up every 10s\n",
        "    srv _api._tcp.internal  SRV targets, ports and weights, looked up every 1m\n",
        "Workers: 4\n",
        "DNS: upstreams looked up with 127.0.0.1:5353, once for all 4 workers\n",
      ]
    ) {
      assert.ok(stdout.includes(line), `missing ${JSON.stringify(line)} in\n${stdout}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
