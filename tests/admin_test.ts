import assert from "node:assert/strict";
import { AdminServer, type AdminTarget } from "../lib/admin/admin_server.ts";
import { formatHostPort } from "../lib/core/address.ts";
import { RELOAD_HEADER } from "../lib/admin/dashboard.ts";
import { rawRequest } from "./_harness.ts";

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
    const text = await response.text();
    assert.ok(text.startsWith("# HELP x X.\n# TYPE x gauge\nx 1\n"), text);
    // The endpoint's own refusals follow the target's metrics.
    assert.match(text, /^mtlb_admin_requests_refused_total\{reason="misdirected_host"\} 0$/m);
    assert.match(text, /^mtlb_admin_requests_refused_total\{reason="unauthorized"\} 0$/m);
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

/** Every route, with the method it answers. */
const ROUTES = [
  ["GET", "/"],
  ["GET", "/metrics"],
  ["GET", "/status"],
  ["GET", "/denials"],
  ["GET", "/healthz"],
  ["POST", "/reload"],
  ["GET", "/nope"],
] as const;

Deno.test("AdminServer answers 421 on every route to a Host that is not an IP address, localhost or a listed name", async (t) => {
  const target = new FakeTarget();
  await using admin = AdminServer.start(target, {
    listen: "127.0.0.1:0",
    allowReload: () => true,
    hosts: () => ["mtlb.internal"],
  });
  const port = admin.address.port;
  for (const [method, path] of ROUTES) {
    await t.step(`${method} ${path}`, async () => {
      const refused = await rawRequest(port, [
        `${method} ${path} HTTP/1.1`,
        `host: rebind.evil.example:${port}`,
        "content-length: 0",
      ]);
      assert.equal(refused.status, 421);
      assert.equal(refused.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(
        refused.body,
        "Misdirected request: this admin endpoint answers for IP addresses, localhost and the names of [admin] hosts\n",
      );
    });
  }
  assert.equal(target.reloads, 0);
});

Deno.test("AdminServer answers IP addresses, localhost and listed names in Host, whatever the port", async (t) => {
  const target = new FakeTarget();
  let hosts = ["mtlb.internal", "lb-1.mgmt.example.org"];
  await using admin = AdminServer.start(target, {
    listen: "127.0.0.1:0",
    hosts: () => hosts,
  });
  const port = admin.address.port;
  const get = (host: string | undefined) =>
    rawRequest(
      port,
      host === undefined ? ["GET /status HTTP/1.0"] : ["GET /status HTTP/1.1", `host: ${host}`],
    );
  const accepted = [
    `127.0.0.1:${port}`,
    "127.0.0.1",
    "10.20.30.40:80",
    `[::1]:${port}`,
    "[::1]",
    "[fe80::1]:9000",
    "[::ffff:127.0.0.1]",
    "127.0.0.1:",
    "localhost",
    `LocalHost:${port === 1 ? 2 : port - 1}`,
    "mtlb.internal:9000",
    "MTLB.Internal",
    "lb-1.mgmt.example.org:1",
  ];
  for (const host of accepted) {
    await t.step(`accepts ${host}`, async () => {
      const response = await get(host);
      assert.equal(response.status, 200, response.body);
      assert.deepEqual(JSON.parse(response.body), target.status());
    });
  }
  await t.step("accepts a request without Host (HTTP/1.0: not from a browser)", async () => {
    assert.equal((await get(undefined)).status, 200);
  });
  const refused = [
    "evil.example",
    `evil.example:${port}`,
    "localhost.",
    "app.localhost",
    "mtlb.internal.evil.example",
    "127.0.0.1.nip.io",
    "127.1",
    "0x7f000001",
    "[evil.example]",
    "[fe80::1%25eth0]:9000",
    "127.0.0.1:99999",
    "::1",
    "",
    `:${port}`,
  ];
  for (const host of refused) {
    await t.step(`refuses ${JSON.stringify(host)}`, async () => {
      assert.equal((await get(host)).status, 421);
    });
  }
  await t.step("reads the names on every request", async () => {
    hosts = [];
    assert.equal((await get("mtlb.internal")).status, 421);
    assert.equal((await get("127.0.0.1")).status, 200);
  });
});

Deno.test("AdminServer with a token asks every route but /healthz and the dashboard page for it", async (t) => {
  const target = new FakeTarget();
  let token = "0123456789abcdef".repeat(4);
  await using admin = AdminServer.start(target, {
    listen: "127.0.0.1:0",
    allowReload: () => true,
    token: () => token,
  });
  const url = (path: string) => `http://${formatHostPort(admin.address)}${path}`;
  const send = (method: string, path: string, authorization?: string) =>
    fetch(url(path), {
      method,
      headers: authorization === undefined ? {} : { authorization },
    });

  for (const [method, path] of ROUTES) {
    if (path === "/healthz" || path === "/") continue;
    await t.step(
      `${method} ${path}: 401 without a token, with a wrong one or another scheme`,
      async () => {
        for (
          const [authorization, challenge] of [
            [undefined, 'Bearer realm="mtlb"'],
            ["Bearer", 'Bearer realm="mtlb"'],
            [`Basic ${btoa(`admin:${token}`)}`, 'Bearer realm="mtlb"'],
            [`Bearer ${token.slice(1)}`, 'Bearer realm="mtlb", error="invalid_token"'],
            [`Bearer ${token}x`, 'Bearer realm="mtlb", error="invalid_token"'],
            [`Bearer ${token.toUpperCase()}`, 'Bearer realm="mtlb", error="invalid_token"'],
          ] as const
        ) {
          const response = await send(method, path, authorization);
          assert.equal(response.status, 401, `${authorization}`);
          assert.equal(response.headers.get("www-authenticate"), challenge);
          assert.equal(await response.text(), "Unauthorized: send Authorization: Bearer TOKEN\n");
        }
      },
    );
  }
  assert.equal(target.reloads, 0, "no reload without the token");

  await t.step("the right token opens every route (any case of Bearer)", async () => {
    const metrics = await send("GET", "/metrics", `Bearer ${token}`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^x 1$/m);
    const status = await send("GET", "/status", `bearer  ${token}`);
    assert.deepEqual(await status.json(), target.status());
    const denials = await send("GET", "/denials", `BEARER ${token}`);
    assert.equal(denials.status, 200);
    await denials.body?.cancel();
    const reload = await send("POST", "/reload", `Bearer ${token}`);
    assert.deepEqual(await reload.json(), { outcome: "success" });
    assert.equal(target.reloads, 1);
    const missing = await send("GET", "/nope", `Bearer ${token}`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });

  await t.step("/healthz and the dashboard page need none", async () => {
    const health = await send("GET", "/healthz");
    assert.equal(health.status, 200);
    assert.equal(await health.text(), "serving\n");
    const page = await send("GET", "/");
    assert.equal(page.status, 200);
    assert.match(await page.text(), /data-token="on"/);
    const post = await send("POST", "/");
    assert.equal(post.status, 401, "only reading the page is open");
    await post.body?.cancel();
  });

  await t.step("a browser's reload needs the token as well as its Origin checks", async () => {
    const origin = url("").replace(/\/$/, "");
    const browser = { origin, [RELOAD_HEADER]: "1", "sec-fetch-site": "same-origin" };
    const without = await fetch(url("/reload"), { method: "POST", headers: browser });
    assert.equal(without.status, 401);
    await without.body?.cancel();
    const crossSite = await fetch(url("/reload"), {
      method: "POST",
      headers: { ...browser, origin: "http://evil.example", authorization: `Bearer ${token}` },
    });
    assert.equal(crossSite.status, 403);
    await crossSite.body?.cancel();
    const ok = await fetch(url("/reload"), {
      method: "POST",
      headers: { ...browser, authorization: `Bearer ${token}` },
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    assert.equal(target.reloads, 2);
  });

  await t.step("the token is read on every request: a new one replaces the old", async () => {
    const old = token;
    token = "fedcba9876543210".repeat(4);
    const refused = await send("GET", "/status", `Bearer ${old}`);
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
    const ok = await send("GET", "/status", `Bearer ${token}`);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  });

  await t.step("a wrong Host is refused before the token is looked at", async () => {
    const refused = await rawRequest(admin.address.port, [
      "GET /status HTTP/1.1",
      "host: evil.example",
      `authorization: Bearer ${token}`,
    ]);
    assert.equal(refused.status, 421);
  });
});

Deno.test("AdminServer counts every refusal and reports each reason at most once a minute", async () => {
  const target = new FakeTarget();
  let now = Date.parse("2026-11-22T10:00:00Z");
  const token = "0123456789abcdef".repeat(4);
  await using admin = AdminServer.start(target, {
    listen: "127.0.0.1:0",
    token: () => token,
    now: () => now,
  });
  const port = admin.address.port;
  const misdirected = () =>
    rawRequest(port, ["GET /status HTTP/1.1", "host: evil.example"]).then((r) => r.status);
  const unauthorized = () =>
    rawRequest(port, ["GET /status HTTP/1.1", "host: 127.0.0.1", "authorization: Bearer nope"])
      .then((r) => r.status);
  const authorized = { authorization: `Bearer ${token}` };
  const denials = async () =>
    (await (await fetch(`http://127.0.0.1:${port}/denials`, { headers: authorized })).json())
      .denials;

  for (let i = 0; i < 3; i++) assert.equal(await misdirected(), 421);
  assert.equal(await unauthorized(), 401);
  now += 59_999;
  assert.equal(await misdirected(), 421);
  assert.deepEqual(await denials(), [
    {
      at: "2026-11-22T10:00:00.000Z",
      reason: "admin_unauthorized",
      remote: (await denials())[0].remote,
      detail: "GET /status: wrong token",
    },
    {
      at: "2026-11-22T10:00:00.000Z",
      reason: "admin_misdirected_host",
      remote: (await denials())[1].remote,
      detail:
        'Host "evil.example" is not an IP address, localhost or a name of [admin] hosts (a web page using DNS rebinding sends its own name)',
    },
  ]);
  assert.match((await denials())[0].remote, /^127\.0\.0\.1:\d+$/);

  // A minute after the last report: reported again, with the count in between.
  now += 1;
  assert.equal(await misdirected(), 421);
  const [latest] = await denials();
  assert.equal(latest.reason, "admin_misdirected_host");
  assert.equal(latest.at, "2026-11-22T10:01:00.000Z");
  assert.match(latest.detail, /; 3 more refused for this reason since the last report$/);
  assert.equal((await denials()).length, 3);

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: authorized }))
    .text();
  assert.match(metrics, /^mtlb_admin_requests_refused_total\{reason="misdirected_host"\} 5$/m);
  assert.match(metrics, /^mtlb_admin_requests_refused_total\{reason="unauthorized"\} 1$/m);
});

/** A target that dispatches events, as a `Balancer` does. */
class EventTargetBalancer extends EventTarget implements AdminTarget {
  readonly state = "serving";
  readonly metrics = { render: () => "" };
  status(): unknown {
    return {};
  }
  reload(): Promise<unknown> {
    return Promise.resolve();
  }
}

Deno.test("AdminServer lists failed handshakes in /denials, named by cause, but not clients that left", async () => {
  const target = new EventTargetBalancer();
  await using admin = AdminServer.start(target, { listen: "127.0.0.1:0" });
  target.dispatchEvent(
    new CustomEvent("handshake_error", {
      detail: {
        reason: "unknown_ca",
        remote: "127.0.0.1:5000",
        identity: { cn: "mallory", serial: "01", spkiSha256: "00", sanUri: [], sanDns: [] },
        detail: "no CA of the bundle issued CN=mallory",
      },
    }),
  );
  target.dispatchEvent(
    new CustomEvent("handshake_error", {
      detail: { reason: "client_closed", remote: "127.0.0.1:5001" },
    }),
  );
  const response = await fetch(`http://${formatHostPort(admin.address)}/denials`);
  const { denials } = await response.json();
  assert.equal(denials.length, 1);
  assert.equal(denials[0].reason, "unknown_ca");
  assert.equal(denials[0].stage, "handshake");
  assert.equal(denials[0].identity, "CN=mallory");
  assert.equal(denials[0].detail, "no CA of the bundle issued CN=mallory");
});
