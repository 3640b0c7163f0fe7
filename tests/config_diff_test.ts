import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/mod.ts";
import { describeChanges, diffConfig } from "../lib/config/diff.ts";

const base = `[server]
listen = "127.0.0.1:8443"
[tls]
ca = "ca.crt"
cert = "s.crt"
key = "s.key"
[groups.echo]
upstreams = ["127.0.0.1:7001"]
`;
const parse = (text: string) => parseConfig(text, { path: "/etc/mtlb/lb.toml" });
const files = { ca: "CA1", cert: "CERT", key: "KEY" };

Deno.test("diffConfig() names clients, groups, listeners and settings that changed", () => {
  const before = parse(`${base}
[clients.alice]
match = { cn = "alice" }
groups = ["echo"]

[clients.bob]
match = { cn = "bob" }
groups = ["echo"]
`);
  const after = parse(`${base}
[groups.cache]
upstreams = ["127.0.0.1:6379"]
listen = "127.0.0.1:9443"

[clients.alice]
match = { cn = "alice" }
groups = ["echo", "cache"]

[clients.carol]
match = { cn = "carol" }
groups = ["cache"]
`.replace('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\nidle_timeout = "1h"'));
  const changes = diffConfig(before, after, {
    previous: files,
    next: { ...files, ca: "CA2" },
  });
  assert.deepEqual(changes.clients, { added: ["carol"], removed: ["bob"], changed: ["alice"] });
  assert.deepEqual(changes.groups, { added: ["cache"], removed: [], changed: [] });
  assert.deepEqual(changes.listeners, { added: ["127.0.0.1:9443 (cache)"], removed: [] });
  assert.deepEqual(changes.settings, ["server.idle_timeout", "tls.ca"]);
  assert.equal(
    describeChanges(changes),
    "clients +carol -bob ~alice; groups +cache; listeners +127.0.0.1:9443 (cache); settings server.idle_timeout, tls.ca",
  );
});

Deno.test("diffConfig() finds nothing between equal configurations", () => {
  const config = parse(base);
  const changes = diffConfig(config, parse(base), { previous: files, next: files });
  assert.equal(describeChanges(changes), "no changes");
});
