/**
 * Config fuzzing: thousands of mutated TOML files (seeded, so a failure reproduces)
 * through `parseConfig`, and a sample of them through the real `check` command. Every
 * outcome must be a valid configuration or a `ConfigError` with a message; never
 * another exception, a stack trace or a hang.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { testPki } from "./_pki_fixtures.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Mutated files parsed in-process. */
const MUTANTS = 3_000;
/** Of which this many also go through `main.ts check` as a subprocess. */
const SUBPROCESS_SAMPLE = 20;
/** The seed; set MTLB_FUZZ_SEED to explore other files. */
const SEED = Number(Deno.env.get("MTLB_FUZZ_SEED") ?? 0x6d746c62);

/** mulberry32: a tiny seeded generator, good enough to pick mutations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seeds: every section and value shape the format has, valid as they stand. */
function seeds(tls: { ca: string; cert: string; key: string }): string[] {
  const tlsSection = `[tls]
ca = ${JSON.stringify(tls.ca)}
cert = ${JSON.stringify(tls.cert)}
key = ${JSON.stringify(tls.key)}
ciphers = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]
`;
  return [
    `# A full config, as config/lb.toml lays it out.
[server]
listen = "127.0.0.1:8443"
handshake_timeout = "5s"
connect_timeout = "3s"
idle_timeout = "15m"
drain_timeout = "30s"

${tlsSection}
[limits]
max_connections_per_client = 10
connection_rate = { count = 100, per = "1m" }

[health]
interval = "30s"
timeout = "1s"
rise = 1
fall = 1
send = "PING\\r\\n"
expect = "+PONG"

[log]
format = "auto"

[groups.echo]
upstreams = [
  "127.0.0.1:7001",
  { address = "127.0.0.1:7002", weight = 2 },
]
listen = "127.0.0.1:9443"
health = { interval = "5s" }

[groups.cache]
upstreams = ["127.0.0.1:7003"]
health = { send = "PING\\r\\n", expect = "+PONG" }

[clients.alice]
match = { cn = "alice" }
groups = ["echo", "cache"]
max_connections = 20

[clients.bob]
match = { serial = "0A:1B:00", cn = "bob" }
groups = ["echo"]
connection_rate = { count = 10, per = "1s" }

[clients.carol]
match = { san_uri = "spiffe://example.org/carol", san_dns = "carol.example.org" }
groups = ["cache"]

[clients.dave]
match = { spki_sha256 = "${"ab".repeat(32)}" }
groups = ["echo"]
`,
    `# Dotted keys (before any table header), IPv6, dedicated listeners only.
groups.v6.upstreams = ["[::1]:7001", "localhost:7002"]
groups.v6.listen = "[::1]:9443"
groups."with-dash".upstreams = [{ address = "127.0.0.1:7004", weight = 1000 }]
groups."with-dash".listen = "127.0.0.1:9444"
clients.svc.match.cn = "svc"
clients.svc.groups = ["v6", "with-dash"]
limits.max_connections_per_client = 1
health.interval = "500ms"
health.fall = 3

${tlsSection}`,
  ];
}

/** Values of every TOML type, and strings that are almost right. */
const VALUES = [
  `"text"`,
  `""`,
  `"\\u0000"`,
  `"${"x".repeat(5000)}"`,
  `0`,
  `-1`,
  `1`,
  `65536`,
  `9223372036854775807`,
  `-9223372036854775808`,
  `0x7fffffff`,
  `3.14`,
  `1e308`,
  `inf`,
  `nan`,
  `-0.0`,
  `true`,
  `false`,
  `[]`,
  `[1, "a", true]`,
  `[[1], [2]]`,
  `{}`,
  `{ x = 1 }`,
  `{ address = "127.0.0.1:1" }`,
  `1979-05-27T07:32:00Z`,
  `07:32:00`,
  `"500ms"`,
  `"0s"`,
  `"-5s"`,
  `"1e9h"`,
  `"999999999999999999d"`,
  `"5 s"`,
  `"127.0.0.1:0"`,
  `"127.0.0.1:65536"`,
  `"[::1]:8443"`,
  `"[::1:8443"`,
  `"host:"`,
  `":80"`,
  `"TLS_CHACHA20_POLY1305_SHA256"`,
  `"optional"`,
  `"allow"`,
  `"${"ab:".repeat(31)}AB"`,
  `"/nonexistent/file.pem"`,
  `"../../../etc/passwd"`,
];

const KEYS = [
  "listen",
  "handshake_timeout",
  "connect_timeout",
  "idle_timeout",
  "drain_timeout",
  "max_connections",
  "workers",
  "ca",
  "cert",
  "key",
  "ciphers",
  "crl",
  "client_eku",
  "crl_missing",
  "max_connections_per_client",
  "connection_rate",
  "interval",
  "timeout",
  "rise",
  "fall",
  "send",
  "expect",
  "upstreams",
  "address",
  "weight",
  "health",
  "match",
  "groups",
  "cn",
  "serial",
  "spki_sha256",
  "san_uri",
  "san_dns",
  "issuer",
  "format",
  "count",
  "per",
  "listen",
  "Listen",
  "a.b",
  '"quoted key"',
  "",
  // Names every object inherits, and the one that is its prototype.
  "toString",
  "constructor",
  "__proto__",
];

const HEADERS = [
  "[server]",
  "[tls]",
  "[groups]",
  "[groups.echo]",
  "[groups.new]",
  '[groups."a b"]',
  "[[groups]]",
  "[[clients.alice]]",
  "[clients.zed]",
  "[groups.__proto__]",
  "[clients.constructor]",
  "[server.extra]",
  "[admin]",
  "[log]",
  "[",
  "[]",
];

/** Bytes that break things: quotes, brackets, escapes, control and non-ASCII. */
const BYTES = `"'[]{}=,.#\\\n\r\t 0\x00\x7f\u00e9\u{1F600}\uFFFD`;

type Mutation = (text: string, random: () => number) => string;

const pick = <T>(list: readonly T[], random: () => number): T =>
  list[Math.floor(random() * list.length)]!;

const MUTATIONS: Record<string, Mutation> = {
  flip(text, random) {
    const at = Math.floor(random() * text.length);
    const code = text.charCodeAt(at);
    const replacement = random() < 0.5
      ? String.fromCharCode(code ^ (1 << Math.floor(random() * 7)))
      : pick([...BYTES], random);
    return text.slice(0, at) + replacement + text.slice(at + 1);
  },
  deleteLine(text, random) {
    const lines = text.split("\n");
    lines.splice(Math.floor(random() * lines.length), 1);
    return lines.join("\n");
  },
  duplicateLine(text, random) {
    const lines = text.split("\n");
    const at = Math.floor(random() * lines.length);
    lines.splice(at, 0, lines[at]!);
    return lines.join("\n");
  },
  swapValue(text, random) {
    const lines = text.split("\n");
    const candidates = lines.flatMap((line, i) => /^\s*[\w."-]+\s*=/.test(line) ? [i] : []);
    if (candidates.length === 0) return text;
    const at = pick(candidates, random);
    lines[at] = lines[at]!.replace(/=.*$/, `= ${pick(VALUES, random)}`);
    return lines.join("\n");
  },
  swapInlineValue(text, random) {
    // Inside inline tables and arrays: `{ count = 100, ... }`, `"127.0.0.1:7001"`.
    const spots = [...text.matchAll(/(= |\[ ?|, )("[^"\n]*"|[\w.:-]+)/g)];
    if (spots.length === 0) return text;
    const spot = pick(spots, random);
    const at = spot.index! + spot[1]!.length;
    return text.slice(0, at) + pick(VALUES, random) + text.slice(at + spot[2]!.length);
  },
  renameKey(text, random) {
    const lines = text.split("\n");
    const candidates = lines.flatMap((line, i) => /^\s*[\w."-]+\s*=/.test(line) ? [i] : []);
    if (candidates.length === 0) return text;
    const at = pick(candidates, random);
    lines[at] = lines[at]!.replace(/^\s*[\w"-]+/, pick(KEYS, random));
    return lines.join("\n");
  },
  renameTable(text, random) {
    const lines = text.split("\n");
    const candidates = lines.flatMap((line, i) => line.startsWith("[") ? [i] : []);
    if (candidates.length === 0) return lines.join("\n") + `\n${pick(HEADERS, random)}\n`;
    lines[pick(candidates, random)] = pick(HEADERS, random);
    return lines.join("\n");
  },
  insertTable(text, random) {
    const lines = text.split("\n");
    const at = Math.floor(random() * (lines.length + 1));
    lines.splice(at, 0, pick(HEADERS, random), `${pick(KEYS, random)} = ${pick(VALUES, random)}`);
    return lines.join("\n");
  },
  truncate(text, random) {
    return text.slice(0, Math.floor(random() * text.length));
  },
};

interface Mutant {
  index: number;
  steps: string[];
  text: string;
}

/** The mutants, deterministic for a seed: one to three mutations of a seed each. */
function mutants(bases: string[], count: number, seed: number): Mutant[] {
  const random = rng(seed);
  const names = Object.keys(MUTATIONS);
  return Array.from({ length: count }, (_, index) => {
    let text = pick(bases, random);
    const steps: string[] = [];
    const n = 1 + Math.floor(random() * 3);
    for (let i = 0; i < n; i++) {
      const name = pick(names, random);
      steps.push(name);
      text = MUTATIONS[name]!(text, random);
    }
    return { index, steps, text };
  });
}

type Verdict = { ok: true } | { ok: false; error: ConfigError };

/** Parses in-process; anything but a ConfigError fails the test with the mutant. */
function verdict(mutant: Mutant, path: string): Verdict {
  try {
    const config = parseConfig(mutant.text, { path });
    assert.ok(config.groups.size > 0, "a valid config has a group");
    for (const client of config.clients.values()) {
      for (const group of client.groups) assert.ok(config.groups.has(group));
    }
    return { ok: true };
  } catch (error) {
    if (error instanceof ConfigError) return { ok: false, error };
    throw new Error(
      `Mutant ${mutant.index} (seed ${SEED}, ${mutant.steps.join(" + ")}) threw ${
        error instanceof Error ? error.name : typeof error
      } instead of a ConfigError:\n${mutant.text}`,
      { cause: error },
    );
  }
}

Deno.test("parseConfig() answers thousands of mutated configs with a config or a ConfigError", async () => {
  const pki = await testPki();
  const bases = seeds({ ca: "ca.crt", cert: "server.crt", key: "server.key" });
  const path = "/fuzz/lb.toml";
  for (const base of bases) parseConfig(base, { path }); // the seeds are valid
  let valid = 0;
  const byKind = new Map<string, number>();
  const started = performance.now();
  let slowest = 0;
  for (const mutant of mutants(bases, MUTANTS, SEED)) {
    const t0 = performance.now();
    const result = verdict(mutant, path);
    slowest = Math.max(slowest, performance.now() - t0);
    if (result.ok) {
      valid++;
      continue;
    }
    const { error } = result;
    const lines = mutant.text.split("\n").length;
    assert.ok(error.message.startsWith(`Cannot load config: ${path}`), error.message);
    assert.ok(error.detail.length > 0 && !error.detail.includes("\n    at "), error.message);
    if (error.line !== undefined) {
      assert.ok(error.line >= 1 && error.line <= lines + 1, `line ${error.line} of ${lines}`);
    }
    const kind = error.detail.startsWith("invalid TOML") ? "toml" : "semantic";
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
  }
  const elapsed = performance.now() - started;
  // Every kind of outcome shows up, or the mutations are too weak (or too strong).
  assert.ok(
    valid > 0 && (byKind.get("toml") ?? 0) > 0 && (byKind.get("semantic") ?? 0) > 0,
    [
      `valid ${valid}`,
      ...byKind,
    ].join(", "),
  );
  assert.ok(slowest < 500, `the slowest mutant took ${slowest} ms`);
  assert.ok(pki.dir.length > 0);
  if (Deno.env.get("MTLB_FUZZ_VERBOSE")) {
    console.log(
      `${MUTANTS} mutants in ${elapsed.toFixed(0)} ms: ${valid} valid, ${
        byKind.get("toml")
      } TOML errors, ${byKind.get("semantic")} semantic errors`,
    );
  }
});

Deno.test("main.ts check exits 0 or 2 with a message on mutated configs, never a stack trace", async () => {
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_fuzz_" });
  try {
    const bases = seeds({
      ca: join(pki.dir, "ca.crt"),
      cert: join(pki.dir, "server.crt"),
      key: join(pki.dir, "server.key"),
    });
    // A sample with both outcomes: mostly errors, a few still-valid mutants.
    const all = mutants(bases, MUTANTS, SEED ^ 0x5a5a);
    const judged = all.map((mutant) => {
      const path = join(dir, `m${mutant.index}.toml`);
      return { mutant, path, result: verdict(mutant, path) };
    });
    const sample = [
      ...judged.filter((j) => j.result.ok).slice(0, 5),
      ...judged.filter((j) => !j.result.ok),
    ].slice(0, SUBPROCESS_SAMPLE);
    assert.ok(sample.some((j) => j.result.ok) && sample.some((j) => !j.result.ok));

    const run = async ({ mutant, path, result }: (typeof sample)[number]) => {
      await Deno.writeTextFile(path, mutant.text);
      // What check should say: the parse error, or a certificate error, or nothing.
      let expected: string | undefined;
      if (!result.ok) expected = result.error.message;
      else {
        try {
          await loadTlsMaterial(parseConfig(mutant.text, { path }));
        } catch (error) {
          if (!(error instanceof ConfigError)) throw error;
          expected = error.message;
        }
      }
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-prompt",
          // The config and certificates, and mtlb's modules (Workers load them).
          `--allow-read=${dir},${pki.dir},${join(ROOT, "lib")}`,
          "main.ts",
          "check",
          "--config",
          path,
        ],
        cwd: ROOT,
        env: { NO_COLOR: "1" },
        stdin: "null",
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      const where = `mutant ${mutant.index} (seed ${SEED ^ 0x5a5a}, ${
        mutant.steps.join(" + ")
      }), exit ${output.code}:\n${stderr}`;
      assert.ok(!/Uncaught|\n\s+at .+:\d+:\d+/.test(stderr), `a stack trace from ${where}`);
      if (expected === undefined) {
        assert.equal(output.code, 0, where);
        assert.match(new TextDecoder().decode(output.stdout), /is valid/, where);
      } else {
        assert.equal(output.code, 2, where);
        // The whole message, every problem on its own line.
        assert.equal(stderr, `${expected}\n`, where);
      }
    };
    // Four at a time: each is a Deno process start.
    const queue = [...sample];
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) await run(next);
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
