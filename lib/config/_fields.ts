/**
 * The kinds of value a config file holds (durations, sizes, addresses, integers in a
 * range, names, hex digests, choices, lists and tables) as zod schemas. Each reads the
 * TOML value, says in one phrase what it expected and what it received, and shows in
 * JSON Schema what an editor can check (a pattern, a range, the choices).
 *
 * @module
 */
import * as z from "zod";
import { formatHostPort, HOST_PORT_PATTERN, parseHostPort } from "../core/address.ts";
import { DURATION_PATTERN, formatDuration, parseDuration } from "../core/duration.ts";
import { parseRate, parseSize, RATE_PATTERN, SIZE_PATTERN } from "../core/size.ts";

/** What the documentation of a key says, in TOML terms: the JSON Schema and docs/CONFIG.md show it. */
export interface KeyDoc {
  /** What the key does; Markdown, links relative to docs/. */
  description: string;
  /** The value in force when the key is absent, as written in TOML. */
  default?: unknown;
  /** When the default is not a value: `"one per CPU"`, `"required"`, `"none"`. */
  defaultText?: string;
  /** Values as written in TOML, the first one shown in the reference. */
  examples: readonly unknown[];
}

/** The documentation of each key's schema, for the JSON Schema and docs/CONFIG.md. */
export const KEY_DOCS: z.core.$ZodRegistry<KeyDoc> = z.registry<KeyDoc>();

/** Documents a key: `schema` as it appears in its table, wrappers (default, optional) included. */
export function documented<T extends z.ZodType>(schema: T, doc: KeyDoc): T {
  KEY_DOCS.add(schema, doc);
  return schema;
}

/**
 * A key with a default: absent, it reads as `value` (written as in TOML, read
 * through `schema`), and the documentation says so.
 */
export function withDefault<T extends z.ZodType>(
  schema: T,
  value: z.input<T>,
  doc: Omit<KeyDoc, "default">,
): z.ZodPrefault<T> {
  const json = typeof value === "bigint" ? Number(value) : value;
  return documented(schema.prefault(value as never), { ...doc, default: json });
}

/** What each key says of itself, whatever its default. */
export type KeyText = Pick<KeyDoc, "description" | "examples">;

/** A key that must be given. */
export function required<T extends z.ZodType>(schema: T, doc: KeyText): T {
  return documented(schema, { ...doc, defaultText: "required" });
}

/** A key that may be absent, with no value in its place (`defaultText` "none" unless said). */
export function optional<T extends z.ZodType>(schema: T, doc: KeyDoc): z.ZodOptional<T> {
  return documented(schema.optional(), "default" in doc ? doc : { defaultText: "none", ...doc });
}

/** A TOML date or time, which no key takes, stands for itself in the values checked. */
export const TOML_DATE: unique symbol = Symbol("a date");

/** A value as an error message shows it: strings quoted and cut, floats as in TOML, tables and arrays named. */
export function describe(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  }
  if (typeof value === "bigint" || typeof value === "boolean") return String(value);
  if (typeof value === "number") {
    // Integers are read as bigints: a number is a TOML float, written as TOML writes it.
    if (Number.isNaN(value)) return "nan";
    if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
    return Number.isInteger(value) ? `${Object.is(value, -0) ? "-0" : value}.0` : String(value);
  }
  if (value === TOML_DATE || value instanceof Date) return "a date or time";
  if (Array.isArray(value)) return "an array";
  return "a table";
}

/** The message of a value that is not what was expected (`is required` when absent). */
function mustBe(expected: string): (issue: { input?: unknown }) => string {
  return (issue) =>
    issue.input === undefined
      ? "is required"
      : `must be ${expected}, received ${describe(issue.input)}`;
}

/** Thrown by the reader of {@linkcode parsed} for a value of the right form it refuses. */
class Refused extends Error {}

/** Refuses a value: `message` says why, such as `must be longer than zero`. */
function refuse(message: string): never {
  throw new Refused(message);
}

/**
 * A string that `read` turns into its value, shown in JSON Schema by `pattern`. When
 * `read` returns `undefined` or throws, the value is not `expected`, unless it throws
 * through {@linkcode refuse}, which says why.
 */
function parsed<T>(expected: string, pattern: string, read: (value: string) => T | undefined) {
  return z.string({ error: mustBe(expected) }).meta({ pattern }).transform((value, ctx) => {
    let message = `must be ${expected}`;
    try {
      const result = read(value);
      if (result !== undefined) return result;
    } catch (error) {
      if (error instanceof Refused) message = error.message;
    }
    ctx.issues.push({
      code: "custom",
      input: value,
      message: `${message}, received ${describe(value)}`,
    });
    return z.NEVER;
  });
}

/** Longest delay a JavaScript timer honours (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A duration string (`"30s"`), read as milliseconds: longer than zero, at most
 * `"596h"`, and at least `min` ms when given.
 */
export function duration(min = 0) {
  return parsed(`a duration such as "500ms", "30s", "5m" or "1h"`, DURATION_PATTERN, (text) => {
    const ms = parseDuration(text);
    if (ms <= 0) refuse("must be longer than zero");
    if (ms > MAX_TIMER_MS) refuse(`must be at most "596h"`);
    if (ms < min) refuse(`must be at least "${formatDuration(min)}"`);
    return ms;
  });
}

const SIZE = `a size such as "64KiB", "1MiB" or "10MB" (B, KB, MB, GB, KiB, MiB, GiB)`;

/** A size string (`"1MiB"`), read as bytes, at least `min`. */
export function size(min: number) {
  return parsed(SIZE, SIZE_PATTERN, (text) => {
    const bytes = parseSize(text);
    if (bytes < min) refuse(`must be at least ${min} bytes`);
    return bytes;
  });
}

/** A rate string (`"10MiB/s"`), read as bytes per second, at least 1 KB/s. */
export function bandwidth() {
  return parsed(
    `a rate such as "10MiB/s" or "500KB/s" (B, KB, MB, GB, KiB, MiB, GiB per second)`,
    RATE_PATTERN,
    (text) => {
      const bytes = parseRate(text);
      if (bytes < 1000) refuse(`must be at least "1KB/s"`);
      return bytes;
    },
  );
}

/**
 * A TOML integer from `min` to `max`, read as a number. (TOML integers arrive as
 * bigints, so that `2.0` is not taken for `2`.)
 */
export function integer(min: number, max: number = Number.MAX_SAFE_INTEGER) {
  const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`;
  return z.bigint({ error: mustBe("an integer") })
    .refine((value) => value >= BigInt(min) && value <= BigInt(max), {
      error: (issue) => `must be ${range}, received ${issue.input}`,
    })
    .meta({
      type: "integer",
      minimum: min,
      ...(max === Number.MAX_SAFE_INTEGER ? {} : { maximum: max }),
    })
    .transform(Number);
}

/** `true` or `false`. */
export function boolean() {
  return z.boolean({ error: mustBe("true or false") });
}

/** One of `choices`; `expected` says what they are (default: each, quoted, joined by "or"). */
export function oneOf<const T extends readonly [string, ...string[]]>(
  choices: T,
  expected: string = choices.map((c) => JSON.stringify(c)).join(" or "),
) {
  return z.enum(choices, { error: mustBe(expected) });
}

/** A string, not empty unless `allowEmpty`; `expected` says what it is, for messages. */
export function text(
  { allowEmpty = false, expected = "a non-empty string" }: {
    allowEmpty?: boolean;
    expected?: string;
  } = {},
) {
  const s = z.string({ error: mustBe(expected) });
  return allowEmpty ? s : s.min(1, { error: mustBe(expected) });
}

/** A `host:port` address, normalised (IPv6 in brackets); port 0 only when `portZero`. */
export function address(portZero: boolean) {
  return parsed(`"host:port"`, HOST_PORT_PATTERN, (value) => {
    const hostPort = parseHostPort(value);
    if (hostPort.port === 0 && !portZero) refuse("must have a port from 1 to 65535");
    return formatHostPort(hostPort);
  });
}

/**
 * A string that must match `pattern`; `expected` says what it is, `read` normalises
 * it (returning `undefined`, or throwing, when it is not acceptable after all).
 */
export function shaped<T = string>(
  pattern: RegExp,
  expected: string,
  read: (value: string) => T | undefined = (value) => value as T,
) {
  // JSON Schema patterns have no flags: the pattern must say it all.
  if (pattern.flags !== "") throw new TypeError(`Cannot use the flags of ${pattern} in a schema`);
  return parsed(expected, pattern.source, (value) => pattern.test(value) ? read(value) : undefined);
}

/** How an item repeating an earlier one of a list is reported: the index of the earlier one. */
export interface RepeatParams {
  /** Index of the first occurrence in the same list. */
  repeats: number;
}

/**
 * A TOML array of `item`: `nonEmpty` is what an empty one is told (absent: it may be
 * empty), `identity` what makes two items the same, when they may not repeat.
 */
export function list<T extends z.ZodType>(
  item: T,
  { nonEmpty, identity }: { nonEmpty?: string; identity?: (item: z.output<T>) => string } = {},
) {
  return z.array(item, { error: mustBe("an array") })
    .meta({
      ...(nonEmpty === undefined ? {} : { minItems: 1 }),
      ...(identity === undefined ? {} : { uniqueItems: true }),
    })
    .superRefine((items, ctx) => {
      if (nonEmpty !== undefined && items.length === 0) {
        ctx.addIssue({ code: "custom", input: items, message: nonEmpty });
      }
      if (identity === undefined) return;
      // Items refused themselves are left out: the others are still compared.
      const refused = new Set(ctx.issues.map((issue) => issue.path?.[0]));
      const seen = new Map<string, number>();
      items.forEach((value, i) => {
        if (refused.has(i)) return;
        const id = identity(value);
        const first = seen.get(id);
        if (first === undefined) seen.set(id, i);
        else {
          ctx.addIssue({
            code: "custom",
            input: value,
            path: [i],
            message: `repeats ${JSON.stringify(id)}`,
            params: { repeats: first } satisfies RepeatParams,
          });
        }
      });
    }, { when: (payload) => Array.isArray(payload.value) });
}

/** The start of the message of a table's unknown keys, followed by its known keys. */
export const UNKNOWN_KEYS = "known keys: ";

type Camel<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Head}${Capitalize<Camel<Tail>>}`
  : S;
/** `T` with its snake_case keys in camelCase, optional ones kept optional. */
export type CamelKeys<T> = { [K in keyof T as K extends string ? Camel<K> : K]: T[K] };

/**
 * A TOML table with the keys of `shape` and no other, read with its keys in camelCase
 * (keys absent from the file and without a default stay absent).
 */
export function table<S extends z.core.$ZodLooseShape>(shape: S) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === "unrecognized_keys"
        ? `${UNKNOWN_KEYS}${known.join(", ")}`
        : mustBe("a table")(issue),
  }).transform((values) => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(values)) {
      const camel = key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
      if (value !== undefined) out[camel] = value;
    }
    return out as CamelKeys<typeof values>;
  });
}

/** Names of groups and clients: letters, digits, `_`, `.` and `-`, a letter or digit first. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** A table of named tables, such as `[groups.NAME]`. */
export function named<T extends z.ZodType>(entry: T) {
  const message = (issue: { input?: unknown }) =>
    `has a bad name: expected letters, digits, "_", "." or "-", not starting with a symbol, received ${
      describe(issue.input)
    }`;
  const name = z.string({ error: message }).regex(NAME_RE, { error: message });
  return z.record(name, entry, { error: mustBe("a table") });
}
