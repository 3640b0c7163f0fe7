/**
 * {@linkcode configJsonSchema}: the JSON Schema of the config file, written from the
 * schema `parseConfig` reads with, for editors (taplo, Even Better TOML) and for
 * docs/CONFIG.md.
 *
 * @module
 */
import * as z from "zod";
import { KEY_DOCS } from "./_fields.ts";
import { CONFIG_SCHEMA } from "./_schema.ts";

type JsonSchema = Record<string, unknown>;

/** Options for {@linkcode configJsonSchema}. */
export interface ConfigJsonSchemaOptions {
  /**
   * Whether descriptions keep their Markdown links to the pages of docs/, relative to
   * docs/ (as docs/CONFIG.md shows them), instead of naming the page in plain text
   * (`routing (docs/TRUST.md#routing-sni-and-alpn)`), which reads right in any editor.
   *
   * @default {false}
   */
  docsLinks?: boolean;
}

/** A Markdown link to a page of docs/ as plain text: `routing (docs/TRUST.md#routing)`. */
function plain(markdown: string): string {
  return markdown.replace(
    /\[([^\]]+)\]\(([^)\s]+)\)/g,
    (_, text: string, target: string) =>
      /^[a-z]+:/.test(target) ? `${text} (${target})` : `${text} (docs/${target})`,
  );
}

/**
 * The JSON Schema (draft 7) of the mtlb config file, keys in snake_case as in TOML.
 * Every key has a description and examples, and its default (`default`, or for a
 * default that is not a value, such as "one per CPU", taplo's
 * `x-taplo.docs.defaultValue`). Integers are JSON integers, durations, sizes and
 * addresses strings with a pattern. Rules that span keys (a client's groups exist,
 * listeners do not collide) are not in it: `main.ts check` applies them.
 *
 * @example Usage
 * ```ts
 * import { configJsonSchema } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const schema = configJsonSchema();
 * const server = (schema.properties as Record<string, { properties: Record<string, unknown> }>)
 *   .server!.properties;
 * assert.deepEqual(server.handshake_timeout, {
 *   type: "string",
 *   pattern: "^(\\d+(?:\\.\\d+)?)(ms|s|m|h)$",
 *   default: "5s",
 *   description:
 *     "A client that has not completed its TLS handshake by then is closed (`handshake_timeout`).",
 *   examples: ["5s", "2s"],
 * });
 * ```
 *
 * @param options How descriptions write their links.
 * @returns The schema, a fresh object each call.
 */
export function configJsonSchema(options: ConfigJsonSchemaOptions = {}): Record<string, unknown> {
  const text = options.docsLinks === true ? (markdown: string) => markdown : plain;
  const generated = z.toJSONSchema(CONFIG_SCHEMA, {
    target: "draft-07",
    io: "input",
    // TOML integers are read as bigints, which JSON Schema has no type for: each
    // integer key states `"type": "integer"` itself.
    unrepresentable: "any",
    override: ({ zodSchema, jsonSchema }) => {
      const doc = KEY_DOCS.get(zodSchema);
      if (doc === undefined) return;
      const json = jsonSchema as JsonSchema;
      if ("default" in doc) json.default = doc.default;
      else delete json.default;
      json.description = text(doc.description);
      if (doc.defaultText !== undefined) {
        json["x-taplo"] = { docs: { defaultValue: doc.defaultText } };
      }
      json.examples = [...doc.examples];
    },
  }) as JsonSchema;
  const { $schema, ...rest } = generated;
  return {
    $schema,
    title: "mtlb configuration",
    description:
      "The TOML file mtlb reads (--config, default config/lb.toml). Every key: docs/CONFIG.md. `main.ts check --config FILE` validates a file, certificates included, and prints the values in force.",
    ...rest,
  };
}
