/**
 * The README and the pages under docs/ link to each other and to files of the
 * repository: every relative link and heading anchor must resolve.
 */
import assert from "node:assert/strict";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[`*_]/g, "").replace(/[^\p{L}\p{N} -]/gu, "")
    .replace(/ /g, "-");
}

function anchors(markdown: string): Set<string> {
  const found = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const heading = !fenced && /^#{1,6} (.+)$/.exec(line);
    if (heading) found.add(anchorOf(heading[1]!));
  }
  return found;
}

Deno.test("README.md and docs/*.md: every relative link and anchor resolves", async () => {
  const pages = [
    "README.md",
    ...[...Deno.readDirSync(join(ROOT, "docs"))]
      .filter((e) => e.name.endsWith(".md")).map((e) => `docs/${e.name}`),
  ];
  const broken: string[] = [];
  for (const page of pages) {
    const text = await Deno.readTextFile(join(ROOT, page));
    const prose = text.replace(/```[\s\S]*?```/g, "");
    for (const [, target] of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue; // http:, https:, mailto:
      const [path, anchor] = target!.split("#") as [string, string | undefined];
      const file = path === "" ? page : normalize(join(dirname(page), path));
      let content: string;
      try {
        const info = Deno.statSync(join(ROOT, file));
        content = info.isFile && file.endsWith(".md")
          ? await Deno.readTextFile(join(ROOT, file))
          : "";
      } catch {
        broken.push(`${page}: ${target} (no such file)`);
        continue;
      }
      if (anchor !== undefined && file.endsWith(".md") && !anchors(content).has(anchor)) {
        broken.push(`${page}: ${target} (no such heading)`);
      }
    }
  }
  assert.deepEqual(broken, []);
});
