/**
 * Client rules a certificate of another CA could satisfy, and `issuer` pins that
 * name no CA of the bundle.
 *
 * @module
 */
import type { Config } from "../config/mod.ts";
import type { TrustedAuthority } from "../identity/trust_store.ts";

/**
 * Warns about client rules a certificate of another CA could satisfy: when the bundle
 * holds more than one CA that issues certificates, each rule that pins neither the
 * issuing CA (`issuer`) nor the client's key (`spki_sha256`) matches a certificate of
 * any of them with the right name or serial. Also warns about `issuer` pins that
 * name no CA of the bundle (they match only certificates issued by an intermediate
 * the clients send).
 *
 * @example Usage
 * ```ts
 * import { checkIssuerPins } from "./issuer_pins.ts";
 * import { parseConfig } from "../config/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `[server]\nlisten = "127.0.0.1:8443"\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n` +
 *     `[groups.app]\nupstreams = ["127.0.0.1:7001"]\n` +
 *     `[clients.web]\nmatch = { cn = "web" }\ngroups = ["app"]\n`,
 *   { path: "lb.toml" },
 * );
 * const ca = { subject: "CN=CA", spkiSha256: "ab".repeat(32), issuesCertificates: true };
 * assert.deepEqual(checkIssuerPins(config, [ca]), []);
 * assert.match(checkIssuerPins(config, [ca, { ...ca, spkiSha256: "cd".repeat(32) }])[0]!, /clients web/);
 * ```
 *
 * @param config The configuration.
 * @param authorities The CAs of `tls.ca` (`TlsMaterial.authorities`).
 * @returns One sentence per warning.
 */
export function checkIssuerPins(
  config: Pick<Config, "clients">,
  authorities: readonly Pick<TrustedAuthority, "subject" | "spkiSha256" | "issuesCertificates">[],
): string[] {
  const warnings: string[] = [];
  const issuing = authorities.filter((a) => a.issuesCertificates);
  const loose = [...config.clients.values()].filter((c) =>
    c.match.issuer === undefined && c.match.spkiSha256 === undefined
  );
  if (issuing.length > 1 && loose.length > 0) {
    warnings.push(
      `"tls.ca" holds ${issuing.length} CAs that can issue client certificates, and clients ${
        loose.map((c) => c.name).join(", ")
      } match without "issuer": a certificate from any of these CAs with the same name, serial or SAN is taken for them. Pin each to its CA with match.issuer = the CA's spki_sha256 ("check" lists them)`,
    );
  }
  const known = new Set(authorities.map((a) => a.spkiSha256));
  for (const client of config.clients.values()) {
    const pin = client.match.issuer;
    if (pin !== undefined && !known.has(pin)) {
      warnings.push(
        `"clients.${client.name}.match.issuer" is the key of no CA of "tls.ca": it matches only certificates issued by an intermediate CA that clients send`,
      );
    }
  }
  return warnings;
}
