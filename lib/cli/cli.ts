/**
 * The mtlb command line: {@linkcode runCli} parses the arguments and runs the
 * `serve`, `check`, `permissions` or `certs` command, returning an exit code
 * (see `exit_codes.ts`). `main.ts` only calls {@linkcode runCli}.
 *
 * @module
 */
import { type CliCommand, parseCliArgs, USAGE, USAGE_SYNOPSIS, UsageError } from "./args.ts";
import { EXIT_OK, EXIT_USAGE } from "./exit_codes.ts";
import { reloadOnHangup, stopOnSignals } from "./signals.ts";
import type { Io } from "./_io.ts";

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
 * import { runCli } from "./cli.ts";
 * import { EXIT_USAGE } from "./exit_codes.ts";
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
 * @returns The exit code: {@linkcode EXIT_OK}, `EXIT_FAILURE` (the balancer could not run) or
 *   {@linkcode EXIT_USAGE}, from `exit_codes.ts`.
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
  // Each command loads only what it uses (serving loads no certificate authority code,
  // and no Redis client without [cluster]): less to parse, and a smaller heap for the
  // garbage collector to mark while serving.
  switch (command.command) {
    case "help":
      io.out(`mtlb ${io.version}: a layer-4 load balancer for mutual TLS clients\n\n${USAGE}`);
      return EXIT_OK;
    case "version":
      io.out(`mtlb ${io.version}\n`);
      return EXIT_OK;
    case "permissions":
      return await (await import("./permissions.ts")).permissionsCommand(command.config, io);
    case "check":
      return await (await import("./check.ts")).checkCommand(command.config, io);
    case "certs":
      return await (await import("./certs.ts")).certsCommand(command, io);
    case "clients":
      return await (await import("./clients.ts")).clientsCommand(command, io);
    case "serve": {
      const { serveCommand } = await import("./serve.ts");
      if (options.signal !== undefined) {
        return await serveCommand(command, io, { signal: options.signal, force: undefined });
      }
      using stop = stopOnSignals();
      using hangup = reloadOnHangup();
      return await serveCommand(command, io, stop, hangup.target);
    }
  }
}

const encoder = new TextEncoder();

function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  for (let at = 0; at < bytes.length;) at += stream.writeSync(bytes.subarray(at));
}
