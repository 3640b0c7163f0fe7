/**
 * Helpers for tests that run `main.ts` from a config folder or a printed command line.
 * Spawning, reading lines and waiting for log records are in `testing/`.
 *
 * @module
 */
import { dirname, join } from "node:path";

/** A temporary folder holding `lb.toml` with `body`; removed on dispose. */
export async function configDir(
  body: string,
): Promise<{ dir: string; path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_e2e_cli_" });
  const path = join(dir, "lb.toml");
  await Deno.writeTextFile(path, body);
  return { dir, path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/**
 * Runs a command line as printed, through `sh` (the `exec` makes the shell become
 * the command, so signals reach it), with the running `deno` first on `PATH`.
 * The caller reads its standard error (and output, if piped) itself, as a user's
 * terminal or a service manager would.
 */
export function spawnLine(
  line: string,
  options: { cwd: string; stdout?: "piped" | "null" },
): Deno.ChildProcess {
  const path = `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? ""}`;
  return new Deno.Command("sh", {
    args: ["-c", `exec ${line}`],
    cwd: options.cwd,
    env: { PATH: path },
    stdin: "null",
    stdout: options.stdout ?? "null",
    stderr: "piped",
  }).spawn();
}
