/**
 * The byte forwarder: copies bytes both ways between a client socket and an upstream
 * socket, with backpressure, half-close propagation, an idle timeout and a result that
 * says how the connection ended.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";

/**
 * The part of a `node:stream` {@linkcode Duplex} that {@linkcode forward} uses. Both
 * `node:net` `Socket` and `node:tls` `TLSSocket` satisfy it.
 *
 * The socket must emit `Buffer`/`Uint8Array` chunks (no `setEncoding`) and emit
 * `"close"` after it is destroyed, as every `node:net` socket does. Create sockets with
 * `allowHalfOpen: true`, or a FIN from the peer closes the socket before the other
 * direction has finished.
 */
export type ForwardSocket = Pick<
  Duplex,
  | "on"
  | "off"
  | "write"
  | "end"
  | "destroy"
  | "pause"
  | "resume"
  | "destroyed"
  | "closed"
  | "writableLength"
>;

/**
 * Set to `true` on a TLS socket whose `pause()` really stops reading from its TCP
 * socket, so that {@linkcode forward} pauses it for backpressure (see `forward`).
 * `Symbol.for("mtlb.pauseStopsReads")`.
 */
export const PAUSE_STOPS_READS: unique symbol = Symbol.for("mtlb.pauseStopsReads") as never;

/**
 * How a forwarded connection ended. The first terminal cause wins.
 *
 * - `client_closed` / `upstream_closed`: both sides sent FIN and everything was
 *   delivered; named after the side that sent FIN first.
 * - `client_reset` / `upstream_reset`: a socket error on that side (`ECONNRESET`,
 *   `EPIPE`, ...), or the socket closed before its FIN.
 * - `client_timeout` / `upstream_timeout`: `ETIMEDOUT` on that side.
 * - `tls_error`: a TLS-layer error on the client side (`ERR_SSL_*`, `ERR_TLS_*`, or an
 *   OpenSSL error).
 * - `idle_timeout`: no byte moved in either direction for `idleTimeout` milliseconds.
 * - `buffer_overflow`: more than `maxBuffer` bytes waited to be written to one side.
 * - `aborted`: the `signal` aborted (drain or shutdown).
 */
export type ForwardEndReason =
  | "client_closed"
  | "upstream_closed"
  | "client_reset"
  | "upstream_reset"
  | "client_timeout"
  | "upstream_timeout"
  | "tls_error"
  | "idle_timeout"
  | "buffer_overflow"
  | "aborted";

/**
 * Live byte counters. {@linkcode forward} adds every chunk it reads to these fields
 * (it does not reset them), so one object can be read while a connection runs, or be
 * shared by several connections to count bytes in aggregate.
 */
export interface ForwardStats {
  /** Bytes read from the client (and written to the upstream). */
  bytesFromClient: number;
  /** Bytes read from the upstream (and written to the client). */
  bytesFromUpstream: number;
}

/**
 * A limit on how fast {@linkcode forward} reads one side (`BandwidthLimiter`'s
 * throttles are such): called after each read with the bytes read, it answers the
 * milliseconds to wait before reading that side again (0: go on), or a promise of
 * them.
 */
export interface ForwardThrottle {
  /**
   * Counts bytes just read.
   *
   * @param bytes Bytes read.
   * @returns Milliseconds to wait, or a promise of them.
   */
  take(bytes: number): number | Promise<number>;
}

/** Options for {@linkcode forward}. */
export interface ForwardOptions {
  /**
   * Milliseconds without a byte moving in either direction after which both sockets
   * are destroyed with reason `idle_timeout`. Checked by one coarse timer per
   * connection, so the timeout fires between `idleTimeout` and `1.25 * idleTimeout`
   * after the last byte (exactly at `idleTimeout` if no byte ever moved).
   *
   * @default {Infinity}
   */
  idleTimeout?: number;
  /**
   * Ends the forward when aborted: both sockets are destroyed, reason `aborted`.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
  /**
   * The clock for the idle timer and `durationMs`.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Counters that the forward adds to as bytes move, readable while it runs.
   *
   * @default {undefined}
   */
  stats?: ForwardStats;
  /**
   * The most bytes that may wait to be written to one side. A side that sends faster
   * than the other reads is paused long before (at the socket's high-water mark); a
   * side that cannot be paused (a TLS socket without {@linkcode PAUSE_STOPS_READS})
   * fills the other's write buffer, and past this the forward ends with
   * `buffer_overflow`: one connection cannot take the process's memory.
   *
   * @default {Infinity}
   */
  maxBuffer?: number;
  /**
   * Bytes already read from the client before the forward started (for example while
   * the upstream was being dialed). They are written to the upstream first and counted
   * in `bytesFromClient`. A client whose readable side has already ended
   * (`readableEnded`) is treated as having sent its FIN after these bytes.
   *
   * @default {[]}
   */
  head?: readonly Uint8Array[];
  /**
   * Bandwidth limits, per direction: after each read from a side, its throttle says
   * how long to wait, and that side is paused that long (real backpressure: the
   * sender's TCP window closes; nothing is dropped). A side that cannot be paused (a
   * TLS socket without {@linkcode PAUSE_STOPS_READS}) is not throttled.
   *
   * @default {{}}
   */
  throttle?: {
    /** Reads from the client. */
    readonly fromClient?: ForwardThrottle | undefined;
    /** Reads from the upstream. */
    readonly fromUpstream?: ForwardThrottle | undefined;
  };
}

/** How a forward ended, returned by {@linkcode forward}. */
export interface ForwardResult {
  /** The first terminal cause. */
  reason: ForwardEndReason;
  /** The error behind `reason`, if any (the socket error, or the signal's reason). */
  error?: unknown;
  /** Bytes read from the client during this forward. */
  bytesFromClient: number;
  /** Bytes read from the upstream during this forward. */
  bytesFromUpstream: number;
  /**
   * Whether the upstream's FIN had arrived before the end. With `bytesFromUpstream`,
   * it tells an upstream that failed (`upstream_reset` with nothing received) from
   * one that answered or closed cleanly and then reset bytes the client kept
   * writing into the closed connection.
   */
  upstreamEnded: boolean;
  /** Clock milliseconds from the call to the end (both sockets closed). */
  durationMs: number;
}

/** The idle timer checks this many times per `idleTimeout`, bounding the overshoot. */
const IDLE_CHECKS_PER_TIMEOUT = 4;
/** Longer timer delays overflow to 1 ms in `setTimeout`. */
const MAX_TIMER_DELAY = 2 ** 31 - 1;
/** A throttle's timer that fires this early (timers round to milliseconds) is on time. */
const TIMER_SLACK_MS = 1;

type Side = "client" | "upstream";

/**
 * Copies bytes both ways between `client` and `upstream` until both directions have
 * finished, a side fails, the idle timeout passes, or `options.signal` aborts.
 *
 * - Backpressure: when a write returns `false`, the other socket is paused until
 *   `"drain"`, so buffering stays within the sockets' high-water marks plus one chunk.
 *   Exception: a TLS socket (`encrypted: true`) is paused only when it carries
 *   {@linkcode PAUSE_STOPS_READS}. Deno 2.9's `node:tls` server sockets keep reading
 *   and decrypting into memory while paused (a paused socket handed over 32 MB in one
 *   chunk on resume), so pausing bounds nothing, and a FIN that arrives while paused
 *   is lost, which would leave the connection half-open forever (reproduced in
 *   tests/forward_test.ts); the balancer links their reads to the TCP socket's, which
 *   fixes both, and marks them. Bytes for a slow upstream wait in the upstream
 *   socket's write buffer otherwise, up to `maxBuffer`.
 * - Half-close: a FIN from one side ends the other side's writable half; the other
 *   direction keeps flowing until it sends its own FIN.
 * - On a reset, timeout, TLS error, idle timeout or abort, both sockets are destroyed
 *   at once.
 *
 * The promise resolves once both sockets are closed and every listener `forward`
 * attached is removed. It never rejects: errors are reported in the result.
 *
 * @example Usage
 * ```ts ignore
 * import { createServer } from "node:tls";
 * import { dialTcp } from "@mtlb/mtlb";
 * import { forward } from "@mtlb/mtlb";
 *
 * const server = createServer({ key: "...", cert: "...", allowHalfOpen: true }, async (client) => {
 *   let upstream;
 *   try {
 *     upstream = await dialTcp({ hostname: "127.0.0.1", port: 6379 }, AbortSignal.timeout(1000));
 *   } catch {
 *     client.destroy();
 *     return;
 *   }
 *   const result = await forward(client, upstream, { idleTimeout: 300_000 });
 *   // result.reason: "client_closed", "upstream_reset", "idle_timeout", ...
 * });
 * server.listen(6380);
 * ```
 *
 * @example Reading live counters
 * ```ts
 * import { once } from "node:events";
 * import { Duplex } from "node:stream";
 * import assert from "node:assert/strict";
 * import { forward, type ForwardStats } from "@mtlb/mtlb";
 *
 * const sink = () => new Duplex({ read() {}, write(_chunk, _encoding, done) { done(); } });
 * const client = sink();
 * const upstream = sink();
 * const stats: ForwardStats = { bytesFromClient: 0, bytesFromUpstream: 0 };
 * const controller = new AbortController();
 * const done = forward(client, upstream, { stats, signal: controller.signal });
 *
 * const read = once(client, "data"); // resolves after forward's own "data" listener ran
 * client.push(new Uint8Array(3));
 * await read;
 * assert.equal(stats.bytesFromClient, 3);
 *
 * controller.abort();
 * const result = await done;
 * assert.equal(result.reason, "aborted");
 * assert.equal(result.bytesFromClient, 3);
 * ```
 *
 * @param client The client's socket (a `TLSSocket` from a `node:tls` server).
 * @param upstream The upstream's socket (a `node:net` `Socket`).
 * @param options Idle timeout, abort signal, clock and live counters.
 * @returns How the forward ended, with byte counts and duration.
 * @throws {RangeError} If `options.idleTimeout` is not a positive number (the sockets
 * are left untouched).
 */
export function forward(
  client: ForwardSocket,
  upstream: ForwardSocket,
  options: ForwardOptions = {},
): Promise<ForwardResult> {
  const idleTimeout = options.idleTimeout ?? Infinity;
  if (!(idleTimeout > 0)) {
    throw new RangeError(
      `Cannot forward: "idleTimeout" must be a positive number, received ${idleTimeout}`,
    );
  }
  return new Forwarder(client, upstream, options, idleTimeout).done;
}

/** One forwarded connection; the handlers are bound once, not per chunk. */
class Forwarder {
  readonly done: Promise<ForwardResult>;
  #resolve!: (result: ForwardResult) => void;

  readonly #client: ForwardSocket;
  readonly #upstream: ForwardSocket;
  readonly #clock: Clock;
  readonly #stats: ForwardStats;
  readonly #signal: AbortSignal | undefined;
  readonly #start: number;

  /** Whether a socket may be paused for backpressure (never a TLS one, see forward()). */
  readonly #pauseClient: boolean;
  readonly #pauseUpstream: boolean;
  readonly #maxBuffer: number;

  #fromClient = 0;
  #fromUpstream = 0;

  // Throttling: a side is read again once its wait is over and its peer drained.
  readonly #throttleClient: ForwardThrottle | undefined;
  readonly #throttleUpstream: ForwardThrottle | undefined;
  #clientHeldUntil = 0;
  #upstreamHeldUntil = 0;
  #clientTimer: TimerId | undefined;
  #upstreamTimer: TimerId | undefined;
  /** A write to the upstream returned false: the client is paused until "drain". */
  #clientBlocked = false;
  #upstreamBlocked = false;

  // Half-close state: FIN received (readable "end") and FIN sent (writable "finish").
  #clientEnded = false;
  #upstreamEnded = false;
  #clientFinished = false;
  #upstreamFinished = false;
  #firstFin: Side | undefined;
  #clientClosed = false;
  #upstreamClosed = false;

  #reason: ForwardEndReason | undefined;
  #error: unknown;
  #settled = false;

  readonly #idleTimeout: number;
  readonly #idleCheck: number;
  #timer: TimerId | undefined;
  #lastActive: number;
  #movedAtCheck = 0;

  constructor(
    client: ForwardSocket,
    upstream: ForwardSocket,
    options: ForwardOptions,
    idleTimeout: number,
  ) {
    this.done = new Promise((resolve) => this.#resolve = resolve);
    this.#client = client;
    this.#upstream = upstream;
    this.#clock = options.clock ?? systemClock;
    this.#stats = options.stats ?? { bytesFromClient: 0, bytesFromUpstream: 0 };
    this.#signal = options.signal;
    this.#start = this.#lastActive = this.#clock.now();
    this.#idleTimeout = idleTimeout;
    this.#idleCheck = Math.min(idleTimeout / IDLE_CHECKS_PER_TIMEOUT, MAX_TIMER_DELAY);
    this.#clientClosed = client.closed === true;
    this.#upstreamClosed = upstream.closed === true;

    this.#pauseClient = pausable(client);
    this.#pauseUpstream = pausable(upstream);
    this.#maxBuffer = options.maxBuffer ?? Infinity;
    this.#throttleClient = this.#pauseClient ? options.throttle?.fromClient : undefined;
    this.#throttleUpstream = this.#pauseUpstream ? options.throttle?.fromUpstream : undefined;
    client.on("data", this.#onClientData);
    client.on("end", this.#onClientEnd);
    client.on("finish", this.#onClientFinish);
    client.on("drain", this.#onClientDrain);
    client.on("error", this.#onClientError);
    client.on("close", this.#onClientClose);
    upstream.on("data", this.#onUpstreamData);
    upstream.on("end", this.#onUpstreamEnd);
    upstream.on("finish", this.#onUpstreamFinish);
    upstream.on("drain", this.#onUpstreamDrain);
    upstream.on("error", this.#onUpstreamError);
    upstream.on("close", this.#onUpstreamClose);

    if (this.#signal?.aborted) {
      this.#terminate("aborted", this.#signal.reason);
      return;
    }
    if (client.destroyed) {
      this.#terminate("client_reset", undefined);
      return;
    }
    if (upstream.destroyed) {
      this.#terminate("upstream_reset", undefined);
      return;
    }
    this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
    if (idleTimeout !== Infinity) {
      this.#timer = this.#clock.setTimeout(this.#onIdleCheck, this.#idleCheck);
    }
    for (const chunk of options.head ?? []) this.#onClientData(chunk);
    // A "data" listener does not restart a socket that was paused explicitly.
    if (this.#clientTimer === undefined) client.resume();
    upstream.resume();
    if ((client as { readableEnded?: boolean }).readableEnded === true) this.#onClientEnd();
  }

  // Hot path: one call per chunk, no allocation.
  #onClientData = (chunk: Uint8Array): void => {
    const n = chunk.length;
    this.#fromClient += n;
    this.#stats.bytesFromClient += n;
    if (!this.#upstream.write(chunk)) {
      this.#clientBlocked = true;
      if (this.#pauseClient) this.#client.pause();
      if (this.#upstream.writableLength > this.#maxBuffer) {
        this.#terminate("buffer_overflow", undefined);
      }
    }
    const throttle = this.#throttleClient;
    if (throttle !== undefined) {
      const wait = throttle.take(n);
      if (wait !== 0) this.#holdClient(wait);
    }
  };

  #onUpstreamData = (chunk: Uint8Array): void => {
    const n = chunk.length;
    this.#fromUpstream += n;
    this.#stats.bytesFromUpstream += n;
    if (!this.#client.write(chunk)) {
      this.#upstreamBlocked = true;
      if (this.#pauseUpstream) this.#upstream.pause();
      if (this.#client.writableLength > this.#maxBuffer) {
        this.#terminate("buffer_overflow", undefined);
      }
    }
    const throttle = this.#throttleUpstream;
    if (throttle !== undefined) {
      const wait = throttle.take(n);
      if (wait !== 0) this.#holdUpstream(wait);
    }
  };

  #onUpstreamDrain = (): void => {
    this.#clientBlocked = false;
    if (this.#clientTimer === undefined) this.#client.resume();
  };

  #onClientDrain = (): void => {
    this.#upstreamBlocked = false;
    if (this.#upstreamTimer === undefined) this.#upstream.resume();
  };

  /** Stops reading the client for `wait` ms (or once a promised wait is known). */
  #holdClient(wait: number | Promise<number>): void {
    this.#client.pause();
    if (typeof wait === "number") {
      this.#clientHeldUntil = Math.max(this.#clientHeldUntil, this.#clock.now() + wait);
      this.#clientTimer ??= this.#clock.setTimeout(this.#onClientHeld, wait);
      return;
    }
    // Held by a zero-delay timer until the store answers, then for the wait.
    this.#clientHeldUntil = Infinity;
    this.#clientTimer ??= this.#clock.setTimeout(this.#onClientHeld, MAX_TIMER_DELAY);
    wait.then((ms) => ms, () => 0).then((ms) => {
      if (this.#reason !== undefined) return;
      this.#clientHeldUntil = this.#clock.now() + ms;
      this.#rearm("client");
    });
  }

  #holdUpstream(wait: number | Promise<number>): void {
    this.#upstream.pause();
    if (typeof wait === "number") {
      this.#upstreamHeldUntil = Math.max(this.#upstreamHeldUntil, this.#clock.now() + wait);
      this.#upstreamTimer ??= this.#clock.setTimeout(this.#onUpstreamHeld, wait);
      return;
    }
    this.#upstreamHeldUntil = Infinity;
    this.#upstreamTimer ??= this.#clock.setTimeout(this.#onUpstreamHeld, MAX_TIMER_DELAY);
    wait.then((ms) => ms, () => 0).then((ms) => {
      if (this.#reason !== undefined) return;
      this.#upstreamHeldUntil = this.#clock.now() + ms;
      this.#rearm("upstream");
    });
  }

  /** Restarts a side's hold timer for what is left of its wait. */
  #rearm(side: Side): void {
    const now = this.#clock.now();
    if (side === "client") {
      if (this.#clientTimer !== undefined) this.#clock.clearTimeout(this.#clientTimer);
      this.#clientTimer = this.#clock.setTimeout(
        this.#onClientHeld,
        Math.max(0, this.#clientHeldUntil - now),
      );
    } else {
      if (this.#upstreamTimer !== undefined) this.#clock.clearTimeout(this.#upstreamTimer);
      this.#upstreamTimer = this.#clock.setTimeout(
        this.#onUpstreamHeld,
        Math.max(0, this.#upstreamHeldUntil - now),
      );
    }
  }

  #onClientHeld = (): void => {
    this.#clientTimer = undefined;
    if (this.#reason !== undefined) return;
    // Chunks read while the pause took effect added to the wait.
    if (this.#clientHeldUntil > this.#clock.now() + TIMER_SLACK_MS) return this.#rearm("client");
    if (!this.#clientBlocked) this.#client.resume();
  };

  #onUpstreamHeld = (): void => {
    this.#upstreamTimer = undefined;
    if (this.#reason !== undefined) return;
    if (this.#upstreamHeldUntil > this.#clock.now() + TIMER_SLACK_MS) {
      return this.#rearm("upstream");
    }
    if (!this.#upstreamBlocked) this.#upstream.resume();
  };

  #onClientEnd = (): void => {
    this.#clientEnded = true;
    this.#firstFin ??= "client";
    if (this.#reason === undefined) this.#upstream.end();
    this.#checkClean();
  };

  #onUpstreamEnd = (): void => {
    this.#upstreamEnded = true;
    this.#firstFin ??= "upstream";
    if (this.#reason === undefined) this.#client.end();
    this.#checkClean();
  };

  #onClientFinish = (): void => {
    this.#clientFinished = true;
    this.#checkClean();
  };

  #onUpstreamFinish = (): void => {
    this.#upstreamFinished = true;
    this.#checkClean();
  };

  #onClientError = (error: unknown): void => {
    this.#terminate(classifyError("client", error), error);
  };

  #onUpstreamError = (error: unknown): void => {
    this.#terminate(classifyError("upstream", error), error);
  };

  #onClientClose = (): void => {
    this.#clientClosed = true;
    // Closed before its FIN came in and its own FIN went out: an abrupt close.
    if (!(this.#clientEnded && this.#clientFinished)) this.#terminate("client_reset", undefined);
    this.#checkClosed();
  };

  #onUpstreamClose = (): void => {
    this.#upstreamClosed = true;
    if (!(this.#upstreamEnded && this.#upstreamFinished)) {
      this.#terminate("upstream_reset", undefined);
    }
    this.#checkClosed();
  };

  #onAbort = (): void => {
    this.#terminate("aborted", this.#signal?.reason);
  };

  #onIdleCheck = (): void => {
    this.#timer = undefined;
    if (this.#reason !== undefined) return;
    const now = this.#clock.now();
    const moved = this.#fromClient + this.#fromUpstream;
    if (moved !== this.#movedAtCheck) {
      // Bytes moved at some point since the last check; count them as moving now.
      this.#movedAtCheck = moved;
      this.#lastActive = now;
    }
    const idleFor = now - this.#lastActive;
    if (idleFor >= this.#idleTimeout) {
      this.#terminate("idle_timeout", undefined);
      return;
    }
    this.#timer = this.#clock.setTimeout(
      this.#onIdleCheck,
      Math.min(this.#idleCheck, this.#idleTimeout - idleFor),
    );
  };

  #checkClean(): void {
    if (
      this.#clientEnded && this.#upstreamEnded && this.#clientFinished && this.#upstreamFinished
    ) {
      this.#terminate(
        this.#firstFin === "upstream" ? "upstream_closed" : "client_closed",
        undefined,
      );
    }
  }

  /** Records the first terminal cause and destroys both sockets; later calls are ignored. */
  #terminate(reason: ForwardEndReason, error: unknown): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#error = error;
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#clientTimer !== undefined) this.#clock.clearTimeout(this.#clientTimer);
    if (this.#upstreamTimer !== undefined) this.#clock.clearTimeout(this.#upstreamTimer);
    this.#clientTimer = this.#upstreamTimer = undefined;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#client.destroy();
    this.#upstream.destroy();
    this.#checkClosed();
  }

  /** Resolves once a terminal cause is recorded and both sockets have emitted "close". */
  #checkClosed(): void {
    if (this.#reason === undefined || !this.#clientClosed || !this.#upstreamClosed) return;
    if (this.#settled) return;
    this.#settled = true;
    const client = this.#client;
    const upstream = this.#upstream;
    client.off("data", this.#onClientData);
    client.off("end", this.#onClientEnd);
    client.off("finish", this.#onClientFinish);
    client.off("drain", this.#onClientDrain);
    client.off("error", this.#onClientError);
    client.off("close", this.#onClientClose);
    upstream.off("data", this.#onUpstreamData);
    upstream.off("end", this.#onUpstreamEnd);
    upstream.off("finish", this.#onUpstreamFinish);
    upstream.off("drain", this.#onUpstreamDrain);
    upstream.off("error", this.#onUpstreamError);
    upstream.off("close", this.#onUpstreamClose);
    const result: ForwardResult = {
      reason: this.#reason,
      bytesFromClient: this.#fromClient,
      bytesFromUpstream: this.#fromUpstream,
      upstreamEnded: this.#upstreamEnded,
      durationMs: this.#clock.now() - this.#start,
    };
    if (this.#error !== undefined) result.error = this.#error;
    this.#resolve(result);
  }
}

/** Whether pausing `socket` stops reading it (a plain socket, or a marked TLS one). */
function pausable(socket: ForwardSocket): boolean {
  const marked = socket as { encrypted?: boolean; [PAUSE_STOPS_READS]?: boolean };
  return marked.encrypted !== true || marked[PAUSE_STOPS_READS] === true;
}

/** Maps a socket error on `side` to a {@linkcode ForwardEndReason}. */
function classifyError(side: Side, error: unknown): ForwardEndReason {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ETIMEDOUT") return side === "client" ? "client_timeout" : "upstream_timeout";
  if (side === "client" && isTlsError(error, code)) return "tls_error";
  return side === "client" ? "client_reset" : "upstream_reset";
}

/** Whether `error` comes from the TLS layer (Node and Deno codes, or OpenSSL's fields). */
function isTlsError(error: unknown, code: unknown): boolean {
  if (typeof code === "string" && (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_"))) {
    return true;
  }
  return typeof (error as { library?: unknown } | null)?.library === "string";
}
