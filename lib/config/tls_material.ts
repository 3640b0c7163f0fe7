/**
 * {@linkcode loadTlsMaterial}: reads the certificates, key and CRLs a config's `[tls]`
 * section names, and checks that they fit together.
 *
 * @module
 */
import { CrlError, type CrlInfo, crlToPem, RevocationList } from "../identity/crl.ts";
import { type TrustedAuthority, TrustStore, TrustStoreError } from "../identity/trust_store.ts";
import type { Config } from "./types.ts";
import { errorMessage } from "../core/errors.ts";
import { fileKeys } from "./_file_keys.ts";
import { loadUpstreamTlsMaterial, type UpstreamTlsMaterial } from "./upstream_tls_material.ts";

/** Facts about one certificate in {@linkcode TlsMaterial}, for `check` and expiry warnings. */
export interface TlsCertificateInfo {
  /** Which config key the certificate came from. */
  key: "tls.ca" | "tls.cert";
  /** Subject distinguished name, as node:crypto prints it. */
  subject: string;
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
  notAfter: Date;
}

/** The PEM texts a config's `[tls]` section names, checked. */
export interface TlsMaterial {
  /** CA bundle, PEM. */
  ca: string;
  /** Server certificate chain, PEM. */
  cert: string;
  /** Server private key, PEM. */
  key: string;
  /**
   * Certificate revocation lists, PEM (DER files are converted).
   *
   * @default {undefined}
   */
  crl?: string;
  /** Every certificate of `ca` and `cert`, in file order. */
  certificates: TlsCertificateInfo[];
  /**
   * The CRLs of `crl`, verified, in file order.
   *
   * @default {undefined}
   */
  crls?: CrlInfo[];
  /**
   * The CAs of `ca`, in file order, with their SPKI SHA-256 (what `match.issuer` pins).
   * {@linkcode loadTlsMaterial} always sets it.
   *
   * @default {undefined}
   */
  authorities?: readonly TrustedAuthority[];
  /**
   * The TLS material of each group with `[groups.<name>.tls]`, by group name.
   *
   * @default {undefined}
   */
  upstreams?: ReadonlyMap<string, UpstreamTlsMaterial>;
}

/**
 * Reads the CA bundle, server certificate, private key and CRL a config names (and,
 * given its groups, the files of their `tls` tables) and
 * checks them: each certificate parses, the key parses (unencrypted), the first
 * certificate of `tls.cert` belongs to the key, the CA bundle can be read as a
 * `TrustStore`, and each CRL is signed by a CA of the bundle and current (see
 * `RevocationList.parse`). Certificate expiry is reported, not judged.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig, loadTlsMaterial } from "@mtlb/mtlb";
 *
 * const material = await loadTlsMaterial(await loadConfig("config/lb.toml"));
 * for (const cert of material.certificates) console.log(cert.subject, cert.notAfter);
 * ```
 *
 * @param config The config (its `path` is used in errors).
 * @returns The PEM texts and certificate facts.
 * @throws {ConfigError} With key `tls.ca`, `tls.cert`, `tls.key` or `tls.crl` when a file
 *   cannot be read or parsed (a CA certificate whose key is not supported included),
 *   with key `tls.cert` when certificate and key do not match,
 *   or with key `tls.crl` when a CRL is not from a CA of the bundle, badly signed,
 *   expired or not yet valid; for the groups' `tls` files, as `loadUpstreamTlsMaterial`.
 */
export async function loadTlsMaterial(
  config: Pick<Config, "path" | "tls"> & Partial<Pick<Config, "groups">>,
): Promise<TlsMaterial> {
  const material = await loadListenerMaterial(config);
  if (config.groups === undefined) return material;
  const upstreams = await loadUpstreamTlsMaterial({ path: config.path, groups: config.groups });
  return upstreams.size === 0 ? material : { ...material, upstreams };
}

async function loadListenerMaterial(config: Pick<Config, "path" | "tls">): Promise<TlsMaterial> {
  const { tls } = config;
  const { fail, read, certificates: parse, keyPair } = fileKeys(config.path, tls);
  const certificates: TlsCertificateInfo[] = [];
  const parseCerts = (key: "tls.ca" | "tls.cert", file: string, pem: string) =>
    parse(key, file, pem).map(({ cert, dates }) => {
      certificates.push({ key, ...dates });
      return cert;
    });

  // Read together, awaited in key order: when several fail, the first key is reported,
  // whichever read failed first.
  const reads = [
    read("tls.ca", tls.ca, Deno.readTextFile),
    read("tls.cert", tls.cert, Deno.readTextFile),
    read("tls.key", tls.key, Deno.readTextFile),
    tls.crl === undefined ? undefined : read("tls.crl", tls.crl, Deno.readFile),
  ] as const;
  for (const pending of reads) pending?.catch(() => {});
  const ca = await reads[0];
  const cert = await reads[1];
  const key = await reads[2];
  const crlBytes = await reads[3];
  parseCerts("tls.ca", tls.ca, ca);
  let store;
  try {
    store = TrustStore.fromPem(ca);
  } catch (error) {
    if (!(error instanceof TrustStoreError)) throw error;
    const why = errorMessage(error).replace(/^Cannot read the CA bundle: /, "");
    return fail("tls.ca", `cannot be used (${JSON.stringify(tls.ca)}): ${why}`, error);
  }
  const authorities = store.authorities;
  const leaf = parseCerts("tls.cert", tls.cert, cert)[0]!;
  keyPair(["tls.cert", tls.cert, leaf], ["tls.key", tls.key, key]);
  if (crlBytes === undefined) return { ca, cert, key, certificates, authorities };
  let crl;
  try {
    crl = crlToPem(crlBytes);
  } catch (error) {
    if (!(error instanceof CrlError)) throw error;
    const file = JSON.stringify(tls.crl);
    const expected = `a PEM CRL ("-----BEGIN X509 CRL-----") or a DER CRL`;
    return fail("tls.crl", `must hold ${expected}, ${file} holds neither`, error);
  }
  const list = await RevocationList.parse(crl, store).catch((error) => {
    if (!(error instanceof CrlError)) throw error;
    return fail(
      "tls.crl",
      `cannot be used: ${error.message.replace(/^Cannot use /, "")} (in ${
        JSON.stringify(tls.crl)
      })`,
      error,
    );
  });
  return { ca, cert, key, crl, certificates, crls: list.lists, authorities };
}
