/**
 * End-to-end tests of `main.ts` as a process: real `deno run` subprocesses with
 * narrow permissions, temporary config files and the test PKI.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createCa, issueCertificate } from "../lib/pki.ts";
import { spkiSha256FromPem } from "../lib/identity.ts";
import { connectClient, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { freePort, lines, waitForRecord } from "./_subprocess.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** How long a subprocess may take to print what a test waits for. */

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run FLAGS main.ts ARGS` from the repository root and collects its output. */
async function runMain(flags: string[], args: string[]): Promise<Output> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "main.ts", ...args],
    cwd: ROOT,
    stdin: "null",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** A temporary folder holding `lb.toml` that points at the test PKI. */
async function configDir(body: string): Promise<{ dir: string; path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_e2e_cli_" });
  const path = join(dir, "lb.toml");
  await Deno.writeTextFile(path, body);
  return { dir, path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function tlsSection(): Promise<string> {
  const pki = await testPki();
  return `[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"
`;
}

async function validConfig(listen: string, upstream: string): Promise<string> {
  return `[server]
listen = "${listen}"

${await tlsSection()}
[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`;
}

Deno.test("main.ts serve exits 2 on a bad config, with file, line and key, before listening", async (t) => {
  const pki = await testPki();
  const port = await freePort();
  const tls = await tlsSection();
  const valid = await validConfig(`127.0.0.1:${port}`, "127.0.0.1:7001");
  const cases: [name: string, body: string, message: RegExp][] = [
    [
      "TOML syntax error",
      valid.replace("[groups.echo]", "[groups.echo"),
      /lb\.toml:\d+:\d+: invalid TOML/,
    ],
    [
      "unknown key",
      valid.replace("[health]\n", '[health]\nintervall = "5s"\n'),
      /lb\.toml:10: "health\.intervall" is not a known key/,
    ],
    [
      "unknown group in a client",
      valid.replace('groups = ["echo"]', 'groups = ["echo", "cache"]'),
      /lb\.toml:17: "clients\.alice\.groups\[1\]" must name a group defined under \[groups\], received "cache"/,
    ],
    [
      "duplicate listener",
      valid.replace("[groups.echo]\n", `[groups.echo]\nlisten = "127.0.0.1:${port}"\n`),
      new RegExp(
        `"groups\\.echo\\.listen" uses "127\\.0\\.0\\.1:${port}", which "server\\.listen"`,
      ),
    ],
    [
      "unreadable certificate file",
      valid.replace(tls, tls.replace(pki.server.certPath, join(pki.dir, "missing.crt"))),
      /lb\.toml: "tls\.cert" cannot be read from ".*missing\.crt"/,
    ],
    [
      "unreadable admin token file",
      `${valid}\n[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "missing.token"\n`,
      new RegExp(
        `lb\\.toml:${
          valid.split("\n").length + 3
        }: "admin\\.token_file" cannot be read from ".*missing\\.token"`,
      ),
    ],
    [
      "certificate and key mismatch",
      valid.replace(tls, tls.replace(pki.server.keyPath, pki.alice.keyPath)),
      /lb\.toml: "tls\.cert" does not match the private key/,
    ],
  ];
  for (const [name, body, message] of cases) {
    await t.step(name, async () => {
      await using dir = await configDir(body);
      // Broad enough for any of these configs; the config is what is wrong.
      const flags = [`--allow-read=${dir.dir},${pki.dir},lib`, "--allow-net=127.0.0.1"];
      const result = await runMain(flags, ["--config", dir.path, "--log-format", "json"]);
      assert.equal(result.code, 2, result.stderr);
      assert.equal(result.stdout, "");
      assert.match(result.stderr, /^Cannot load config: /);
      assert.ok(result.stderr.includes(dir.path), result.stderr);
      assert.match(result.stderr, message);
      // One line: the error. No log record, so no listener was ever opened.
      assert.equal(result.stderr.trimEnd().split("\n").length, 1, result.stderr);
      assert.doesNotMatch(result.stderr, /Listening|started/);
    });
  }
});

Deno.test("main.ts check prints a summary and warns about a certificate expiring in 10 days", async () => {
  const ca = await createCa({ commonName: "short-lived CA" });
  const server = await issueCertificate(ca, {
    commonName: "localhost",
    kind: "server",
    notAfter: new Date(Date.now() + 10 * 24 * 60 * 60 * 1000),
  });
  await using dir = await configDir(`[server]
listen = "127.0.0.1:8443"
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
[groups.echo]
upstreams = ["127.0.0.1:7001", { address = "127.0.0.1:7002", weight = 5 }]
[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`);
  await Deno.writeTextFile(join(dir.dir, "ca.crt"), ca.certPem);
  await Deno.writeTextFile(join(dir.dir, "server.crt"), server.certPem);
  await Deno.writeTextFile(join(dir.dir, "server.key"), server.keyPem);

  const result = await runMain([`--allow-read=${dir.dir}`], ["check", "--config", dir.path]);
  assert.equal(result.code, 0, result.stderr);
  assert.ok(result.stdout.startsWith(`Config ${dir.path} is valid.\n`), result.stdout);
  assert.match(result.stdout, /\n {2}127\.0\.0\.1:8443 {2}shared/);
  assert.match(result.stdout, /\n {4}127\.0\.0\.1:7002 {2}weight 5\n/);
  assert.match(result.stdout, /\n {2}alice: match cn="alice" -> echo\n/);
  assert.match(
    result.stdout,
    /\n {2}tls\.cert {2}CN=localhost {2}valid until .* \(9 days left\)\n/,
  );
  assert.match(
    result.stderr,
    /^Warning: "tls\.cert" certificate "CN=localhost" expires in 9 days, on \d{4}-/,
  );

  // Expired: the same check refuses.
  const old = await issueCertificate(ca, {
    commonName: "localhost",
    kind: "server",
    notBefore: new Date(Date.now() - 2 * 24 * 60 * 60 * 1000),
    notAfter: new Date(Date.now() - 24 * 60 * 60 * 1000),
  });
  await Deno.writeTextFile(join(dir.dir, "server.crt"), old.certPem);
  await Deno.writeTextFile(join(dir.dir, "server.key"), old.keyPem);
  const expired = await runMain([`--allow-read=${dir.dir}`], ["check", "--config", dir.path]);
  assert.equal(expired.code, 2);
  assert.match(expired.stderr, /^Error: "tls\.cert" certificate "CN=localhost" expired on /m);
});

Deno.test("main.ts permissions prints the exact flags; serve without them exits 2 and names them", async () => {
  const pki = await testPki();
  await using dir = await configDir(await validConfig("127.0.0.1:8443", "127.0.0.1:7001"));
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  assert.equal(printed.code, 0, printed.stderr);
  // With one worker per CPU (the default), Deno must also read mtlb's modules.
  const read = [dir.path, pki.ca.certPath, pki.server.certPath, pki.server.keyPath]
    .concat(navigator.hardwareConcurrency > 1 ? ["lib"] : []).join(",");
  const line =
    `deno run --allow-net=127.0.0.1:8443,127.0.0.1:7001 --allow-read=${read} main.ts --config ${dir.path}`;
  assert.equal(printed.stdout, `${line}\n`);

  // The upstream is not allowed: nothing starts, and the full line is printed.
  const result = await runMain(
    ["--allow-net=127.0.0.1:8443", `--allow-read=${read}`],
    ["--config", dir.path],
  );
  assert.equal(result.code, 2);
  assert.equal(
    result.stderr,
    `Cannot start: Deno lacks permissions this config needs: --allow-net=127.0.0.1:7001\nRun it with exactly the permissions it needs:\n  ${line}\n`,
  );

  // Without read permission for the config itself, it says how to learn the rest.
  const blind = await runMain([], ["--config", dir.path]);
  assert.equal(blind.code, 2);
  assert.ok(
    blind.stderr.includes(
      `deno run --allow-read=${dir.path} main.ts permissions --config ${dir.path}`,
    ),
    blind.stderr,
  );
});

Deno.test("main.ts serve runs with exactly the printed flags, forwards, and exits 0 on SIGTERM", async () => {
  await using upstream = await TestUpstream.start();
  const port = await freePort();
  await using dir = await configDir(await validConfig(`127.0.0.1:${port}`, upstream.address));
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  const [deno, run, ...rest] = printed.stdout.trimEnd().split(" ");
  assert.deepEqual([deno, run], ["deno", "run"]);

  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...rest, "--log-format", "json"],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = lines(child.stderr);
  const seen: string[] = [];
  try {
    const started = await waitForRecord(
      reader,
      seen,
      (r) => r.logger === "mtlb.main" && /started: listening on/.test(String(r.message)),
    );
    const properties = started.properties as { addresses: string[]; version: string };
    assert.deepEqual(properties.addresses, [`127.0.0.1:${port}`]);
    assert.match(properties.version, /^\d+\.\d+\.\d+/);
    assert.ok(!seen.some((l) => /broader/.test(l)), "narrow flags draw no warning");

    const pki = await testPki();
    const socket = await connectClient(port, pki.alice);
    const closed = readAll(socket);
    socket.write("hello through mtlb");
    assert.equal(text(await readBytes(socket, 18)), "hello through mtlb");
    socket.resume();
    socket.end();
    await closed;

    // One JSON line per connection from the audit logger.
    const audit = await waitForRecord(reader, seen, (r) => r.logger === "mtlb.audit");
    const record = audit.properties as Record<string, unknown>;
    assert.equal(audit.level, "INFO");
    assert.equal(record.client, "alice");
    assert.equal(record.group, "echo");
    assert.equal(record.upstream, upstream.address);
    assert.equal(record.bytesFromClient, 18);
    assert.equal(record.bytesFromUpstream, 18);

    child.kill("SIGTERM");
    await waitForRecord(reader, seen, (r) => r.logger === "mtlb.main" && r.message === "Stopped");
    assert.equal((await child.status).code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    for await (const _ of reader); // Drain stderr so its resource closes.
    await child.status;
  }
});

Deno.test("main.ts serve exits 1 with a clear message when its address is in use", async () => {
  await using upstream = await TestUpstream.start();
  // The balancer is told to listen where the upstream already does.
  await using dir = await configDir(await validConfig(upstream.address, upstream.address));
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  const flags = printed.stdout.trimEnd().split(" ").slice(2, 4);
  const result = await runMain(flags, ["--config", dir.path, "--log-format", "json"]);
  assert.equal(result.code, 1, result.stderr);
  const error = result.stderr.trimEnd().split("\n").map((l) => JSON.parse(l)).find((r) =>
    r.level === "ERROR"
  );
  assert.equal(error?.logger, "mtlb.main");
  assert.equal(
    error?.message,
    `Cannot start: address ${upstream.address} already in use by another process`,
  );
});

Deno.test("main.ts serve: a second instance on the same addresses exits 1 and the first keeps serving", async () => {
  await using upstream = await TestUpstream.start();
  const port = await freePort();
  const admin = await freePort();
  await using dir = await configDir(
    (await validConfig(`127.0.0.1:${port}`, upstream.address)).replace(
      "[health]",
      `[admin]\nlisten = "127.0.0.1:${admin}"\n\n[health]`,
    ).replace(`listen = "127.0.0.1:${port}"`, `listen = "127.0.0.1:${port}"\nworkers = 2`),
  );
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  const flags = printed.stdout.trimEnd().split(" ").slice(2, -3);
  const first = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "main.ts", "--config", dir.path, "--log-format", "json"],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = lines(first.stderr);
  const seen: string[] = [];
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    const second = await runMain(flags, ["--config", dir.path, "--log-format", "json"]);
    assert.equal(second.code, 1, second.stderr);
    const error = second.stderr.trimEnd().split("\n").map((l) => JSON.parse(l)).find((r) =>
      r.level === "ERROR"
    );
    assert.equal(
      error?.message,
      `Cannot start: address 127.0.0.1:${port} already in use by another process`,
    );
    assert.ok(!/started/.test(second.stderr), "the second instance never started");

    // Every connection still reaches the first instance (with two processes on the
    // port, about half of them would go to the second).
    const pki = await testPki();
    for (let i = 0; i < 8; i++) {
      const socket = await connectClient(port, pki.alice);
      socket.write("still one balancer");
      assert.equal(text(await readBytes(socket, 18)), "still one balancer");
      socket.destroy();
    }
  } finally {
    first.kill("SIGTERM");
    for await (const _ of reader); // Drain stderr so its resource closes.
    assert.equal((await first.status).code, 0);
  }
});

Deno.test("main.ts certs writes a PKI with policy snippets and refuses to overwrite it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_e2e_certs_" });
  try {
    const out = join(dir, "pki");
    const flags = [`--allow-read=${dir}`, `--allow-write=${dir}`];
    const first = await runMain(flags, ["certs", "--dir", out, "--client", "carol"]);
    assert.equal(first.code, 0, first.stderr);
    const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assert.deepEqual(files, [
      "ca.crt",
      "ca.key",
      "carol.crt",
      "carol.key",
      "foreign-ca.crt",
      "intruder.crt",
      "intruder.key",
      "server.crt",
      "server.key",
    ]);
    const carol = await Deno.readTextFile(join(out, "carol.crt"));
    assert.ok(
      first.stdout.includes(
        `[clients.carol]\nmatch = { spki_sha256 = "${spkiSha256FromPem(carol)}" }\n`,
      ),
      first.stdout,
    );
    assert.equal(Deno.statSync(join(out, "ca.key")).mode! & 0o777, 0o600);

    const ca = await Deno.readTextFile(join(out, "ca.crt"));
    const again = await runMain(flags, ["certs", "--dir", out, "--client", "carol"]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /exists: refusing to overwrite; pass --force/);
    assert.equal(await Deno.readTextFile(join(out, "ca.crt")), ca, "nothing was replaced");

    const forced = await runMain(flags, ["certs", "--dir", out, "--client", "carol", "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(await Deno.readTextFile(join(out, "ca.crt")), ca);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
