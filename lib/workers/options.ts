/**
 * What a `WorkerBalancer` is built from: its options, the module its workers run,
 * and how long it waits for their figures.
 *
 * @module
 */
import type { Config } from "../config/mod.ts";
import type { Clock } from "../core/clock.ts";
import type { LoadedConfig } from "../server/lifecycle.ts";
import type { DnsResolver } from "../upstream/dns_resolver.ts";
import type { HealthCheck } from "../upstream/health_check.ts";
import type { SharedStateOptions } from "./shared_state.ts";
import type { WorkerLogging } from "./worker_logging.ts";

/** The module each worker runs. */
export const WORKER_MODULE: URL = new URL("./_balancer_worker.ts", import.meta.url);

/**
 * The folder a worker loads its modules from (mtlb's `lib/`): Deno needs read
 * permission for it.
 */
export const WORKER_MODULES_ROOT: URL = new URL("../", import.meta.url);

/** How long `status()` and `/metrics` wait for the workers' figures, ms. */
export const DEFAULT_COLLECT_TIMEOUT = 2000;

/** Options of `WorkerBalancer`. */
export interface WorkerBalancerOptions {
  /** A validated configuration (see `loadConfig`). */
  config: Config;
  /** The PEM material the configuration names (see `loadTlsMaterial`). */
  tls: LoadedConfig["tls"];
  /**
   * The number of workers, at least 1.
   *
   * @default {config.server.workers, else navigator.hardwareConcurrency}
   */
  workers?: number;
  /**
   * Reads the configuration again for `WorkerBalancer.reload()` called
   * without arguments; it should throw on anything it will not run.
   *
   * @default {loadConfig(path), then loadTlsMaterial}
   */
  load?: (path: string) => Promise<LoadedConfig>;
  /**
   * The active health check the primary runs.
   *
   * @default {tcpCheck}
   */
  healthCheck?: HealthCheck;
  /**
   * Answers the look-ups of the groups' DNS entries, which the primary makes once
   * for every worker.
   *
   * @default {denoResolver() asking `[server] resolver`, else the system resolver}
   */
  resolver?: DnsResolver;
  /**
   * Time source of the primary: health probes, restart delays, drain duration.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Wall-clock time, ms since the epoch: the timestamps of the status.
   *
   * @default {Date.now}
   */
  wallClock?: () => number;
  /**
   * How each worker configures LogTape (its records go to stderr, as the primary's
   * do); workers log nothing without it.
   *
   * @default {undefined}
   */
  logging?: WorkerLogging;
  /**
   * Capacity of the shared counts: upstream addresses and client names ever
   * configured, reloads included.
   *
   * @default {{ upstreams: 1024, clients: 16384 }}
   */
  shared?: SharedStateOptions;
  /**
   * The module each worker runs; another one must import `_balancer_worker.ts` and
   * add only instrumentation (tests use one that can crash on demand).
   *
   * @default {WORKER_MODULE}
   */
  module?: URL;
  /**
   * How long `status()` and `metrics.render()` wait for each worker's figures, ms;
   * a worker that does not answer in time is counted with its previous figures.
   *
   * @default {DEFAULT_COLLECT_TIMEOUT}
   */
  collectTimeout?: number;
  /**
   * The open-files limit (`ulimit -n`) that the default `[server] max_connections`
   * and `max_handshakes` derive from.
   *
   * @default {read from /proc/self/limits when allowed, else 32768}
   */
  fileDescriptorLimit?: number;
}
