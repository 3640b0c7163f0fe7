/**
 * {@linkcode ConfigError}: a configuration that cannot be used, with the file, the key
 * path and, where known, the line.
 *
 * @module
 */

/** One problem of a config file: what is wrong, and where. */
export interface ConfigProblem {
  /** Key path of the offending value, such as `groups.cache.upstreams[1]`, when one is to blame. */
  readonly key?: string | undefined;
  /** 1-based line in the config file, when known. */
  readonly line?: number | undefined;
  /** 1-based column, for TOML syntax errors. */
  readonly column?: number | undefined;
  /** What is wrong, such as `"tls.ca" must be a non-empty string, received 1`. */
  readonly detail: string;
}

/** Where a {@linkcode ConfigError} comes from: the file, and where in it the first problem is. */
export interface ConfigErrorOptions extends ErrorOptions, Omit<ConfigProblem, "detail"> {
  /** The config file. */
  path: string;
  /** The other problems of the file, each listed on a line of its own (default none). */
  more?: readonly ConfigProblem[];
  /** How many further problems were found but not listed (default 0). */
  omitted?: number;
}

/**
 * A configuration that cannot be used: bad TOML, a bad value, an unknown key, an
 * unreadable or mismatched certificate. The message reads
 * `Cannot load config: FILE:LINE: "KEY" must be ..., received ...`; when the file has
 * several problems, each further one follows on a line of its own
 * (`  FILE:LINE: "KEY" ...`), and {@linkcode ConfigError.problems} lists them all.
 * `key`, `line` and `detail` describe the first.
 *
 * @example Usage
 * ```ts
 * import { ConfigError, parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => parseConfig("[server]\nlisten = 8443\n", { path: "lb.toml" }),
 *   (e: unknown) =>
 *     e instanceof ConfigError && e.key === "server.listen" && e.line === 2 &&
 *     e.problems.map((p) => p.key).join() === "server.listen,tls,groups",
 * );
 * ```
 */
export class ConfigError extends Error {
  /** The config file. */
  readonly path: string;
  /** Key path of the offending value, when one is to blame. */
  readonly key: string | undefined;
  /** 1-based line in the config file, when known. */
  readonly line: number | undefined;
  /** 1-based column, for TOML syntax errors. */
  readonly column: number | undefined;
  /** The first problem, without the `Cannot load config: FILE:LINE:` prefix. */
  readonly detail: string;
  /** Every problem listed, the first one included, in the order of the file. */
  readonly problems: readonly ConfigProblem[];
  /** How many further problems were found but not listed. */
  readonly omitted: number;

  /**
   * Creates the error.
   *
   * @param detail What is wrong, such as `"tls.ca" must be a string, received 1`.
   * @param options Where, and the cause.
   */
  constructor(detail: string, options: ConfigErrorOptions) {
    const { path, key, line, column, more = [], omitted = 0 } = options;
    const where = ({ line, column }: ConfigProblem): string =>
      path + (line === undefined ? "" : `:${line}${column === undefined ? "" : `:${column}`}`);
    const first: ConfigProblem = { key, line, column, detail };
    const lines = [first, ...more].map((problem) => `${where(problem)}: ${problem.detail}`);
    if (omitted > 0) lines.push(`and ${omitted} more ${omitted === 1 ? "problem" : "problems"}`);
    // The first problem on the first line, each other one on a line of its own.
    super(`Cannot load config: ${lines.join("\n  ")}`, { cause: options.cause });
    this.name = "ConfigError";
    this.path = path;
    this.key = key;
    this.line = line;
    this.column = column;
    this.detail = detail;
    this.problems = [first, ...more];
    this.omitted = omitted;
  }
}
