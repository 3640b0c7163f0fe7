/**
 * The config file's schema and what is written from it: the committed JSON Schema and
 * docs/CONFIG.md are up to date, every key is documented with a default and examples
 * that are valid, editors are told about unknown keys, and `check` shows every setting.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { runCli } from "../lib/cli/cli.ts";
import { EXIT_OK } from "../lib/cli/exit_codes.ts";
import { configJsonSchema, parseConfig } from "../lib/config/mod.ts";
import {
  completeExample,
  REFERENCE_FILE,
  renderReference,
  renderSchema,
  SCHEMA_FILE,
} from "../tasks/schema.ts";
import { testPki } from "./_pki_fixtures.ts";

type JsonSchema = Record<string, unknown>;

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PATH = "/etc/mtlb/lb.toml";

/** Every key of the schema with its path, tables' keys included, entries of named tables as `*`. */
function keysOf(schema: JsonSchema, path: string[] = []): [string[], JsonSchema][] {
  const found: [string[], JsonSchema][] = [];
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  for (const [key, value] of Object.entries(properties)) {
    found.push([[...path, key], value]);
    found.push(...keysOf(value, [...path, key]));
    const items = value.items as JsonSchema | undefined;
    for (const item of (items?.anyOf ?? (items === undefined ? [] : [items])) as JsonSchema[]) {
      found.push(...keysOf(item, [...path, key, "[]"]));
    }
  }
  const entry = schema.additionalProperties;
  if (typeof entry === "object" && entry !== null) {
    found.push([[...path, "*"], entry as JsonSchema]);
    found.push(...keysOf(entry as JsonSchema, [...path, "*"]));
  }
  return found;
}

Deno.test("config/lb.schema.json is what deno task schema writes", async () => {
  assert.equal(
    await Deno.readTextFile(SCHEMA_FILE),
    await renderSchema(),
    "config/lb.schema.json is stale: run deno task schema",
  );
});

Deno.test("docs/CONFIG.md is what deno task schema writes", async () => {
  assert.equal(
    await Deno.readTextFile(REFERENCE_FILE),
    await renderReference(),
    "docs/CONFIG.md is stale: run deno task schema",
  );
});

Deno.test("configJsonSchema() gives every key a description, a default and examples", () => {
  const keys = keysOf(configJsonSchema());
  assert.ok(keys.length > 60, `${keys.length} keys`);
  const undocumented = keys.filter(([, schema]) => {
    const taplo = schema["x-taplo"] as { docs?: { defaultValue?: string } } | undefined;
    return typeof schema.description !== "string" || schema.description.length < 10 ||
      !Array.isArray(schema.examples) || schema.examples.length === 0 ||
      !("default" in schema || typeof taplo?.docs?.defaultValue === "string");
  }).map(([path]) => path.join("."));
  assert.deepEqual(undocumented, []);
});

Deno.test("configJsonSchema() refuses unknown keys in every table and names the integers", () => {
  const schema = configJsonSchema();
  assert.equal(schema.additionalProperties, false);
  const open = keysOf(schema)
    .filter(([, s]) => s.type === "object" && s.properties !== undefined)
    .filter(([, s]) => s.additionalProperties !== false).map(([path]) => path.join("."));
  assert.deepEqual(open, []);
  const server = (schema.properties as Record<string, JsonSchema>).server!;
  const retries = (server.properties as Record<string, JsonSchema>).connect_retries!;
  assert.deepEqual([retries.type, retries.minimum, retries.maximum, retries.default], [
    "integer",
    0,
    10,
    2,
  ]);
  // Descriptions name the docs pages in plain text; docs/CONFIG.md keeps the links.
  assert.doesNotMatch(JSON.stringify(schema), /\]\([A-Z]+\.md/);
  assert.match(JSON.stringify(schema), / \(docs\/TRUST\.md#revocation\)/);
  assert.match(JSON.stringify(configJsonSchema({ docsLinks: true })), /\]\(TRUST\.md#revocation\)/);
});

Deno.test("the complete example of docs/CONFIG.md is valid, and so is each key's every example", async (t) => {
  const reference = await Deno.readTextFile(REFERENCE_FILE);
  const block = /## A complete example\n[\s\S]*?```toml\n([\s\S]*?)```/.exec(reference)?.[1];
  assert.ok(block?.startsWith("#:schema ../config/lb.schema.json\n"), "the example's schema line");
  const config = parseConfig(block!, { path: PATH });
  assert.equal(config.server.workers, 4);
  assert.deepEqual(config.groups.get("cache")?.health.send, "PING\r\n");
  for (const [path, schema] of keysOf(configJsonSchema())) {
    // The keys of the example's tables, not those nested in inline values.
    if (path.length !== 2 && !(path.length === 3 && path[1] === "*")) continue;
    const [section, key] = path.length === 2 ? [path[0]!, path[1]!] : [path[0]!, path[2]!];
    for (const example of schema.examples as unknown[]) {
      await t.step(`${section}.${key} = ${JSON.stringify(example)}`, () => {
        const text = completeExample((at) =>
          at[0] === section && at[at.length - 1] === key ? example : undefined
        );
        parseConfig(text, { path: PATH });
      });
    }
  }
});

Deno.test("config/lb.toml and the configs of the docs name their schema on their first line", async () => {
  const lb = await Deno.readTextFile(join(ROOT, "config", "lb.toml"));
  assert.ok(lb.startsWith("#:schema ./lb.schema.json\n"));
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const configs = [...readme.matchAll(/```toml\n([\s\S]*?)```/g)].map((m) => m[1]!)
    .filter((block) => /^\[server\]$/m.test(block));
  assert.ok(configs.length >= 2);
  for (const config of configs) assert.match(config, /^#:schema \S+\/config\/lb\.schema\.json\n/);
});

Deno.test("main.ts check shows the value or default of every server setting and of each group's alpn", async () => {
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_schema_" });
  try {
    const path = join(dir, "lb.toml");
    const tls =
      `[tls]\nca = "${pki.ca.certPath}"\ncert = "${pki.server.certPath}"\nkey = "${pki.server.keyPath}"\n`;
    const groups = `[groups.web]\nupstreams = ["127.0.0.1:7001"]\nlisten = "127.0.0.1:9443"\n`;
    const run = async (text: string) => {
      await Deno.writeTextFile(path, text);
      let stdout = "";
      const code = await runCli(["check", "--config", path], {
        version: "0",
        stdout: (s) => stdout += s,
        stderr: () => {},
      });
      assert.equal(code, EXIT_OK, stdout);
      return stdout;
    };
    const defaults = await run(tls + groups);
    for (
      const line of [
        "    alpn: none (no protocol selected)",
        "Workers: ",
        "Timeouts: handshake 5s, connect 3s (2 retries), idle 15m, drain 30s",
        'Connections: 1MiB buffered per direction at most (max_buffer), no lifetime bound (max_lifetime); on_policy_change = "close": a reload or CRL update closes the live connections it would now refuse',
        "CRL: none (tls.crl not set): no revocation check",
        "Reload: on SIGHUP (watch = false)",
        'Log: format "auto"',
        "Cluster: none (limits and counts per instance)",
        "handshakes in flight at most (max_handshakes: max_connections, 4096 at most)",
      ]
    ) {
      assert.ok(defaults.includes(line), `missing ${JSON.stringify(line)} in\n${defaults}`);
    }
    const set = await run(
      `[server]\nmax_lifetime = "24h"\non_policy_change = "keep"\nmax_buffer = "256KiB"\n` +
        `connect_retries = 1\nmax_handshakes = 100\nworkers = 3\nwatch = true\n[log]\nformat = "json"\n` +
        `[cluster]\nstore = "rediss://user:secret@10.0.0.5"\ninstance_id = "lb-a"\n` +
        tls + groups + 'alpn = ["h2", "http/1.1"]\n',
    );
    for (
      const line of [
        "    alpn: h2, http/1.1",
        "Workers: 1 (one event loop with [cluster])",
        "connect 3s (1 retry)",
        'Connections: 256KiB buffered per direction at most (max_buffer), closed after 24h (max_lifetime); on_policy_change = "keep": live connections a reload or CRL update would now refuse run to their end',
        "100 handshakes in flight at most\n",
        "Reload: on SIGHUP and when the config, [tls] or groups' tls files change (watch = true)",
        'Log: format "json"',
        'Cluster: store rediss 10.0.0.5:6379, on_store_error = "local", lease_ttl 15s, timeout 250ms, clients = "file", instance_id "lb-a"',
      ]
    ) {
      assert.ok(set.includes(line), `missing ${JSON.stringify(line)} in\n${set}`);
    }
    assert.ok(!set.includes("secret"), "never the store's password");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
