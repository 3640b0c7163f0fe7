/**
 * The rules of docs/ARCHITECTURE.md, checked: which folder of lib/ may import which,
 * no import cycle (type-only imports count), no module over the size that calls for a
 * split, and the core entry points of the package load no Redis, X.509 or browser
 * code.
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const LIB = join(ROOT, "lib");

/**
 * What each folder of lib/ may import besides itself: the data path
 * (listener → identity → policy → limiter → upstream → proxy) on core, the control
 * plane into the data path, the server composing it, scale-out and the command line
 * on top.
 */
const ALLOWED: Record<string, readonly string[]> = {
  core: [],
  listener: ["core"],
  identity: ["core"],
  policy: ["core", "identity", "limiter", "config"],
  limiter: ["core"],
  upstream: ["core", "proxy"],
  proxy: ["core", "identity"],
  config: ["core", "identity", "limiter"],
  control: ["core", "config", "workers"],
  metrics: ["core"],
  admin: ["core", "metrics", "server"],
  server: [
    "core",
    "listener",
    "identity",
    "policy",
    "limiter",
    "upstream",
    "proxy",
    "config",
    "control",
    "metrics",
  ],
  workers: ["core", "config", "control", "limiter", "listener", "metrics", "server", "upstream"],
  redis: ["core", "config", "limiter", "upstream"],
  pki: ["core", "identity"],
  cli: [
    "core",
    "listener",
    "identity",
    "policy",
    "limiter",
    "upstream",
    "proxy",
    "config",
    "control",
    "metrics",
    "admin",
    "server",
    "workers",
    "redis",
    "pki",
  ],
};

/** A module may grow to this many lines; past it, it is several modules. */
const MAX_LINES = 850;

function modules(dir: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) found.push(...modules(path));
    else if (entry.name.endsWith(".ts")) found.push(path);
  }
  return found;
}

/**
 * The lib/ modules a module imports: value, type and dynamic imports, re-exports
 * included; with `loadedAtStart`, only what loads with it (no type-only or dynamic
 * import).
 */
function importsOf(path: string, loadedAtStart = false): string[] {
  const text = Deno.readTextFileSync(path);
  const found: string[] = [];
  for (const [all, spec] of text.matchAll(/^(?:import|export)[^;]*?from\s+"(\.[^"]+)";/gms)) {
    if (loadedAtStart && /^(?:import|export)\s+type\b/.test(all)) continue;
    found.push(normalize(join(dirname(path), spec!)));
  }
  for (const [, spec] of text.matchAll(/^import\s+"(\.[^"]+)";/gm)) {
    found.push(normalize(join(dirname(path), spec!)));
  }
  // Modules loaded on demand, `await import("./x.ts")`, follow the same rules.
  for (const [, spec] of loadedAtStart ? [] : text.matchAll(/\bimport\(\s*"(\.[^"]+)"\s*\)/g)) {
    found.push(normalize(join(dirname(path), spec!)));
  }
  return found.filter((p) => p.startsWith(LIB));
}

function folderOf(path: string): string {
  return relative(LIB, path).split("/")[0]!;
}

const ALL = modules(LIB);
const GRAPH = new Map(ALL.map((path) => [path, importsOf(path)]));

Deno.test("lib/: each folder imports only the folders it may", () => {
  const wrong: string[] = [];
  for (const [from, targets] of GRAPH) {
    const folder = folderOf(from);
    const allowed = ALLOWED[folder];
    assert.ok(allowed !== undefined, `lib/${folder}/ is not in the architecture`);
    for (const to of targets) {
      const other = folderOf(to);
      if (other !== folder && !allowed.includes(other)) {
        wrong.push(`${relative(ROOT, from)} imports ${relative(ROOT, to)}`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test("lib/: no import cycle, type-only imports included", () => {
  const cycles: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (path: string): void => {
    state.set(path, "visiting");
    stack.push(path);
    for (const next of GRAPH.get(path) ?? []) {
      if (state.get(next) === "visiting") {
        const cycle = stack.slice(stack.indexOf(next)).concat(next);
        cycles.push(cycle.map((p) => relative(LIB, p)).join(" -> "));
      } else if (!state.has(next)) {
        visit(next);
      }
    }
    stack.pop();
    state.set(path, "done");
  };
  for (const path of ALL) if (!state.has(path)) visit(path);
  assert.deepEqual(cycles, []);
});

Deno.test(`lib/: no module over ${MAX_LINES} lines`, () => {
  const long = ALL.filter((path) => !path.endsWith(".js"))
    .map((path) => [relative(ROOT, path), Deno.readTextFileSync(path).split("\n").length] as const)
    .filter(([, lines]) => lines > MAX_LINES);
  assert.deepEqual(long, []);
});

Deno.test("lib/cli: serving loads no Redis or certificate authority code until a config asks", () => {
  // What `main.ts serve` loads before reading its config: the Redis client comes with
  // [cluster] and the CA code with `certs`, each by a dynamic import.
  const loaded = new Set<string>();
  const visit = (path: string) => {
    if (loaded.has(path)) return;
    loaded.add(path);
    for (const next of importsOf(path, true)) visit(next);
  };
  visit(join(LIB, "cli", "cli.ts"));
  visit(join(LIB, "cli", "serve.ts"));
  const heavy = [...loaded].filter((path) =>
    ["redis", "pki"].includes(folderOf(path)) ||
    /^import [^;]*?from\s+"(?:npm:)?@(?:redis|peculiar)\//ms.test(Deno.readTextFileSync(path))
  );
  assert.deepEqual(heavy.map((path) => relative(ROOT, path)), []);
  assert.ok(loaded.has(join(LIB, "cli", "args.ts")), "the walk follows static imports");
});
