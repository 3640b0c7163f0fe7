/**
 * The `[clients]` table of a config file as a document of its own: what
 * `main.ts clients push` publishes to a fleet's store, and how an instance reads it
 * back over its own file. Both go through {@linkcode parseConfig}, so a client policy
 * is validated exactly as the file's own `[clients]` would be (every key of a client,
 * the groups it names, clients that cannot be told apart), whatever keys a client
 * may take.
 *
 * @module
 */
import { isDeepStrictEqual } from "node:util";
import { stringify } from "smol-toml";
import { ConfigError } from "./config_error.ts";
import { parseConfig, type ParseConfigOptions, readToml } from "./parse.ts";
import type { Config } from "./types.ts";

/**
 * The client policy a balancer serves when a fleet shares it (`[cluster] clients =
 * "shared"`): where it comes from, its version, and how the store is doing.
 */
export interface ClientPolicyStatus {
  /** `"store"` once a stored version is in force; `"file"` while the file's `[clients]` is. */
  source: "store" | "file";
  /** The version in force (absent while the file's `[clients]` is). */
  version?: number;
  /** The SHA-256 of the policy document in force, hex. */
  sha256?: string;
  /** When the version in force was pushed, ISO 8601. */
  pushedAt?: string;
  /** When this instance applied it, ISO 8601. */
  appliedAt?: string;
  /** The latest version seen in the store, when it differs from the one in force. */
  storeVersion?: number;
  /** Whether the latest exchange with the store succeeded. */
  storeReachable: boolean;
  /** Failed reads of the store since start. */
  storeErrors: number;
  /** Stored versions this instance could not apply, since start. */
  refused: number;
  /** Why the latest read or apply failed, while it is the latest news. */
  lastError?: string;
}

/**
 * The `[clients]` table of a config file, validated against the file's groups as
 * {@linkcode parseConfig} validates it, as a TOML document that holds only that
 * table. Reading the document back over the same file
 * ({@linkcode parseConfigWithClients}) gives the same clients: this is checked.
 *
 * @example Usage
 * ```ts
 * import { clientPolicyDocument, parseConfigWithClients } from "./client_policy.ts";
 * import assert from "node:assert/strict";
 *
 * const file = `[tls]
 * ca = "ca.crt"
 * cert = "server.crt"
 * key = "server.key"
 * [groups.echo]
 * upstreams = ["127.0.0.1:7001"]
 * listen = "127.0.0.1:8443"
 * [clients.alice]
 * match = { cn = "alice" }
 * groups = ["echo"]
 * `;
 * const document = clientPolicyDocument(file, { path: "/etc/mtlb/lb.toml" });
 * assert.match(document, /^\[clients\.alice\]/);
 * const config = parseConfigWithClients(file, document, {
 *   path: "/etc/mtlb/lb.toml",
 *   policy: "client policy 1",
 * });
 * assert.deepEqual([...config.clients.keys()], ["alice"]);
 * ```
 *
 * @param text The config file's text.
 * @param options Its name (for errors) and the folder its paths resolve against.
 * @returns The `[clients]` table as TOML (`[clients]` alone when the file has none).
 * @throws {ConfigError} When the file is not a valid configuration.
 */
export function clientPolicyDocument(text: string, options: ParseConfigOptions): string {
  const config = parseConfig(text, options);
  const doc = readToml(text, options.path);
  const clients = doc.clients ?? {};
  const document = stringify({ clients });
  const again = parseConfigWithClients(text, document, { ...options, policy: options.path });
  if (!isDeepStrictEqual(again.clients, config.clients)) {
    // A value whose TOML form does not survive a round trip (a float written as an integer).
    throw new ConfigError("[clients] does not read back the same once written as a document", {
      path: options.path,
      key: "clients",
    });
  }
  return document;
}

/** Options of {@linkcode parseConfigWithClients}. */
export interface ParseConfigWithClientsOptions extends ParseConfigOptions {
  /**
   * What the client policy is called in errors, such as `"client policy 7"`: a
   * problem of a client is reported there, with the line in the document.
   */
  policy: string;
}

/**
 * Reads a config file with its `[clients]` table replaced by a client policy
 * document (see {@linkcode clientPolicyDocument}): everything else (groups, limits,
 * listeners, TLS) comes from the file, and the policy is validated against it as the
 * file's own `[clients]` would be.
 *
 * @param text The config file's text.
 * @param document The client policy: a TOML document holding only `[clients]`.
 * @param options The file's name, its folder, and the policy's name for errors.
 * @returns The configuration in force with that policy.
 * @throws {ConfigError} When the file is not valid, the document holds anything but
 *   `[clients]`, or a client of the policy is not valid with this file's groups.
 */
export function parseConfigWithClients(
  text: string,
  document: string,
  options: ParseConfigWithClientsOptions,
): Config {
  const { policy, ...parseOptions } = options;
  const file = readToml(text, options.path);
  const clients = readToml(document, policy);
  const others = Object.keys(clients).filter((key) => key !== "clients");
  if (others.length > 0) {
    throw new ConfigError(
      `a client policy holds only [clients], received ${others.map((k) => `[${k}]`).join(", ")}`,
      { path: policy, key: others[0]! },
    );
  }
  delete file.clients;
  // The policy first, so that the lines of its problems are its own lines.
  const rest = stringify(file);
  const combined = `${document.replace(/\n*$/, "\n")}\n${rest}`;
  try {
    return { ...parseConfig(combined, parseOptions), path: options.path };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    if (error.problems.some((p) => p.key !== undefined && !/^clients(?:\.|$)/.test(p.key))) {
      // The file itself is not valid: report it as the file would be.
      parseConfig(text, parseOptions);
    }
    const [first, ...more] = error.problems;
    throw new ConfigError(first?.detail ?? error.detail, {
      path: policy,
      ...(first?.key === undefined ? {} : { key: first.key }),
      ...(first?.line === undefined ? {} : { line: first.line }),
      more,
      omitted: error.omitted,
      cause: error,
    });
  }
}
