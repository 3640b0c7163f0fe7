/**
 * Path building and the checks of each certificate on a path, for `trust_store.ts`:
 * what makes a presented intermediate or a CA of the bundle unfit to issue on a path,
 * and a depth-first search over the presented certificates with a signature budget.
 *
 * @module
 */
import { createHash, type KeyObject } from "node:crypto";
import {
  type ClientAuthUsage,
  KEY_CERT_SIGN,
  parseCertificate,
  type ParsedCertificate,
  publicKeyOf,
  sameBytes,
} from "./_x509.ts";
import type { ClientEkuMode } from "./certificate.ts";
import { nameText } from "./_name_text.ts";

/** The most intermediates a path may run through, as in rustls (webpki). */
export const MAX_INTERMEDIATES = 6;
/** The most signatures one {@linkcode TrustStore.verify} call checks, as in webpki. */
const SIGNATURE_BUDGET = 100;
import type { ChainFailure } from "../core/reasons.ts";
export { CHAIN_FAILURES, type ChainFailure } from "../core/reasons.ts";

/** A key, or how to read it when a signature must be checked (a cached result needs none). */
export type KeyOf = KeyObject | (() => KeyObject | undefined);

/** A reason and its detail. */
export interface Problem {
  reason: ChainFailure;
  detail: string;
}

/** What the checks need of a CA of the bundle's facts. */
export interface AnchorFacts {
  readonly subject: string;
  readonly spkiSha256: string;
  readonly keyId?: string;
  readonly issuesCertificates: boolean;
}

/** A CA of the bundle with what the checks need. */
export interface SearchAnchor {
  facts: AnchorFacts;
  cert: ParsedCertificate;
  key: KeyObject;
  /** The CAs of the bundle above it, nearest first (its `signedBy` chain). */
  ancestors: SearchAnchor[];
  /** The validity window of itself and its ancestors together. */
  validFrom: number;
  validUntil: number;
  /** The first of itself and its ancestors that has nameConstraints. */
  constrained?: SearchAnchor;
}

/** A presented certificate while a chain is walked. */
export interface Presented {
  cert: ParsedCertificate;
  index: number;
  key?: KeyObject;
  spkiSha256?: string;
}

/** The failure to report when no path is found: the one found deepest in the chain. */
interface Failure {
  reason: ChainFailure;
  detail: string;
  depth: number;
}

/** What a {@linkcode PathSearch} needs of its store. */
export interface SearchContext<A extends SearchAnchor> {
  now: number;
  presented: Presented[];
  named: (name: Uint8Array) => readonly A[] | undefined;
  signed: (cert: ParsedCertificate, key: KeyOf, spki: string) => boolean;
}

/** Depth-first path building for {@linkcode TrustStore.verify}, with a signature budget. */
export class PathSearch<A extends SearchAnchor> {
  failure: Failure | undefined;
  #context: SearchContext<A>;
  #used = new Set<Presented>();
  #budget = SIGNATURE_BUDGET;

  constructor(context: SearchContext<A>) {
    this.#context = context;
  }

  /**
   * A path from `cert` to a CA of the bundle, with the presented CAs it runs through;
   * `below` are the presented CAs already on the path under `cert`.
   */
  from(
    cert: ParsedCertificate,
    below: ParsedCertificate[],
    depth: number,
  ): [A, Presented[]] | undefined {
    const { now, presented, named } = this.#context;
    const byKeyId = (keyId: string | undefined) =>
      keyId !== undefined && keyId === cert.authorityKeyId ? 0 : 1;
    const anchors = [...(named(cert.issuer) ?? [])]
      .sort((a, b) => byKeyId(a.facts.keyId) - byKeyId(b.facts.keyId));
    const candidates = presented
      .filter((p) => !this.#used.has(p) && sameBytes(p.cert.subject, cert.issuer))
      .sort((a, b) => byKeyId(a.cert.subjectKeyId) - byKeyId(b.cert.subjectKeyId));
    if (anchors.length === 0 && candidates.length === 0) {
      this.#note(
        "unknown_ca",
        `no CA of the bundle and no certificate sent issued ${nameText(cert.subject)} (issuer ${
          nameText(cert.issuer)
        })`,
        depth,
      );
      return undefined;
    }
    for (const anchor of anchors) {
      if (!this.#signedBy(cert, anchor.key, anchor.facts.spkiSha256, depth)) continue;
      const problem = anchorProblem(anchor, now, below);
      if (problem === undefined) return [anchor, []];
      this.#note(problem.reason, problem.detail, depth + 1);
    }
    for (const p of candidates) {
      const problem = intermediateProblem(p.cert, now, below);
      if (problem !== undefined) {
        this.#note(problem.reason, problem.detail, depth + 1);
        continue;
      }
      if (!this.#signedBy(cert, () => presentedKey(p), presentedSpki(p), depth)) continue;
      this.#used.add(p);
      const above = this.from(p.cert, [...below, p.cert], depth + 1);
      this.#used.delete(p);
      if (above !== undefined) return [above[0], [p, ...above[1]]];
    }
    return undefined;
  }

  #signedBy(cert: ParsedCertificate, key: KeyOf, spki: string, depth: number): boolean {
    if (this.#budget <= 0) {
      this.#note("path_too_long", "too many candidate paths to check", depth);
      return false;
    }
    this.#budget--;
    if (this.#context.signed(cert, key, spki)) return true;
    if (typeof key === "function" && key() === undefined) {
      this.#note(
        "bad_certificate",
        `the public key of the issuer ${nameText(cert.issuer)} is not supported`,
        depth + 1,
      );
      return false;
    }
    this.#note(
      "bad_signature",
      `the signature of ${nameText(cert.subject)} does not verify with the key of ${
        nameText(cert.issuer)
      }`,
      depth,
    );
    return false;
  }

  /** Keeps the failure found deepest; at one depth, the first that is not `unknown_ca`. */
  #note(reason: ChainFailure, detail: string, depth: number): void {
    const current = this.failure;
    if (
      current === undefined || depth > current.depth ||
      (depth === current.depth && current.reason === "unknown_ca" && reason !== "unknown_ca")
    ) {
      this.failure = { reason, detail, depth };
    }
  }
}

/** Why a presented intermediate cannot issue on this path, if it cannot. */
export function intermediateProblem(
  cert: ParsedCertificate,
  now: number,
  below: readonly ParsedCertificate[],
): Problem | undefined {
  const casBelow = countIssuingCas(below);
  const what = lazyText(() => `intermediate CA ${nameText(cert.subject)}`);
  if (cert.version !== 3 || cert.basicConstraints?.ca !== true) {
    return {
      reason: "not_a_ca",
      detail: `${what} is not a CA certificate (no basicConstraints cA)`,
    };
  }
  if (cert.keyUsage !== undefined && (cert.keyUsage & KEY_CERT_SIGN) === 0) {
    return {
      reason: "not_a_ca",
      detail: `${what} may not sign certificates (keyUsage without keyCertSign)`,
    };
  }
  if (cert.unsupportedCritical !== undefined) {
    return {
      reason: "bad_certificate",
      detail: `${what} has critical extension ${cert.unsupportedCritical}, which is not supported`,
    };
  }
  if (cert.nameConstraints) {
    return {
      reason: "bad_certificate",
      detail: `${what} has nameConstraints, which are not supported`,
    };
  }
  if (typeof cert.signatureAlgorithm === "string") {
    return {
      reason: "bad_certificate",
      detail: `${what} is signed with algorithm ${cert.signatureAlgorithm}, which is not supported`,
    };
  }
  const pathLength = cert.basicConstraints.pathLength;
  if (pathLength !== undefined && casBelow > pathLength) {
    return {
      reason: "path_too_long",
      detail: `${what} allows ${pathLength} CAs below it, the path has ${casBelow}`,
    };
  }
  if (below.length >= MAX_INTERMEDIATES) {
    return { reason: "path_too_long", detail: `more than ${MAX_INTERMEDIATES} intermediate CAs` };
  }
  const dates = validityProblem(cert.notBefore, cert.notAfter, now, what);
  if (dates !== undefined) return dates;
  if (cert.clientAuth === "other") {
    return { reason: "wrong_eku", detail: `${what} has an extended key usage without clientAuth` };
  }
  return undefined;
}

/**
 * Why a CA of the bundle cannot end this path, if it cannot: it may not issue, it or
 * an ancestor is outside its validity or has nameConstraints, or a path length limit
 * of it or an ancestor is exceeded. `below` are the presented CAs under it.
 */
export function anchorProblem(
  anchor: SearchAnchor,
  now: number,
  below: readonly ParsedCertificate[],
): Problem | undefined {
  const facts = anchor.facts;
  if (!facts.issuesCertificates) {
    return {
      reason: "not_a_ca",
      detail:
        `CA ${facts.subject} of the bundle may not issue certificates (no basicConstraints cA, or keyUsage without keyCertSign)`,
    };
  }
  if (now < anchor.validFrom || now > anchor.validUntil) {
    for (const a of [anchor, ...anchor.ancestors]) {
      const what = `CA ${a.facts.subject} of the bundle`;
      const dates = validityProblem(a.cert.notBefore, a.cert.notAfter, now, what);
      if (dates !== undefined) return dates;
    }
  }
  if (anchor.constrained !== undefined) {
    return {
      reason: "bad_certificate",
      detail:
        `CA ${anchor.constrained.facts.subject} of the bundle has nameConstraints, which are not supported`,
    };
  }
  let cas = countIssuingCas(below);
  for (const a of [anchor, ...anchor.ancestors]) {
    const limit = a.cert.basicConstraints?.pathLength;
    if (limit !== undefined && cas > limit) {
      return {
        reason: "path_too_long",
        detail:
          `CA ${a.facts.subject} of the bundle allows ${limit} CAs below it, the path has ${cas}`,
      };
    }
    if (!sameBytes(a.cert.subject, a.cert.issuer)) cas++;
  }
  return undefined;
}

/** The CAs among `cas` that count toward path length limits: those not self-issued. */
function countIssuingCas(cas: readonly ParsedCertificate[]): number {
  let count = 0;
  for (const ca of cas) if (!sameBytes(ca.subject, ca.issuer)) count++;
  return count;
}

/** Why a certificate is not valid at `now`, if it is not. */
export function validityProblem(
  notBefore: number,
  notAfter: number,
  now: number,
  what: Text,
): Problem | undefined {
  if (now < notBefore) {
    return {
      reason: "not_yet_valid",
      detail: `${what} is not valid before ${new Date(notBefore).toISOString()}`,
    };
  }
  if (now > notAfter) {
    return { reason: "expired", detail: `${what} expired on ${new Date(notAfter).toISOString()}` };
  }
  return undefined;
}

/** Why a leaf's extended key usage does not let it authenticate a client, if it does not. */
export function ekuProblem(
  usage: ClientAuthUsage,
  mode: ClientEkuMode,
  what: Text,
): Problem | undefined {
  if (usage === "other") {
    return { reason: "wrong_eku", detail: `${what} has an extended key usage without clientAuth` };
  }
  if (usage === "absent" && mode !== "optional") {
    return {
      reason: "no_client_eku",
      detail:
        `${what} has no extended key usage extension; [tls] client_eku = "optional" accepts it`,
    };
  }
  return undefined;
}

/** Text for a detail, made only when a detail is written (names are slow to render). */
export type Text = string | { toString(): string };

/** A {@linkcode Text} rendered on first use. */
export function lazyText(make: () => string): Text {
  let text: string | undefined;
  return { toString: () => text ??= make() };
}

/** Reads the presented certificates (with `parse`); what is not a certificate is left out. */
export function readPresented(
  intermediates: readonly Uint8Array[],
  parse: (der: Uint8Array) => ParsedCertificate = parseCertificate,
): Presented[] {
  const presented: Presented[] = [];
  for (const [index, der] of intermediates.entries()) {
    try {
      presented.push({ cert: parse(der), index });
    } catch {
      // Not a certificate: not an issuer either.
    }
  }
  return presented;
}

/** The public key of a presented certificate, read once; `undefined` when unsupported. */
export function presentedKey(p: Presented): KeyObject | undefined {
  if (p.key === undefined) {
    try {
      p.key = publicKeyOf(p.cert.spki);
    } catch {
      return undefined;
    }
  }
  return p.key;
}

/** The SHA-256 of a presented certificate's SubjectPublicKeyInfo, computed once. */
export function presentedSpki(p: Presented): string {
  return p.spkiSha256 ??= sha256(p.cert.spki);
}

/** SHA-256, hex. */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
