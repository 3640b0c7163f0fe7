/**
 * One client policy for a fleet: two `main.ts serve` processes with
 * `[cluster] clients = "shared"` on one real redis-server whose ACL users keep them
 * read-only, and `main.ts clients push` / `pull` as an operator runs them.
 * Skipped, with a message, when redis-server is not installed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { connectClient, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { type TestPki, testPki } from "./_pki_fixtures.ts";
import {
  INSTANCE_ACL,
  PUSH_ACL,
  REDIS_CLIENT_ENV,
  RedisProbe,
  RedisServer,
  redisTest,
} from "./_redis.ts";
import { lines, waitForRecord } from "../testing/lines.ts";
import { MAIN } from "../testing/paths.ts";
import { freePort } from "../testing/ports.ts";
import { mainPermissions, runMain } from "../testing/run_main.ts";

function tls(pki: TestPki): string {
  return `[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"
`;
}

const CLIENT = (name: string) =>
  `[clients.${name}]
match = { cn = "${name}" }
groups = ["echo"]
`;

/** An instance: `main.ts serve` in its own process, with its log as JSON lines. */
class Instance implements AsyncDisposable {
  readonly name: string;
  readonly port: number;
  readonly admin: number;
  readonly #child: Deno.ChildProcess;
  readonly #reader: AsyncGenerator<string>;
  readonly seen: string[] = [];

  private constructor(name: string, port: number, admin: number, child: Deno.ChildProcess) {
    this.name = name;
    this.port = port;
    this.admin = admin;
    this.#child = child;
    this.#reader = lines(child.stderr);
  }

  static async spawn(
    name: string,
    dir: string,
    body: (port: number, admin: number) => string,
  ): Promise<Instance> {
    const [port, admin] = [await freePort(), await freePort()];
    const path = join(dir, `${name}.toml`);
    await Deno.writeTextFile(path, body(port, admin));
    const flags = await mainPermissions(path);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, MAIN, "serve", "--config", path, "--log-format", "json"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    return new Instance(name, port, admin, child);
  }

  /** The next log record matching, after those already read. */
  record(match: (record: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    return waitForRecord(this.#reader, this.seen, match);
  }

  /** Waits for a record whose message matches. */
  logged(message: RegExp): Promise<Record<string, unknown>> {
    return this.record((r) => message.test(String(r.message)));
  }

  async get(path: string): Promise<string> {
    const response = await fetch(`http://127.0.0.1:${this.admin}${path}`);
    return await response.text();
  }

  async status(): Promise<Record<string, unknown>> {
    return JSON.parse(await this.get("/status"));
  }

  get exited(): Promise<Deno.CommandStatus> {
    return this.#child.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Exited already.
    }
    await this.#child.status;
    while (!(await this.#reader.next()).done);
  }
}

/** `main.ts clients ACTION --config FILE` with the permissions it needs. */
function clients(action: "push" | "pull", path: string, redis: RedisServer) {
  return runMain([
    `--allow-net=127.0.0.1:${redis.port}`,
    `--allow-read=${path}`,
    `--allow-env=${REDIS_CLIENT_ENV}`,
  ], ["clients", action, "--config", path]);
}

/** Connects as a client and checks that bytes come back from the echo upstream. */
async function echoes(port: number, credential: TestPki["alice"]) {
  const socket = await connectClient(port, credential);
  socket.write("ping");
  assert.equal(text(await readBytes(socket, 4)), "ping");
  return socket;
}

redisTest(
  "clients push reaches every instance within a second: a new client is served, a removed one refused and its connections closed",
  async () => {
    const pki = await testPki();
    await using redis = await RedisServer.start();
    await using admin = await RedisProbe.open(redis);
    await admin.send("ACL", "SETUSER", ...INSTANCE_ACL);
    await admin.send("ACL", "SETUSER", ...PUSH_ACL);
    await using upstream = await TestUpstream.start();
    const dir = await Deno.makeTempDir({ prefix: "mtlb_policy_" });
    await using _dir = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
    const store = (user: string, password: string) =>
      redis.url.replace("redis://", `redis://${user}:${password}@`);
    const groups = `[health]
interval = "1h"
[groups.echo]
upstreams = ["${upstream.address}"]
`;
    // The operator's file: the same groups, the clients, and the push user.
    const policyFile = join(dir, "policy.toml");
    const writePolicy = (names: string[]) =>
      Deno.writeTextFile(
        policyFile,
        `[server]\nlisten = "127.0.0.1:0"\n${tls(pki)}${groups}${names.map(CLIENT).join("")}
[cluster]
store = "${store("mtlb-push", "push-secret")}"
`,
      );
    // Each instance's file: no [clients] at all, and the read-only user.
    const instance = (name: string) => (port: number, adminPort: number) =>
      `[server]\nlisten = "127.0.0.1:${port}"\n${tls(pki)}${groups}
[admin]
listen = "127.0.0.1:${adminPort}"
[cluster]
store = "${store("mtlb", "instance-secret")}"
clients = "shared"
instance_id = "${name}"
`;

    // Nothing stored and nothing to fall back on: an instance does not start.
    {
      await using early = await Instance.spawn("lb-early", dir, instance("lb-early"));
      await early.logged(/Cannot start/);
      assert.match(
        early.seen.join("\n"),
        /no client policy to serve: the store .* holds no client policy yet, and .* has no \[clients\] to fall back on/,
      );
      assert.equal((await early.exited).code, 1);
    }

    await writePolicy(["alice", "bob"]);
    const first = await clients("push", policyFile, redis);
    assert.equal(first.code, 0, first.stderr);
    assert.match(
      first.stdout,
      /^Pushed client policy version 1 to redis:\/\/127\.0\.0\.1:\d+\/?: 2 clients: alice, bob/,
    );

    await using a = await Instance.spawn("lb-a", dir, instance("lb-a"));
    await using b = await Instance.spawn("lb-b", dir, instance("lb-b"));
    for (const lb of [a, b]) {
      const serving = await lb.logged(/Serving client policy version/);
      assert.equal((serving.properties as Record<string, unknown>).version, 1);
      await lb.logged(/started: listening on/);
    }
    const bobs = await Promise.all([a, b].map((lb) => echoes(lb.port, pki.bob)));
    const bobEnds = bobs.map((socket) => readAll(socket));
    for (const lb of [a, b]) (await echoes(lb.port, pki.alice)).destroy();
    await assert.rejects(echoes(a.port, pki.carol));
    await a.logged(/Denied/);

    // Version 2: carol added, bob removed.
    await writePolicy(["alice", "carol"]);
    const second = await clients("push", policyFile, redis);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /^Pushed client policy version 2 .*: 2 clients: alice, carol/);
    const pulled = await clients("pull", policyFile, redis);
    assert.equal(pulled.code, 0, pulled.stderr);
    const pushedAt = Date.parse(/pushed (\S+),/.exec(pulled.stdout)![1]!);
    assert.match(
      pulled.stdout,
      /^# Client policy version 2, pushed \S+, sha256 [0-9a-f]{64}\n# 2 clients: alice, carol\n\[clients\.alice\]/,
    );

    const latencies: number[] = [];
    for (const lb of [a, b]) {
      const applied = await lb.record((r) =>
        /in force/.test(String(r.message)) &&
        (r.properties as Record<string, unknown>).version === 2
      );
      latencies.push(Date.parse(String(applied["@timestamp"])) - pushedAt);
      // Applied as a reload of [clients] is: the removed client's connection closed.
      const log = lb.seen.join("\n");
      assert.match(log, /Reloaded .*: clients \+carol -bob/);
      assert.match(log, /Closing a connection of bob to echo: policy_changed/);
    }
    console.log(
      `push to applied: ${latencies.map((ms, i) => `${["lb-a", "lb-b"][i]} ${ms} ms`).join(", ")}`,
    );
    for (const ms of latencies) assert.ok(ms < 1000, `applied ${ms} ms after the push`);

    // Bob's live connections were closed on both; a new one is refused with its reason.
    for (const end of bobEnds) await end;
    for (const lb of [a, b]) {
      await assert.rejects(echoes(lb.port, pki.bob));
      const denied = await lb.logged(/Denied/);
      assert.equal((denied.properties as Record<string, unknown>).reason, "unknown_identity");
      (await echoes(lb.port, pki.carol)).destroy();
      (await echoes(lb.port, pki.alice)).destroy();
      const status = await lb.status();
      const policy = status.clientPolicy as Record<string, unknown>;
      assert.equal(policy.source, "store");
      assert.equal(policy.version, 2);
      assert.deepEqual((status.clients as { name: string }[]).map((c) => c.name), [
        "alice",
        "carol",
      ]);
      assert.match(await lb.get("/metrics"), /^mtlb_client_policy_version 2$/m);
    }

    // The instances' user may read the policy, not write it.
    const instanceFile = join(dir, "lb-a.toml");
    const pulledByInstance = await clients("pull", instanceFile, redis);
    assert.equal(pulledByInstance.code, 0, pulledByInstance.stderr);
    assert.match(pulledByInstance.stdout, /^# Client policy version 2,/);
    await Deno.writeTextFile(
      instanceFile,
      (await Deno.readTextFile(instanceFile)) + CLIENT("mallory"),
    );
    const refused = await clients("push", instanceFile, redis);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /^Cannot push the client policy: the Redis user may not write mtlb:policy:clients \(NOPERM[^)]*\); push as a user allowed to write it\n$/,
    );

    // The store goes away: each instance keeps version 2, and says so.
    await redis.stop();
    for (const lb of [a, b]) {
      const warned = await lb.logged(/Cannot read the client policy store/);
      assert.match(String(warned.message), /still serving "?version 2"?/);
      const policy = (await lb.status()).clientPolicy as Record<string, unknown>;
      assert.equal(policy.version, 2);
      assert.equal(policy.storeReachable, false);
      assert.ok(Number(policy.storeErrors) >= 1);
      assert.match(await lb.get("/metrics"), /^mtlb_client_policy_store_errors_total [1-9]/m);
      (await echoes(lb.port, pki.carol)).destroy();
    }
  },
);

redisTest(
  "An instance that cannot reach the store at start serves its file's [clients], then the stored policy once the store answers",
  async () => {
    const pki = await testPki();
    await using redis = await RedisServer.start();
    await using upstream = await TestUpstream.start();
    const dir = await Deno.makeTempDir({ prefix: "mtlb_policy_" });
    await using _dir = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
    const body = (listen: string, extra: string) =>
      `[server]\nlisten = "${listen}"\n${tls(pki)}[health]
interval = "1h"
[groups.echo]
upstreams = ["${upstream.address}"]
${CLIENT("alice")}${extra}
[cluster]
store = "${redis.url}"
clients = "shared"
`;
    await redis.stop();
    await using lb = await Instance.spawn(
      "lb-a",
      dir,
      (port, admin) => body(`127.0.0.1:${port}`, `[admin]\nlisten = "127.0.0.1:${admin}"\n`),
    );
    const fallback = await lb.logged(/Serving the \[clients\] of/);
    assert.match(String(fallback.message), /does not answer/);
    await lb.logged(/started: listening on/);
    (await echoes(lb.port, pki.alice)).destroy();
    assert.equal(((await lb.status()).clientPolicy as Record<string, unknown>).source, "file");

    await redis.restart();
    const policyFile = join(dir, "policy.toml");
    await Deno.writeTextFile(policyFile, body("127.0.0.1:0", CLIENT("bob")));
    const pushed = await clients("push", policyFile, redis);
    assert.equal(pushed.code, 0, pushed.stderr);
    // Announced, or found by the periodic check within 5 s.
    await lb.record((r) =>
      /in force/.test(String(r.message)) && (r.properties as Record<string, unknown>).version === 1
    );
    (await echoes(lb.port, pki.bob)).destroy();
    const policy = (await lb.status()).clientPolicy as Record<string, unknown>;
    assert.equal(policy.source, "store");
    assert.equal(policy.version, 1);
  },
);
