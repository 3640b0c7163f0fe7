/**
 * Duration strings as used in mtlb configuration: `500ms`, `30s`, `1m`, `1h`.
 *
 * @module
 */

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
/**
 * What a duration string looks like, as a regular expression source (for JSON
 * Schema): a number and one unit, `ms`, `s`, `m` or `h`.
 */
export const DURATION_PATTERN: string = String.raw`^(\d+(?:\.\d+)?)(ms|s|m|h)$`;
const DURATION_RE = new RegExp(DURATION_PATTERN);

/**
 * Parses a duration string into milliseconds.
 *
 * Accepts a non-negative number followed by one unit: `ms`, `s`, `m` or `h`
 * (`1.5s` is allowed; spaces and compound forms such as `1m30s` are not).
 *
 * @example Usage
 * ```ts
 * import { parseDuration } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseDuration("500ms"), 500);
 * assert.equal(parseDuration("1m"), 60_000);
 * ```
 *
 * @param text The duration string.
 * @returns The duration in milliseconds (rounded to a whole millisecond).
 * @throws {TypeError} When `text` is not a duration string.
 */
export function parseDuration(text: string): number {
  const match = DURATION_RE.exec(text);
  if (match === null) {
    throw new TypeError(
      `Cannot parse duration: expected a number and a unit (ms, s, m, h) such as "30s", received ${
        JSON.stringify(text)
      }`,
    );
  }
  return Math.round(Number(match[1]) * UNITS[match[2]!]!);
}

/**
 * Formats milliseconds as the shortest exact duration string.
 *
 * @example Usage
 * ```ts
 * import { formatDuration } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatDuration(90_000), "90s");
 * assert.equal(formatDuration(3_600_000), "1h");
 * ```
 *
 * @param ms Milliseconds.
 * @returns A string that {@linkcode parseDuration} reads back to `ms`.
 */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [["h", 3_600_000], ["m", 60_000], ["s", 1000]] as const) {
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
