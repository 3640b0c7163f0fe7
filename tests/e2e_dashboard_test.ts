/**
 * The admin dashboard in a real headless Chromium (Debian's `chromium`, driven by
 * `puppeteer-core`; no browser download). Screenshots go to `test_output/`.
 *
 * Skipped, with a message, when no Chromium is installed: `.ci/run` installs it
 * with apt-get; set `MTLB_CHROMIUM` to use another binary.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
// @ts-types="./_puppeteer.d.ts"
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { AdminServer } from "../lib/admin.ts";
import { formatHostPort } from "../lib/address.ts";
import { loadTlsMaterial } from "../lib/config.ts";
import type { BalancerStatus } from "../lib/server.ts";
import { connectClient, readBytes, startBalancer, TestUpstream } from "./_harness.ts";

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
        active: 3,
        accepted: 10 * n,
        denied: { limit_concurrency: n },
        handshakeFailures: {},
      },
      listeners: [{ address: "127.0.0.1:8443" }],
      groups: [{
        name: "web",
        accepted: 10 * n,
        bytesFromClient: 5_000 * n,
        bytesFromUpstream: 2_000_000 * n,
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
            state: "unknown",
            removed: true,
            accepted: 7,
          },
        ],
      }],
      clients: [{
        name: "<img src=x onerror=alert(1)>",
        groups: ["web"],
        active: 3,
        maxConnections: 3,
      }],
      certificates: { server: iso(10 * day), ca: iso(400 * day), crlNextUpdate: iso(-day) },
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
      const level = (which: string) =>
        page.evaluate(`document.querySelector('#certs tr[data-cert="${which}"]').dataset.level`);
      assert.equal(await level("server"), "warn", "under 30 days");
      assert.equal(await level("ca"), "ok");
      assert.equal(await level("crl"), "bad", "past");
      assert.match(
        await text(page, '#config .last-reload[data-outcome="failure"]'),
        /Cannot load config: bad TOML/,
      );
      // Names from the config are text, never markup.
      assert.equal(await page.$("img"), null);
      assert.match(await text(page, "#clients"), /<img src=x onerror=alert\(1\)>/);
      assert.ok(await page.$("#clients .meter.bad"), "a client at its cap");

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
