/**
 * `deno task schema`: writes `config/lb.schema.json`, the JSON Schema of the config
 * file that editors read, and `docs/CONFIG.md`, the reference of every key, both from
 * the schema `parseConfig` reads with (lib/config/_schema.ts). Both files are
 * committed; a test fails when either is not what this writes.
 *
 * ```sh
 * deno run --allow-read --allow-write=config/lb.schema.json,docs/CONFIG.md --allow-run tasks/schema.ts
 * ```
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { configJsonSchema } from "../lib/config/json_schema.ts";
import { PATTERN_TYPES } from "../lib/config/_schema.ts";

/** The JSON Schema of the config file. */
export const SCHEMA_FILE: URL = new URL("../config/lb.schema.json", import.meta.url);
/** The reference of every key. */
export const REFERENCE_FILE: URL = new URL("../docs/CONFIG.md", import.meta.url);

type JsonSchema = Record<string, unknown>;

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * The JSON Schema file's text.
 *
 * @returns The schema as `deno fmt` formats it.
 */
export async function renderSchema(): Promise<string> {
  return await denoFmt(`${JSON.stringify(configJsonSchema(), null, 2)}\n`, "json");
}

/**
 * The text of docs/CONFIG.md.
 *
 * @returns The page as `deno fmt` formats it.
 */
export async function renderReference(): Promise<string> {
  const schema = configJsonSchema({ docsLinks: true });
  const sections = Object.entries(properties(schema));
  const required = new Set(schema.required as string[] | undefined);
  const parts = [
    INTRO,
    "## A complete example\n",
    "Every key, with its default where it has one (an example otherwise, its default in the " +
    "comment). It is valid as it stands.\n",
    "```toml",
    "#:schema ../config/lb.schema.json",
    completeExample().trimEnd(),
    "```\n",
  ];
  for (const [name, section] of sections) {
    const entry = entryOf(section);
    parts.push(`## \`[${entry === undefined ? name : `${name}.NAME`}]\`\n`);
    parts.push(
      `${section.description as string} ${
        required.has(name) ? "Required section." : "Optional section."
      }\n`,
    );
    const table = entry ?? section;
    parts.push(keys(table, sections, "").join("\n"), "");
  }
  return await denoFmt(parts.join("\n"), "md");
}

const INTRO = `# Configuration reference

<!-- Written by \`deno task schema\` from lib/config/_schema.ts: edit the schema, not this page. -->

mtlb reads one TOML file (\`--config\`, default \`config/lb.toml\`). This page lists every key: its
type, its default, an example and what it does. [\`config/lb.toml\`](../config/lb.toml) is a
commented example, and \`main.ts check --config FILE\` validates a file and prints the values in
force, defaults included.

## Editors

[\`config/lb.schema.json\`](../config/lb.schema.json) is the JSON Schema of the file, written from
the same schema as this page. Editors that read JSON Schema for TOML (taplo, and Even Better TOML in
VS Code, which uses it) complete keys, show these descriptions and flag unknown keys and wrong types
in a file that starts with a \`#:schema\` line giving the schema's path relative to the file:

\`\`\`toml
#:schema ./lb.schema.json
\`\`\`

On the command line, \`npx @taplo/cli check --schema file://$PWD/config/lb.schema.json lb.toml\`
does the same. The rules that span keys (a client's groups exist, listeners do not collide, ...)
are \`main.ts check\`'s alone.

## Rules of the file

- **Unknown keys are errors**, so a typo cannot switch a rule off silently; the error names the
  closest known key. So are unknown groups in a client (the closest is named), two listeners on the
  same address (however the address is written: \`127.1\` is \`127.0.0.1\`, \`[::0]\` is every
  address; names such as \`localhost\` are compared as written), two clients whose \`match\` cannot
  tell them apart, a certificate that does not match its key, and files that cannot be read.
- **Errors name the file, the line and the key**, say what was expected and what was received, and
  list every problem of the file (20 at most), each on its own line; the process exits 2 before
  anything listens:
  \`Cannot load config: /etc/mtlb/lb.toml:42: "groups.cache.upstreams[1]" must be "host:port", received "cache"\`.
  A name that is not a bare key is quoted in a key path: \`groups.'api.v1'.listen\`. A reload
  with an error keeps the running configuration.
- **Durations** are a string with one unit: \`"500ms"\`, \`"30s"\`, \`"15m"\`, \`"1h"\` (\`ms\`, \`s\`, \`m\`,
  \`h\`; decimals allowed, \`"1m30s"\` is not). Longer than zero, at most \`"596h"\`.
- **Sizes** are a string with a unit: \`"64KiB"\`, \`"1MiB"\`, \`"10MB"\` (\`B\`, \`KB\`, \`MB\`, \`GB\`, \`KiB\`,
  \`MiB\`, \`GiB\`).
- **Addresses** are \`"host:port"\`, \`"[::1]:8443"\` for IPv6. A listener may use port 0 (a free port);
  an upstream may not. Prefer IP addresses for listeners (see
  [permissions](OPERATIONS.md#permissions)); upstreams may be host names.
- **Relative paths** resolve against the config file's folder, not the working directory.
- **Names** of groups and clients: letters, digits, \`_\`, \`.\` and \`-\`, starting with a letter or a
  digit. Two group names may not differ only in letter case (SNI ignores case).
- **Hex values** (\`spki_sha256\`, \`issuer\`, \`serial\`): any case, colons optional, as \`openssl\` prints
  them.
`;

function properties(schema: JsonSchema): Record<string, JsonSchema> {
  return (schema.properties ?? {}) as Record<string, JsonSchema>;
}

/** The schema of the entries of a table of named tables (`[groups.NAME]`), if it is one. */
function entryOf(schema: JsonSchema): JsonSchema | undefined {
  const entry = schema.additionalProperties;
  return typeof entry === "object" && entry !== null ? entry as JsonSchema : undefined;
}

/** The name the first example of a table of named tables uses, such as `cache`. */
function exampleName(schema: JsonSchema): string {
  return Object.keys((schema.examples as Record<string, unknown>[])[0]!)[0]!;
}

/** A value written as TOML. */
function toml(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(toml).join(", ")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value);
    return entries.length === 0
      ? "{}"
      : `{ ${entries.map(([k, v]) => `${k} = ${toml(v)}`).join(", ")} }`;
  }
  return String(value);
}

/** What a key's default is, in Markdown. */
function defaultOf(schema: JsonSchema): string {
  if ("default" in schema) return `\`${toml(schema.default)}\``;
  const taplo = schema["x-taplo"] as { docs?: { defaultValue?: string } } | undefined;
  return taplo?.docs?.defaultValue ?? "none";
}

/** A type's name for many of them: `addresses`, `tables { address, weight }`, `host names`. */
function plural(schema: JsonSchema): string {
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as JsonSchema[]).map(plural).join(" or ");
  const type = typeOf(schema);
  if (Array.isArray(schema.enum)) return type;
  const [, noun, rest] = /^(.*?[a-z])((?:,| `).*)?$/.exec(type) ?? [];
  if (noun === undefined) return type;
  return `${noun}${noun.endsWith("s") ? "es" : "s"}${rest ?? ""}`;
}

/** The type of a key, in words. */
function typeOf(schema: JsonSchema): string {
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => `\`${toml(v)}\``).join(" or ");
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as JsonSchema[]).map(typeOf).join(" or ");
  switch (schema.type) {
    case "string":
      return typeof schema.pattern === "string"
        ? PATTERN_TYPES.get(schema.pattern) ?? "string"
        : "string";
    case "integer": {
      const { minimum: min, maximum: max } = schema as { minimum?: number; maximum?: number };
      if (min !== undefined && max !== undefined) return `integer ${min} to ${max}`;
      return min === undefined ? "integer" : `integer ≥ ${min}`;
    }
    case "array":
      return `array of ${plural(schema.items as JsonSchema)}${
        schema.uniqueItems === true ? ", each once" : ""
      }`;
    case "object": {
      const keys = Object.keys(properties(schema));
      return keys.length === 0 ? "table" : `table \`{ ${keys.join(", ")} }\``;
    }
    default:
      return String(schema.type);
  }
}

/** The section whose keys a table takes (a group's `health` takes those of `[health]`). */
function sameKeysAs(schema: JsonSchema, sections: [string, JsonSchema][]): string | undefined {
  const keys = Object.keys(properties(schema)).join();
  if (keys === "") return undefined;
  return sections.find(([, section]) => Object.keys(properties(section)).join() === keys)?.[0];
}

/** The first example, or the first that is not the default. */
function exampleOf(schema: JsonSchema): unknown {
  const examples = schema.examples as unknown[];
  const other = examples.find((e) => !("default" in schema) || toml(e) !== toml(schema.default));
  return other ?? examples[0];
}

/** The Markdown items of a table's keys, sub-tables' keys nested under theirs. */
function keys(table: JsonSchema, sections: [string, JsonSchema][], indent: string): string[] {
  const lines: string[] = [];
  for (const [key, schema] of Object.entries(properties(table))) {
    const like = sameKeysAs(schema, sections);
    const type = like === undefined ? typeOf(schema) : `table of \`[${like}]\` keys`;
    const fallback = defaultOf(schema);
    lines.push(
      `${indent}- \`${key}\`: ${type}; ${
        fallback.startsWith("required") ? fallback : `default ${fallback}`
      }; example \`${key} = ${toml(exampleOf(schema))}\`. ${schema.description as string}`,
    );
    if (like !== undefined) continue;
    // The keys of its tables (an array's items may be tables of several shapes), each once.
    const items = schema.items as JsonSchema | undefined;
    const nested = [schema, ...((items?.anyOf ?? [items]) as (JsonSchema | undefined)[])]
      .filter((s): s is JsonSchema => s !== undefined && Object.keys(properties(s)).length > 0);
    const seen = new Set<string>();
    for (const sub of nested) {
      const fresh = Object.fromEntries(
        Object.entries(properties(sub)).filter(([name]) => !seen.has(name)),
      );
      for (const name of Object.keys(fresh)) seen.add(name);
      lines.push(...keys({ ...sub, properties: fresh }, sections, `${indent}  `));
    }
  }
  return lines;
}

/**
 * A complete config: every key of every table, with the value `choose` picks (by
 * default its default, else its first example, the default named in a comment).
 *
 * @param choose The value of the key at `path` (`["server", "workers"]`), given its
 *   JSON Schema; `undefined` for the default.
 * @returns The TOML text, without the `#:schema` line.
 */
export function completeExample(
  choose: (path: readonly string[], schema: JsonSchema) => unknown = () => undefined,
): string {
  const sections = Object.entries(properties(configJsonSchema()));
  const lines: string[] = [];
  const table = (path: string[], schema: JsonSchema): void => {
    lines.push(`[${path.join(".")}]`);
    for (const [key, value] of Object.entries(properties(schema))) {
      const chosen = choose([...path, key], value) ??
        ("default" in value ? value.default : (value.examples as unknown[])[0]);
      const note = "default" in value ? "" : ` # default: ${defaultOf(value).replaceAll("`", "")}`;
      const line = `${key} = ${toml(chosen)}`;
      lines.push(note === " # default: required" ? line : `${line}${note}`);
    }
    lines.push("");
  };
  for (const [name, section] of sections) {
    const entry = entryOf(section);
    if (entry === undefined) table([name], section);
    else table([name, exampleName(section)], entry);
  }
  return lines.join("\n");
}

async function denoFmt(text: string, ext: "json" | "md"): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", `--ext=${ext}`, "-"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    throw new Error(
      `Cannot format the ${ext} file: deno fmt exited with ${code}: ${
        new TextDecoder().decode(stderr).trim()
      }`,
    );
  }
  return new TextDecoder().decode(stdout);
}

if (import.meta.main) {
  for (
    const [file, text] of [[SCHEMA_FILE, await renderSchema()], [
      REFERENCE_FILE,
      await renderReference(),
    ]] as const
  ) {
    await Deno.writeTextFile(file, text);
    console.log(`Wrote ${fileURLToPath(file)} (${text.split("\n").length - 1} lines)`);
  }
}
