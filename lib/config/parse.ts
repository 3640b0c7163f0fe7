/**
 * {@linkcode parseConfig} and {@linkcode loadConfig}: TOML text in, a typed and
 * validated {@linkcode Config} out. Validation fails fast: the first problem found is
 * reported as a {@linkcode ConfigError} carrying the file, the key path and, where
 * known, the line.
 *
 * @module
 */
import { parse, TomlError } from "smol-toml";
import { dirname, resolve } from "node:path";
import { ConfigError } from "./config_error.ts";
import type { Config } from "./types.ts";
import { checkAmbiguousClients, checkListeners } from "./_cross_checks.ts";
import { fileError } from "./_file_error.ts";
import {
  HEALTH_KEYS,
  OUTLIER_KEYS,
  readAdmin,
  readClients,
  readCluster,
  readGroups,
  readHealth,
  readLimits,
  readOutlier,
  readServer,
  readTls,
} from "./_read_sections.ts";
import { _Reader, type Table } from "./_reader.ts";

/** Options for {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** The file name used in errors and stored as {@linkcode Config.path}. */
  path: string;
  /**
   * Folder that relative paths (`tls.ca`, `tls.cert`, `tls.key`, `tls.crl`) resolve against.
   *
   * @default {dirname(path)}
   */
  baseDir?: string;
}

/**
 * Parses and validates config text. Pure: reads no files (certificates are checked
 * by {@linkcode loadTlsMaterial}). Fails on the first problem found.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `
 * [server]
 * listen = "127.0.0.1:8443"
 * [tls]
 * ca = "certs/ca.crt"
 * cert = "certs/server.crt"
 * key = "certs/server.key"
 * [groups.cache]
 * upstreams = ["127.0.0.1:6379", { address = "127.0.0.1:6380", weight = 2 }]
 * [clients.alice]
 * match = { cn = "alice" }
 * groups = ["cache"]
 * `,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * assert.equal(config.tls.ca, "/etc/mtlb/certs/ca.crt");
 * assert.equal(config.server.idleTimeout, 15 * 60_000);
 * assert.deepEqual(config.groups.get("cache")?.upstreams[1], { address: "127.0.0.1:6380", weight: 2 });
 * ```
 *
 * @param text The TOML text.
 * @param options The file name (for errors) and the folder relative paths resolve against.
 * @returns The validated configuration, defaults filled in.
 * @throws {ConfigError} When the text is not valid TOML or not a valid configuration.
 */
export function parseConfig(text: string, options: ParseConfigOptions): Config {
  text = text.replace(/^\uFEFF/, "");
  const r = new _Reader(text, options.path);
  const baseDir = options.baseDir ?? dirname(options.path);
  let doc: Table;
  try {
    doc = parse(text, { integersAsBigInt: true, maxDepth: 32 }) as Table;
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0]! : String(error);
    throw new ConfigError(`invalid TOML: ${reason.replace(/^Invalid TOML document: /, "")}`, {
      path: options.path,
      line: error instanceof TomlError ? error.line : undefined,
      column: error instanceof TomlError ? error.column : undefined,
      cause: error,
    });
  }
  r.keys(doc, "", [
    "server",
    "tls",
    "limits",
    "health",
    "outlier",
    "groups",
    "clients",
    "admin",
    "log",
    "cluster",
  ]);

  const server = readServer(r, r.table(doc, "", "server", false));
  const tls = readTls(r, r.table(doc, "", "tls", true), baseDir);
  const limits = readLimits(r, r.table(doc, "", "limits", false));
  const healthTable = r.table(doc, "", "health", false);
  r.keys(healthTable, "health", HEALTH_KEYS);
  const health = readHealth(r, healthTable, "health", {
    interval: 30_000,
    timeout: 1000,
    rise: 1,
    fall: 1,
  });
  const outlierTable = r.table(doc, "", "outlier", false);
  r.keys(outlierTable, "outlier", OUTLIER_KEYS);
  const outlier = readOutlier(r, outlierTable, "outlier", {
    consecutiveFailures: 5,
    baseEjectionTime: 30_000,
    maxEjectionTime: 300_000,
    maxEjectedPercent: 50,
    panicThreshold: 50,
  });
  const groups = readGroups(r, r.table(doc, "", "groups", true), health, outlier);
  const clients = readClients(r, r.table(doc, "", "clients", false), groups);
  const admin = readAdmin(r, r.table(doc, "", "admin", false), baseDir);
  const logTable = r.table(doc, "", "log", false);
  r.keys(logTable, "log", ["format"]);
  const format = r.oneOf(logTable, "log", "format", ["auto", "text", "json"] as const) ?? "auto";

  const cluster = readCluster(r, r.table(doc, "", "cluster", false));

  const fail = (key: string, detail: string): never => r.fail(key, detail);
  checkListeners(fail, server, groups, admin);
  checkAmbiguousClients(fail, clients);
  return {
    path: options.path,
    server,
    tls,
    limits,
    health,
    outlier,
    groups,
    clients,
    admin,
    log: { format },
    ...(cluster === undefined ? {} : { cluster }),
  };
}

/**
 * Reads and validates a config file; relative paths in it resolve against its folder.
 * Certificates are not read: see {@linkcode loadTlsMaterial}.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * console.log([...config.groups.keys()]);
 * ```
 *
 * @param path The config file.
 * @returns The validated configuration; `path` is made absolute.
 * @throws {ConfigError} When the file cannot be read or is not a valid configuration.
 */
export async function loadConfig(path: string): Promise<Config> {
  const file = resolve(path);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new ConfigError(`cannot read the file: ${fileError(error)}`, {
      path: file,
      cause: error,
    });
  }
  return parseConfig(text, { path: file });
}
