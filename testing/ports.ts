/**
 * Ports on 127.0.0.1: one the kernel picks for a server started later, and waiting
 * until a server accepts connections.
 *
 * @module
 */
import { GuardError } from "./guard.ts";
import { until } from "./poll.ts";
import { type Subprocess, SubprocessError } from "./subprocess.ts";

/** Ports handed out by this process, not handed out again. */
const handedOut = new Set<number>();

/**
 * A port that was free on 127.0.0.1 a moment ago (the caller binds it right away), and
 * that this process has not been given before.
 *
 * @example Usage
 * ```ts
 * import { freePort } from "./ports.ts";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = [await freePort(), await freePort()];
 * assert.notEqual(a, b);
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: a });
 * assert.equal(listener.addr.port, a);
 * ```
 *
 * @returns The port.
 */
export function freePort(): Promise<number> {
  for (;;) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = listener.addr;
    listener.close();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return Promise.resolve(port);
    }
  }
}

/** Options of {@linkcode waitForPort}. */
export interface WaitForPortOptions {
  /** The process that is to listen: the wait fails as soon as it exits. */
  process?: Subprocess;
  /** How long it may take, in ms. @default 60_000 */
  guardMs?: number;
}

/**
 * Waits until 127.0.0.1:`port` accepts a TCP connection, for a server that says nothing
 * when it listens (checked every 50 ms).
 *
 * @example Usage
 * ```ts
 * import { waitForPort } from "./ports.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await waitForPort(listener.addr.port, { guardMs: 1_000 });
 * ```
 *
 * @param port The port.
 * @param options The process that is to listen, and the guard.
 * @throws {SubprocessError} When the process exited first.
 * @throws {GuardError} When nothing listened within the guard.
 */
export async function waitForPort(port: number, options: WaitForPortOptions = {}): Promise<void> {
  const { process, guardMs = 60_000 } = options;
  const listening = await until(
    async () => {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return true;
      } catch {
        // Not yet.
      }
      if (process?.exited) throw new SubprocessError(process.describeExit(await process.status));
      return false;
    },
    guardMs,
    50,
  );
  if (listening) return;
  const tail = process?.stderrTail;
  throw new GuardError(
    `${process?.name ?? "Nothing"} did not listen on 127.0.0.1:${port} within ${guardMs / 1000} s${
      tail ? `:\n${tail}` : ""
    }`,
  );
}
