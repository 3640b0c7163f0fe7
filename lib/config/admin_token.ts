/**
 * {@linkcode loadAdminToken}: reads the admin endpoint's bearer token from the file
 * `[admin] token_file` names.
 *
 * @module
 */
import type { Config } from "./types.ts";
import { fileKeys } from "./_file_keys.ts";

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
  const { fail, read } = fileKeys(config.path, config.admin);
  const token = (await read(key, file, Deno.readTextFile)).trim();
  if (token === "") {
    fail(key, `names an empty file, ${JSON.stringify(file)}: it must hold the token`);
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    fail(
      key,
      `must hold one token of visible ASCII characters (no spaces or lines), ${
        JSON.stringify(file)
      } holds something else`,
    );
  }
  if (token.length < MIN_TOKEN_LENGTH) {
    fail(
      key,
      `must hold a token of at least ${MIN_TOKEN_LENGTH} characters (openssl rand -hex 32), ${
        JSON.stringify(file)
      } holds ${token.length}`,
    );
  }
  return token;
}
