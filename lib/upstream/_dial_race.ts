/**
 * One `LeastConnPool.connect` call: the dials it races against their connect
 * timeouts, the failures it reports, and the first socket to connect.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { HostPort } from "../core/address.ts";
import type { Clock, TimerId } from "../core/clock.ts";
import { type NoHealthyUpstreamError, UpstreamConnectError } from "./pool_errors.ts";
import type {
  DialFailure,
  DialFailureReason,
  UpstreamConnection,
  UpstreamConnectOptions,
} from "./upstream_connection.ts";
import type { UpstreamLease } from "./upstream_lease.ts";

const logger = getLogger(["mtlb", "pool"]);

/** What a {@linkcode DialRace} needs of an upstream: where it is. */
export interface RaceEntry {
  /** The upstream, `host:port` as configured. */
  readonly address: string;
  /** Its parsed address, for the dialer. */
  readonly hostPort: HostPort;
}

/**
 * What a {@linkcode DialRace} needs from its pool.
 *
 * @typeParam E The pool's entry for an upstream.
 */
export interface RacePool<E extends RaceEntry> {
  /** Times the connect timeouts. */
  clock: Clock;
  /**
   * The next upstream to dial, not among `tried` if it can help it, never among
   * `barred`; none when nothing is healthy.
   */
  pick(tried: ReadonlySet<E>, barred: ReadonlySet<E>): E | undefined;
  /** Counts a connection on `entry` and returns its lease. */
  lease(entry: E): UpstreamLease;
  /** The error for a pool with no healthy upstream. */
  noHealthy(): NoHealthyUpstreamError;
}

interface Attempt<E> {
  readonly entry: E;
  readonly lease: UpstreamLease;
  readonly controller: AbortController;
  timer: TimerId | undefined;
  /** Its connect timeout passed (and was reported); it may still connect. */
  timedOut: boolean;
}

/**
 * One `LeastConnPool.connect` call: dials in turn, and when a dial's connect
 * timeout passes, starts the next attempt without abandoning it (a SYN that a full
 * accept queue dropped is sent again by the kernel after 1 s, 3 s, ...), so the first
 * of them to connect wins. Every dial still pending when the last attempt's timeout
 * passes is aborted.
 *
 * @typeParam S The socket type.
 * @typeParam E The pool's entry for an upstream.
 */
export class DialRace<S, E extends RaceEntry> {
  /** Settles with the first socket to connect, or with why none did. */
  readonly done: Promise<UpstreamConnection<S>>;
  #resolve!: (connection: UpstreamConnection<S>) => void;
  #reject!: (error: unknown) => void;
  readonly #options: UpstreamConnectOptions<S>;
  readonly #attempts: number;
  readonly #pool: RacePool<E>;
  readonly #failures: DialFailure[] = [];
  readonly #tried = new Set<E>();
  /** Upstreams whose dial failed for good (`isFinal`): not dialled again. */
  readonly #barred = new Set<E>();
  readonly #live = new Set<Attempt<E>>();
  #started = 0;
  #settled = false;
  #cause: unknown;

  /**
   * Starts the first dial at once.
   *
   * @param options The caller's options of `LeastConnPool.connect`.
   * @param attempts The most dials to make.
   * @param pool The pool that picks and counts.
   */
  constructor(options: UpstreamConnectOptions<S>, attempts: number, pool: RacePool<E>) {
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#options = options;
    this.#attempts = attempts;
    this.#pool = pool;
    options.signal?.addEventListener("abort", this.#onAbort, { once: true });
    this.#next();
  }

  /**
   * Starts the next attempt; with none left, ends the call when nothing is pending, or
   * aborts what is pending once all of it is past its own timeout.
   */
  #next(): void {
    if (this.#settled) return;
    if (this.#started < this.#attempts) {
      const entry = this.#pool.pick(this.#tried, this.#barred);
      if (entry !== undefined) return this.#start(entry);
      this.#cause = this.#pool.noHealthy();
      if (this.#started === 0) return this.#fail(this.#cause);
      this.#started = this.#attempts; // nothing left to try: wait for the pending ones
    }
    if (this.#live.size === 0) {
      return this.#fail(new UpstreamConnectError(this.#failures, { cause: this.#cause }));
    }
    for (const live of this.#live) if (!live.timedOut) return;
    const error = new DOMException(
      `Upstream connect timed out after ${this.#options.timeout}ms`,
      "TimeoutError",
    );
    for (const live of this.#live) live.controller.abort(error);
  }

  #start(entry: E): void {
    this.#started++;
    this.#tried.add(entry);
    const attempt: Attempt<E> = {
      entry,
      lease: this.#pool.lease(entry),
      controller: new AbortController(),
      timer: undefined,
      timedOut: false,
    };
    // Pending before the dial starts: a dialer may abort the caller's signal at once.
    this.#live.add(attempt);
    attempt.timer = this.#pool.clock.setTimeout(
      () => this.#onTimeout(attempt),
      this.#options.timeout,
    );
    let dial: Promise<S>;
    try {
      dial = Promise.resolve(this.#options.dial(entry.hostPort, attempt.controller.signal));
    } catch (error) {
      dial = Promise.reject(error);
    }
    dial.then(
      (socket) => this.#onConnected(attempt, socket),
      (error) => this.#onError(attempt, error),
    );
  }

  /** Reports the timeout and starts the next attempt; the late dial keeps racing it. */
  #onTimeout(attempt: Attempt<E>): void {
    attempt.timer = undefined;
    if (this.#settled) return;
    attempt.timedOut = true;
    const error = new DOMException(
      `Upstream connect timed out after ${this.#options.timeout}ms`,
      "TimeoutError",
    );
    this.#record(attempt.entry, "dial_timeout", error);
    this.#cause = error;
    this.#next();
  }

  #onConnected(attempt: Attempt<E>, socket: S): void {
    this.#end(attempt);
    if (this.#settled) {
      // Another attempt won, or the call failed: this one is not wanted.
      attempt.lease.release();
      closeSocket(socket, this.#options.close);
      return;
    }
    this.#settle();
    for (const live of this.#live) {
      live.controller.abort(new DOMException("Another upstream connected first", "AbortError"));
    }
    this.#resolve({ socket, lease: attempt.lease, failures: this.#failures });
  }

  #onError(attempt: Attempt<E>, error: unknown): void {
    this.#end(attempt);
    attempt.lease.release();
    if (this.#settled) return;
    const signal = this.#options.signal;
    if (signal?.aborted) {
      if (this.#live.size === 0) this.#fail(signal.reason);
      return;
    }
    if (!attempt.timedOut) {
      this.#record(attempt.entry, isRefused(error) ? "dial_refused" : "dial_error", error);
      if (this.#options.isFinal?.(error) === true) this.#barred.add(attempt.entry);
      this.#cause = error;
      this.#next();
      return;
    }
    // A dial already reported as timed out failed for good; the attempt that took over
    // from it, if any, goes on.
    if (this.#live.size === 0 || this.#started >= this.#attempts) this.#next();
  }

  /** The caller gave up: abort every pending dial; a socket that connects anyway is returned. */
  #onAbort = (): void => {
    for (const live of this.#live) live.controller.abort(this.#options.signal!.reason);
    if (this.#live.size === 0 && !this.#settled) this.#fail(this.#options.signal!.reason);
  };

  #record(entry: E, reason: DialFailureReason, error: unknown): void {
    const address = entry.address;
    this.#failures.push({ address, reason, error });
    logger.debug("Dial to {address} failed: {reason}", { address, reason, error });
    const hook = this.#options.onDialFailure;
    if (hook === undefined) return;
    try {
      hook(address, reason, error);
    } catch (hookError) {
      logger.error("onDialFailure threw for {address}: {error}", { address, error: hookError });
    }
  }

  #end(attempt: Attempt<E>): void {
    this.#live.delete(attempt);
    if (attempt.timer !== undefined) this.#pool.clock.clearTimeout(attempt.timer);
    attempt.timer = undefined;
  }

  #settle(): void {
    this.#settled = true;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
  }

  #fail(error: unknown): void {
    this.#settle();
    this.#reject(error);
  }
}

/** Closes a socket nobody wants: with `close`, else its `destroy()` if it has one. */
function closeSocket<S>(socket: S, close: ((socket: S) => void) | undefined): void {
  try {
    if (close !== undefined) close(socket);
    else (socket as { destroy?: () => void } | null)?.destroy?.();
  } catch (error) {
    logger.error("Closing an unwanted upstream socket failed: {error}", { error });
  }
}

function isRefused(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionRefused ||
    (typeof error === "object" && error !== null &&
      (error as { code?: unknown }).code === "ECONNREFUSED");
}
