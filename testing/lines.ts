/**
 * Reading a process's output line by line, and waiting for a line or a JSON log record
 * with a failure guard.
 *
 * @module
 */
import { guard, GuardError } from "./guard.ts";

/** How long a wait for a line or a log record may take unless told otherwise, in ms. */
export const LINE_GUARD_MS = 30_000;

/** How many of the last lines a {@linkcode LineReader} keeps for error messages. */
const RECENT_LINES = 50;

/**
 * Splits a byte stream into text lines (without their `\n`); a last line without one is
 * yielded at the end of the stream.
 *
 * @example Usage
 * ```ts
 * import { lines } from "./lines.ts";
 * import assert from "node:assert/strict";
 *
 * const stream = new Response("one\ntwo\nthree").body!;
 * assert.deepEqual(await Array.fromAsync(lines(stream)), ["one", "two", "three"]);
 * ```
 *
 * @param stream The bytes, say a child's `stdout`.
 * @returns The lines, as they arrive.
 */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    for (let at = rest.indexOf("\n"); at >= 0; at = rest.indexOf("\n")) {
      yield rest.slice(0, at);
      rest = rest.slice(at + 1);
    }
  }
  if (rest !== "") yield rest;
}

/** Options of {@linkcode LineReader}. */
export interface LineReaderOptions {
  /**
   * Whether lines nobody is waiting for are kept for a later read. Without, only the last
   * few are kept, for {@linkcode LineReader.tail}: for a stream read only on failure.
   * @default true
   */
  queue?: boolean;
}

/**
 * Reads a stream as it arrives (so the writer never blocks on a full pipe) and hands its
 * lines out in order, as an async iterator or with {@linkcode LineReader.read}, which
 * has a failure guard. Keeps the last lines for error messages.
 *
 * @example Usage
 * ```ts
 * import { LineReader } from "./lines.ts";
 * import assert from "node:assert/strict";
 *
 * const reader = new LineReader(new Response("ready\n{\"open\":3}\n").body!);
 * assert.equal(await reader.read(1_000), "ready");
 * assert.equal(await reader.read(1_000), "{\"open\":3}");
 * assert.equal(await reader.read(1_000), undefined); // the end of the stream
 * assert.equal(reader.tail(), "ready\n{\"open\":3}");
 * ```
 */
export class LineReader implements AsyncIterableIterator<string> {
  /** Resolves once the stream has ended and every line has been received. */
  readonly closed: Promise<void>;
  readonly #queue: string[] = [];
  readonly #waiters: ((result: IteratorResult<string, undefined>) => void)[] = [];
  readonly #recent: string[] = [];
  readonly #keep: boolean;
  #ended = false;

  /**
   * Starts reading `stream`.
   *
   * @param stream The bytes to read.
   * @param options Whether to queue lines.
   */
  constructor(stream: ReadableStream<Uint8Array>, options: LineReaderOptions = {}) {
    this.#keep = options.queue ?? true;
    this.closed = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const line of lines(stream)) this.#push(line);
    } catch {
      // The writer is gone: the stream ends here.
    }
    this.#ended = true;
    for (const waiter of this.#waiters.splice(0)) waiter({ done: true, value: undefined });
  }

  #push(line: string): void {
    this.#recent.push(line);
    if (this.#recent.length > RECENT_LINES) this.#recent.shift();
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter({ done: false, value: line });
    else if (this.#keep) this.#queue.push(line);
  }

  /** Whether the stream has ended (lines may still be queued). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * The next line, in the async iterator protocol.
   *
   * @returns The line, or `done` at the end of the stream.
   */
  next(): Promise<IteratorResult<string, undefined>> {
    const line = this.#queue.shift();
    if (line !== undefined) return Promise.resolve({ done: false, value: line });
    if (this.#ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /**
   * The next line, waiting at most `ms`; a line that arrives after the guard is kept for
   * the next read.
   *
   * @param ms How long the line may take.
   * @param what What the line is, for the error.
   * @returns The line, or `undefined` at the end of the stream.
   * @throws {GuardError} When no line came within `ms`.
   */
  read(ms: number = LINE_GUARD_MS, what = "line"): Promise<string | undefined> {
    const line = this.#queue.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: ReturnType<typeof setTimeout> | undefined = undefined;
      const waiter = (result: IteratorResult<string, undefined>) => {
        settled = true;
        clearTimeout(timer);
        resolve(result.done ? undefined : result.value);
      };
      // Waiting before the timer exists: creating it may run the stream's pending reads.
      this.#waiters.push(waiter);
      timer = setTimeout(() => {
        settled = true;
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new GuardError(`No ${what} within ${ms} ms`));
      }, ms);
      if (settled) clearTimeout(timer);
    });
  }

  /** Drops the lines received and not read yet. */
  clear(): void {
    this.#queue.length = 0;
  }

  /**
   * The last lines received, read or not, for an error message.
   *
   * @param count How many.
   * @returns Those lines, joined by `\n`.
   */
  tail(count = 8): string {
    return this.#recent.slice(-count).join("\n");
  }

  /** @returns This reader. */
  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** Options of {@linkcode waitForLine}. */
export interface WaitForLineOptions {
  /** What the line is, for the error: `No ${what} within N ms`. @default "matching line" */
  what?: string;
  /** How long it may take. @default {@linkcode LINE_GUARD_MS} */
  guardMs?: number;
  /** Every line read is appended here (for later assertions and the error message). */
  seen?: string[];
}

/**
 * Reads lines until one matches; fails after the guard or when the lines end first,
 * naming every line read.
 *
 * @example Usage
 * ```ts
 * import { LineReader, waitForLine } from "./lines.ts";
 * import assert from "node:assert/strict";
 *
 * const reader = new LineReader(new Response("starting\nlistening on 8443\n").body!);
 * const line = await waitForLine(reader, (l) => l.startsWith("listening"), { guardMs: 1_000 });
 * assert.equal(line, "listening on 8443");
 * ```
 *
 * @param reader The lines: a {@linkcode LineReader} or {@linkcode lines}.
 * @param match Which line to wait for.
 * @param options The guard, a name, and where to keep the lines read.
 * @returns The matching line.
 * @throws {GuardError} When no line matched within the guard.
 * @throws {Error} When the lines ended first.
 */
export async function waitForLine(
  reader: AsyncIterator<string>,
  match: (line: string) => boolean,
  options: WaitForLineOptions = {},
): Promise<string> {
  const { what = "matching line", guardMs = LINE_GUARD_MS, seen = [] } = options;
  const search = (async () => {
    for (;;) {
      const next = await reader.next();
      if (next.done) throw new Error(`Output ended with no ${what}:\n${seen.join("\n")}`);
      seen.push(next.value);
      if (match(next.value)) return next.value;
    }
  })();
  try {
    return await guard(search, what, guardMs);
  } catch (error) {
    if (!(error instanceof GuardError)) throw error;
    throw new GuardError(`${error.message}:\n${seen.join("\n")}`, { cause: error });
  }
}

/**
 * Reads lines until one parses as a JSON record that `match` accepts (other lines are
 * skipped); fails after `guardMs` or when the lines end first. Every line read is
 * appended to `seen`.
 *
 * @example Usage
 * ```ts
 * import { lines, waitForRecord } from "./lines.ts";
 * import assert from "node:assert/strict";
 *
 * const log = '{"message":"Starting"}\nnot json\n{"message":"Stopped"}\n';
 * const seen: string[] = [];
 * const record = await waitForRecord(lines(new Response(log).body!), seen, (r) => r.message === "Stopped");
 * assert.equal(record.message, "Stopped");
 * assert.equal(seen.length, 3);
 * ```
 *
 * @param reader The lines.
 * @param seen Where the lines read are appended.
 * @param match Which record to wait for.
 * @param guardMs How long it may take.
 * @returns The matching record.
 * @throws {GuardError} When no record matched within `guardMs`.
 * @throws {Error} When the lines ended first.
 */
export async function waitForRecord(
  reader: AsyncIterator<string>,
  seen: string[],
  match: (record: Record<string, unknown>) => boolean,
  guardMs: number = LINE_GUARD_MS,
): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  await waitForLine(reader, (line) => {
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      return false;
    }
    if (record === null || typeof record !== "object") return false;
    if (!match(record as Record<string, unknown>)) return false;
    found = record as Record<string, unknown>;
    return true;
  }, { what: "matching log record", guardMs, seen });
  return found!;
}
