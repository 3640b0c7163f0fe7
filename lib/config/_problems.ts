/**
 * From what the schema and the checks found to a {@linkcode ConfigError}: each
 * problem named by its key path, placed on its line, suggested the closest known key
 * when the key is unknown, sorted in the order of the file and capped.
 *
 * @module
 */
import type * as z from "zod";
import { closestName } from "../core/edit_distance.ts";
import { ConfigError, type ConfigProblem } from "./config_error.ts";
import { type RepeatParams, UNKNOWN_KEYS } from "./_fields.ts";
import { keyPath, lineOf } from "./_key_lines.ts";

/** A problem before it is placed: the key path it is about, and what is wrong with it. */
export interface Problem {
  /** Key path, such as `groups.cache.upstreams[1]`; `undefined` for the file as a whole. */
  key: string | undefined;
  /** What is wrong, without the key: `must be "host:port", received "cache"`. */
  message: string;
}

/** ` (did you mean "NAME"?)` when there is a closest name. */
export function hint(name: string | undefined): string {
  return name === undefined ? "" : ` (did you mean "${name}"?)`;
}

/** Problems listed in one error at most; the message counts the others. */
export const MAX_PROBLEMS = 20;

/** The problems one schema issue stands for (an issue of unknown keys names several). */
export function problemsOf(issue: z.core.$ZodIssue): Problem[] {
  const key = keyPath(issue.path);
  switch (issue.code) {
    case "invalid_union": {
      // The value's type chooses the alternative ("host:port" or a table), and among
      // tables, the one whose keys it has (the fewest unknown keys): its problems.
      const typed = closest(
        issue.errors.filter((alternative) =>
          !alternative.some((inner) => inner.path.length === 0 && inner.code === "invalid_type")
        ),
      );
      if (typed.length !== 1) return [{ key, message: issue.message }];
      return typed[0]!.flatMap((inner) =>
        problemsOf({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue)
      );
    }
    case "unrecognized_keys": {
      const known = issue.message.startsWith(UNKNOWN_KEYS)
        ? issue.message.slice(UNKNOWN_KEYS.length).split(", ")
        : [];
      return issue.keys.map((unknown) => ({
        key: keyPath([...issue.path, unknown]),
        message: `is not a known key${hint(closestName(unknown, known))}: expected one of ${
          known.join(", ")
        }`,
      }));
    }
    case "invalid_key":
      return [{ key, message: issue.issues[0]?.message ?? issue.message }];
    case "custom": {
      const repeats = (issue.params as Partial<RepeatParams> | undefined)?.repeats;
      if (repeats === undefined) return [{ key, message: issue.message }];
      const list = keyPath(issue.path.slice(0, -1));
      return [{ key, message: `${issue.message}, already ${list}[${repeats}]` }];
    }
    default:
      return [{ key, message: issue.message }];
  }
}

/**
 * The error for a file's problems: each placed on its line (the line of the nearest
 * enclosing key the file has), in the order of the file, the same problem once, at
 * most {@linkcode MAX_PROBLEMS}.
 *
 * @param path The config file.
 * @param problems What was found, at least one.
 * @param lines Line by key path of the file's text.
 * @returns The error to throw.
 */
export function configError(
  path: string,
  problems: readonly Problem[],
  lines: Map<string, number>,
): ConfigError {
  const seen = new Set<string>();
  const placed: ConfigProblem[] = [];
  for (const { key, message } of problems) {
    const detail = key === undefined ? message : `${JSON.stringify(key)} ${message}`;
    if (seen.has(detail)) continue;
    seen.add(detail);
    placed.push({ key, line: key === undefined ? undefined : lineOf(lines, key), detail });
  }
  // In the order of the file; problems of no known line after the others.
  const order = (p: ConfigProblem): number => p.line ?? Number.MAX_SAFE_INTEGER;
  placed.sort((a, b) => order(a) - order(b));
  if (placed.length === 0) placed.push({ detail: "is not a valid configuration" });
  const [first, ...more] = placed.slice(0, MAX_PROBLEMS);
  return new ConfigError(first!.detail, {
    path,
    key: first!.key,
    line: first!.line,
    more,
    omitted: placed.length - 1 - more.length,
  });
}

/**
 * The alternatives of a union with the fewest keys unknown to them at their root; of
 * those, when only some have a known key close to each unknown one (a typo), those.
 */
function closest(alternatives: z.core.$ZodIssue[][]): z.core.$ZodIssue[][] {
  const unknown = (alternative: z.core.$ZodIssue[]) =>
    alternative.flatMap((inner) =>
      inner.path.length === 0 && inner.code === "unrecognized_keys"
        ? inner.keys.map((key) => ({ key, known: inner.message.slice(UNKNOWN_KEYS.length) }))
        : []
    );
  const fewest = Math.min(...alternatives.map((alternative) => unknown(alternative).length));
  const tied = alternatives.filter((alternative) => unknown(alternative).length === fewest);
  const typos = tied.filter((alternative) =>
    unknown(alternative).every(({ key, known }) => closestName(key, known.split(", ")))
  );
  return fewest > 0 && typos.length > 0 ? typos : tied;
}
