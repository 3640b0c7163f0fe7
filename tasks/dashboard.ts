/**
 * `deno task dashboard`: builds the dashboard's browser script. It strips the types
 * of `lib/admin/dashboard/client.ts` with Deno's own TypeScript stripper (offline,
 * no bundler, no download) and formats the result with `deno fmt` into
 * `lib/admin/dashboard/client.js`, the file the page inlines. Both files are
 * committed; a test fails when `client.js` is not the build of `client.ts`.
 *
 * ```sh
 * deno run --allow-read --allow-write=lib/admin/dashboard/client.js --allow-run tasks/dashboard.ts
 * ```
 *
 * @module
 */
import { stripTypeScriptTypes } from "node:module";
import { fileURLToPath } from "node:url";

/** The browser script's source: erasable TypeScript, type-only imports. */
export const CLIENT_SOURCE: URL = new URL("../lib/admin/dashboard/client.ts", import.meta.url);
/** The built script the page inlines. */
export const CLIENT_BUILD: URL = new URL("../lib/admin/dashboard/client.js", import.meta.url);

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BANNER = "// Built from client.ts by `deno task dashboard`: edit client.ts, not this file.\n";
const DOM_REFERENCE = '/// <reference lib="dom" />\n';

/**
 * Builds the page script from the source of `client.ts`.
 *
 * @param source The TypeScript source.
 * @returns The JavaScript module, formatted as `deno fmt` formats it.
 * @throws {SyntaxError} When the source uses TypeScript that only a compiler can
 * erase (an `enum`, a `namespace`, parameter properties).
 * @throws {Error} When a value import or an export is left, or the script could
 * end its inline `<script>` element early.
 */
export async function buildClient(source: string): Promise<string> {
  const stripped = stripTypeScriptTypes(source.replace(DOM_REFERENCE, ""), { mode: "strip" });
  if (/^\s*(import|export)\b/m.test(stripped)) {
    throw new Error(
      "Cannot build the dashboard script: it is inlined, so it may import types only and export nothing",
    );
  }
  const formatted = await denoFmt(BANNER + stripped);
  if (/<\/script|<!--|<script/i.test(formatted)) {
    throw new Error(
      "Cannot build the dashboard script: it must not contain `</script`, `<script` or `<!--`",
    );
  }
  return formatted;
}

async function denoFmt(code: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext=js", "-"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(code));
  await writer.close();
  const { code: exit, stdout, stderr } = await child.output();
  if (exit !== 0) {
    throw new Error(
      `Cannot format the dashboard script: deno fmt exited with ${exit}: ${
        new TextDecoder().decode(stderr).trim()
      }`,
    );
  }
  return new TextDecoder().decode(stdout);
}

if (import.meta.main) {
  const built = await buildClient(await Deno.readTextFile(CLIENT_SOURCE));
  await Deno.writeTextFile(CLIENT_BUILD, built);
  console.log(`Built ${fileURLToPath(CLIENT_BUILD)} (${built.split("\n").length - 1} lines)`);
}
