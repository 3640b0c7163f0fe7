/**
 * {@linkcode parseConfig} and {@linkcode loadConfig}: TOML text in, a typed and
 * validated {@linkcode Config} out. The file is read against its schema and the rules
 * that span tables in one pass: every problem found is reported, in one
 * {@linkcode ConfigError} carrying the file and, for each problem, the key path and,
 * where known, the line.
 *
 * @module
 */
import { parse, TomlError } from "smol-toml";
import { dirname, isAbsolute, join, normalize, resolve } from "node:path";
import { ConfigError } from "./config_error.ts";
import type { Config, GroupConfig, UpstreamTlsConfig } from "./types.ts";
import type * as z from "zod";
import { crossChecks, isTable, type Parts, type Table } from "./_cross_checks.ts";
import { KEY_DOCS, TOML_DATE } from "./_fields.ts";
import { fileError, rememberLines } from "./_file_keys.ts";
import { keyLines, keyPath, TomlSyntaxError } from "./_key_lines.ts";
import { configError, type Problem, problemsOf } from "./_problems.ts";
import {
  CLIENT,
  CONFIG_SCHEMA,
  GROUP,
  type ParsedConfig,
  SECTIONS,
  withoutEmptySteps,
} from "./_schema.ts";

/** Options for {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** The file name used in errors and stored as {@linkcode Config.path}. */
  path: string;
  /**
   * Folder that relative paths (`tls.ca`, `tls.cert`, `tls.key`, `tls.crl`) resolve against.
   *
   * @default {dirname(path)}
   */
  baseDir?: string;
}

/**
 * Parses and validates config text. Pure: reads no files (certificates are checked
 * by {@linkcode loadTlsMaterial}). Reports every problem of the text (up to 20) in one
 * error.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `
 * [server]
 * listen = "127.0.0.1:8443"
 * [tls]
 * ca = "certs/ca.crt"
 * cert = "certs/server.crt"
 * key = "certs/server.key"
 * [groups.cache]
 * upstreams = ["127.0.0.1:6379", { address = "127.0.0.1:6380", weight = 2 }]
 * [clients.alice]
 * match = { cn = "alice" }
 * groups = ["cache"]
 * `,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * assert.equal(config.tls.ca, "/etc/mtlb/certs/ca.crt");
 * assert.equal(config.server.idleTimeout, 15 * 60_000);
 * assert.deepEqual(config.groups.get("cache")?.upstreams[1], { address: "127.0.0.1:6380", weight: 2 });
 * ```
 *
 * @param text The TOML text.
 * @param options The file name (for errors) and the folder relative paths resolve against.
 * @returns The validated configuration, defaults filled in.
 * @throws {ConfigError} When the text is not valid TOML or not a valid configuration.
 */
export function parseConfig(text: string, options: ParseConfigOptions): Config {
  text = text.replace(/^\uFEFF/, "");
  const reserved: Problem[] = [];
  const doc = prepare(readToml(text, options.path), [], reserved, options.path) as Table;
  // An empty [cluster] is no cluster.
  if (isTable(doc.cluster) && Object.keys(doc.cluster).length === 0) delete doc.cluster;

  const result = CONFIG_SCHEMA.safeParse(doc);
  const problems: Problem[] = result.success ? [] : result.error.issues.flatMap(problemsOf);
  // A key the schema already refused is reported once.
  problems.push(...reserved.filter((r) => !problems.some((p) => p.key === r.key)));
  problems.push(...crossChecks(salvage(doc, result.error?.issues ?? []), doc));
  if (result.success && problems.length === 0) {
    let lines: Map<string, number> | undefined;
    // Lines of the keys naming files, for the errors of the files they name.
    return settle(result.data, options, () => lines ??= keyLinesOrNone(text));
  }
  let lines;
  try {
    lines = keyLines(text);
  } catch (error) {
    // TOML the reader took though the syntax tree's parser does not (an impossible date).
    if (!(error instanceof TomlSyntaxError)) throw error;
    throw new ConfigError(`invalid TOML: ${error.message}`, {
      path: options.path,
      line: error.line,
      cause: error,
    });
  }
  throw configError(options.path, problems, lines);
}

/** {@linkcode keyLines}, or no lines when the syntax tree's parser refuses the text. */
function keyLinesOrNone(text: string): Map<string, number> {
  try {
    return keyLines(text);
  } catch {
    return new Map();
  }
}

/**
 * The tables of a TOML text, integers as bigints (so that `2.0` is not taken for `2`).
 *
 * @throws {ConfigError} When the text is not valid TOML, with the line and column.
 */
export function readToml(text: string, path: string): Table {
  try {
    return parse(text.replace(/^\uFEFF/, ""), { integersAsBigInt: true, maxDepth: 32 });
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0]! : String(error);
    throw new ConfigError(`invalid TOML: ${reason.replace(/^Invalid TOML document: /, "")}`, {
      path,
      line: error instanceof TomlError ? error.line : undefined,
      column: error instanceof TomlError ? error.column : undefined,
      cause: error,
    });
  }
}

/** Values nested deeper than this (tables, dotted keys and arrays) are refused. */
const MAX_DEPTH = 64;

/**
 * The parsed TOML with its dates and times (which no key takes) as
 * {@linkcode TOML_DATE}; a key named `__proto__`, which no table can take, is a
 * problem in `reserved`.
 *
 * @throws {ConfigError} When tables nest deeper than {@linkcode MAX_DEPTH}.
 */
function prepare(value: unknown, at: PropertyKey[], reserved: Problem[], path: string): unknown {
  if (value instanceof Date) return TOML_DATE;
  if (at.length > MAX_DEPTH) {
    throw new ConfigError(`invalid TOML: values nested more than ${MAX_DEPTH} deep`, { path });
  }
  if (Array.isArray(value)) {
    return value.map((item, i) => prepare(item, [...at, i], reserved, path));
  }
  if (!isTable(value)) return value;
  for (const [key, item] of Object.entries(value)) {
    if (key === "__proto__") {
      reserved.push({ key: keyPath([...at, key]), message: "is not a usable key or name" });
    }
    value[key] = prepare(item, [...at, key], reserved, path);
  }
  return value;
}

/**
 * The parts of a file the cross-checks look at: each table read again with each key
 * the schema refused in the place of its first example (or left out), each group and
 * client apart.
 */
function salvage(doc: Table, issues: readonly z.core.$ZodIssue[]): Parts {
  const part = <T>(schema: z.ZodType<T>, value: unknown, at: readonly string[]) => {
    const bad = new Set<string>();
    for (const issue of issues) {
      if (!at.every((key, i) => issue.path[i] === key)) continue;
      const key = issue.path[at.length];
      if (key !== undefined) bad.add(String(key));
      else if (issue.code === "unrecognized_keys") { for (const k of issue.keys) bad.add(k); }
    }
    // A refused key reads as its first example, a valid value the checks never look at
    // (the key is bad): the table's other keys can be read even when the key is required.
    const shape = shapeOf(schema);
    const kept = isTable(value)
      ? Object.fromEntries(
        [...Object.keys(shape ?? {}), ...Object.keys(value)].flatMap((key) => {
          const known = shape !== undefined && Object.hasOwn(shape, key) ? shape[key] : undefined;
          const example = known && KEY_DOCS.get(known)?.examples[0];
          if (!bad.has(key)) return Object.hasOwn(value, key) ? [[key, value[key]]] : [];
          return example === undefined ? [] : [[key, tomlValue(example)]];
        }),
      )
      : value;
    const result = schema.safeParse(kept);
    return result.success ? { value: result.data, bad } : undefined;
  };
  const named = <T>(section: string, schema: z.ZodType<T>) => {
    const value = doc[section];
    return isTable(value)
      ? new Map(
        Object.entries(value).map(([name, entry]) => [name, part(schema, entry, [section, name])]),
      )
      : undefined;
  };
  return {
    server: part(SECTIONS.server, doc.server, ["server"]),
    outlier: part(SECTIONS.outlier, doc.outlier, ["outlier"]),
    admin: part(SECTIONS.admin, doc.admin, ["admin"]),
    groups: named("groups", GROUP),
    clients: doc.clients === undefined ? new Map() : named("clients", CLIENT),
  };
}

/** An example as the TOML reader gives it: integers as bigints. */
function tomlValue(example: unknown): unknown {
  if (typeof example === "number") return BigInt(example);
  if (Array.isArray(example)) return example.map(tomlValue);
  return isTable(example)
    ? Object.fromEntries(
      Object.entries(example).map(([key, value]) => [key, tomlValue(value)]),
    )
    : example;
}

/** The keys of a table's schema, through its defaults, options and transforms. */
function shapeOf(schema: z.core.$ZodType): Record<string, z.core.$ZodType> | undefined {
  const def = schema._zod.def as {
    type: string;
    shape?: Record<string, z.core.$ZodType>;
    in?: z.core.$ZodType;
    innerType?: z.core.$ZodType;
  };
  if (def.type === "object") return def.shape;
  const inner = def.type === "pipe" ? def.in : def.innerType;
  return inner === undefined ? undefined : shapeOf(inner);
}

/**
 * The configuration of a valid file: paths resolved against the config's folder,
 * each group's `health` and `outlier` over the global ones, groups and clients by name.
 */
function settle(
  parsed: ParsedConfig,
  options: ParseConfigOptions,
  lines: () => Map<string, number>,
): Config {
  const baseDir = options.baseDir ?? dirname(options.path);
  const file = (path: string): string => isAbsolute(path) ? normalize(path) : join(baseDir, path);
  const { ca, cert, key, crl } = parsed.tls;
  const tls = {
    ...parsed.tls,
    ca: file(ca),
    cert: file(cert),
    key: file(key),
    ...(crl === undefined ? {} : { crl: file(crl) }),
  };
  const linesOf = (...keys: string[]) => () =>
    Object.fromEntries(keys.map((key) => [key, lines().get(key)]));
  rememberLines(tls, linesOf("tls.ca", "tls.cert", "tls.key", "tls.crl"));
  const { tokenFile } = parsed.admin;
  const admin = {
    ...parsed.admin,
    ...(tokenFile === undefined ? {} : { tokenFile: file(tokenFile) }),
  };
  rememberLines(admin, linesOf("admin.token_file"));
  const upstreamTls = (group: string, parsed: UpstreamTlsConfig): UpstreamTlsConfig => {
    const { cert, key } = parsed;
    const resolved = {
      ...parsed,
      ca: file(parsed.ca),
      ...(cert === undefined ? {} : { cert: file(cert) }),
      ...(key === undefined ? {} : { key: file(key) }),
    };
    const at = (key: string) => keyPath(["groups", group, "tls", key]);
    rememberLines(resolved, linesOf(at("ca"), at("cert"), at("key")));
    return resolved;
  };
  const groups = new Map(
    Object.entries(parsed.groups).map(([name, group]): [string, GroupConfig] => [name, {
      name,
      ...group,
      health: withoutEmptySteps({ ...parsed.health, ...group.health }),
      outlier: { ...parsed.outlier, ...group.outlier },
      ...(group.tls === undefined ? {} : { tls: upstreamTls(name, group.tls) }),
    }]),
  );
  const clients = new Map(
    Object.entries(parsed.clients).map(([name, client]) => [name, { name, ...client }]),
  );
  return { path: options.path, ...parsed, tls, groups, clients, admin };
}

/**
 * Reads and validates a config file; relative paths in it resolve against its folder.
 * Certificates are not read: see {@linkcode loadTlsMaterial}.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * console.log([...config.groups.keys()]);
 * ```
 *
 * @param path The config file.
 * @returns The validated configuration; `path` is made absolute.
 * @throws {ConfigError} When the file cannot be read or is not a valid configuration.
 */
export async function loadConfig(path: string): Promise<Config> {
  const file = resolve(path);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new ConfigError(`cannot read the file: ${fileError(error)}`, {
      path: file,
      cause: error,
    });
  }
  return parseConfig(text, { path: file });
}
