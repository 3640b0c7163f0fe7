/**
 * The message of anything thrown, for logs and error texts.
 *
 * @module
 */

/**
 * The message of a thrown value: an `Error`'s message, anything else as a string.
 *
 * @example Usage
 * ```ts
 * import { errorMessage } from "./errors.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(errorMessage(new TypeError("bad")), "bad");
 * assert.equal(errorMessage("plain"), "plain");
 * ```
 *
 * @param error What was thrown.
 * @returns Its message.
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
