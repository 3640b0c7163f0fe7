/**
 * The mtlb configuration file: TOML in, a typed and validated {@linkcode Config} out.
 *
 * {@linkcode parseConfig} is pure and synchronous (tests, fuzzing, `check`);
 * {@linkcode loadConfig} reads the file first; {@linkcode loadTlsMaterial} reads and
 * checks the certificates a loaded config names; {@linkcode loadAdminToken} reads the
 * admin endpoint's token; {@linkcode diffConfig} says what a reload changes;
 * {@linkcode configJsonSchema} is the file's JSON Schema, for editors. A file is read
 * against one schema (keys, types, ranges, defaults) and the rules that span tables in
 * the same pass: its problems come in one {@linkcode ConfigError}, each with the key
 * path and, where known, the line.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig(
 *   `[tls]
 * ca = "ca.crt"
 * cert = "server.crt"
 * key = "server.key"
 * [groups.echo]
 * upstreams = ["127.0.0.1:7001"]
 * listen = "127.0.0.1:8443"
 * `,
 *   { path: "/etc/mtlb/lb.toml" },
 * );
 * assert.equal(config.tls.ca, "/etc/mtlb/ca.crt");
 * ```
 *
 * @module
 */
export {
  type AdminConfig,
  type ClientConfig,
  type ClientGroupLimits,
  type ClientMatch,
  type ClusterConfig,
  type Config,
  type DnsUpstreamConfig,
  type GroupConfig,
  type HealthConfig,
  type LimitsConfig,
  type LogConfig,
  type OutlierConfig,
  type ServerConfig,
  type TlsConfig,
  type UpstreamConfig,
  type UpstreamTlsConfig,
} from "./types.ts";
export { ConfigError, type ConfigErrorOptions, type ConfigProblem } from "./config_error.ts";
export { keyPath } from "./_key_lines.ts";
export { configJsonSchema, type ConfigJsonSchemaOptions } from "./json_schema.ts";
export { loadConfig, parseConfig, type ParseConfigOptions } from "./parse.ts";
export { loadTlsMaterial, type TlsCertificateInfo, type TlsMaterial } from "./tls_material.ts";
export {
  clientPolicyDocument,
  parseConfigWithClients,
  type ParseConfigWithClientsOptions,
} from "./client_policy.ts";
export {
  loadUpstreamTlsMaterial,
  type UpstreamCertificateInfo,
  type UpstreamTlsMaterial,
} from "./upstream_tls_material.ts";
export { loadAdminToken } from "./admin_token.ts";
export {
  type ConfigChanges,
  describeChanges,
  diffConfig,
  type NameChanges,
  type TlsFiles,
} from "./diff.ts";
