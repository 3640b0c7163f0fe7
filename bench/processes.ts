/**
 * Every process the benchmark starts: run from the repository root with the open-files
 * limit the idle connections need, and stopped together when the run ends, fails or is
 * interrupted.
 *
 * @module
 */
import { ROOT } from "../testing/paths.ts";
import { run as runCommand, type RunOutput, Subprocess } from "../testing/subprocess.ts";

/** The long-running children still running. */
const live = new Set<Subprocess>();
/** Aborted when the run stops: kills the commands still running to their end. */
const stopping = new AbortController();
/** The open-files limit children get; 0 until {@linkcode setOpenFiles}. */
let openFiles = 0;

/**
 * Sets the open-files limit of the children started from now on.
 *
 * @param limit The limit (`ulimit -n`).
 */
export function setOpenFiles(limit: number): void {
  openFiles = limit;
}

/** @returns The open-files limit children get. */
export function openFilesLimit(): number {
  return openFiles;
}

/**
 * Starts a long-running child, stopped by {@linkcode stopAll} if it is still running
 * then. Its standard error is kept for error messages.
 *
 * @param name A label for messages.
 * @param cmd The program and its arguments.
 * @param options Whether to pipe standard input and output, and where to run it (by
 * default the repository root).
 * @returns The child.
 */
export function spawn(
  name: string,
  cmd: readonly string[],
  options: { stdin?: boolean; stdout?: boolean; cwd?: string } = {},
): Subprocess {
  const proc = new Subprocess(cmd, {
    name,
    cwd: options.cwd ?? ROOT,
    openFiles,
    stdin: options.stdin ? "piped" : "null",
    stdout: options.stdout ? "piped" : "null",
  });
  live.add(proc);
  proc.status.then(() => live.delete(proc));
  return proc;
}

/**
 * Runs a command to completion within `timeoutMs` (killed when the run stops).
 *
 * @param cmd The program and its arguments.
 * @param timeoutMs Its time limit.
 * @param options Its environment, and whether its output goes to ours.
 * @returns Its output.
 * @throws {SubprocessError} When it failed or ran out of time.
 */
export function run(
  cmd: readonly string[],
  timeoutMs: number,
  options: { env?: Record<string, string>; inherit?: boolean } = {},
): Promise<RunOutput> {
  return runCommand(cmd, { cwd: ROOT, openFiles, timeoutMs, signal: stopping.signal, ...options });
}

/** Kills every command still running and stops every child (SIGTERM, then SIGKILL). */
export async function stopAll(): Promise<void> {
  stopping.abort();
  await Promise.all([...live].reverse().map((proc) => proc.stop()));
}
