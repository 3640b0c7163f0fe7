/**
 * The admin endpoint: a small HTTP server (`Deno.serve`) for operators and
 * monitoring, on `[admin] listen`.
 *
 * | method       | path       | answer                                                                        |
 * | ------------ | ---------- | ----------------------------------------------------------------------------- |
 * | `GET`        | `/`        | the dashboard: a live HTML status page (see `dashboardResponse`)              |
 * | `GET`        | `/metrics` | Prometheus text format, version 0.0.4                                         |
 * | `GET`        | `/status`  | JSON snapshot: groups, upstreams, clients, config (see `BalancerStatus`)      |
 * | `GET`        | `/denials` | JSON `{ "denials": [...] }`: the latest refusals, newest first (see {@linkcode RecentDenial}) |
 * | `GET`        | `/healthz` | `200 serving` while serving; `503 draining` (or `starting`, `closed`) otherwise |
 * | `POST`       | `/reload`  | reloads the config: `200` on success, `500` with the reason; `403` unless `allow_reload = true` |
 *
 * Every request must name in its `Host` header an IP address, `localhost` or one
 * of the names `hosts` returns (the port does not matter); anything else is
 * answered `421 Misdirected Request`. A web page using DNS rebinding reaches a
 * loopback port under a name its author controls, so it is refused.
 *
 * With a `token`, every request but `/healthz` and the dashboard page itself (which
 * holds no data, and asks for the token) must carry `Authorization: Bearer TOKEN`,
 * else it is answered `401` with `WWW-Authenticate: Bearer realm="mtlb"`. Without
 * one, bind the endpoint to a loopback address (or a private management network)
 * only.
 *
 * `POST /reload` from a web page (a request with an `Origin` header) is accepted
 * only from the dashboard itself: the request must carry the `X-Mtlb-Reload: 1`
 * header (which a page of another origin cannot send without a CORS preflight,
 * never granted here) and its `Origin` must match the `Host` it was sent to.
 *
 * Refused requests are counted in `mtlb_admin_requests_refused_total{reason}`
 * (`misdirected_host`, `unauthorized`) and reported as `admin_misdirected_host` or
 * `admin_unauthorized`: a warning and an entry in `/denials` at most once a minute
 * per reason, debug records in between.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { errorMessage } from "../core/errors.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../core/address.ts";
import { dashboardResponse, RELOAD_HEADER } from "./dashboard.ts";
import { type CounterSeries, MetricsRegistry } from "../metrics/registry.ts";
import { _bearerToken, _hostRefusal, _tokensEqual } from "./_access.ts";

const log = getLogger(["mtlb", "admin"]);

/**
 * What the admin endpoint serves: a {@linkcode Balancer} fits. When the target is
 * also an `EventTarget` dispatching `"deny"` events whose `detail` is a
 * `DenyRecord` (a `Balancer` does), the latest refusals are kept for `/denials` and
 * the dashboard.
 */
export interface AdminTarget {
  /** `serving` answers `/healthz` with 200; anything else with 503. */
  readonly state: string;
  /** Serialised as the `/status` JSON. */
  status(): unknown;
  /** Rendered for `/metrics`. */
  readonly metrics: { render(): string };
  /** Run by `POST /reload`; a rejection's message is the answer's `error`. */
  reload(): Promise<unknown>;
}

/** Options of {@linkcode AdminServer}. */
export interface AdminServerOptions {
  /** `host:port` to listen on; port 0 picks a free port. */
  listen: string;
  /**
   * Whether `POST /reload` may reload; read on every request, so a reload can
   * change it.
   *
   * @default {() => false}
   */
  allowReload?: () => boolean;
  /**
   * Host names answered for besides IP addresses and `localhost`, lowercase
   * (`[admin] hosts`); read on every request, so a reload can change them.
   *
   * @default {() => []}
   */
  hosts?: () => readonly string[];
  /**
   * The bearer token every request but `/healthz` and the dashboard page must
   * carry (`[admin] token_file`), `undefined` for none; read on every request,
   * so a reload can change it.
   *
   * @default {() => undefined}
   */
  token?: () => string | undefined;
  /**
   * Wall-clock time, ms since the epoch: the time stamps of `/denials`.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/** One refusal in `/denials`, from the target's `"deny"` and `"handshake_error"` events. */
export interface RecentDenial {
  /** When it happened, ISO 8601. */
  at: string;
  /**
   * The deny reason (`unknown_identity`, `limit_concurrency`, ...), or for a request to
   * the admin endpoint itself `admin_misdirected_host` or `admin_unauthorized`.
   */
  reason: string;
  /** The client's address, `host:port`. */
  remote: string;
  /** The configured client name, once identified. */
  client?: string;
  /** The certificate's identity for an unknown client: its CN, else its first SAN, else its serial. */
  identity?: string;
  /** The group asked for, once routed. */
  group?: string;
  /** Detail for the operator, at most 300 characters. */
  detail?: string;
  /**
   * `handshake` for a failed TLS handshake (`unknown_ca`, `expired`,
   * `no_certificate`, `handshake_timeout`, ...); absent for a refusal after it.
   */
  stage?: "handshake";
}

/** How many refusals `/denials` keeps. */
export const RECENT_DENIALS = 100;

/** Why the admin endpoint refuses a request: the reasons of `mtlb_admin_requests_refused_total`. */
const ADMIN_REFUSALS = ["misdirected_host", "unauthorized"] as const;
type AdminRefusal = typeof ADMIN_REFUSALS[number];

/** A refusal reason is warned about (and kept in `/denials`) at most this often. */
const REFUSAL_REPORT_MS = 60_000;

const TEXT = "text/plain; charset=utf-8";
const PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";

/**
 * The admin HTTP server. Create it with {@linkcode AdminServer.start}.
 *
 * @example Usage
 * ```ts ignore
 * import { AdminServer, Balancer, loadAdminToken, loadConfig, loadTlsMaterial } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * const token = await loadAdminToken(config); // undefined without [admin] token_file
 * await using balancer = new Balancer({ config, tls: await loadTlsMaterial(config) });
 * await balancer.start();
 * await using admin = AdminServer.start(balancer, {
 *   listen: "127.0.0.1:9090",
 *   allowReload: () => balancer.config.admin.allowReload,
 *   hosts: () => balancer.config.admin.hosts,
 *   token: () => token,
 * });
 * // curl -H "Authorization: Bearer $(cat admin.token)" http://127.0.0.1:9090/metrics
 * ```
 */
export class AdminServer implements AsyncDisposable {
  #server: Deno.HttpServer<Deno.NetAddr>;
  #target: AdminTarget;
  #allowReload: () => boolean;
  #hosts: () => readonly string[];
  #token: () => string | undefined;
  #now: () => number;
  #refusals = new MetricsRegistry();
  #refused: Record<AdminRefusal, CounterSeries>;
  #reported = new Map<AdminRefusal, { at: number; since: number }>();
  #denials: RecentDenial[] = [];
  #onDeny = (event: Event): void => this.#recordDenial(event);
  #onHandshakeError = (event: Event): void => this.#recordDenial(event, "handshake");
  #closed: Promise<void> | undefined;

  private constructor(target: AdminTarget, options: AdminServerOptions) {
    this.#target = target;
    this.#allowReload = options.allowReload ?? (() => false);
    this.#hosts = options.hosts ?? (() => []);
    this.#token = options.token ?? (() => undefined);
    this.#now = options.now ?? Date.now;
    const refused = this.#refusals.counter({
      name: "mtlb_admin_requests_refused_total",
      help:
        "Admin endpoint requests refused: misdirected_host (Host not answered for), unauthorized (no or wrong token).",
      labelNames: ["reason"],
    });
    this.#refused = Object.fromEntries(
      ADMIN_REFUSALS.map((reason) => [reason, refused.labels(reason)]),
    ) as Record<AdminRefusal, CounterSeries>;
    const { hostname, port } = parseHostPort(options.listen);
    this.#server = Deno.serve({
      hostname,
      port,
      onListen: () => {},
      onError: (error) => {
        log.error("Admin request failed: {error}", { error });
        return new Response("Internal error\n", { status: 500, headers: { "content-type": TEXT } });
      },
    }, (request, info) => this.#handle(request, info));
    if (target instanceof EventTarget) {
      target.addEventListener("deny", this.#onDeny);
      target.addEventListener("handshake_error", this.#onHandshakeError);
    }
    const address = this.address;
    log.info("Admin endpoint on http://{address}", { address: formatHostPort(address) });
    if (!isLoopback(address.hostname) && this.#token() === undefined) {
      log.warn(
        "Admin endpoint {address} is not on a loopback address and asks for no token ([admin] token_file): anyone who can reach it can read the status{reload}",
        {
          address: formatHostPort(address),
          reload: this.#allowReload() ? " and reload the config" : "",
        },
      );
    }
  }

  /**
   * Starts serving.
   *
   * @param target The balancer (or anything with its state, status, metrics and reload).
   * @param options The address, and whether reloads are allowed.
   * @returns The running server.
   * @throws {TypeError} When `options.listen` is not `host:port`.
   * @throws {Deno.errors.AddrInUse} When the address is taken (and other bind errors).
   */
  static start(target: AdminTarget, options: AdminServerOptions): AdminServer {
    return new AdminServer(target, options);
  }

  /** The address bound (port 0 resolved). */
  get address(): HostPort {
    const { hostname, port } = this.#server.addr;
    return { hostname, port };
  }

  /**
   * Stops listening and ends open requests.
   *
   * @returns When the server is closed.
   */
  close(): Promise<void> {
    if (this.#closed === undefined) {
      if (this.#target instanceof EventTarget) {
        this.#target.removeEventListener("deny", this.#onDeny);
        this.#target.removeEventListener("handshake_error", this.#onHandshakeError);
      }
      this.#closed = this.#server.shutdown();
    }
    return this.#closed;
  }

  /**
   * The latest refusals the target reported, newest first, as `/denials` serves them.
   *
   * @returns A fresh array of at most {@linkcode RECENT_DENIALS} entries.
   */
  recentDenials(): RecentDenial[] {
    return this.#denials.toReversed();
  }

  /**
   * Same as {@linkcode AdminServer.close}.
   *
   * @returns When the server is closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #handle(request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> {
    // First: the request URL is built from Host, which may not even parse.
    const misdirected = _hostRefusal(request.headers.get("host"), this.#hosts());
    if (misdirected !== undefined) {
      this.#refuse("misdirected_host", info, misdirected);
      return new Response(
        "Misdirected request: this admin endpoint answers for IP addresses, localhost and the names of [admin] hosts\n",
        { status: 421, headers: { "content-type": TEXT, "cache-control": "no-store" } },
      );
    }
    let pathname: string;
    try {
      pathname = new URL(request.url).pathname;
    } catch {
      return new Response("Bad request\n", { status: 400, headers: { "content-type": TEXT } });
    }
    const method = request.method;
    const read = method === "GET" || method === "HEAD";
    const token = this.#token();
    if (token !== undefined && pathname !== "/healthz" && !(pathname === "/" && read)) {
      const presented = _bearerToken(request.headers.get("authorization"));
      if (presented === undefined || !_tokensEqual(presented, token)) {
        this.#refuse(
          "unauthorized",
          info,
          `${method} ${pathname}: ${presented === undefined ? "no bearer token" : "wrong token"}`,
        );
        return new Response("Unauthorized: send Authorization: Bearer TOKEN\n", {
          status: 401,
          headers: {
            "content-type": TEXT,
            "cache-control": "no-store",
            "www-authenticate": presented === undefined
              ? 'Bearer realm="mtlb"'
              : 'Bearer realm="mtlb", error="invalid_token"',
          },
        });
      }
    }
    switch (pathname) {
      case "/":
        if (!read) return notAllowed("GET, HEAD");
        return dashboardResponse({
          allowReload: this.#allowReload(),
          tokenRequired: token !== undefined,
        });
      case "/metrics":
        if (!read) return notAllowed("GET, HEAD");
        return new Response(this.#target.metrics.render() + this.#refusals.render(), {
          headers: { "content-type": PROMETHEUS, "cache-control": "no-store" },
        });
      case "/status":
        if (!read) return notAllowed("GET, HEAD");
        return json(200, this.#target.status());
      case "/denials":
        if (!read) return notAllowed("GET, HEAD");
        return json(200, { denials: this.recentDenials() });
      case "/healthz": {
        if (!read) return notAllowed("GET, HEAD");
        const state = this.#target.state;
        return new Response(`${state}\n`, {
          status: state === "serving" ? 200 : 503,
          headers: { "content-type": TEXT, "cache-control": "no-store" },
        });
      }
      case "/reload":
        if (method !== "POST") return notAllowed("POST");
        if (!this.#allowReload()) {
          return json(403, {
            error: "Reload over the admin endpoint is off: set allow_reload = true in [admin]",
          });
        }
        if (request.headers.has("origin")) {
          const refused = this.#browserReloadRefusal(request);
          if (refused !== undefined) return json(403, { error: `Reload refused: ${refused}` });
        }
        log.info("Reload requested over the admin endpoint");
        try {
          await this.#target.reload();
          return json(200, { outcome: "success" });
        } catch (error) {
          return json(500, {
            outcome: "failure",
            error: errorMessage(error),
          });
        }
      default:
        return json(404, {
          error:
            `Not found: ${pathname}; try /, /metrics, /status, /denials, /healthz or POST /reload`,
        });
    }
  }

  /**
   * Why a reload sent by a browser (a request with an `Origin` header) is refused,
   * or `undefined` when it comes from the dashboard itself. The `Host` was
   * checked already.
   */
  #browserReloadRefusal(request: Request): string | undefined {
    const headers = request.headers;
    if (headers.get(RELOAD_HEADER) !== "1") {
      return `requests from web pages (with an Origin header) are accepted only from the dashboard, which sends ${RELOAD_HEADER}: 1`;
    }
    const host = headers.get("host") ?? "";
    let expected: string;
    try {
      expected = new URL(`http://${host}`).origin;
    } catch {
      return `bad Host header ${JSON.stringify(host)}`;
    }
    const origin = headers.get("origin");
    if (origin !== expected) {
      return `the page's origin ${origin} does not match the Host it was sent to (${expected})`;
    }
    const site = headers.get("sec-fetch-site");
    if (site !== null && site !== "same-origin") {
      return `the request comes from another site (Sec-Fetch-Site: ${site})`;
    }
    return undefined;
  }

  /**
   * Counts a refused request; warns and keeps it in `/denials` once per
   * {@linkcode REFUSAL_REPORT_MS} per reason, with the number refused since.
   */
  #refuse(reason: AdminRefusal, info: Deno.ServeHandlerInfo<Deno.NetAddr>, detail: string): void {
    this.#refused[reason].inc();
    const named = `admin_${reason}`;
    const remote = formatHostPort(info.remoteAddr);
    const now = this.#now();
    const last = this.#reported.get(reason);
    if (last !== undefined && now - last.at < REFUSAL_REPORT_MS) {
      last.since++;
      log.debug("Admin request refused ({reason}) from {remote}: {detail}", {
        reason: named,
        remote,
        detail,
      });
      return;
    }
    const more = last === undefined || last.since === 0
      ? ""
      : `; ${last.since} more refused for this reason since the last report`;
    this.#reported.set(reason, { at: now, since: 0 });
    log.warn("Admin request refused ({reason}) from {remote}: {detail}{more}", {
      reason: named,
      remote,
      detail,
      more,
    });
    this.#pushDenial({
      at: new Date(now).toISOString(),
      reason: named,
      remote,
      detail: truncate(detail + more),
    });
  }

  #recordDenial(event: Event, stage?: "handshake"): void {
    if (!(event instanceof CustomEvent)) return;
    const detail = event.detail as Record<string, unknown> | null;
    if (detail === null || typeof detail !== "object") return;
    const { reason, remote, client, group, identity, detail: text, at } = detail;
    if (typeof reason !== "string") return;
    // A client that left before it finished its handshake refused nothing (port
    // scanners, TCP health checks): counted, not listed.
    if (stage === "handshake" && reason === "client_closed") return;
    const denial: RecentDenial = {
      // The time of the refusal, as its log line has it; a worker relays it later.
      at: new Date(typeof at === "number" && Number.isFinite(at) ? at : this.#now()).toISOString(),
      reason,
      remote: typeof remote === "string" ? remote : "",
    };
    if (stage !== undefined) denial.stage = stage;
    if (typeof client === "string") denial.client = client;
    else {
      const name = identityName(identity);
      if (name !== undefined) denial.identity = name;
    }
    if (typeof group === "string") denial.group = group;
    if (typeof text === "string" && text !== "") denial.detail = truncate(text);
    this.#pushDenial(denial);
  }

  #pushDenial(denial: RecentDenial): void {
    this.#denials.push(denial);
    if (this.#denials.length > RECENT_DENIALS) this.#denials.shift();
  }
}

/** A short name for a certificate identity (`CertIdentity`): CN, else first SAN, else serial. */
function identityName(identity: unknown): string | undefined {
  if (identity === null || typeof identity !== "object") return undefined;
  const { cn, sanUri, sanDns, serial } = identity as Record<string, unknown>;
  if (typeof cn === "string" && cn !== "") return `CN=${cn}`;
  const san = [sanUri, sanDns].flatMap((list) => Array.isArray(list) ? list : [])
    .find((s): s is string => typeof s === "string");
  if (san !== undefined) return san;
  return typeof serial === "string" ? `serial ${serial}` : undefined;
}

function truncate(text: string): string {
  return text.length > 300 ? `${text.slice(0, 299)}\u2026` : text;
}

function json(status: number, body: unknown): Response {
  return new Response(`${JSON.stringify(body, null, 2)}\n`, {
    status,
    headers: { "content-type": JSON_TYPE, "cache-control": "no-store" },
  });
}

function notAllowed(allow: string): Response {
  return new Response(`Method not allowed: use ${allow}\n`, {
    status: 405,
    headers: { "content-type": TEXT, allow },
  });
}

function isLoopback(hostname: string): boolean {
  return hostname === "::1" || hostname.startsWith("127.") || hostname === "localhost";
}
