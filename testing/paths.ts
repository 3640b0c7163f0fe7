/**
 * Where the repository is, for helpers that run its scripts.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The repository root, with a trailing separator.
 *
 * @example Usage
 * ```ts
 * import { ROOT } from "./paths.ts";
 * import { existsSync } from "node:fs";
 * if (!existsSync(`${ROOT}deno.json`)) throw new Error("not the root");
 * ```
 */
export const ROOT: string = fileURLToPath(new URL("..", import.meta.url));

/** `main.ts`, by its absolute path (as the command lines it prints name it). */
export const MAIN: string = join(ROOT, "main.ts");
