/**
 * Certificate revocation lists: {@linkcode RevocationList} checks client
 * certificates against the CRLs of `[tls] crl` after the handshake. (`createCrl`, in
 * `lib/pki/`, issues CRLs for tests and development PKIs.)
 *
 * Deno 2.9's `node:tls` accepts the `crl` option of `createServer` and ignores it (a
 * revoked client completes the handshake), so mtlb enforces CRLs itself, as OpenSSL
 * would with `X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL`: every certificate
 * of the path is checked against the CRL of the CA that actually issued it (name and
 * key: two CAs of one name during a rollover each have their own CRL), an expired
 * CRL refuses every certificate of its CA, and a CA without a CRL refuses its
 * certificates unless `[tls] crl_missing = "allow"` (fail closed).
 *
 * CRLs are read by a DER reader of their own (`_crl_reader.ts`) and their signatures
 * verified with `node:crypto`, so CRLs of large CAs (tens of thousands of entries;
 * 50,000 parse in about 80 ms) load, where `@peculiar/x509`'s parser stops at about
 * 2,500 entries; checking loads no X.509 library.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { type ParsedCrl, readCrl } from "./_crl_reader.ts";
import { canonicalName, nameText } from "./_name_text.ts";
import { TrustStore, TrustStoreError, type VerifiedPath } from "./trust_store.ts";
import type { TrustedAuthority } from "./trusted_authority.ts";

const MINUTE_MS = 60_000;
/** A CRL whose `thisUpdate` is at most this far ahead of the local clock is accepted. */
export const CRL_CLOCK_SKEW_MS = 5 * MINUTE_MS;
const CRL_BLOCK = /-----BEGIN (?:X509 )?CRL-----([A-Za-z0-9+/=\s]+?)-----END (?:X509 )?CRL-----/g;

/**
 * A CRL that cannot be used: unparsable, not issued by a trusted CA, badly signed,
 * or out of date.
 *
 * @example Usage
 * ```ts
 * import { CrlError, RevocationList } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(RevocationList.parse("not a CRL", ""), CrlError);
 * ```
 */
export class CrlError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CrlError";
  }
}

/** Facts about one CRL of a {@linkcode RevocationList}. */
export interface CrlInfo {
  /** The issuer's distinguished name. */
  issuer: string;
  /** SHA-256 of the SubjectPublicKeyInfo of the CA whose key signed it, hex. */
  issuerSpkiSha256: string;
  /** When the CRL was issued. */
  thisUpdate: Date;
  /** When the next CRL is due; absent when the CRL does not say. */
  nextUpdate?: Date;
  /** How many certificates it revokes. */
  revoked: number;
}

/**
 * The verdict of {@linkcode RevocationList.check}: `ok` (not revoked, or no CRL
 * covers the issuer), `revoked`, or `crl_expired` (the issuer's CRL is past its
 * `nextUpdate`).
 */
export type RevocationStatus = "ok" | "revoked" | "crl_expired";

/**
 * `[tls] crl_missing`: what a certificate whose issuer has no CRL gets: `"refuse"`
 * (the default, as OpenSSL-based proxies do) or `"allow"`.
 */
export type CrlMissingMode = "refuse" | "allow";

/** Why {@linkcode RevocationList.checkPath} refused a path. */
export type RevocationDenial = "revoked" | "crl_expired" | "crl_missing";

/** The verdict of {@linkcode RevocationList.checkPath}. */
export type RevocationVerdict =
  | { readonly status: "ok" }
  | { readonly status: RevocationDenial; readonly detail: string };

/** Options of {@linkcode RevocationList.checkPath}. */
export interface CheckPathOptions {
  /**
   * The current time, ms since the epoch.
   *
   * @default {Date.now()}
   */
  now?: number;
  /**
   * `[tls] crl_missing`: what a certificate whose issuer has no CRL gets.
   *
   * @default {"refuse"}
   */
  missing?: CrlMissingMode;
}

/** Options of {@linkcode RevocationList.parse}. */
export interface ParseCrlOptions {
  /**
   * The current time, ms since the epoch, to judge `thisUpdate` and `nextUpdate`.
   *
   * @default {Date.now()}
   */
  now?: number;
}

const OK: RevocationVerdict = Object.freeze({ status: "ok" });
/** The most CAs of the bundle above an anchor that are checked, against a loop of cross-signatures. */
const MAX_ANCESTORS = 8;

let createList: (lists: List[], store: TrustStore) => RevocationList;

interface List {
  info: CrlInfo;
  /** The ids of the CAs it speaks for (one CA: a name and a key). */
  ids: string[];
  nextUpdate: number;
  serials: Set<string>;
}

/**
 * The CRLs of `[tls] crl`, each verified against and tied to the CA of the bundle
 * that signed it, ready to check client certificates.
 *
 * A PEM file may hold several CRLs, one per CA (a root and its intermediates, when
 * the intermediates are in the CA bundle too). Each must be signed by a CA of the
 * bundle whose subject is the CRL's issuer (the one its authority key identifier
 * names, when it has one), be current (`thisUpdate` not in the future beyond
 * {@linkcode CRL_CLOCK_SKEW_MS}, `nextUpdate` not past), be signed with ECDSA, RSA
 * PKCS#1 v1.5 or RSA-PSS over SHA-2, or Ed25519/Ed448, and carry no critical
 * extension (delta, partitioned and indirect CRLs are not supported). A CA has at
 * most one CRL in the file.
 *
 * @example Usage
 * ```ts
 * import { createCa, createCrl, issueCertificate, RevocationList, TrustStore } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const alice = await issueCertificate(ca, { commonName: "alice", kind: "client" });
 * const bob = await issueCertificate(ca, { commonName: "bob", kind: "client" });
 * const store = TrustStore.fromPem(ca.certPem);
 * const list = await RevocationList.parse(await createCrl(ca, [bob.serial]), store);
 * const check = (der: Uint8Array) => {
 *   const result = store.verify([der]);
 *   return result.ok ? list.checkPath(result.path).status : result.reason;
 * };
 * assert.equal(check(alice.der), "ok");
 * assert.equal(check(bob.der), "revoked");
 * ```
 */
export class RevocationList {
  static {
    createList = (lists, store) => new RevocationList(lists, store);
  }

  #lists: List[];
  #byId = new Map<string, List>();
  #store: TrustStore;

  /**
   * Use {@linkcode RevocationList.parse}.
   *
   * @param lists The verified lists.
   * @param store The CA bundle they were verified against.
   */
  private constructor(lists: List[], store: TrustStore) {
    this.#lists = lists;
    this.#store = store;
    for (const list of lists) for (const id of list.ids) this.#byId.set(id, list);
  }

  /**
   * Parses CRLs and ties each to the CA of the bundle that signed it.
   *
   * @param crl PEM text (one or more `X509 CRL` blocks), or one DER-encoded CRL.
   * @param ca The CA bundle: PEM, or a {@linkcode TrustStore} read from it.
   * @param options The current time.
   * @returns The verified lists.
   * @throws {CrlError} When there is no CRL, one cannot be parsed, no CA of the bundle
   *   signed it, the CA that did may not sign CRLs or has two CRLs in the file, it is
   *   not yet valid or expired, it has a critical extension, or the bundle cannot be read.
   */
  static parse(
    crl: string | Uint8Array,
    ca: string | TrustStore,
    options: ParseCrlOptions = {},
  ): Promise<RevocationList> {
    try {
      return Promise.resolve(parseLists(crl, ca, options.now ?? Date.now()));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The CRLs, in file order.
   *
   * @returns One record per CRL.
   */
  get lists(): CrlInfo[] {
    return this.#lists.map((list) => ({ ...list.info }));
  }

  /**
   * The earliest `nextUpdate` of the CRLs: when the balancer needs new ones.
   *
   * @returns The date, or `undefined` when no CRL has a `nextUpdate`.
   */
  get nextUpdate(): Date | undefined {
    const earliest = Math.min(...this.#lists.map((list) => list.nextUpdate));
    return earliest === Infinity ? undefined : new Date(earliest);
  }

  /**
   * Checks every certificate of a path against the CRL of the CA that issued it: the
   * presented certificates (the leaf, and the intermediates the client sent), then the
   * anchor and its ancestors in the bundle against their issuers' CRLs (an
   * intermediate CA of the bundle revoked by its root's CRL refuses its clients). A
   * certificate issued by a CA without a CRL in the file (an intermediate the client
   * sent but the bundle lacks has none) is `crl_missing` unless `missing` is
   * `"allow"`. Costs a map and a set lookup per certificate.
   *
   * @example Usage
   * ```ts
   * import { createCa, createCrl, createIntermediateCa, issueCertificate } from "@mtlb/mtlb";
   * import { RevocationList, TrustStore } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const root = await createCa({ commonName: "Root" });
   * const issuing = await createIntermediateCa(root, { commonName: "Issuing" });
   * const leaf = await issueCertificate(issuing, { commonName: "svc", kind: "client" });
   * const store = TrustStore.fromPem(root.certPem + issuing.certPem);
   * const path = store.locate([leaf.der]);
   * assert.ok(path.ok);
   *
   * // Only the root has a CRL: the intermediate's certificates have none.
   * const rootOnly = await RevocationList.parse(await createCrl(root, []), store);
   * assert.equal(rootOnly.checkPath(path.path).status, "crl_missing");
   * assert.equal(rootOnly.checkPath(path.path, { missing: "allow" }).status, "ok");
   *
   * // The root revokes the intermediate.
   * const revoked = await RevocationList.parse(
   *   (await createCrl(root, [issuing.serial])) + (await createCrl(issuing, [])),
   *   store,
   * );
   * assert.equal(revoked.checkPath(path.path).status, "revoked");
   * ```
   *
   * @param path A path from {@linkcode TrustStore.verify} or {@linkcode TrustStore.locate}.
   * @param options The time and `[tls] crl_missing`.
   * @returns `ok`, or `revoked`, `crl_expired` or `crl_missing` with a detail for the log.
   */
  checkPath(path: VerifiedPath, options: CheckPathOptions = {}): RevocationVerdict {
    const now = options.now ?? Date.now();
    const allowMissing = options.missing === "allow";
    const certificates = path.certificates;
    const last = certificates.length - 1;
    // A revocation anywhere on the path outranks a missing or expired CRL elsewhere.
    let pending: RevocationVerdict | undefined;
    if (last > 0 && !allowMissing) {
      pending = {
        status: "crl_missing",
        detail: `certificate serial ${
          certificates[0]!.serial
        } was issued by an intermediate CA the client sent, which is not in [tls] ca and so has no CRL`,
      };
    }
    const leafward = certificates[last];
    if (leafward !== undefined) {
      const verdict = this.#judge(leafward.serial, undefined, path.anchor, now, allowMissing);
      if (verdict.status === "revoked") return verdict;
      if (verdict !== OK) pending ??= verdict;
    }
    let ca = path.anchor;
    for (let depth = 0; depth < MAX_ANCESTORS && ca.signedBy !== undefined; depth++) {
      const verdict = this.#judge(ca.serial, ca, ca.signedBy, now, allowMissing);
      if (verdict.status === "revoked") return verdict;
      if (verdict !== OK) pending ??= verdict;
      ca = ca.signedBy;
    }
    return pending ?? OK;
  }

  /**
   * Checks a client certificate against the CRL of the CA of the bundle that issued
   * it (by name, and by signature when two CAs share the name), as before
   * {@linkcode RevocationList.checkPath}: intermediates are not checked, and a
   * certificate whose issuer has no CRL is `ok`.
   *
   * @deprecated Use {@linkcode RevocationList.checkPath}, which checks the whole path
   *   and refuses certificates of a CA without a CRL.
   *
   * @param der The certificate, DER (`getPeerCertificate(true).raw`).
   * @param serial Its serial number, canonical hex (`identityFromCertificate(der).serial`).
   * @param now The current time, ms since the epoch; `Date.now()` when omitted.
   * @returns `ok`, `revoked` or `crl_expired`.
   * @throws {TypeError} When `der` is not a DER certificate.
   */
  check(der: Uint8Array, serial: string, now: number = Date.now()): RevocationStatus {
    const authority = this.#store.issuerOf(der)?.authority;
    const list = authority === undefined ? undefined : this.#byId.get(authority.id);
    if (list === undefined) return "ok";
    if (now >= list.nextUpdate) return "crl_expired";
    return list.serials.has(serial) ? "revoked" : "ok";
  }

  /** Judges one certificate (`ca`, when it is a CA of the bundle) against `issuer`'s CRL. */
  #judge(
    serial: string,
    ca: TrustedAuthority | undefined,
    issuer: TrustedAuthority,
    now: number,
    allowMissing: boolean,
  ): RevocationVerdict {
    const list = this.#byId.get(issuer.id);
    if (list === undefined) {
      return allowMissing ? OK : {
        status: "crl_missing",
        detail: `CA ${issuer.subject} (spki_sha256 ${issuer.spkiSha256}) has no CRL in [tls] crl`,
      };
    }
    if (now >= list.nextUpdate) {
      return {
        status: "crl_expired",
        detail: `the CRL of CA ${issuer.subject} is past its nextUpdate (${
          new Date(list.nextUpdate).toISOString()
        })`,
      };
    }
    if (!list.serials.has(serial)) return OK;
    return {
      status: "revoked",
      detail: ca === undefined
        ? `serial ${serial} is revoked by the CRL of CA ${issuer.subject}`
        : `CA ${ca.subject} (serial ${serial}) is revoked by the CRL of CA ${issuer.subject}`,
    };
  }
}

/**
 * Parses CRLs with a DER reader of its own: a CRL of a large CA holds tens of
 * thousands of entries, more ASN.1 nodes than `@peculiar/x509`'s parser accepts
 * (about 2,500 entries). Signatures are checked by {@linkcode TrustStore.signersOf}.
 */
function parseLists(
  crl: string | Uint8Array,
  ca: string | TrustStore,
  now: number,
): RevocationList {
  const ders = splitCrls(crl);
  let store: TrustStore;
  try {
    store = typeof ca === "string" ? TrustStore.fromPem(ca) : ca;
  } catch (error) {
    if (!(error instanceof TrustStoreError)) throw error;
    throw new CrlError(`Cannot use the CRL: ${error.message}`, { cause: error });
  }
  const lists: List[] = [];
  const owners = new Map<string, number>();
  for (const [index, der] of ders.entries()) {
    const where = ders.length === 1 ? "the CRL" : `CRL number ${index + 1}`;
    let parsed: ParsedCrl;
    try {
      parsed = readCrl(der);
    } catch (error) {
      throw new CrlError(`Cannot use ${where}: it cannot be parsed: ${message(error)}`, {
        cause: error,
      });
    }
    const issuer = nameText(parsed.issuerDer);
    const of = `${where} of ${issuer}`;
    if (parsed.critical !== undefined) {
      throw new CrlError(
        `Cannot use ${of}: critical extension ${parsed.critical} is not supported (delta, partitioned and indirect CRLs are not)`,
      );
    }
    if (typeof parsed.algorithm === "string") {
      throw new CrlError(
        `Cannot use ${of}: signature algorithm ${parsed.algorithm} is not supported (ECDSA, RSA PKCS#1 v1.5 or PSS with SHA-2, Ed25519, Ed448)`,
      );
    }
    const canonical = canonicalName(issuer);
    const named = store.authorities.filter((a) => canonicalName(a.subject) === canonical);
    if (named.length === 0) {
      throw new CrlError(
        `Cannot use ${where}: its issuer ${issuer} is not a certificate of the CA bundle`,
      );
    }
    const signers = store.signersOf({
      issuer: parsed.issuerDer,
      ...(parsed.authorityKeyId === undefined ? {} : { authorityKeyId: parsed.authorityKeyId }),
      data: parsed.tbs,
      algorithm: parsed.algorithmDer,
      signature: parsed.signature,
    });
    if (signers.length === 0) {
      const keyId = parsed.authorityKeyId === undefined
        ? ""
        : `; its authority key identifier is ${parsed.authorityKeyId}, the CAs of that name have ${
          named.map((a) => a.keyId ?? "none").join(", ")
        }`;
      throw new CrlError(
        `Cannot use ${of}: its signature does not verify with the key of any CA of that name in the CA bundle${keyId}`,
      );
    }
    const signer = signers.find((a) => a.signsCrls);
    if (signer === undefined) {
      throw new CrlError(
        `Cannot use ${of}: the CA that signed it may not sign CRLs (its keyUsage lacks cRLSign)`,
      );
    }
    const ids = [...new Set(signers.filter((a) => a.signsCrls).map((a) => a.id))];
    for (const id of ids) {
      const other = owners.get(id);
      if (other !== undefined) {
        throw new CrlError(
          `Cannot use ${of}: CRL number ${
            other + 1
          } is from the same CA (spki_sha256 ${signer.spkiSha256}); keep one CRL per CA, the newest`,
        );
      }
      owners.set(id, index);
    }
    const { thisUpdate, nextUpdate } = parsed;
    if (thisUpdate.getTime() > now + CRL_CLOCK_SKEW_MS) {
      throw new CrlError(`Cannot use ${of}: it is not valid until ${thisUpdate.toISOString()}`);
    }
    if (nextUpdate !== undefined && nextUpdate.getTime() <= now) {
      throw new CrlError(
        `Cannot use ${of}: it expired on ${nextUpdate.toISOString()} (its nextUpdate); fetch a new one`,
      );
    }
    const info: CrlInfo = {
      issuer,
      issuerSpkiSha256: signer.spkiSha256,
      thisUpdate,
      revoked: parsed.serials.size,
    };
    if (nextUpdate !== undefined) info.nextUpdate = nextUpdate;
    lists.push({
      info,
      ids,
      nextUpdate: nextUpdate?.getTime() ?? Infinity,
      serials: parsed.serials,
    });
  }
  return createList(lists, store);
}

/**
 * Converts CRLs to PEM text: PEM input is returned with its CRL blocks normalised to
 * `X509 CRL`, DER input is encoded.
 *
 * @example Usage
 * ```ts
 * import { createCa, createCrl, crlToPem } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const pem = await createCrl(await createCa({ commonName: "Example CA" }), []);
 * assert.equal(crlToPem(pem.replaceAll("X509 CRL", "CRL")), pem);
 * ```
 *
 * @param crl PEM text or one DER-encoded CRL.
 * @returns PEM text, one block per CRL.
 * @throws {CrlError} When there is no CRL in the input.
 */
export function crlToPem(crl: string | Uint8Array): string {
  return splitCrls(crl).map(pemBlock).join("");
}

/** A CRL as a PEM block, 64 base64 characters a line, as OpenSSL writes it. */
function pemBlock(der: Uint8Array): string {
  const base64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  const lines = base64.match(/.{1,64}/g) ?? [];
  return ["-----BEGIN X509 CRL-----", ...lines, "-----END X509 CRL-----", ""].join("\n");
}

function splitCrls(crl: string | Uint8Array): Uint8Array<ArrayBuffer>[] {
  if (crl instanceof Uint8Array && crl[0] === 0x30) return [crl.slice()];
  const text = typeof crl === "string" ? crl : new TextDecoder().decode(crl);
  const ders = [...text.matchAll(CRL_BLOCK)].map((m) => {
    try {
      const binary = atob(m[1]!.replace(/\s+/g, ""));
      const bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      return bytes;
    } catch (error) {
      throw new CrlError(`Cannot use the CRL: a PEM block is not valid base64`, { cause: error });
    }
  });
  if (ders.length === 0) {
    throw new CrlError(
      'Cannot use the CRL: expected PEM "-----BEGIN X509 CRL-----" blocks or DER, found neither',
    );
  }
  return ders;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
