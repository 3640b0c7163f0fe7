/**
 * Keys that name files (`tls.ca`, `admin.token_file`): their lines in the config
 * text, kept with the parsed section, and the errors of the loaders that read those
 * files after the text is gone (`loadTlsMaterial`, `loadAdminToken`).
 *
 * @module
 */
import { errorMessage } from "../core/errors.ts";
import { ConfigError } from "./config_error.ts";

type Lines = Readonly<Record<string, number | undefined>>;

const SECTION_LINES = new WeakMap<object, () => Lines>();

/**
 * Remembers where keys of a parsed section (`config.tls`, `config.admin`) were in the
 * config text: `lines` finds them, such as `{ "tls.ca": 5 }`, when first asked (the
 * text is scanned only when an error needs a line).
 */
export function rememberLines(section: object, lines: () => Lines): void {
  let found: Lines | undefined;
  SECTION_LINES.set(section, () => found ??= lines());
}

/** Why a file could not be read, without the OS error's repetition of the path. */
export function fileError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied (file mode)";
  if (error instanceof Deno.errors.IsADirectory) return "it is a folder";
  return errorMessage(error);
}

/**
 * How a loader of the files a parsed `section` names reports them: `fail` throws the
 * {@linkcode ConfigError} of a key (on its line when the section was parsed from
 * text), `read` reads the file of a key or fails with why it cannot.
 *
 * @param path The config file.
 * @param section The parsed section, such as `config.tls`.
 */
export function fileKeys(path: string, section: object) {
  const fail = (key: string, detail: string, cause?: unknown): never => {
    const line = SECTION_LINES.get(section)?.()[key];
    throw new ConfigError(`${JSON.stringify(key)} ${detail}`, { path, key, line, cause });
  };
  const read = <T>(key: string, file: string, reader: (file: string) => Promise<T>): Promise<T> =>
    reader(file).catch((error) =>
      fail(key, `cannot be read from ${JSON.stringify(file)}: ${fileError(error)}`, error)
    );
  return { fail, read };
}
