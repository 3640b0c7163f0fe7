/**
 * `main.ts` run to its end: a command's output, and the permissions it asks for a
 * config.
 *
 * @module
 */
import { join } from "node:path";
import { MAIN, ROOT } from "./paths.ts";
import { run, SubprocessError } from "./subprocess.ts";

/** What a finished `main.ts` wrote, and its exit code. */
export interface Output {
  /** The exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/**
 * Runs `deno run FLAGS main.ts ARGS` (from the repository root unless `cwd` is given)
 * and collects its output; a failed exit is returned, not thrown.
 *
 * @example Usage
 * ```ts ignore
 * import { runMain } from "./run_main.ts";
 * import assert from "node:assert/strict";
 *
 * const { code, stdout } = await runMain(["--quiet"], ["--help"]);
 * assert.equal(code, 0);
 * assert.match(stdout, /serve/);
 * ```
 *
 * @param flags `deno run` flags (permissions).
 * @param args The arguments of `main.ts`.
 * @param cwd Where to run it.
 * @returns Its output and exit code.
 * @throws {SubprocessError} When it ran for more than two minutes.
 */
export async function runMain(
  flags: string[],
  args: string[],
  cwd: string = ROOT,
): Promise<Output> {
  const { code, stdout, stderr } = await run([Deno.execPath(), "run", ...flags, MAIN, ...args], {
    cwd,
    timeoutMs: 120_000,
    allowFailure: true,
  });
  return { code, stdout, stderr };
}

/** Options of {@linkcode mainPermissions}. */
export interface MainPermissionsOptions {
  /**
   * The mtlb checkout whose `main.ts` to ask, run from that folder (so its own
   * `deno.json` and lock file apply, and relative paths it prints are relative to it).
   * @default this repository
   */
  checkout?: string;
}

/**
 * The `deno run` permission flags `main.ts permissions` prints for a config: exactly
 * what `main.ts serve` needs to serve it (run from the same checkout).
 *
 * @example Usage
 * ```ts ignore
 * import { mainPermissions } from "./run_main.ts";
 *
 * const flags = await mainPermissions("/tmp/lb.toml");
 * // ["--allow-net=127.0.0.1:8443,127.0.0.1:6379", "--allow-read=/tmp/lb.toml,..."]
 * const before = await mainPermissions("/tmp/lb.toml", { checkout: "/tmp/mtlb-before" });
 * ```
 *
 * @param config The config file.
 * @param options Which checkout to ask.
 * @returns The `--allow-*` flags.
 * @throws {SubprocessError} When `main.ts permissions` failed or printed none.
 */
export async function mainPermissions(
  config: string,
  options: MainPermissionsOptions = {},
): Promise<string[]> {
  const checkout = options.checkout ?? ROOT;
  const { code, stdout, stderr } = await run([
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-read=${config}`,
    join(checkout, "main.ts"),
    "permissions",
    "--config",
    config,
  ], { cwd: checkout, timeoutMs: 120_000, allowFailure: true });
  const flags = stdout.trim().split(/\s+/).filter((token) => token.startsWith("--allow-"));
  if (code !== 0 || flags.length === 0) {
    throw new SubprocessError(
      `${
        join(checkout, "main.ts")
      } permissions printed no permissions for ${config} (status ${code}): ${stdout.trim()}${stderr.trim()}`,
    );
  }
  return flags;
}
