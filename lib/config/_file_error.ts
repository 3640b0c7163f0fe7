/**
 * Short descriptions of why a file named by the config could not be read.
 *
 * @module
 */
import { errorMessage } from "../core/errors.ts";

/** Why a file named by the config could not be read, without the OS error's repetition of the path. */
export function fileError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied (file mode)";
  if (error instanceof Deno.errors.IsADirectory) return "it is a folder";
  return errorMessage(error);
}
