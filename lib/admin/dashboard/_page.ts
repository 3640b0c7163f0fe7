/**
 * The dashboard page: its HTML, its style and its script (`client.js`, built from
 * `client.ts` by `deno task dashboard`), all inline.
 *
 * @module
 */
import CLIENT_SCRIPT from "./client.js" with { type: "text" };

/** Options of {@linkcode dashboardPage}. */
export interface DashboardPageOptions {
  /** The CSP nonce of the inline script and style, already checked to be base64. */
  nonce: string;
  /** The header the reload button sends; no reload button without it. */
  reloadHeader?: string;
  /** Whether the page asks for the admin token before its first request. */
  tokenRequired: boolean;
}

/**
 * The dashboard's HTML.
 *
 * @param options The nonce, the reload header and whether a token is required.
 * @returns The page.
 */
export function dashboardPage(options: DashboardPageOptions): string {
  const { nonce, reloadHeader, tokenRequired } = options;
  const reload = reloadHeader === undefined
    ? ""
    : `<button type="button" id="reload" class="button" data-header="${reloadHeader}">Reload config</button>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>mtlb</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${STYLE}</style>
</head>
<body data-reload="${reloadHeader === undefined ? "off" : "on"}" data-token="${
    tokenRequired ? "on" : "off"
  }">
<header>
  <div class="brand"><h1>mtlb</h1><span id="state" class="badge">connecting</span></div>
  <div class="live"><span id="live-dot" class="dot"></span><span id="live-text">Connecting\u2026</span>${reload}<span id="reload-result" class="small" role="status"></span></div>
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
      <thead><tr><th>Client</th><th>Groups</th><th class="num">Active / cap</th><th class="num">Queued</th></tr></thead>
      <tbody id="clients"></tbody></table></div>
      <p id="queue-totals" class="small muted"></p></section>
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
<script type="module" nonce="${nonce}">
${CLIENT_SCRIPT}</script>
</body>
</html>
`;
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
