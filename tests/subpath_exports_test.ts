/**
 * The package's subpath exports: each resolves, and the building blocks a user
 * imports alone (the pool, health checks, the forwarder, the limiter, the trust
 * checks, the policy, the core values) load no Redis client, no X.509 generation
 * library and no browser driver.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CONFIG = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)) as {
  exports: Record<string, string>;
};

/** Subpaths that must stay light. */
const CORE = ["./core", "./pool", "./health", "./forward", "./upstream", "./limiter", "./proxy"]
  .concat(["./trust", "./policy", "./listener"]);
/** What none of them may load. */
const HEAVY = /@redis\/|@peculiar\/|reflect-metadata|puppeteer|tsyringe|asn1js/;

async function npmPackagesOf(entry: string): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { kind: string; npmPackage?: string }[];
  };
  // The npm packages the entry's module graph reaches (not every package of the lock).
  return info.modules.flatMap((m) => m.kind === "npm" && m.npmPackage ? [m.npmPackage] : []);
}

Deno.test("deno.json exports: every subpath names a module that exists", () => {
  for (const [subpath, path] of Object.entries(CONFIG.exports)) {
    assert.ok(Deno.statSync(`${ROOT}${path}`).isFile, `${subpath} -> ${path}`);
  }
  for (const subpath of CORE) assert.ok(subpath in CONFIG.exports, subpath);
});

Deno.test("deno.json exports: the core subpaths load no Redis, X.509 or browser code", async (t) => {
  for (const subpath of CORE) {
    await t.step(subpath, async () => {
      const heavy = (await npmPackagesOf(CONFIG.exports[subpath]!)).filter((p) => HEAVY.test(p));
      assert.deepEqual(heavy, []);
    });
  }
  await t.step("./pki does load the X.509 library (the check sees what it must)", async () => {
    const packages = await npmPackagesOf(CONFIG.exports["./pki"]!);
    assert.ok(packages.some((p) => p.startsWith("@peculiar/x509")), packages.join(", "));
  });
});
