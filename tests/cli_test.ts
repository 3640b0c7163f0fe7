import assert from "node:assert/strict";
import { join } from "node:path";
import { connect, type Socket } from "node:net";
import { X509Certificate } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import { DEFAULT_CONFIG, parseCliArgs, USAGE } from "../lib/cli/args.ts";
import { checkCertificateDates } from "../lib/cli/certificate_dates.ts";
import { runCli } from "../lib/cli/cli.ts";
import { EXIT_OK, EXIT_USAGE } from "../lib/cli/exit_codes.ts";
import { uncoveredSniGroups } from "../lib/cli/sni_coverage.ts";
import { parseConfig } from "../lib/config/mod.ts";
import { configureLogging } from "../lib/control/logging.ts";
import { demoCommands, startDemoUpstreams } from "../demo.ts";
import { concat, readAll, text } from "./_harness.ts";
import { TrustStore } from "../lib/identity/trust_store.ts";
import { rolloverPki, testPki } from "./_pki_fixtures.ts";

const DAY = 24 * 60 * 60 * 1000;
const ESC = String.fromCharCode(0x1b);

Deno.test("parseCliArgs() reads each command with its defaults", async (t) => {
  const cases: [string[], unknown][] = [
    [[], { command: "serve", config: DEFAULT_CONFIG, logFormat: undefined, logLevel: "info" }],
    [
      ["serve", "-c", "lb.toml", "--log-format", "json", "--log-level", "debug"],
      { command: "serve", config: "lb.toml", logFormat: "json", logLevel: "debug" },
    ],
    [
      ["--config=lb.toml", "--log-level", "warn"],
      { command: "serve", config: "lb.toml", logFormat: undefined, logLevel: "warning" },
    ],
    [["check", "--config", "a.toml"], { command: "check", config: "a.toml" }],
    [["permissions"], { command: "permissions", config: DEFAULT_CONFIG }],
    [["clients", "push"], { command: "clients", action: "push", config: DEFAULT_CONFIG }],
    [
      ["clients", "pull", "-c", "lb.toml"],
      { command: "clients", action: "pull", config: "lb.toml" },
    ],
    [
      ["certs"],
      {
        command: "certs",
        dir: "certs",
        clients: undefined,
        serverNames: [],
        config: undefined,
        force: false,
      },
    ],
    [
      [
        "certs",
        "--dir",
        "pki",
        "--client",
        "carol",
        "--client",
        "dave",
        "--server-name",
        "cache.example.com",
        "--server-name=10.0.0.1",
        "-c",
        "lb.toml",
        "--force",
      ],
      {
        command: "certs",
        dir: "pki",
        clients: ["carol", "dave"],
        serverNames: ["cache.example.com", "10.0.0.1"],
        config: "lb.toml",
        force: true,
      },
    ],
    [["--help"], { command: "help" }],
    [["check", "-h"], { command: "help" }],
    [["-V"], { command: "version" }],
    [["--version", "--config", "x"], { command: "version" }],
  ];
  for (const [args, expected] of cases) {
    await t.step(args.join(" ") || "(no arguments)", () => {
      assert.deepEqual(parseCliArgs(args), expected);
    });
  }
});

Deno.test("parseCliArgs() refuses what it does not know", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--confg", "lb.toml"], /^Unknown option --confg; did you mean --config\?$/],
    [["check", "--conifg=lb.toml"], /^Unknown option --conifg; did you mean --config\?$/],
    [["--conf", "lb.toml"], /^Unknown option --conf; did you mean --config\?$/],
    [["certs", "--clients", "dave"], /^Unknown option --clients; did you mean --client\?$/],
    [["certs", "--servername", "x"], /^Unknown option --servername; did you mean --server-name\?$/],
    [["--log-levl", "debug"], /^Unknown option --log-levl; did you mean --log-level\?$/],
    [["serve", "--frobnicate"], /^Unknown option --frobnicate$/],
    [["-x"], /^Unknown option -x$/],
    [["--toString"], /^Unknown option --toString$/],
    [["--force=yes", "certs"], /^Option --force takes no value, received "yes"$/],
    [
      ["--config", "--log-level", "debug"],
      /^Option --config needs a value, received the option --log-level/,
    ],
    [["bogus"], /unknown command "bogus"/],
    [["check", "extra"], /expected one command/],
    [["clients"], /"clients" needs push or pull, received nothing/],
    [["clients", "send"], /"clients" needs push or pull, received "send"/],
    [["clients", "push", "now"], /expected one command/],
    [["clients", "push", "--force"], /"clients" does not take --force/],
    [["check", "--force"], /"check" does not take --force/],
    [["serve", "--dir", "x"], /"serve" does not take --dir/],
    [["check", "--server-name", "x"], /"check" does not take --server-name/],
    [["--log-format", "xml"], /--log-format must be auto, text or json, received "xml"/],
    [["--log-level", "loud"], /--log-level must be .*received "loud"/],
    [["--config"], /^Option --config needs a value$/],
    [["-c"], /^Option --config needs a value$/],
    [["--config="], /--config must not be empty/],
    [["certs", "--client="], /--client must not be empty/],
    [["certs", "--server-name="], /--server-name must not be empty/],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), () => {
      assert.throws(() => parseCliArgs(args), (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.equal(e.name, "UsageError");
        assert.match(e.message, message);
        return true;
      });
    });
  }
});

Deno.test("checkCertificateDates() errs on expired and warns within 30 days", async (t) => {
  const now = Date.parse("2030-06-01T00:00:00Z");
  const cert = (notBefore: number, notAfter: number) => ({
    key: "tls.cert" as const,
    subject: "CN=localhost",
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
  });
  const cases: [string, number, number, string | undefined, RegExp | undefined][] = [
    ["valid for a year", now - DAY, now + 365 * DAY, undefined, undefined],
    ["exactly 30 days left", now - DAY, now + 30 * DAY, undefined, undefined],
    ["10 days left", now - DAY, now + 10 * DAY, "warning", /expires in 10 days, on 2030-06-11/],
    ["1 day left", now - DAY, now + DAY + 1, "warning", /expires in 1 day,/],
    [
      "expired",
      now - 2 * DAY,
      now - DAY,
      "error",
      /"tls\.cert" certificate "CN=localhost" expired/,
    ],
    ["not yet valid", now + DAY, now + 365 * DAY, "warning", /is not valid until 2030-06-02/],
  ];
  for (const [name, notBefore, notAfter, level, message] of cases) {
    await t.step(name, () => {
      const findings = checkCertificateDates([cert(notBefore, notAfter)], now);
      assert.equal(findings[0]?.level, level);
      if (message !== undefined) assert.match(findings[0]!.message, message);
    });
  }
});

/** Runs the CLI in-process, capturing its output. */
async function run(args: string[], now?: number) {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, {
    version: "9.8.7",
    stdout: (t) => stdout += t,
    stderr: (t) => stderr += t,
    ...(now === undefined ? {} : { now: () => now }),
  });
  return { code, stdout, stderr };
}

Deno.test("runCli() prints the version and the help on stdout", async () => {
  assert.deepEqual(await run(["--version"]), { code: EXIT_OK, stdout: "mtlb 9.8.7\n", stderr: "" });
  const help = await run(["--help"]);
  assert.equal(help.code, EXIT_OK);
  assert.ok(help.stdout.startsWith("mtlb 9.8.7: "));
  assert.ok(help.stdout.endsWith(USAGE));
  assert.match(USAGE, /Exit status: 0 success; 1 .* 2 bad arguments/s);
});

Deno.test("runCli() prints the usage on stderr and exits 2 on a bad command line", async () => {
  const result = await run(["serve", "--nope"]);
  assert.equal(result.code, EXIT_USAGE);
  assert.equal(result.stdout, "");
  assert.ok(result.stderr.startsWith("Unknown option --nope\n\nUsage:\n"), result.stderr);
  assert.ok(result.stderr.endsWith("--help describes every command and option.\n"));
  assert.ok(USAGE.startsWith(result.stderr.split("\n\n")[1]!.split("--help")[0]!));
});

async function writeConfig(dir: string, body: string): Promise<string> {
  const pki = await testPki();
  const path = join(dir, "lb.toml");
  await Deno.writeTextFile(
    path,
    `[tls]\nca = "${pki.ca.certPath}"\ncert = "${pki.server.certPath}"\nkey = "${pki.server.keyPath}"\n${body}`,
  );
  return path;
}

Deno.test("runCli() check summarizes the config and warns about a certificate near expiry", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_cli_" });
  try {
    const path = await writeConfig(
      dir,
      `[server]
listen = "127.0.0.1:8443"
[groups.echo]
upstreams = ["127.0.0.1:7001", { address = "127.0.0.1:7002", weight = 3 }]
listen = "127.0.0.1:9443"
[clients.alice]
match = { cn = "alice", serial = "0A1B" }
groups = ["echo"]
max_connections = 4
`,
    );
    const ok = await run(["check", "--config", path]);
    assert.equal(ok.code, EXIT_OK, ok.stderr);
    // Group echo may be asked for by SNI on the shared listener: the test PKI's server
    // certificate names localhost only.
    const pki = await testPki();
    assert.equal(
      ok.stderr,
      `Warning: the server certificate ("tls.cert", ${pki.server.certPath}) does not name group echo among its DNS names (localhost): a client that checks host names (curl, browsers, most TLS libraries) refuses the server when it asks for this group by SNI on the shared listener; issue the certificate for these names too (for the development PKI: remove server.crt and server.key, then main.ts certs --server-name NAME), or have such clients choose by ALPN or a group's own listener\n`,
    );
    for (
      const line of [
        `Config ${path} is valid.`,
        "  127.0.0.1:8443  shared: group by SNI, else ALPN, else the client's only group",
        "  127.0.0.1:9443  group echo",
        "    127.0.0.1:7002  weight 3",
        "    health: TCP connect every 30s, timeout 1s, rise 1, fall 1",
        "    outlier: eject after 5 consecutive failures for 30s x ejections (at most 5m), at most 50% of the group; panic below 50% available",
        '  alice: match serial="a1b", cn="alice" -> echo (4 concurrent)',
        'Limits: 10 concurrent per client, no rate limit, over a rate limit refused (on_rate_limit = "reject"), no bandwidth limit',
        "Timeouts: handshake 5s, connect 3s (2 retries), idle 15m, drain 30s",
      ]
    ) {
      assert.ok(
        ok.stdout.includes(`${line}\n`),
        `missing ${JSON.stringify(line)} in\n${ok.stdout}`,
      );
    }
    // The test PKI's server certificate is valid for 365 days: look from 350 days on.
    const server = new Date(new X509Certificate(pki.server.certPem).validTo);
    const later = await run(["check", "--config", path], server.getTime() - 10 * DAY - 1000);
    assert.equal(later.code, EXIT_OK);
    assert.match(
      later.stderr,
      /^Warning: "tls\.cert" certificate "CN=localhost" expires in 10 days/m,
    );
    const expired = await run(["check", "--config", path], server.getTime() + 1000);
    assert.equal(expired.code, EXIT_USAGE);
    assert.match(expired.stderr, /^Error: "tls\.cert" certificate "CN=localhost" expired on /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runCli() check shows the admin hosts and whether a token is asked for, never the token", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_cli_" });
  const token = "c0ffee".repeat(8);
  const groups = `[groups.echo]\nupstreams = ["127.0.0.1:7001"]\nlisten = "127.0.0.1:9443"\n`;
  try {
    await Deno.writeTextFile(join(dir, "admin.token"), `${token}\n`);
    await t.step("defaults: IP addresses and localhost, no token, on loopback", async () => {
      const path = await writeConfig(dir, `[admin]\nlisten = "127.0.0.1:9000"\n${groups}`);
      const ok = await run(["check", "--config", path]);
      assert.equal(ok.code, EXIT_OK, ok.stderr);
      assert.equal(ok.stderr, "", "loopback: no warning");
      assert.ok(
        ok.stdout.includes(
          "Admin:\n  hosts: IP addresses, localhost (no other names)\n  token: none (anyone who can reach it can read the status)\n",
        ),
        ok.stdout,
      );
    });
    await t.step("names and a token file", async () => {
      const path = await writeConfig(
        dir,
        `[admin]\nlisten = "0.0.0.0:9000"\nhosts = ["mtlb.internal"]\ntoken_file = "admin.token"\n${groups}`,
      );
      const ok = await run(["check", "--config", path]);
      assert.equal(ok.code, EXIT_OK, ok.stderr);
      assert.equal(ok.stderr, "", "a token: no warning off loopback");
      assert.ok(ok.stdout.includes("  hosts: IP addresses, localhost, mtlb.internal\n"), ok.stdout);
      assert.ok(
        ok.stdout.includes(
          `  token: required but for /healthz, from ${join(dir, "admin.token")}\n`,
        ),
        ok.stdout,
      );
      assert.ok(!ok.stdout.includes(token) && !ok.stderr.includes(token), "never the token");
    });
    await t.step("off loopback without a token: a warning", async () => {
      const path = await writeConfig(
        dir,
        `[admin]\nlisten = "0.0.0.0:9000"\nallow_reload = true\n${groups}`,
      );
      const warned = await run(["check", "--config", path]);
      assert.equal(warned.code, EXIT_OK);
      assert.equal(
        warned.stderr,
        'Warning: "admin.listen" "0.0.0.0:9000" is not a loopback address and "admin.token_file" is not set: anyone who can reach it can read the status (client names and addresses) and reload the config; set [admin] token_file or listen on 127.0.0.1\n',
      );
    });
    await t.step("an empty token file: exit 2 with file, line and key", async () => {
      await Deno.writeTextFile(join(dir, "empty.token"), "\n");
      const path = await writeConfig(
        dir,
        `[admin]\nlisten = "127.0.0.1:9000"\ntoken_file = "empty.token"\n${groups}`,
      );
      const bad = await run(["check", "--config", path]);
      assert.equal(bad.code, EXIT_USAGE);
      assert.equal(bad.stdout, "");
      assert.match(
        bad.stderr,
        /^Cannot load config: .*lb\.toml:7: "admin\.token_file" names an empty file, ".*empty\.token"/,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runCli() check lists the CAs to pin and warns about rules another CA could satisfy", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_cli_" });
  try {
    const pki = await testPki();
    const { keyed } = await rolloverPki();
    const store = TrustStore.fromPem(keyed.bundle);
    const [oldCa, nextCa] = store.authorities;
    await Deno.writeTextFile(join(dir, "ca.crt"), keyed.bundle);
    const config = (clients: string) =>
      `[tls]\nca = "ca.crt"\ncert = "${pki.server.certPath}"\nkey = "${pki.server.keyPath}"\n` +
      `[groups.echo]\nlisten = "127.0.0.1:8443"\nupstreams = ["127.0.0.1:7001"]\n${clients}`;
    const path = join(dir, "lb.toml");
    await Deno.writeTextFile(
      path,
      config(
        `[clients.roll]\nmatch = { cn = "roll" }\ngroups = ["echo"]\n` +
          `[clients.pinned]\nmatch = { cn = "pinned", issuer = "${
            oldCa!.spkiSha256
          }" }\ngroups = ["echo"]\n` +
          `[clients.keyed]\nmatch = { spki_sha256 = "${"ab".repeat(32)}" }\ngroups = ["echo"]\n`,
      ),
    );
    const result = await run(["check", "--config", path]);
    assert.equal(result.code, EXIT_OK, result.stderr);
    for (
      const line of [
        'TLS: 1.3 only, TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256; client_eku = "required"',
        `CAs of tls.ca (match.issuer = a CA's spki_sha256 pins a client to it):`,
        `  CN=mtlb rollover CA  spki_sha256 = "${oldCa!.spkiSha256}"  (root)`,
        `  CN=mtlb rollover CA  spki_sha256 = "${nextCa!.spkiSha256}"  (root)`,
        `  pinned: match cn="pinned", issuer="${oldCa!.spkiSha256}" -> echo`,
      ]
    ) {
      assert.ok(
        result.stdout.includes(`${line}\n`),
        `missing ${JSON.stringify(line)} in\n${result.stdout}`,
      );
    }
    // Only the rule that pins neither the CA nor the key is at risk.
    assert.match(
      result.stderr,
      /^Warning: "tls\.ca" holds 2 CAs that can issue client certificates, and clients roll match without "issuer"/,
    );
    assert.equal(result.stderr.split("\n").filter((l) => l !== "").length, 1, result.stderr);

    await Deno.writeTextFile(
      path,
      config(
        `[clients.stray]\nmatch = { cn = "stray", issuer = "${
          "cd".repeat(32)
        }" }\ngroups = ["echo"]\n`,
      ),
    );
    const stray = await run(["check", "--config", path]);
    assert.equal(stray.code, EXIT_OK, stray.stderr);
    assert.match(stray.stderr, /"clients\.stray\.match\.issuer" is the key of no CA of "tls\.ca"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runCli() permissions prints one runnable line; a bad config exits 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_cli_" });
  try {
    const path = await writeConfig(
      dir,
      `[server]\nlisten = "127.0.0.1:0"\nworkers = 1\n[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`,
    );
    const pki = await testPki();
    const result = await run(["permissions", "--config", path]);
    assert.equal(result.code, EXIT_OK, result.stderr);
    assert.equal(
      result.stdout,
      `deno run --allow-net=127.0.0.1,127.0.0.1:7001 --allow-read=${path},${pki.ca.certPath},${pki.server.certPath},${pki.server.keyPath} main.ts --config ${path}\n`,
    );
    await Deno.writeTextFile(path, "[limits]\nmax_connections_per_client = 0\n", {
      append: true,
    });
    const bad = await run(["permissions", "--config", path]);
    assert.equal(bad.code, EXIT_USAGE);
    assert.equal(bad.stdout, "");
    assert.match(
      bad.stderr,
      /^Cannot load config: .*lb\.toml:11: "limits\.max_connections_per_client" must be at least 1/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runCli() clients push and pull need [cluster] store and a valid [clients]; a store that does not answer exits 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_cli_" });
  try {
    const base =
      `[server]\nlisten = "127.0.0.1:0"\n[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`;
    const path = await writeConfig(dir, base);
    for (const action of ["push", "pull"]) {
      const none = await run(["clients", action, "--config", path]);
      assert.equal(none.code, EXIT_USAGE);
      assert.match(
        none.stderr,
        new RegExp(`^Cannot ${action} the client policy: .* has no \\[cluster\\] store`),
      );
    }
    // Nothing listens on the port of a listener just closed.
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    await Deno.writeTextFile(
      path,
      `[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["nope"]\n[cluster]\nstore = "redis://127.0.0.1:${port}"\n`,
      { append: true },
    );
    const invalid = await run(["clients", "push", "--config", path]);
    assert.equal(invalid.code, EXIT_USAGE);
    assert.match(
      invalid.stderr,
      /"clients\.alice\.groups\[0\]" must name a group defined under \[groups\]/,
    );
    await Deno.writeTextFile(path, (await Deno.readTextFile(path)).replace('"nope"', '"echo"'));
    const down = await run(["clients", "push", "--config", path]);
    assert.equal(down.code, 1);
    assert.equal(
      down.stderr,
      `Cannot push the client policy: the store redis://127.0.0.1:${port} does not answer\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("configureLogging() writes one JSON line per record, properties included", async () => {
  const lines: string[] = [];
  {
    await using _logging = await configureLogging({ format: "json", write: (l) => lines.push(l) });
    getLogger(["mtlb", "audit"]).info("Connection ended: client={client} in={in}", {
      client: "alice",
      in: 5,
      identity: { cn: "alice", sanUri: [] },
      error: Object.assign(new Error("boom"), { code: "ECONNRESET" }),
      big: 12n,
    });
    getLogger(["mtlb", "server"]).debug("not at info");
    getLogger(["other"]).info("not mtlb");
  }
  getLogger(["mtlb", "audit"]).info("after dispose");
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.endsWith("}\n"));
  assert.equal(lines[0]!.indexOf("\n"), lines[0]!.length - 1);
  const record = JSON.parse(lines[0]!);
  assert.equal(record.level, "INFO");
  assert.equal(record.logger, "mtlb.audit");
  assert.equal(record.message, "Connection ended: client=alice in=5");
  assert.deepEqual(record.properties, {
    client: "alice",
    in: 5,
    identity: { cn: "alice", sanUri: [] },
    error: { name: "Error", message: "boom", code: "ECONNRESET" },
    big: "12",
  });
  assert.ok(!Number.isNaN(Date.parse(record["@timestamp"])));
});

Deno.test("configureLogging() writes text with the extra properties, uncoloured off a terminal", async (t) => {
  const cases = [
    ["text", false],
    ["auto", true],
  ] as const;
  for (const [format, terminal] of cases) {
    await t.step(`${format}, terminal ${terminal}`, async () => {
      const lines: string[] = [];
      {
        await using _logging = await configureLogging({
          format,
          terminal,
          level: "debug",
          write: (l) => lines.push(l),
        });
        getLogger(["mtlb", "server"]).debug("Denied {remote}: {reason}", {
          remote: "127.0.0.1:5000",
          reason: "unknown_identity",
          client: undefined,
          identity: { cn: "eve" },
          detail: "two words",
        });
      }
      assert.equal(lines.length, 1);
      const plain = lines[0]!.replace(new RegExp(`${ESC}\\[[0-9;]*m`, "g"), "");
      if (!terminal) assert.equal(plain, lines[0], "no colours off a terminal");
      else if (!Deno.noColor) assert.notEqual(plain, lines[0], "colours on a terminal");
      assert.match(
        plain,
        /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+00 DBG mtlb\.server: Denied 127\.0\.0\.1:5000: unknown_identity identity=\{"cn":"eve"\} detail="two words"\n$/,
      );
    });
  }
});

Deno.test("configureLogging() picks JSON lines when auto is not on a terminal", async () => {
  const lines: string[] = [];
  {
    await using _logging = await configureLogging({ terminal: false, write: (l) => lines.push(l) });
    getLogger(["mtlb", "main"]).warn("Listening on {addresses}", { addresses: ["a:1", "b:2"] });
  }
  const record = JSON.parse(lines[0]!);
  assert.equal(record.level, "WARN");
  assert.equal(record.message, "Listening on a:1, b:2");
  assert.deepEqual(record.properties.addresses, ["a:1", "b:2"]);
});

function send(address: string, payload: string): Promise<string> {
  const { port } = new URL(`tcp://${address}`);
  const socket: Socket = connect({ host: "127.0.0.1", port: Number(port) });
  const all = readAll(socket);
  socket.end(payload);
  return all.then(({ data }) => text(concat([data])));
}

Deno.test("startDemoUpstreams() serves echo and a cache that answers PING", async () => {
  await using upstreams = await startDemoUpstreams([["127.0.0.1:0", "echo"], [
    "127.0.0.1:0",
    "cache",
  ]]);
  const [echo, cache] = upstreams.addresses;
  assert.match(echo!, /^127\.0\.0\.1:\d+$/);
  assert.equal(await send(echo!, "PING\r\nhello"), "PING\r\nhello");
  assert.equal(
    await send(cache!, "PING\r\nGET k\nping\npartial"),
    "+PONG\r\nGET k\n+PONG\r\npartial",
  );
});

Deno.test("demoCommands() points openssl at the listeners and the PKI beside the CA, curl at the admin endpoint", () => {
  const config = parseConfig(
    `[server]
listen = "127.0.0.1:8443"
[admin]
listen = "127.0.0.1:9090"
[tls]
ca = "../certs/ca.crt"
cert = "../certs/server.crt"
key = "../certs/server.key"
[groups.echo]
upstreams = ["127.0.0.1:7001"]
listen = "127.0.0.1:9443"
[groups.cache]
upstreams = ["127.0.0.1:7003"]
`,
    { path: "/repo/config/lb.toml" },
  );
  const lines = demoCommands(config, "/repo").split("\n").filter((l) => !l.startsWith("#"));
  const files = (name: string) =>
    `-cert certs/${name}.crt -key certs/${name}.key -CAfile certs/ca.crt`;
  assert.deepEqual(lines, [
    `openssl s_client -brief -connect 127.0.0.1:9443 ${files("alice")}`,
    `openssl s_client -brief -connect 127.0.0.1:8443 -servername cache -verify_hostname cache ${
      files("alice")
    }`,
    `openssl s_client -brief -connect 127.0.0.1:8443 -servername cache ${files("bob")}`,
    `openssl s_client -brief -connect 127.0.0.1:8443 ${files("intruder")}`,
    "http://127.0.0.1:9090/",
    "curl -s http://127.0.0.1:9090/metrics",
    "curl -s http://127.0.0.1:9090/status",
  ]);
});

Deno.test("uncoveredSniGroups() finds the groups the server certificate does not name (RFC 6125 wildcards)", async (t) => {
  const config = (listen: string | undefined, ...groups: string[]) => ({
    server: listen === undefined ? {} : { listen },
    groups: new Map(groups.map((g) => [g, {}])),
  });
  const shared = "127.0.0.1:8443";
  const cases: [string, ReturnType<typeof config>, string[], string[]][] = [
    ["all named", config(shared, "cache", "echo"), ["localhost", "cache", "echo"], []],
    ["one missing", config(shared, "cache", "echo"), ["echo"], ["cache"]],
    ["no SAN DNS names", config(shared, "cache"), [], ["cache"]],
    ["letter case", config(shared, "Cache"), ["CACHE"], []],
    ["no shared listener: no SNI routing", config(undefined, "cache"), [], []],
    ["an IP address is never SNI", config(shared, "10.0.0.1"), [], []],
    ["wildcard, one label", config(shared, "cache.lb.example.com"), ["*.lb.example.com"], []],
    ["wildcard, two labels", config(shared, "a.cache.lb.example.com"), ["*.lb.example.com"], [
      "a.cache.lb.example.com",
    ]],
    ["wildcard, no label", config(shared, "lb.example.com"), ["*.lb.example.com"], [
      "lb.example.com",
    ]],
    ["wildcard over a single label", config(shared, "cache"), ["*.cache", "*"], ["cache"]],
    ["partial wildcard", config(shared, "cache.example.com"), ["c*.example.com"], [
      "cache.example.com",
    ]],
  ];
  for (const [name, cfg, sans, expected] of cases) {
    await t.step(name, () => assert.deepEqual(uncoveredSniGroups(cfg, sans), expected));
  }
});
