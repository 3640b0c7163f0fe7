/**
 * A balancer under test, as the measurements see it: its process and its listeners.
 *
 * @module
 */
import type { Subprocess } from "../../testing/subprocess.ts";

/** What kinds of balancer the benchmark runs. */
export const TARGET_KINDS = ["mtlb", "haproxy", "floor", "nginx"] as const;

/** A kind of balancer: mtlb, HAProxy, the Deno floor or NGINX. */
export type TargetKind = typeof TARGET_KINDS[number];

/** Label of the Deno floor target (bench/_floor.ts). */
export const FLOOR = "Deno floor";

/** A balancer under test. */
export interface Target {
  /** Label in the table: "mtlb", "HAProxy", "NGINX", "mtlb workers=2", ... */
  label: string;
  kind: TargetKind;
  proc: Subprocess;
  /** TLS listener forwarding to the two redis servers. */
  redisPort: number;
  /** TLS listener forwarding to the sink. */
  sinkPort: number;
  /**
   * Plain TCP listener (no TLS) forwarding to the two redis servers: HAProxy, NGINX and
   * the floor have one, for the runtime's cost without TLS. mtlb only speaks mutual TLS.
   */
  tcpPort?: number;
  /** The generated configuration. */
  config: string;
  /**
   * The mtlb checkout it runs (mtlb targets only): this repository, or another one
   * given with `--baseline`.
   */
  checkout?: string;
}
