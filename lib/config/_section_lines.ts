/**
 * The config-text lines of keys that name files, kept with the parsed section, for
 * the errors of the loaders that read those files after the text is gone
 * (`loadTlsMaterial`, `loadAdminToken`).
 *
 * @module
 */

const SECTION_LINES = new WeakMap<object, Readonly<Record<string, number | undefined>>>();

/**
 * Remembers where keys of a section were in the config text.
 *
 * @param section The parsed section (`config.tls`, `config.admin`).
 * @param lines Line by key path, such as `{ "tls.ca": 5 }`.
 */
export function rememberLines(
  section: object,
  lines: Readonly<Record<string, number | undefined>>,
): void {
  SECTION_LINES.set(section, lines);
}

/**
 * The line `key` was on in the text `section` was parsed from.
 *
 * @param section The parsed section.
 * @param key The key path, such as `tls.ca`.
 * @returns The 1-based line, or `undefined` when not known (a section built by hand).
 */
export function rememberedLine(section: object, key: string): number | undefined {
  return SECTION_LINES.get(section)?.[key];
}
