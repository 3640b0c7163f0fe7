/**
 * Tests of `lib/control/permission_needs.ts` and the run command of
 * `lib/control/permissions.ts`: the narrow permissions a config needs, and the
 * line that grants them.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseConfig } from "../lib/config/mod.ts";
import { formatRunCommand } from "../lib/control/permissions.ts";
import { permissionNeeds } from "../lib/control/permission_needs.ts";

const TLS = `[tls]
ca = "pki/ca.crt"
cert = "pki/server.crt"
key = "/keys/server.key"
`;

Deno.test("permissionNeeds() lists every listener, upstream and file once", () => {
  const config = parseConfig(
    `[server]
listen = "127.0.0.1:8443"
${TLS}crl = "pki/ca.crl"
[admin]
listen = "127.0.0.1:9000"
token_file = "secrets/admin.token"
[groups.echo]
upstreams = ["127.0.0.1:7001", { address = "127.0.0.1:7002", weight = 2 }]
listen = "0.0.0.0:9443"
[groups.cache]
upstreams = ["cache.internal:6379", "127.0.0.1:7001"]
`,
    { path: "/etc/mtlb/lb.toml" },
  );
  assert.deepEqual(permissionNeeds(config, { workers: 1 }), {
    net: [
      "127.0.0.1:8443",
      "0.0.0.0:9443",
      "127.0.0.1:9000",
      "127.0.0.1:7001",
      "127.0.0.1:7002",
      "cache.internal:6379",
    ],
    read: [
      "/etc/mtlb/lb.toml",
      "/etc/mtlb/pki/ca.crt",
      "/etc/mtlb/pki/server.crt",
      "/keys/server.key",
      "/etc/mtlb/pki/ca.crl",
      "/etc/mtlb/secrets/admin.token",
    ],
  });
});

Deno.test("permissionNeeds() asks for the host alone for a port 0 listener", async (t) => {
  const cases: [string, string[]][] = [
    ["127.0.0.1:0", ["127.0.0.1"]],
    ["[::1]:0", ["[::1]"]],
    ["[::1]:8443", ["[::1]:8443"]],
    ["localhost:0", ["localhost", "127.0.0.1", "[::1]"]],
    ["localhost:8443", ["localhost:8443", "127.0.0.1:8443", "[::1]:8443"]],
  ];
  for (const [listen, expected] of cases) {
    await t.step(listen, () => {
      const config = parseConfig(
        `[server]\nlisten = "${listen}"\n${TLS}[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`,
        { path: "/etc/mtlb/lb.toml" },
      );
      assert.deepEqual(permissionNeeds(config).net, [...expected, "127.0.0.1:7001"]);
    });
  }
});

Deno.test("permissionNeeds() resolves a relative config path against the working directory", () => {
  const config = parseConfig(
    `[server]\nlisten = "127.0.0.1:0"\n${TLS}[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`,
    { path: "config/lb.toml" },
  );
  assert.deepEqual(permissionNeeds(config).read.slice(0, 2), [
    join(Deno.cwd(), "config/lb.toml"),
    join(Deno.cwd(), "config/pki/ca.crt"),
  ]);
});

Deno.test("formatRunCommand() prints absolute paths and quotes for a shell", () => {
  assert.equal(
    formatRunCommand(
      {
        net: ["127.0.0.1:8443", "[::1]:9443"],
        read: ["/srv/lb/config/lb.toml", "/etc/pki/it's.key", "lib"],
      },
      { main: "/opt/my mtlb/main.ts", args: ["--config", "/srv/lb/config/lb.toml"] },
    ),
    `deno run '--allow-net=127.0.0.1:8443,[::1]:9443' '--allow-read=/srv/lb/config/lb.toml,/etc/pki/it'\\''s.key,${
      join(Deno.cwd(), "lib")
    }' '/opt/my mtlb/main.ts' --config /srv/lb/config/lb.toml`,
  );
  assert.equal(formatRunCommand({ net: [], read: [] }), "deno run main.ts");
});
