/// <reference lib="dom" />
/**
 * The dashboard's browser script. It polls `/status` and `/denials` every second,
 * keeps five minutes of samples to compute rates and draw the plots, and renders
 * everything as DOM nodes with text content (names from the config are never
 * markup).
 *
 * With `[admin] token_file`, it asks for the token before any request, keeps it in
 * this tab's `sessionStorage` and sends it as a Bearer header; a refused token
 * brings the form back.
 *
 * Written in erasable TypeScript with type-only imports: `deno task dashboard`
 * strips the types into `client.js`, which the page inlines as a module script.
 *
 * @module
 */
import type {
  BalancerStatus,
  ClientState,
  DnsEntryState,
  GroupState,
  UpstreamState,
} from "../../server/status.ts";
import type { RecentDenial } from "../admin_server.ts";
import type { CardOptions, Plot, Rates, Sample, Snapshot } from "./_client_types.ts";

const POLL_MS = 1000;
const WINDOW_MS = 5 * 60 * 1000;
const DENIALS_SHOWN = 10;
const TOKEN_KEY = "mtlb-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const reloadAllowed = document.body.getAttribute("data-reload") === "on";
const tokenRequired = document.body.getAttribute("data-token") === "on";

const samples: Sample[] = [];
let prev: Snapshot | null = null;
let skewMs = 0;
let timer: ReturnType<typeof setTimeout> | undefined;
let inflight = false;
let lastOk = 0;
let lastError = "";

// DOM helpers.
type Child = Node | string | number | null | undefined | false;

function byId(id: string): HTMLElement {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`The page has no #${id}`);
  return element;
}
function byIdOf<T extends HTMLElement>(id: string, type: new () => T): T {
  const element = byId(id);
  if (!(element instanceof type)) throw new Error(`The page's #${id} is not a ${type.name}`);
  return element;
}
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string | number | null,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function add<T extends Node>(parent: T, ...children: Child[]): T {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return parent;
}
function td(text?: string | number | null, cls?: string): HTMLTableCellElement {
  return h("td", cls, text);
}
function th(text: string, cls?: string): HTMLTableCellElement {
  return h("th", cls, text);
}
function labelled<T extends HTMLElement>(cell: T, label: string): T {
  cell.setAttribute("data-label", label);
  return cell;
}
function badge(text: string, cls?: string): HTMLSpanElement {
  return h("span", "badge " + (cls || ""), text);
}
function sum(record: Record<string, number>): number {
  let total = 0;
  for (const v of Object.values(record)) if (typeof v === "number") total += v;
  return total;
}
/** The server's clock, when the browser's is off by more than three seconds. */
function now(): number {
  return Date.now() + skewMs;
}

// Formatting.
function scaled(v: number, units: readonly string[]): string {
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  const digits = i === 0 || Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toFixed(digits) + " " + units[i];
}
function fmtBps(v: number | null | undefined): string {
  return v === null || v === undefined ? "\u2014" : scaled(v, ["B/s", "kB/s", "MB/s", "GB/s"]);
}
/** A configured rate as the config writes it: `1 MiB/s`, `500 KB/s`. */
function fmtLimit(v: number): string {
  const sizes = [1e9, 2 ** 30, 1e6, 2 ** 20, 1e3, 1024, 1]; // The largest unit that divides it.
  const i = sizes.findIndex((size) => v % size === 0);
  return v / sizes[i]! + " " + ["GB", "GiB", "MB", "MiB", "KB", "KiB", "B"][i] + "/s";
}
function fmtBytes(v: number): string {
  return scaled(v, ["B", "kB", "MB", "GB", "TB", "PB"]);
}
function fmtRate(v: number | null | undefined): string {
  if (v === null || v === undefined) return "\u2014";
  return (v >= 100 ? Math.round(v) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + "/s";
}
function fmtInt(v: number | null | undefined): string {
  return typeof v === "number" ? v.toLocaleString("en-US") : "\u2014";
}
function fmtSpan(ms: number): string {
  const s = Math.abs(ms) / 1000;
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function fmtAgo(iso: string): string {
  const ms = now() - Date.parse(iso);
  if (!isFinite(ms)) return "";
  return ms < 0 ? "in " + fmtSpan(ms) : fmtSpan(ms) + " ago";
}
function fmtTime(iso: string): string {
  const d = new Date(iso);
  if (!isFinite(d.getTime())) return String(iso);
  const today = new Date(now()).toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}
function fmtDate(iso: string): string {
  const d = new Date(iso);
  return isFinite(d.getTime())
    ? d.toISOString().slice(0, 16).replace("T", " ") + " UTC"
    : String(iso);
}
function timeCell(iso: string): HTMLTableCellElement {
  const cell = td(fmtTime(iso));
  cell.title = iso;
  return cell;
}

// Rates.
function snapshot(status: BalancerStatus, t: number): Snapshot {
  const snap: Snapshot = {
    t,
    accepted: status.connections.accepted,
    denied: sum(status.connections.denied),
    handshake: sum(status.connections.handshakeFailures),
    bin: 0,
    bout: 0,
    groups: {},
    upstreams: {},
  };
  for (const g of status.groups) {
    snap.bin += g.bytesFromClient;
    snap.bout += g.bytesFromUpstream;
    snap.groups[g.name] = {
      accepted: g.accepted,
      bin: g.bytesFromClient,
      bout: g.bytesFromUpstream,
    };
    for (const u of g.upstreams) {
      if (typeof u.accepted === "number") snap.upstreams[g.name + " " + u.address] = u.accepted;
    }
  }
  return snap;
}
function rates(cur: Snapshot, old: Snapshot | null): Rates | null {
  if (old === null) return null;
  const dt = (cur.t - old.t) / 1000;
  // A counter that went down was reset (a group removed and added again): no rate.
  const rate = (now: number | undefined, before: number | undefined): number | null => {
    if (typeof now !== "number" || typeof before !== "number" || dt <= 0) return null;
    return now >= before ? (now - before) / dt : null;
  };
  const r: Rates = {
    conn: rate(cur.accepted, old.accepted),
    denied: rate(cur.denied + cur.handshake, old.denied + old.handshake),
    bin: rate(cur.bin, old.bin),
    bout: rate(cur.bout, old.bout),
    groups: {},
    upstreams: {},
  };
  for (const [name, g] of Object.entries(cur.groups)) {
    const o = old.groups[name];
    r.groups[name] = o === undefined ? null : {
      conn: rate(g.accepted, o.accepted),
      bin: rate(g.bin, o.bin),
      bout: rate(g.bout, o.bout),
    };
  }
  for (const [key, accepted] of Object.entries(cur.upstreams)) {
    r.upstreams[key] = rate(accepted, old.upstreams[key]);
  }
  return r;
}

// Rendering.
function card(label: string, value: string, options: CardOptions = {}): HTMLDivElement {
  const c = h("div", "card");
  if (options.id) c.id = options.id;
  const tone = options.tone ? " " + options.tone : "";
  return add(
    c,
    h("div", "label", label),
    h("div", "value" + tone, value),
    options.sub ? h("div", "sub", options.sub) : null,
  );
}

function renderHeader(status: BalancerStatus): void {
  const state = byId("state");
  state.textContent = status.state;
  state.className = "badge " +
    (status.state === "serving" ? "ok" : status.state === "draining" ? "warn" : "bad");
  state.setAttribute("data-state", status.state);
  document.title = "mtlb \u00b7 " + status.state;
}

function renderCards(status: BalancerStatus, r: Rates | null): void {
  const c = status.connections;
  let upstreams = 0, healthy = 0;
  for (const g of status.groups) {
    for (const u of g.upstreams) {
      if (!u.removed) {
        upstreams++;
        if (u.healthy) healthy++;
      }
    }
  }
  const groups = status.groups.length + (status.groups.length === 1 ? " group" : " groups");
  const openSub = "open " + fmtInt(c.open) +
    (typeof c.max === "number" ? " of max " + fmtInt(c.max) : "");
  byId("cards").replaceChildren(
    card("Healthy upstreams", healthy + " / " + upstreams, {
      sub: groups,
      id: "card-health",
      tone: healthy === upstreams ? "text-ok" : healthy === 0 ? "text-bad" : "text-warn",
    }),
    card("Active connections", fmtInt(c.active), { sub: openSub, id: "card-active" }),
    card("New connections", fmtRate(r?.conn), { sub: fmtInt(c.accepted) + " since start" }),
    card("Refused", fmtRate(r?.denied), {
      sub: fmtInt(sum(c.denied)) + " denied, " + fmtInt(sum(c.handshakeFailures)) +
        " failed handshakes",
    }),
    card("In (client \u2192 upstream)", fmtBps(r?.bin), {
      sub: fmtBytes(prev ? prev.bin : 0) + " total",
      id: "card-in",
    }),
    card("Out (upstream \u2192 client)", fmtBps(r?.bout), {
      sub: fmtBytes(prev ? prev.bout : 0) + " total",
      id: "card-out",
    }),
  );
}

// Plots: samples of the last WINDOW_MS, a gap where polling stopped.
const PLOTS: Plot[] = [
  {
    id: "plot-conn",
    series: [{ key: "active", cls: "s1", label: "active" }],
    format: (v) => v === null || v === undefined ? "\u2014" : fmtInt(Math.round(v)),
  },
  {
    id: "plot-rate",
    series: [
      { key: "conn", cls: "s1", label: "new" },
      { key: "denied", cls: "s2", label: "refused" },
    ],
    format: fmtRate,
  },
  {
    id: "plot-bytes",
    series: [{ key: "bin", cls: "s1", label: "in" }, { key: "bout", cls: "s3", label: "out" }],
    format: fmtBps,
  },
];

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * p >= v) return step * p;
  return 10 * p;
}
function plot({ id, series, format }: Plot): void {
  const svg = byId(id);
  const start = Date.now() - WINDOW_MS;
  let max = 0;
  for (const s of samples) {
    for (const k of series) {
      const v = s[k.key];
      if (v !== null && v > max) max = v;
    }
  }
  max = niceMax(max);
  const nodes: Element[] = [];
  for (const f of [0.25, 0.5, 0.75]) {
    const grid = document.createElementNS(SVG, "line");
    grid.setAttribute("x1", "0");
    grid.setAttribute("x2", "300");
    grid.setAttribute("y1", String(100 * f));
    grid.setAttribute("y2", String(100 * f));
    nodes.push(grid);
  }
  for (const k of series) {
    let points: [x: string, y: string][] = [];
    let last = 0;
    const flush = () => {
      const [only] = points;
      if (points.length === 1 && only !== undefined) {
        points.push([(parseFloat(only[0]) + 0.5).toFixed(1), only[1]]);
      }
      if (points.length > 1) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("points", points.map((p) => p.join(",")).join(" "));
        line.setAttribute("class", k.cls);
        nodes.push(line);
      }
      points = [];
    };
    for (const s of samples) {
      const v = s[k.key];
      if (v === null || v === undefined) {
        flush();
        continue;
      }
      if (last && s.t - last > 5 * POLL_MS) flush();
      last = s.t;
      const x = (s.t - start) / WINDOW_MS * 300;
      const y = 98 - v / max * 94;
      points.push([x.toFixed(1), y.toFixed(1)]);
    }
    flush();
  }
  svg.replaceChildren(...nodes);
  byId(id + "-max").textContent = "scale " + format(max);
  const latest = samples.at(-1);
  for (const k of series) {
    byId(id + "-" + k.key).textContent = k.label + " " +
      (latest ? format(latest[k.key]) : "\u2014");
  }
}
function renderPlots(): void {
  for (const p of PLOTS) plot(p);
}

function healthCell(u: UpstreamState): HTMLTableCellElement {
  const cell = h("td");
  const state = u.removed ? "removed" : u.state;
  add(cell, badge(state, state === "healthy" ? "ok" : state === "unhealthy" ? "bad" : ""));
  if (u.reason && state !== "healthy") {
    add(cell, " ", h("span", "small muted reason", "probe: " + u.reason));
  }
  if (u.since) {
    const since = h("div", "small muted", "since " + fmtAgo(u.since).replace(" ago", ""));
    since.title = u.since;
    add(cell, since);
  }
  const e = u.ejection;
  if (e) {
    // Out of rotation for its failures on traffic until a set time (see [outlier]).
    const ejected = add(
      h("div", "ejection"),
      badge("ejected", "warn"),
      " ",
      h("span", "small muted reason", e.reason),
    );
    const until = h(
      "div",
      "small muted until",
      "until " + fmtTime(e.until) + " (" + fmtAgo(e.until) + ")",
    );
    until.title = e.until + " \u00b7 ejection " + e.ejections + " \u00b7 since " + e.since;
    add(cell, ejected, until);
  }
  return cell;
}
function panicBadge(): HTMLSpanElement {
  const b = badge("panic mode", "bad panic");
  b.title = "Too few upstreams available: ejected ones take connections again";
  return b;
}
function probeCell(p: UpstreamState["lastProbe"]): HTMLTableCellElement {
  const cell = h("td", "small");
  if (!p) return add(cell, h("span", "muted", "not probed yet"));
  add(cell, h("span", p.ok ? "text-ok" : "text-bad", p.ok ? "ok" : "failed"));
  add(cell, " " + p.reason);
  if (typeof p.latencyMs === "number") {
    add(cell, h("span", "muted", " \u00b7 " + p.latencyMs.toFixed(1) + " ms"));
  }
  const at = h("div", "muted", fmtAgo(p.at));
  at.title = p.at;
  return add(cell, at);
}
/** A DNS entry of a group: when it was last looked up, and why the last look-up failed. */
function dnsChip(d: DnsEntryState): HTMLSpanElement {
  const failed = d.error !== undefined;
  const chip = h(
    "span",
    "chip dns" + (failed ? " text-warn" : ""),
    d.source + " \u00b7 " + d.upstreams.length + " \u00b7 " +
      (failed ? "lookup failed " + fmtAgo(d.error!.at) : "resolved " + fmtAgo(d.resolvedAt ?? "")),
  );
  chip.setAttribute("data-dns", d.source);
  chip.title = (failed ? d.error!.message + "; keeping the last " : "") +
    d.upstreams.length + " upstreams: " + d.upstreams.join(", ") + " \u00b7 " + d.lookups +
    " lookups, " + d.failures + " failed";
  return chip;
}
/** A group's connections (queued ones included) against its `max_connections`. */
function capChip(g: GroupState, max: number): HTMLSpanElement {
  const tone = g.open >= max ? " text-bad" : g.open >= 0.8 * max ? " text-warn" : "";
  return h("span", "chip group-cap" + tone, "open " + fmtInt(g.open) + " of max " + fmtInt(max));
}
function renderGroups(status: BalancerStatus, r: Rates | null): void {
  const list = byId("groups");
  const nodes: HTMLElement[] = status.groups.map((g) => {
    const section = h("section", "group");
    section.setAttribute("data-group", g.name);
    const gr = r?.groups[g.name];
    const healthy = g.upstreams.filter((u) => u.healthy).length;
    const live = g.upstreams.filter((u) => !u.removed).length;
    const head = add(
      h("div", "group-head"),
      h("h3", "", g.name),
      badge(
        healthy + " / " + live + " healthy",
        healthy === live ? "ok" : healthy === 0 ? "bad" : "warn",
      ),
      h("span", "chip", g.listen ? "listener " + g.listen : "shared listener"),
      g.proxyProtocol ? h("span", "chip", "PROXY " + g.proxyProtocol) : null,
      g.panic ? panicBadge() : null,
      typeof g.maxConnections === "number" ? capChip(g, g.maxConnections) : null,
      ...(g.dns ?? []).map(dnsChip),
      h(
        "span",
        "small muted",
        fmtInt(g.accepted) + " accepted \u00b7 " + fmtRate(gr?.conn) +
          " \u00b7 in " + fmtBps(gr?.bin) + " \u00b7 out " + fmtBps(gr?.bout),
      ),
    );
    // Connections per second per upstream, when the status counts them.
    const counted = g.upstreams.some((u) => typeof u.accepted === "number");
    const table = h("table", "stack upstreams");
    const columns = add(
      h("tr"),
      th("Upstream"),
      th("Health"),
      th("Last probe"),
      th("Active", "num"),
    );
    add(table, add(h("thead"), add(columns, counted && th("Conn/s", "num"), th("Weight", "num"))));
    const body = h("tbody");
    for (const u of g.upstreams) {
      const row = h("tr");
      row.setAttribute("data-upstream", u.address);
      row.setAttribute("data-state", u.removed ? "removed" : u.state);
      if (u.ejection) row.setAttribute("data-ejected", u.ejection.until);
      const ur = r ? r.upstreams[g.name + " " + u.address] : null;
      let rateCell = null;
      if (counted) {
        rateCell = labelled(td(fmtRate(ur), "num"), "conn/s");
        rateCell.title = fmtInt(u.accepted) + " since start";
      }
      const probe = probeCell(u.lastProbe);
      probe.className += " wide";
      add(
        body,
        add(
          row,
          add(
            h("td"),
            h("code", "", u.address),
            u.source ? h("div", "small muted source", "from " + u.source) : null,
          ),
          healthCell(u),
          probe,
          labelled(td(fmtInt(u.active), "num active"), "active"),
          rateCell,
          labelled(td(u.weight, "num"), "weight"),
        ),
      );
    }
    add(table, body);
    return add(section, head, add(h("div", "scroll"), table));
  });
  if (nodes.length === 0) nodes.push(h("div", "empty", "No groups configured."));
  list.replaceChildren(...nodes);
}

function clientRow(c: ClientState): HTMLTableRowElement {
  const row = h("tr");
  row.setAttribute("data-client", c.name);
  const share = c.maxConnections > 0 ? c.active / c.maxConnections : 0;
  const meter = h("div", "meter" + (share >= 1 ? " bad" : share >= 0.8 ? " warn" : ""));
  const fill = h("div");
  fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
  meter.appendChild(fill);
  const use = add(h("td", "num"), h("span", "use", c.active + " / " + c.maxConnections), meter);
  const limit = typeof c.bandwidth === "number" && `bandwidth ${fmtLimit(c.bandwidth)} each way`;
  const name = add(h("td"), h("b", "", c.name), limit && h("div", "small muted bandwidth", limit));
  const queued = td(fmtInt(c.queued), "num queued" + (c.queued > 0 ? " text-warn" : ""));
  return add(row, name, td(c.groups.join(", "), "small"), use, queued);
}
function renderClients(status: BalancerStatus): void {
  const rows = status.clients.map(clientRow);
  if (rows.length === 0) rows.push(add(h("tr"), h("td", "empty", "No clients configured.")));
  byId("clients").replaceChildren(...rows);
  const queued = status.clients.reduce((n, c) => n + c.queued, 0);
  byId("queue-totals").textContent = "Queued now: " + fmtInt(queued) +
    " \u00b7 queue timeouts since start: " + fmtInt(status.connections.queueTimeouts) + ".";
}

function denialRow(d: RecentDenial): HTMLTableRowElement {
  const row = h("tr");
  row.setAttribute("data-reason", d.reason);
  const who = d.client
    ? h("b", "", d.client)
    : d.identity
    ? h("span", "", d.identity)
    : h("span", "muted", "unidentified");
  const reason = add(
    h("td"),
    badge(d.stage === "handshake" ? "handshake: " + d.reason : d.reason, "bad"),
  );
  if (d.detail) add(reason, h("div", "small muted", d.detail));
  return add(
    row,
    timeCell(d.at),
    reason,
    labelled(add(h("td"), who), "client"),
    labelled(td(d.group || "\u2014", "small"), "group"),
    labelled(add(h("td", "small wide"), h("code", "", d.remote)), "from"),
  );
}
function renderDenials(list: RecentDenial[] | null, status: BalancerStatus): void {
  const body = byId("denials");
  if (list === null) {
    body.replaceChildren(add(h("tr"), h("td", "empty", "Recent refusals are not available.")));
  } else if (list.length === 0) {
    body.replaceChildren(
      add(h("tr"), h("td", "empty", "No refusals since the admin endpoint started.")),
    );
  } else {
    body.replaceChildren(...list.slice(0, DENIALS_SHOWN).map(denialRow));
  }
  const parts: string[] = [];
  const more = list === null ? 0 : list.length - DENIALS_SHOWN;
  const count = (record: Record<string, number>, prefix: string) => {
    for (const k of Object.keys(record).sort()) {
      const n = record[k];
      if (n !== undefined && n > 0) parts.push(prefix + k + " " + fmtInt(n));
    }
  };
  count(status.connections.denied, "");
  count(status.connections.handshakeFailures, "handshake ");
  byId("deny-totals").textContent =
    (more > 0 ? `The latest ${DENIALS_SHOWN} shown; ${list?.length} in /denials. ` : "") +
    (parts.length === 0 ? "Since start: none." : "Since start: " + parts.join(" \u00b7 ") + ".");
}

function renderConfig(status: BalancerStatus): void {
  const dateAndAgo = (iso: string) =>
    add(h("span"), fmtTime(iso), h("span", "muted", " (" + fmtAgo(iso) + ")"));
  const items: [string, Node][] = [
    ["File", h("code", "", status.config.path)],
    ["Loaded", dateAndAgo(status.config.loadedAt)],
  ];
  if (status.startedAt) items.push(["Started", dateAndAgo(status.startedAt)]);
  const lr = status.lastReload;
  if (lr) {
    const outcome = add(
      h("span", "last-reload"),
      badge(lr.outcome, lr.outcome === "success" ? "ok" : "bad"),
      " " + fmtTime(lr.at),
    );
    outcome.setAttribute("data-outcome", lr.outcome);
    if (lr.error) add(outcome, h("div", "small text-bad", lr.error));
    items.push(["Last reload", outcome]);
  } else {
    items.push(["Last reload", h("span", "muted", "none since start")]);
  }
  const policy = status.clientPolicy;
  if (policy) {
    const shown = add(
      h("span", "client-policy"),
      policy.version === undefined
        ? badge("file's [clients]", "warn")
        : badge("version " + policy.version, "ok"),
      policy.version === undefined ? " no stored version in force" : "",
      policy.pushedAt ? h("span", "muted", " pushed " + fmtTime(policy.pushedAt)) : "",
      policy.storeVersion !== undefined
        ? h("div", "small text-bad", "store holds version " + policy.storeVersion)
        : "",
      policy.storeReachable ? "" : h("div", "small text-bad", "store unreachable"),
      policy.lastError ? h("div", "small text-bad", policy.lastError) : "",
    );
    shown.setAttribute("data-version", String(policy.version ?? "file"));
    items.push(["Client policy", shown]);
  }
  items.push([
    "Listeners",
    add(
      h("span", "small"),
      ...status.listeners.map((l, i) =>
        add(h("span"), i > 0 ? ", " : "", h("code", "", l.address), l.group ? ` (${l.group})` : "")
      ),
    ),
  ]);
  byId("config").replaceChildren(
    ...items.flatMap(([term, value]) => [h("dt", "", term), add(h("dd"), value)]),
  );
}

function renderCertificates(status: BalancerStatus): void {
  const c = status.certificates || {};
  const dates: [key: string, what: string, at: string | undefined][] = [
    ["server", "Server certificate", c.server],
    ["ca", "CA bundle (earliest)", c.ca],
    ["crl", "CRL next update", c.crlNextUpdate],
  ];
  for (const [group, upstream] of Object.entries(c.upstreams || {})) {
    dates.push([`upstream-ca:${group}`, `Upstream CA of ${group} (earliest)`, upstream.ca]);
    dates.push([`upstream-cert:${group}`, `Client certificate for ${group}`, upstream.cert]);
  }
  const rows = dates.flatMap(([key, what, at]) => {
    if (!at) return [];
    const left = (Date.parse(at) - now()) / 86400000;
    const cls = left < 0 ? "bad" : left < 30 ? "warn" : "ok";
    const text = left < 0
      ? "expired " + fmtSpan(-left * 86400000) + " ago"
      : Math.floor(left) + " days left";
    const row = h("tr");
    row.setAttribute("data-cert", key);
    row.setAttribute("data-level", cls);
    const date = td(fmtDate(at), "small");
    date.title = at;
    return [add(row, td(what), date, add(h("td", "num"), badge(text, cls)))];
  });
  if (rows.length === 0) rows.push(add(h("tr"), h("td", "empty", "No expiry dates known.")));
  byId("certs").replaceChildren(...rows);
}

function renderLive(): void {
  const dot = byId("live-dot"), text = byId("live-text");
  if (lastError) {
    dot.className = "dot bad";
    text.textContent = "Cannot reach mtlb: " + lastError +
      (lastOk ? "; last update " + fmtSpan(Date.now() - lastOk) + " ago" : "") +
      ". Retrying\u2026";
    text.className = "text-bad";
  } else {
    dot.className = "dot ok";
    text.textContent = "Live \u00b7 updated " + new Date(lastOk).toLocaleTimeString();
    text.className = "";
  }
}

// The admin token: in this tab's sessionStorage only, sent as a Bearer header.
function storedToken(): string {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}
function storeToken(token: string): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage off: the token lasts as long as the page.
  }
  memoryToken = token;
}
let memoryToken = storedToken();
function withToken(headers: Record<string, string>): Record<string, string> {
  if (memoryToken) headers.authorization = "Bearer " + memoryToken;
  return headers;
}
/** The admin endpoint answered 401. */
class Unauthorized extends Error {
  constructor() {
    super("the token was refused");
    this.name = "Unauthorized";
  }
}
function askToken(message: string): void {
  byId("login").hidden = false;
  byId("login-error").textContent = message;
  const state = byId("state");
  state.textContent = "locked";
  state.className = "badge warn";
  byId("live-dot").className = "dot";
  const text = byId("live-text");
  text.textContent = "Enter the admin token to see the status.";
  text.className = "";
  byId("token").focus();
}

async function getJson(path: string): Promise<unknown> {
  const response = await fetch(path, {
    cache: "no-store",
    headers: withToken({ accept: "application/json" }),
  });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(path + " answered " + response.status);
  const date = Date.parse(response.headers.get("date") || "");
  if (isFinite(date)) {
    const skew = date - Date.now();
    skewMs = Math.abs(skew) > 3000 ? skew : 0;
  }
  return response.json();
}

function update(status: BalancerStatus, denials: RecentDenial[] | null): void {
  const cur = snapshot(status, performance.now());
  const r = rates(cur, prev);
  prev = cur;
  if (r) {
    samples.push({
      t: Date.now(),
      active: status.connections.active,
      conn: r.conn,
      denied: r.denied,
      bin: r.bin,
      bout: r.bout,
    });
    const cutoff = Date.now() - WINDOW_MS;
    while (samples.length > 0 && samples[0]!.t < cutoff) samples.shift();
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

async function poll(): Promise<void> {
  if (inflight) return;
  inflight = true;
  clearTimeout(timer);
  const started = Date.now();
  let results: [BalancerStatus, RecentDenial[] | null] | undefined;
  let locked = false;
  try {
    results = await Promise.all([
      getJson("/status") as Promise<BalancerStatus>,
      getJson("/denials").then(
        (d) => (d as { denials: RecentDenial[] }).denials,
        (e) => {
          if (e instanceof Unauthorized) throw e;
          return null;
        },
      ),
    ]);
  } catch (error) {
    if (error instanceof Unauthorized) locked = true;
    else lastError = error instanceof Error && error.message ? error.message : String(error);
  }
  // Outside the try: a rendering bug surfaces as a page error, not as "cannot reach".
  if (results) {
    update(...results);
    lastOk = Date.now();
    lastError = "";
  }
  inflight = false;
  if (locked) {
    const had = memoryToken !== "";
    storeToken("");
    askToken(had ? "The token was refused." : "");
    return;
  }
  renderLive();
  const polls = Number(document.body.getAttribute("data-polls") || "0") + 1;
  document.body.setAttribute("data-polls", String(polls));
  timer = setTimeout(poll, Math.max(250, POLL_MS - (Date.now() - started)));
}

byId("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = byIdOf("token", HTMLInputElement);
  const token = input.value.trim();
  if (!token) return;
  input.value = "";
  storeToken(token);
  byId("login").hidden = true;
  const state = byId("state");
  state.textContent = "connecting";
  state.className = "badge";
  poll();
});

if (reloadAllowed) {
  const button = byIdOf("reload", HTMLButtonElement);
  const message = byId("reload-result");
  // The admin endpoint names the header its reload requires of browsers.
  const reloadHeader = button.getAttribute("data-header") || "";
  button.addEventListener("click", async () => {
    button.disabled = true;
    message.className = "small muted";
    message.textContent = "Reloading\u2026";
    const headers = withToken({});
    headers[reloadHeader] = "1";
    let response: Response | undefined;
    try {
      response = await fetch("/reload", { method: "POST", headers, cache: "no-store" });
    } catch (error) {
      message.className = "small text-bad";
      message.textContent = "Reload failed: " + (error instanceof Error ? error.message : error);
    }
    if (response) {
      const body: { error?: string } = await response.json().catch(() => ({}));
      if (response.ok) {
        message.className = "small text-ok";
        message.textContent = "Reloaded at " + new Date().toLocaleTimeString();
      } else {
        message.className = "small text-bad";
        message.textContent = "Reload failed: " + (body.error || "HTTP " + response.status);
      }
    }
    button.disabled = false;
    poll();
  });
}

if (tokenRequired && !memoryToken) askToken("");
else poll();
