/**
 * Helpers for tests that run `main.ts` (or another script) as a subprocess and
 * read its output.
 *
 * @module
 */
import { createServer } from "node:net";

/** How long a test waits for a subprocess's log record before failing. */
export const RECORD_GUARD_MS = 30_000;

/** A port that was free a moment ago (the test binds it right away). */
export function freePort(): Promise<number> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Splits a byte stream into text lines. */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    for (let i = rest.indexOf("\n"); i >= 0; i = rest.indexOf("\n")) {
      yield rest.slice(0, i);
      rest = rest.slice(i + 1);
    }
  }
  if (rest !== "") yield rest;
}

/**
 * Reads lines until one parses as a JSON record that `match` accepts; fails after
 * `guardMs` or when the stream ends first. Every line read is appended to `seen`.
 */
export async function waitForRecord(
  reader: AsyncGenerator<string>,
  seen: string[],
  match: (record: Record<string, unknown>) => boolean,
  guardMs: number = RECORD_GUARD_MS,
): Promise<Record<string, unknown>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`No matching log record within ${guardMs} ms:\n${seen.join("\n")}`)),
      guardMs,
    );
  });
  const search = (async () => {
    for (;;) {
      const next = await reader.next();
      if (next.done) throw new Error(`Output ended without a matching record:\n${seen.join("\n")}`);
      seen.push(next.value);
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(next.value);
      } catch {
        continue;
      }
      if (match(record)) return record;
    }
  })();
  try {
    return await Promise.race([search, guard]);
  } finally {
    clearTimeout(timer);
  }
}
