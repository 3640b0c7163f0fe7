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
 * - `buffer_overflow`: more than `maxBuffer` bytes waited to be written to one side, sent
 *   by a side that cannot be paused.
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
   * The most bytes that may wait to be written to one side for a sender that cannot
   * be paused (a TLS socket without {@linkcode PAUSE_STOPS_READS}): it fills the
   * other's write buffer, and past this the forward ends with `buffer_overflow`, so one
   * connection cannot take the process's memory. A sender that can be paused is paused
   * instead (at the socket's high-water mark, or for a plain upstream socket once 256
   * KiB or a quarter of this wait), and then holds at most that and one read, even
   * when this is lower.
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
 * A client is paused once this many bytes wait to be written to a plain (not TLS)
 * upstream socket, or a quarter of `maxBuffer` if less, rather than as soon as a write
 * passes the socket's high-water mark (64 KiB). Writes that wait together go out in
 * one `writev`, and the client's reads stop and start (two handles each time, for a
 * linked TLS socket) a quarter as often: a 512 MiB upload cost 1.14 times the Deno
 * floor's CPU at the high-water mark and 1.03 times at 256 KiB. A TLS socket keeps its
 * high-water mark.
 */
const PLAIN_PAUSE_AT = 256 * 1024;

/**
 * Copies bytes both ways between `client` and `upstream` until both directions have
 * finished, a side fails, the idle timeout passes, or `options.signal` aborts.
 *
 * - Backpressure: when a write returns `false`, the other socket is paused until
 *   `"drain"`, so buffering stays within the sockets' high-water marks plus one chunk;
 *   the client is paused only once 256 KiB wait for a plain (not TLS) upstream socket
 *   (a quarter of `maxBuffer` if less), so that they go out together.
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
 * @param options Idle timeout, abort signal, clock, live counters and throttles.
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

/** The forward a socket takes part in, for the listeners shared by every socket. */
const FORWARDER = Symbol("mtlb.forwarder");

/** A socket as {@linkcode Forwarder} marks it. */
type Attached = ForwardSocket & { [FORWARDER]?: Forwarder | undefined };

/**
 * One forwarded connection. Its sockets' listeners are the same functions for every
 * connection (they find the forward on the socket), so a connection costs no closure.
 */
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
  /** Bytes waiting to be written to the upstream that pause the client (see PLAIN_PAUSE_AT). */
  readonly #upstreamPauseAt: number;

  #fromClient = 0;
  #fromUpstream = 0;

  // Throttling: a held side is read again once its wait is over and its peer drained.
  // One timer per throttled connection, for whichever side's wait ends first; its
  // callback is bound only for a connection that has a throttle.
  readonly #throttleClient: ForwardThrottle | undefined;
  readonly #throttleUpstream: ForwardThrottle | undefined;
  /** When a held side may be read again (Infinity: until a promised wait is known). */
  #clientHeldUntil: number | undefined;
  #upstreamHeldUntil: number | undefined;
  #holdTimer: TimerId | undefined;
  #holdTimerAt = Infinity;
  readonly #onHoldTimer: (() => void) | undefined;
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
    this.#upstreamPauseAt = (upstream as { encrypted?: boolean }).encrypted === true
      ? 0
      : Math.min(PLAIN_PAUSE_AT, this.#maxBuffer / 4);
    this.#throttleClient = this.#pauseClient ? options.throttle?.fromClient : undefined;
    this.#throttleUpstream = this.#pauseUpstream ? options.throttle?.fromUpstream : undefined;
    if (this.#throttleClient !== undefined || this.#throttleUpstream !== undefined) {
      this.#onHoldTimer = this.#releaseHeld.bind(this);
    }
    (client as Attached)[FORWARDER] = this;
    (upstream as Attached)[FORWARDER] = this;
    client.on("data", Forwarder.#clientData);
    client.on("end", Forwarder.#clientEnd);
    client.on("finish", Forwarder.#clientFinish);
    client.on("drain", Forwarder.#clientDrain);
    client.on("error", Forwarder.#clientError);
    client.on("close", Forwarder.#clientClose);
    upstream.on("data", Forwarder.#upstreamData);
    upstream.on("end", Forwarder.#upstreamEnd);
    upstream.on("finish", Forwarder.#upstreamFinish);
    upstream.on("drain", Forwarder.#upstreamDrain);
    upstream.on("error", Forwarder.#upstreamError);
    upstream.on("close", Forwarder.#upstreamClose);

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
    if (this.#signal !== undefined) Forwarder.#watch(this.#signal, this);
    if (idleTimeout !== Infinity) {
      this.#timer = this.#clock.setTimeout(this.#onIdleCheck, this.#idleCheck);
    }
    for (const chunk of options.head ?? []) this.#onClientData(chunk);
    // A "data" listener does not restart a socket that was paused explicitly.
    if (this.#clientHeldUntil === undefined) client.resume();
    upstream.resume();
    if ((client as { readableEnded?: boolean }).readableEnded === true) this.#onClientEnd();
  }

  // Hot path: one call per chunk, no allocation.
  #onClientData(chunk: Uint8Array): void {
    const n = chunk.length;
    this.#fromClient += n;
    this.#stats.bytesFromClient += n;
    if (!this.#upstream.write(chunk)) {
      const queued = this.#upstream.writableLength;
      if (queued >= this.#upstreamPauseAt) {
        this.#clientBlocked = true;
        if (this.#pauseClient) this.#client.pause();
      }
      // A side that can be paused holds at most the high-water mark and a chunk, whatever
      // maxBuffer says; only one that cannot is cut off.
      if (queued > this.#maxBuffer && !this.#pauseClient) {
        this.#terminate("buffer_overflow", undefined);
      }
    }
    const throttle = this.#throttleClient;
    if (throttle !== undefined) {
      const wait = throttle.take(n);
      if (wait !== 0) this.#hold("client", wait);
    }
  }

  #onUpstreamData(chunk: Uint8Array): void {
    const n = chunk.length;
    this.#fromUpstream += n;
    this.#stats.bytesFromUpstream += n;
    if (!this.#client.write(chunk)) {
      this.#upstreamBlocked = true;
      if (this.#pauseUpstream) this.#upstream.pause();
      if (this.#client.writableLength > this.#maxBuffer && !this.#pauseUpstream) {
        this.#terminate("buffer_overflow", undefined);
      }
    }
    const throttle = this.#throttleUpstream;
    if (throttle !== undefined) {
      const wait = throttle.take(n);
      if (wait !== 0) this.#hold("upstream", wait);
    }
  }

  #onUpstreamDrain(): void {
    this.#clientBlocked = false;
    if (this.#clientHeldUntil === undefined) this.#client.resume();
  }

  #onClientDrain(): void {
    this.#upstreamBlocked = false;
    if (this.#upstreamHeldUntil === undefined) this.#upstream.resume();
  }

  /** Stops reading `side` for `wait` ms, or once a promised wait is known, for it. */
  #hold(side: Side, wait: number | Promise<number>): void {
    const now = this.#clock.now();
    if (side === "client") {
      this.#client.pause();
      this.#clientHeldUntil = typeof wait === "number"
        ? Math.max(this.#clientHeldUntil ?? 0, now + wait)
        : Infinity;
    } else {
      this.#upstream.pause();
      this.#upstreamHeldUntil = typeof wait === "number"
        ? Math.max(this.#upstreamHeldUntil ?? 0, now + wait)
        : Infinity;
    }
    if (typeof wait === "number") this.#armHold(now);
    else void this.#holdFor(side, wait);
  }

  /** Holds `side` for a promised wait once it is known (none if it fails). */
  async #holdFor(side: Side, wait: Promise<number>): Promise<void> {
    let ms = 0;
    try {
      ms = await wait;
    } catch {
      // The throttle could not tell: read on.
    }
    if (this.#reason !== undefined) return;
    const now = this.#clock.now();
    if (side === "client") this.#clientHeldUntil = now + ms;
    else this.#upstreamHeldUntil = now + ms;
    this.#armHold(now);
  }

  /**
   * Makes the hold timer fire by the earliest end of a wait. A timer due earlier is
   * kept: reads during a pause extend it, and it re-arms for what is left.
   */
  #armHold(now: number): void {
    const next = Math.min(this.#clientHeldUntil ?? Infinity, this.#upstreamHeldUntil ?? Infinity);
    const fire = this.#onHoldTimer;
    if (fire === undefined || next === Infinity || this.#holdTimerAt <= next) return;
    if (this.#holdTimer !== undefined) this.#clock.clearTimeout(this.#holdTimer);
    this.#holdTimerAt = next;
    this.#holdTimer = this.#clock.setTimeout(
      fire,
      Math.min(Math.max(0, next - now), MAX_TIMER_DELAY),
    );
  }

  /** The hold timer: reads again each side whose wait is over and whose peer drained. */
  #releaseHeld(): void {
    this.#holdTimer = undefined;
    this.#holdTimerAt = Infinity;
    if (this.#reason !== undefined) return;
    const now = this.#clock.now();
    const due = now + TIMER_SLACK_MS;
    if (this.#clientHeldUntil !== undefined && this.#clientHeldUntil <= due) {
      this.#clientHeldUntil = undefined;
      if (!this.#clientBlocked) this.#client.resume();
    }
    if (this.#upstreamHeldUntil !== undefined && this.#upstreamHeldUntil <= due) {
      this.#upstreamHeldUntil = undefined;
      if (!this.#upstreamBlocked) this.#upstream.resume();
    }
    this.#armHold(now);
  }

  #onClientEnd(): void {
    this.#clientEnded = true;
    this.#firstFin ??= "client";
    if (this.#reason === undefined) this.#upstream.end();
    this.#checkClean();
  }

  #onUpstreamEnd(): void {
    this.#upstreamEnded = true;
    this.#firstFin ??= "upstream";
    if (this.#reason === undefined) this.#client.end();
    this.#checkClean();
  }

  #onClientFinish(): void {
    this.#clientFinished = true;
    this.#checkClean();
  }

  #onUpstreamFinish(): void {
    this.#upstreamFinished = true;
    this.#checkClean();
  }

  #onClientError(error: unknown): void {
    this.#terminate(classifyError("client", error), error);
  }

  #onUpstreamError(error: unknown): void {
    this.#terminate(classifyError("upstream", error), error);
  }

  #onClientClose(): void {
    this.#clientClosed = true;
    // Closed before its FIN came in and its own FIN went out: an abrupt close.
    if (!(this.#clientEnded && this.#clientFinished)) this.#terminate("client_reset", undefined);
    this.#checkClosed();
  }

  #onUpstreamClose(): void {
    this.#upstreamClosed = true;
    if (!(this.#upstreamEnded && this.#upstreamFinished)) {
      this.#terminate("upstream_reset", undefined);
    }
    this.#checkClosed();
  }

  // The listeners of every forward's sockets: `this` is the socket.
  static #clientData(this: Attached, chunk: Uint8Array): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onClientData(chunk);
  }
  static #clientEnd(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onClientEnd();
  }
  static #clientFinish(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onClientFinish();
  }
  static #clientDrain(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onClientDrain();
  }
  static #clientError(this: Attached, error: unknown): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onClientError(error);
  }
  static #clientClose(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onClientClose();
  }
  static #upstreamData(this: Attached, chunk: Uint8Array): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onUpstreamData(chunk);
  }
  static #upstreamEnd(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onUpstreamEnd();
  }
  static #upstreamFinish(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onUpstreamFinish();
  }
  static #upstreamDrain(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onUpstreamDrain();
  }
  static #upstreamError(this: Attached, error: unknown): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onUpstreamError(error);
  }
  static #upstreamClose(this: Attached): void {
    const forwarder = this[FORWARDER];
    if (forwarder !== undefined) forwarder.#onUpstreamClose();
  }

  /**
   * The forwards still running under each signal. A signal shared by many connections
   * (a server's shutdown) gets one listener, not one per connection, whose removal
   * would scan every other.
   */
  static #watched = new WeakMap<AbortSignal, Set<Forwarder>>();

  static #watch(signal: AbortSignal, forwarder: Forwarder): void {
    let set = Forwarder.#watched.get(signal);
    if (set === undefined) {
      const forwarders = set = new Set();
      Forwarder.#watched.set(signal, forwarders);
      signal.addEventListener("abort", () => {
        for (const f of [...forwarders]) f.#terminate("aborted", signal.reason);
      }, { once: true });
    }
    set.add(forwarder);
  }

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
    if (this.#holdTimer !== undefined) {
      this.#clock.clearTimeout(this.#holdTimer);
      this.#holdTimer = undefined;
    }
    if (this.#signal !== undefined) Forwarder.#watched.get(this.#signal)?.delete(this);
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
    client.off("data", Forwarder.#clientData);
    client.off("end", Forwarder.#clientEnd);
    client.off("finish", Forwarder.#clientFinish);
    client.off("drain", Forwarder.#clientDrain);
    client.off("error", Forwarder.#clientError);
    client.off("close", Forwarder.#clientClose);
    upstream.off("data", Forwarder.#upstreamData);
    upstream.off("end", Forwarder.#upstreamEnd);
    upstream.off("finish", Forwarder.#upstreamFinish);
    upstream.off("drain", Forwarder.#upstreamDrain);
    upstream.off("error", Forwarder.#upstreamError);
    upstream.off("close", Forwarder.#upstreamClose);
    (client as Attached)[FORWARDER] = undefined;
    (upstream as Attached)[FORWARDER] = undefined;
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
