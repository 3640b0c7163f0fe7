/**
 * Whether the server certificate names the groups clients choose by SNI on the
 * shared listener: a client that checks host names refuses the server for a name
 * the certificate does not cover.
 *
 * @module
 */
import { isIP } from "node:net";
import { X509Certificate } from "node:crypto";
import type { Config, TlsMaterial } from "../config/mod.ts";
import { identityFromCertificate } from "../identity/certificate.ts";

/**
 * The group names a client can ask for by SNI: with a shared listener (`[server]
 * listen`), every group's name that is not an IP address (SNI carries host names
 * only), lower case. Empty without a shared listener: a group's own listener needs
 * no SNI.
 *
 * @example Usage
 * ```ts
 * import { sniGroupNames } from "./sni_coverage.ts";
 * import assert from "node:assert/strict";
 *
 * const groups = new Map([["Cache", {}], ["echo", {}], ["10.0.0.1", {}]]);
 * assert.deepEqual(sniGroupNames({ server: { listen: "127.0.0.1:8443" }, groups }), ["cache", "echo"]);
 * assert.deepEqual(sniGroupNames({ server: {}, groups }), []);
 * ```
 *
 * @param config The configuration (its `[server] listen` and groups).
 * @returns The names, in config order.
 */
export function sniGroupNames(
  config: { server: { listen?: string }; groups: ReadonlyMap<string, unknown> },
): string[] {
  if (config.server.listen === undefined) return [];
  return [...config.groups.keys()].filter((name) => isIP(name) === 0).map((name) =>
    name.toLowerCase()
  );
}

/**
 * Whether a certificate DNS name covers a host name, as RFC 6125 (section 6.4) has
 * clients match: equal ignoring letter case and a trailing dot, or a wildcard `*`
 * as the whole leftmost label standing for exactly one label (`*.example.com`
 * covers `a.example.com`, neither `example.com` nor `a.b.example.com`). Partial
 * wildcards (`a*.example.com`) cover nothing: most clients refuse them.
 *
 * @example Usage
 * ```ts
 * import { dnsNameCovers } from "./sni_coverage.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(dnsNameCovers("*.example.com", "cache.example.com"));
 * assert.ok(!dnsNameCovers("*.example.com", "a.cache.example.com"));
 * assert.ok(dnsNameCovers("Cache", "cache"));
 * ```
 *
 * @param pattern A DNS name of the certificate.
 * @param host The name a client connects by.
 * @returns `true` when a client that checks host names accepts the certificate for `host`.
 */
export function dnsNameCovers(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, "");
  const h = host.toLowerCase().replace(/\.$/, "");
  if (!p.startsWith("*.")) return !p.includes("*") && p === h;
  const rest = p.slice(2);
  if (rest.includes("*") || !rest.includes(".")) return false;
  const dot = h.indexOf(".");
  return dot > 0 && h.slice(dot + 1) === rest;
}

/**
 * The groups clients choose by SNI on the shared listener ({@linkcode sniGroupNames})
 * that none of the server certificate's DNS names covers ({@linkcode dnsNameCovers}):
 * a client that checks host names refuses the server when it connects by such a name.
 *
 * @example Usage
 * ```ts
 * import { uncoveredSniGroups } from "./sni_coverage.ts";
 * import assert from "node:assert/strict";
 *
 * const config = { server: { listen: "127.0.0.1:8443" }, groups: new Map([["cache", {}], ["echo", {}]]) };
 * assert.deepEqual(uncoveredSniGroups(config, ["localhost", "echo"]), ["cache"]);
 * ```
 *
 * @param config The configuration.
 * @param dnsNames The DNS subject alternative names of the server certificate.
 * @returns The group names not covered, in config order.
 */
export function uncoveredSniGroups(
  config: { server: { listen?: string }; groups: ReadonlyMap<string, unknown> },
  dnsNames: readonly string[],
): string[] {
  return sniGroupNames(config).filter((group) =>
    !dnsNames.some((pattern) => dnsNameCovers(pattern, group))
  );
}

/**
 * The warning `check` and `serve` give about groups the server certificate does not
 * name ({@linkcode uncoveredSniGroups}), starting in lower case.
 *
 * @param config The configuration.
 * @param tls Its certificates (the server certificate is the first one of `tls.cert`).
 * @returns The sentence, or `undefined` when every such group is named.
 */
export function sniCoverageWarning(config: Config, tls: TlsMaterial): string | undefined {
  const pem = tls.cert.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/)?.[0];
  if (pem === undefined) return undefined;
  const dnsNames = identityFromCertificate(new Uint8Array(new X509Certificate(pem).raw)).sanDns;
  const missing = uncoveredSniGroups(config, dnsNames);
  if (missing.length === 0) return undefined;
  return `the server certificate ("tls.cert", ${config.tls.cert}) does not name group${
    missing.length === 1 ? "" : "s"
  } ${missing.join(", ")} among its DNS names (${
    dnsNames.length === 0 ? "it has none" : dnsNames.join(", ")
  }): a client that checks host names (curl, browsers, most TLS libraries) refuses the server when it asks for ${
    missing.length === 1 ? "this group" : "these groups"
  } by SNI on the shared listener; issue the certificate for these names too (for the development PKI: remove server.crt and server.key, then main.ts certs --server-name NAME), or have such clients choose by ALPN or a group's own listener`;
}
