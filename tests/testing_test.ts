/**
 * The shared helpers of tests, benchmarks and load suites (testing/): child processes,
 * line reading and waiting, ports.
 */
import assert from "node:assert/strict";
import { GuardError } from "../testing/guard.ts";
import { LineReader, waitForLine } from "../testing/lines.ts";
import { freePort, waitForPort } from "../testing/ports.ts";
import { mainPermissions } from "../testing/run_main.ts";
import { run, Subprocess, SubprocessError } from "../testing/subprocess.ts";

Deno.test("Subprocess.stop() sends SIGKILL once the grace period is over", async () => {
  await using child = new Subprocess(["sh", "-c", "trap '' TERM; echo ready; while :; do :; done"]);
  assert.equal(await child.line(), "ready");
  const started = performance.now();
  const status = await child.stop({ graceMs: 200 });
  assert.equal(status.signal, "SIGKILL");
  assert.ok(performance.now() - started >= 190, "waited for the grace period");
});

Deno.test("Subprocess.stop() with no signal lets a child exit when its input closes", async () => {
  await using child = new Subprocess(["sh", "-c", "cat; echo bye"], { stdin: "piped" });
  await child.send("hello");
  assert.equal(await child.line(), "hello");
  const status = await child.stop({ signal: null, graceMs: 5_000 });
  assert.deepEqual([status.code, status.signal], [0, null]);
  assert.equal(await child.stdout.read(1_000), "bye");
});

Deno.test("Subprocess merges standard error into standard output in the order written", async () => {
  await using child = new Subprocess(["sh", "-c", "echo one; echo two >&2; echo three"], {
    stderr: "stdout",
  });
  assert.deepEqual(await Array.fromAsync(child.stdout), ["one", "two", "three"]);
});

Deno.test("Subprocess reads standard error as lines with stderr: lines", async () => {
  await using child = new Subprocess(["sh", "-c", "echo out; echo err >&2"], { stderr: "lines" });
  assert.equal(await child.stderr.read(1_000), "err");
  assert.equal(await child.line(), "out");
  await using tail = new Subprocess(["true"]);
  assert.throws(() => tail.stderr, TypeError);
});

Deno.test("Subprocess sets the open-files limit of the child", async (t) => {
  await t.step("a number", async () => {
    await using child = new Subprocess(["sh", "-c", "ulimit -n"], { openFiles: 256 });
    assert.equal(await child.line(), "256");
  });
  await t.step("the hard limit", async () => {
    const hard = (await run(["sh", "-c", "ulimit -Hn"])).stdout.trim();
    await using child = new Subprocess(["sh", "-c", "ulimit -n"], { openFiles: "hard" });
    assert.equal(await child.line(), hard);
  });
  assert.throws(() => new Subprocess(["true"], { openFiles: 1.5 }), RangeError);
});

Deno.test("Subprocess.line() fails at once when the process exits, naming its standard error", async () => {
  await using child = new Subprocess(["sh", "-c", "echo 'no config' >&2; exit 2"], {
    name: "balancer",
  });
  await assert.rejects(child.line(60_000), {
    name: "SubprocessError",
    message: "balancer exited with status 2:\nno config",
  });
});

Deno.test("LineReader.read() keeps a line that arrives after its guard for the next read", async () => {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const reader = new LineReader(readable);
  await assert.rejects(reader.read(20, "greeting"), GuardError, "No greeting within 20 ms");
  const writer = writable.getWriter();
  await writer.write(new TextEncoder().encode("late\n"));
  await writer.close();
  assert.equal(await reader.read(1_000), "late");
  assert.equal(await reader.read(1_000), undefined);
});

Deno.test("LineReader with queue: false keeps only the tail", async () => {
  const reader = new LineReader(new Response("a\nb\nc\n").body!, { queue: false });
  await reader.closed;
  assert.equal(await reader.read(1_000), undefined);
  assert.equal(reader.tail(2), "b\nc");
});

Deno.test("waitForLine() names the lines read when it fails", async (t) => {
  await t.step("the output ends first", async () => {
    const reader = new LineReader(new Response("starting\nstopped\n").body!);
    const seen: string[] = [];
    await assert.rejects(
      waitForLine(reader, (l) => l === "listening", { what: "listening line", seen }),
      Error,
      "Output ended with no listening line:\nstarting\nstopped",
    );
    assert.deepEqual(seen, ["starting", "stopped"]);
  });
  await t.step("the guard expires", async () => {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const reader = new LineReader(readable);
    const writer = writable.getWriter();
    await writer.write(new TextEncoder().encode("starting\n"));
    await assert.rejects(
      waitForLine(reader, () => false, { guardMs: 30 }),
      GuardError,
      "No matching line within 30 ms:\nstarting",
    );
    await writer.close();
  });
});

Deno.test("run() kills a command that runs out of time, or when aborted", async () => {
  await assert.rejects(
    run(["sleep", "5"], { timeoutMs: 50 }),
    SubprocessError,
    "sleep did not finish within 0.05 s",
  );
  const abort = new AbortController();
  const running = run(["sleep", "5"], { signal: abort.signal, allowFailure: true });
  abort.abort();
  assert.equal((await running).signal, "SIGKILL");
});

Deno.test("waitForPort() fails as soon as the process that is to listen exits", async () => {
  const port = await freePort();
  await using child = new Subprocess(["sh", "-c", "echo 'cannot bind' >&2; exit 1"], {
    name: "server",
  });
  const started = performance.now();
  await assert.rejects(
    waitForPort(port, { process: child, guardMs: 30_000 }),
    SubprocessError,
    "server exited with status 1:\ncannot bind",
  );
  assert.ok(performance.now() - started < 10_000);
});

Deno.test("mainPermissions() asks another checkout's main.ts, run from that checkout", async () => {
  const checkout = await Deno.makeTempDir({ prefix: "mtlb-checkout-" });
  try {
    await Deno.writeTextFile(`${checkout}/deno.json`, "{}");
    // Prints a flag naming the folder it runs in, as `main.ts permissions` prints `lib`.
    await Deno.writeTextFile(
      `${checkout}/main.ts`,
      "console.log(`deno run --allow-net=127.0.0.1:1 --allow-read=${Deno.args.at(-1)},${Deno.cwd()} main.ts`);",
    );
    const flags = await mainPermissions("/tmp/lb.toml", { checkout });
    assert.deepEqual(flags, [
      "--allow-net=127.0.0.1:1",
      `--allow-read=/tmp/lb.toml,${await Deno.realPath(checkout)}`,
    ]);
    await Deno.writeTextFile(`${checkout}/main.ts`, "Deno.exit(2);");
    await assert.rejects(
      mainPermissions("/tmp/lb.toml", { checkout }),
      SubprocessError,
      "permissions printed no permissions for /tmp/lb.toml (status 2)",
    );
  } finally {
    await Deno.remove(checkout, { recursive: true });
  }
});
