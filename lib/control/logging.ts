/**
 * LogTape setup for the mtlb service: human-readable text on a terminal, JSON
 * lines otherwise, always on stderr. Only the service entry point calls
 * {@linkcode configureLogging}; library code only calls `getLogger(["mtlb", ...])`.
 *
 * @module
 */
import {
  compareLogLevel,
  type Config,
  configure,
  getAnsiColorFormatter,
  getConfig,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
  reset,
  type TextFormatter,
  type TextFormatterOptions,
} from "@logtape/logtape";

/** How log records are written: `"auto"` picks text on a terminal, JSON lines otherwise. */
export type LogFormat = "auto" | "text" | "json";

/** Options of {@linkcode configureLogging}. */
export interface LoggingOptions {
  /**
   * Output format.
   *
   * @default {"auto"}
   */
  format?: LogFormat;
  /**
   * The lowest level written for the `mtlb` categories.
   *
   * @default {"info"}
   */
  level?: LogLevel;
  /**
   * Receives each formatted record, newline included.
   *
   * @default {a synchronous write to stderr}
   */
  write?: (line: string) => void;
  /**
   * Whether the output is a terminal: decides `"auto"`, and colours text.
   *
   * @default {Deno.stderr.isTerminal()}
   */
  terminal?: boolean;
  /**
   * Properties added to every record, such as the `worker` a Worker's records come
   * from.
   *
   * @default {{}}
   */
  properties?: Record<string, unknown>;
}

/**
 * Configures LogTape for the service: records of the `mtlb` categories at `level`
 * and above, and LogTape's own warnings, go to stderr, as text (with every property
 * the message does not show appended as `key=value`) or as one JSON object per line:
 * `{"@timestamp", "level", "logger", "message", "properties"}`. Errors in properties
 * become `{name, message, code}`; bigints become strings. Text is coloured on a
 * terminal unless `NO_COLOR` is set. Replaces any earlier configuration.
 *
 * Records are written synchronously, so nothing is lost when the process exits
 * right after logging.
 *
 * @example JSON lines
 * ```ts
 * import { configureLogging } from "./logging.ts";
 * import { getLogger } from "@logtape/logtape";
 * import assert from "node:assert/strict";
 *
 * const lines: string[] = [];
 * await using _logging = await configureLogging({ format: "json", write: (l) => lines.push(l) });
 * getLogger(["mtlb", "audit"]).info("Connection ended: client={client}", { client: "alice" });
 * const record = JSON.parse(lines[0]!);
 * assert.equal(record.logger, "mtlb.audit");
 * assert.equal(record.message, "Connection ended: client=alice");
 * assert.equal(record.properties.client, "alice");
 * ```
 *
 * @param options Format, level and output.
 * @returns A handle whose disposal resets LogTape.
 */
export async function configureLogging(options: LoggingOptions = {}): Promise<AsyncDisposable> {
  const terminal = options.terminal ?? Deno.stderr.isTerminal();
  const format = options.format ?? "auto";
  const formatter = format === "json" || (format === "auto" && !terminal)
    ? formatJsonLine
    : textFormatter(terminal && !Deno.noColor);
  const write = options.write ?? writeStderr;
  const level = options.level ?? "info";
  const extra = options.properties !== undefined && Object.keys(options.properties).length > 0
    ? options.properties
    : undefined;
  const config: Config<string, string> = {
    reset: true,
    sinks: {
      stderr: extra === undefined
        ? (record: LogRecord) => write(formatter(record))
        : (record: LogRecord) =>
          write(formatter({ ...record, properties: { ...record.properties, ...extra } })),
    },
    loggers: [
      { category: ["mtlb"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  };
  await configure(config);
  ours = { config, level };
  return {
    [Symbol.asyncDispose]: () => {
      ours = undefined;
      return reset();
    },
  };
}

/** The configuration {@linkcode configureLogging} made last, and its level. */
let ours: { config: Config<string, string>; level: LogLevel } | undefined;

/**
 * Whether a record of `level` in an `mtlb` category would be written. LogTape builds
 * a record (message template parsed, properties copied) before its sinks' levels drop
 * it, so code that logs once per connection asks first. True whenever the
 * configuration {@linkcode configureLogging} made is not the one in force (never made,
 * disposed, or replaced by another `configure()`, whose levels mtlb does not read).
 *
 * @example Usage
 * ```ts
 * import { configureLogging, isLogged } from "./logging.ts";
 * import { configure } from "@logtape/logtape";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isLogged("debug"), true);
 * {
 *   await using _logging = await configureLogging({ level: "warning", write: () => {} });
 *   assert.equal(isLogged("info"), false);
 *   assert.equal(isLogged("error"), true);
 * }
 * assert.equal(isLogged("info"), true);
 * {
 *   await using _logging = await configureLogging({ level: "error", write: () => {} });
 *   // Someone else's setup replaces it.
 *   await configure({
 *     reset: true,
 *     sinks: {},
 *     loggers: [{ category: ["logtape", "meta"], lowestLevel: "error", sinks: [] }],
 *   });
 *   assert.equal(isLogged("info"), true);
 * }
 * ```
 *
 * @param level The level of the record about to be logged.
 * @returns `false` only when `configureLogging` is in force with a higher level.
 */
export function isLogged(level: LogLevel): boolean {
  // Only while LogTape still runs the configuration configureLogging made: anyone may
  // have called configure() since.
  if (ours === undefined || getConfig() !== ours.config) return true;
  return compareLogLevel(level, ours.level) >= 0;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  const bytes = encoder.encode(line);
  for (let at = 0; at < bytes.length;) at += Deno.stderr.writeSync(bytes.subarray(at));
}

/** JSON.stringify replacer for values LogTape properties commonly hold. */
function jsonValue(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) };
  }
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  return value;
}

function renderValue(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.message;
  if (Array.isArray(value) && value.every((item) => typeof item === "string")) {
    return value.join(", ");
  }
  if (typeof value === "object" && value !== null) return JSON.stringify(value, jsonValue);
  return String(value);
}

function renderMessage(record: LogRecord): string {
  let message = "";
  for (let i = 0; i < record.message.length; i++) {
    message += i % 2 === 0 ? record.message[i] as string : renderValue(record.message[i]);
  }
  return message;
}

function formatJsonLine(record: LogRecord): string {
  return `${
    JSON.stringify({
      "@timestamp": new Date(record.timestamp).toISOString(),
      level: record.level === "warning" ? "WARN" : record.level.toUpperCase(),
      logger: record.category.join("."),
      message: renderMessage(record),
      properties: record.properties,
    }, jsonValue)
  }\n`;
}

/** The properties a message template does not show, as ` key=value` pairs. */
function extraProperties(record: LogRecord): string {
  const raw = typeof record.rawMessage === "string"
    ? record.rawMessage
    : record.rawMessage.join("");
  const shown = new Set([...raw.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1]!.trim()));
  let extra = "";
  for (const [key, value] of Object.entries(record.properties)) {
    if (value === undefined || shown.has(key)) continue;
    const text = renderValue(value);
    const plain = typeof value === "object" || (/^[^\s"=]+$/.test(text));
    extra += ` ${key}=${plain ? text : JSON.stringify(text)}`;
  }
  return extra;
}

function textFormatter(colors: boolean): TextFormatter {
  const options = {
    timestamp: "date-time-tz" as const,
    category: ".",
    value: (value) => renderValue(value),
    format: ({ timestamp, level, category, message, record }) =>
      `${timestamp} ${level} ${category}: ${message}${extraProperties(record)}`,
  } satisfies TextFormatterOptions;
  return colors ? getAnsiColorFormatter(options) : getTextFormatter(options);
}
