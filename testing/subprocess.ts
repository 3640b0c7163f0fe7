/**
 * Child processes for tests, benchmarks and load suites: one to talk to while it runs
 * ({@linkcode Subprocess}: piped standard streams read line by line, a failure guard on
 * every wait, stopped and drained on dispose), and one to run to its end
 * ({@linkcode run}: output collected, a time limit, a failure named with the end of
 * what it printed). Both start the command through `sh`, so `--allow-run=sh` is the
 * only run permission a script needs.
 *
 * @module
 */
import { basename } from "node:path";
import { guard, GUARD_MS } from "./guard.ts";
import { LineReader, waitForLine, type WaitForLineOptions } from "./lines.ts";

/** A child process failed: it exited early or with an error, or ran out of time. */
export class SubprocessError extends Error {
  /**
   * @param message What went wrong, with the end of what the process printed.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SubprocessError";
  }
}

/** How a child is started, for {@linkcode Subprocess} and {@linkcode run}. */
export interface CommandOptions {
  /** Its working directory. @default this process's */
  cwd?: string;
  /** Variables added to this process's environment. */
  env?: Record<string, string>;
  /**
   * Its open-files limit (`ulimit -n`, set by `sh` before it `exec`s the command, so
   * the PID is the command's): a number, or `"hard"` for the hard limit. A limit the
   * shell cannot set is left as it is.
   * @default 0, unchanged
   */
  openFiles?: number | "hard";
}

/** How {@linkcode Subprocess.stop} ends a process. */
export interface StopOptions {
  /**
   * The signal sent once standard input is closed; `null` sends none, for a child that
   * exits when its input closes.
   * @default "SIGTERM"
   */
  signal?: Deno.Signal | null;
  /** How long it may take to exit before it gets SIGKILL, in ms. @default 3_000 */
  graceMs?: number;
}

/** Options of {@linkcode Subprocess}. */
export interface SubprocessOptions extends CommandOptions {
  /** A label for messages. @default the script or program, and the PID */
  name?: string;
  /** Standard input: `"piped"` to {@linkcode Subprocess.send} to it. @default "null" */
  stdin?: "piped" | "null";
  /** Standard output: `"piped"` is read as lines, {@linkcode Subprocess.stdout}. @default "piped" */
  stdout?: "piped" | "null";
  /**
   * Standard error: `"tail"` is read and its last lines kept for error messages;
   * `"lines"` is also readable as lines, {@linkcode Subprocess.stderr}; `"stdout"`
   * goes to standard output, in the order written.
   * @default "tail"
   */
  stderr?: "tail" | "lines" | "stdout";
  /** How long {@linkcode Subprocess.line} waits unless told otherwise, in ms. @default 10_000 */
  guardMs?: number;
  /** How disposing of it stops it. @default SIGTERM, SIGKILL after 3 s */
  stop?: StopOptions;
}

/**
 * The command, run through `sh` (which `exec`s it, keeping the PID): the one program a
 * script needs `--allow-run` for; it sets the open-files limit and merges standard error.
 */
function _command(
  cmd: readonly string[],
  options: CommandOptions & { mergeStderr?: boolean },
  stdio: Pick<Deno.CommandOptions, "stdin" | "stdout" | "stderr">,
): Deno.Command {
  const [program, ...args] = cmd;
  if (program === undefined) throw new TypeError("Cannot start a process: the command is empty");
  const { openFiles = 0, mergeStderr = false } = options;
  if (openFiles !== "hard" && !(Number.isInteger(openFiles) && openFiles >= 0)) {
    throw new RangeError(`openFiles must be "hard" or a whole number, received ${openFiles}`);
  }
  const common = {
    ...stdio,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.env === undefined ? {} : { env: options.env }),
  };
  const limit = openFiles === 0
    ? ""
    : `ulimit -n ${openFiles === "hard" ? '"$(ulimit -Hn)"' : openFiles} 2>/dev/null; `;
  const script = `${limit}exec "$@"${mergeStderr ? " 2>&1" : ""}`;
  return new Deno.Command("sh", { ...common, args: ["-c", script, "sh", program, ...args] });
}

/**
 * A running child process: its standard output read as lines (as they come, so it
 * never blocks on a full pipe), its standard error kept for error messages or read as
 * lines, its standard input written line by line. Every wait has a failure guard;
 * disposing of it stops it and drains its output.
 *
 * @example Talk to a child line by line
 * ```ts
 * import { Subprocess } from "./subprocess.ts";
 * import assert from "node:assert/strict";
 *
 * await using cat = new Subprocess(["cat"], { stdin: "piped" });
 * await cat.send('{"event":"ready"}');
 * assert.deepEqual(await cat.json(), { event: "ready" });
 * await cat.closeStdin();
 * assert.equal((await cat.status).code, 0);
 * ```
 *
 * @example Wait for a line, fail if the process exits first
 * ```ts
 * import { Subprocess, SubprocessError } from "./subprocess.ts";
 * import assert from "node:assert/strict";
 *
 * await using child = new Subprocess(["sh", "-c", "echo starting; echo oops >&2; exit 3"]);
 * assert.equal(await child.line(), "starting");
 * await assert.rejects(child.line(), SubprocessError); // "sh pid N exited with status 3:\noops"
 * ```
 */
export class Subprocess implements AsyncDisposable {
  /** A label for messages. */
  readonly name: string;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  readonly #process: Deno.ChildProcess;
  readonly #stdout: LineReader | undefined;
  readonly #stderr: LineReader | undefined;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  readonly #stderrMode: "tail" | "lines" | "stdout";
  readonly #guardMs: number;
  readonly #stop: StopOptions;
  #exited = false;
  #stdinClosed = false;

  /**
   * Starts `cmd`.
   *
   * @param cmd The program and its arguments.
   * @param options How to start it, and what to do with its standard streams.
   */
  constructor(cmd: readonly string[], options: SubprocessOptions = {}) {
    const { stdin = "null", stdout = "piped", stderr = "tail" } = options;
    this.#process = _command(cmd, { ...options, mergeStderr: stderr === "stdout" }, {
      stdin,
      stdout,
      stderr: stderr === "stdout" ? "null" : "piped",
    }).spawn();
    const script = cmd.find((arg) => /\.[jt]s$/.test(arg));
    this.name = options.name ?? `${basename(script ?? cmd[0]!)} pid ${this.#process.pid}`;
    this.#stderrMode = stderr;
    this.#guardMs = options.guardMs ?? GUARD_MS;
    this.#stop = options.stop ?? {};
    this.#stdout = stdout === "piped" ? new LineReader(this.#process.stdout) : undefined;
    this.#stderr = stderr === "stdout"
      ? undefined
      : new LineReader(this.#process.stderr, { queue: stderr === "lines" });
    this.#stdin = stdin === "piped" ? this.#process.stdin.getWriter() : undefined;
    this.status = this.#process.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  /** The process ID. */
  get pid(): number {
    return this.#process.pid;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /**
   * Standard output, as lines.
   *
   * @throws {TypeError} When it is not piped.
   */
  get stdout(): LineReader {
    if (this.#stdout === undefined) throw new TypeError(`${this.name}: stdout is not piped`);
    return this.#stdout;
  }

  /**
   * Standard error, as lines (with `stderr: "lines"`).
   *
   * @throws {TypeError} When it is only kept for messages, or goes to standard output.
   */
  get stderr(): LineReader {
    if (this.#stderrMode !== "lines") {
      throw new TypeError(`${this.name}: stderr is not readable as lines`);
    }
    return this.#stderr!;
  }

  /** The last lines of standard error (of standard output when merged), for messages. */
  get stderrTail(): string {
    const text = (this.#stderr ?? this.#stdout)?.tail(Infinity).trim() ?? "";
    return text.split("\n").slice(-8).join("\n");
  }

  /**
   * The next line of standard output.
   *
   * @param ms How long it may take.
   * @returns The line.
   * @throws {GuardError} When no line came within `ms`.
   * @throws {SubprocessError} When the output ended: the process exited.
   */
  async line(ms: number = this.#guardMs): Promise<string> {
    const line = await this.stdout.read(ms, `output from ${this.name}`);
    if (line !== undefined) return line;
    throw new SubprocessError(this.describeExit(await guard(this.status, "exit", ms)));
  }

  /**
   * The next line of standard output, parsed as JSON.
   *
   * @param ms How long it may take.
   * @returns The parsed line.
   * @throws {GuardError} When no line came within `ms`.
   * @throws {SubprocessError} When the process exited.
   * @throws {SyntaxError} When the line is not JSON.
   */
  async json<T = Record<string, unknown>>(ms?: number): Promise<T> {
    return JSON.parse(await this.line(ms)) as T;
  }

  /**
   * Reads standard output until a line matches (see {@linkcode waitForLine}).
   *
   * @param match Which line to wait for.
   * @param options The guard, a name, and where to keep the lines read.
   * @returns The matching line.
   */
  waitForLine(match: (line: string) => boolean, options: WaitForLineOptions = {}): Promise<string> {
    return waitForLine(this.stdout, match, { guardMs: this.#guardMs, ...options });
  }

  /**
   * Writes `text` to standard input.
   *
   * @param text What to write.
   * @throws {TypeError} When standard input is not piped.
   */
  async write(text: string): Promise<void> {
    if (this.#stdin === undefined) throw new TypeError(`${this.name}: stdin is not piped`);
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  /**
   * Writes `line` and a newline to standard input.
   *
   * @param line The line.
   */
  async send(line: string): Promise<void> {
    await this.write(`${line}\n`);
  }

  /** Closes standard input (a child that reads it sees its end); safe to call twice. */
  async closeStdin(): Promise<void> {
    if (this.#stdin === undefined || this.#stdinClosed) return;
    this.#stdinClosed = true;
    await this.#stdin.close().catch(() => {});
  }

  /**
   * Sends a signal, unless the process has exited.
   *
   * @param signal The signal.
   * @returns Whether it was sent.
   */
  kill(signal: Deno.Signal = "SIGKILL"): boolean {
    if (this.#exited) return false;
    try {
      this.#process.kill(signal);
      return true;
    } catch {
      return false; // Exited meanwhile.
    }
  }

  /**
   * Stops the process: closes its standard input, sends `signal`, sends SIGKILL if it
   * has not exited after `graceMs`, and reads what is left of its output.
   *
   * @param options The signal and the grace period.
   * @returns The exit status.
   */
  async stop(options: StopOptions = {}): Promise<Deno.CommandStatus> {
    const { signal = "SIGTERM", graceMs = 3_000 } = options;
    await this.closeStdin();
    if (signal !== null) this.kill(signal);
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    let status: Deno.CommandStatus;
    try {
      status = await this.status;
    } finally {
      clearTimeout(timer);
    }
    // A child of the process may still hold the pipes for a moment.
    const drained = Promise.all([this.#stdout?.closed, this.#stderr?.closed]);
    await guard(drained, `end of the output of ${this.name}`, graceMs).catch(() => {});
    return status;
  }

  /**
   * Describes an exit, for an error message: how it ended and the end of its standard
   * error.
   *
   * @param status The exit status.
   * @returns `NAME exited with status N` or `with signal S`, then the last lines.
   */
  describeExit(status: Deno.CommandStatus): string {
    const how = status.signal !== null ? `signal ${status.signal}` : `status ${status.code}`;
    const tail = this.stderrTail;
    return `${this.name} exited with ${how}${tail ? `:\n${tail}` : ""}`;
  }

  /** Stops the process as the `stop` option says, and drains its output. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(this.#stop);
  }
}

/** Options of {@linkcode run}. */
export interface RunOptions extends CommandOptions {
  /** How long it may run before it gets SIGKILL and the run fails, in ms. @default 60_000 */
  timeoutMs?: number;
  /** Let its output through to this process's instead of collecting it. @default false */
  inherit?: boolean;
  /** Resolve with a failed exit instead of throwing. @default false */
  allowFailure?: boolean;
  /** Kills it (SIGKILL) when aborted. */
  signal?: AbortSignal;
}

/** What a finished process printed, and how it ended. */
export interface RunOutput {
  /** Whether it exited with status 0. */
  success: boolean;
  /** Its exit status. */
  code: number;
  /** The signal that ended it, if one did. */
  signal: Deno.Signal | null;
  /** Its standard output ("" with `inherit`). */
  stdout: string;
  /** Its standard error ("" with `inherit`). */
  stderr: string;
}

/**
 * Runs a command to its end, with no standard input, and collects its output.
 *
 * @example Usage
 * ```ts
 * import { run, SubprocessError } from "./subprocess.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal((await run(["echo", "hello"])).stdout, "hello\n");
 * assert.equal((await run(["false"], { allowFailure: true })).code, 1);
 * await assert.rejects(run(["sh", "-c", "echo nope >&2; exit 2"]), SubprocessError);
 * ```
 *
 * @param cmd The program and its arguments.
 * @param options Its time limit, environment, and whether a failure throws.
 * @returns Its output and exit status.
 * @throws {SubprocessError} When it ran out of time, or failed (unless `allowFailure`).
 */
export async function run(cmd: readonly string[], options: RunOptions = {}): Promise<RunOutput> {
  const { timeoutMs = 60_000, inherit = false, allowFailure = false, signal } = options;
  const stdio = inherit ? "inherit" : "piped";
  const child = _command(cmd, options, { stdin: "null", stdout: stdio, stderr: stdio }).spawn();
  let timedOut = false;
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, timeoutMs);
  signal?.addEventListener("abort", kill, { once: true });
  try {
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    const output = inherit
      ? { ...(await child.status), stdout: "", stderr: "" }
      : await child.output().then((o) => ({
        ...o,
        stdout: decode(o.stdout),
        stderr: decode(o.stderr),
      }));
    const { success, code, stdout, stderr } = output;
    if (timedOut) {
      throw new SubprocessError(`${cmd[0]} did not finish within ${timeoutMs / 1000} s`);
    }
    if (!success && !allowFailure) {
      const tail = (stderr.trim() || stdout.trim()).split("\n").slice(-8).join("\n");
      const how = output.signal !== null ? `signal ${output.signal}` : `status ${code}`;
      throw new SubprocessError(`${cmd.join(" ")} failed with ${how}${tail ? `:\n${tail}` : ""}`);
    }
    return { success, code, signal: output.signal, stdout, stderr };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", kill);
  }
}
