/**
 * End-to-end tests of `main.ts` as a process: real `deno run` subprocesses with
 * narrow permissions, temporary config files and the test PKI.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { createCa, loadCertificateAuthority } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import { spkiSha256FromPem } from "../lib/identity/certificate.ts";
import { connectClient, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { configDir, spawnLine } from "./_subprocess.ts";
import { lines, waitForRecord } from "../testing/lines.ts";
import { MAIN, ROOT } from "../testing/paths.ts";
import { freePort } from "../testing/ports.ts";
import { runMain } from "../testing/run_main.ts";

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
      "CA file missing",
      valid.replace(tls, tls.replace(pki.ca.certPath, "missing.crt")),
      /lb\.toml:5: "tls\.ca" cannot be read from "\/.*\/missing\.crt": no such file$/m,
    ],
    [
      "unreadable certificate file",
      valid.replace(tls, tls.replace(pki.server.certPath, join(pki.dir, "missing.crt"))),
      /lb\.toml:6: "tls\.cert" cannot be read from ".*missing\.crt": no such file$/m,
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
      /lb\.toml:6: "tls\.cert" does not match the private key/,
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

Deno.test("main.ts names the closest option to an unknown one, and the path of a missing config file", async () => {
  for (
    const [args, message] of [
      [["--confg", "lb.toml"], "Unknown option --confg; did you mean --config?"],
      [["check", "--conifg", "lb.toml"], "Unknown option --conifg; did you mean --config?"],
      [["certs", "--server", "x"], "Unknown option --server; did you mean --server-name?"],
    ] as const
  ) {
    const result = await runMain([], [...args]);
    assert.equal(result.code, 2, args.join(" "));
    assert.equal(result.stdout, "");
    assert.ok(result.stderr.startsWith(`${message}\n\nUsage:\n`), result.stderr);
    assert.doesNotMatch(result.stderr, /positional argument|parseArgs|ERR_/);
  }

  await using dir = await configDir("");
  const flags = [`--allow-read=${dir.dir}`];
  const given = await runMain(flags, ["check", "--config", "nope.toml"], dir.dir);
  assert.equal(given.code, 2);
  assert.equal(
    given.stderr,
    `Cannot load config: ${
      join(dir.dir, "nope.toml")
    }: no such file (--config "nope.toml"; relative to the working directory ${dir.dir})\n`,
  );
  const fallback = await runMain(flags, [], dir.dir);
  assert.equal(fallback.code, 2);
  assert.equal(
    fallback.stderr,
    `Cannot load config: ${
      join(dir.dir, "config", "lb.toml")
    }: no such file (the default, config/lb.toml, as no --config was given; relative to the working directory ${dir.dir})\n`,
  );
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
    .concat(navigator.hardwareConcurrency > 1 ? [join(ROOT, "lib")] : []).join(",");
  const line = `deno run --allow-net=127.0.0.1:8443,127.0.0.1:7001 --allow-read=${read} ${
    join(ROOT, "main.ts")
  } --config ${dir.path}`;
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
      `deno run --allow-read=${dir.path} ${join(ROOT, "main.ts")} permissions --config ${dir.path}`,
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

Deno.test("main.ts certs writes a PKI, adds a client to it signed by its CA, and never overwrites a file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_e2e_certs_" });
  try {
    const out = join(dir, "pki");
    const flags = [`--allow-read=${dir}`, `--allow-write=${dir}`];
    const first = await runMain(flags, ["certs", "--dir", out, "--client", "carol"]);
    assert.equal(first.code, 0, first.stderr);
    const files = () => [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assert.deepEqual(files(), [
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
    const before = new Map(files().map((f) => [f, Deno.readTextFileSync(join(out, f))]));

    // The common case: one more client for the existing CA, no --force.
    const dave = await runMain(flags, ["certs", "--dir", out, "--client", "dave"]);
    assert.equal(dave.code, 0, dave.stderr);
    assert.deepEqual(files(), [...before.keys(), "dave.crt", "dave.key"].sort());
    for (const [file, text] of before) {
      assert.equal(Deno.readTextFileSync(join(out, file)), text, `${file} is unchanged`);
    }
    const ca = new X509Certificate(before.get("ca.crt")!);
    const daveCert = new X509Certificate(Deno.readTextFileSync(join(out, "dave.crt")));
    assert.ok(daveCert.checkIssued(ca) && daveCert.verify(ca.publicKey), "signed by the CA");
    assert.equal(daveCert.subject, "CN=dave");
    assert.equal(Deno.statSync(join(out, "dave.key")).mode! & 0o777, 0o600);
    assert.ok(
      dave.stdout.startsWith(`Added to the development PKI in ${out}, signed by its CA`),
      dave.stdout,
    );
    assert.ok(
      dave.stdout.includes(
        `[clients.dave]\nmatch = { spki_sha256 = "${
          spkiSha256FromPem(Deno.readTextFileSync(join(out, "dave.crt")))
        }" }\n`,
      ),
      dave.stdout,
    );
    assert.doesNotMatch(dave.stdout, /carol|server\.crt/);
    assert.match(first.stdout, /\ngroups = \[\] {2}# fill in at least one group carol may use\n/);

    // With a config: a client it names gets its groups, a new one the groups to pick from.
    const config = join(dir, "lb.toml");
    await Deno.writeTextFile(
      config,
      '[tls]\nca = "pki/ca.crt"\ncert = "pki/server.crt"\nkey = "pki/server.key"\n' +
        '[groups.echo]\nupstreams = ["127.0.0.1:7001"]\nlisten = "127.0.0.1:9443"\n' +
        '[groups.web]\nupstreams = ["127.0.0.1:7002"]\nlisten = "127.0.0.1:9444"\n' +
        '[clients.gina]\nmatch = { cn = "gina" }\ngroups = ["echo", "web"]\n',
    );
    const named = await runMain(flags, [
      "certs",
      "--dir",
      out,
      "--client",
      "gina",
      "--client",
      "hal",
      "--config",
      config,
    ]);
    assert.equal(named.code, 0, named.stderr);
    assert.match(
      named.stdout,
      /\[clients\.gina\]\nmatch = \{ [^\n]+ \}\ngroups = \["echo", "web"\]\n/,
    );
    assert.match(named.stdout, /# fill in at least one group hal may use: echo, web\n/);

    // A client whose files exist is an error naming them; nothing is written.
    const daveKey = Deno.readTextFileSync(join(out, "dave.key"));
    const again = await runMain(flags, [
      "certs",
      "--dir",
      out,
      "--client",
      "erin",
      "--client",
      "dave",
    ]);
    assert.equal(again.code, 2);
    assert.equal(
      again.stderr,
      `Cannot add to development PKI: "${join(out, "dave.crt")}", "${
        join(out, "dave.key")
      }" exist: refusing to overwrite; name other clients, or pass --force to replace the whole PKI\n`,
    );
    assert.equal(Deno.readTextFileSync(join(out, "dave.key")), daveKey);
    assert.ok(!files().includes("erin.crt"), "nothing was written");
    const plain = await runMain(flags, ["certs", "--dir", out]);
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /already holds a development PKI; add clients to it with --client/);

    // Without write permission, the hint repeats the arguments given, and runs as printed.
    const denied = await runMain([`--allow-read=${dir}`], [
      "certs",
      "--client",
      "erin",
      "--dir",
      out,
    ]);
    assert.equal(denied.code, 2);
    const hint = denied.stderr.split("\n")[1]!.trim();
    assert.equal(
      hint,
      `deno run --allow-read=${out},${
        join(ROOT, "config", "lb.toml")
      } --allow-write=${out} ${MAIN} certs --client erin --dir ${out}`,
    );
    const erin = spawnLine(hint, { cwd: dir, stdout: "piped" });
    const erinOut = await erin.output();
    assert.equal(erinOut.code, 0, new TextDecoder().decode(erinOut.stderr));
    assert.ok(files().includes("erin.crt") && files().includes("erin.key"));

    // --force keeps its meaning: a whole new PKI.
    const forced = await runMain(flags, ["certs", "--dir", out, "--client", "carol", "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(Deno.readTextFileSync(join(out, "ca.crt")), before.get("ca.crt"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const HAVE_CURL = await new Deno.Command("curl", { args: ["--version"], stdout: "null" })
  .output().then((o) => o.success, () => false);
if (!HAVE_CURL) console.warn("Skipping the curl test of SNI names: curl is not installed");

/** An upstream that answers every request with one HTTP response. */
function httpUpstream(body: string): Promise<TestUpstream> {
  return TestUpstream.start((socket) => {
    let head = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      head += chunk;
      if (!head.includes("\r\n\r\n")) return;
      socket.end(
        `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    // A client that leaves before its request is complete gets no answer.
    socket.on("end", () => socket.end());
  });
}

/** Runs the `serve` line `permissions` prints for `path` until `fn` returns, then SIGTERM. */
async function serving(
  path: string,
  fn: (seen: string[]) => Promise<void>,
): Promise<void> {
  const printed = await runMain([`--allow-read=${path}`], ["permissions", "--config", path]);
  assert.equal(printed.code, 0, printed.stderr);
  const child = spawnLine(printed.stdout.trim(), { cwd: ROOT });
  const reader = lines(child.stderr);
  const seen: string[] = [];
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    await fn(seen);
    child.kill("SIGTERM");
    await waitForRecord(reader, seen, (r) => r.message === "Stopped");
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
}

Deno.test({
  name:
    "main.ts certs names the config's SNI groups in the server certificate: curl reaches group cache by name; check and serve warn when it does not",
  ignore: !HAVE_CURL,
}, async () => {
  await using http = await httpUpstream("hello from cache");
  const port = await freePort();
  await using dir = await configDir(`[server]
listen = "127.0.0.1:${port}"
workers = 1
[tls]
ca = "pki/ca.crt"
cert = "pki/server.crt"
key = "pki/server.key"
[health]
interval = "1h"
[groups.cache]
upstreams = ["${http.address}"]
[groups.echo]
upstreams = ["127.0.0.1:9"]
listen = "127.0.0.1:0"
[clients.alice]
match = { cn = "alice" }
groups = ["cache", "echo"]
`);
  const pki = join(dir.dir, "pki");
  const certs = await runMain([`--allow-read=${dir.dir}`, `--allow-write=${dir.dir}`], [
    "certs",
    "--dir",
    pki,
    "--config",
    dir.path,
    "--client",
    "alice",
    "--server-name",
    "lb.example.com",
  ]);
  assert.equal(certs.code, 0, certs.stderr);
  assert.match(
    certs.stdout,
    /server\.key {2}the server: \[tls\] cert and key, for localhost, 127\.0\.0\.1, ::1, cache, echo, lb\.example\.com \(groups cache, echo from /,
  );
  const check = await runMain([`--allow-read=${dir.dir}`], ["check", "--config", dir.path]);
  assert.equal(check.code, 0, check.stderr);
  assert.equal(check.stderr, "", "no warning: the certificate names every group");

  const curl = (name: string) =>
    new Deno.Command("curl", {
      args: [
        "-sS",
        "--http1.1",
        "--max-time",
        "10",
        "--cert",
        join(pki, "alice.crt"),
        "--key",
        join(pki, "alice.key"),
        "--cacert",
        join(pki, "ca.crt"),
        "--resolve",
        `${name}:${port}:127.0.0.1`,
        `https://${name}:${port}/`,
      ],
      stdin: "null",
    }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  await serving(dir.path, async () => {
    const reply = await curl("cache");
    assert.equal(reply.code, 0, decode(reply.stderr));
    assert.equal(decode(reply.stdout), "hello from cache");
  });

  // A server certificate for localhost only, from the same CA: check warns, serve logs
  // the warning, and curl refuses the server under the group's name (exit 60).
  const ca = await loadCertificateAuthority(
    await Deno.readTextFile(join(pki, "ca.crt")),
    await Deno.readTextFile(join(pki, "ca.key")),
  );
  const localhost = await issueCertificate(ca, { commonName: "localhost", kind: "server" });
  await Deno.writeTextFile(join(pki, "server.crt"), localhost.certPem);
  await Deno.writeTextFile(join(pki, "server.key"), localhost.keyPem);
  const warned = await runMain([`--allow-read=${dir.dir}`], ["check", "--config", dir.path]);
  assert.equal(warned.code, 0, warned.stderr);
  assert.match(
    warned.stderr,
    /^Warning: the server certificate \("tls\.cert", .*server\.crt\) does not name groups cache, echo among its DNS names \(localhost\): a client that checks host names .* main\.ts certs --server-name NAME/,
  );
  await serving(dir.path, async (seen) => {
    assert.ok(
      seen.some((l) =>
        l.includes('"level":"WARN"') &&
        l.includes('"message":"The server certificate (\\"tls.cert\\"') &&
        l.includes("does not name groups cache, echo")
      ),
      seen.join("\n"),
    );
    const refused = await curl("cache");
    assert.equal(refused.code, 60, decode(refused.stderr));
    assert.match(decode(refused.stderr), /cache/);
  });
});

Deno.test("main.ts serve takes stop signals that arrive together as one (Ctrl-C under deno task): it drains; a later one closes now", async () => {
  await using upstream = await TestUpstream.start();
  const port = await freePort();
  await using dir = await configDir(await validConfig(`127.0.0.1:${port}`, upstream.address));
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  const child = spawnLine(printed.stdout.trim(), { cwd: ROOT });
  const reader = lines(child.stderr);
  const seen: string[] = [];
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    const pki = await testPki();
    const socket = await connectClient(port, pki.alice);
    const closed = readAll(socket);
    socket.write("ping");
    assert.equal(text(await readBytes(socket, 4)), "ping");

    // A terminal's Ctrl-C reaches the balancer, and `deno task` forwards it again.
    const first = performance.now();
    child.kill("SIGINT");
    child.kill("SIGINT");
    child.kill("SIGTERM");
    await waitForRecord(reader, seen, (r) => /^Stopping on SIG/.test(String(r.message)));
    socket.write("still here");
    socket.resume();
    assert.equal(text(await readBytes(socket, 10)), "still here", "the connection is draining");
    socket.resume();
    assert.ok(!seen.some((l) => l.includes("Closing every connection now")), seen.join("\n"));

    // An operator's second Ctrl-C, later, closes every connection.
    await new Promise((resolve) =>
      setTimeout(resolve, Math.max(0, first + 600 - performance.now()))
    );
    child.kill("SIGINT");
    await waitForRecord(
      reader,
      seen,
      (r) => /^Closing every connection now/.test(String(r.message)),
    );
    const stopped = await waitForRecord(reader, seen, (r) => r.message === "Stopped");
    assert.equal((stopped.properties as { forced: number }).forced, 1);
    await closed;
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
