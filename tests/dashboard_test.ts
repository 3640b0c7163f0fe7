import assert from "node:assert/strict";
import { AdminServer, RECENT_DENIALS } from "../lib/admin/admin_server.ts";
import { formatHostPort } from "../lib/core/address.ts";
import { dashboardCsp, dashboardResponse, RELOAD_HEADER } from "../lib/admin/dashboard.ts";
import { buildClient, CLIENT_BUILD, CLIENT_SOURCE } from "../tasks/dashboard.ts";
import { rawRequest } from "./_harness.ts";

/** An admin target that dispatches `"deny"` events, as a Balancer does. */
class EventfulTarget extends EventTarget {
  state = "serving";
  reloads = 0;
  readonly metrics = { render: () => "" };
  status(): unknown {
    return { state: this.state };
  }
  reload(): Promise<unknown> {
    this.reloads++;
    return Promise.resolve();
  }
  deny(detail: Record<string, unknown>): void {
    this.dispatchEvent(new CustomEvent("deny", { detail }));
  }
}

async function withAdmin(
  allowReload: boolean,
  fn: (origin: string, target: EventfulTarget, admin: AdminServer) => Promise<void>,
): Promise<void> {
  const target = new EventfulTarget();
  let now = Date.parse("2026-11-22T10:00:00Z");
  await using admin = AdminServer.start(target, {
    listen: "127.0.0.1:0",
    allowReload: () => allowReload,
    now: () => now += 1000,
  });
  await fn(`http://${formatHostPort(admin.address)}`, target, admin);
}

Deno.test("AdminServer serves the dashboard at / as HTML with a strict CSP", async () => {
  await withAdmin(false, async (origin) => {
    const response = await fetch(`${origin}/`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(response.headers.get("cache-control"), "no-store");
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.equal(response.headers.get("x-frame-options"), "DENY");
    const html = await response.text();
    assert.match(html, /^<!doctype html>/);
    const nonce = html.match(/<script type="module" nonce="([^"]+)">/)?.[1];
    assert.ok(nonce !== undefined && nonce.length >= 24, "the script carries a nonce");
    assert.ok(html.includes(`<style nonce="${nonce}">`), "the style carries the same nonce");
    assert.equal(response.headers.get("content-security-policy"), dashboardCsp(nonce));
    // Places for the limiter's figures: queued connections per client, and in total.
    assert.match(html, /<th class="num">Queued<\/th>/);
    assert.match(html, /<p id="queue-totals" class="small muted"><\/p>/);
    // Another response, another nonce.
    const again = await (await fetch(`${origin}/`)).text();
    assert.notEqual(again.match(/<script type="module" nonce="([^"]+)">/)?.[1], nonce);

    const head = await fetch(`${origin}/`, { method: "HEAD" });
    assert.equal(head.status, 200);
    await head.body?.cancel();
    const post = await fetch(`${origin}/`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  });
});

Deno.test("dashboardCsp() forbids every load but the page's own nonce and its origin", () => {
  const directives = new Map(
    dashboardCsp("abc").split("; ").map((d) => {
      const [name, ...values] = d.split(" ");
      return [name!, values.join(" ")];
    }),
  );
  assert.equal(directives.get("default-src"), "'none'");
  assert.equal(directives.get("script-src"), "'nonce-abc'");
  assert.equal(directives.get("style-src"), "'nonce-abc'");
  assert.equal(directives.get("connect-src"), "'self'");
  assert.equal(directives.get("img-src"), "data:");
  assert.equal(directives.get("frame-ancestors"), "'none'");
  assert.equal(directives.get("form-action"), "'none'");
  assert.equal(directives.get("base-uri"), "'none'");
  assert.doesNotMatch(dashboardCsp("abc"), /unsafe|https?:|\*/);
});

Deno.test("dashboardResponse() builds a self-contained page: no external URL, one script, one style", async () => {
  const html = await dashboardResponse({ allowReload: true, nonce: "n0nce" }).text();
  // The only absolute URL is the SVG namespace, an identifier that is never fetched.
  const urls = [...html.matchAll(/[a-z][a-z0-9+.-]*:\/\/[^\s"'<>)]*/gi)].map((m) => m[0]);
  assert.deepEqual([...new Set(urls)], ["http://www.w3.org/2000/svg"]);
  assert.doesNotMatch(html, /@import|url\(/i, "the style loads nothing");
  assert.doesNotMatch(html, /["'(=]\s*\/\/[a-z0-9]/i, "no protocol-relative URL");
  // Every src/href attribute stays in the page.
  const refs = [...html.matchAll(/\b(?:src|href)\s*=\s*"([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(refs, ["data:,"]);
  assert.equal(html.match(/<script\b/g)?.length, 1);
  assert.equal(html.match(/<style\b/g)?.length, 1);
  assert.match(html, /<script type="module" nonce="n0nce">/);
  assert.match(html, /<style nonce="n0nce">/);
  assert.doesNotMatch(html, /__[A-Z_]+__/, "every placeholder is filled");
  // Only the page's own endpoints are fetched.
  const fetched = [...html.matchAll(/fetch\("([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(fetched.sort(), ["/reload"]);
  assert.deepEqual([...html.matchAll(/getJson\("([^"]+)"\)/g)].map((m) => m[1]).sort(), [
    "/denials",
    "/status",
  ]);
  assert.match(html, /name="viewport" content="width=device-width, initial-scale=1"/);
});

Deno.test("dashboardResponse() inlines the built client.js verbatim, as a module script", async () => {
  const script = await Deno.readTextFile(CLIENT_BUILD);
  const html = await dashboardResponse({ allowReload: false, nonce: "n0nce" }).text();
  const inline = html.match(/<script type="module" nonce="n0nce">\n([^]*)<\/script>/)?.[1];
  assert.equal(inline, script);
});

Deno.test("client.js is the build of client.ts (else run `deno task dashboard`)", async () => {
  const built = await buildClient(await Deno.readTextFile(CLIENT_SOURCE));
  assert.ok(
    (await Deno.readTextFile(CLIENT_BUILD)) === built,
    "lib/admin/dashboard/client.js is stale: run `deno task dashboard` and commit it",
  );
  assert.match(built, /^\/\/ Built from client\.ts/);
  assert.doesNotMatch(built, /reference lib=|^import |: HTMLElement/m, "no TypeScript left");
});

Deno.test("buildClient() strips types, and refuses what the page could not run inline", async (t) => {
  await t.step("erasable TypeScript: types stripped, then formatted", async () => {
    assert.equal(
      await buildClient('import type { A } from "./a.ts";\nconst x: A = 1 as A;\n'),
      "// Built from client.ts by `deno task dashboard`: edit client.ts, not this file.\n\n" +
        "const x = 1;\n",
    );
  });
  await t.step("a value import or an export: refused", async () => {
    await assert.rejects(() => buildClient('import { a } from "./a.ts";\n'), /import types only/);
    await assert.rejects(() => buildClient("export const a = 1;\n"), /export nothing/);
  });
  await t.step("TypeScript that needs a compiler (enum): refused", async () => {
    await assert.rejects(() => buildClient("enum E { A }\n"), SyntaxError);
  });
  await t.step("text that would end the <script> element: refused", async () => {
    await assert.rejects(() => buildClient('const s = "</script>";\n'), /must not contain/);
    await assert.rejects(() => buildClient('const s = "<!--";\n'), /must not contain/);
  });
});

Deno.test("dashboardResponse() refuses a nonce that is not base64", () => {
  assert.throws(
    () => dashboardResponse({ allowReload: false, nonce: '"><script>' }),
    TypeError,
  );
});

Deno.test("AdminServer dashboard shows the reload button only with allow_reload", async (t) => {
  for (const allow of [false, true]) {
    await t.step(`allow_reload = ${allow}`, async () => {
      await withAdmin(allow, async (origin) => {
        const html = await (await fetch(`${origin}/`)).text();
        assert.equal(html.includes('id="reload"'), allow);
        // The button names the header the endpoint requires of it.
        assert.equal(html.includes(`data-header="${RELOAD_HEADER}"`), allow);
        assert.equal(html.includes(`data-reload="${allow ? "on" : "off"}"`), true);
      });
    });
  }
});

Deno.test("AdminServer /denials lists the target's refusals, newest first, capped", async () => {
  await withAdmin(false, async (origin, target, admin) => {
    const empty = await fetch(`${origin}/denials`);
    assert.match(empty.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(await empty.json(), { denials: [] });

    target.deny({ reason: "limit_concurrency", client: "alice", group: "echo", remote: "1:1" });
    target.deny({
      reason: "unknown_identity",
      remote: "127.0.0.1:2",
      identity: { cn: "mallory", serial: "1f", spkiSha256: "ab", sanUri: [], sanDns: [] },
    });
    target.deny({
      reason: "bad_certificate",
      remote: "127.0.0.1:3",
      identity: { serial: "2a", spkiSha256: "cd", sanUri: ["spiffe://x/y"], sanDns: [] },
      detail: "x".repeat(1000),
    });
    target.deny({ no: "reason" }); // Not a deny record: ignored.
    const { denials } = await (await fetch(`${origin}/denials`)).json();
    assert.equal(denials.length, 3);
    assert.deepEqual(denials[2], {
      at: "2026-11-22T10:00:01.000Z",
      reason: "limit_concurrency",
      remote: "1:1",
      client: "alice",
      group: "echo",
    });
    assert.deepEqual(denials[1], {
      at: "2026-11-22T10:00:02.000Z",
      reason: "unknown_identity",
      remote: "127.0.0.1:2",
      identity: "CN=mallory",
    });
    assert.equal(denials[0].identity, "spiffe://x/y");
    assert.equal(denials[0].detail.length, 300);

    for (let i = 0; i < RECENT_DENIALS + 5; i++) {
      target.deny({ reason: "limit_rate", client: `c${i}`, remote: "127.0.0.1:4" });
    }
    const kept = admin.recentDenials();
    assert.equal(kept.length, RECENT_DENIALS);
    assert.equal(kept[0]!.client, `c${RECENT_DENIALS + 4}`);
    assert.equal(kept.at(-1)!.client, "c5");

    await admin.close();
    target.deny({ reason: "limit_rate", client: "late", remote: "127.0.0.1:5" });
    assert.equal(admin.recentDenials()[0]!.client, kept[0]!.client, "no listener after close");
  });
});

Deno.test("AdminServer /denials keeps the time a refusal was made, when its record has one", async () => {
  await withAdmin(false, async (origin, target) => {
    // A worker's refusal reaches the primary in a batch, later than it was logged.
    const at = Date.parse("2026-11-22T09:59:59.750Z");
    target.deny({ reason: "server_full", remote: "127.0.0.1:6", at });
    target.deny({ reason: "server_full", remote: "127.0.0.1:7", at: "not a time" });
    const { denials } = await (await fetch(`${origin}/denials`)).json();
    assert.equal(denials[1].at, "2026-11-22T09:59:59.750Z");
    // Without a time of its own, the admin's clock.
    assert.equal(denials[0].at, "2026-11-22T10:00:01.000Z");
  });
});

Deno.test("AdminServer /denials is empty for a target that dispatches no events", async () => {
  const target = {
    state: "serving",
    metrics: { render: () => "" },
    status: () => ({}),
    reload: () => Promise.resolve(),
  };
  await using admin = AdminServer.start(target, { listen: "127.0.0.1:0" });
  const response = await fetch(`http://${formatHostPort(admin.address)}/denials`);
  assert.deepEqual(await response.json(), { denials: [] });
});

Deno.test("AdminServer POST /reload accepts the dashboard's same-origin request only", async (t) => {
  await withAdmin(true, async (origin, target, admin) => {
    const port = admin.address.port;
    const reload = (headers: Record<string, string>) =>
      fetch(`${origin}/reload`, { method: "POST", headers }).then(async (r) => ({
        status: r.status,
        body: await r.json(),
      }));

    await t.step("from the dashboard: reloads", async () => {
      const ok = await reload({
        origin,
        [RELOAD_HEADER]: "1",
        "sec-fetch-site": "same-origin",
      });
      assert.deepEqual(ok, { status: 200, body: { outcome: "success" } });
      assert.equal(target.reloads, 1);
    });

    await t.step("without the header (a form post, a simple request): refused", async () => {
      const refused = await reload({ origin });
      assert.equal(refused.status, 403);
      assert.match(refused.body.error, /accepted only from the dashboard/);
    });

    await t.step("from another origin: refused", async () => {
      const refused = await reload({ origin: "https://evil.example", [RELOAD_HEADER]: "1" });
      assert.equal(refused.status, 403);
      assert.match(refused.body.error, /origin https:\/\/evil\.example does not match the Host/);
    });

    await t.step("marked cross-site by the browser: refused", async () => {
      const refused = await reload({
        origin,
        [RELOAD_HEADER]: "1",
        "sec-fetch-site": "cross-site",
      });
      assert.equal(refused.status, 403);
      assert.match(refused.body.error, /another site/);
    });

    await t.step("a DNS-rebinding page (Host is a name it controls): refused", async () => {
      const name = `evil.example:${port}`;
      const refused = await rawRequest(port, [
        "POST /reload HTTP/1.1",
        `host: ${name}`,
        `origin: http://${name}`,
        `${RELOAD_HEADER}: 1`,
        "content-length: 0",
      ]);
      // Refused before any route, as every request naming that Host is.
      assert.equal(refused.status, 421);
      assert.match(refused.body, /^Misdirected request/);
      assert.equal(target.reloads, 1);
    });

    await t.step("by localhost on another port (an SSH tunnel): reloads", async () => {
      const tunnel = `localhost:${port === 65535 ? 1 : port + 1}`;
      const ok = await rawRequest(port, [
        "POST /reload HTTP/1.1",
        `host: ${tunnel}`,
        `origin: http://${tunnel}`,
        `${RELOAD_HEADER}: 1`,
        "content-length: 0",
      ]);
      assert.equal(ok.status, 200);
      assert.equal(target.reloads, 2);
    });

    await t.step("by IPv6 literal, Origin for another host: refused", async () => {
      const refused = await rawRequest(port, [
        "POST /reload HTTP/1.1",
        `host: [::1]:${port}`,
        `origin: http://127.0.0.1:${port}`,
        `${RELOAD_HEADER}: 1`,
        "content-length: 0",
      ]);
      assert.equal(refused.status, 403);
      assert.match(
        JSON.parse(refused.body).error,
        /does not match the Host it was sent to \(http:\/\/\[::1\]:/,
      );
    });

    await t.step("without Origin (curl): reloads, as before", async () => {
      const ok = await reload({});
      assert.equal(ok.status, 200);
      assert.equal(target.reloads, 3);
    });
  });
});

Deno.test("AdminServer POST /reload from the dashboard is refused when allow_reload is off", async () => {
  await withAdmin(false, async (origin, target) => {
    const response = await fetch(`${origin}/reload`, {
      method: "POST",
      headers: { origin, [RELOAD_HEADER]: "1", "sec-fetch-site": "same-origin" },
    });
    assert.equal(response.status, 403);
    assert.match((await response.json()).error, /allow_reload = true/);
    assert.equal(target.reloads, 0);
  });
});
