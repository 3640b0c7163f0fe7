/**
 * The Deno versions mtlb can trust with client-certificate verification.
 *
 * Before Deno 2.8, `node:tls` servers ignored `requestCert`, `ca` and
 * `rejectUnauthorized` and never asked for a client certificate (denoland/deno
 * #33367, fixed by #33439); until #34381 a server socket could report
 * `authorized === true` for a client that sent no certificate. mtlb was verified
 * on 2.9.6 and refuses anything older than {@linkcode MIN_DENO_VERSION}.
 *
 * @module
 */

/** The oldest Deno whose `node:tls` server enforces client certificates as mtlb needs. */
export const MIN_DENO_VERSION = "2.9.0";

/** Thrown when the running Deno cannot enforce mutual TLS. */
export class UnsupportedRuntimeError extends Error {
  /** The running version. */
  readonly version: string;

  /**
   * Creates the error.
   *
   * @param version The running Deno version.
   */
  constructor(version: string) {
    super(
      `Cannot run on this Deno: node:tls client-certificate verification needs Deno ${MIN_DENO_VERSION} or newer, received ${version}`,
    );
    this.name = "UnsupportedRuntimeError";
    this.version = version;
  }
}

function parts(version: string): number[] {
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (match === null) throw new UnsupportedRuntimeError(version);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/**
 * Throws unless `version` is at least {@linkcode MIN_DENO_VERSION}.
 *
 * @example Usage
 * ```ts
 * import { assertSupportedRuntime } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assertSupportedRuntime("2.9.6");
 * assert.throws(() => assertSupportedRuntime("2.7.14"), { name: "UnsupportedRuntimeError" });
 * ```
 *
 * @param version The version to check.
 * @throws {UnsupportedRuntimeError} When the version is older or unreadable.
 */
export function assertSupportedRuntime(version: string = Deno.version.deno): void {
  const have = parts(version);
  const need = parts(MIN_DENO_VERSION);
  for (let i = 0; i < 3; i++) {
    if (have[i]! > need[i]!) return;
    if (have[i]! < need[i]!) throw new UnsupportedRuntimeError(version);
  }
}
