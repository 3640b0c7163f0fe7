/**
 * How the commands talk to the operator: the arguments they were given, their
 * output streams, the script name for printed command lines and the clock.
 *
 * @module
 */

/** The command line, output and clock a command runs with. */
export interface Io {
  /** The arguments as given, for hints that repeat the command. */
  args: readonly string[];
  out(text: string): void;
  err(text: string): void;
  main: string;
  now(): number;
  version: string;
}

/** A certificate subject on one line: its parts joined by commas. */
export function oneLine(subject: string): string {
  return subject.split("\n").filter((part) => part !== "").join(", ");
}
