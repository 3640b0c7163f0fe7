/**
 * `main.ts clients push` and `main.ts clients pull`: the fleet's client policy in
 * the store of `[cluster]`. `push` validates the config's `[clients]` against its
 * groups, as loading the config does, and publishes it as the next version; `pull`
 * prints the version in the store, as TOML an instance would serve.
 *
 * @module
 */
import { resolve } from "node:path";
import {
  clientPolicyDocument,
  type Config,
  ConfigError,
  parseConfigWithClients,
} from "../config/mod.ts";
import { checkPermissions, formatRunCommand } from "../control/permissions.ts";
import { errorMessage } from "../core/errors.ts";
import {
  ClientPolicyPermissionError,
  RedisClientPolicyStore,
} from "../redis/client_policy_store.ts";
import { CLIENT_POLICY_CHECK_MS } from "../redis/client_policy_follower.ts";
import type { CliCommand } from "./args.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./exit_codes.ts";
import type { Io } from "./_io.ts";
import { readConfig } from "./_read_config.ts";

/** The environment variables node-redis reads. */
const REDIS_CLIENT_ENV = ["REDIS_DEBUG_MAINTENANCE", "REDIS_EMIT_DIAGNOSTICS"];

/** How long a command waits for the store to connect, then for each answer. */
const STORE_TIMEOUT_MS = 5000;

/**
 * Runs `clients push` or `clients pull`.
 *
 * @param command The parsed command line.
 * @param io Output and clock.
 * @returns {@linkcode EXIT_OK}; {@linkcode EXIT_USAGE} for a config or permission to
 *   fix; {@linkcode EXIT_FAILURE} when the store does not answer, refuses, or (pull)
 *   holds no policy.
 */
export async function clientsCommand(
  command: Extract<CliCommand, { command: "clients" }>,
  io: Io,
): Promise<number> {
  const verb = command.action === "push" ? "push" : "pull";
  const args = ["--config", resolve(command.config)];
  const config = await readConfig(command.config, io, args);
  if (typeof config === "number") return config;
  if (config.cluster === undefined) {
    io.err(
      `Cannot ${verb} the client policy: ${config.path} has no [cluster] store to ${
        verb === "push" ? "publish it to" : "read it from"
      }\n`,
    );
    return EXIT_USAGE;
  }
  const needs = {
    net: [config.cluster.storeAddress],
    read: [config.path],
    env: REDIS_CLIENT_ENV,
  };
  const missing = checkPermissions(needs).missing;
  if (missing.net.length > 0 || missing.read.length > 0 || (missing.env ?? []).length > 0) {
    io.err(
      `Cannot ${verb} the client policy: Deno lacks the permissions to reach the store; run:\n  ${
        formatRunCommand(needs, { main: io.main, args: ["clients", verb, ...args] })
      }\n`,
    );
    return EXIT_USAGE;
  }
  const text = await Deno.readTextFile(config.path);
  await using store = new RedisClientPolicyStore({
    url: config.cluster.store,
    timeout: STORE_TIMEOUT_MS,
    connectTimeout: STORE_TIMEOUT_MS,
    name: `mtlb-${verb}`,
  });
  return verb === "push"
    ? await push(config, text, store, io)
    : await pull(config, text, store, io);
}

async function push(
  config: Config,
  text: string,
  store: RedisClientPolicyStore,
  io: Io,
): Promise<number> {
  let document: string;
  try {
    document = clientPolicyDocument(text, { path: config.path });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err(`${error.message}\n`);
    return EXIT_USAGE;
  }
  if (!(await store.connect())) {
    io.err(`Cannot push the client policy: the store ${store.url} does not answer\n`);
    return EXIT_FAILURE;
  }
  try {
    const pushed = await store.push(document);
    const what = `${describeClients(config)} (sha256 ${pushed.sha256.slice(0, 16)}...)`;
    io.out(
      pushed.unchanged
        ? `Unchanged: ${store.url} already holds this policy as version ${pushed.version}: ${what}\n`
        : `Pushed client policy version ${pushed.version} to ${store.url}: ${what}\n`,
    );
    if (!pushed.announced) {
      io.err(
        `Warning: the store did not announce version ${pushed.version} (PUBLISH ${store.key} refused): instances apply it at their next check, within ${
          CLIENT_POLICY_CHECK_MS / 1000
        } s\n`,
      );
    }
    return EXIT_OK;
  } catch (error) {
    const reason = error instanceof ClientPolicyPermissionError
      ? error.message
      : `the store ${store.url} failed: ${errorMessage(error)}`;
    io.err(`Cannot push the client policy: ${reason}\n`);
    return EXIT_FAILURE;
  }
}

async function pull(
  config: Config,
  text: string,
  store: RedisClientPolicyStore,
  io: Io,
): Promise<number> {
  if (!(await store.connect())) {
    io.err(`Cannot pull the client policy: the store ${store.url} does not answer\n`);
    return EXIT_FAILURE;
  }
  let stored;
  try {
    stored = await store.read();
  } catch (error) {
    io.err(
      `Cannot pull the client policy: the store ${store.url} failed: ${errorMessage(error)}\n`,
    );
    return EXIT_FAILURE;
  }
  if (stored === undefined) {
    io.err(
      `No client policy in ${store.url} yet: publish one with \`main.ts clients push --config FILE\`\n`,
    );
    return EXIT_FAILURE;
  }
  let summary: string;
  try {
    const served = parseConfigWithClients(text, stored.document, {
      path: config.path,
      policy: `client policy ${stored.version}`,
    });
    summary = describeClients(served);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    summary = "not valid with this config's groups";
    io.err(`Warning: ${config.path} could not serve it: ${error.message}\n`);
  }
  io.out(
    `# Client policy version ${stored.version}, pushed ${stored.pushedAt}, sha256 ${stored.sha256}\n# ${summary}\n${stored.document}`,
  );
  return EXIT_OK;
}

/** `2 clients: alice, bob`. */
function describeClients(config: Config): string {
  const names = [...config.clients.keys()];
  return `${names.length} ${names.length === 1 ? "client" : "clients"}${
    names.length === 0 ? "" : `: ${names.join(", ")}`
  }`;
}
