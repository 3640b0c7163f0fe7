/**
 * The config-text lines of keys that name files, kept with the parsed section, for
 * the errors of the loaders that read those files after the text is gone
 * (`loadTlsMaterial`, `loadAdminToken`).
 *
 * @module
 */

type Lines = Readonly<Record<string, number | undefined>>;

const SECTION_LINES = new WeakMap<object, Lines | (() => Lines)>();

/**
 * Remembers where keys of a section were in the config text.
 *
 * @param section The parsed section (`config.tls`, `config.admin`).
 * @param lines Line by key path, such as `{ "tls.ca": 5 }`, or what finds them when
 *   first asked (the text is scanned only when an error needs a line).
 */
export function rememberLines(section: object, lines: Lines | (() => Lines)): void {
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
  let lines = SECTION_LINES.get(section);
  if (typeof lines === "function") {
    lines = lines();
    SECTION_LINES.set(section, lines);
  }
  return lines?.[key];
}
