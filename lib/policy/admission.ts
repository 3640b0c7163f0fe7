/**
 * Admission: the decision between a completed TLS handshake and the client's limits.
 * Given what the handshake established (the presented chain, whether the runtime
 * verified it or the session was resumed, the suite, the SNI name and the offered
 * ALPN protocols) and the trust and policy in force, it says who the client is and
 * which group it goes to, or why it is refused. No socket, no clock, no I/O: a test
 * drives it with a certificate.
 *
 * @module
 */
import type { CertIdentity } from "../identity/certificate.ts";
import type { ClientTrust } from "../identity/client_trust.ts";
import type { IssuerMatch } from "../identity/trust_store.ts";
import { type CertificateFailure, type DenyReason, isCertificateFailure } from "../core/reasons.ts";
import type { ClientRule, Policy, RouteRequest } from "./policy.ts";

/** What the TLS handshake of a connection established. */
export interface AdmissionRequest {
  /** The chain the client presented, leaf first, DER (empty without a certificate). */
  chain: readonly Uint8Array[];
  /** Whether the runtime's own verification accepted the chain. */
  authorized: boolean;
  /**
   * The runtime's reason for refusing it.
   *
   * @default {undefined}
   */
  authorizationError?: string | undefined;
  /** Whether the session was resumed (the runtime then verified nothing). */
  resumed: boolean;
  /** The negotiated cipher suite's standard name. */
  cipher: string | undefined;
  /**
   * The group of the dedicated listener that accepted it; absent on the shared one.
   *
   * @default {undefined}
   */
  listenerGroup?: string | undefined;
  /**
   * The SNI server name.
   *
   * @default {undefined}
   */
  sni?: string | undefined;
  /**
   * The ALPN protocols offered, in the client's order.
   *
   * @default {[]}
   */
  alpn?: readonly string[];
}

/** The trust and policy a connection is admitted against. */
export interface AdmissionContext {
  /** The CA bundle, CRLs and `[tls]` trust settings in force. */
  trust: ClientTrust;
  /** The clients and groups in force. */
  policy: Policy;
  /** The TLS 1.3 suites allowed (`[tls] ciphers`). */
  ciphers: ReadonlySet<string>;
  /** The current time, ms since the epoch (certificate and CRL validity). */
  now: number;
}

/** A connection admitted: who it is and where it goes. */
export interface Admitted {
  /** It may go on to the client's limits. */
  ok: true;
  /** The client rule it matched. */
  client: ClientRule;
  /** The certificate's identity. */
  identity: CertIdentity;
  /** The CA that issued the certificate. */
  issuer: IssuerMatch;
  /** The group it is routed to. */
  group: string;
}

/** A connection whose certificate failed: a handshake failure named by its cause. */
export interface CertificateRefusal {
  /** Refused. */
  ok: false;
  /** The certificate stage refused it. */
  stage: "handshake";
  /** Why. */
  reason: CertificateFailure;
  /**
   * The certificate's identity, when it could be read.
   *
   * @default {undefined}
   */
  identity?: CertIdentity;
  /**
   * Detail for the log.
   *
   * @default {undefined}
   */
  detail?: string;
}

/** A connection refused after its certificate was accepted (or by a CRL). */
export interface Denial {
  /** Refused. */
  ok: false;
  /** The policy stage refused it. */
  stage: "admission";
  /** Why. */
  reason: DenyReason;
  /**
   * The client name, once identified.
   *
   * @default {undefined}
   */
  client?: string;
  /**
   * The certificate's identity, once read.
   *
   * @default {undefined}
   */
  identity?: CertIdentity;
  /**
   * The group the connection asked for, when it named one.
   *
   * @default {undefined}
   */
  group?: string;
  /**
   * Detail for the log.
   *
   * @default {undefined}
   */
  detail?: string;
}

/** The outcome of {@linkcode admit}. */
export type AdmissionVerdict = Admitted | CertificateRefusal | Denial;

/**
 * Decides a connection after its TLS handshake: the certificate (a full handshake's
 * chain, which the runtime verified, is located and checked for EKU, validity and
 * CRLs; a resumed session's chain, which nothing verified, and one the runtime
 * refused are verified in full, the latter to name why), the negotiated suite, the
 * client rule the certificate matches (issuer pins included), and the group the
 * connection asks for.
 *
 * @example A certificate, no socket
 * ```ts
 * import { admit, ClientTrust, createCa, issueCertificate, parseConfig, Policy, TrustStore } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const alice = await issueCertificate(ca, { commonName: "alice", kind: "client" });
 * const config = parseConfig(
 *   `[server]\nlisten = "127.0.0.1:8443"\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n` +
 *     `[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["echo"]\n`,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * const context = {
 *   trust: new ClientTrust({ store: TrustStore.fromPem(ca.certPem) }),
 *   policy: new Policy(config),
 *   ciphers: new Set(config.tls.ciphers),
 *   now: Date.now(),
 * };
 * const verdict = admit({
 *   chain: [alice.der],
 *   authorized: true,
 *   resumed: false,
 *   cipher: "TLS_AES_256_GCM_SHA384",
 * }, context);
 * assert.ok(verdict.ok);
 * assert.equal(verdict.client.name, "alice");
 * assert.equal(verdict.group, "echo");
 * ```
 *
 * @param request What the handshake established.
 * @param context The trust and policy in force.
 * @returns Who may go where, or why not.
 */
export function admit(request: AdmissionRequest, context: AdmissionContext): AdmissionVerdict {
  const { chain, resumed } = request;
  if (chain.length === 0) {
    // The runtime requires a certificate in a full handshake (certificate_required);
    // a session resumed from a ticket of a listener that asked for none has none.
    return { ok: false, stage: "handshake", reason: "no_certificate" };
  }
  // A resumed session skips the runtime's chain verification, and Deno 2.9's node:tls
  // issues session tickets that cannot be turned off (to every client that completes
  // a handshake, refused ones included): verify its chain in full against the trust
  // in force now. The runtime's own failures are verified again too, to name them.
  const verdict = resumed || !request.authorized
    ? context.trust.verifyChain(chain, context.now)
    : context.trust.checkHandshake(chain, context.now);
  if (!verdict.ok) {
    const detail = resumed ? `resumed session: ${verdict.detail}` : verdict.detail;
    const identity = verdict.identity === undefined ? {} : { identity: verdict.identity };
    return isCertificateFailure(verdict.reason)
      ? { ok: false, stage: "handshake", reason: verdict.reason, ...identity, detail }
      : { ok: false, stage: "admission", reason: verdict.reason, ...identity, detail };
  }
  const identity = verdict.identity;
  if (!request.authorized) {
    // The runtime refused a chain that verifies here: refuse it all the same.
    return {
      ok: false,
      stage: "handshake",
      reason: "unknown_ca",
      identity,
      detail: `the TLS layer refused the chain: ${request.authorizationError ?? "no reason given"}`,
    };
  }
  const cipher = request.cipher;
  if (cipher === undefined || !context.ciphers.has(cipher)) {
    return {
      ok: false,
      stage: "admission",
      reason: "cipher_not_allowed",
      identity,
      ...(cipher === undefined ? {} : { detail: cipher }),
    };
  }
  const who = context.policy.identify(identity, verdict.issuer);
  if ("deny" in who) {
    const detail = who.deny === "unknown_identity"
      ? "no client's match fits the certificate"
      : "the certificate fits the match of several clients";
    return { ok: false, stage: "admission", reason: who.deny, identity, detail };
  }
  const client = who.client;
  const route: RouteRequest = {
    ...(request.listenerGroup === undefined ? {} : { listenerGroup: request.listenerGroup }),
    ...(request.sni === undefined || request.sni === "" ? {} : { sni: request.sni }),
    alpn: request.alpn ?? [],
  };
  const routed = context.policy.route(client, route);
  if ("deny" in routed) {
    return {
      ok: false,
      stage: "admission",
      reason: routed.deny,
      client: client.name,
      identity,
      ...(routed.group === undefined ? {} : { group: routed.group }),
      detail: routed.deny === "no_group"
        ? `client ${client.name} may use ${
          client.groups.join(", ")
        }: choose one with SNI or ALPN (its name)`
        : `client ${client.name} asked for group ${routed.group}, which it may not use`,
    };
  }
  return { ok: true, client, identity, issuer: verdict.issuer, group: routed.group };
}

/** A forwarded connection as {@linkcode readmit} judges it again. */
export interface LiveAdmission {
  /** The chain it presented, leaf first, DER. */
  chain: readonly Uint8Array[];
  /** The client it was admitted as. */
  client: string;
  /** The group it was routed to. */
  group: string;
}

/** Why the trust and policy now in force would refuse a live connection. */
export interface Withdrawal {
  /** `revoked` when a CRL revokes a certificate of its chain; `policy_changed` otherwise. */
  reason: "revoked" | "policy_changed";
  /** What changed, for the log. */
  detail: string;
}

/**
 * Judges a live connection again after a reload or CRL update: its chain verified in
 * full against the trust now in force (CA removed, certificate revoked), and the policy
 * (client removed, its match changed, the group it uses withdrawn). The group is not
 * routed again: a client that gains a second group keeps the connections its only
 * group got.
 *
 * @example Usage
 * ```ts
 * import { ClientTrust, createCa, issueCertificate, parseConfig, Policy, readmit, TrustStore } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const ca = await createCa({ commonName: "Example CA" });
 * const alice = await issueCertificate(ca, { commonName: "alice", kind: "client" });
 * const base = `[server]\nlisten = "127.0.0.1:8443"\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n` +
 *   `[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n[groups.cache]\nupstreams = ["127.0.0.1:6379"]\n`;
 * const policy = new Policy(parseConfig(
 *   `${base}[clients.alice]\nmatch = { cn = "alice" }\ngroups = ["cache"]\n`,
 *   { path: "/etc/mtlb/lb.toml" },
 * ));
 * const context = { trust: new ClientTrust({ store: TrustStore.fromPem(ca.certPem) }), policy, now: Date.now() };
 * const live = { chain: [alice.der], client: "alice", group: "echo" };
 * assert.deepEqual(readmit(live, context), {
 *   reason: "policy_changed",
 *   detail: "client alice may no longer use group echo",
 * });
 * ```
 *
 * @param live The connection: its chain, client and group.
 * @param context The trust and policy now in force.
 * @returns Why it must end, or `undefined` when it may go on.
 */
export function readmit(
  live: LiveAdmission,
  context: Omit<AdmissionContext, "ciphers">,
): Withdrawal | undefined {
  if (live.chain.length === 0) return undefined; // Closing already: its handle is gone.
  const verdict = context.trust.verifyChain(live.chain, context.now);
  if (!verdict.ok) {
    return {
      reason: verdict.reason === "revoked" ? "revoked" : "policy_changed",
      detail: verdict.detail,
    };
  }
  const who = context.policy.identify(verdict.identity, verdict.issuer);
  if ("deny" in who) {
    return {
      reason: "policy_changed",
      detail: `the certificate now matches no client (${who.deny})`,
    };
  }
  if (who.client.name !== live.client) {
    return {
      reason: "policy_changed",
      detail: `the certificate now matches client ${who.client.name}`,
    };
  }
  if (!who.client.groups.includes(live.group)) {
    return {
      reason: "policy_changed",
      detail: `client ${live.client} may no longer use group ${live.group}`,
    };
  }
  return undefined;
}
