/**
 * `deno task start`, `deno task check-config` and `deno task compile`: run `main.ts`
 * (or `deno compile`) with exactly the permissions the config needs, derived from
 * the config each time as `main.ts permissions` prints them, so that editing the
 * config (a listener, an upstream, `[admin]`, a certificate path) never needs a
 * change to `deno.json`.
 *
 * ```sh
 * deno run --allow-read --allow-run tasks/launch.ts serve|check|compile [main.ts options]
 * ```
 *
 * This launcher reads the config and starts one process; the balancer it starts
 * holds only the narrow flags. It forwards SIGINT, SIGTERM and SIGHUP to it and
 * exits with its exit code.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCliArgs, UsageError } from "../lib/cli/args.ts";
import { EXIT_USAGE } from "../lib/cli/exit_codes.ts";
import { permissionNeeds } from "../lib/control/permission_needs.ts";
import { type Config, ConfigError, loadConfig } from "../lib/config/mod.ts";
import { permissionFlags } from "../lib/control/permissions.ts";
import { WORKER_MODULE } from "../lib/workers/options.ts";

/** The repository root. */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** `main.ts`, by its absolute path (as `main.ts permissions` prints it). */
export const MAIN: string = join(ROOT, "main.ts");
/** Where `compile` writes the binary. */
export const COMPILE_OUTPUT: string = join(ROOT, "dist", "mtlb");

/** What the launcher runs. */
export type LaunchMode = "serve" | "check" | "compile";

/** Options of {@linkcode launchArgs}: the `serve` options passed on. */
export interface LaunchOptions {
  /**
   * `--log-format` for `serve`.
   *
   * @default {undefined (the config's [log] format)}
   */
  logFormat?: string;
  /**
   * `--log-level` for `serve`.
   *
   * @default {"info"}
   */
  logLevel?: string;
}

/**
 * The arguments after `deno` for a mode: `run` with the flags `main.ts permissions`
 * prints for `serve`; `run` with read permission for the config's files for `check`;
 * `compile` with the same flags as `serve` built in (and the Workers' module
 * included) for `compile`. The config path is absolute, so the command runs from any
 * folder, and the compiled binary uses that config unless given another `--config`.
 *
 * @example Usage
 * ```ts
 * import { launchArgs, MAIN } from "./launch.ts";
 * import { parseConfig } from "../lib/config/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `[server]\nlisten = "127.0.0.1:8443"\nworkers = 1\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n` +
 *     `[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`,
 *   { path: "/srv/lb.toml" },
 * );
 * assert.deepEqual(launchArgs("serve", config), [
 *   "run",
 *   "--allow-net=127.0.0.1:8443,127.0.0.1:7001",
 *   "--allow-read=/srv/lb.toml,/srv/ca.crt,/srv/s.crt,/srv/s.key",
 *   MAIN,
 *   "--config",
 *   "/srv/lb.toml",
 * ]);
 * ```
 *
 * @param mode What to run.
 * @param config The loaded configuration (its `path` absolute).
 * @param options `serve` options to pass on.
 * @returns The arguments for `Deno.execPath()`.
 */
export function launchArgs(
  mode: LaunchMode,
  config: Config,
  options: LaunchOptions = {},
): string[] {
  const configArgs = ["--config", config.path];
  if (mode === "check") {
    // `check` reads the config's files and starts no worker and no listener.
    const { read } = permissionNeeds(config, { workers: 1 });
    return ["run", ...permissionFlags({ net: [], read }), MAIN, "check", ...configArgs];
  }
  const flags = permissionFlags(permissionNeeds(config));
  if (mode === "compile") {
    return [
      "compile",
      ...flags,
      "--include",
      fileURLToPath(WORKER_MODULE),
      "--output",
      COMPILE_OUTPUT,
      MAIN,
      ...configArgs,
    ];
  }
  return [
    "run",
    ...flags,
    MAIN,
    ...configArgs,
    ...(options.logFormat === undefined ? [] : ["--log-format", options.logFormat]),
    ...(options.logLevel === undefined || options.logLevel === "info"
      ? []
      : ["--log-level", options.logLevel]),
  ];
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

async function launch(args: readonly string[]): Promise<number> {
  const [mode, ...rest] = args;
  if (mode !== "serve" && mode !== "check" && mode !== "compile") {
    console.error(
      "Usage: deno run --allow-read --allow-run tasks/launch.ts serve|check|compile [--config FILE] [serve options]",
    );
    return EXIT_USAGE;
  }
  let command;
  try {
    command = parseCliArgs([mode === "check" ? "check" : "serve", ...rest]);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(error.message);
    return EXIT_USAGE;
  }
  let argv: string[];
  if (command.command !== "serve" && command.command !== "check") {
    // --help, --version: nothing to read.
    argv = ["run", MAIN, ...rest];
  } else {
    let config: Config;
    try {
      config = await loadConfig(command.config);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      console.error(error.message);
      return EXIT_USAGE;
    }
    argv = launchArgs(
      mode,
      config,
      command.command === "serve"
        ? {
          ...(command.logFormat === undefined ? {} : { logFormat: command.logFormat }),
          logLevel: command.logLevel,
        }
        : {},
    );
    console.error(
      `With the permissions ${config.path} needs: deno ${argv.map(shellQuote).join(" ")}`,
    );
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: argv,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C reaches the child from the terminal too; the balancer takes signals that
  // arrive together as one.
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM", "SIGHUP"];
  const forwarders = signals.map((signal) => {
    const forward = (): void => {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
    };
    Deno.addSignalListener(signal, forward);
    return [signal, forward] as const;
  });
  try {
    return (await child.status).code;
  } finally {
    for (const [signal, forward] of forwarders) Deno.removeSignalListener(signal, forward);
  }
}

if (import.meta.main) Deno.exit(await launch(Deno.args));
