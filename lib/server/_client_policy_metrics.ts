/**
 * The `mtlb_client_policy_*` metrics of a balancer that serves a fleet's shared
 * client policy, read from its status at each scrape.
 *
 * @module
 */
import type { MetricsRegistry } from "../metrics/registry.ts";
import type { ClientPolicyStatus } from "./status.ts";

/**
 * Registers the client policy metrics and keeps them up to date at each collection.
 *
 * @param registry The balancer's registry.
 * @param status The policy's status now.
 * @returns Stops updating them.
 */
export function clientPolicyMetrics(
  registry: MetricsRegistry,
  status: () => ClientPolicyStatus,
): Disposable {
  const version = registry.gauge({
    name: "mtlb_client_policy_version",
    help:
      'The version of the shared client policy in force ([cluster] clients = "shared"); 0 while the file\'s [clients] is.',
  }).labels();
  const reachable = registry.gauge({
    name: "mtlb_client_policy_store_up",
    help: "1 when the latest read of the client policy store succeeded, else 0.",
  }).labels();
  const errors = registry.counter({
    name: "mtlb_client_policy_store_errors_total",
    help: "Failed reads of the client policy store (the last version stays in force).",
  }).labels();
  const refused = registry.counter({
    name: "mtlb_client_policy_refused_total",
    help: "Stored client policy versions this instance could not apply (the last one stays).",
  }).labels();
  return registry.onCollect(() => {
    const state = status();
    version.set(state.version ?? 0);
    reachable.set(state.storeReachable ? 1 : 0);
    if (state.storeErrors > errors.value) errors.inc(state.storeErrors - errors.value);
    if (state.refused > refused.value) refused.inc(state.refused - refused.value);
  });
}
