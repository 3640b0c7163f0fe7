/**
 * The checks a balancer runs on client certificates (lib/identity/) load no X.509
 * generation library: a user importing the trust checks loads `node:crypto` and the
 * DER readers of lib/identity/, not `@peculiar/x509` and its `reflect-metadata`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const IDENTITY = new URL("../lib/identity/", import.meta.url);
/** Packages the identity checks must not load, and what they pull in. */
const GENERATION_PACKAGES = ["@peculiar/", "asn1js", "reflect-metadata", "tsyringe", "pvtsutils"];

interface Graph {
  /** The npm packages of the module graph, `name@version`. */
  npm: string[];
  /** The local modules of the graph, as paths from the repository root. */
  local: string[];
}

/** The module graph of `path` (from the repository root), as `deno info --json` gives it. */
async function graphOf(path: string): Promise<Graph> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", path],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { kind: string; specifier: string; npmPackage?: string; local?: string }[];
  };
  return {
    npm: info.modules.filter((m) => m.kind === "npm").map((m) => m.npmPackage ?? m.specifier),
    local: info.modules.filter((m) => m.specifier.startsWith("file:")).map((m) =>
      fromFileUrl(m.specifier).slice(ROOT.length)
    ),
  };
}

function generationPackages(graph: Graph): string[] {
  return graph.npm.filter((name) => GENERATION_PACKAGES.some((p) => name.startsWith(p)));
}

Deno.test("lib/identity modules load no @peculiar/x509, reflect-metadata or lib/pki", async (t) => {
  const modules = [...Deno.readDirSync(IDENTITY)]
    .filter((entry) => entry.isFile && entry.name.endsWith(".ts"))
    .map((entry) => `lib/identity/${entry.name}`)
    .sort();
  assert.ok(modules.includes("lib/identity/client_trust.ts"));
  assert.ok(modules.includes("lib/identity/crl.ts"));
  const graphs = await Promise.all(modules.map(graphOf));
  for (const [i, module] of modules.entries()) {
    await t.step(module, () => {
      const graph = graphs[i]!;
      assert.deepEqual(generationPackages(graph), [], `${module} loads ${graph.npm.join(", ")}`);
      // Only identity modules and core values (docs/ARCHITECTURE.md).
      const outside = graph.local.filter((path) => !/^lib\/(identity|core)\//.test(path));
      assert.deepEqual(outside, []);
    });
  }
});

Deno.test("the dependency check sees @peculiar/x509 where CRLs are issued", async () => {
  const graph = await graphOf("lib/pki/crl_issuer.ts");
  assert.ok(graph.npm.some((name) => name.startsWith("@peculiar/x509@")), graph.npm.join(", "));
  assert.ok(graph.npm.some((name) => name.startsWith("reflect-metadata@")));
  assert.ok(graph.local.includes("lib/identity/certificate.ts"));
});
