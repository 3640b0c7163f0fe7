/**
 * Where each key of a TOML text starts: a best-effort scan that maps key paths to
 * lines, so that an error about a value can name the line it is on.
 *
 * @module
 */

/** Finds the line of `key`, else of its nearest recorded parent (`a.b[1].c` -> `a.b[1]` -> `a.b`). */
export function lineOf(lines: Map<string, number>, key: string): number | undefined {
  for (let k = key;;) {
    const line = lines.get(k);
    if (line !== undefined) return line;
    const cut = Math.max(k.lastIndexOf("."), k.lastIndexOf("["));
    if (cut <= 0) return undefined;
    k = k.slice(0, cut);
  }
}

/**
 * Maps key paths (`groups.cache`, `groups.cache.upstreams[1]`, `clients.a.match.cn`) to
 * the line they start on. Runs only after the TOML parser accepted the text, and only
 * when an error is reported; best effort: on anything unexpected it stops and returns
 * what it has.
 */
export function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  const n = text.length;
  let i = 0;
  let line = 1;

  const skip = (newlines: boolean): void => {
    while (i < n) {
      const c = text[i];
      if (c === " " || c === "\t" || c === "\r") i++;
      else if (c === "\n" && newlines) {
        line++;
        i++;
      } else if (c === "#") {
        while (i < n && text[i] !== "\n") i++;
      } else break;
    }
  };
  const string = (): string => {
    const quote = text[i]!;
    const triple = text.startsWith(quote.repeat(3), i);
    const close = triple ? quote.repeat(3) : quote;
    i += close.length;
    let value = "";
    while (i < n && !text.startsWith(close, i)) {
      if (quote === '"' && text[i] === "\\") value += text[i++];
      if (text[i] === "\n") line++;
      value += text[i++];
    }
    if (i >= n) throw new SyntaxError("unterminated string");
    i += close.length;
    while (triple && text[i] === quote) i++; // """a"""" ends with a quote in the value.
    return value;
  };
  const key = (): string[] => {
    const parts: string[] = [];
    for (;;) {
      skip(false);
      if (text[i] === '"' || text[i] === "'") parts.push(string());
      else {
        const start = i;
        while (i < n && /[A-Za-z0-9_-]/.test(text[i]!)) i++;
        if (i === start) throw new SyntaxError("key expected");
        parts.push(text.slice(start, i));
      }
      skip(false);
      if (text[i] !== ".") return parts;
      i++;
    }
  };
  const value = (path: string): void => {
    skip(false);
    const c = text[i];
    if (c === "[" || c === "{") {
      // An array's items are `path[i]`, an inline table's keys `path.key = value`.
      const close = c === "[" ? "]" : "}";
      i++;
      for (let index = 0;; index++) {
        skip(true);
        if (text[i] === close) break;
        const p = c === "[" ? `${path}[${index}]` : [path, ...key()].join(".");
        lines.set(p, line);
        if (c === "{" && text[i++] !== "=") throw new SyntaxError("= expected");
        value(p);
        skip(true);
        if (text[i] === ",") i++;
        else if (text[i] !== close) throw new SyntaxError(`${close} expected`);
      }
      i++;
    } else if (c === '"' || c === "'") {
      string();
    } else {
      const start = i;
      while (i < n && !/[,\]}\s#]/.test(text[i]!)) i++;
      if (i === start) throw new SyntaxError("value expected");
    }
  };

  try {
    let table = "";
    const arrayCounts = new Map<string, number>();
    for (;;) {
      skip(true);
      if (i >= n) break;
      if (text[i] === "[") {
        const isArray = text[i + 1] === "[";
        i += isArray ? 2 : 1;
        table = key().join(".");
        if (isArray) {
          const index = arrayCounts.get(table) ?? 0;
          arrayCounts.set(table, index + 1);
          if (!lines.has(table)) lines.set(table, line);
          table = `${table}[${index}]`;
        }
        if (!lines.has(table)) lines.set(table, line);
      } else {
        const p = [table, ...key()].filter((part) => part !== "").join(".");
        if (!lines.has(p)) lines.set(p, line);
        if (text[i++] !== "=") throw new SyntaxError("= expected");
        value(p);
      }
      while (i < n && text[i] !== "\n") i++; // Rest of the line: "]", a comment, a date's time.
    }
  } catch {
    // Best effort: keep what was found before the scanner lost its way.
  }
  return lines;
}
