/**
 * Tests of `tasks/launch.ts`, behind `deno task start`, `check-config` and
 * `compile`: the flags come from the config, as `main.ts permissions` prints them.
 * `deno task compile` itself is never run here (it downloads a runtime).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { permissionNeeds } from "../lib/control/permission_needs.ts";
import { loadConfig, parseConfig } from "../lib/config/mod.ts";
import { permissionFlags } from "../lib/control/permissions.ts";
import { WORKER_MODULE } from "../lib/workers/options.ts";
import { COMPILE_OUTPUT, launchArgs, MAIN } from "../tasks/launch.ts";
import { connectClient, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { configDir } from "./_subprocess.ts";
import { lines, waitForRecord } from "../testing/lines.ts";
import { ROOT } from "../testing/paths.ts";
import { freePort } from "../testing/ports.ts";
import { runMain } from "../testing/run_main.ts";

const TASKS = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).tasks as Record<
  string,
  string
>;

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

async function tls(): Promise<string> {
  const pki = await testPki();
  return `[tls]\nca = "${pki.ca.certPath}"\ncert = "${pki.server.certPath}"\nkey = "${pki.server.keyPath}"\n`;
}

Deno.test("deno.json: start, check-config and compile derive their permissions from the config", () => {
  for (
    const [task, mode] of [["start", "serve"], ["check-config", "check"], ["compile", "compile"]]
  ) {
    assert.equal(
      TASKS[task!],
      `deno run --allow-read --allow-run tasks/launch.ts ${mode} --config config/lb.toml`,
    );
  }
});

Deno.test("launchArgs() serve is the line main.ts permissions prints; compile builds in the same flags", async () => {
  await using dir = await configDir(`[server]
listen = "127.0.0.1:8443"
${await tls()}
[groups.echo]
upstreams = ["127.0.0.1:7001"]
listen = "[::1]:9443"
`);
  const config = await loadConfig(dir.path);
  const printed = await runMain([`--allow-read=${dir.path}`], [
    "permissions",
    "--config",
    dir.path,
  ]);
  assert.equal(printed.code, 0, printed.stderr);
  const serve = launchArgs("serve", config);
  assert.equal(["deno", ...serve].map(shellQuote).join(" "), printed.stdout.trimEnd());

  const flags = permissionFlags(permissionNeeds(config));
  assert.deepEqual(launchArgs("compile", config), [
    "compile",
    ...flags,
    "--include",
    join(ROOT, "lib", "workers", "_balancer_worker.ts"),
    "--output",
    COMPILE_OUTPUT,
    MAIN,
    "--config",
    dir.path,
  ]);
  assert.equal(WORKER_MODULE.protocol, "file:");
  assert.deepEqual(
    launchArgs("serve", config, { logFormat: "json", logLevel: "debug" }).slice(-4),
    [
      "--log-format",
      "json",
      "--log-level",
      "debug",
    ],
  );
  // check reads the config's files, and needs no network.
  assert.deepEqual(launchArgs("check", config).slice(1, -4), [
    `--allow-read=${permissionNeeds(config, { workers: 1 }).read.join(",")}`,
  ]);
});

Deno.test("launchArgs() follows the config: enabling [admin] adds its port to start and compile", async () => {
  const body = `[server]
listen = "127.0.0.1:8443"
workers = 1
${await tls()}
[groups.echo]
upstreams = ["127.0.0.1:7001"]
`;
  const before = parseConfig(body, { path: "/srv/lb.toml" });
  const after = parseConfig(`${body}[admin]\nlisten = "127.0.0.1:9090"\n`, {
    path: "/srv/lb.toml",
  });
  for (const mode of ["serve", "compile"] as const) {
    assert.ok(!launchArgs(mode, before).some((a) => a.includes("9090")));
    assert.ok(
      launchArgs(mode, after).includes("--allow-net=127.0.0.1:8443,127.0.0.1:9090,127.0.0.1:7001"),
      mode,
    );
  }
});

/** Standard output of a command (Deno asks --allow-all to read /proc itself). */
async function run(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, stdin: "null" }).output();
  assert.ok(output.success, `${command} ${args.join(" ")}`);
  return new TextDecoder().decode(output.stdout);
}

/** The child processes of `pid` (Linux `ps`). */
async function children(pid: number): Promise<number[]> {
  return (await run("ps", ["-o", "pid=", "--ppid", String(pid)])).trim().split(/\s+/)
    .filter((s) => s !== "").map(Number);
}

Deno.test({
  name:
    "deno task start runs the balancer with exactly the config's flags; Ctrl-C drains it once and everything exits 0",
  ignore: Deno.build.os !== "linux",
}, async () => {
  await using upstream = await TestUpstream.start();
  const port = await freePort();
  await using dir = await configDir(`[server]
listen = "127.0.0.1:${port}"
${await tls()}
[health]
interval = "1h"
[groups.echo]
upstreams = ["${upstream.address}"]
[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`);
  // As a user types it, in its own process group as a terminal's foreground job is.
  const task = new Deno.Command(Deno.execPath(), {
    args: ["task", "start", "--config", dir.path, "--log-format", "json"],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    detached: true,
  }).spawn();
  const reader = lines(task.stderr);
  const seen: string[] = [];
  try {
    await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
    assert.ok(!seen.some((l) => /broader/.test(l)), seen.join("\n"));
    const config = await loadConfig(dir.path);
    const expected = [
      Deno.execPath(),
      ...launchArgs("serve", config, { logFormat: "json" }),
    ];
    // deno task -> tasks/launch.ts -> main.ts
    const [launcher] = await children(task.pid);
    const [balancer] = await children(launcher!);
    const argv = (await run("cat", [`/proc/${balancer}/cmdline`])).split("\0").slice(0, -1);
    assert.deepEqual(argv, expected);

    const pki = await testPki();
    const socket = await connectClient(port, pki.alice);
    const closed = readAll(socket);
    socket.write("started");
    assert.equal(text(await readBytes(socket, 7)), "started");
    socket.resume();

    // Ctrl-C: SIGINT to the whole foreground group; deno task and the launcher forward it too.
    Deno.kill(-task.pid, "SIGINT");
    await waitForRecord(reader, seen, (r) => /^Stopping on SIGINT/.test(String(r.message)));
    socket.end();
    await closed;
    const stopped = await waitForRecord(reader, seen, (r) => r.message === "Stopped");
    assert.equal((stopped.properties as { forced: number }).forced, 0);
    assert.ok(!seen.some((l) => l.includes("Closing every connection now")), seen.join("\n"));
    assert.equal((await task.status).code, 0);
  } finally {
    try {
      Deno.kill(-task.pid, "SIGKILL");
    } catch {
      // Already exited.
    }
    for await (const _ of reader); // Drain stderr so its resource closes.
    await task.status;
  }
});

Deno.test("deno task check-config checks with the config's read permissions", async () => {
  await using dir = await configDir(`[server]
listen = "127.0.0.1:8443"
${await tls()}
[groups.echo]
upstreams = ["127.0.0.1:7001"]
`);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "check-config", "--config", dir.path],
    cwd: ROOT,
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.ok(stdout.startsWith(`Config ${dir.path} is valid.\n`), stdout);
  assert.ok(
    stderr.includes(`With the permissions ${dir.path} needs: deno run --allow-read=${dir.path},`),
    stderr,
  );

  // A config error is reported as main.ts reports it, before anything runs.
  await Deno.writeTextFile(dir.path, "[server]\nlisten = 8443\n");
  const bad = await new Deno.Command(Deno.execPath(), {
    args: ["task", "check-config", "--config", dir.path],
    cwd: ROOT,
    stdin: "null",
  }).output();
  assert.equal(bad.code, 2);
  assert.match(
    new TextDecoder().decode(bad.stderr),
    /Cannot load config: .*lb\.toml:2: "server\.listen" must be/,
  );
});
