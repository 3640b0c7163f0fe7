/**
 * The benchmark's own errors: bad arguments, and a failure of the run itself.
 *
 * @module
 */

/** Bad command-line arguments. */
export class UsageError extends Error {
  /**
   * @param message What is wrong with the arguments.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** A failure of the benchmark itself (a tool missing, a process that died, a bad reply). */
export class BenchError extends Error {
  /**
   * @param message What went wrong.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BenchError";
  }
}
