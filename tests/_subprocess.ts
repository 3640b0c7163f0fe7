/**
 * Helpers for tests that run `main.ts` (or another script) as a subprocess and
 * read its output.
 *
 * @module
 */
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT: string = fileURLToPath(new URL("..", import.meta.url));
/** `main.ts`, by its absolute path (as printed command lines name it). */
export const MAIN: string = join(ROOT, "main.ts");

/** What a finished subprocess wrote, and its exit code. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `deno run FLAGS main.ts ARGS` (from the repository root unless `cwd` is
 * given) and collects its output.
 */
export async function runMain(
  flags: string[],
  args: string[],
  cwd: string = ROOT,
): Promise<Output> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, MAIN, ...args],
    cwd,
    stdin: "null",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** A temporary folder holding `lb.toml` with `body`; removed on dispose. */
export async function configDir(
  body: string,
): Promise<{ dir: string; path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_e2e_cli_" });
  const path = join(dir, "lb.toml");
  await Deno.writeTextFile(path, body);
  return { dir, path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/**
 * Runs a command line as printed, through `sh` (the `exec` makes the shell become
 * the command, so signals reach it), with the running `deno` first on `PATH`.
 */
export function spawnLine(
  line: string,
  options: { cwd: string; stdout?: "piped" | "null" },
): Deno.ChildProcess {
  const path = `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? ""}`;
  return new Deno.Command("sh", {
    args: ["-c", `exec ${line}`],
    cwd: options.cwd,
    env: { PATH: path },
    stdin: "null",
    stdout: options.stdout ?? "null",
    stderr: "piped",
  }).spawn();
}

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
