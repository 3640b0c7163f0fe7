import assert from "node:assert/strict";
import { AdminServer, type AdminTarget } from "../lib/admin.ts";
import { formatHostPort } from "../lib/address.ts";

class FakeTarget implements AdminTarget {
  state = "serving";
  reloads = 0;
  failReload: Error | undefined;
  readonly metrics = { render: () => "# HELP x X.\n# TYPE x gauge\nx 1\n" };
  status(): unknown {
    return { state: this.state, groups: [{ name: "echo" }] };
  }
  reload(): Promise<unknown> {
    this.reloads++;
    return this.failReload === undefined ? Promise.resolve() : Promise.reject(this.failReload);
  }
}

async function withAdmin(
  allowReload: boolean,
  fn: (url: (path: string) => string, target: FakeTarget) => Promise<void>,
): Promise<void> {
  const target = new FakeTarget();
  await using admin = AdminServer.start(target, {
    listen: "127.0.0.1:0",
    allowReload: () => allowReload,
  });
  assert.notEqual(admin.address.port, 0);
  await fn((path) => `http://${formatHostPort(admin.address)}${path}`, target);
}

Deno.test("AdminServer serves /metrics in the Prometheus text format", async () => {
  await withAdmin(false, async (url) => {
    const response = await fetch(url("/metrics"));
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert.equal(await response.text(), "# HELP x X.\n# TYPE x gauge\nx 1\n");
  });
});

Deno.test("AdminServer serves /status as JSON", async () => {
  await withAdmin(false, async (url) => {
    const response = await fetch(url("/status"));
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(await response.json(), { state: "serving", groups: [{ name: "echo" }] });
  });
});

Deno.test("AdminServer answers /healthz with 200 while serving and 503 otherwise", async () => {
  await withAdmin(false, async (url, target) => {
    const serving = await fetch(url("/healthz"));
    assert.equal(serving.status, 200);
    assert.equal(await serving.text(), "serving\n");
    target.state = "draining";
    const draining = await fetch(url("/healthz"));
    assert.equal(draining.status, 503);
    assert.equal(await draining.text(), "draining\n");
    const head = await fetch(url("/healthz"), { method: "HEAD" });
    assert.equal(head.status, 503);
    await head.body?.cancel();
  });
});

Deno.test("AdminServer refuses POST /reload unless allow_reload is on", async () => {
  await withAdmin(false, async (url, target) => {
    const response = await fetch(url("/reload"), { method: "POST" });
    assert.equal(response.status, 403);
    assert.match((await response.json()).error, /allow_reload = true/);
    assert.equal(target.reloads, 0);
  });
});

Deno.test("AdminServer POST /reload reloads and reports success or the reason of a failure", async () => {
  await withAdmin(true, async (url, target) => {
    const ok = await fetch(url("/reload"), { method: "POST" });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { outcome: "success" });
    target.failReload = new Error("Cannot reload: bad config");
    const failed = await fetch(url("/reload"), { method: "POST" });
    assert.equal(failed.status, 500);
    assert.deepEqual(await failed.json(), {
      outcome: "failure",
      error: "Cannot reload: bad config",
    });
    // A browser's cross-site form post carries an Origin header: refused.
    const browser = await fetch(url("/reload"), {
      method: "POST",
      headers: { origin: "https://evil.example" },
    });
    assert.equal(browser.status, 403);
    await browser.body?.cancel();
    assert.equal(target.reloads, 2);
  });
});

Deno.test("AdminServer answers 405 with Allow for a wrong method and 404 for an unknown path", async () => {
  await withAdmin(true, async (url, target) => {
    const get = await fetch(url("/reload"));
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    await get.body?.cancel();
    const post = await fetch(url("/metrics"), { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    await post.body?.cancel();
    const missing = await fetch(url("/nope"));
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    assert.equal(target.reloads, 0);
  });
});

Deno.test("AdminServer.start() throws when the address is taken", async () => {
  const target = new FakeTarget();
  await using first = AdminServer.start(target, { listen: "127.0.0.1:0" });
  assert.throws(
    () => AdminServer.start(target, { listen: formatHostPort(first.address) }),
    Deno.errors.AddrInUse,
  );
});
