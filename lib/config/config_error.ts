/**
 * {@linkcode ConfigError}: a configuration that cannot be used, with the file, the key
 * path and, where known, the line.
 *
 * @module
 */

/** One problem of a config file: what is wrong, and where. */
export interface ConfigProblem {
  /**
   * Key path of the offending value, such as `groups.cache.upstreams[1]`.
   *
   * @default {undefined}
   */
  readonly key?: string | undefined;
  /**
   * 1-based line in the config file.
   *
   * @default {undefined}
   */
  readonly line?: number | undefined;
  /**
   * 1-based column, for TOML syntax errors.
   *
   * @default {undefined}
   */
  readonly column?: number | undefined;
  /** What is wrong, such as `"tls.ca" must be a non-empty string, received 1`. */
  readonly detail: string;
}

/** Where a {@linkcode ConfigError} comes from. */
export interface ConfigErrorOptions extends ErrorOptions {
  /** The config file. */
  path: string;
  /**
   * Key path of the offending value, such as `groups.cache.upstreams[1]`.
   *
   * @default {undefined}
   */
  key?: string;
  /**
   * 1-based line in the config file.
   *
   * @default {undefined}
   */
  line?: number;
  /**
   * 1-based column, for TOML syntax errors.
   *
   * @default {undefined}
   */
  column?: number;
  /**
   * The other problems of the same file, after the one `detail` describes, each
   * listed on a line of its own in the message.
   *
   * @default {[]}
   */
  more?: readonly ConfigProblem[];
  /**
   * How many further problems were found but not listed.
   *
   * @default {0}
   */
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
    const where = (problem: ConfigProblem): string => {
      let at = options.path;
      if (problem.line !== undefined) at += `:${problem.line}`;
      if (problem.line !== undefined && problem.column !== undefined) at += `:${problem.column}`;
      return at;
    };
    const first: ConfigProblem = {
      key: options.key,
      line: options.line,
      column: options.column,
      detail,
    };
    const more = options.more ?? [];
    const omitted = options.omitted ?? 0;
    const lines = [
      `Cannot load config: ${where(first)}: ${detail}`,
      ...more.map((problem) => `  ${where(problem)}: ${problem.detail}`),
    ];
    if (omitted > 0) lines.push(`  and ${omitted} more ${omitted === 1 ? "problem" : "problems"}`);
    super(lines.join("\n"), { cause: options.cause });
    this.name = "ConfigError";
    this.path = options.path;
    this.key = options.key;
    this.line = options.line;
    this.column = options.column;
    this.detail = detail;
    this.problems = [first, ...more];
    this.omitted = omitted;
  }
}
