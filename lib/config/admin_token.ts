/**
 * {@linkcode loadAdminToken}: reads the admin endpoint's bearer token from the file
 * `[admin] token_file` names.
 *
 * @module
 */
import { ConfigError } from "./config_error.ts";
import type { Config } from "./types.ts";
import { fileError } from "./_file_error.ts";
import { rememberedLine } from "./_section_lines.ts";

/** Shortest admin token accepted: 128 bits as hex. */
const MIN_TOKEN_LENGTH = 32;

/**
 * Reads the admin endpoint's bearer token from `[admin] token_file`: the file's
 * text with surrounding whitespace trimmed, which must be at least 32 visible
 * ASCII characters (`openssl rand -hex 32` makes one).
 *
 * @example Usage
 * ```ts
 * import { loadAdminToken, parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/admin.token`, "0123456789abcdef0123456789abcdef\n");
 * const config = parseConfig(
 *   `[tls]
 * ca = "ca.crt"
 * cert = "server.crt"
 * key = "server.key"
 * [admin]
 * listen = "127.0.0.1:9000"
 * token_file = "admin.token"
 * [groups.echo]
 * upstreams = ["127.0.0.1:7001"]
 * listen = "127.0.0.1:8443"
 * `,
 *   { path: `${dir}/lb.toml` },
 * );
 * assert.equal(await loadAdminToken(config), "0123456789abcdef0123456789abcdef");
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param config The config (its `path` is used in errors).
 * @returns The token, or `undefined` when `token_file` is not set.
 * @throws {ConfigError} With key `admin.token_file` when the file cannot be read, is
 *   empty, or holds anything but one token of at least 32 visible ASCII characters.
 */
export async function loadAdminToken(
  config: Pick<Config, "path" | "admin">,
): Promise<string | undefined> {
  const file = config.admin.tokenFile;
  if (file === undefined) return undefined;
  const key = "admin.token_file";
  const fail = (detail: string, cause?: unknown): never => {
    throw new ConfigError(`${JSON.stringify(key)} ${detail}`, {
      path: config.path,
      key,
      line: rememberedLine(config.admin, key),
      cause,
    });
  };
  let token: string;
  try {
    token = (await Deno.readTextFile(file)).trim();
  } catch (error) {
    return fail(`cannot be read from ${JSON.stringify(file)}: ${fileError(error)}`, error);
  }
  if (token === "") fail(`names an empty file, ${JSON.stringify(file)}: it must hold the token`);
  if (!/^[\x21-\x7e]+$/.test(token)) {
    fail(
      `must hold one token of visible ASCII characters (no spaces or lines), ${
        JSON.stringify(file)
      } holds something else`,
    );
  }
  if (token.length < MIN_TOKEN_LENGTH) {
    fail(
      `must hold a token of at least ${MIN_TOKEN_LENGTH} characters (openssl rand -hex 32), ${
        JSON.stringify(file)
      } holds ${token.length}`,
    );
  }
  return token;
}
