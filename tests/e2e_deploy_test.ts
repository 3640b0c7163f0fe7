/**
 * Deployment lines: what `main.ts permissions` prints runs as printed from any
 * folder (as a systemd `ExecStart=` does), and the README's deployment examples are
 * what it prints for their configs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { formatRunCommand } from "../lib/control/permissions.ts";
import { permissionNeeds } from "../lib/control/permission_needs.ts";
import { loadConfig, parseConfig } from "../lib/config/mod.ts";
import { connectClient, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { configDir, spawnLine } from "./_subprocess.ts";
import { lines, waitForRecord } from "../testing/lines.ts";
import { MAIN, ROOT } from "../testing/paths.ts";
import { freePort } from "../testing/ports.ts";
import { runMain } from "../testing/run_main.ts";

Deno.test("the line main.ts permissions prints runs as printed from another folder, serves an mTLS client and stops on SIGTERM", async () => {
  await using upstream = await TestUpstream.start();
  const port = await freePort();
  // Relative paths in the config resolve against its folder; two workers need lib/.
  await using dir = await configDir(`[server]
listen = "127.0.0.1:${port}"
workers = 2
[tls]
ca = "pki/ca.crt"
cert = "pki/server.crt"
key = "pki/server.key"
[health]
interval = "1h"
[groups.echo]
upstreams = ["${upstream.address}"]
[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`);
  const pki = await testPki();
  await Deno.mkdir(join(dir.dir, "pki"));
  for (
    const [name, source] of [
      ["ca.crt", pki.ca.certPath],
      ["server.crt", pki.server.certPath],
      ["server.key", pki.server.keyPath],
    ]
  ) {
    await Deno.copyFile(source!, join(dir.dir, "pki", name!));
  }

  // Asked from the config's folder, with a relative path.
  const printed = await runMain(
    ["--allow-read=lb.toml"],
    ["permissions", "--config", "lb.toml"],
    dir.dir,
  );
  assert.equal(printed.code, 0, printed.stderr);
  const line = printed.stdout.trimEnd();
  assert.ok(!line.includes("\n"), "one line");
  const files = ["lb.toml", "pki/ca.crt", "pki/server.crt", "pki/server.key"]
    .map((f) => join(dir.dir, f)).concat(join(ROOT, "lib"));
  assert.equal(
    line,
    `deno run --allow-net=127.0.0.1:${port},${upstream.address} --allow-read=${
      files.join(",")
    } ${MAIN} --config ${join(dir.dir, "lb.toml")}`,
  );

  // Run exactly as printed from elsewhere, as systemd runs ExecStart (WorkingDirectory=/).
  const child = spawnLine(line, { cwd: "/" });
  const reader = lines(child.stderr);
  const seen: string[] = [];
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    assert.ok(!seen.some((l) => /broader|lacks permissions/.test(l)), seen.join("\n"));
    const socket = await connectClient(port, pki.alice);
    const closed = readAll(socket);
    socket.write("deployed");
    assert.equal(text(await readBytes(socket, 8)), "deployed");
    socket.resume();
    socket.end();
    await closed;
    await waitForRecord(reader, seen, (r) => r.logger === "mtlb.audit");

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
});

/** README text with shell line continuations joined. */
async function readme(): Promise<string> {
  return (await Deno.readTextFile(join(ROOT, "README.md"))).replaceAll("\\\n", "");
}

Deno.test("README: the permissions example is what main.ts permissions prints for config/lb.toml", async () => {
  const config = await loadConfig(join(ROOT, "config", "lb.toml"));
  // The README shows a multi-core machine, where the default workers need lib/.
  const line = formatRunCommand(permissionNeeds(config, { workers: 2 }), {
    main: MAIN,
    args: ["--config", config.path],
  }).replaceAll(ROOT.replace(/\/$/, ""), "/home/me/mtlb");
  const text = await readme();
  assert.ok(text.includes(`\n${line}\n`), `README lacks:\n${line}`);
  assert.match(line, /127\.0\.0\.1:9090/, "the admin endpoint of the demo config");
});

Deno.test("README: the systemd and container examples run what main.ts permissions prints for their config", async () => {
  const config = parseConfig(
    `[server]
listen = "0.0.0.0:8443"
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
[cluster]
store = "redis://mtlb:secret@10.0.0.5:6379"
[groups.cache]
upstreams = ["10.0.1.10:6379", "10.0.1.11:6379"]
[clients.app]
match = { cn = "app" }
groups = ["cache"]
`,
    { path: "/etc/mtlb/lb.toml" },
  );
  const printed = formatRunCommand(permissionNeeds(config), {
    main: "/opt/mtlb/main.ts",
    args: ["--config", "/etc/mtlb/lb.toml"],
  });
  const text = await readme();
  const execStart = text.match(/^ExecStart=(.*)$/m)?.[1]?.replace(/\s+/g, " ");
  assert.equal(execStart, `/usr/local/bin/${printed} --log-format json`);
  const entrypoint = text.match(/^ENTRYPOINT (\[[^\]]*\])$/m)?.[1];
  assert.ok(entrypoint !== undefined, "README has a Dockerfile ENTRYPOINT");
  assert.deepEqual(
    JSON.parse(entrypoint),
    [...printed.split(" "), "--log-format", "json"],
  );
});
