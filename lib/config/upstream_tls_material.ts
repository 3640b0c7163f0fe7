/**
 * {@linkcode loadUpstreamTlsMaterial}: reads the CA bundle, client certificate and key
 * each group's `tls` table names, and checks that they fit together.
 *
 * @module
 */
import { fileKeys } from "./_file_keys.ts";
import { keyPath } from "./_key_lines.ts";
import type { Config, UpstreamTlsConfig } from "./types.ts";

/** Facts about one certificate of a group's `[groups.<name>.tls]`, for `check`, metrics and status. */
export interface UpstreamCertificateInfo {
  /** Which file: the CA bundle upstreams must chain to, or the client certificate presented to them. */
  which: "ca" | "cert";
  /** Subject distinguished name, as node:crypto prints it. */
  subject: string;
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
  notAfter: Date;
}

/**
 * The PEM texts a group's `[groups.<name>.tls]` names, checked: what mtlb verifies its
 * upstreams with, and presents to them.
 */
export interface UpstreamTlsMaterial {
  /** CA bundle, PEM. */
  ca: string;
  /**
   * Client certificate chain, PEM.
   *
   * @default {undefined}
   */
  cert?: string;
  /**
   * Its private key, PEM.
   *
   * @default {undefined}
   */
  key?: string;
  /**
   * The name sent as SNI and verified; the upstream's host when absent.
   *
   * @default {undefined}
   */
  serverName?: string;
  /** Every certificate of `ca` and `cert`, in file order. */
  certificates: UpstreamCertificateInfo[];
}

/**
 * Reads the files of every group's `tls` table: each certificate of `ca` and `cert`
 * parses, `key` is an unencrypted PEM private key, and `cert` was issued for it.
 * Certificate expiry is reported, not judged.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@mtlb/mtlb";
 * import { loadUpstreamTlsMaterial } from "./upstream_tls_material.ts";
 *
 * const upstreams = await loadUpstreamTlsMaterial(await loadConfig("config/lb.toml"));
 * console.log([...upstreams.keys()]); // the groups with TLS to their upstreams
 * ```
 *
 * @param config The config (its `path` is used in errors).
 * @returns The material, by group name; groups without `tls` are absent.
 * @throws {ConfigError} With key `groups.<name>.tls.ca`, `.cert` or `.key` when a file
 *   cannot be read or parsed, or with key `groups.<name>.tls.cert` when certificate
 *   and key do not match.
 */
export async function loadUpstreamTlsMaterial(
  config: Pick<Config, "path" | "groups">,
): Promise<Map<string, UpstreamTlsMaterial>> {
  const entries = [...config.groups.values()].flatMap((group) =>
    group.tls === undefined ? [] : [[group.name, group.tls] as const]
  );
  const loaded = await Promise.all(
    entries.map(([name, tls]) => loadGroup(config.path, name, tls).then((m) => [name, m] as const)),
  );
  return new Map(loaded);
}

async function loadGroup(
  path: string,
  group: string,
  tls: UpstreamTlsConfig,
): Promise<UpstreamTlsMaterial> {
  const { read, certificates: parse, keyPair } = fileKeys(path, tls);
  const at = keyPath(["groups", group, "tls"]);
  const certificates: UpstreamCertificateInfo[] = [];
  const parseCerts = (which: "ca" | "cert", file: string, pem: string) =>
    parse(`${at}.${which}`, file, pem).map(({ cert, dates }) => {
      certificates.push({ which, ...dates });
      return cert;
    });
  // Read together, awaited in key order: the first key that fails is reported.
  const reads = [
    read(`${at}.ca`, tls.ca, Deno.readTextFile),
    tls.cert === undefined ? undefined : read(`${at}.cert`, tls.cert, Deno.readTextFile),
    tls.key === undefined ? undefined : read(`${at}.key`, tls.key, Deno.readTextFile),
  ] as const;
  for (const pending of reads) pending?.catch(() => {});
  const ca = await reads[0];
  const cert = await reads[1];
  const key = await reads[2];
  parseCerts("ca", tls.ca, ca);
  const material: UpstreamTlsMaterial = { ca, certificates };
  if (tls.serverName !== undefined) material.serverName = tls.serverName;
  if (cert === undefined || key === undefined) return material;
  const leaf = parseCerts("cert", tls.cert!, cert)[0]!;
  keyPair([`${at}.cert`, tls.cert!, leaf], [`${at}.key`, tls.key!, key]);
  return { ...material, cert, key };
}
