/**
 * The narrow Deno permissions a configuration needs, and a check of what the
 * process holds against them.
 *
 * @module
 */

/** What a configuration touches. */
export interface PermissionNeeds {
  /** `host:port` entries for `--allow-net`: listeners, upstreams, the admin port. */
  net: string[];
  /** Files for `--allow-read`: the config, CA, certificate, key, CRL. */
  read: string[];
  /**
   * Environment variables for `--allow-env` (the Redis client of `[cluster]` reads two).
   *
   * @default {[]}
   */
  env?: string[];
}

/** The outcome of {@linkcode checkPermissions}. */
export interface PermissionReport {
  /** Entries the process lacks; non-empty means the server cannot run. */
  missing: PermissionNeeds;
  /** Permissions held more broadly than needed (warnings, not errors). */
  broader: string[];
}

/**
 * Renders the flags for `deno run` that grant exactly `needs`.
 *
 * @example Usage
 * ```ts
 * import { permissionFlags } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   permissionFlags({ net: ["127.0.0.1:8443", "127.0.0.1:6379"], read: ["config/lb.toml"] }),
 *   ["--allow-net=127.0.0.1:8443,127.0.0.1:6379", "--allow-read=config/lb.toml"],
 * );
 * ```
 *
 * @param needs What to grant.
 * @returns One flag per permission kind, duplicates removed, order kept.
 */
export function permissionFlags(needs: PermissionNeeds): string[] {
  const flags: string[] = [];
  const net = [...new Set(needs.net)];
  const read = [...new Set(needs.read)];
  const env = [...new Set(needs.env ?? [])];
  if (net.length > 0) flags.push(`--allow-net=${net.join(",")}`);
  if (read.length > 0) flags.push(`--allow-read=${read.join(",")}`);
  if (env.length > 0) flags.push(`--allow-env=${env.join(",")}`);
  return flags;
}

/**
 * Checks with `Deno.permissions` that the process holds every permission in
 * `needs`, and notes the kinds it holds more broadly than needed (all hosts,
 * all files, environment, subprocesses, writes, FFI).
 *
 * Queries never prompt.
 *
 * @example Usage
 * ```ts
 * import { checkPermissions } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const report = checkPermissions({ net: [], read: [] });
 * assert.deepEqual(report.missing, { net: [], read: [], env: [] });
 * ```
 *
 * @param needs What the configuration needs.
 * @returns What is missing and what is broader than needed.
 */
export function checkPermissions(needs: PermissionNeeds): PermissionReport {
  const granted = (desc: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(desc).state === "granted";
  const missing: PermissionNeeds = {
    net: [...new Set(needs.net)].filter((host) => !granted({ name: "net", host })),
    read: [...new Set(needs.read)].filter((path) => !granted({ name: "read", path })),
    env: [...new Set(needs.env ?? [])].filter((variable) => !granted({ name: "env", variable })),
  };
  const broader: string[] = [];
  if (granted({ name: "net" })) broader.push("--allow-net (every host)");
  if (granted({ name: "read" })) broader.push("--allow-read (every file)");
  if (granted({ name: "write" })) broader.push("--allow-write");
  if (granted({ name: "run" })) broader.push("--allow-run");
  if (granted({ name: "ffi" })) broader.push("--allow-ffi");
  if (granted({ name: "env" })) broader.push("--allow-env (every variable)");
  return { missing, broader };
}
