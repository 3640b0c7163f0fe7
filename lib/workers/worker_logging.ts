/**
 * How the workers of a `WorkerBalancer` log.
 *
 * @module
 */

/** How the workers log: the options of `configureLogging` that can cross threads. */
export interface WorkerLogging {
  /**
   * `auto` (text on a terminal, JSON lines otherwise), `text` or `json`.
   *
   * @default {"auto"}
   */
  format?: "auto" | "text" | "json";
  /**
   * The lowest level written for the `mtlb` categories.
   *
   * @default {"info"}
   */
  level?: "trace" | "debug" | "info" | "warning" | "error" | "fatal";
  /**
   * Whether stderr is a terminal.
   *
   * @default {Deno.stderr.isTerminal()}
   */
  terminal?: boolean;
}
