/**
 * Size strings as used in mtlb configuration: a number and a unit, decimal (`B`,
 * `KB`, `MB`, `GB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`: powers of 1024);
 * rates add `/s` (`10MiB/s`).
 *
 * @module
 */

const UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
};
/**
 * What a size string looks like, as a regular expression source (for JSON Schema):
 * a number, an optional space and a unit (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`).
 */
export const SIZE_PATTERN: string = String.raw`^(\d+(?:\.\d+)?)\s?(B|KB|MB|GB|KiB|MiB|GiB)$`;
const SIZE_RE = new RegExp(SIZE_PATTERN);
/**
 * What a rate string looks like, as a regular expression source (for JSON Schema): a
 * size followed by `/s` (`10MiB/s`).
 */
export const RATE_PATTERN: string = String.raw`^(\d+(?:\.\d+)?)\s?(B|KB|MB|GB|KiB|MiB|GiB)/s$`;

/**
 * Parses a size string into bytes.
 *
 * @example Usage
 * ```ts
 * import { parseSize } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseSize("1MiB"), 1_048_576);
 * assert.equal(parseSize("1.5KB"), 1500);
 * ```
 *
 * @param text The size string.
 * @returns The size in bytes, rounded to a whole byte.
 * @throws {TypeError} When `text` is not a size string.
 */
export function parseSize(text: string): number {
  const match = SIZE_RE.exec(text);
  if (match === null) {
    throw new TypeError(
      `Cannot parse size: expected a number and a unit (B, KB, MB, GB, KiB, MiB, GiB) such as "1MiB", received ${
        JSON.stringify(text)
      }`,
    );
  }
  return Math.round(Number(match[1]) * UNITS[match[2]!]!);
}

/**
 * Parses a rate string (a size per second, `10MiB/s`) into bytes per second.
 *
 * @example Usage
 * ```ts
 * import { parseRate } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseRate("10MiB/s"), 10_485_760);
 * ```
 *
 * @param text The rate string.
 * @returns Bytes per second.
 * @throws {TypeError} When `text` is not a size followed by `/s`.
 */
export function parseRate(text: string): number {
  if (!text.endsWith("/s")) {
    throw new TypeError(
      `Cannot parse rate: expected a size per second such as "10MiB/s", received ${
        JSON.stringify(text)
      }`,
    );
  }
  return parseSize(text.slice(0, -2));
}

/**
 * Formats bytes as the shortest exact size string, binary first (`1MiB`), then decimal
 * (`10MB`), else in bytes.
 *
 * @example Usage
 * ```ts
 * import { formatSize } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatSize(1_048_576), "1MiB");
 * assert.equal(formatSize(10_000_000), "10MB");
 * assert.equal(formatSize(1500), "1500B");
 * ```
 *
 * @param bytes A whole number of bytes.
 * @returns A string that {@linkcode parseSize} reads back to `bytes`.
 */
export function formatSize(bytes: number): string {
  for (const unit of ["GiB", "MiB", "KiB", "GB", "MB", "KB"] as const) {
    const size = UNITS[unit]!;
    if (bytes !== 0 && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}
