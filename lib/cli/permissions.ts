/**
 * `main.ts permissions`: prints the `deno run` line with exactly the permissions a
 * config needs.
 *
 * @module
 */
import { resolve } from "node:path";
import { formatRunCommand } from "../control/permissions.ts";
import { permissionNeeds } from "../control/permission_needs.ts";
import { readConfig } from "./_read_config.ts";
import { EXIT_OK } from "./exit_codes.ts";
import type { Io } from "./_io.ts";

/**
 * Runs `permissions` on the config at `path`: prints one line, with absolute paths
 * so that it runs from any folder (and on stderr, why `--allow-net` has no list when
 * upstreams are looked up in DNS).
 *
 * @param path The config file.
 * @param io Output.
 * @returns {@linkcode EXIT_OK}, or the exit code of a config that cannot be read.
 */
export async function permissionsCommand(path: string, io: Io): Promise<number> {
  const args = ["--config", resolve(path)];
  const config = await readConfig(path, io, args);
  if (typeof config === "number") return config;
  const needs = permissionNeeds(config);
  io.out(`${formatRunCommand(needs, { main: io.main, args })}\n`);
  if (needs.anyHost === true) {
    const groups = [...config.groups.values()].filter((g) => g.dns.length > 0).map((g) => g.name);
    io.err(
      `Note: --allow-net has no list because ${
        groups.length === 1 ? `group ${groups[0]} looks` : `groups ${groups.join(", ")} look`
      } upstreams up in DNS: Deno checks the address each connection goes to, and those are known only once DNS answers (see OPERATIONS.md, "Upstreams from DNS")\n`,
    );
  }
  return EXIT_OK;
}
