/**
 * Reading a config and what it names (certificates, admin token) for a command,
 * with the message and exit code the operator gets when that fails.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import {
  type Config,
  ConfigError,
  loadAdminToken,
  loadConfig,
  loadTlsMaterial,
  type TlsMaterial,
} from "../config/mod.ts";
import { checkPermissions, formatRunCommand } from "../control/permissions.ts";
import { DEFAULT_CONFIG } from "./args.ts";
import { EXIT_USAGE } from "./exit_codes.ts";
import type { Io } from "./_io.ts";

/**
 * Loads the config, making sure first that the file may be read, so Deno never
 * prompts. Returns an exit code instead of a config when it cannot.
 */
export async function readConfig(path: string, io: Io, args: string[]): Promise<Config | number> {
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

/** Reads the CA, certificate, key and CRL; on a bad one, says why and returns the exit code. */
export async function readTls(config: Config, io: Io): Promise<TlsMaterial | number> {
  try {
    return await loadTlsMaterial(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err(`${error.message}\n`);
    return EXIT_USAGE;
  }
}

/** Reads the admin token file, if any; when it cannot, says why and returns the exit code. */
export async function readAdminToken(config: Config, io: Io): Promise<string | undefined | number> {
  try {
    return await loadAdminToken(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err(`${error.message}\n`);
    return EXIT_USAGE;
  }
}
