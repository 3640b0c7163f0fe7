/**
 * End-to-end tests of the trust model with real TLS clients: what a reload takes away
 * cannot be had back by resuming a session (one balancer, and workers), a CA rollover
 * with one CRL per CA refuses what either revoked whatever the file order, and a
 * certificate without the clientAuth usage is refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTlsMaterial, parseConfig } from "../lib/config/mod.ts";
import { crlToPem } from "../lib/identity/crl.ts";
import { createCrl } from "../lib/pki/crl_issuer.ts";
import type { IssuedCertificate } from "../lib/pki/issue_certificate.ts";
import { Balancer } from "../lib/server/balancer.ts";
import type { LoadedConfig } from "../lib/server/lifecycle.ts";
import type { HandshakeErrorRecord } from "../lib/server/records.ts";
import { WorkerBalancer } from "../lib/workers/worker_balancer.ts";
import { connectClient, nextEvent, readAll, readBytes, TestUpstream, text } from "./_harness.ts";
import { type Rollover, rolloverPki, testPki } from "./_pki_fixtures.ts";
import { HAVE_OPENSSL, sClient } from "./_openssl.ts";
import { guard } from "../testing/guard.ts";

const TEST_WORKER = new URL("./fixtures/workers_test_worker.ts", import.meta.url);

/**
 * A CA rollover's two CAs (same name, no key identifiers: only signatures tell them
 * apart) in `both.crt`, the successor alone in `next.crt`, and the retired CA's
 * client "roll" in `roll.crt`/`roll.key`.
 */
async function retiredPki(): Promise<
  { dir: string; both: string; next: string } & AsyncDisposable
> {
  const { bare } = await rolloverPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_trust_" });
  await Deno.writeTextFile(join(dir, "roll.crt"), bare.oldClient.certPem);
  await Deno.writeTextFile(join(dir, "roll.key"), bare.oldClient.keyPem);
  const both = join(dir, "both.crt");
  await Deno.writeTextFile(both, bare.bundle);
  const next = join(dir, "next.crt");
  await Deno.writeTextFile(next, bare.next.certPem);
  return { dir, both, next, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function load(ca: string, upstream: string, extra = ""): Promise<LoadedConfig> {
  const pki = await testPki();
  const config = parseConfig(
    `[tls]
ca = "${ca}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"
${extra}
[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

[clients.roll]
match = { cn = "roll" }
groups = ["echo"]
`,
    { path: join(pki.dir, "lb.toml"), baseDir: pki.dir },
  );
  return { config, tls: await loadTlsMaterial(config) };
}

function rollArgs(port: number, dir: string): string[] {
  return [
    "-connect",
    `127.0.0.1:${port}`,
    "-cert",
    join(dir, "roll.crt"),
    "-key",
    join(dir, "roll.key"),
  ];
}

/** A full handshake as roll that waits for a session ticket, and echoes a line. */
async function ticket(port: number, dir: string): Promise<string> {
  const session = join(dir, `session-${crypto.randomUUID()}`);
  const payload = "PAYLOAD-first-1a2b\n";
  // The ticket comes right after the handshake, before the echo.
  const first = await sClient([...rollArgs(port, dir), "-sess_out", session], payload, {
    holdUntil: payload,
  });
  assert.match(first.text, /^New, TLSv1\.3/m);
  assert.match(first.text, /Post-Handshake New Session Ticket arrived/);
  assert.ok(first.text.includes(payload), "roll is served before the reload");
  return session;
}

Deno.test({
  name:
    "Balancer: a client of a retired CA (same name as its successor) cannot get back in by resuming a session",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using upstream = await TestUpstream.start();
    await using retired = await retiredPki();
    await using balancer = new Balancer(await load(retired.both, upstream.address));
    await balancer.start();
    const port = balancer.listeners()[0]!.address.port;
    const session = await ticket(port, retired.dir);

    await balancer.reload(await load(retired.next, upstream.address));
    const received = upstream.received;
    const failed = nextEvent<HandshakeErrorRecord>(balancer, "handshake_error");
    const payload = "PAYLOAD-resumed-3c4d\n";
    const resumed = await sClient([...rollArgs(port, retired.dir), "-sess_in", session], payload, {
      holdUntil: payload,
    });
    assert.match(resumed.text, /^Reused, TLSv1\.3/m, "the session was resumed");
    assert.ok(!resumed.text.includes(payload), "nothing came back");
    const record = await guard(failed, "handshake_error");
    assert.equal(record.reason, "bad_signature", record.detail);
    assert.equal(record.identity?.cn, "roll");
    assert.match(record.detail ?? "", /^resumed session: /);
    assert.equal(upstream.received, received, "nothing reached the upstream");
    assert.equal(balancer.counters.accepted, 1, "only the connection before the reload");
  },
});

Deno.test({
  name: "WorkerBalancer: no worker lets a resumed session of a removed CA in",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using upstream = await TestUpstream.start();
    await using retired = await retiredPki();
    await using balancer = new WorkerBalancer({
      ...await load(retired.both, upstream.address),
      workers: 2,
      module: TEST_WORKER,
    });
    await balancer.start();
    const port = balancer.listeners()[0]!.address.port;
    // Tickets of both workers (each has its own ticket keys). The kernel spreads
    // connections over the workers, so each resumption lands on the issuing worker
    // about half the time: with 12, all missing it is a 1 in 4,096 chance. Six at a
    // time, under the client's default cap of 10 connections.
    const sessions: string[] = [];
    for (let batch = 0; batch < 2; batch++) {
      sessions.push(
        ...await Promise.all(Array.from({ length: 6 }, () => ticket(port, retired.dir))),
      );
    }

    await balancer.reload(await load(retired.next, upstream.address));
    const received = upstream.received;
    let reused = 0;
    for (const [i, session] of sessions.entries()) {
      const payload = `PAYLOAD-resumed-${i}\n`;
      const again = await sClient([...rollArgs(port, retired.dir), "-sess_in", session], payload, {
        holdUntil: payload,
      });
      // On the worker that issued the ticket, it resumes; on the other, it is a new
      // handshake. Either way it is refused.
      if (/^Reused, TLSv1\.3/m.test(again.text)) reused++;
      else assert.match(again.text, /^New, TLSv1\.3/m);
      assert.ok(!again.text.includes(payload), `attempt ${i} got nothing back`);
    }
    assert.ok(reused > 0, "at least one resumption landed on the worker that issued it");
    assert.equal(upstream.received, received, "nothing reached the upstream");
    const status = balancer.status();
    const refused = Object.values(status.connections.handshakeFailures).reduce((a, b) => a + b, 0);
    assert.equal(refused, sessions.length);
    assert.equal(status.connections.accepted, sessions.length, "only those before the reload");
  },
});

/** A balancer trusting a rollover's two CAs, with one CRL per CA in the given order. */
async function rolloverBalancer(
  rollover: Rollover,
  upstream: string,
  order: "old first" | "next first",
): Promise<{ balancer: Balancer; dir: string } & AsyncDisposable> {
  const pki = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "mtlb_rollover_" });
  const revokedByOld = crlToPem(await createCrl(rollover.old, [rollover.oldClient.serial]));
  const noneByNext = crlToPem(await createCrl(rollover.next, []));
  await Deno.writeTextFile(join(dir, "ca.crt"), rollover.bundle);
  await Deno.writeTextFile(
    join(dir, "ca.crl"),
    order === "old first" ? revokedByOld + noneByNext : noneByNext + revokedByOld,
  );
  const config = parseConfig(
    `[tls]
ca = "ca.crt"
crl = "ca.crl"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"

[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream}"]

[clients.roll]
match = { cn = "roll" }
groups = ["echo"]
`,
    { path: join(dir, "lb.toml"), baseDir: dir },
  );
  const balancer = new Balancer({ config, tls: await loadTlsMaterial(config) });
  await balancer.start();
  return {
    balancer,
    dir,
    [Symbol.asyncDispose]: async () => {
      await balancer.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("Balancer: in a same-name CA rollover, a certificate revoked by its own CA's CRL is refused whatever the CRL order", async (t) => {
  await using upstream = await TestUpstream.start();
  const rollovers = await rolloverPki();
  for (const kind of ["keyed", "bare"] as const) {
    for (const order of ["old first", "next first"] as const) {
      await t.step(`${kind} CAs, ${order}`, async () => {
        const rollover = rollovers[kind];
        await using lb = await rolloverBalancer(rollover, upstream.address, order);
        const port = lb.balancer.listeners()[0]!.address.port;
        const asPem = (c: IssuedCertificate) =>
          ({
            chainPem: c.certPem,
            keyPem: c.keyPem,
          }) as Parameters<typeof connectClient>[1];

        // Same subject, same serial, another CA: the next CA's client is served.
        const next = await connectClient(port, asPem(rollover.nextClient));
        next.write("fine");
        assert.equal(text(await readBytes(next, 4)), "fine");
        next.destroy();

        const denied = nextEvent<{ reason: string; detail?: string }>(lb.balancer, "deny");
        const old = await connectClient(port, asPem(rollover.oldClient));
        old.write("let me in");
        const [record, { data }] = await Promise.all([denied, readAll(old)]);
        assert.equal(record.reason, "revoked");
        assert.equal(data.length, 0);
      });
    }
  }
});
