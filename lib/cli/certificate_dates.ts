/**
 * The validity dates of the CA and server certificates, as `check` and `serve`
 * judge them: expired is an error, expiring soon or not valid yet a warning.
 *
 * @module
 */
import { keyPath, type TlsMaterial } from "../config/mod.ts";
import { oneLine } from "./_io.ts";

/** Certificates expiring within this many days are warned about. */
export const EXPIRY_WARNING_DAYS = 30;

const DAY_MS = 24 * 60 * 60 * 1000;

/** A certificate with the config key it came from, as `check` and `serve` judge its dates. */
export interface DatedCertificate {
  /** The config key: `tls.ca`, `tls.cert`, `groups.<name>.tls.ca`, `groups.<name>.tls.cert`. */
  key: string;
  /** Subject distinguished name. */
  subject: string;
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
  notAfter: Date;
}

/**
 * The certificates of the groups' `tls` material, keyed `groups.<name>.tls.ca` and
 * `groups.<name>.tls.cert`.
 *
 * @example Usage
 * ```ts
 * import { upstreamCertificates } from "./certificate_dates.ts";
 * import assert from "node:assert/strict";
 *
 * const notBefore = new Date(0), notAfter = new Date("2030-01-01");
 * const certs = upstreamCertificates({
 *   upstreams: new Map([["db", { ca: "", certificates: [{ which: "ca", subject: "CN=CA", notBefore, notAfter }] }]]),
 * });
 * assert.equal(certs[0]?.key, "groups.db.tls.ca");
 * ```
 *
 * @param tls The TLS material.
 * @returns Their certificates, group by group in file order.
 */
export function upstreamCertificates(tls: Pick<TlsMaterial, "upstreams">): DatedCertificate[] {
  return [...tls.upstreams ?? []].flatMap(([group, material]) =>
    material.certificates.map(({ which, ...dates }) => ({
      key: keyPath(["groups", group, "tls", which]),
      ...dates,
    }))
  );
}

/** What {@linkcode checkCertificateDates} found wrong with one certificate. */
export interface CertificateFinding {
  /** `"error"` for an expired certificate, `"warning"` otherwise. */
  level: "error" | "warning";
  /** The certificate. */
  certificate: DatedCertificate;
  /** A sentence for the operator. */
  message: string;
}

/**
 * Judges the validity dates of the CA and server certificates: expired is an
 * error, expiring within {@linkcode EXPIRY_WARNING_DAYS} days or not valid yet a
 * warning.
 *
 * @example Usage
 * ```ts
 * import { checkCertificateDates } from "./certificate_dates.ts";
 * import assert from "node:assert/strict";
 *
 * const now = Date.parse("2030-01-01T00:00:00Z");
 * const [finding] = checkCertificateDates([{
 *   key: "tls.cert",
 *   subject: "CN=localhost",
 *   notBefore: new Date("2029-01-01T00:00:00Z"),
 *   notAfter: new Date("2030-01-11T00:00:00Z"),
 * }], now);
 * assert.equal(finding?.level, "warning");
 * assert.match(finding!.message, /expires in 10 days/);
 * ```
 *
 * @param certificates The certificates, as `loadTlsMaterial` reports them.
 * @param now The current time, ms since the epoch.
 * @returns One finding per certificate with a problem, in input order.
 */
export function checkCertificateDates(
  certificates: readonly DatedCertificate[],
  now: number = Date.now(),
): CertificateFinding[] {
  const findings: CertificateFinding[] = [];
  for (const certificate of certificates) {
    const what = `"${certificate.key}" certificate ${JSON.stringify(oneLine(certificate.subject))}`;
    const until = certificate.notAfter.getTime();
    if (until <= now) {
      findings.push({
        level: "error",
        certificate,
        message: `${what} expired on ${certificate.notAfter.toISOString()}`,
      });
    } else if (until - now < EXPIRY_WARNING_DAYS * DAY_MS) {
      const days = daysLeft(certificate, now);
      findings.push({
        level: "warning",
        certificate,
        message: `${what} expires in ${days} day${
          days === 1 ? "" : "s"
        }, on ${certificate.notAfter.toISOString()}`,
      });
    } else if (certificate.notBefore.getTime() > now) {
      findings.push({
        level: "warning",
        certificate,
        message: `${what} is not valid until ${certificate.notBefore.toISOString()}`,
      });
    }
  }
  return findings;
}

/**
 * The whole days left until a certificate expires, negative once it has.
 *
 * @example Usage
 * ```ts
 * import { daysLeft } from "./certificate_dates.ts";
 * import assert from "node:assert/strict";
 *
 * const now = Date.parse("2030-01-01T00:00:00Z");
 * assert.equal(daysLeft({ notAfter: new Date("2030-01-11T12:00:00Z") }, now), 10);
 * assert.ok(daysLeft({ notAfter: new Date("2029-12-31T00:00:00Z") }, now) < 0);
 * ```
 *
 * @param certificate The certificate (its `notAfter`).
 * @param now The current time, ms since the epoch.
 * @returns The days, rounded down.
 */
export function daysLeft(certificate: Pick<DatedCertificate, "notAfter">, now: number): number {
  return Math.floor((certificate.notAfter.getTime() - now) / DAY_MS);
}
