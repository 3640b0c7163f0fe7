/**
 * Typed reads from a parsed TOML table: each read checks one value, fills nothing in,
 * and fails with a {@linkcode ConfigError} naming the key path and its line.
 *
 * @module
 */
import { formatHostPort, type HostPort, parseHostPort } from "../core/address.ts";
import { parseDuration } from "../core/duration.ts";
import { parseSize } from "../core/size.ts";
import { ConfigError } from "./config_error.ts";
import { keyLines, lineOf } from "./_key_lines.ts";

/** A TOML table as the parser returns it. */
export type Table = Record<string, unknown>;

/** Longest delay a JavaScript timer honours (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Whether a parsed TOML value is a table (not an array or a date). */
export function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

/** A value as an error message shows it: strings quoted and cut, tables and arrays named. */
export function describe(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  }
  if (typeof value === "bigint" || typeof value === "number" || typeof value === "boolean") {
    return String(value);
  }
  if (value instanceof Date) return "a date";
  if (Array.isArray(value)) return "an array";
  return "a table";
}

/** Reads the values of one config text, failing on the first bad one. */
export class _Reader {
  #text: string;
  #path: string;
  #lines: Map<string, number> | undefined;

  constructor(text: string, path: string) {
    this.#text = text;
    this.#path = path;
  }

  fail(key: string, detail: string): never {
    throw new ConfigError(`${JSON.stringify(key)} ${detail}`, {
      path: this.#path,
      key,
      line: this.line(key),
    });
  }

  line(key: string): number | undefined {
    this.#lines ??= keyLines(this.#text);
    return lineOf(this.#lines, key);
  }

  keys(t: Table, path: string, allowed: readonly string[]): void {
    for (const key of Object.keys(t)) {
      if (!allowed.includes(key)) {
        this.fail(
          path === "" ? key : `${path}.${key}`,
          `is not a known key: expected one of ${allowed.join(", ")}`,
        );
      }
    }
  }

  name(path: string, name: string): void {
    if (!NAME_RE.test(name)) {
      this.fail(
        path,
        `has a bad name: expected letters, digits, "_", "." or "-", not starting with a symbol, received ${
          describe(name)
        }`,
      );
    }
  }

  table(t: Table, path: string, key: string, required: boolean): Table {
    const value = t[key];
    const p = path === "" ? key : `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return {};
    }
    if (!isTable(value)) this.fail(p, `must be a table, received ${describe(value)}`);
    return value;
  }

  array(t: Table, path: string, key: string, required: boolean): unknown[] | undefined {
    const value = t[key];
    if (value === undefined) {
      if (required) this.fail(`${path}.${key}`, "is required");
      return undefined;
    }
    if (!Array.isArray(value)) {
      this.fail(`${path}.${key}`, `must be an array, received ${describe(value)}`);
    }
    return value;
  }

  string(
    t: Table,
    path: string,
    key: string,
    required: boolean,
    allowEmpty = false,
  ): string | undefined {
    const value = t[key];
    if (value === undefined) {
      if (required) this.fail(`${path}.${key}`, "is required");
      return undefined;
    }
    if (typeof value !== "string" || (!allowEmpty && value === "")) {
      this.fail(`${path}.${key}`, `must be a non-empty string, received ${describe(value)}`);
    }
    return value;
  }

  boolean(t: Table, path: string, key: string): boolean | undefined {
    const value = t[key];
    if (value === undefined || typeof value === "boolean") return value;
    return this.fail(`${path}.${key}`, `must be true or false, received ${describe(value)}`);
  }

  oneOf<T extends string>(
    t: Table,
    path: string,
    key: string,
    choices: readonly T[],
  ): T | undefined {
    const value = t[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
      this.fail(
        `${path}.${key}`,
        `must be ${choices.map((c) => JSON.stringify(c)).join(" or ")}, received ${
          describe(value)
        }`,
      );
    }
    return value as T;
  }

  integer(
    t: Table,
    path: string,
    key: string,
    min: number,
    max: number = Number.MAX_SAFE_INTEGER,
    required = false,
  ): number | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return undefined;
    }
    if (typeof value !== "bigint") this.fail(p, `must be an integer, received ${describe(value)}`);
    if (value < BigInt(min) || value > BigInt(max)) {
      this.fail(
        p,
        max === Number.MAX_SAFE_INTEGER
          ? `must be at least ${min}, received ${value}`
          : `must be from ${min} to ${max}, received ${value}`,
      );
    }
    return Number(value);
  }

  size(t: Table, path: string, key: string, min = 1): number | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) return undefined;
    let bytes = NaN;
    if (typeof value === "string") {
      try {
        bytes = parseSize(value);
      } catch {
        // Reported below with the key path.
      }
    }
    if (Number.isNaN(bytes)) {
      this.fail(
        p,
        `must be a size such as "64KiB", "1MiB" or "10MB" (B, KB, MB, GB, KiB, MiB, GiB), received ${
          describe(value)
        }`,
      );
    }
    if (bytes < min) this.fail(p, `must be at least ${min} bytes, received ${describe(value)}`);
    return bytes;
  }

  duration(t: Table, path: string, key: string, required = false): number | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return undefined;
    }
    let ms = NaN;
    if (typeof value === "string") {
      try {
        ms = parseDuration(value);
      } catch {
        // Reported below with the key path.
      }
    }
    if (Number.isNaN(ms)) {
      this.fail(
        p,
        `must be a duration such as "500ms", "30s", "5m" or "1h", received ${describe(value)}`,
      );
    }
    if (ms <= 0) this.fail(p, `must be longer than zero, received ${describe(value)}`);
    if (ms > MAX_TIMER_MS) this.fail(p, `must be at most "596h", received ${describe(value)}`);
    return ms;
  }

  address(
    t: Table,
    path: string,
    key: string,
    allowPortZero: boolean,
    required = false,
  ): string | undefined {
    const value = t[key];
    const p = `${path}.${key}`;
    if (value === undefined) {
      if (required) this.fail(p, "is required");
      return undefined;
    }
    return this.parseAddress(p, value, allowPortZero);
  }

  parseAddress(key: string, value: unknown, allowPortZero: boolean): string {
    let address: HostPort | undefined;
    if (typeof value === "string") {
      try {
        address = parseHostPort(value);
      } catch {
        // Reported below with the key path.
      }
    }
    if (address === undefined) this.fail(key, `must be "host:port", received ${describe(value)}`);
    if (address.port === 0 && !allowPortZero) {
      this.fail(key, `must have a port from 1 to 65535, received ${describe(value)}`);
    }
    return formatHostPort(address);
  }
}
