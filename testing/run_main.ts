/**
 * `main.ts` run to its end: a command's output, and the permissions it asks for a
 * config.
 *
 * @module
 */
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

/**
 * The `deno run` permission flags `main.ts permissions` prints for a config: exactly
 * what `main.ts serve` needs to serve it.
 *
 * @example Usage
 * ```ts ignore
 * import { mainPermissions } from "./run_main.ts";
 *
 * const flags = await mainPermissions("/tmp/lb.toml");
 * // ["--allow-net=127.0.0.1:8443,127.0.0.1:6379", "--allow-read=/tmp/lb.toml,..."]
 * ```
 *
 * @param config The config file.
 * @returns The `--allow-*` flags.
 * @throws {SubprocessError} When `main.ts permissions` failed or printed none.
 */
export async function mainPermissions(config: string): Promise<string[]> {
  const { code, stdout, stderr } = await runMain(
    ["--quiet", `--allow-read=${config}`],
    ["permissions", "--config", config],
  );
  const flags = stdout.trim().split(/\s+/).filter((token) => token.startsWith("--allow-"));
  if (code !== 0 || flags.length === 0) {
    throw new SubprocessError(
      `main.ts permissions printed no permissions for ${config} (status ${code}): ${stdout.trim()}${stderr.trim()}`,
    );
  }
  return flags;
}
