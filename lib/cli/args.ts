/**
 * The mtlb command line: the commands and options {@linkcode parseCliArgs} reads,
 * the usage text, and the suggestion of the closest option for a mistyped one.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { isLogLevel, type LogLevel } from "@logtape/logtape";
import type { LogFormat } from "../control/logging.ts";
import { closestName } from "../core/edit_distance.ts";
import { EXPIRY_WARNING_DAYS } from "./certificate_dates.ts";

/** The config file used when `--config` is not given. */
export const DEFAULT_CONFIG = "config/lb.toml";
/** The clients `certs` issues certificates for when it writes a new PKI and no `--client` is given. */
export const DEFAULT_CLIENTS: readonly string[] = ["alice", "bob"];
/** The server names a development server certificate always covers. */
export const DEFAULT_SERVER_NAMES: readonly string[] = ["localhost", "127.0.0.1", "::1"];

const LOG_FORMATS: readonly LogFormat[] = ["auto", "text", "json"];

/** A parsed command line, as {@linkcode parseCliArgs} returns it. */
export type CliCommand =
  | {
    command: "serve";
    config: string;
    logFormat: LogFormat | undefined;
    logLevel: LogLevel;
  }
  | { command: "check"; config: string }
  | { command: "clients"; action: "push" | "pull"; config: string }
  | { command: "permissions"; config: string }
  | {
    command: "certs";
    dir: string;
    /** The clients named with `--client`; `undefined` when none were (see {@linkcode USAGE}). */
    clients: string[] | undefined;
    /** The names given with `--server-name`. */
    serverNames: string[];
    /** The config named with `--config`; `undefined` when none was. */
    config: string | undefined;
    force: boolean;
  }
  | { command: "help" }
  | { command: "version" };

/** A command line that cannot be run: an unknown command or option, a bad value. */
export class UsageError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** The command synopsis, printed with a usage error and at the top of {@linkcode USAGE}. */
export const USAGE_SYNOPSIS: string = `Usage:
  main.ts [serve] [--config FILE] [--log-format auto|text|json] [--log-level LEVEL]
  main.ts check [--config FILE]
  main.ts permissions [--config FILE]
  main.ts clients push|pull [--config FILE]
  main.ts certs [--dir DIR] [--client NAME]... [--server-name NAME]... [--config FILE] [--force]
`;

/** The usage text `--help` prints. */
export const USAGE: string = `${USAGE_SYNOPSIS}
Commands:
  serve        Run the balancer (the default command). SIGHUP reloads the config
               and certificates; SIGTERM or SIGINT drains (stops accepting, waits
               up to drain_timeout for live connections); another one, half a
               second or more later, closes every connection now
  check        Validate the config and its certificates and print a summary;
               warns about certificates expiring within ${EXPIRY_WARNING_DAYS} days and about
               groups the server certificate does not name for SNI
  permissions  Print the deno run line with the narrow permissions the config needs
               (absolute paths: it runs from any folder)
  clients push Publish the config's [clients] to the fleet's store ([cluster] store)
               as the next version of the client policy, once validated against the
               config's groups; every instance with [cluster] clients = "shared"
               applies it within a second
  clients pull Print the client policy version in the store, as TOML
  certs        Write a development PKI (CA, server, clients; ECDSA P-256), or add
               clients to the one in --dir, signed by its CA

Options:
  -c, --config FILE     Config file (default: ${DEFAULT_CONFIG})
  --log-format FORMAT   auto (text on a terminal, JSON lines otherwise), text or json;
                        overrides [log] format in the config
  --log-level LEVEL     trace, debug, info, warning, error or fatal (default: info)
  --dir DIR             certs: output folder (default: certs)
  --client NAME         certs: a client to issue a certificate for, repeatable
                        (default for a new PKI: ${DEFAULT_CLIENTS.join(", ")})
  --server-name NAME    certs: a further name (DNS name or IP address) for the server
                        certificate, repeatable; it always covers ${DEFAULT_SERVER_NAMES.join(", ")}
                        and the group names of the config (--config, else ${DEFAULT_CONFIG}
                        when it exists and may be read) that clients choose by SNI
  --force               certs: replace the whole PKI in --dir
  -h, --help            Show this help
  -V, --version         Show the version

Exit status: 0 success; 1 the balancer could not run (unsupported Deno, cannot
listen, no client policy) or clients could not use the store; 2 bad arguments,
config, certificates or permissions (nothing started).
`;

const OPTIONS = {
  config: { type: "string", short: "c" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  dir: { type: "string" },
  client: { type: "string", multiple: true },
  "server-name": { type: "string", multiple: true },
  force: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;
type OptionName = keyof typeof OPTIONS;

const COMMAND_OPTIONS: Record<string, readonly OptionName[]> = {
  serve: ["config", "log-format", "log-level"],
  check: ["config"],
  permissions: ["config"],
  clients: ["config"],
  certs: ["dir", "client", "server-name", "config", "force"],
};

/**
 * Parses command-line arguments. The command is the first positional argument,
 * `serve` when there is none.
 *
 * @example Usage
 * ```ts
 * import { parseCliArgs } from "./args.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseCliArgs(["check", "--config", "lb.toml"]), {
 *   command: "check",
 *   config: "lb.toml",
 * });
 * assert.equal(parseCliArgs([]).command, "serve");
 * assert.throws(() => parseCliArgs(["--confg", "lb.toml"]), {
 *   name: "UsageError",
 *   message: "Unknown option --confg; did you mean --config?",
 * });
 * ```
 *
 * @param args The arguments after the script name.
 * @returns The command and its options, defaults filled in.
 * @throws {UsageError} On an unknown command or option (naming the closest valid
 *   option), a missing or bad value, an option the command does not take, or more
 *   than one command.
 */
export function parseCliArgs(args: readonly string[]): CliCommand {
  // Not strict: unknown options come back as tokens, and get our own message.
  const { values, positionals, tokens } = parseArgs({
    args: [...args],
    strict: false,
    allowPositionals: true,
    tokens: true,
    options: OPTIONS,
  });
  const command = positionals[0] ?? "serve";
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    const option = OPTIONS[token.name as OptionName] as
      | { type: "string" | "boolean" }
      | undefined;
    if (option === undefined || !Object.hasOwn(OPTIONS, token.name)) {
      const suggestion = closestOption(token.rawName, COMMAND_OPTIONS[command]);
      throw new UsageError(
        `Unknown option ${token.rawName}${
          suggestion === undefined ? "" : `; did you mean ${suggestion}?`
        }`,
      );
    }
    const shown = token.rawName.startsWith("--") ? token.rawName : `--${token.name}`;
    if (option.type === "string") {
      if (token.value === undefined) throw new UsageError(`Option ${shown} needs a value`);
      if (!token.inlineValue && token.value.startsWith("-") && token.value !== "-") {
        throw new UsageError(
          `Option ${shown} needs a value, received the option ${token.value} (write ${shown}=${token.value} for a value starting with "-")`,
        );
      }
    } else if (token.value !== undefined) {
      throw new UsageError(
        `Option ${shown} takes no value, received ${JSON.stringify(token.value)}`,
      );
    }
  }
  if (values.help) return { command: "help" };
  if (values.version) return { command: "version" };
  const action = command === "clients" ? positionals[1] : undefined;
  if (command === "clients" && action !== "push" && action !== "pull") {
    throw new UsageError(
      `Cannot parse arguments: "clients" needs push or pull, received ${
        action === undefined ? "nothing" : JSON.stringify(action)
      }`,
    );
  }
  if (positionals.length > (action === undefined ? 1 : 2)) {
    throw new UsageError(
      `Cannot parse arguments: expected one command, received ${
        positionals.map((p) => JSON.stringify(p)).join(" ")
      }`,
    );
  }
  const allowed = COMMAND_OPTIONS[command];
  if (allowed === undefined) {
    throw new UsageError(
      `Cannot parse arguments: unknown command ${JSON.stringify(command)}, expected one of ${
        Object.keys(COMMAND_OPTIONS).join(", ")
      }`,
    );
  }
  for (const [option, value] of Object.entries(values)) {
    if (value === undefined || (allowed as readonly string[]).includes(option)) continue;
    throw new UsageError(
      `Cannot parse arguments: "${command}" does not take --${option}`,
    );
  }
  const string = (option: OptionName): string | undefined => values[option] as string | undefined;
  const strings = (option: OptionName): string[] | undefined =>
    values[option] as string[] | undefined;
  const nonEmpty = (option: string, value: string | undefined, fallback: string): string => {
    if (value === "") throw new UsageError(`Cannot parse arguments: --${option} must not be empty`);
    return value ?? fallback;
  };
  const config = nonEmpty("config", string("config"), DEFAULT_CONFIG);
  switch (command) {
    case "serve": {
      const format = string("log-format");
      if (format !== undefined && !(LOG_FORMATS as readonly string[]).includes(format)) {
        throw new UsageError(
          `Cannot parse arguments: --log-format must be auto, text or json, received ${
            JSON.stringify(format)
          }`,
        );
      }
      let level = string("log-level") ?? "info";
      if (level === "warn") level = "warning";
      if (!isLogLevel(level)) {
        throw new UsageError(
          `Cannot parse arguments: --log-level must be trace, debug, info, warning, error or fatal, received ${
            JSON.stringify(string("log-level"))
          }`,
        );
      }
      return {
        command,
        config,
        logFormat: format as LogFormat | undefined,
        logLevel: level,
      };
    }
    case "check":
    case "permissions":
      return { command, config };
    case "clients":
      return { command, action: action as "push" | "pull", config };
    default: {
      const clients = strings("client");
      for (const name of clients ?? []) nonEmpty("client", name, "");
      const serverNames = strings("server-name") ?? [];
      for (const name of serverNames) nonEmpty("server-name", name, "");
      return {
        command: "certs",
        dir: nonEmpty("dir", string("dir"), "certs"),
        clients,
        serverNames,
        config: string("config") === undefined ? undefined : config,
        force: values.force === true,
      };
    }
  }
}

/**
 * The valid option closest to a mistyped one: the only option it starts, else the one
 * at the smallest edit distance (at most 2, or 1 for short names), preferring those
 * the command takes.
 */
function closestOption(
  raw: string,
  preferred: readonly OptionName[] | undefined,
): string | undefined {
  const typed = raw.replace(/^-+/, "").toLowerCase();
  if (typed === "") return undefined;
  const names = Object.keys(OPTIONS) as OptionName[];
  const ranked = (pool: readonly OptionName[]): OptionName | undefined =>
    closestName(typed, pool) as OptionName | undefined;
  const best = ranked([...(preferred ?? []), "help", "version"]) ?? ranked(names);
  return best === undefined ? undefined : `--${best}`;
}
