/**
 * Where each key of a TOML text is: key paths mapped to lines, read from the syntax
 * tree of `toml-eslint-parser`, so that an error about a value can name its line.
 *
 * @module
 */
import { type AST, ParseError, parseTOML } from "toml-eslint-parser";

/** A text the syntax tree's parser refuses, at a line and column. */
export class TomlSyntaxError extends SyntaxError {
  /** 1-based line. */
  readonly line: number;
  /** 1-based column. */
  readonly column: number;

  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param line 1-based line.
   * @param column 1-based column.
   */
  constructor(message: string, line: number, column: number) {
    super(message);
    this.name = "TomlSyntaxError";
    this.line = line;
    this.column = column;
  }
}

/**
 * A key path as messages write it: `groups.cache.upstreams[1]`; a part that is not a
 * bare TOML key is quoted, as TOML quotes it: `groups.'api.v1'.listen` (with double
 * quotes and escapes when it holds a quote, a backslash or a control character).
 *
 * @example Usage
 * ```ts
 * import { keyPath } from "@mtlb/mtlb/config";
 * import assert from "node:assert/strict";
 *
 * assert.equal(keyPath(["groups", "cache", "upstreams", 1]), "groups.cache.upstreams[1]");
 * assert.equal(keyPath(["groups", "api.v1", "listen"]), "groups.'api.v1'.listen");
 * ```
 *
 * @param path The keys and array indexes, from the top of the file.
 * @returns The path as messages write it.
 */
export function keyPath(path: readonly PropertyKey[]): string {
  let key = "";
  for (const part of path) {
    if (typeof part === "number") {
      key += `[${part}]`;
      continue;
    }
    const name = String(part);
    const bare = /^[A-Za-z0-9_-]+$/.test(name)
      ? name
      : name.includes("'") || JSON.stringify(name) !== `"${name}"`
      ? JSON.stringify(name)
      : `'${name}'`;
    key += key === "" ? bare : `.${bare}`;
  }
  return key;
}

/** Finds the line of `key`, else of its nearest recorded parent (`a.b[1].c` -> `a.b[1]` -> `a.b`). */
export function lineOf(lines: Map<string, number>, key: string): number | undefined {
  for (let k = key;;) {
    const line = lines.get(k);
    if (line !== undefined) return line;
    const cut = Math.max(k.lastIndexOf("."), k.lastIndexOf("["));
    if (cut <= 0) return undefined;
    k = k.slice(0, cut);
  }
}

/**
 * Maps key paths (`groups.cache`, `groups.cache.upstreams[1]`, `clients.a.match.cn`) to
 * their line: where the file names them (a table's header, a key), else where it
 * first names one of their keys. Run only when an error is reported.
 *
 * @throws {TomlSyntaxError} When the parser refuses the text (an impossible date).
 */
export function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  // Paths only named as the parents of others so far (`groups.a` of `[groups.a.health]`):
  // the table's own header or key, when it comes, is its line.
  const implied = new Set<string>();
  const name = (part: AST.TOMLBare | AST.TOMLQuoted) =>
    part.type === "TOMLBare" ? part.name : part.value;
  const at = (path: readonly (string | number)[], node: AST.TOMLNode): void => {
    for (let i = 1; i <= path.length; i++) {
      const key = keyPath(path.slice(0, i));
      const own = i === path.length;
      if (lines.has(key) && !(own && implied.delete(key))) continue;
      lines.set(key, node.loc.start.line);
      if (!own) implied.add(key);
    }
  };
  const value = (path: readonly (string | number)[], node: AST.TOMLContentNode): void => {
    if (node.type === "TOMLInlineTable") keyValues(path, node.body);
    if (node.type !== "TOMLArray") return;
    node.elements.forEach((element, i) => {
      at([...path, i], element);
      value([...path, i], element);
    });
  };
  const keyValues = (table: readonly (string | number)[], body: AST.TOMLKeyValue[]) => {
    for (const pair of body) {
      const path = [...table, ...pair.key.keys.map(name)];
      at(path, pair);
      value(path, pair.value);
    }
  };
  let nodes: AST.TOMLTopLevelTable["body"];
  try {
    nodes = parseTOML(text).body[0].body;
  } catch (error) {
    if (!(error instanceof ParseError)) throw error;
    throw new TomlSyntaxError(error.message, error.lineNumber, error.column + 1);
  }
  for (const node of nodes) {
    if (node.type === "TOMLKeyValue") keyValues([], [node]);
    else {
      at(node.resolvedKey, node);
      keyValues(node.resolvedKey, node.body);
    }
  }
  return lines;
}
