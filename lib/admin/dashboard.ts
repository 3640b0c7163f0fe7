/**
 * The admin dashboard: one self-contained HTML page (inline CSS, inline script,
 * inline SVG plots; nothing loaded from anywhere else) that the admin endpoint
 * serves at `/`. The page polls `/status` and `/denials` every second and keeps
 * the last five minutes of samples in memory to compute rates and draw its plots.
 *
 * The response carries a Content-Security-Policy that lets the page run only its
 * own inline script and style (by a per-response nonce) and talk only to the
 * admin endpoint it came from.
 *
 * When the admin endpoint asks for a token, the page holds no data until the
 * operator enters it in the page's form: it keeps the token in `sessionStorage`
 * (this tab only, gone when the tab closes) and sends it as
 * `Authorization: Bearer TOKEN` on its own requests. A refused token brings the
 * form back. No cookie is set, so no other page can make the browser send it.
 *
 * @module
 */

/** The header the dashboard's reload button sends; the admin endpoint requires it of browsers. */
export const RELOAD_HEADER = "x-mtlb-reload";

/** Options of {@linkcode dashboardResponse}. */
export interface DashboardOptions {
  /** Whether the page shows the reload button (`[admin] allow_reload`). */
  allowReload: boolean;
  /**
   * Whether the admin endpoint asks for a bearer token: the page asks for it
   * before its first request.
   *
   * @default {false}
   */
  tokenRequired?: boolean;
  /**
   * The CSP nonce of the inline script and style; at least 16 random bytes,
   * base64.
   *
   * @default {a fresh random nonce}
   */
  nonce?: string;
}

/**
 * The Content-Security-Policy of the dashboard: only its own nonce-tagged inline
 * script and style run, requests go to its own origin only, nothing else loads,
 * and no other site may frame it.
 *
 * @param nonce The nonce of the page's `<script>` and `<style>`.
 * @returns The header value.
 */
export function dashboardCsp(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/**
 * Builds the dashboard page.
 *
 * @param options Whether to show the reload button and ask for a token, and the CSP nonce.
 * @returns The `200` response: the HTML page with its security headers.
 * @throws {TypeError} When `options.nonce` is not base64 text.
 */
export function dashboardResponse(options: DashboardOptions): Response {
  const nonce = options.nonce ?? randomNonce();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(nonce)) {
    throw new TypeError(
      `Cannot build the dashboard: the nonce must be base64, received "${nonce}"`,
    );
  }
  const reload = options.allowReload
    ? `<button type="button" id="reload" class="button">Reload config</button>`
    : "";
  const html = PAGE
    .replaceAll("__NONCE__", nonce)
    .replace("__RELOAD_STATE__", options.allowReload ? "on" : "off")
    .replace("__TOKEN_STATE__", options.tokenRequired ? "on" : "off")
    .replace("__RELOAD_BUTTON__", reload);
  return new Response(html, {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy": dashboardCsp(nonce),
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-resource-policy": "same-origin",
    },
  });
}

function randomNonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...bytes));
}

const STYLE = `
:root {
  color-scheme: light dark;
  --bg: #f4f5f7; --panel: #ffffff; --text: #1d2330; --muted: #5f6b7a; --line: #dde1e7;
  --ok: #1a7f37; --ok-bg: #dcf5e3; --bad: #c62828; --bad-bg: #fde3e3;
  --warn: #9a6700; --warn-bg: #fff1c7; --idle: #57606a; --idle-bg: #eaeef2;
  --accent: #2f6fdb; --accent2: #c2410c; --accent3: #7c3aed;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1217; --panel: #171b22; --text: #e3e7ee; --muted: #95a0af; --line: #2a303a;
    --ok: #4ade80; --ok-bg: #12301e; --bad: #f87171; --bad-bg: #3a1616;
    --warn: #fbbf24; --warn-bg: #3a2c0b; --idle: #9aa4b2; --idle-bg: #252b35;
    --accent: #60a5fa; --accent2: #fb923c; --accent3: #a78bfa;
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
}
header {
  position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 8px 16px;
  align-items: center; justify-content: space-between; padding: 10px 16px;
  background: var(--panel); border-bottom: 1px solid var(--line);
}
.brand { display: flex; align-items: center; gap: 10px; }
h1 { font-size: 18px; margin: 0; letter-spacing: .02em; }
h2 { font-size: 15px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 14px 16px 40px; display: grid; gap: 14px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; min-width: 0; }
.row { display: grid; gap: 14px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
.cards { display: grid; gap: 10px; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; }
.card .sub { color: var(--muted); font-size: 12px; }
.plots { display: grid; gap: 10px; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
figure { margin: 0; }
figcaption { display: flex; justify-content: space-between; gap: 10px; font-size: 12px; color: var(--muted); }
figcaption b { color: var(--text); font-size: 13px; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 12px; font-size: 12px; min-height: 18px; }
.legend span::before { content: ""; display: inline-block; width: 10px; height: 3px; margin: 0 4px 3px 0; border-radius: 2px; background: currentColor; vertical-align: middle; }
.s1 { color: var(--accent); } .s2 { color: var(--accent2); } .s3 { color: var(--accent3); }
svg.plot { display: block; width: 100%; height: 110px; margin-top: 6px; background: var(--bg); border-radius: 4px; }
svg.plot polyline { fill: none; stroke: currentColor; stroke-width: 1.6; stroke-linejoin: round; vector-effect: non-scaling-stroke; }
svg.plot line { stroke: var(--line); stroke-width: 1; vector-effect: non-scaling-stroke; }
.axis { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-top: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 500; font-size: 12px; border-top: 0; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; white-space: nowrap; background: var(--idle-bg); color: var(--idle); }
.ok { background: var(--ok-bg); color: var(--ok); }
.bad { background: var(--bad-bg); color: var(--bad); }
.warn { background: var(--warn-bg); color: var(--warn); }
.text-ok { color: var(--ok); } .text-bad { color: var(--bad); } .text-warn { color: var(--warn); }
table.upstreams { table-layout: fixed; }
table.upstreams td { overflow-wrap: anywhere; }
table.upstreams th:first-child { width: 24%; }
table.upstreams th:nth-child(2) { width: 26%; }
table.upstreams th.num { width: 84px; }
.group + .group { margin-top: 14px; padding-top: 12px; border-top: 1px dashed var(--line); }
.group-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 12px; margin-bottom: 4px; }
.chip { font-size: 12px; color: var(--muted); border: 1px solid var(--line); border-radius: 4px; padding: 0 6px; }
.meter { position: relative; height: 6px; min-width: 80px; border-radius: 3px; background: var(--idle-bg); margin-top: 4px; overflow: hidden; }
.meter > div { position: absolute; inset: 0 auto 0 0; background: var(--ok); }
.meter.warn > div { background: var(--warn); }
.meter.bad > div { background: var(--bad); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
.button { font: inherit; padding: 5px 12px; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
.button:disabled { opacity: .6; cursor: progress; }
.live { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; font-size: 12px; color: var(--muted); }
.dot { width: 8px; height: 8px; border-radius: 50%; background: var(--idle); }
.dot.ok { background: var(--ok); } .dot.bad { background: var(--bad); }
.empty { color: var(--muted); padding: 6px 0; }
#login form { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
#login input { font: inherit; padding: 5px 8px; min-width: 0; flex: 1 1 240px; max-width: 420px; border-radius: 6px; border: 1px solid var(--line); background: var(--bg); color: var(--text); }
@media (max-width: 640px) {
  main { padding: 10px 8px 30px; gap: 10px; }
  .panel { padding: 10px; }
  .row { grid-template-columns: 1fr; }
  th, td { padding: 5px 6px; }
  table.stack thead { display: none; }
  table.stack tr { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 3px 10px; padding: 8px 0; border-top: 1px solid var(--line); }
  table.stack tbody tr:first-child { border-top: 0; }
  table.stack td { border: 0; padding: 0; text-align: left; }
  table.stack td.wide { grid-column: 1 / -1; }
  table.stack td[data-label]::before { content: attr(data-label) " "; color: var(--muted); font-size: 12px; font-weight: 400; }
}
`;

// The page script: plain ES2017, no template literals (it lives in one).
const SCRIPT = `
(function () {
  "use strict";
  var POLL_MS = 1000;
  var WINDOW_MS = 5 * 60 * 1000;
  var DENIALS_SHOWN = 10;
  var reloadAllowed = document.body.getAttribute("data-reload") === "on";
  var tokenRequired = document.body.getAttribute("data-token") === "on";
  var TOKEN_KEY = "mtlb-admin-token";
  var samples = [];
  var prev = null;
  var skewMs = 0;
  var timer = 0;
  var inflight = false;
  var lastOk = 0;
  var lastError = "";

  function byId(id) { return document.getElementById(id); }
  function h(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      parent.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return parent;
  }
  function td(text, cls) { return h("td", cls, text); }
  function th(text, cls) { return h("th", cls, text); }
  function labelled(cell, label) { cell.setAttribute("data-label", label); return cell; }
  function badge(text, cls) { return h("span", "badge " + (cls || ""), text); }
  function sum(record) {
    var total = 0;
    for (var k in record) if (typeof record[k] === "number") total += record[k];
    return total;
  }
  function now() { return Date.now() + skewMs; }

  function scaled(v, units, base) {
    var i = 0;
    while (Math.abs(v) >= base && i < units.length - 1) { v /= base; i++; }
    var digits = i === 0 || Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return v.toFixed(digits) + " " + units[i];
  }
  function fmtBps(v) { return v === null || v === undefined ? "\\u2014" : scaled(v, ["B/s", "kB/s", "MB/s", "GB/s", "TB/s"], 1000); }
  function fmtBytes(v) { return scaled(v, ["B", "kB", "MB", "GB", "TB", "PB"], 1000); }
  function fmtRate(v) {
    if (v === null || v === undefined) return "\\u2014";
    return (v >= 100 ? Math.round(v) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + "/s";
  }
  function fmtInt(v) { return typeof v === "number" ? v.toLocaleString("en-US") : "\\u2014"; }
  function fmtSpan(ms) {
    var s = Math.abs(ms) / 1000;
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function fmtAgo(iso) {
    var ms = now() - Date.parse(iso);
    if (!isFinite(ms)) return "";
    return ms < 0 ? "in " + fmtSpan(ms) : fmtSpan(ms) + " ago";
  }
  function fmtTime(iso) {
    var d = new Date(iso);
    if (!isFinite(d.getTime())) return String(iso);
    var today = new Date(now()).toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }
  function fmtDate(iso) {
    var d = new Date(iso);
    return isFinite(d.getTime()) ? d.toISOString().slice(0, 16).replace("T", " ") + " UTC" : String(iso);
  }
  function timeCell(iso) {
    var cell = td(fmtTime(iso));
    cell.title = iso;
    return cell;
  }

  // Counters of one poll; rates come from the difference between two polls.
  function snapshot(status, t) {
    var snap = { t: t, accepted: status.connections.accepted, denied: sum(status.connections.denied),
      handshake: sum(status.connections.handshakeFailures), bin: 0, bout: 0, groups: {}, upstreams: {} };
    status.groups.forEach(function (g) {
      snap.bin += g.bytesFromClient;
      snap.bout += g.bytesFromUpstream;
      snap.groups[g.name] = { accepted: g.accepted, bin: g.bytesFromClient, bout: g.bytesFromUpstream };
      g.upstreams.forEach(function (u) {
        if (typeof u.accepted === "number") snap.upstreams[g.name + " " + u.address] = u.accepted;
      });
    });
    return snap;
  }
  // A counter that went down was reset (a group removed and added again): no rate.
  function rate(cur, old, dt) {
    if (typeof cur !== "number" || typeof old !== "number" || dt <= 0) return null;
    return cur >= old ? (cur - old) / dt : null;
  }
  function rates(cur, old) {
    if (old === null) return null;
    var dt = (cur.t - old.t) / 1000;
    var r = { conn: rate(cur.accepted, old.accepted, dt), denied: rate(cur.denied + cur.handshake, old.denied + old.handshake, dt),
      bin: rate(cur.bin, old.bin, dt), bout: rate(cur.bout, old.bout, dt), groups: {}, upstreams: {} };
    for (var name in cur.groups) {
      var g = cur.groups[name], o = old.groups[name];
      r.groups[name] = o === undefined ? null : { conn: rate(g.accepted, o.accepted, dt), bin: rate(g.bin, o.bin, dt), bout: rate(g.bout, o.bout, dt) };
    }
    for (var key in cur.upstreams) r.upstreams[key] = rate(cur.upstreams[key], old.upstreams[key], dt);
    return r;
  }

  function card(label, value, sub, id) {
    var c = h("div", "card");
    if (id) c.id = id;
    return add(c, h("div", "label", label), h("div", "value", value), sub ? h("div", "sub", sub) : null);
  }

  function renderHeader(status) {
    var state = byId("state");
    state.textContent = status.state;
    state.className = "badge " + (status.state === "serving" ? "ok" : status.state === "draining" ? "warn" : "bad");
    state.setAttribute("data-state", status.state);
    document.title = "mtlb \\u00b7 " + status.state;
  }

  function renderCards(status, r) {
    var c = status.connections;
    var upstreams = 0, healthy = 0;
    status.groups.forEach(function (g) {
      g.upstreams.forEach(function (u) { if (!u.removed) { upstreams++; if (u.healthy) healthy++; } });
    });
    var openSub = "open " + fmtInt(c.open) + (typeof c.max === "number" ? " of max " + fmtInt(c.max) : "");
    var hc = card("Healthy upstreams", healthy + " / " + upstreams, status.groups.length + (status.groups.length === 1 ? " group" : " groups"), "card-health");
    hc.querySelector(".value").className = "value " + (healthy === upstreams ? "text-ok" : healthy === 0 ? "text-bad" : "text-warn");
    byId("cards").replaceChildren(
      hc,
      card("Active connections", fmtInt(c.active), openSub, "card-active"),
      card("New connections", fmtRate(r && r.conn), fmtInt(c.accepted) + " since start"),
      card("Refused", fmtRate(r && r.denied), fmtInt(sum(c.denied)) + " denied, " + fmtInt(sum(c.handshakeFailures)) + " failed handshakes"),
      card("In (client \\u2192 upstream)", fmtBps(r && r.bin), fmtBytes(prev ? prev.bin : 0) + " total", "card-in"),
      card("Out (upstream \\u2192 client)", fmtBps(r && r.bout), fmtBytes(prev ? prev.bout : 0) + " total", "card-out")
    );
  }

  // Plots: samples of the last WINDOW_MS, a gap where polling stopped.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }
  var SVG = "http://www.w3.org/2000/svg";
  function plot(id, series, fmt) {
    var svg = byId(id);
    var end = Date.now(), start = end - WINDOW_MS;
    var max = 0;
    samples.forEach(function (s) { series.forEach(function (k) { if (s[k.key] > max) max = s[k.key]; }); });
    max = niceMax(max);
    var nodes = [];
    [0.25, 0.5, 0.75].forEach(function (f) {
      var grid = document.createElementNS(SVG, "line");
      grid.setAttribute("x1", "0"); grid.setAttribute("x2", "300");
      grid.setAttribute("y1", String(100 * f)); grid.setAttribute("y2", String(100 * f));
      nodes.push(grid);
    });
    series.forEach(function (k) {
      var points = [], last = 0;
      var flush = function () {
        if (points.length === 1) points.push((parseFloat(points[0]) + 0.5).toFixed(1) + "," + points[0].split(",")[1]);
        if (points.length > 1) {
          var line = document.createElementNS(SVG, "polyline");
          line.setAttribute("points", points.join(" "));
          line.setAttribute("class", k.cls);
          nodes.push(line);
        }
        points = [];
      };
      samples.forEach(function (s) {
        if (s[k.key] === null || s[k.key] === undefined) { flush(); return; }
        if (last && s.t - last > 5 * POLL_MS) flush();
        last = s.t;
        var x = (s.t - start) / WINDOW_MS * 300;
        var y = 98 - s[k.key] / max * 94;
        points.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      flush();
    });
    svg.replaceChildren.apply(svg, nodes);
    var cap = byId(id + "-max");
    cap.textContent = "scale " + fmt(max);
    var latest = samples[samples.length - 1];
    series.forEach(function (k) {
      var span = byId(id + "-" + k.key);
      span.textContent = k.label + " " + (latest ? fmt(latest[k.key]) : "\\u2014");
    });
  }
  function renderPlots() {
    plot("plot-conn", [{ key: "active", cls: "s1", label: "active" }], function (v) { return v === null || v === undefined ? "\\u2014" : fmtInt(Math.round(v)); });
    plot("plot-rate", [{ key: "conn", cls: "s1", label: "new" }, { key: "denied", cls: "s2", label: "refused" }], fmtRate);
    plot("plot-bytes", [{ key: "bin", cls: "s1", label: "in" }, { key: "bout", cls: "s3", label: "out" }], fmtBps);
  }

  function healthCell(u) {
    var cell = h("td");
    var state = u.removed ? "removed" : u.state;
    add(cell, badge(state, state === "healthy" ? "ok" : state === "unhealthy" ? "bad" : ""));
    if (u.reason && state !== "healthy") add(cell, " ", h("span", "small muted reason", "probe: " + u.reason));
    if (u.since) {
      var since = h("div", "small muted", "since " + fmtAgo(u.since).replace(" ago", ""));
      since.title = u.since;
      add(cell, since);
    }
    var e = u.ejection;
    if (e) {
      // Out of rotation for its failures on traffic until a set time (see [outlier]).
      var ejected = add(h("div", "ejection"), badge("ejected", "warn"),
        " ", h("span", "small muted reason", e.reason));
      var until = h("div", "small muted until", "until " + fmtTime(e.until) + " (" + fmtAgo(e.until) + ")");
      until.title = e.until + " \u00b7 ejection " + e.ejections + " \u00b7 since " + e.since;
      add(cell, ejected, until);
    }
    return cell;
  }
  function panicBadge() {
    var b = badge("panic mode", "bad panic");
    b.title = "Too few upstreams available: ejected ones take connections again";
    return b;
  }
  function probeCell(p) {
    var cell = h("td", "small");
    if (!p) return add(cell, h("span", "muted", "not probed yet"));
    add(cell, h("span", p.ok ? "text-ok" : "text-bad", p.ok ? "ok" : "failed"));
    add(cell, " " + p.reason);
    if (typeof p.latencyMs === "number") add(cell, h("span", "muted", " \\u00b7 " + p.latencyMs.toFixed(1) + " ms"));
    var at = h("div", "muted", fmtAgo(p.at));
    at.title = p.at;
    return add(cell, at);
  }
  function renderGroups(status, r) {
    var list = byId("groups");
    var nodes = status.groups.map(function (g) {
      var section = h("section", "group");
      section.setAttribute("data-group", g.name);
      var gr = r && r.groups[g.name];
      var healthy = g.upstreams.filter(function (u) { return u.healthy; }).length;
      var live = g.upstreams.filter(function (u) { return !u.removed; }).length;
      var head = add(h("div", "group-head"), h("h3", "", g.name),
        badge(healthy + " / " + live + " healthy", healthy === live ? "ok" : healthy === 0 ? "bad" : "warn"),
        h("span", "chip", g.listen ? "listener " + g.listen : "shared listener"),
        g.proxyProtocol ? h("span", "chip", "PROXY " + g.proxyProtocol) : null,
        g.panic ? panicBadge() : null,
        h("span", "small muted", fmtInt(g.accepted) + " accepted \\u00b7 " + fmtRate(gr && gr.conn) +
          " \\u00b7 in " + fmtBps(gr && gr.bin) + " \\u00b7 out " + fmtBps(gr && gr.bout)));
      // Connections per second per upstream, when the status counts them.
      var counted = g.upstreams.some(function (u) { return typeof u.accepted === "number"; });
      var table = h("table", "stack upstreams");
      add(table, add(h("thead"), add(h("tr"), th("Upstream"), th("Health"), th("Last probe"),
        th("Active", "num"), counted ? th("Conn/s", "num") : null, th("Weight", "num"))));
      var body = h("tbody");
      g.upstreams.forEach(function (u) {
        var row = h("tr");
        row.setAttribute("data-upstream", u.address);
        row.setAttribute("data-state", u.removed ? "removed" : u.state);
        if (u.ejection) row.setAttribute("data-ejected", u.ejection.until);
        var ur = r ? r.upstreams[g.name + " " + u.address] : null;
        var rateCell = null;
        if (counted) {
          rateCell = labelled(td(fmtRate(ur), "num"), "conn/s");
          rateCell.title = fmtInt(u.accepted) + " since start";
        }
        var probe = probeCell(u.lastProbe);
        probe.className += " wide";
        add(body, add(row, add(h("td"), h("code", "", u.address)), healthCell(u), probe,
          labelled(td(fmtInt(u.active), "num active"), "active"), rateCell, labelled(td(u.weight, "num"), "weight")));
      });
      add(table, body);
      return add(section, head, add(h("div", "scroll"), table));
    });
    if (nodes.length === 0) nodes = [h("div", "empty", "No groups configured.")];
    list.replaceChildren.apply(list, nodes);
  }

  function renderClients(status) {
    var body = byId("clients");
    var rows = status.clients.map(function (c) {
      var row = h("tr");
      row.setAttribute("data-client", c.name);
      var share = c.maxConnections > 0 ? c.active / c.maxConnections : 0;
      var meter = h("div", "meter" + (share >= 1 ? " bad" : share >= 0.8 ? " warn" : ""));
      var fill = h("div");
      fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
      meter.appendChild(fill);
      var use = add(h("td", "num"), h("span", "use", c.active + " / " + c.maxConnections), meter);
      return add(row, add(h("td"), h("b", "", c.name)), td(c.groups.join(", "), "small"), use);
    });
    if (rows.length === 0) rows = [add(h("tr"), add(h("td", "empty", "No clients configured."), null))];
    body.replaceChildren.apply(body, rows);
  }

  function renderDenials(list, status) {
    var body = byId("denials");
    if (list === null) {
      body.replaceChildren(add(h("tr"), h("td", "empty", "Recent refusals are not available.")));
    } else if (list.length === 0) {
      body.replaceChildren(add(h("tr"), h("td", "empty", "No refusals since the admin endpoint started.")));
    } else {
      body.replaceChildren.apply(body, list.slice(0, DENIALS_SHOWN).map(function (d) {
        var row = h("tr");
        row.setAttribute("data-reason", d.reason);
        var who = d.client ? h("b", "", d.client) : d.identity ? h("span", "", d.identity) : h("span", "muted", "unidentified");
        var reason = add(h("td"), badge(d.stage === "handshake" ? "handshake: " + d.reason : d.reason, "bad"));
        if (d.detail) add(reason, h("div", "small muted", d.detail));
        return add(row, timeCell(d.at), reason, labelled(add(h("td"), who), "client"),
          labelled(td(d.group || "\\u2014", "small"), "group"), labelled(add(h("td", "small wide"), h("code", "", d.remote)), "from"));
      }));
    }
    var totals = byId("deny-totals");
    var parts = [];
    var more = list === null ? 0 : list.length - DENIALS_SHOWN;
    var add2 = function (record, prefix) {
      Object.keys(record).sort().forEach(function (k) { if (record[k] > 0) parts.push(prefix + k + " " + fmtInt(record[k])); });
    };
    add2(status.connections.denied, "");
    add2(status.connections.handshakeFailures, "handshake ");
    totals.textContent = (more > 0 ? "The latest " + DENIALS_SHOWN + " shown; " + list.length + " in /denials. " : "") +
      (parts.length === 0 ? "Since start: none." : "Since start: " + parts.join(" \\u00b7 ") + ".");
  }

  function renderConfig(status) {
    var dl = byId("config");
    var items = [["File", h("code", "", status.config.path)],
      ["Loaded", add(h("span"), fmtTime(status.config.loadedAt), h("span", "muted", " (" + fmtAgo(status.config.loadedAt) + ")"))]];
    if (status.startedAt) items.push(["Started", add(h("span"), fmtTime(status.startedAt), h("span", "muted", " (" + fmtAgo(status.startedAt) + ")"))]);
    if (status.lastReload) {
      var lr = status.lastReload;
      var outcome = add(h("span", "last-reload"), badge(lr.outcome, lr.outcome === "success" ? "ok" : "bad"), " " + fmtTime(lr.at));
      outcome.setAttribute("data-outcome", lr.outcome);
      if (lr.error) add(outcome, h("div", "small text-bad", lr.error));
      items.push(["Last reload", outcome]);
    } else {
      items.push(["Last reload", h("span", "muted", "none since start")]);
    }
    items.push(["Listeners", add.apply(null, [h("span", "small")].concat(status.listeners.map(function (l, i) {
      return add(h("span"), i > 0 ? ", " : "", h("code", "", l.address), l.group ? " (" + l.group + ")" : "");
    })))]);
    dl.replaceChildren.apply(dl, items.reduce(function (acc, it) { acc.push(h("dt", "", it[0]), add(h("dd"), it[1])); return acc; }, []));
  }

  function renderCertificates(status) {
    var body = byId("certs");
    var c = status.certificates || {};
    var rows = [["server", "Server certificate", c.server], ["ca", "CA bundle (earliest)", c.ca], ["crl", "CRL next update", c.crlNextUpdate]]
      .filter(function (x) { return x[2]; })
      .map(function (x) {
        var left = (Date.parse(x[2]) - now()) / 86400000;
        var cls = left < 0 ? "bad" : left < 30 ? "warn" : "ok";
        var text = left < 0 ? "expired " + fmtSpan(-left * 86400000) + " ago" : Math.floor(left) + " days left";
        var row = h("tr");
        row.setAttribute("data-cert", x[0]);
        row.setAttribute("data-level", cls);
        var date = td(fmtDate(x[2]), "small");
        date.title = x[2];
        return add(row, td(x[1]), date, add(h("td", "num"), badge(text, cls)));
      });
    if (rows.length === 0) rows = [add(h("tr"), h("td", "empty", "No expiry dates known."))];
    body.replaceChildren.apply(body, rows);
  }

  function renderLive() {
    var dot = byId("live-dot"), text = byId("live-text");
    if (lastError) {
      dot.className = "dot bad";
      text.textContent = "Cannot reach mtlb: " + lastError + (lastOk ? "; last update " + fmtSpan(Date.now() - lastOk) + " ago" : "") + ". Retrying\\u2026";
      text.className = "text-bad";
    } else {
      dot.className = "dot ok";
      text.textContent = "Live \\u00b7 updated " + new Date(lastOk).toLocaleTimeString();
      text.className = "";
    }
  }

  // The admin token: in this tab's sessionStorage only, sent as a Bearer header.
  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage off: the token lasts as long as the page */ }
    memoryToken = token;
  }
  var memoryToken = storedToken();
  function withToken(headers) {
    if (memoryToken) headers.authorization = "Bearer " + memoryToken;
    return headers;
  }
  function Unauthorized() { this.message = "the token was refused"; }
  function askToken(message) {
    var login = byId("login");
    login.hidden = false;
    byId("login-error").textContent = message || "";
    byId("state").textContent = "locked";
    byId("state").className = "badge warn";
    byId("live-dot").className = "dot";
    byId("live-text").textContent = "Enter the admin token to see the status.";
    byId("live-text").className = "";
    byId("token").focus();
  }

  function getJson(path) {
    return fetch(path, { cache: "no-store", headers: withToken({ accept: "application/json" }) }).then(function (response) {
      if (response.status === 401) throw new Unauthorized();
      if (!response.ok) throw new Error(path + " answered " + response.status);
      var date = Date.parse(response.headers.get("date") || "");
      if (isFinite(date)) {
        var skew = date - Date.now();
        skewMs = Math.abs(skew) > 3000 ? skew : 0;
      }
      return response.json();
    });
  }

  function update(status, denials) {
    var t = performance.now();
    var cur = snapshot(status, t);
    var r = rates(cur, prev);
    prev = cur;
    if (r) {
      samples.push({ t: Date.now(), active: status.connections.active, conn: r.conn, denied: r.denied, bin: r.bin, bout: r.bout });
      var cutoff = Date.now() - WINDOW_MS;
      while (samples.length > 0 && samples[0].t < cutoff) samples.shift();
    }
    renderHeader(status);
    renderCards(status, r);
    renderPlots();
    renderGroups(status, r);
    renderClients(status);
    renderDenials(denials, status);
    renderConfig(status);
    renderCertificates(status);
  }

  function poll() {
    if (inflight) return;
    inflight = true;
    clearTimeout(timer);
    var started = Date.now();
    var locked = false;
    Promise.all([getJson("/status"), getJson("/denials").then(function (d) { return d.denials; }, function (e) {
      if (e instanceof Unauthorized) throw e;
      return null;
    })])
      .then(function (results) {
        update(results[0], results[1]);
        lastOk = Date.now();
        lastError = "";
      }, function (error) {
        if (error instanceof Unauthorized) {
          locked = true;
          return;
        }
        lastError = error && error.message ? error.message : String(error);
      })
      .then(function () {
        inflight = false;
        if (locked) {
          var had = memoryToken !== "";
          storeToken("");
          askToken(had ? "The token was refused." : "");
          return;
        }
        renderLive();
        document.body.setAttribute("data-polls", String(Number(document.body.getAttribute("data-polls") || "0") + 1));
        timer = setTimeout(poll, Math.max(250, POLL_MS - (Date.now() - started)));
      });
  }

  byId("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = byId("token");
    var token = input.value.trim();
    if (!token) return;
    input.value = "";
    storeToken(token);
    byId("login").hidden = true;
    byId("state").textContent = "connecting";
    byId("state").className = "badge";
    poll();
  });

  if (reloadAllowed) {
    var button = byId("reload"), message = byId("reload-result");
    button.addEventListener("click", function () {
      button.disabled = true;
      message.className = "small muted";
      message.textContent = "Reloading\\u2026";
      var headers = withToken({});
      headers["${RELOAD_HEADER}"] = "1";
      fetch("/reload", { method: "POST", headers: headers, cache: "no-store" })
        .then(function (response) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            if (response.ok) {
              message.className = "small text-ok";
              message.textContent = "Reloaded at " + new Date().toLocaleTimeString();
            } else {
              message.className = "small text-bad";
              message.textContent = "Reload failed: " + (body.error || "HTTP " + response.status);
            }
          });
        }, function (error) {
          message.className = "small text-bad";
          message.textContent = "Reload failed: " + error.message;
        })
        .then(function () { button.disabled = false; poll(); });
    });
  }
  if (tokenRequired && !memoryToken) askToken("");
  else poll();
})();
`;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>mtlb</title>
<link rel="icon" href="data:,">
<style nonce="__NONCE__">${STYLE}</style>
</head>
<body data-reload="__RELOAD_STATE__" data-token="__TOKEN_STATE__">
<header>
  <div class="brand"><h1>mtlb</h1><span id="state" class="badge">connecting</span></div>
  <div class="live"><span id="live-dot" class="dot"></span><span id="live-text">Connecting\u2026</span>__RELOAD_BUTTON__<span id="reload-result" class="small" role="status"></span></div>
</header>
<main>
  <section id="login" class="panel" hidden><h2>Admin token</h2>
    <form id="login-form"><input id="token" type="password" autocomplete="off" spellcheck="false" aria-label="Admin token" placeholder="the token of [admin] token_file">
      <button type="submit" class="button">Open</button></form>
    <p id="login-error" class="small text-bad" role="alert"></p></section>
  <section id="cards" class="cards" aria-label="Totals"></section>
  <section class="panel" aria-label="Last five minutes">
    <div class="plots">
      <figure><figcaption><b>Active connections</b><span id="plot-conn-max"></span></figcaption>
        <div class="legend"><span id="plot-conn-active" class="s1"></span></div>
        <svg id="plot-conn" class="plot" viewBox="0 0 300 100" preserveAspectRatio="none" role="img" aria-label="Active connections over the last five minutes"></svg>
        <div class="axis"><span>\u22125 min</span><span>now</span></div></figure>
      <figure><figcaption><b>Connections per second</b><span id="plot-rate-max"></span></figcaption>
        <div class="legend"><span id="plot-rate-conn" class="s1"></span><span id="plot-rate-denied" class="s2"></span></div>
        <svg id="plot-rate" class="plot" viewBox="0 0 300 100" preserveAspectRatio="none" role="img" aria-label="New and refused connections per second over the last five minutes"></svg>
        <div class="axis"><span>\u22125 min</span><span>now</span></div></figure>
      <figure><figcaption><b>Throughput</b><span id="plot-bytes-max"></span></figcaption>
        <div class="legend"><span id="plot-bytes-bin" class="s1"></span><span id="plot-bytes-bout" class="s3"></span></div>
        <svg id="plot-bytes" class="plot" viewBox="0 0 300 100" preserveAspectRatio="none" role="img" aria-label="Bytes per second in and out over the last five minutes"></svg>
        <div class="axis"><span>\u22125 min</span><span>now</span></div></figure>
    </div>
  </section>
  <section class="panel"><h2>Groups and upstreams</h2><div id="groups"><div class="empty">Loading\u2026</div></div></section>
  <div class="row">
    <section class="panel"><h2>Clients</h2><div class="scroll"><table>
      <thead><tr><th>Client</th><th>Groups</th><th class="num">Active / cap</th></tr></thead>
      <tbody id="clients"></tbody></table></div></section>
    <section class="panel"><h2>Configuration</h2><dl id="config"></dl></section>
  </div>
  <section class="panel"><h2>Recent refusals</h2><div class="scroll"><table class="stack">
    <thead><tr><th>Time</th><th>Reason</th><th>Client</th><th>Group</th><th>From</th></tr></thead>
    <tbody id="denials"></tbody></table></div>
    <p id="deny-totals" class="small muted"></p></section>
  <section class="panel"><h2>Certificates</h2><div class="scroll"><table>
    <thead><tr><th>What</th><th>Expires</th><th class="num">Left</th></tr></thead>
    <tbody id="certs"></tbody></table></div></section>
</main>
<script nonce="__NONCE__">${SCRIPT}</script>
</body>
</html>
`;
