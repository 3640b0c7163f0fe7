/**
 * The CAs of a bundle as `trust_store.ts` indexes them: each read once with its key,
 * facts and validity ({@linkcode readAnchor}), then linked to the CA of the bundle that
 * signed it and its ancestors ({@linkcode linkAnchors}).
 *
 * @module
 */
import type { KeyObject } from "node:crypto";
import {
  CRL_SIGN,
  KEY_CERT_SIGN,
  type ParsedCertificate,
  sameBytes,
  type SignatureAlgorithm,
  verifySignature,
} from "./_x509.ts";
import { type SearchAnchor, sha256 } from "./_chain_search.ts";
import { canonicalName, nameText } from "./_name_text.ts";
import type { IssuerMatch, TrustedAuthority } from "./trusted_authority.ts";

/** A CA of the bundle with what the checks need. */
export interface Anchor extends SearchAnchor {
  facts: TrustedAuthority;
  /** `facts` as an {@linkcode IssuerMatch}, made once. */
  match: IssuerMatch;
  ancestors: Anchor[];
  constrained?: Anchor;
}

/**
 * One certificate per key among CAs of one name (a CA re-issued with the same key
 * appears twice): the one valid at `now`, else the first. Same name and key sign the
 * same certificates, so no signature check is needed to choose.
 */
export function oneCertificatePerKey(anchors: readonly Anchor[], now: number): Anchor[] {
  const chosen: Anchor[] = [];
  for (const anchor of anchors) {
    const twin = chosen.findIndex((c) => sameBytes(c.cert.spki, anchor.cert.spki));
    if (twin < 0) chosen.push(anchor);
    else if (!validAt(chosen[twin]!, now) && validAt(anchor, now)) chosen[twin] = anchor;
  }
  return chosen;
}

function validAt(anchor: Anchor, now: number): boolean {
  return now >= anchor.validFrom && now <= anchor.validUntil;
}

/** Reads a CA of the bundle: its facts (not yet frozen: see {@linkcode linkAnchors}). */
export function readAnchor(index: number, cert: ParsedCertificate, key: KeyObject): Anchor {
  const subject = nameText(cert.subject);
  const spkiSha256 = sha256(cert.spki);
  const selfIssued = sameBytes(cert.subject, cert.issuer);
  const selfSigned = selfIssued && typeof cert.signatureAlgorithm !== "string" &&
    verifySignature(cert.signatureAlgorithm, cert.tbs, cert.signature, key);
  const isCa = cert.basicConstraints?.ca === true || (cert.version < 3 && selfSigned);
  const facts = {
    index,
    id: `${spkiSha256}/${canonicalName(subject)}`,
    subject,
    spkiSha256,
    serial: cert.serial,
    ...(cert.subjectKeyId === undefined ? {} : { keyId: cert.subjectKeyId }),
    notBefore: new Date(cert.notBefore),
    notAfter: new Date(cert.notAfter),
    selfSigned,
    issuesCertificates: isCa &&
      (cert.keyUsage === undefined || (cert.keyUsage & KEY_CERT_SIGN) !== 0),
    signsCrls: cert.keyUsage === undefined || (cert.keyUsage & CRL_SIGN) !== 0,
  } as TrustedAuthority;
  return {
    facts,
    cert,
    key,
    match: Object.freeze({ authority: facts, spkiSha256 }),
    ancestors: [],
    validFrom: cert.notBefore,
    validUntil: cert.notAfter,
  };
}

/**
 * Finds, for each CA that is not self-signed, the CA of the bundle that signed it,
 * then each one's ancestors, validity window and name constraints; freezes the facts.
 */
export function linkAnchors(anchors: Anchor[]): void {
  const parents = new Map<Anchor, Anchor>();
  for (const anchor of anchors) {
    if (anchor.facts.selfSigned) continue;
    const { cert } = anchor;
    if (typeof cert.signatureAlgorithm === "string") continue;
    const byKeyId = (a: Anchor) =>
      a.facts.keyId !== undefined && a.facts.keyId === cert.authorityKeyId ? 0 : 1;
    const parent = anchors
      .filter((a) => a !== anchor && sameBytes(a.cert.subject, cert.issuer))
      .sort((a, b) => byKeyId(a) - byKeyId(b))
      .find((a) =>
        verifySignature(
          cert.signatureAlgorithm as SignatureAlgorithm,
          cert.tbs,
          cert.signature,
          a.key,
        )
      );
    if (parent !== undefined) parents.set(anchor, parent);
  }
  for (const anchor of anchors) {
    const seen = new Set<Anchor>([anchor]);
    for (let a = parents.get(anchor); a !== undefined && !seen.has(a); a = parents.get(a)) {
      seen.add(a);
      anchor.ancestors.push(a);
    }
    for (const a of [anchor, ...anchor.ancestors]) {
      anchor.validFrom = Math.max(anchor.validFrom, a.cert.notBefore);
      anchor.validUntil = Math.min(anchor.validUntil, a.cert.notAfter);
      if (a.cert.nameConstraints && anchor.constrained === undefined) anchor.constrained = a;
    }
  }
  // Facts are frozen parents first, so that `signedBy` points at a frozen object.
  const frozen = new Set<Anchor>();
  const freeze = (anchor: Anchor): void => {
    if (frozen.has(anchor)) return;
    frozen.add(anchor);
    const parent = parents.get(anchor);
    if (parent !== undefined) {
      freeze(parent);
      (anchor.facts as { signedBy?: TrustedAuthority }).signedBy = parent.facts;
    }
    Object.freeze(anchor.facts);
  };
  for (const anchor of anchors) freeze(anchor);
}
