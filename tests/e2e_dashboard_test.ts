/**
 * The admin dashboard in a real headless Chromium (Debian's `chromium`, driven by
 * `puppeteer-core`; no browser download). Screenshots go to `test_output/`.
 *
 * Skipped, with a message, when no Chromium is installed: `.ci/run` installs it
 * with apt-get; set `MTLB_CHROMIUM` to use another binary.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
// @ts-types="./_puppeteer.d.ts"
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { AdminServer } from "../lib/admin/admin_server.ts";
import { formatHostPort } from "../lib/core/address.ts";
import { loadTlsMaterial } from "../lib/config/mod.ts";
import type { BalancerStatus } from "../lib/server/status.ts";
import type { DenyRecord } from "../lib/server/records.ts";
import {
  connectClient,
  nextEvent,
  rawRequest,
  readBytes,
  startBalancer,
  TestUpstream,
} from "./_harness.ts";
import { testPki } from "./_pki_fixtures.ts";
import { lines, waitForRecord } from "../testing/lines.ts";
import { freePort } from "../testing/ports.ts";

const OUTPUT = new URL("../test_output/", import.meta.url);
/** Guard against a hang only: every wait below ends on a DOM change long before. */
const GUARD_MS = 20_000;

function findChromium(): string | undefined {
  const candidates = [
    Deno.env.get("MTLB_CHROMIUM"),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
  ];
  return candidates.find((path) => path !== undefined && path !== "" && existsSync(path));
}

const chromium = findChromium();
if (chromium === undefined) {
  console.warn(
    "e2e_dashboard_test.ts: skipped: no Chromium found (/usr/bin/chromium); install it with `apt-get install -y chromium` or set MTLB_CHROMIUM",
  );
}

async function launch(executablePath: string): Promise<Browser & AsyncDisposable> {
  const profile = await Deno.makeTempDir({ prefix: "mtlb_chromium_" });
  const browser = await puppeteer.launch({
    executablePath,
    userDataDir: profile,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      "--lang=en-US",
    ],
  });
  return Object.assign(browser, {
    [Symbol.asyncDispose]: async () => {
      await browser.close();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  });
}

/** Watches a page for script errors, CSP violations and requests to other origins. */
function watch(page: Page, origin: string): { problems: string[] } {
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(`page error: ${String(error)}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith("data:")) {
      problems.push(`request to another origin: ${url}`);
    }
  });
  return { problems };
}

/** The text of the first element matching `selector`. */
async function text(page: Page, selector: string): Promise<string> {
  return String(
    await page.evaluate(`document.querySelector(${JSON.stringify(selector)})?.textContent ?? ""`),
  );
}

function upstreamRow(address: string, state: string): string {
  return `#groups section[data-group="echo"] tr[data-upstream="${address}"][data-state="${state}"]`;
}

Deno.test({
  name: "AdminServer dashboard shows upstreams turning unhealthy live in headless Chromium",
  ignore: chromium === undefined,
  async fn() {
    await using first = await TestUpstream.start();
    await using second = await TestUpstream.start();
    await using lb = await startBalancer(
      `[server]
listen = "127.0.0.1:0"

[health]
interval = "300ms"
timeout = "1s"

[groups.echo]
upstreams = ["${first.address}", "${second.address}"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
max_connections = 4
`,
      {
        // POST /reload reads the running configuration again.
        load: async () => {
          const config = lb.balancer.config;
          return { config, tls: await loadTlsMaterial(config) };
        },
      },
    );
    await using admin = AdminServer.start(lb.balancer, {
      listen: "127.0.0.1:0",
      allowReload: () => true,
    });
    const origin = `http://${formatHostPort(admin.address)}`;

    await using browser = await launch(chromium!);
    const page = await browser.newPage();
    page.setDefaultTimeout(GUARD_MS);
    await page.setViewport({ width: 1280, height: 900 });
    const { problems } = watch(page, origin);
    await page.goto(`${origin}/`);
    await page.evaluate("window.notReloaded = true");

    // Both upstreams are listed healthy.
    await page.waitForSelector(upstreamRow(first.address, "healthy"));
    await page.waitForSelector(upstreamRow(second.address, "healthy"));
    assert.equal(await text(page, "#state"), "serving");

    // A forwarded connection shows against alice's cap; an unknown client shows as a refusal.
    const alice = await connectClient(lb.port(), lb.pki.alice);
    using _alice = { [Symbol.dispose]: () => alice.destroy() };
    alice.write("ping");
    assert.equal(new TextDecoder().decode(await readBytes(alice, 4)), "ping");
    await page.waitForFunction(
      `document.querySelector('tr[data-client="alice"] .use')?.textContent === "1 / 4"`,
    );
    const bob = await connectClient(lb.port(), lb.pki.bob);
    bob.on("error", () => {});
    await new Promise((resolve) => bob.once("close", resolve));
    await page.waitForSelector('#denials tr[data-reason="unknown_identity"]');
    assert.match(await text(page, '#denials tr[data-reason="unknown_identity"]'), /CN=bob/);

    // One upstream stops: the page marks it unhealthy on its own, without a reload.
    const stopped = second.address;
    await second.stop();
    await page.waitForSelector(upstreamRow(stopped, "unhealthy"));
    assert.ok(await page.$(upstreamRow(first.address, "healthy")), "the other stays healthy");
    const row = await text(page, upstreamRow(stopped, "unhealthy"));
    assert.match(row, /failed/, "the last probe's failure is shown");
    assert.equal(await page.evaluate("window.notReloaded"), true, "the page was not reloaded");

    // The certificate expiry dates are listed (the test PKI's are far away: no warning).
    assert.equal(
      await page.evaluate(`document.querySelector('#certs tr[data-cert="server"]').dataset.level`),
      "ok",
    );

    await Deno.mkdir(OUTPUT, { recursive: true });
    // Let the plots have a few samples for the screenshot: wait for polls, not time.
    await page.waitForFunction("Number(document.body.dataset.polls) >= 3");
    await page.screenshot({ path: new URL("dashboard.png", OUTPUT).pathname, fullPage: true });

    // The reload button works from the page itself (same-origin POST with its header).
    await page.click("#reload");
    await page.waitForSelector('#config .last-reload[data-outcome="success"]');
    assert.match(await text(page, "#reload-result"), /^Reloaded/);

    // A phone-sized screen (isMobile would make puppeteer reload the page): after the
    // next refresh, nothing is wider than the viewport.
    const polls = Number(await page.evaluate("document.body.dataset.polls"));
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2 });
    await page.waitForFunction(`Number(document.body.dataset.polls) > ${polls}`);
    const overflow = Number(
      await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth",
      ),
    );
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone's screen`);
    await page.screenshot({
      path: new URL("dashboard_phone.png", OUTPUT).pathname,
      fullPage: true,
    });

    assert.deepEqual(problems, []);
  },
});

Deno.test({
  name:
    "AdminServer dashboard shows queued connections, bandwidth, a group's cap and queue timeouts",
  ignore: chromium === undefined,
  async fn() {
    await using echo = await TestUpstream.start();
    // One connection per 20 s: the second waits its turn, the third's would come
    // after queue_timeout and is refused at once.
    await using lb = await startBalancer(`[server]
listen = "127.0.0.1:0"

[health]
interval = "1h"

[limits]
on_rate_limit = "queue"
queue_timeout = "30s"

[groups.echo]
upstreams = ["${echo.address}"]
max_connections = 4

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
connection_rate = { count = 1, per = "20s" }
bandwidth = "1MiB/s"
`);
    await using admin = AdminServer.start(lb.balancer, { listen: "127.0.0.1:0" });
    const origin = `http://${formatHostPort(admin.address)}`;
    await using browser = await launch(chromium!);
    const page = await browser.newPage();
    page.setDefaultTimeout(GUARD_MS);
    const { problems } = watch(page, origin);
    await page.goto(`${origin}/`);

    const first = await connectClient(lb.port(), lb.pki.alice);
    using _first = { [Symbol.dispose]: () => first.destroy() };
    first.write("x");
    assert.equal(new TextDecoder().decode(await readBytes(first, 1)), "x");
    const queued = await connectClient(lb.port(), lb.pki.alice);
    queued.on("error", () => {});
    using _queued = { [Symbol.dispose]: () => queued.destroy() };
    queued.write("y");
    const denied = nextEvent<DenyRecord>(lb.balancer, "deny");
    const late = await connectClient(lb.port(), lb.pki.alice);
    late.on("error", () => {});
    using _late = { [Symbol.dispose]: () => late.destroy() };
    assert.match((await denied).detail ?? "", /past queue_timeout \(30s\)/);

    await page.waitForFunction(
      `document.querySelector('tr[data-client="alice"] td.queued')?.textContent === "1"`,
    );
    assert.equal(await text(page, 'tr[data-client="alice"] .use'), "2 / 10");
    assert.equal(
      await text(page, 'tr[data-client="alice"] .bandwidth'),
      "bandwidth 1 MiB/s each way",
    );
    // The queued connection holds its slot in the group.
    assert.equal(await text(page, '[data-group="echo"] .group-cap'), "open 2 of max 4");
    assert.equal(
      await text(page, "#queue-totals"),
      "Queued now: 1 · queue timeouts since start: 1.",
    );
    assert.deepEqual(problems, []);
  },
});

/** A target whose status a test sets: every poll sees counters grow. */
class ScriptedTarget extends EventTarget {
  state = "draining";
  polls = 0;
  readonly metrics = { render: () => "" };
  constructor(readonly now: number) {
    super();
  }
  reload(): Promise<unknown> {
    return Promise.resolve();
  }
  status(): BalancerStatus & { groups: { upstreams: { accepted?: number }[] }[] } {
    const n = ++this.polls;
    const day = 86_400_000;
    const iso = (ms: number) => new Date(this.now + ms).toISOString();
    return {
      state: "draining",
      config: { path: "/etc/mtlb/lb.toml", loadedAt: iso(-3_600_000) },
      lastReload: {
        outcome: "failure",
        at: iso(-60_000),
        path: "/etc/mtlb/lb.toml",
        error: "Cannot load config: bad TOML",
      },
      connections: {
        open: 3,
        handshaking: 0,
        max: 1000,
        maxHandshakes: 500,
        active: 3,
        accepted: 10 * n,
        denied: { limit_concurrency: n },
        handshakeFailures: {},
        queueTimeouts: 2 * n,
      },
      listeners: [{ address: "127.0.0.1:8443" }],
      groups: [{
        name: "web",
        accepted: 10 * n,
        panic: true,
        bytesFromClient: 5_000 * n,
        bytesFromUpstream: 2_000_000 * n,
        open: 4,
        maxConnections: 4,
        upstreams: [
          {
            address: "10.0.0.1:80",
            weight: 2,
            active: 2,
            healthy: true,
            state: "healthy",
            accepted: 10 * n,
          },
          {
            address: "10.0.0.2:80",
            weight: 1,
            active: 1,
            healthy: false,
            state: "removed",
            removed: true,
            accepted: 7,
          },
          {
            address: "10.0.0.3:80",
            weight: 1,
            active: 0,
            healthy: false,
            state: "healthy",
            source: "srv _web._tcp.internal",
            accepted: 3,
            ejection: {
              reason: "dial_timeout",
              since: iso(-30_000),
              until: iso(45_000),
              ejections: 2,
            },
          },
        ],
        dns: [{
          source: "srv _web._tcp.internal",
          interval: 10_000,
          upstreams: ["10.0.0.3:80"],
          lookups: 12,
          failures: 1,
          resolvedAt: iso(-20_000),
          error: {
            reason: "timeout",
            message: "SRV look-up of _web._tcp.internal timed out after 5000ms",
            at: iso(-5_000),
          },
        }],
      }],
      clients: [{
        name: "<img src=x onerror=alert(1)>",
        groups: ["web"],
        active: 3,
        queued: 2,
        maxConnections: 3,
        bandwidth: 2_000_000,
      }],
      certificates: {
        server: iso(10 * day),
        ca: iso(400 * day),
        crlNextUpdate: iso(-day),
        upstreams: { db: { ca: iso(900 * day), cert: iso(-2 * day) } },
      },
      clientPolicy: {
        source: "store",
        version: 7,
        sha256: "ab".repeat(32),
        pushedAt: iso(-day),
        appliedAt: iso(-day),
        storeReachable: false,
        storeErrors: 3,
        refused: 0,
        lastError: "store: connection refused",
      },
    };
  }
}

Deno.test({
  name:
    "AdminServer dashboard computes rates, flags expiry, escapes names and notices a lost endpoint",
  ignore: chromium === undefined,
  async fn() {
    const target = new ScriptedTarget(Date.now());
    const admin = AdminServer.start(target, { listen: "127.0.0.1:0" });
    try {
      const origin = `http://${formatHostPort(admin.address)}`;
      await using browser = await launch(chromium!);
      const page = await browser.newPage();
      page.setDefaultTimeout(GUARD_MS);
      const { problems } = watch(page, origin);
      await page.goto(`${origin}/`);

      assert.equal(await page.$("#reload"), null, "no reload button without allow_reload");
      await page.waitForSelector('#state[data-state="draining"]');
      // Rates need two polls: per-upstream connections and bytes per second.
      await page.waitForFunction(
        `/^[0-9.]+\\/s$/.test(document.querySelector('tr[data-upstream="10.0.0.1:80"] td[data-label="conn/s"]')?.textContent ?? "")`,
      );
      assert.match(await text(page, "#card-out .value"), /^[0-9.]+ MB\/s$/);
      assert.equal(
        await page.evaluate(`document.querySelectorAll("#plot-rate polyline").length > 0`),
        true,
        "the plot draws lines",
      );
      assert.ok(await page.$('tr[data-upstream="10.0.0.2:80"][data-state="removed"]'));
      // An ejected upstream shows why and until when; the group shows its panic mode.
      const ejected = await text(page, 'tr[data-upstream="10.0.0.3:80"][data-ejected]');
      assert.match(ejected, /ejected dial_timeout/);
      assert.match(ejected, /until .* \(in [34]\d s\)/);
      assert.match(await text(page, '[data-group="web"] .group-head'), /panic mode/);
      // An upstream from DNS names its entry; the entry shows its last look-up.
      assert.match(ejected, /from srv _web\._tcp\.internal/);
      const dns = await text(page, '[data-group="web"] [data-dns="srv _web._tcp.internal"]');
      assert.match(dns, /^srv _web\._tcp\.internal · 1 · lookup failed \d+ s ago$/);
      // The shared client policy in force, and a store this instance cannot reach.
      const policy = await text(page, '#config .client-policy[data-version="7"]');
      assert.match(policy, /^version 7 pushed .*store unreachable.*connection refused/);
      const level = (which: string) =>
        page.evaluate(`document.querySelector('#certs tr[data-cert="${which}"]').dataset.level`);
      assert.equal(await level("server"), "warn", "under 30 days");
      assert.equal(await level("ca"), "ok");
      assert.equal(await level("crl"), "bad", "past");
      // A group's TLS to its upstreams: its CA and its client certificate.
      assert.equal(await level("upstream-ca:db"), "ok");
      assert.equal(await level("upstream-cert:db"), "bad", "expired");
      assert.match(
        await text(page, '#certs tr[data-cert="upstream-cert:db"]'),
        /^Client certificate for db.*expired 2 d ago$/,
      );
      assert.match(
        await text(page, '#config .last-reload[data-outcome="failure"]'),
        /Cannot load config: bad TOML/,
      );
      // Names from the config are text, never markup.
      assert.equal(await page.$("img"), null);
      assert.match(await text(page, "#clients"), /<img src=x onerror=alert\(1\)>/);
      assert.ok(await page.$("#clients .meter.bad"), "a client at its cap");
      // Queued connections, the client's bandwidth, the group at its cap, queue timeouts.
      assert.equal(await text(page, "#clients td.queued.text-warn"), "2");
      assert.equal(await text(page, "#clients .bandwidth"), "bandwidth 2 MB/s each way");
      assert.equal(await text(page, '[data-group="web"] .group-cap.text-bad'), "open 4 of max 4");
      assert.match(
        await text(page, "#queue-totals"),
        /^Queued now: 2 · queue timeouts since start: \d+\.$/,
      );

      await Deno.mkdir(OUTPUT, { recursive: true });
      await page.screenshot({ path: new URL("dashboard_states.png", OUTPUT).pathname });

      // The endpoint goes away: the page says so and keeps retrying.
      await admin.close();
      await page.waitForSelector("#live-dot.bad");
      assert.match(await text(page, "#live-text"), /^Cannot reach mtlb/);
      // A failed fetch is logged by the browser as a console error: not a page bug.
      assert.deepEqual(
        problems.filter((p) => !p.startsWith("console error: Failed to load resource")),
        [],
      );
    } finally {
      await admin.close();
    }
  },
});

const ROOT = fileURLToPath(new URL("..", import.meta.url));

Deno.test({
  name:
    "main.ts with workers = 2 asks for the admin token, and its dashboard works with it in headless Chromium",
  ignore: chromium === undefined,
  async fn() {
    const pki = await testPki();
    await using upstream = await TestUpstream.start();
    const [listen, adminPort] = [await freePort(), await freePort()];
    const dir = await Deno.makeTempDir({ prefix: "mtlb_admin_token_" });
    using _dir = { [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }) };
    const path = join(dir, "lb.toml");
    const tokenFile = join(dir, "admin.token");
    const first = "a".repeat(24) + crypto.randomUUID();
    const second = "b".repeat(24) + crypto.randomUUID();
    await Deno.writeTextFile(tokenFile, `${first}\n`);
    const config = `[server]
listen = "127.0.0.1:${listen}"
workers = 2

[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"

[admin]
listen = "127.0.0.1:${adminPort}"
allow_reload = true
hosts = ["mtlb.test"]
token_file = "admin.token"

[health]
interval = "1h"

[groups.echo]
upstreams = ["${upstream.address}"]

[clients.alice]
match = { cn = "alice" }
groups = ["echo"]
`;
    await Deno.writeTextFile(path, config);
    const tokenLine = config.split("\n").findIndex((l) => l.startsWith("token_file")) + 1;

    // Exactly the permissions `permissions` prints: the token file is among them.
    const printed = await new Deno.Command(Deno.execPath(), {
      args: ["run", `--allow-read=${path}`, "main.ts", "permissions", "--config", path],
      cwd: ROOT,
      stdin: "null",
    }).output();
    const [deno, run, ...rest] = new TextDecoder().decode(printed.stdout).trimEnd().split(" ");
    assert.deepEqual([deno, run], ["deno", "run"]);
    const readFlag = rest.find((arg) => arg.startsWith("--allow-read="));
    assert.ok(readFlag?.split("=")[1]?.split(",").includes(tokenFile), readFlag);

    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...rest, "--log-format", "json"],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = lines(child.stderr);
    const seen: string[] = [];
    const origin = `http://127.0.0.1:${adminPort}`;
    const get = (route: string, token?: string) =>
      fetch(`${origin}${route}`, {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      });
    const status = async (route: string, token?: string) => {
      const response = await get(route, token);
      await response.body?.cancel();
      return response.status;
    };
    try {
      await waitForRecord(reader, seen, (r) => /started: listening on/.test(String(r.message)));
      assert.ok(!seen.some((l) => /asks for no token/.test(l)), "loopback: no warning");

      // Over HTTP: /healthz is open, the rest needs the token; Host is checked first.
      assert.equal(await status("/healthz"), 200);
      assert.equal(await status("/status"), 401);
      assert.equal(await status("/metrics", second), 401);
      assert.equal(await status("/status", first), 200);
      assert.equal(await status("/metrics", first), 200);
      const named = await rawRequest(adminPort, [
        "GET /status HTTP/1.1",
        `host: mtlb.test:${adminPort}`,
        `authorization: Bearer ${first}`,
      ]);
      assert.equal(named.status, 200);
      const rebound = await rawRequest(adminPort, [
        "GET /status HTTP/1.1",
        `host: rebind.example:${adminPort}`,
        `authorization: Bearer ${first}`,
      ]);
      assert.equal(rebound.status, 421);

      await using browser = await launch(chromium!);
      const page = await browser.newPage();
      page.setDefaultTimeout(GUARD_MS);
      await page.setViewport({ width: 1280, height: 900 });
      const { problems } = watch(page, origin);
      await page.goto(`${origin}/`);
      const login = async (token: string) => {
        await page.waitForSelector("#login:not([hidden])");
        await page.type("#token", token);
        await page.keyboard.press("Enter");
      };

      // The page asks for the token before any request for data.
      await page.waitForSelector("#login:not([hidden])");
      assert.equal(await text(page, "#state"), "locked");
      assert.equal(await page.evaluate("document.body.dataset.polls ?? null"), null);

      // A wrong token is refused and asked for again.
      await login("not-the-token");
      await page.waitForFunction(
        `document.querySelector("#login-error").textContent === "The token was refused."`,
      );
      assert.equal(await page.evaluate("sessionStorage.length"), 0, "a refused token is dropped");

      // The right one: live data, kept in this tab's sessionStorage only.
      await login(first);
      await page.waitForSelector(
        `#groups tr[data-upstream="${upstream.address}"][data-state="healthy"]`,
      );
      assert.equal(await text(page, "#state"), "serving");
      assert.equal(await page.evaluate(`document.querySelector("#login").hidden`), true);
      assert.equal(await page.evaluate(`sessionStorage.getItem("mtlb-admin-token")`), first);
      assert.deepEqual(await page.cookies(), [], "no cookie");
      const polls = Number(await page.evaluate("document.body.dataset.polls"));
      await page.waitForFunction(`Number(document.body.dataset.polls) > ${polls}`);

      // A new token in the file: the page's reload button applies it, and the page
      // then asks for the new one.
      await Deno.writeTextFile(tokenFile, `  ${second}  \n`);
      await page.click("#reload");
      await page.waitForFunction(
        `/^Reloaded/.test(document.querySelector("#reload-result").textContent)`,
      );
      await page.waitForFunction(
        `document.querySelector("#login-error").textContent === "The token was refused."`,
      );
      assert.equal(await status("/status", first), 401);
      assert.equal(await status("/status", second), 200);
      await login(second);
      await page.waitForSelector('#config .last-reload[data-outcome="success"]');
      const after = Number(await page.evaluate("document.body.dataset.polls"));
      await page.waitForFunction(`Number(document.body.dataset.polls) > ${after}`);
      assert.equal(await text(page, "#state"), "serving");

      // Browsers log refused fetches as console errors: expected here, nothing else.
      assert.deepEqual(
        problems.filter((p) => !p.includes("status of 401 (Unauthorized)")),
        [],
      );

      // An empty token file fails the reload; the running token stays.
      await Deno.writeTextFile(tokenFile, "\n");
      const failed = await fetch(`${origin}/reload`, {
        method: "POST",
        headers: { authorization: `Bearer ${second}` },
      });
      assert.equal(failed.status, 500);
      assert.match(
        (await failed.json()).error,
        new RegExp(
          `lb\\.toml:${tokenLine}: "admin\\.token_file" names an empty file, ".*admin\\.token"`,
        ),
      );
      assert.equal(await status("/status", second), 200);
      assert.equal(await status("/status"), 401);

      child.kill("SIGTERM");
      await waitForRecord(reader, seen, (r) => r.message === "Stopped");
      assert.equal((await child.status).code, 0);
      assert.ok(!seen.some((l) => l.includes(first) || l.includes(second)), "never logged");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      for await (const _ of reader); // Drain stderr so its resource closes.
      await child.status;
    }
  },
});
