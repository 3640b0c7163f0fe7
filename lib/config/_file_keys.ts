/**
 * Keys that name files (`tls.ca`, `admin.token_file`): their lines in the config
 * text, kept with the parsed section, and the errors of the loaders that read those
 * files after the text is gone (`loadTlsMaterial`, `loadAdminToken`).
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
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
 * text), `read` reads the file of a key or fails with why it cannot, `certificates`
 * parses each certificate of a PEM file, and `keyPair` checks that a private key is
 * unencrypted PEM and that a certificate was issued for it.
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
  const certificates = (key: string, file: string, pem: string) => {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) {
      fail(key, `must hold PEM certificates, found none in ${JSON.stringify(file)}`);
    }
    return blocks.map((block, index) => {
      try {
        const cert = new X509Certificate(block);
        const { subject, validFrom, validTo } = cert;
        return {
          cert,
          dates: { subject, notBefore: new Date(validFrom), notAfter: new Date(validTo) },
        };
      } catch (error) {
        const where = `number ${index + 1} in ${JSON.stringify(file)}`;
        return fail(
          key,
          `holds a certificate that cannot be parsed (${where}): ${errorMessage(error)}`,
          error,
        );
      }
    });
  };
  const keyPair = (
    [certKey, certFile, leaf]: [string, string, X509Certificate],
    [keyKey, keyFile, pem]: [string, string, string],
  ): void => {
    let privateKey;
    try {
      privateKey = createPrivateKey(pem);
    } catch (error) {
      const detail = `${JSON.stringify(keyFile)} is not: ${errorMessage(error)}`;
      return fail(keyKey, `must be an unencrypted PEM private key, ${detail}`, error);
    }
    if (leaf.checkPrivateKey(privateKey)) return;
    fail(
      certKey,
      `does not match the private key: the certificate in ${
        JSON.stringify(certFile)
      } was not issued for the key in ${JSON.stringify(keyFile)}`,
    );
  };
  return { fail, read, certificates, keyPair };
}
