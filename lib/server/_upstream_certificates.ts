/**
 * The expiry of the groups' `[groups.<name>.tls]` material, as `Balancer.status()`
 * and `/metrics` show it.
 *
 * @module
 */
import type { TlsMaterial } from "../config/mod.ts";
import type { GaugeSeries, MetricFamily } from "../metrics/registry.ts";
import type { UpstreamCertificateDates } from "./status.ts";

/**
 * For each group with `[groups.<name>.tls]`: the earliest expiry of its CA bundle and
 * the expiry of its client certificate, ms since the epoch.
 *
 * @example Usage
 * ```ts
 * import { upstreamCertificateDates } from "./_upstream_certificates.ts";
 * import assert from "node:assert/strict";
 *
 * const at = (iso: string) => ({ subject: "CN=x", notBefore: new Date(0), notAfter: new Date(iso) });
 * const dates = upstreamCertificateDates({
 *   upstreams: new Map([["db", {
 *     ca: "",
 *     certificates: [{ which: "ca", ...at("2030-01-01") }, { which: "ca", ...at("2029-01-01") }],
 *   }]]),
 * });
 * assert.deepEqual(dates.get("db"), { ca: Date.parse("2029-01-01") });
 * ```
 *
 * @param tls The TLS material (its `upstreams`).
 * @returns The dates, by group.
 */
export function upstreamCertificateDates(
  tls: Pick<TlsMaterial, "upstreams">,
): Map<string, { ca?: number; cert?: number }> {
  const dates = new Map<string, { ca?: number; cert?: number }>();
  for (const [group, material] of tls.upstreams ?? []) {
    const entry: { ca?: number; cert?: number } = {};
    for (const cert of material.certificates) {
      const at = cert.notAfter.getTime();
      if (cert.which === "ca") entry.ca = Math.min(entry.ca ?? Infinity, at);
      else entry.cert ??= at;
    }
    dates.set(group, entry);
  }
  return dates;
}

/**
 * The `certificates.upstreams` of `/status`: each group's dates, ISO 8601.
 *
 * @param tls The TLS material.
 * @returns The dates by group, or `undefined` when no group has TLS.
 */
export function upstreamCertificateStatus(
  tls: Pick<TlsMaterial, "upstreams">,
): Record<string, UpstreamCertificateDates> | undefined {
  const dates = upstreamCertificateDates(tls);
  if (dates.size === 0) return undefined;
  const status: Record<string, UpstreamCertificateDates> = {};
  for (const [group, entry] of dates) {
    status[group] = Object.fromEntries(
      Object.entries(entry).map(([which, at]) => [which, new Date(at).toISOString()]),
    );
  }
  return status;
}

/**
 * Sets `mtlb_upstream_certificate_expiry_timestamp_seconds{group, which}` afresh.
 *
 * @param gauge The family.
 * @param tls The TLS material.
 */
export function setUpstreamExpiry(
  gauge: MetricFamily<GaugeSeries>,
  tls: Pick<TlsMaterial, "upstreams">,
): void {
  gauge.clear();
  for (const [group, dates] of upstreamCertificateDates(tls)) {
    for (const [which, at] of Object.entries(dates)) gauge.labels(group, which).set(at / 1000);
  }
}
