/**
 * The balancer driven by `openssl s_client`, a TLS client no one here wrote.
 * Skipped, with a message, when openssl is not installed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { banner, nextEvent, startBalancer, TestUpstream } from "./_harness.ts";
import type { DenyRecord, HandshakeErrorRecord } from "../lib/server/records.ts";

const HAVE_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((out) => out.success, () => false);
if (!HAVE_OPENSSL) console.warn("Skipping e2e_openssl_test.ts: openssl is not on PATH");

const CONFIG = (upstream: string) =>
  `[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`;

/** A running `openssl s_client` with line-wise access to what it prints. */
class SClient implements AsyncDisposable {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #out = "";
  #waiters: { text: string; resolve: () => void }[] = [];
  readonly done: Promise<Deno.CommandStatus>;

  constructor(args: string[]) {
    this.#child = new Deno.Command("openssl", {
      args: ["s_client", ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.#out += chunk;
        this.#waiters = this.#waiters.filter((w) => {
          if (!this.#out.includes(w.text)) return true;
          w.resolve();
          return false;
        });
      }
    };
    const pumps = Promise.all([pump(this.#child.stdout), pump(this.#child.stderr)]);
    this.done = pumps.then(() => this.#child.status);
  }

  get output(): string {
    return this.#out;
  }

  /** Resolves when `text` has been printed; rejects if openssl exits first. */
  waitFor(text: string): Promise<void> {
    if (this.#out.includes(text)) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#waiters.push({ text, resolve });
    this.done.then(() => {
      if (!this.#out.includes(text)) reject(new Error(`openssl exited without "${text}"`));
    });
    return promise;
  }

  async send(text: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(text));
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
    try {
      this.#child.kill();
    } catch {
      // already exited
    }
    await this.done;
  }
}

function sClientArgs(port: number, dir: string, extra: string[] = []): string[] {
  return [
    "-connect",
    `127.0.0.1:${port}`,
    "-CAfile",
    join(dir, "ca.crt"),
    "-servername",
    "localhost",
    "-quiet",
    ...extra,
  ];
}

Deno.test({
  name: "Balancer echoes through openssl s_client with a client certificate",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using upstream = await TestUpstream.start(banner("welcome"));
    await using lb = await startBalancer(CONFIG(upstream.address));
    const dir = lb.pki.dir;
    await using client = new SClient(
      sClientArgs(lb.port(), dir, [
        "-cert",
        join(dir, "alice.crt"),
        "-key",
        join(dir, "alice.key"),
      ]),
    );
    await client.waitFor("welcome\n");
    await client.send("hello from openssl\n");
    await client.waitFor("hello from openssl\n");
    assert.equal(lb.balancer.counters.accepted, 1);
  },
});

Deno.test({
  name: "Balancer refuses openssl s_client without a certificate, with TLS 1.2, or FFDHE only",
  ignore: !HAVE_OPENSSL,
  async fn(t) {
    await using upstream = await TestUpstream.start(banner("welcome"));
    await using lb = await startBalancer(CONFIG(upstream.address));
    const dir = lb.pki.dir;
    const cert = ["-cert", join(dir, "alice.crt"), "-key", join(dir, "alice.key")];
    const cases: [string, string[]][] = [
      ["no certificate", []],
      ["TLS 1.2", [...cert, "-tls1_2"]],
      ["finite-field DHE only (no ECDHE)", [...cert, "-groups", "ffdhe2048"]],
      ["a certificate from a foreign CA", [
        "-cert",
        join(dir, "intruder.crt"),
        "-key",
        join(dir, "intruder.key"),
      ]],
    ];
    for (const [name, extra] of cases) {
      await t.step(name, async () => {
        const failed = nextEvent<HandshakeErrorRecord>(lb.balancer, "handshake_error");
        await using client = new SClient(sClientArgs(lb.port(), dir, extra));
        await client.send("let me in\n");
        await failed;
        await client.close();
        await client.done;
        assert.ok(!client.output.includes("welcome"), "nothing from the upstream");
      });
    }
    assert.equal(upstream.received, 0);
    assert.equal(lb.balancer.counters.accepted, 0);
  },
});

Deno.test({
  name: "Balancer refuses a TLS 1.3 suite that is not configured (openssl offers ChaCha20 only)",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using upstream = await TestUpstream.start(banner("welcome"));
    await using lb = await startBalancer(CONFIG(upstream.address));
    const dir = lb.pki.dir;
    const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
    await using client = new SClient(sClientArgs(lb.port(), dir, [
      "-cert",
      join(dir, "alice.crt"),
      "-key",
      join(dir, "alice.key"),
      "-ciphersuites",
      "TLS_CHACHA20_POLY1305_SHA256",
    ]));
    const record = await denied;
    assert.equal(record.reason, "cipher_not_allowed");
    assert.equal(record.detail, "TLS_CHACHA20_POLY1305_SHA256");
    await client.close();
    await client.done;
    assert.ok(!client.output.includes("welcome"));
    assert.equal(upstream.received, 0);
  },
});
