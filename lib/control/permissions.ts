/**
 * The narrow Deno permissions a configuration needs, a check of what the process
 * holds against them, and the `deno run` line that grants exactly them.
 *
 * @module
 */
import { resolve } from "node:path";

/** What a configuration touches. */
export interface PermissionNeeds {
  /** `host:port` entries for `--allow-net`: listeners, upstreams, the admin port. */
  net: string[];
  /**
   * Whether every host is needed (`--allow-net` with no list): upstreams looked up in
   * DNS are addresses known only at run time. `net` then only says what is known.
   *
   * @default {false}
   */
  anyHost?: boolean;
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
  if (needs.anyHost === true) flags.push("--allow-net");
  else if (net.length > 0) flags.push(`--allow-net=${net.join(",")}`);
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
  const anyHost = needs.anyHost === true;
  const missing: PermissionNeeds = {
    net: [...new Set(needs.net)].filter((host) => !granted({ name: "net", host })),
    ...(anyHost && !granted({ name: "net" }) ? { anyHost: true } : {}),
    read: [...new Set(needs.read)].filter((path) => !granted({ name: "read", path })),
    env: [...new Set(needs.env ?? [])].filter((variable) => !granted({ name: "env", variable })),
  };
  const broader: string[] = [];
  if (!anyHost && granted({ name: "net" })) broader.push("--allow-net (every host)");
  if (granted({ name: "read" })) broader.push("--allow-read (every file)");
  if (granted({ name: "write" })) broader.push("--allow-write");
  if (granted({ name: "run" })) broader.push("--allow-run");
  if (granted({ name: "ffi" })) broader.push("--allow-ffi");
  if (granted({ name: "env" })) broader.push("--allow-env (every variable)");
  return { missing, broader };
}

/** Options of {@linkcode formatRunCommand}. */
export interface FormatRunCommandOptions {
  /**
   * The script to run, as the user should type it: `main.ts` prints its own
   * absolute path, so the line runs from any folder.
   *
   * @default {"main.ts"}
   */
  main?: string;
  /**
   * Arguments after the script, such as `["--config", "/etc/mtlb/lb.toml"]`.
   *
   * @default {[]}
   */
  args?: readonly string[];
}

/**
 * Renders a `deno run` command line that grants exactly `needs`, quoted for a
 * POSIX shell (IPv6 brackets and spaces included), on one line. Read paths are
 * absolute (relative ones are resolved against the working directory), so the line
 * can be pasted into a systemd `ExecStart=` or run from any folder.
 *
 * @example Usage
 * ```ts
 * import { formatRunCommand } from "./permissions.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   formatRunCommand(
 *     { net: ["127.0.0.1:8443", "[::1]:8443"], read: ["/srv/lb/lb.toml"] },
 *     { main: "/opt/mtlb/main.ts", args: ["--config", "/srv/lb/lb.toml"] },
 *   ),
 *   "deno run '--allow-net=127.0.0.1:8443,[::1]:8443' --allow-read=/srv/lb/lb.toml /opt/mtlb/main.ts --config /srv/lb/lb.toml",
 * );
 * ```
 *
 * @param needs The permissions to grant.
 * @param options The script and its arguments.
 * @returns The command line, without a trailing newline.
 */
export function formatRunCommand(
  needs: PermissionNeeds,
  options: FormatRunCommandOptions = {},
): string {
  const shown: PermissionNeeds = {
    net: needs.net,
    ...(needs.anyHost === true ? { anyHost: true } : {}),
    read: needs.read.map((path) => resolve(path)),
    ...(needs.env === undefined ? {} : { env: needs.env }),
  };
  return [
    "deno",
    "run",
    ...permissionFlags(shown),
    options.main ?? "main.ts",
    ...options.args ?? [],
  ]
    .map(shellQuote).join(" ");
}

/**
 * Quotes one argument for a POSIX shell: unchanged when it holds only characters
 * the shell takes literally, else in single quotes.
 *
 * @example Usage
 * ```ts
 * import { shellQuote } from "./permissions.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(shellQuote("--allow-read=/srv/lb.toml"), "--allow-read=/srv/lb.toml");
 * assert.equal(shellQuote("--allow-net=[::1]:8443"), "'--allow-net=[::1]:8443'");
 * assert.equal(shellQuote("it's"), "'it'\\''s'");
 * ```
 *
 * @param arg The argument.
 * @returns The argument as a shell reads it back.
 */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}
