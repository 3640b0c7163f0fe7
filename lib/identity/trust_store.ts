/**
 * The CAs of `[tls] ca`, indexed for the checks mtlb makes after a TLS handshake:
 * which CA issued a client certificate ({@linkcode TrustStore.issuerOf}), the path a
 * verified chain takes ({@linkcode TrustStore.locate}), and a full verification of a
 * chain in JavaScript ({@linkcode TrustStore.verify}) for the connections the runtime
 * did not verify: resumed TLS sessions, and live connections after a reload.
 *
 * Every certificate of the bundle is a trust anchor, as rustls (under Deno's
 * `node:tls`) treats them: a path ends at the first CA of the bundle it reaches. The
 * CAs above an anchor that are in the bundle too (an intermediate's root) are its
 * ancestors: their validity and path length limits apply, and their CRLs cover it.
 *
 * Signatures are verified with `node:crypto`, which is synchronous on Deno 2.9 but
 * slow for ECDSA (about 0.7 ms for P-256, 1.7 ms for P-384; Ed25519 60 µs, RSA-2048
 * 0.2 ms). Verified signatures are remembered in a {@linkcode SignatureCache} keyed by
 * the SHA-256 of the signed certificate and of the signer's key, so a client's chain
 * costs that once, and a few µs afterwards.
 *
 * @module
 */
import type { KeyObject } from "node:crypto";
import {
  parseCertificate,
  type ParsedCertificate,
  publicKeyOf,
  readSignatureAlgorithm,
  readTlv,
  sameBytes,
  SEQUENCE,
  type SignatureAlgorithm,
  verifySignature,
} from "./_x509.ts";
import {
  anchorProblem,
  type ChainFailure,
  ekuProblem,
  type KeyOf,
  lazyText,
  MAX_INTERMEDIATES,
  PathSearch,
  type Presented,
  presentedKey,
  presentedSpki,
  readPresented,
  sha256,
  validityProblem,
} from "./_chain_search.ts";
import type { ClientEkuMode } from "./certificate.ts";
import { canonicalName, nameKey, nameText } from "./_name_text.ts";
import { type Anchor, linkAnchors, oneCertificatePerKey, readAnchor } from "./_trust_anchors.ts";
import { SignatureCache } from "./signature_cache.ts";
import { DerCache } from "./_der_cache.ts";
import type { IssuerMatch, TrustedAuthority } from "./trusted_authority.ts";

export { CHAIN_FAILURES, type ChainFailure, MAX_INTERMEDIATES } from "./_chain_search.ts";
export type { IssuerMatch, TrustedAuthority } from "./trusted_authority.ts";

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----/g;

/**
 * A CA bundle that cannot be used: no certificate, or one that cannot be parsed or
 * whose key is not supported.
 *
 * @example Usage
 * ```ts
 * import { TrustStore, TrustStoreError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.throws(() => TrustStore.fromPem("no PEM here"), TrustStoreError);
 * ```
 */
export class TrustStoreError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TrustStoreError";
  }
}

/** One presented certificate on a {@linkcode VerifiedPath}. */
export interface PathCertificate {
  /** The certificate, DER. */
  readonly der: Uint8Array;
  /** Serial number, lowercase hex without leading zeros (what CRLs list). */
  readonly serial: string;
  /** Start of validity, ms since the epoch. */
  readonly notBefore: number;
  /** End of validity, ms since the epoch. */
  readonly notAfter: number;
}

/** A path from a client certificate to a CA of the bundle. */
export interface VerifiedPath {
  /** The presented certificates on the path, leaf first, each issued by the next; the last is issued by `anchor`. */
  readonly certificates: readonly PathCertificate[];
  /** The CA of the bundle the path ends at. */
  readonly anchor: TrustedAuthority;
  /**
   * The leaf's direct issuer: `anchor`, or the presented intermediate after the leaf
   * on the path (its `intermediate` index counts the certificates after the leaf in
   * the chain given, from 0).
   */
  readonly issuer: IssuerMatch;
}

/** The outcome of {@linkcode TrustStore.verify} and {@linkcode TrustStore.locate}. */
export type VerifyResult =
  | { readonly ok: true; readonly path: VerifiedPath }
  | { readonly ok: false; readonly reason: ChainFailure; readonly detail: string };

/** Options of {@linkcode TrustStore.verify}. */
export interface VerifyOptions {
  /**
   * The time to judge validity at, ms since the epoch.
   *
   * @default {Date.now()}
   */
  now?: number;
  /**
   * `[tls] client_eku`: whether the leaf must carry an extended key usage.
   *
   * @default {"required"}
   */
  eku?: ClientEkuMode;
}

/** Options of {@linkcode TrustStore.fromPem}. */
export interface TrustStoreOptions {
  /**
   * Where verified signatures are remembered. A cache can be shared between stores
   * (a reload's new store and the old one): its entries name the signed bytes and the
   * signer's key, not a store.
   *
   * @default {a cache shared by every store of the process}
   */
  cache?: SignatureCache;
}

const SHARED_CACHE = new SignatureCache();

/** Something signed by a CA, as {@linkcode TrustStore.signersOf} takes it (a CRL, say). */
export interface SignedData {
  /** The issuer Name, DER. */
  issuer: Uint8Array;
  /**
   * The keyIdentifier of its authorityKeyIdentifier, lowercase hex.
   *
   * @default {undefined}
   */
  authorityKeyId?: string;
  /** The signed bytes. */
  data: Uint8Array;
  /** The signature algorithm: a DER AlgorithmIdentifier. */
  algorithm: Uint8Array;
  /** The signature value. */
  signature: Uint8Array;
}

/**
 * The CAs of a bundle, indexed by subject name and subject key identifier.
 *
 * @example Verify a chain
 * ```ts
 * import { TrustStore } from "@mtlb/mtlb";
 * import { createCa, createIntermediateCa, issueCertificate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const root = await createCa({ commonName: "Root" });
 * const issuing = await createIntermediateCa(root, { commonName: "Issuing" });
 * const leaf = await issueCertificate(issuing, { commonName: "svc", kind: "client" });
 * const store = TrustStore.fromPem(root.certPem);
 *
 * const result = store.verify([leaf.der, issuing.der]);
 * assert.ok(result.ok);
 * assert.equal(result.path.anchor.subject, "CN=Root");
 * assert.deepEqual(store.verify([leaf.der]), {
 *   ok: false,
 *   reason: "unknown_ca",
 *   detail: "no CA of the bundle and no certificate sent issued CN=svc (issuer CN=Issuing)",
 * });
 * ```
 */
export class TrustStore {
  #anchors: Anchor[];
  /** By subject Name DER (as a string of its bytes). */
  #byName = new Map<string, Anchor[]>();
  /** The certificates clients presented besides their leaf, read last. */
  #presented = new DerCache<ParsedCertificate>(PRESENTED_CACHE_SIZE);
  /**
   * What was derived from bytes a caller hands in again (a cached leaf's DER and issuer
   * name): the SHA-256 of a certificate, the lookup key of a name.
   */
  #digests = new WeakMap<Uint8Array, string>();
  #nameKeys = new WeakMap<Uint8Array, string>();
  #cache: SignatureCache;
  #authorities: readonly TrustedAuthority[];

  /**
   * Use {@linkcode TrustStore.fromPem}.
   *
   * @param anchors The CAs, read.
   * @param cache Where verified signatures are remembered.
   */
  private constructor(anchors: Anchor[], cache: SignatureCache) {
    this.#anchors = anchors;
    this.#cache = cache;
    for (const anchor of anchors) {
      const key = nameKey(anchor.cert.subject);
      const list = this.#byName.get(key);
      if (list === undefined) this.#byName.set(key, [anchor]);
      else list.push(anchor);
    }
    this.#authorities = Object.freeze(anchors.map((a) => a.facts));
  }

  /**
   * Reads a CA bundle: every `BEGIN CERTIFICATE` block of a PEM text. Checks which
   * CA of the bundle signed each one that is not self-signed (signature checks, once).
   *
   * @param pem The bundle, PEM (`[tls] ca`).
   * @param options Where verified signatures are remembered.
   * @returns The store.
   * @throws {TrustStoreError} When there is no certificate, or one cannot be parsed or
   *   has a public key `node:crypto` cannot read.
   */
  static fromPem(pem: string, options: TrustStoreOptions = {}): TrustStore {
    const cache = options.cache ?? SHARED_CACHE;
    const blocks = typeof pem === "string" ? [...pem.matchAll(PEM_BLOCK)] : [];
    if (blocks.length === 0) {
      throw new TrustStoreError(
        'Cannot read the CA bundle: expected PEM "-----BEGIN CERTIFICATE-----" blocks, found none',
      );
    }
    const anchors: Anchor[] = [];
    const seen: Uint8Array[] = [];
    for (const [index, block] of blocks.entries()) {
      const where = `certificate number ${index + 1}`;
      let der: Uint8Array;
      try {
        der = Uint8Array.from(atob(block[1]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
      } catch (cause) {
        throw new TrustStoreError(`Cannot read the CA bundle: ${where} is not valid base64`, {
          cause,
        });
      }
      if (seen.some((other) => sameBytes(other, der))) continue; // the same certificate twice
      seen.push(der);
      let cert: ParsedCertificate;
      let key: KeyObject;
      try {
        cert = parseCertificate(der);
      } catch (cause) {
        throw new TrustStoreError(
          `Cannot read the CA bundle: ${where} cannot be parsed: ${errorText(cause)}`,
          { cause },
        );
      }
      try {
        key = publicKeyOf(cert.spki);
      } catch (cause) {
        throw new TrustStoreError(
          `Cannot read the CA bundle: the public key of ${where} (${
            nameText(cert.subject)
          }) is not supported: ${errorText(cause)}`,
          { cause },
        );
      }
      anchors.push(readAnchor(anchors.length, cert, key));
    }
    linkAnchors(anchors);
    return new TrustStore(anchors, cache);
  }

  /**
   * The CAs of the bundle, in file order (repeated certificates once).
   *
   * @returns Their facts.
   */
  get authorities(): readonly TrustedAuthority[] {
    return this.#authorities;
  }

  /**
   * Finds the certificate that issued `cert`: a CA of the bundle, else one of the
   * presented `intermediates`. Candidates are the certificates whose subject is
   * `cert`'s issuer name. One candidate (the common case) is returned without a
   * signature check, a few µs: use it on chains the TLS handshake verified. With
   * several (two CAs of one name: a rollover) the signature decides, the one whose
   * subject key identifier is the certificate's authority key identifier first: a key
   * identifier alone is a claim of the certificate, not a proof. A candidate with the
   * same name and key as a CA of the bundle counts as that CA.
   *
   * @example A rollover: two CAs of one name
   * ```ts
   * import { TrustStore } from "@mtlb/mtlb";
   * import { createCa, issueCertificate } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const old = await createCa({ commonName: "Corp CA" });
   * const next = await createCa({ commonName: "Corp CA" });
   * const store = TrustStore.fromPem(old.certPem + next.certPem);
   * const leaf = await issueCertificate(next, { commonName: "svc", kind: "client" });
   * assert.equal(store.issuerOf(leaf.der)?.authority, store.authorities[1]);
   * ```
   *
   * @param cert The certificate, DER.
   * @param intermediates The other certificates the peer sent, DER.
   * @returns The issuer, or `undefined` when none of the candidates issued it.
   * @throws {TypeError} When `cert` is not a DER certificate.
   */
  issuerOf(cert: Uint8Array, intermediates: readonly Uint8Array[] = []): IssuerMatch | undefined {
    const parsed = parseCertificate(cert);
    const presented = readPresented(intermediates);
    const found = this.#issuerOf(
      { der: cert, issuer: parsed.issuer, authorityKeyId: parsed.authorityKeyId, parsed },
      presented,
      Date.now(),
    );
    if (found === undefined) return undefined;
    return "facts" in found ? found.match : this.#presentedMatch(found);
  }

  /**
   * Finds the path of a chain the TLS handshake already verified (a full handshake
   * with `rejectUnauthorized`), cheaply: issuers as {@linkcode TrustStore.issuerOf}
   * finds them, signatures checked only where a name is ambiguous. Checks the validity
   * of every certificate on the path at `now`, the CAs of the bundle and their
   * ancestors included, and that the anchor may issue certificates; the leaf's
   * extended key usage is the caller's to check. Never use it on a chain the runtime
   * did not verify: see {@linkcode TrustStore.verify}.
   *
   * @example Usage
   * ```ts
   * import { TrustStore } from "@mtlb/mtlb";
   * import { createCa, createIntermediateCa, issueCertificate } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const root = await createCa({ commonName: "Root" });
   * const issuing = await createIntermediateCa(root, { commonName: "Issuing" });
   * const leaf = await issueCertificate(issuing, { commonName: "svc", kind: "client" });
   * const store = TrustStore.fromPem(root.certPem);
   * const result = store.locate([leaf.der, issuing.der]);
   * assert.ok(result.ok);
   * assert.equal(result.path.certificates.length, 2);
   * assert.equal(result.path.issuer.intermediate, 0);
   * ```
   *
   * @param chain The presented chain, leaf first (`getPeerCertificateChain()`).
   * @param options The time, and the leaf as already read.
   * @returns The path, or why there is none.
   */
  locate(chain: readonly Uint8Array[], options: LocateOptions = {}): VerifyResult {
    const now = options.now ?? Date.now();
    let leaf = options.leaf;
    if (leaf === undefined) {
      const der = chain[0];
      if (der === undefined) return failure("bad_certificate", "no certificate was presented");
      try {
        leaf = parseCertificate(der);
      } catch (error) {
        return failure("bad_certificate", errorText(error));
      }
    }
    const certificates: PathCertificate[] = [pathCertificate(leaf)];
    const intermediates: ParsedCertificate[] = [];
    const presented = chain.length > 1 ? readPresented(chain.slice(1), this.#readPresented) : [];
    let child: ChildRef = {
      der: leaf.der,
      issuer: leaf.issuer,
      authorityKeyId: leaf.authorityKeyId,
    };
    let issuer: IssuerMatch | undefined;
    for (let depth = 0; depth <= MAX_INTERMEDIATES; depth++) {
      const found = this.#issuerOf(child, presented, now);
      if (found === undefined) {
        const subject = (child.parsed ??= parseCertificate(child.der)).subject;
        return failure(
          "unknown_ca",
          `no CA of the bundle issued ${nameText(subject)} (issuer ${nameText(child.issuer)})`,
        );
      }
      if ("facts" in found) {
        const problem = anchorProblem(found, now, intermediates);
        if (problem !== undefined) return { ok: false, ...problem };
        if (options.remember === true) this.#remember(child, found.facts.spkiSha256);
        issuer ??= found.match;
        return { ok: true, path: { certificates, anchor: found.facts, issuer } };
      }
      if (options.remember === true) this.#remember(child, presentedSpki(found));
      issuer ??= this.#presentedMatch(found);
      const cert = found.cert;
      const what = lazyText(() => `intermediate CA ${nameText(cert.subject)}`);
      const dates = validityProblem(cert.notBefore, cert.notAfter, now, what);
      if (dates !== undefined) return { ok: false, ...dates };
      certificates.push(pathCertificate(cert));
      intermediates.push(cert);
      presented.splice(presented.indexOf(found), 1);
      child = {
        der: cert.der,
        issuer: cert.issuer,
        authorityKeyId: cert.authorityKeyId,
        parsed: cert,
      };
    }
    return failure("path_too_long", `more than ${MAX_INTERMEDIATES} intermediate CAs`);
  }

  /**
   * Verifies a presented chain in full, as a TLS handshake would: builds a path from
   * the leaf through the presented intermediates to a CA of the bundle, checking every
   * signature (ECDSA P-256/P-384/P-521 over SHA-2, RSA PKCS#1 v1.5 and PSS over SHA-2,
   * Ed25519, Ed448), the validity of every certificate at `now` (the CAs of the bundle
   * and their ancestors in it included), that issuers are CAs (basicConstraints cA,
   * keyCertSign when keyUsage is present), path length limits, critical extensions
   * (nameConstraints are not supported and refuse the chain), and the leaf's extended
   * key usage (clientAuth; intermediates' too when they carry one). When several paths
   * exist, the first that passes is taken.
   *
   * For resumed TLS sessions, which skip the runtime's verification, and for live
   * connections after the trust changed (a reload).
   *
   * @example Failures
   * ```ts
   * import { TrustStore } from "@mtlb/mtlb";
   * import { createCa, issueCertificate } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const ca = await createCa({ commonName: "Example CA" });
   * const store = TrustStore.fromPem(ca.certPem);
   * const noEku = await issueCertificate(ca, { commonName: "a", kind: "client", extendedKeyUsage: [] });
   * const result = store.verify([noEku.der]);
   * assert.equal(result.ok ? "ok" : result.reason, "no_client_eku");
   * assert.ok(store.verify([noEku.der], { eku: "optional" }).ok);
   * ```
   *
   * @param chain The presented chain, leaf first, as `getPeerCertificateChain()` gives it.
   * @param options The time and `client_eku`.
   * @returns The path (leaf to a CA of the bundle), or why the chain is refused.
   */
  verify(chain: readonly Uint8Array[], options: VerifyOptions = {}): VerifyResult {
    const now = options.now ?? Date.now();
    const leafDer = chain[0];
    if (leafDer === undefined) return failure("bad_certificate", "no certificate was presented");
    let leaf: ParsedCertificate;
    try {
      leaf = parseCertificate(leafDer);
    } catch (error) {
      return failure("bad_certificate", errorText(error));
    }
    const what = lazyText(() => `the client certificate ${nameText(leaf.subject)}`);
    if (leaf.version !== 3) {
      return failure("bad_certificate", `${what} is version ${leaf.version}, not 3`);
    }
    if (leaf.unsupportedCritical !== undefined) {
      return failure(
        "bad_certificate",
        `${what} has critical extension ${leaf.unsupportedCritical}, which is not supported`,
      );
    }
    if (leaf.basicConstraints?.ca === true) {
      return failure("bad_certificate", `${what} is a CA certificate`);
    }
    if (typeof leaf.signatureAlgorithm === "string") {
      return failure(
        "bad_certificate",
        `${what} is signed with algorithm ${leaf.signatureAlgorithm}, which is not supported`,
      );
    }
    const dates = validityProblem(leaf.notBefore, leaf.notAfter, now, what);
    if (dates !== undefined) return { ok: false, ...dates };
    const eku = ekuProblem(leaf.clientAuth, options.eku ?? "required", what);
    if (eku !== undefined) return { ok: false, ...eku };

    const presented: Presented[] = [];
    for (const [i, der] of chain.slice(1).entries()) {
      try {
        presented.push({ cert: parseCertificate(der), index: i });
      } catch {
        // An unreadable extra certificate is not on any path; ignore it, as webpki does.
      }
    }
    const search = new PathSearch({
      now,
      presented,
      named: (name) => this.#byName.get(nameKey(name)),
      signed: (cert, key, spki) => this.#signed(cert, key, spki),
    });
    const found = search.from(leaf, [], 0);
    if (found !== undefined) {
      const [anchor, intermediates] = found;
      const first = intermediates[0];
      return {
        ok: true,
        path: {
          certificates: [leaf, ...intermediates.map((p) => p.cert)].map(pathCertificate),
          anchor: anchor.facts,
          issuer: first === undefined ? anchor.match : this.#presentedMatch(first),
        },
      };
    }
    const { reason, detail } = search.failure ??
      { reason: "unknown_ca" as const, detail: `no CA of the bundle issued ${what}` };
    return { ok: false, reason, detail };
  }

  /**
   * The CAs of the bundle whose key verifies a signed object, such as a CRL: those
   * whose subject is its issuer name (byte for byte, or up to letter case and spaces
   * in the text form, as OpenSSL compares names), and, when it names an authority
   * key identifier, whose subject key identifier it is (when any has).
   *
   * @param signed The issuer, key identifier, signed bytes, algorithm and signature.
   * @returns The CAs that signed it (several only when one CA appears twice, say
   *   re-issued with the same key), in bundle order; empty when none did.
   */
  signersOf(signed: SignedData): TrustedAuthority[] {
    let algorithm: SignatureAlgorithm | string;
    try {
      const tlv = readTlv(signed.algorithm, 0, signed.algorithm.length, SEQUENCE);
      algorithm = readSignatureAlgorithm(signed.algorithm, tlv);
    } catch {
      return [];
    }
    if (typeof algorithm === "string") return [];
    const canonical = canonicalName(nameText(signed.issuer));
    let named = this.#anchors.filter((a) =>
      sameBytes(a.cert.subject, signed.issuer) ||
      canonicalName(a.facts.subject) === canonical
    );
    if (signed.authorityKeyId !== undefined) {
      const keyed = named.filter((a) => a.facts.keyId === signed.authorityKeyId);
      if (keyed.length > 0) named = keyed;
    }
    return named.filter((a) => verifySignature(algorithm, signed.data, signed.signature, a.key))
      .map((a) => a.facts);
  }

  /** Remembers that the key whose SPKI digest is `signerSpki` signed `child`. */
  #remember(child: ChildRef, signerSpki: string): void {
    const digest = child.parsed === undefined
      ? remembered(this.#digests, child.der, sha256)
      : (child.parsed.sha256 ??= sha256(child.der));
    this.#cache.add(`${digest}:${signerSpki}`);
  }

  /**
   * Whether `key` (whose SPKI digest is `issuerSpki`) signed `cert`, remembering
   * successes; the key is read only when the result is not remembered.
   */
  #signed(cert: ParsedCertificate, key: KeyOf, issuerSpki: string): boolean {
    if (typeof cert.signatureAlgorithm === "string") return false;
    const entry = `${cert.sha256 ??= sha256(cert.der)}:${issuerSpki}`;
    if (this.#cache.has(entry)) return true;
    const publicKey = typeof key === "function" ? key() : key;
    if (publicKey === undefined) return false;
    if (!verifySignature(cert.signatureAlgorithm, cert.tbs, cert.signature, publicKey)) {
      return false;
    }
    this.#cache.add(entry);
    return true;
  }

  /**
   * The issuer of `child` among the bundle, then the presented certificates: the only
   * candidate by name, else the first whose signature verifies.
   */
  #issuerOf(
    child: ChildRef,
    presented: Presented[],
    now: number,
  ): Anchor | Presented | undefined {
    let named = this.#byName.get(remembered(this.#nameKeys, child.issuer, nameKey));
    if (named !== undefined && named.length > 1) named = oneCertificatePerKey(named, now);
    let others: Presented[] | undefined;
    for (const p of presented) {
      if (!sameBytes(p.cert.subject, child.issuer)) continue;
      // The same name and key as a CA of the bundle: that CA.
      if (named?.some((a) => sameBytes(a.cert.spki, p.cert.spki))) continue;
      (others ??= []).push(p);
    }
    const count = (named?.length ?? 0) + (others?.length ?? 0);
    if (count === 0) return undefined;
    if (count === 1) return named?.[0] ?? others![0];
    // Several keys: the signature decides, the key identifier the certificate names first.
    const parsed = child.parsed ??= parseCertificate(child.der);
    const byKeyId = (a: { keyId?: string | undefined }) =>
      a.keyId !== undefined && a.keyId === child.authorityKeyId ? 0 : 1;
    const anchors = [...(named ?? [])].sort((a, b) => byKeyId(a.facts) - byKeyId(b.facts));
    for (const anchor of anchors) {
      if (this.#signed(parsed, anchor.key, anchor.facts.spkiSha256)) return anchor;
    }
    const rest = [...(others ?? [])].sort((a, b) =>
      byKeyId({ keyId: a.cert.subjectKeyId }) - byKeyId({ keyId: b.cert.subjectKeyId })
    );
    for (const p of rest) {
      if (this.#signed(parsed, () => presentedKey(p), presentedSpki(p))) return p;
    }
    return undefined;
  }

  /** Reads a presented certificate, or finds it read before. */
  #readPresented = (der: Uint8Array): ParsedCertificate =>
    this.#presented.get(der, parseCertificate).value;

  #presentedMatch(p: Presented): IssuerMatch {
    return { intermediate: p.index, spkiSha256: presentedSpki(p) };
  }
}

/** What {@linkcode TrustStore.locate} needs of the leaf, when the caller has read it. */
export interface LeafFacts {
  /** The certificate, DER. */
  der: Uint8Array;
  /** Serial number, lowercase hex without leading zeros. */
  serial: string;
  /** Start of validity, ms since the epoch. */
  notBefore: number;
  /** End of validity, ms since the epoch. */
  notAfter: number;
  /** The issuer Name, DER. */
  issuer: Uint8Array;
  /**
   * The keyIdentifier of its authorityKeyIdentifier, lowercase hex.
   *
   * @default {undefined}
   */
  authorityKeyId?: string;
}

/** Options of {@linkcode TrustStore.locate}. */
export interface LocateOptions {
  /**
   * The time to judge validity at, ms since the epoch.
   *
   * @default {Date.now()}
   */
  now?: number;
  /**
   * The leaf (`chain[0]`) as already read, to spare reading it again.
   *
   * @default {read from chain[0]}
   */
  leaf?: LeafFacts;
  /**
   * Remember the signatures on the path found as verified, so that a later
   * {@linkcode TrustStore.verify} of the same chain (a resumed TLS session) finds them
   * remembered. Only for a chain the runtime verified against this bundle in a full
   * handshake. About 1.5 µs per certificate (a SHA-256 of it).
   *
   * @default {false}
   */
  remember?: boolean;
}

/** `map`'s value for `key`, made by `make` the first time. */
function remembered<K extends object, V>(map: WeakMap<K, V>, key: K, make: (key: K) => V): V {
  let value = map.get(key);
  if (value === undefined) map.set(key, value = make(key));
  return value;
}

/** How many presented certificates (besides leaves) a store remembers having read. */
const PRESENTED_CACHE_SIZE = 256;

/** A certificate whose issuer is looked for. */
interface ChildRef {
  der: Uint8Array;
  issuer: Uint8Array;
  authorityKeyId: string | undefined;
  parsed?: ParsedCertificate;
  subject?: Uint8Array;
}

function failure(reason: ChainFailure, detail: string): VerifyResult {
  return { ok: false, reason, detail };
}

function pathCertificate(
  cert: { der: Uint8Array; serial: string; notBefore: number; notAfter: number },
): PathCertificate {
  return { der: cert.der, serial: cert.serial, notBefore: cert.notBefore, notAfter: cert.notAfter };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
