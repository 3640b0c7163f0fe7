/**
 * The signals `serve` answers: SIGINT or SIGTERM drains (a second one closes every
 * connection now), SIGHUP reloads the config.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";

const log = getLogger(["mtlb", "main"]);

/** How `serve` is told to stop: `signal` drains; `force`, when given, closes at once. */
export interface StopSignals {
  /** Aborted to drain: stop accepting, wait for live connections. */
  signal: AbortSignal;
  /** Aborted to close every connection at once; `undefined` when nothing forces. */
  force: AbortSignal | undefined;
}

/**
 * Stop signals arriving within this long of the first are one request: Ctrl-C under
 * `deno task` reaches the balancer twice (from the terminal, and forwarded by the
 * task runner), which must not skip the drain.
 */
const SAME_STOP_MS = 500;

/**
 * The first SIGINT or SIGTERM aborts `signal` (drain); the next one more than
 * {@linkcode SAME_STOP_MS} later aborts `force` (close now); later ones are ignored.
 * On Windows, SIGINT and SIGBREAK.
 *
 * @returns The signals, and a disposer that removes the signal listeners.
 */
export function stopOnSignals(): StopSignals & Disposable {
  const drain = new AbortController();
  const force = new AbortController();
  let first = 0;
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((name) => {
    const handler = (): void => {
      if (!drain.signal.aborted) {
        first = performance.now();
        drain.abort(name);
      } else if (performance.now() - first < SAME_STOP_MS) {
        log.debug("Already draining; {name} came with the first stop signal", { name });
      } else if (!force.signal.aborted) force.abort(name);
      else log.debug("Already stopping; received {name}", { name });
    };
    Deno.addSignalListener(name, handler);
    return [name, handler] as const;
  });
  return {
    signal: drain.signal,
    force: force.signal,
    [Symbol.dispose]() {
      for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}

/**
 * `target` dispatches `"reload"` on each SIGHUP until disposed (never on Windows).
 *
 * @returns The target, and a disposer that removes the signal listener.
 */
export function reloadOnHangup(): { target: EventTarget } & Disposable {
  const target = new EventTarget();
  if (Deno.build.os === "windows") return { target, [Symbol.dispose]() {} };
  const handler = (): void => void target.dispatchEvent(new Event("reload"));
  Deno.addSignalListener("SIGHUP", handler);
  return { target, [Symbol.dispose]: () => Deno.removeSignalListener("SIGHUP", handler) };
}
