/**
 * The admin endpoint: a small HTTP server (`Deno.serve`) for operators and
 * monitoring, on `[admin] listen`.
 *
 * | method       | path       | answer                                                                        |
 * | ------------ | ---------- | ----------------------------------------------------------------------------- |
 * | `GET`        | `/metrics` | Prometheus text format, version 0.0.4                                         |
 * | `GET`        | `/status`  | JSON snapshot: groups, upstreams, clients, config (see `BalancerStatus`)      |
 * | `GET`        | `/healthz` | `200 serving` while serving; `503 draining` (or `starting`, `closed`) otherwise |
 * | `POST`       | `/reload`  | reloads the config: `200` on success, `500` with the reason; `403` unless `allow_reload = true` |
 *
 * It has no authentication: bind it to a loopback address (or a private
 * management network) only. `POST /reload` is refused when the request carries an
 * `Origin` header, so a web page in a browser on the same host cannot trigger it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { formatHostPort, type HostPort, parseHostPort } from "./address.ts";

const log = getLogger(["mtlb", "admin"]);

/** What the admin endpoint serves: a {@linkcode Balancer} fits. */
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
}

const TEXT = "text/plain; charset=utf-8";
const PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";

/**
 * The admin HTTP server. Create it with {@linkcode AdminServer.start}.
 *
 * @example Usage
 * ```ts ignore
 * import { AdminServer, Balancer, loadConfig, loadTlsMaterial } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * await using balancer = new Balancer({ config, tls: await loadTlsMaterial(config) });
 * await balancer.start();
 * await using admin = AdminServer.start(balancer, {
 *   listen: "127.0.0.1:9090",
 *   allowReload: () => balancer.config.admin.allowReload,
 * });
 * // curl http://127.0.0.1:9090/metrics
 * ```
 */
export class AdminServer implements AsyncDisposable {
  #server: Deno.HttpServer<Deno.NetAddr>;
  #target: AdminTarget;
  #allowReload: () => boolean;
  #closed: Promise<void> | undefined;

  private constructor(target: AdminTarget, options: AdminServerOptions) {
    this.#target = target;
    this.#allowReload = options.allowReload ?? (() => false);
    const { hostname, port } = parseHostPort(options.listen);
    this.#server = Deno.serve({
      hostname,
      port,
      onListen: () => {},
      onError: (error) => {
        log.error("Admin request failed: {error}", { error });
        return new Response("Internal error\n", { status: 500, headers: { "content-type": TEXT } });
      },
    }, (request) => this.#handle(request));
    const address = this.address;
    log.info("Admin endpoint on http://{address}", { address: formatHostPort(address) });
    if (!isLoopback(address.hostname)) {
      log.warn(
        "Admin endpoint {address} is not on a loopback address: it has no authentication, so anyone who can reach it can read the status{reload}",
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
    this.#closed ??= this.#server.shutdown();
    return this.#closed;
  }

  /**
   * Same as {@linkcode AdminServer.close}.
   *
   * @returns When the server is closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #handle(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    const method = request.method;
    const read = method === "GET" || method === "HEAD";
    switch (pathname) {
      case "/metrics":
        if (!read) return notAllowed("GET, HEAD");
        return new Response(this.#target.metrics.render(), {
          headers: { "content-type": PROMETHEUS, "cache-control": "no-store" },
        });
      case "/status":
        if (!read) return notAllowed("GET, HEAD");
        return json(200, this.#target.status());
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
          return json(403, {
            error:
              "Reload refused: requests from web pages (with an Origin header) are not accepted",
          });
        }
        log.info("Reload requested over the admin endpoint");
        try {
          await this.#target.reload();
          return json(200, { outcome: "success" });
        } catch (error) {
          return json(500, {
            outcome: "failure",
            error: error instanceof Error ? error.message : String(error),
          });
        }
      default:
        return json(404, {
          error: `Not found: ${pathname}; try /metrics, /status, /healthz or POST /reload`,
        });
    }
  }
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
