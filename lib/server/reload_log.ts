/**
 * The log line of a reload: what changed, and what needs a restart.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Config, TlsMaterial } from "../config/mod.ts";
import { describeChanges, diffConfig } from "../config/diff.ts";

const log = getLogger(["mtlb", "server"]);

/**
 * `noun`, or its plural for any count but 1 (every noun used here takes an s).
 *
 * @example Usage
 * ```ts
 * import { plural } from "./reload_log.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(`1 ${plural(1, "worker")}`, "1 worker");
 * assert.equal(`2 ${plural(2, "worker")}`, "2 workers");
 * ```
 *
 * @param count How many.
 * @param noun The singular.
 * @returns The word for that count.
 */
export function plural(count: number, noun: string): string {
  return count === 1 ? noun : `${noun}s`;
}

/**
 * Logs a reload once: what changed (clients, groups, listeners, settings), and the
 * changes that need a restart to apply.
 *
 * @param previous The configuration that was in force.
 * @param config The configuration now in force.
 * @param previousTls The TLS material that was in force.
 * @param tls The TLS material now in force.
 */
export function logReload(
  previous: Config,
  config: Config,
  previousTls: TlsMaterial,
  tls: TlsMaterial,
): void {
  const restart: string[] = [];
  if (config.admin.listen !== previous.admin.listen) restart.push("[admin] listen");
  if (config.log.format !== previous.log.format) restart.push("[log] format");
  if (config.server.workers !== previous.server.workers) restart.push("[server] workers");
  if (config.server.watch !== previous.server.watch) restart.push("[server] watch");
  if (restart.length > 0) {
    log.warn("Reloaded {path}, but these changes need a restart: {restart}", {
      path: config.path,
      restart,
    });
  }
  const changes = diffConfig(previous, config, { previous: previousTls, next: tls });
  log.info("Reloaded {path}: {changes}", {
    path: config.path,
    changes: describeChanges(changes),
    clients: changes.clients,
    groups: changes.groups,
    listeners: changes.listeners,
    settings: changes.settings,
  });
}
