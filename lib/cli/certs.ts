/**
 * `main.ts certs`: writes a development PKI (CA, server, clients), or adds clients
 * to the one in a folder, and prints the policy entries for the clients.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { type Config, ConfigError, loadConfig } from "../config/mod.ts";
import { permissionFlags, shellQuote } from "../control/permissions.ts";
import { type DevPkiClient, extendDevPki, writeDevPki } from "../pki/dev_pki.ts";
import { type CliCommand, DEFAULT_CLIENTS, DEFAULT_CONFIG, DEFAULT_SERVER_NAMES } from "./args.ts";
import { sniGroupNames } from "./sni_coverage.ts";
import { readConfig } from "./_read_config.ts";
import { EXIT_OK, EXIT_USAGE } from "./exit_codes.ts";
import type { Io } from "./_io.ts";
import { errorMessage } from "../core/errors.ts";

/**
 * Runs `certs`: a new PKI in `command.dir` (or a replacement with `--force`), else
 * the clients named added to the PKI there, signed by its CA. The server
 * certificate names {@linkcode DEFAULT_SERVER_NAMES}, the groups of the config that
 * clients choose by SNI, and the `--server-name`s.
 *
 * @param command The parsed `certs` command line.
 * @param io Output, and the arguments for the command line it prints when Deno
 *   lacks a permission.
 * @returns {@linkcode EXIT_OK}, or {@linkcode EXIT_USAGE} when a permission is
 *   missing, a file would be overwritten or a name is bad.
 */
export async function certsCommand(
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
          errorMessage(error).replace(/, pass overwrite to replace it$/, "")
        }: refusing to overwrite; pass --force to replace the whole PKI\n`,
      );
      return EXIT_USAGE;
    }
    if (error instanceof TypeError) {
      io.err(`${errorMessage(error)}\n`);
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
  io.out(`${[...lines, ...policySnippets(summary.clients, config)].join("\n")}\n`);
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
          errorMessage(error)
        }: refusing to overwrite; name other clients, or pass --force to replace the whole PKI\n`,
      );
      return EXIT_USAGE;
    }
    if (error instanceof Deno.errors.NotFound || error instanceof TypeError) {
      io.err(`${errorMessage(error)}\n`);
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
  io.out(`${[...lines, ...policySnippets(added.clients, config)].join("\n")}\n`);
  return EXIT_OK;
}

function serverNamesSource(config: Config | undefined, groups: readonly string[]): string {
  return config === undefined || groups.length === 0
    ? ""
    : ` (groups ${groups.join(", ")} from ${config.path}, for SNI)`;
}

/**
 * The `[clients.NAME]` entries of new clients: the groups a client has in the config,
 * else an empty list to fill in, with the config's groups to choose from.
 */
function policySnippets(clients: readonly DevPkiClient[], config: Config | undefined): string[] {
  if (clients.length === 0) return [];
  const lines = ["", "Policy entries (spki_sha256 pins the key; `cn` or `serial` also work):"];
  const choices = config === undefined ? "" : `: ${[...config.groups.keys()].join(", ")}`;
  for (const client of clients) {
    const groups = config?.clients.get(client.name)?.groups;
    lines.push(
      "",
      `[clients.${client.name}]`,
      `match = { spki_sha256 = "${client.spkiSha256}" }`,
      groups === undefined
        ? `groups = []  # fill in at least one group ${client.name} may use${choices}`
        : `groups = ${JSON.stringify(groups).replaceAll(",", ", ")}`,
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
