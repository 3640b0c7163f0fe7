/**
 * Authorization policy: which configured client a certificate belongs to, which group
 * a connection of that client goes to, and the client's connection limits.
 *
 * @module
 */
import type { ClientLimits } from "../limiter/store.ts";
import type { GroupLimits } from "../limiter/client_limiter.ts";
import type { ClientConfig, ClientMatch, LimitsConfig } from "../config/mod.ts";
import type { CertIdentity } from "../identity/certificate.ts";

/** A configured client as the policy sees it. */
export interface ClientRule {
  /** The client name (`[clients.NAME]`). */
  readonly name: string;
  /** How its certificate is recognised; every given field must match. */
  readonly match: Readonly<ClientMatch>;
  /** Groups it may use. */
  readonly groups: readonly string[];
  /** Its effective limits: its own overrides, else `[limits]`. */
  readonly limits: ClientLimits;
  /**
   * Its limits in each of its groups that has some: the group's total cap and its own
   * caps within the group (`per_group`). A group without limits is absent.
   */
  readonly groupLimits: ReadonlyMap<string, GroupLimits>;
  /** Its bytes per second, each direction: its own `bandwidth`, else `[limits]`'s. */
  readonly bandwidth?: number | undefined;
}

/** Why {@linkcode Policy.identify} refused a certificate. */
export type IdentifyDenial = "unknown_identity" | "ambiguous_identity";

/** The outcome of {@linkcode Policy.identify}. */
export type IdentifyResult = { client: ClientRule } | { deny: IdentifyDenial };

/** What {@linkcode Policy.route} knows about a connection. */
export interface RouteRequest {
  /**
   * The group whose dedicated listener accepted the connection; absent on the shared one.
   *
   * @default {undefined}
   */
  listenerGroup?: string;
  /**
   * The TLS SNI server name the client sent.
   *
   * @default {undefined}
   */
  sni?: string;
  /**
   * The ALPN protocols the client offered (or the one negotiated), in order.
   *
   * @default {[]}
   */
  alpn?: readonly string[];
}

/** Why {@linkcode Policy.route} refused a connection. */
export type RouteDenial = "unauthorized_group" | "no_group";

/** The outcome of {@linkcode Policy.route}. */
export type RouteResult = { group: string } | {
  deny: RouteDenial;
  /** The group the connection asked for, when it named one. */
  group?: string;
};

/** What a {@linkcode Policy} is built from: a {@linkcode Config} fits. */
export interface PolicyConfig {
  /** The groups: their names, and their caps over all clients. */
  groups: ReadonlyMap<string, { readonly maxConnections?: number | undefined }>;
  /** The clients. */
  clients: ReadonlyMap<string, ClientConfig>;
  /** The default limits. */
  limits:
    & Pick<LimitsConfig, "maxConnectionsPerClient" | "connectionRate">
    & Partial<Pick<LimitsConfig, "onRateLimit" | "queueTimeout" | "bandwidth">>;
}

/**
 * Identifies clients by certificate, routes their connections to groups and hands out
 * their limits. Built once per configuration (a reload builds a new one). Clients are
 * indexed by every match field, so identifying a certificate looks up only the clients
 * that share one of its values instead of scanning them all.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "@mtlb/mtlb";
 * import { Policy } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const policy = new Policy(parseConfig(
 *   `
 * [server]
 * listen = "127.0.0.1:8443"
 * [tls]
 * ca = "ca.crt"
 * cert = "server.crt"
 * key = "server.key"
 * [groups.cache]
 * upstreams = ["127.0.0.1:6379"]
 * [groups.echo]
 * upstreams = ["127.0.0.1:7001"]
 * [clients.alice]
 * match = { cn = "alice" }
 * groups = ["cache", "echo"]
 * `,
 *   { path: "lb.toml" },
 * ));
 * const found = policy.identify({ spkiSha256: "ab".repeat(32), serial: "1", cn: "alice", sanUri: [], sanDns: [] });
 * assert.ok("client" in found);
 * assert.deepEqual(policy.route(found.client, { sni: "echo" }), { group: "echo" });
 * assert.deepEqual(policy.route(found.client, {}), { deny: "no_group" });
 * ```
 */
export class Policy {
  /**
   * Milliseconds a connection over a rate limit may wait for its token: `[limits]
   * queue_timeout` with `on_rate_limit = "queue"`, else 0 (refused at once).
   */
  readonly queueTimeout: number;
  #clients = new Map<string, ClientRule>();
  /** Group names by lowercase name, for SNI (host names ignore case). */
  #groupsBySni = new Map<string, string>();
  #groups = new Set<string>();
  #bySpki = new Map<string, ClientRule[]>();
  #bySerial = new Map<string, ClientRule[]>();
  #byCn = new Map<string, ClientRule[]>();
  #bySanUri = new Map<string, ClientRule[]>();
  #bySanDns = new Map<string, ClientRule[]>();
  #byIssuer = new Map<string, ClientRule[]>();

  /**
   * Builds the policy and its indexes.
   *
   * @param config A validated configuration (its groups, clients and limits).
   */
  constructor(config: PolicyConfig) {
    for (const name of config.groups.keys()) {
      this.#groups.add(name);
      this.#groupsBySni.set(name.toLowerCase(), name);
    }
    const add = (index: Map<string, ClientRule[]>, key: string | undefined, rule: ClientRule) => {
      if (key === undefined) return;
      const list = index.get(key);
      if (list === undefined) index.set(key, [rule]);
      else list.push(rule);
    };
    const { limits: defaults } = config;
    this.queueTimeout = defaults.onRateLimit === "queue" ? defaults.queueTimeout ?? 0 : 0;
    for (const client of config.clients.values()) {
      const limits = clientLimits(
        client.maxConnections ?? defaults.maxConnectionsPerClient,
        client.connectionRate ?? defaults.connectionRate,
      );
      const groupLimits = new Map<string, GroupLimits>();
      for (const name of client.groups) {
        const total = config.groups.get(name)?.maxConnections;
        const within = client.perGroup?.[name];
        if (total === undefined && within === undefined) continue;
        groupLimits.set(
          name,
          Object.freeze({
            name,
            ...(total === undefined ? {} : { total: clientLimits(total, undefined) }),
            ...(within === undefined
              ? {}
              : { client: clientLimits(within.maxConnections ?? Infinity, within.connectionRate) }),
          }),
        );
      }
      const bandwidth = client.bandwidth ?? defaults.bandwidth;
      const rule: ClientRule = Object.freeze({
        name: client.name,
        match: Object.freeze({ ...client.match }),
        groups: Object.freeze([...client.groups]),
        limits,
        groupLimits,
        ...(bandwidth === undefined ? {} : { bandwidth }),
      });
      this.#clients.set(rule.name, rule);
      add(this.#bySpki, rule.match.spkiSha256, rule);
      add(this.#bySerial, rule.match.serial, rule);
      add(this.#byCn, rule.match.cn, rule);
      add(this.#bySanUri, rule.match.sanUri, rule);
      add(this.#bySanDns, rule.match.sanDns, rule);
      add(this.#byIssuer, rule.match.issuer, rule);
    }
  }

  /**
   * Finds the one client whose match fields all fit the certificate. A certificate
   * that fits no client, or more than one, is denied. A client with `issuer` fits
   * only when `issuer` is given and is the SPKI SHA-256 of the CA that issued the
   * certificate (`ClientTrust`'s verdict has it).
   *
   * @example Usage
   * ```ts
   * import { parseConfig } from "../config/mod.ts";
   * import { Policy } from "./policy.ts";
   * import assert from "node:assert/strict";
   *
   * const policy = new Policy(parseConfig(
   *   `
   * [server]
   * listen = "127.0.0.1:8443"
   * [tls]
   * ca = "ca.crt"
   * cert = "server.crt"
   * key = "server.key"
   * [groups.app]
   * upstreams = ["127.0.0.1:7001"]
   * [clients.web]
   * match = { san_uri = "spiffe://example.org/web", serial = "0A:FF" }
   * groups = ["app"]
   * `,
   *   { path: "lb.toml" },
   * ));
   * const cert = { spkiSha256: "00".repeat(32), serial: "aff", sanUri: ["spiffe://example.org/web"], sanDns: [] };
   * assert.equal((policy.identify(cert) as { client: { name: string } }).client.name, "web");
   * assert.deepEqual(policy.identify({ ...cert, serial: "1" }), { deny: "unknown_identity" });
   * ```
   *
   * @example Pinned to the issuing CA
   * ```ts
   * import { Policy } from "./policy.ts";
   * import assert from "node:assert/strict";
   *
   * const ca = "ab".repeat(32);
   * const policy = new Policy({
   *   groups: new Map([["app", {}]]),
   *   clients: new Map([["web", { name: "web", match: { cn: "web", issuer: ca }, groups: ["app"] }]]),
   *   limits: { maxConnectionsPerClient: 10 },
   * });
   * const cert = { spkiSha256: "00".repeat(32), serial: "1", cn: "web", sanUri: [], sanDns: [] };
   * assert.ok("client" in policy.identify(cert, { spkiSha256: ca }));
   * assert.deepEqual(policy.identify(cert, { spkiSha256: "cd".repeat(32) }), { deny: "unknown_identity" });
   * assert.deepEqual(policy.identify(cert), { deny: "unknown_identity" });
   * ```
   *
   * @param identity What the verified certificate says.
   * @param issuer The CA that issued it: its SPKI SHA-256, hex.
   * @returns The client, or why there is none.
   */
  identify(identity: CertIdentity, issuer?: { readonly spkiSha256: string }): IdentifyResult {
    const spki = identity.spkiSha256.toLowerCase();
    const serial = identity.serial.toLowerCase().replace(/^0+(?=.)/, "");
    const sanDns = identity.sanDns.map((name) => name.toLowerCase());
    const issuerSpki = issuer?.spkiSha256.toLowerCase();
    const candidates = new Set<ClientRule>();
    const gather = (index: Map<string, ClientRule[]>, key: string | undefined): void => {
      if (key === undefined) return;
      for (const rule of index.get(key) ?? []) candidates.add(rule);
    };
    gather(this.#bySpki, spki);
    gather(this.#bySerial, serial);
    gather(this.#byCn, identity.cn);
    for (const uri of identity.sanUri) gather(this.#bySanUri, uri);
    for (const name of sanDns) gather(this.#bySanDns, name);
    gather(this.#byIssuer, issuerSpki);

    let found: ClientRule | undefined;
    for (const rule of candidates) {
      const m = rule.match;
      if (m.spkiSha256 !== undefined && m.spkiSha256 !== spki) continue;
      if (m.serial !== undefined && m.serial !== serial) continue;
      if (m.cn !== undefined && m.cn !== identity.cn) continue;
      if (m.sanUri !== undefined && !identity.sanUri.includes(m.sanUri)) continue;
      if (m.sanDns !== undefined && !sanDns.includes(m.sanDns)) continue;
      if (m.issuer !== undefined && m.issuer !== issuerSpki) continue;
      if (found !== undefined) return { deny: "ambiguous_identity" };
      found = rule;
    }
    return found === undefined ? { deny: "unknown_identity" } : { client: found };
  }

  /**
   * Picks the group a client's connection goes to. On a group's dedicated listener the
   * group is that one. On the shared listener: the group named by the SNI name (any
   * letter case), else by the first offered ALPN protocol that names a group, else the
   * client's only group. An SNI name or ALPN protocol naming no group is ignored.
   *
   * @example Usage
   * ```ts
   * import { Policy } from "./policy.ts";
   * import assert from "node:assert/strict";
   *
   * const policy = new Policy({
   *   groups: new Map([["cache", {}], ["echo", {}]]),
   *   clients: new Map(),
   *   limits: { maxConnectionsPerClient: 10 },
   * });
   * const bob = { name: "bob", match: { cn: "bob" }, groups: ["echo"], limits: { concurrent: 10 } };
   * assert.deepEqual(policy.route(bob, {}), { group: "echo" });
   * assert.deepEqual(policy.route(bob, { alpn: ["h2", "cache"] }), {
   *   deny: "unauthorized_group",
   *   group: "cache",
   * });
   * assert.deepEqual(policy.route(bob, { listenerGroup: "cache" }), {
   *   deny: "unauthorized_group",
   *   group: "cache",
   * });
   * ```
   *
   * @param client The identified client.
   * @param request The listener's group, SNI name and ALPN protocols of the connection.
   * @returns The group, or why the connection is refused.
   */
  route(client: Pick<ClientRule, "name" | "groups">, request: RouteRequest = {}): RouteResult {
    const asked = this.requestedGroup(request);
    if (asked === undefined) {
      return client.groups.length === 1 ? { group: client.groups[0]! } : { deny: "no_group" };
    }
    return client.groups.includes(asked)
      ? { group: asked }
      : { deny: "unauthorized_group", group: asked };
  }

  /**
   * The group a connection asks for, whoever the client is: its dedicated listener's
   * group, else the group its SNI name names (any letter case, a trailing dot
   * ignored), else the first offered ALPN protocol that names a group.
   *
   * @example Usage
   * ```ts
   * import { Policy } from "./policy.ts";
   * import assert from "node:assert/strict";
   *
   * const policy = new Policy({
   *   groups: new Map([["cache", {}], ["echo", {}]]),
   *   clients: new Map(),
   *   limits: { maxConnectionsPerClient: 10 },
   * });
   * assert.equal(policy.requestedGroup({ sni: "Cache." }), "cache");
   * assert.equal(policy.requestedGroup({ alpn: ["h2", "echo"] }), "echo");
   * assert.equal(policy.requestedGroup({ sni: "example.com", alpn: ["h2"] }), undefined);
   * ```
   *
   * @param request The listener's group, SNI name and ALPN protocols of the connection.
   * @returns The group name, or `undefined` when the connection names none.
   */
  requestedGroup(request: RouteRequest): string | undefined {
    if (request.listenerGroup !== undefined) return request.listenerGroup;
    if (request.sni !== undefined && request.sni !== "") {
      const group = this.#groupsBySni.get(request.sni.toLowerCase().replace(/\.$/, ""));
      if (group !== undefined) return group;
    }
    for (const protocol of request.alpn ?? []) {
      if (this.#groups.has(protocol)) return protocol;
    }
    return undefined;
  }

  /**
   * The limits of a client: its own `max_connections` / `connection_rate`, else `[limits]`.
   *
   * @example Usage
   * ```ts
   * import { Policy } from "./policy.ts";
   * import assert from "node:assert/strict";
   *
   * const policy = new Policy({
   *   groups: new Map([["app", {}]]),
   *   clients: new Map([["ci", { name: "ci", match: { cn: "ci" }, groups: ["app"], maxConnections: 2 }]]),
   *   limits: { maxConnectionsPerClient: 10, connectionRate: { count: 100, per: 60_000 } },
   * });
   * assert.deepEqual(policy.limitsFor("ci"), { concurrent: 2, rate: { count: 100, per: 60_000 } });
   * ```
   *
   * @param clientName The client name (`[clients.NAME]`).
   * @returns Its concurrent connection cap and, when set, its rate limit, in the shape
   *   `ClientLimiter` takes.
   * @throws {RangeError} When no client has that name.
   */
  limitsFor(clientName: string): ClientLimits {
    const rule = this.#clients.get(clientName);
    if (rule === undefined) {
      throw new RangeError(
        `Cannot find client limits: no client named ${JSON.stringify(clientName)}`,
      );
    }
    return rule.limits;
  }
}

/** Frozen limits: a cap (`Infinity` for none) and an optional rate. */
function clientLimits(
  concurrent: number,
  rate: { count: number; per: number } | undefined,
): ClientLimits {
  return Object.freeze(
    rate === undefined
      ? { concurrent }
      : { concurrent, rate: Object.freeze({ count: rate.count, per: rate.per }) },
  );
}
