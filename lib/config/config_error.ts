/**
 * {@linkcode ConfigError}: a configuration that cannot be used, with the file, the key
 * path and, where known, the line.
 *
 * @module
 */

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
}

/**
 * A configuration that cannot be used: bad TOML, a bad value, an unknown key, an
 * unreadable or mismatched certificate. The message reads
 * `Cannot load config: FILE:LINE: "KEY" must be ..., received ...`.
 *
 * @example Usage
 * ```ts
 * import { ConfigError, parseConfig } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => parseConfig("[server]\nlisten = 8443\n", { path: "lb.toml" }),
 *   (e: unknown) => e instanceof ConfigError && e.key === "server.listen" && e.line === 2,
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
  /** The message without the `Cannot load config: FILE:LINE:` prefix. */
  readonly detail: string;

  /**
   * Creates the error.
   *
   * @param detail What is wrong, such as `"tls.ca" must be a string, received 1`.
   * @param options Where, and the cause.
   */
  constructor(detail: string, options: ConfigErrorOptions) {
    let where = options.path;
    if (options.line !== undefined) where += `:${options.line}`;
    if (options.line !== undefined && options.column !== undefined) where += `:${options.column}`;
    super(`Cannot load config: ${where}: ${detail}`, { cause: options.cause });
    this.name = "ConfigError";
    this.path = options.path;
    this.key = options.key;
    this.line = options.line;
    this.column = options.column;
    this.detail = detail;
  }
}
