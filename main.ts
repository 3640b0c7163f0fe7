/**
 * The mtlb service: `deno run <narrow permissions> main.ts [serve|check|permissions|certs]`.
 * Run `main.ts --help` for the commands and options, and `main.ts permissions` for
 * the exact permissions a config needs.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import denoJson from "./deno.json" with { type: "json" };
import { runCli } from "./lib/cli/cli.ts";

if (import.meta.main) {
  // Printed command lines name this script by its absolute path: they run from any folder.
  const self = new URL(import.meta.url);
  const main = self.protocol === "file:" ? fileURLToPath(self) : self.href;
  Deno.exit(await runCli(Deno.args, { version: denoJson.version, main }));
}
