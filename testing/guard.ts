/**
 * A failure guard: how long an awaited event may take before the caller gives up.
 * A guard never waits for anything by itself; it only bounds a wait for an event.
 *
 * @module
 */

/** How long a guarded event may take unless told otherwise, in milliseconds. */
export const GUARD_MS = 10_000;

/** An awaited event did not happen within its guard. */
export class GuardError extends Error {
  /**
   * @param message What did not happen, and within how long.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuardError";
  }
}

/**
 * Resolves as `promise` does, or rejects once `ms` passed: a failure guard, never a wait.
 *
 * @example Usage
 * ```ts
 * import { guard, GuardError } from "./guard.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(await guard(Promise.resolve(7), "seven", 1_000), 7);
 * await assert.rejects(guard(new Promise(() => {}), "a reply", 10), GuardError);
 * ```
 *
 * @param promise What the caller waits for.
 * @param what Its name, for the error: `No ${what} within ${ms} ms`.
 * @param ms How long it may take.
 * @returns What `promise` resolves with.
 * @throws {GuardError} When `ms` passed first.
 */
export async function guard<T>(
  promise: Promise<T>,
  what: string,
  ms: number = GUARD_MS,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new GuardError(`No ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}
