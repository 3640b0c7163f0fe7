import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, loadAdminToken, parseConfig } from "../lib/config/mod.ts";
import { BASE, PATH } from "./_config_fixtures.ts";

Deno.test("loadAdminToken() reads the token file, trimmed, relative to the config file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_token_" });
  try {
    const token = "f".repeat(32) + "+/=_-.~";
    await Deno.writeTextFile(join(dir, "admin.token"), `\n  ${token}\r\n\n`);
    const config = parseConfig(BASE + '[admin]\ntoken_file = "admin.token"\n', {
      path: join(dir, "lb.toml"),
    });
    assert.equal(config.admin.tokenFile, join(dir, "admin.token"));
    assert.equal(await loadAdminToken(config), token);
    assert.equal(await loadAdminToken(parseConfig(BASE, { path: PATH })), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadAdminToken() refuses an unreadable, empty or malformed token file with file, line and key", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_token_" });
  try {
    const path = join(dir, "lb.toml");
    // token_file is on line 16 of the config text.
    const config = parseConfig(BASE + '[admin]\ntoken_file = "admin.token"\n', { path });
    const file = join(dir, "admin.token");
    const cases: [name: string, content: string | undefined, detail: RegExp][] = [
      ["missing", undefined, /cannot be read from ".*admin\.token": no such file$/],
      ["empty", "", /names an empty file, ".*admin\.token": it must hold the token/],
      ["whitespace only", " \n\t\n", /names an empty file/],
      [
        "two lines",
        `${"a".repeat(32)}\n${"b".repeat(32)}\n`,
        /must hold one token of visible ASCII/,
      ],
      ["a space inside", `${"a".repeat(20)} ${"b".repeat(20)}`, /must hold one token/],
      ["non-ASCII", `${"a".repeat(32)}\u00e9`, /must hold one token/],
      ["too short", "secret", /at least 32 characters \(openssl rand -hex 32\), .* holds 6$/],
    ];
    for (const [name, content, detail] of cases) {
      await t.step(name, async () => {
        await Deno.remove(file).catch(() => {});
        if (content !== undefined) await Deno.writeTextFile(file, content);
        await assert.rejects(loadAdminToken(config), (error: unknown) => {
          assert.ok(error instanceof ConfigError, String(error));
          assert.equal(error.path, path);
          assert.equal(error.key, "admin.token_file");
          assert.equal(error.line, 16);
          assert.ok(
            error.message.startsWith(`Cannot load config: ${path}:16: "admin.token_file" `),
            error.message,
          );
          assert.match(error.detail, detail);
          // The message never shows what the file holds.
          if (content !== undefined && content.trim() !== "") {
            assert.ok(!error.message.includes(content.trim()), error.message);
          }
          return true;
        });
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
