/**
 * The mtlb command line: argument parsing, and
 * the `serve`, `check`, `permissions` and `certs` commands as functions that
 * return an exit code. `main.ts` only calls {@linkcode runCli}.
 *
 * Exit codes: {@linkcode EXIT_OK} (0) on success; {@linkcode EXIT_FAILURE} (1) when
 * the balancer cannot run although its config is fine (unsupported Deno, an
 * address in use, a privileged port); {@linkcode EXIT_USAGE} (2) for everything the
 * operator must fix before anything starts: bad arguments, a bad config or
 * certificate, missing Deno permissions, files `certs` would overwrite.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { isAbsolute, join, resolve } from "node:path";
import { isIP } from "node:net";
import { X509Certificate } from "node:crypto";
import { getLogger, isLogLevel, type LogLevel } from "@logtape/logtape";
import { AddressInUseError, assertAddressesFree } from "../listener/exclusive_bind.ts";
import {
  ASSUMED_FILE_DESCRIPTORS,
  connectionCaps,
  readFileDescriptorLimit,
} from "../listener/connection_caps.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../core/address.ts";
import {
  type Config,
  ConfigError,
  loadAdminToken,
  loadConfig,
  loadTlsMaterial,
  type TlsCertificateInfo,
  type TlsMaterial,
} from "../config/config.ts";
import { formatDuration } from "../core/duration.ts";
import { identityFromCertificate } from "../identity/certificate.ts";
import { configureLogging, type LogFormat } from "../control/logging.ts";
import { connectCluster } from "../redis/cluster.ts";
import {
  checkPermissions,
  formatRunCommand,
  permissionFlags,
  shellQuote,
} from "../control/permissions.ts";
import { permissionNeeds, workerCount } from "../control/permission_needs.ts";
import { type DevPkiClient, extendDevPki, writeDevPki } from "../pki/pki.ts";
import { assertSupportedRuntime } from "../core/runtime.ts";
import type { TrustedAuthority } from "../identity/trust_store.ts";
import { AdminServer } from "../admin/admin_server.ts";
import { FileWatcher } from "../control/file_watcher.ts";
import { Balancer, type LoadedConfig } from "../server/balancer.ts";
import { WorkerBalancer } from "../workers/worker_balancer.ts";

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: the balancer could not run (unsupported runtime, cannot listen). */
export const EXIT_FAILURE = 1;
/** Exit code: bad arguments, config, certificates or permissions; nothing was started. */
export const EXIT_USAGE = 2;
/** The config file used when `--config` is not given. */
export const DEFAULT_CONFIG = "config/lb.toml";
/** Certificates expiring within this many days are warned about. */
export const EXPIRY_WARNING_DAYS = 30;

const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_CLIENTS = ["alice", "bob"];
const LOG_FORMATS: readonly LogFormat[] = ["auto", "text", "json"];
const log = getLogger(["mtlb", "main"]);

/** A parsed command line, as {@linkcode parseCliArgs} returns it. */
export type CliCommand =
  | {
    command: "serve";
    config: string;
    logFormat: LogFormat | undefined;
    logLevel: LogLevel;
  }
  | { command: "check"; config: string }
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

/** The server names a development server certificate always covers. */
export const DEFAULT_SERVER_NAMES: readonly string[] = ["localhost", "127.0.0.1", "::1"];

const USAGE_SYNOPSIS = `Usage:
  main.ts [serve] [--config FILE] [--log-format auto|text|json] [--log-level LEVEL]
  main.ts check [--config FILE]
  main.ts permissions [--config FILE]
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
listen); 2 bad arguments, config, certificates or permissions (nothing started).
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
  certs: ["dir", "client", "server-name", "config", "force"],
};

/**
 * Parses command-line arguments. The command is the first positional argument,
 * `serve` when there is none.
 *
 * @example Usage
 * ```ts
 * import { parseCliArgs } from "./cli.ts";
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
  if (positionals.length > 1) {
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
  const ranked = (pool: readonly OptionName[]): OptionName | undefined => {
    const prefixed = pool.filter((name) => typed.length >= 3 && name.startsWith(typed));
    if (prefixed.length === 1) return prefixed[0];
    let best: OptionName | undefined;
    let bestDistance = typed.length <= 3 ? 1 : 2;
    for (const name of pool) {
      const distance = editDistance(typed, name);
      if (distance <= bestDistance && (best === undefined || distance < bestDistance)) {
        best = name;
        bestDistance = distance;
      }
    }
    return best;
  };
  const best = ranked([...(preferred ?? []), "help", "version"]) ?? ranked(names);
  return best === undefined ? undefined : `--${best}`;
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => {
    const row = new Array<number>(b.length + 1).fill(0);
    row[0] = i;
    return row;
  });
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        value = Math.min(value, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = value;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The group names a client can ask for by SNI: with a shared listener (`[server]
 * listen`), every group's name that is not an IP address (SNI carries host names
 * only), lower case. Empty without a shared listener: a group's own listener needs
 * no SNI.
 *
 * @example Usage
 * ```ts
 * import { sniGroupNames } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * const groups = new Map([["Cache", {}], ["echo", {}], ["10.0.0.1", {}]]);
 * assert.deepEqual(sniGroupNames({ server: { listen: "127.0.0.1:8443" }, groups }), ["cache", "echo"]);
 * assert.deepEqual(sniGroupNames({ server: {}, groups }), []);
 * ```
 *
 * @param config The configuration (its `[server] listen` and groups).
 * @returns The names, in config order.
 */
export function sniGroupNames(
  config: { server: { listen?: string }; groups: ReadonlyMap<string, unknown> },
): string[] {
  if (config.server.listen === undefined) return [];
  return [...config.groups.keys()].filter((name) => isIP(name) === 0).map((name) =>
    name.toLowerCase()
  );
}

/**
 * Whether a certificate DNS name covers a host name, as RFC 6125 (section 6.4) has
 * clients match: equal ignoring letter case and a trailing dot, or a wildcard `*`
 * as the whole leftmost label standing for exactly one label (`*.example.com`
 * covers `a.example.com`, neither `example.com` nor `a.b.example.com`). Partial
 * wildcards (`a*.example.com`) cover nothing: most clients refuse them.
 *
 * @example Usage
 * ```ts
 * import { dnsNameCovers } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(dnsNameCovers("*.example.com", "cache.example.com"));
 * assert.ok(!dnsNameCovers("*.example.com", "a.cache.example.com"));
 * assert.ok(dnsNameCovers("Cache", "cache"));
 * ```
 *
 * @param pattern A DNS name of the certificate.
 * @param host The name a client connects by.
 * @returns `true` when a client that checks host names accepts the certificate for `host`.
 */
export function dnsNameCovers(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, "");
  const h = host.toLowerCase().replace(/\.$/, "");
  if (!p.startsWith("*.")) return !p.includes("*") && p === h;
  const rest = p.slice(2);
  if (rest.includes("*") || !rest.includes(".")) return false;
  const dot = h.indexOf(".");
  return dot > 0 && h.slice(dot + 1) === rest;
}

/**
 * The groups clients choose by SNI on the shared listener ({@linkcode sniGroupNames})
 * that none of the server certificate's DNS names covers ({@linkcode dnsNameCovers}):
 * a client that checks host names refuses the server when it connects by such a name.
 *
 * @example Usage
 * ```ts
 * import { uncoveredSniGroups } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * const config = { server: { listen: "127.0.0.1:8443" }, groups: new Map([["cache", {}], ["echo", {}]]) };
 * assert.deepEqual(uncoveredSniGroups(config, ["localhost", "echo"]), ["cache"]);
 * ```
 *
 * @param config The configuration.
 * @param dnsNames The DNS subject alternative names of the server certificate.
 * @returns The group names not covered, in config order.
 */
export function uncoveredSniGroups(
  config: { server: { listen?: string }; groups: ReadonlyMap<string, unknown> },
  dnsNames: readonly string[],
): string[] {
  return sniGroupNames(config).filter((group) =>
    !dnsNames.some((pattern) => dnsNameCovers(pattern, group))
  );
}

/** The warning `check` and `serve` give about groups the server certificate does not name. */
function sniCoverageWarning(config: Config, tls: TlsMaterial): string | undefined {
  const pem = tls.cert.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/)?.[0];
  if (pem === undefined) return undefined;
  const dnsNames = identityFromCertificate(new Uint8Array(new X509Certificate(pem).raw)).sanDns;
  const missing = uncoveredSniGroups(config, dnsNames);
  if (missing.length === 0) return undefined;
  return `the server certificate ("tls.cert", ${config.tls.cert}) does not name group${
    missing.length === 1 ? "" : "s"
  } ${missing.join(", ")} among its DNS names (${
    dnsNames.length === 0 ? "it has none" : dnsNames.join(", ")
  }): a client that checks host names (curl, browsers, most TLS libraries) refuses the server when it asks for ${
    missing.length === 1 ? "this group" : "these groups"
  } by SNI on the shared listener; issue the certificate for these names too (for the development PKI: main.ts certs --server-name NAME), or have such clients choose by ALPN or a group's own listener`;
}

/** What {@linkcode checkCertificateDates} found wrong with one certificate. */
export interface CertificateFinding {
  /** `"error"` for an expired certificate, `"warning"` otherwise. */
  level: "error" | "warning";
  /** The certificate. */
  certificate: TlsCertificateInfo;
  /** A sentence for the operator. */
  message: string;
}

/**
 * Judges the validity dates of the CA and server certificates: expired is an
 * error, expiring within {@linkcode EXPIRY_WARNING_DAYS} days or not valid yet a
 * warning.
 *
 * @example Usage
 * ```ts
 * import { checkCertificateDates } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * const now = Date.parse("2030-01-01T00:00:00Z");
 * const [finding] = checkCertificateDates([{
 *   key: "tls.cert",
 *   subject: "CN=localhost",
 *   notBefore: new Date("2029-01-01T00:00:00Z"),
 *   notAfter: new Date("2030-01-11T00:00:00Z"),
 * }], now);
 * assert.equal(finding?.level, "warning");
 * assert.match(finding!.message, /expires in 10 days/);
 * ```
 *
 * @param certificates The certificates, as `loadTlsMaterial` reports them.
 * @param now The current time, ms since the epoch.
 * @returns One finding per certificate with a problem, in input order.
 */
export function checkCertificateDates(
  certificates: readonly TlsCertificateInfo[],
  now: number = Date.now(),
): CertificateFinding[] {
  const findings: CertificateFinding[] = [];
  for (const certificate of certificates) {
    const what = `"${certificate.key}" certificate ${JSON.stringify(oneLine(certificate.subject))}`;
    const until = certificate.notAfter.getTime();
    if (until <= now) {
      findings.push({
        level: "error",
        certificate,
        message: `${what} expired on ${certificate.notAfter.toISOString()}`,
      });
    } else if (until - now < EXPIRY_WARNING_DAYS * DAY_MS) {
      const days = Math.floor((until - now) / DAY_MS);
      findings.push({
        level: "warning",
        certificate,
        message: `${what} expires in ${days} day${
          days === 1 ? "" : "s"
        }, on ${certificate.notAfter.toISOString()}`,
      });
    } else if (certificate.notBefore.getTime() > now) {
      findings.push({
        level: "warning",
        certificate,
        message: `${what} is not valid until ${certificate.notBefore.toISOString()}`,
      });
    }
  }
  return findings;
}

/**
 * Warns about client rules a certificate of another CA could satisfy: when the bundle
 * holds more than one CA that issues certificates, each rule that pins neither the
 * issuing CA (`issuer`) nor the client's key (`spki_sha256`) matches a certificate of
 * any of them with the right name or serial. Also warns about `issuer` pins that
 * name no CA of the bundle (they match only certificates issued by an intermediate
 * the clients send).
 *
 * @example Usage
 * ```ts
 * import { checkIssuerPins } from "./cli.ts";
 * import { parseConfig } from "../config/config.ts";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `[server]\nlisten = "127.0.0.1:8443"\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n` +
 *     `[groups.app]\nupstreams = ["127.0.0.1:7001"]\n` +
 *     `[clients.web]\nmatch = { cn = "web" }\ngroups = ["app"]\n`,
 *   { path: "lb.toml" },
 * );
 * const ca = { subject: "CN=CA", spkiSha256: "ab".repeat(32), issuesCertificates: true };
 * assert.deepEqual(checkIssuerPins(config, [ca]), []);
 * assert.match(checkIssuerPins(config, [ca, { ...ca, spkiSha256: "cd".repeat(32) }])[0]!, /clients web/);
 * ```
 *
 * @param config The configuration.
 * @param authorities The CAs of `tls.ca` (`TlsMaterial.authorities`).
 * @returns One sentence per warning.
 */
export function checkIssuerPins(
  config: Pick<Config, "clients">,
  authorities: readonly Pick<TrustedAuthority, "subject" | "spkiSha256" | "issuesCertificates">[],
): string[] {
  const warnings: string[] = [];
  const issuing = authorities.filter((a) => a.issuesCertificates);
  const loose = [...config.clients.values()].filter((c) =>
    c.match.issuer === undefined && c.match.spkiSha256 === undefined
  );
  if (issuing.length > 1 && loose.length > 0) {
    warnings.push(
      `"tls.ca" holds ${issuing.length} CAs that can issue client certificates, and clients ${
        loose.map((c) => c.name).join(", ")
      } match without "issuer": a certificate from any of these CAs with the same name, serial or SAN is taken for them. Pin each to its CA with match.issuer = the CA's spki_sha256 ("check" lists them)`,
    );
  }
  const known = new Set(authorities.map((a) => a.spkiSha256));
  for (const client of config.clients.values()) {
    const pin = client.match.issuer;
    if (pin !== undefined && !known.has(pin)) {
      warnings.push(
        `"clients.${client.name}.match.issuer" is the key of no CA of "tls.ca": it matches only certificates issued by an intermediate CA that clients send`,
      );
    }
  }
  return warnings;
}

function oneLine(subject: string): string {
  return subject.split("\n").filter((part) => part !== "").join(", ");
}

/** Options of {@linkcode runCli}. */
export interface RunCliOptions {
  /** The mtlb version `--version` prints. */
  version: string;
  /**
   * The script name shown in printed command lines.
   *
   * @default {"main.ts"}
   */
  main?: string;
  /**
   * Writes to standard output.
   *
   * @default {a synchronous write to stdout}
   */
  stdout?: (text: string) => void;
  /**
   * Writes to standard error (logging of `serve` has its own output, stderr).
   *
   * @default {a synchronous write to stderr}
   */
  stderr?: (text: string) => void;
  /**
   * Stops `serve` when aborted: it drains, then exits.
   *
   * @default {aborted on SIGINT or SIGTERM; a second one closes every connection at once}
   */
  signal?: AbortSignal;
  /**
   * The current time for certificate date checks, ms since the epoch.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/**
 * Runs one command line and returns the process exit code. `serve` returns only
 * after `signal` aborts (SIGINT or SIGTERM by default) and the balancer drained
 * and closed; without `signal`, SIGHUP reloads the configuration.
 *
 * @example Usage
 * ```ts
 * import { EXIT_USAGE, runCli } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * assert.equal(await runCli(["--version"], { version: "1.2.3", stdout: (t) => out += t }), 0);
 * assert.equal(out, "mtlb 1.2.3\n");
 * assert.equal(await runCli(["frobnicate"], { version: "1.2.3", stderr: () => {} }), EXIT_USAGE);
 * ```
 *
 * @param args The arguments after the script name.
 * @param options Version, output, stop signal and clock.
 * @returns The exit code: {@linkcode EXIT_OK}, {@linkcode EXIT_FAILURE} or {@linkcode EXIT_USAGE}.
 */
export async function runCli(args: readonly string[], options: RunCliOptions): Promise<number> {
  const io: Io = {
    args,
    out: options.stdout ?? ((text) => writeAll(Deno.stdout, text)),
    err: options.stderr ?? ((text) => writeAll(Deno.stderr, text)),
    main: options.main ?? "main.ts",
    now: options.now ?? Date.now,
    version: options.version,
  };
  let command: CliCommand;
  try {
    command = parseCliArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`${error.message}\n\n${USAGE_SYNOPSIS}--help describes every command and option.\n`);
    return EXIT_USAGE;
  }
  switch (command.command) {
    case "help":
      io.out(`mtlb ${io.version}: a layer-4 load balancer for mutual TLS clients\n\n${USAGE}`);
      return EXIT_OK;
    case "version":
      io.out(`mtlb ${io.version}\n`);
      return EXIT_OK;
    case "permissions":
      return await permissionsCommand(command.config, io);
    case "check":
      return await checkCommand(command.config, io);
    case "certs":
      return await certsCommand(command, io);
    case "serve": {
      if (options.signal !== undefined) {
        return await serve(command, io, { signal: options.signal, force: undefined });
      }
      using stop = stopOnSignals();
      using hangup = reloadOnHangup();
      return await serve(command, io, stop, hangup.target);
    }
  }
}

interface Io {
  /** The arguments as given, for hints that repeat the command. */
  args: readonly string[];
  out(text: string): void;
  err(text: string): void;
  main: string;
  now(): number;
  version: string;
}

const encoder = new TextEncoder();

function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  for (let at = 0; at < bytes.length;) at += stream.writeSync(bytes.subarray(at));
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** How `serve` is told to stop: `signal` drains; `force`, when given, closes at once. */
interface StopSignals {
  signal: AbortSignal;
  force: AbortSignal | undefined;
}

/**
 * Stop signals arriving within this long of the first are one request: Ctrl-C under
 * `deno task` reaches the balancer twice (from the terminal, and forwarded by the
 * task runner), which must not skip the drain.
 */
const SAME_STOP_MS = 500;

/**
 * The first SIGINT or SIGTERM aborts `signal` (drain); the next one more than
 * {@linkcode SAME_STOP_MS} later aborts `force` (close now); later ones are ignored.
 */
function stopOnSignals(): StopSignals & Disposable {
  const drain = new AbortController();
  const force = new AbortController();
  let first = 0;
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((name) => {
    const handler = (): void => {
      if (!drain.signal.aborted) {
        first = performance.now();
        drain.abort(name);
      } else if (performance.now() - first < SAME_STOP_MS) {
        log.debug("Already draining; {name} came with the first stop signal", { name });
      } else if (!force.signal.aborted) force.abort(name);
      else log.debug("Already stopping; received {name}", { name });
    };
    Deno.addSignalListener(name, handler);
    return [name, handler] as const;
  });
  return {
    signal: drain.signal,
    force: force.signal,
    [Symbol.dispose]() {
      for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}

/** `target` dispatches `"reload"` on each SIGHUP until disposed (never on Windows). */
function reloadOnHangup(): { target: EventTarget } & Disposable {
  const target = new EventTarget();
  if (Deno.build.os === "windows") return { target, [Symbol.dispose]() {} };
  const handler = (): void => void target.dispatchEvent(new Event("reload"));
  Deno.addSignalListener("SIGHUP", handler);
  return { target, [Symbol.dispose]: () => Deno.removeSignalListener("SIGHUP", handler) };
}

/**
 * Reads a configuration for a reload with the checks `serve` makes at start: the
 * permissions it needs are held, its certificates and admin token read and no
 * certificate has expired.
 */
async function loadForReload(
  path: string,
  io: Io,
): Promise<LoadedConfig & { adminToken: string | undefined }> {
  const config = await loadConfig(path);
  const needs = permissionNeeds(config);
  const missing = checkPermissions(needs).missing;
  if (missing.net.length > 0 || missing.read.length > 0) {
    throw new ConfigError(
      `Deno lacks permissions this config needs: ${
        permissionFlags(missing).join(" ")
      }; restart with exactly the permissions it needs: ${
        formatRunCommand(needs, { main: io.main, args: ["--config", resolve(path)] })
      }`,
      { path: config.path },
    );
  }
  const tls = await loadTlsMaterial(config);
  const adminToken = await loadAdminToken(config);
  const expired = checkCertificateDates(tls.certificates, io.now())
    .filter((f) => f.level === "error");
  if (expired.length > 0) {
    throw new ConfigError(expired.map((f) => f.message).join("; "), { path: config.path });
  }
  return { config, tls, adminToken };
}

/**
 * Loads the config, making sure first that the file may be read, so Deno never
 * prompts. Returns an exit code instead of a config when it cannot.
 */
async function readConfig(path: string, io: Io, args: string[]): Promise<Config | number> {
  const file = resolve(path);
  if (checkPermissions({ net: [], read: [file] }).missing.read.length > 0) {
    io.err(
      `Cannot read the config: Deno has no read permission for ${
        JSON.stringify(path)
      }; grant it to learn what else the config needs:\n  ${
        formatRunCommand({ net: [], read: [file] }, {
          main: io.main,
          args: ["permissions", ...args],
        })
      }\n`,
    );
    return EXIT_USAGE;
  }
  try {
    return await loadConfig(path);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    if (error.cause instanceof Deno.errors.NotFound) {
      const given = io.args.some((arg) => /^(?:-c|--config)(?:=|$)/.test(arg));
      io.err(
        `Cannot load config: ${file}: no such file (${
          given
            ? `--config ${JSON.stringify(path)}`
            : `the default, ${DEFAULT_CONFIG}, as no --config was given`
        }${isAbsolute(path) ? "" : `; relative to the working directory ${Deno.cwd()}`})\n`,
      );
      return EXIT_USAGE;
    }
    io.err(`${error.message}\n`);
    return EXIT_USAGE;
  }
}

async function readTls(config: Config, io: Io): Promise<TlsMaterial | number> {
  try {
    return await loadTlsMaterial(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err(`${error.message}\n`);
    return EXIT_USAGE;
  }
}

async function readAdminToken(config: Config, io: Io): Promise<string | undefined | number> {
  try {
    return await loadAdminToken(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err(`${error.message}\n`);
    return EXIT_USAGE;
  }
}

async function permissionsCommand(path: string, io: Io): Promise<number> {
  const args = ["--config", resolve(path)];
  const config = await readConfig(path, io, args);
  if (typeof config === "number") return config;
  io.out(`${formatRunCommand(permissionNeeds(config), { main: io.main, args })}\n`);
  return EXIT_OK;
}

async function checkCommand(path: string, io: Io): Promise<number> {
  const config = await readConfig(path, io, ["--config", resolve(path)]);
  if (typeof config === "number") return config;
  // `check` reads the config and its certificates, and starts no worker.
  const needs = permissionNeeds(config, { workers: 1 });
  const missing = checkPermissions({ net: [], read: needs.read }).missing.read;
  if (missing.length > 0) {
    io.err(
      `Cannot check the certificates: Deno has no read permission for ${
        missing.join(", ")
      }; run:\n  ${
        formatRunCommand({ net: [], read: needs.read }, {
          main: io.main,
          args: ["check", "--config", resolve(path)],
        })
      }\n`,
    );
    return EXIT_USAGE;
  }
  const tls = await readTls(config, io);
  if (typeof tls === "number") return tls;
  const token = await readAdminToken(config, io);
  if (typeof token === "number") return token;
  io.out(summarize(config, tls, io.now()));
  let code = EXIT_OK;
  for (const finding of checkCertificateDates(tls.certificates, io.now())) {
    io.err(`${finding.level === "error" ? "Error" : "Warning"}: ${finding.message}\n`);
    if (finding.level === "error") code = EXIT_USAGE;
  }
  const exposed = exposedAdmin(config);
  if (exposed !== undefined) io.err(`Warning: ${exposed}\n`);
  const uncovered = sniCoverageWarning(config, tls);
  if (uncovered !== undefined) io.err(`Warning: ${uncovered}\n`);
  for (const warning of checkIssuerPins(config, tls.authorities ?? [])) {
    io.err(`Warning: ${warning}\n`);
  }
  return code;
}

/**
 * A warning when `[admin] listen` is not a loopback address and no token is asked
 * for: anyone who reaches it reads client names and addresses.
 */
function exposedAdmin(config: Config): string | undefined {
  const { listen, tokenFile, allowReload } = config.admin;
  if (listen === undefined || tokenFile !== undefined) return undefined;
  if (isLoopbackHost(parseHostPort(listen).hostname)) return undefined;
  return `"admin.listen" ${
    JSON.stringify(listen)
  } is not a loopback address and "admin.token_file" is not set: anyone who can reach it can read the status (client names and addresses)${
    allowReload ? " and reload the config" : ""
  }; set [admin] token_file or listen on 127.0.0.1`;
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}

/** The human summary `check` prints. */
function summarize(config: Config, tls: TlsMaterial, now: number): string {
  const lines: string[] = [`Config ${config.path} is valid.`, "", "Listeners:"];
  if (config.server.listen !== undefined) {
    lines.push(
      `  ${config.server.listen}  shared: group by SNI, else ALPN, else the client's only group`,
    );
  }
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) lines.push(`  ${group.listen}  group ${group.name}`);
  }
  const { admin } = config;
  if (admin.listen !== undefined) {
    lines.push(`  ${admin.listen}  admin${admin.allowReload ? " (reload allowed)" : ""}`);
    lines.push(
      "",
      "Admin:",
      `  hosts: IP addresses, localhost${
        admin.hosts.length === 0 ? " (no other names)" : `, ${admin.hosts.join(", ")}`
      }`,
      `  token: ${
        admin.tokenFile === undefined
          ? "none (anyone who can reach it can read the status)"
          : `required but for /healthz, from ${admin.tokenFile}`
      }`,
    );
  }
  lines.push("", "Groups:");
  for (const group of config.groups.values()) {
    const h = group.health;
    const probe = h.send === undefined && h.expect === undefined ? "TCP connect" : [
      h.send === undefined ? "" : `send ${JSON.stringify(h.send)}`,
      h.expect === undefined ? "" : `expect ${JSON.stringify(h.expect)}`,
    ].filter((s) => s !== "").join(", ");
    lines.push(`  ${group.name}${group.proxyProtocol === undefined ? "" : " (PROXY v2)"}`);
    for (const upstream of group.upstreams) {
      lines.push(`    ${upstream.address}  weight ${upstream.weight}`);
    }
    const o = group.outlier;
    lines.push(
      `    health: ${probe} every ${formatDuration(h.interval)}, timeout ${
        formatDuration(h.timeout)
      }, rise ${h.rise}, fall ${h.fall}`,
      `    outlier: ${
        o.consecutiveFailures === 0
          ? "no ejection"
          : `eject after ${o.consecutiveFailures} consecutive failures for ${
            formatDuration(o.baseEjectionTime)
          } x ejections (at most ${
            formatDuration(o.maxEjectionTime)
          }), at most ${o.maxEjectedPercent}% of the group`
      }; panic below ${o.panicThreshold}% available`,
    );
  }
  lines.push("", "Clients:");
  if (config.clients.size === 0) lines.push("  (none: every connection will be refused)");
  const matchKeys: Record<string, string> = {
    spkiSha256: "spki_sha256",
    serial: "serial",
    cn: "cn",
    sanUri: "san_uri",
    sanDns: "san_dns",
    issuer: "issuer",
  };
  const rate = (r: { count: number; per: number } | undefined): string =>
    r === undefined ? "no rate limit" : `at most ${r.count} new per ${formatDuration(r.per)}`;
  for (const client of config.clients.values()) {
    const match = Object.entries(matchKeys)
      .filter(([field]) => client.match[field as keyof typeof client.match] !== undefined)
      .map(([field, key]) =>
        `${key}=${JSON.stringify(client.match[field as keyof typeof client.match])}`
      )
      .join(", ");
    const limits = [
      client.maxConnections === undefined ? "" : `${client.maxConnections} concurrent`,
      client.connectionRate === undefined ? "" : rate(client.connectionRate),
    ].filter((s) => s !== "");
    lines.push(
      `  ${client.name}: match ${match} -> ${client.groups.join(", ")}${
        limits.length === 0 ? "" : ` (${limits.join(", ")})`
      }`,
    );
  }
  const { limits, server } = config;
  const fds = readFileDescriptorLimit();
  const caps = connectionCaps(server, fds);
  lines.push(
    "",
    `Limits: ${limits.maxConnectionsPerClient} concurrent per client, ${
      rate(limits.connectionRate)
    }`,
    `Server: ${caps.maxConnections} connections at most${
      server.maxConnections === undefined
        ? ` (max_connections from the open-files limit, ${
          fds ?? `not readable without --allow-all: ${ASSUMED_FILE_DESCRIPTORS} assumed`
        })`
        : ""
    }, ${caps.maxHandshakes} handshakes in flight at most${
      server.maxHandshakes === undefined ? " (max_handshakes: max_connections, 4096 at most)" : ""
    }`,
    `Timeouts: handshake ${formatDuration(server.handshakeTimeout)}, connect ${
      formatDuration(server.connectTimeout)
    } (${server.connectRetries} ${server.connectRetries === 1 ? "retry" : "retries"}), idle ${
      formatDuration(server.idleTimeout)
    }, drain ${formatDuration(server.drainTimeout)}`,
    `TLS: 1.3 only, ${config.tls.ciphers.join(", ")}${
      tls.crl === undefined ? "" : `, with CRL (crl_missing = "${config.tls.crlMissing}")`
    }; client_eku = "${config.tls.clientEku}"`,
  );
  for (const crl of tls.crls ?? []) {
    lines.push(
      `CRL: ${crl.issuer}, ${crl.revoked} revoked, issued ${crl.thisUpdate.toISOString()}, ${
        crl.nextUpdate === undefined
          ? "no nextUpdate"
          : `next update due ${crl.nextUpdate.toISOString()}`
      }`,
    );
  }
  if (config.server.watch) {
    lines.push("Reload: on SIGHUP and when the config or [tls] files change");
  }
  lines.push(`CAs of tls.ca (match.issuer = a CA's spki_sha256 pins a client to it):`);
  for (const ca of tls.authorities ?? []) {
    const role = ca.selfSigned
      ? "root"
      : ca.signedBy === undefined
      ? "intermediate, its issuer not in the bundle"
      : `intermediate of ${oneLine(ca.signedBy.subject)}`;
    lines.push(
      `  ${oneLine(ca.subject)}  spki_sha256 = "${ca.spkiSha256}"  (${role}${
        ca.issuesCertificates ? "" : ", may not issue certificates"
      })`,
    );
  }
  lines.push("Certificates:");
  for (const cert of tls.certificates) {
    const days = Math.floor((cert.notAfter.getTime() - now) / DAY_MS);
    lines.push(
      `  ${cert.key}  ${oneLine(cert.subject)}  valid until ${cert.notAfter.toISOString()} (${
        days < 0 ? "expired" : `${days} days left`
      })`,
    );
  }
  return `${lines.join("\n")}\n`;
}

async function certsCommand(
  command: Extract<CliCommand, { command: "certs" }>,
  io: Io,
): Promise<number> {
  const dir = resolve(command.dir);
  const configFile = resolve(command.config ?? DEFAULT_CONFIG);
  const granted = (name: "read" | "write", path: string): boolean =>
    Deno.permissions.querySync({ name, path }).state === "granted";
  const configReadable = granted("read", configFile);
  if (
    !granted("write", dir) || !granted("read", dir) ||
    (command.config !== undefined && !configReadable)
  ) {
    const flags = permissionFlags({ net: [], read: [dir, configFile] });
    io.err(
      `Cannot write the PKI: Deno needs read and write permission for ${
        JSON.stringify(command.dir)
      }${
        command.config === undefined
          ? ""
          : ` and read permission for ${JSON.stringify(command.config)}`
      }; run:\n  ${
        ["deno", "run", ...flags, `--allow-write=${dir}`, io.main, ...io.args].map(shellQuote)
          .join(" ")
      }\n`,
    );
    return EXIT_USAGE;
  }

  // The server certificate's names: the defaults, the groups clients choose by SNI,
  // and the names given.
  let config: Config | undefined;
  if (command.config !== undefined) {
    const loaded = await readConfig(command.config, io, ["--config", configFile]);
    if (typeof loaded === "number") return loaded;
    config = loaded;
  } else if (configReadable && await exists(configFile)) {
    try {
      config = await loadConfig(configFile);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      io.err(`Warning: the server certificate does not name its groups: ${error.message}\n`);
    }
  }
  const groups = config === undefined ? [] : sniGroupNames(config);
  const serverNames = [
    ...new Set([...DEFAULT_SERVER_NAMES, ...groups, ...command.serverNames]),
  ];

  const pkiExists = await exists(join(dir, "ca.crt")) || await exists(join(dir, "ca.key"));
  if (!command.force && pkiExists) {
    return await addToPki(command, io, { dir, serverNames, groups, config });
  }
  if (command.config === undefined && !configReadable) {
    io.err(
      `Note: ${DEFAULT_CONFIG} was not read (no read permission), so the server certificate names no group for SNI; grant --allow-read=${configFile} or pass --server-name NAME\n`,
    );
  }
  let summary;
  try {
    summary = await writeDevPki(command.dir, {
      clients: command.clients ?? DEFAULT_CLIENTS,
      overwrite: command.force,
      serverNames,
    });
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      io.err(
        `${
          errorText(error).replace(/, pass overwrite to replace it$/, "")
        }: refusing to overwrite; pass --force to replace the whole PKI\n`,
      );
      return EXIT_USAGE;
    }
    if (error instanceof TypeError) {
      io.err(`${errorText(error)}\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
  const lines = [
    `Wrote a development PKI to ${summary.dir} (ECDSA P-256; for development only):`,
    `  ${summary.caCert}, ${summary.caKey}  the CA: [tls] ca, and the clients' trust anchor`,
    `  ${summary.serverCert}, ${summary.serverKey}  the server: [tls] cert and key, for ${
      summary.serverNames.join(", ")
    }${serverNamesSource(config, groups)}`,
  ];
  for (const client of summary.clients) {
    lines.push(`  ${client.cert}, ${client.key}  client ${client.name} (clientAuth)`);
  }
  lines.push(
    `  ${summary.intruderCert}, ${summary.intruderKey}  client "intruder" of an untrusted CA (${summary.foreignCaCert}): refused`,
  );
  io.out(`${[...lines, ...policySnippets(summary.clients)].join("\n")}\n`);
  return EXIT_OK;
}

/** Adds clients (and a missing server certificate) to the PKI in `dir`, signed by its CA. */
async function addToPki(
  command: Extract<CliCommand, { command: "certs" }>,
  io: Io,
  { dir, serverNames, groups, config }: {
    dir: string;
    serverNames: string[];
    groups: string[];
    config: Config | undefined;
  },
): Promise<number> {
  const where = JSON.stringify(command.dir);
  const serverExists = await exists(join(dir, "server.crt")) ||
    await exists(join(dir, "server.key"));
  if (serverExists && command.serverNames.length > 0) {
    io.err(
      `Cannot add to the development PKI in ${where}: ${
        JSON.stringify(join(command.dir, "server.crt"))
      } exists, and --server-name asks for a new server certificate; remove server.crt and server.key to issue one signed by the same CA, or pass --force to replace the whole PKI\n`,
    );
    return EXIT_USAGE;
  }
  const clients = command.clients ?? [];
  if (clients.length === 0 && serverExists) {
    io.err(
      `Cannot write the PKI: ${where} already holds a development PKI; add clients to it with --client NAME (signed by its CA, existing files kept), or pass --force to replace the whole PKI\n`,
    );
    return EXIT_USAGE;
  }
  let added;
  try {
    added = await extendDevPki(command.dir, {
      clients,
      ...(serverExists ? {} : { serverNames }),
    });
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      io.err(
        `${
          errorText(error)
        }: refusing to overwrite; name other clients, or pass --force to replace the whole PKI\n`,
      );
      return EXIT_USAGE;
    }
    if (error instanceof Deno.errors.NotFound || error instanceof TypeError) {
      io.err(`${errorText(error)}\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
  const lines = [
    `Added to the development PKI in ${added.dir}, signed by its CA (${added.caCert}); existing files kept:`,
  ];
  if (added.server !== undefined) {
    lines.push(
      `  ${added.server.cert}, ${added.server.key}  the server: [tls] cert and key, for ${
        added.server.names.join(", ")
      }${serverNamesSource(config, groups)}`,
    );
  }
  for (const client of added.clients) {
    lines.push(`  ${client.cert}, ${client.key}  client ${client.name} (clientAuth)`);
  }
  io.out(`${[...lines, ...policySnippets(added.clients)].join("\n")}\n`);
  return EXIT_OK;
}

function serverNamesSource(config: Config | undefined, groups: readonly string[]): string {
  return config === undefined || groups.length === 0
    ? ""
    : ` (groups ${groups.join(", ")} from ${config.path}, for SNI)`;
}

function policySnippets(clients: readonly DevPkiClient[]): string[] {
  if (clients.length === 0) return [];
  const lines = ["", "Policy entries (spki_sha256 pins the key; `cn` or `serial` also work):"];
  for (const client of clients) {
    lines.push(
      "",
      `[clients.${client.name}]`,
      `match = { spki_sha256 = "${client.spkiSha256}" }`,
      `groups = []  # the groups ${client.name} may use`,
    );
  }
  return lines;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function serve(
  command: Extract<CliCommand, { command: "serve" }>,
  io: Io,
  stop: StopSignals,
  hangup?: EventTarget,
): Promise<number> {
  try {
    assertSupportedRuntime();
  } catch (error) {
    io.err(`${errorText(error)}\n`);
    return EXIT_FAILURE;
  }
  const args = ["--config", resolve(command.config)];
  const config = await readConfig(command.config, io, args);
  if (typeof config === "number") return config;
  // Checked before the certificates are read, so that Deno never prompts.
  const needs = permissionNeeds(config);
  const report = checkPermissions(needs);
  const missing = [...report.missing.net, ...report.missing.read, ...report.missing.env ?? []];
  if (missing.length > 0) {
    io.err(
      `Cannot start: Deno lacks permissions this config needs: ${
        permissionFlags(report.missing).join(" ")
      }\nRun it with exactly the permissions it needs:\n  ${
        formatRunCommand(needs, { main: io.main, args })
      }\n`,
    );
    return EXIT_USAGE;
  }
  const tls = await readTls(config, io);
  if (typeof tls === "number") return tls;
  const adminToken = await readAdminToken(config, io);
  if (typeof adminToken === "number") return adminToken;
  const findings = checkCertificateDates(tls.certificates, io.now());
  const expired = findings.filter((f) => f.level === "error");
  if (expired.length > 0) {
    io.err(`Cannot start: ${expired.map((f) => f.message).join("; ")}\n`);
    return EXIT_USAGE;
  }

  await using _logging = await configureLogging({
    format: command.logFormat ?? config.log.format,
    level: command.logLevel,
  });
  for (const finding of findings) log.warn(finding.message);
  // The admin token read with each config: a reload that cannot read it fails as a
  // whole, so the token and the config it belongs to change together.
  const adminTokens = new WeakMap<Config, string | undefined>([[config, adminToken]]);
  const load = async (path: string): Promise<LoadedConfig> => {
    const loaded = await loadForReload(path, io);
    adminTokens.set(loaded.config, loaded.adminToken);
    return loaded;
  };
  for (const warning of checkIssuerPins(config, tls.authorities ?? [])) log.warn(warning);
  const uncovered = sniCoverageWarning(config, tls);
  if (uncovered !== undefined) log.warn(`${uncovered[0]!.toUpperCase()}${uncovered.slice(1)}`);
  if (report.broader.length > 0) {
    log.warn("Permissions broader than this config needs: {broader}; narrow them with: {run}", {
      broader: report.broader.join(", "),
      run: formatRunCommand(needs, { main: io.main, args }),
    });
  }

  // A fleet shares limits and upstream counts through [cluster] store (Redis).
  await using cluster = config.cluster === undefined
    ? undefined
    : await connectCluster(config.cluster);
  const workers = workerCount(config);
  if (cluster !== undefined && (config.server.workers ?? 1) > 1) {
    log.warn(
      "[server] workers = {workers} is not supported with [cluster] yet: running one event loop; run one process per core instead",
      { workers: config.server.workers },
    );
  }
  // Every address must be this process's alone: workers share theirs with
  // SO_REUSEPORT, which another process of the same user could join.
  try {
    assertAddressesFree(listenAddresses(config));
  } catch (error) {
    log.error("Cannot start: {reason}", { reason: bindFailure(error) });
    return EXIT_FAILURE;
  }
  const balancer = workers > 1
    ? workerBalancer(command, { config, tls, workers, load })
    : new Balancer({
      config,
      tls,
      load,
      ...(cluster === undefined
        ? {}
        : { limiterStore: cluster.limiterStore, upstreamCounts: cluster.upstreamCounts }),
    });
  try {
    await balancer.start();
  } catch (error) {
    log.error("Cannot start: {reason}", { reason: bindFailure(error) });
    return EXIT_FAILURE;
  }
  let admin: AdminServer | undefined;
  if (config.admin.listen !== undefined) {
    try {
      admin = AdminServer.start(balancer, {
        listen: config.admin.listen,
        allowReload: () => balancer.config.admin.allowReload,
        hosts: () => balancer.config.admin.hosts,
        token: () => {
          const running = balancer.config;
          if (!adminTokens.has(running)) {
            // Never answer without the token a config asks for.
            throw new Error("No admin token was read with the running configuration");
          }
          return adminTokens.get(running);
        },
      });
    } catch (error) {
      log.error("Cannot start the admin endpoint on {address}: {reason}", {
        address: config.admin.listen,
        reason: bindFailure(error),
      });
      await balancer.close();
      return EXIT_FAILURE;
    }
  }
  // Reload triggers; a failed reload is logged and counted by the balancer.
  const reload = (): void => void balancer.reload().catch(() => {});
  const onHangup = (): void => {
    log.info("Reloading on SIGHUP");
    reload();
  };
  hangup?.addEventListener("reload", onHangup);
  let watcher: FileWatcher | undefined;
  if (config.server.watch) {
    watcher = new FileWatcher(
      () => watchedFiles(balancer.config),
      () => balancer.reload().catch(() => {}),
    );
    watcher.start();
  }

  if (!stop.signal.aborted) {
    log.info("mtlb {version} started: listening on {addresses}", {
      version: io.version,
      addresses: balancer.listeners().map((l) => formatHostPort(l.address)),
      config: config.path,
      ...(admin === undefined ? {} : { admin: formatHostPort(admin.address) }),
    });
    await new Promise<void>((resolve) =>
      stop.signal.addEventListener("abort", () => resolve(), { once: true })
    );
  }
  hangup?.removeEventListener("reload", onHangup);
  await watcher?.close();
  const timeout = balancer.config.server.drainTimeout;
  log.info("Stopping on {signal}: draining for up to {timeout}", {
    signal: String(stop.signal.reason),
    timeout: formatDuration(timeout),
  });
  const onForce = (): void => {
    log.warn("Closing every connection now on {signal}", { signal: String(stop.force?.reason) });
    void balancer.close();
  };
  stop.force?.addEventListener("abort", onForce, { once: true });
  const drained = await balancer.drain(timeout);
  stop.force?.removeEventListener("abort", onForce);
  await admin?.close();
  log.info("Stopped", { forced: drained.forced, durationMs: drained.durationMs });
  return EXIT_OK;
}

/**
 * More than one worker: the balancer on every core. This thread probes health and
 * serves the admin endpoint; the workers log as this thread does.
 */
function workerBalancer(
  command: Extract<CliCommand, { command: "serve" }>,
  { config, tls, workers, load }: LoadedConfig & {
    workers: number;
    load: (path: string) => Promise<LoadedConfig>;
  },
): WorkerBalancer {
  return new WorkerBalancer({
    config,
    tls,
    workers,
    load,
    logging: { format: command.logFormat ?? config.log.format, level: command.logLevel },
  });
}

/** The files a reload reads: what `watch = true` watches. */
function watchedFiles(config: Config): string[] {
  const { tls, admin } = config;
  return [
    config.path,
    tls.ca,
    tls.cert,
    tls.key,
    ...(tls.crl === undefined ? [] : [tls.crl]),
    ...(admin.tokenFile === undefined ? [] : [admin.tokenFile]),
  ];
}

/** A sentence for a listener that could not bind. */
/** Every address a config listens on: the shared listener, the groups' own, the admin endpoint. */
function listenAddresses(config: Config): string[] {
  const addresses: string[] = [];
  if (config.server.listen !== undefined) addresses.push(config.server.listen);
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) addresses.push(group.listen);
  }
  if (config.admin.listen !== undefined) addresses.push(config.admin.listen);
  return addresses;
}

function bindFailure(error: unknown): string {
  if (error instanceof AddressInUseError) {
    return `address ${error.address} already in use by another process`;
  }
  const code = (error as { code?: unknown } | null)?.code;
  const address = error as { address?: unknown; port?: unknown } | null;
  const where = typeof address?.address === "string" && typeof address.port === "number"
    ? ` ${formatHostPort({ hostname: address.address, port: address.port } as HostPort)}`
    : "";
  if (code === "EADDRINUSE") return `address${where} already in use by another process`;
  if (code === "EACCES") {
    return `permission denied to listen on${where} (ports below 1024 need privileges)`;
  }
  if (code === "EADDRNOTAVAIL") return `address${where} is not an address of this machine`;
  if (error instanceof Deno.errors.NotCapable) {
    return `${errorText(error)} (listeners on host names resolve to addresses Deno must allow)`;
  }
  return errorText(error);
}
