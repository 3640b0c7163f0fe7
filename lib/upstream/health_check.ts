/**
 * The active check of one upstream: the {@linkcode HealthCheck} a `HealthProbe`
 * runs, the settings it is given, how it fails ({@linkcode HealthCheckError}), and
 * the default one, {@linkcode tcpCheck}: a TCP connect, optionally with a send/expect
 * exchange such as `PING` / `+PONG`, and {@linkcode dialCheck}, the same exchange over
 * any connector (TLS with `tlsDialer`).
 *
 * @module
 */
import type { Socket } from "node:net";
import { formatHostPort, type HostPort } from "../core/address.ts";
import { type Dialer, dialTcp } from "./dial.ts";
import { UpstreamTlsError } from "./tls_dial.ts";

const decoder = new TextDecoder();

/** The outcome of one active probe. */
export type ProbeReason =
  | "probe_ok"
  | "probe_refused"
  | "probe_timeout"
  | "probe_bad_reply"
  | "probe_closed"
  | "probe_tls"
  | "probe_error";

/**
 * Why an active probe failed: the connection was refused, no (complete) reply came
 * in time, the reply did not start with the expected bytes, the upstream closed or
 * reset the connection first, the upstream was refused over TLS (`probe_tls`: its
 * certificate is untrusted, expired or for another name, or the handshake failed; see
 * `UpstreamTlsError`) or sent a TLS alert (such as refusing the client certificate),
 * or anything else (DNS, unreachable host, ...).
 */
export type ProbeFailureReason = Exclude<ProbeReason, "probe_ok">;

/** Check settings with every default applied, as passed to a {@linkcode HealthCheck}. */
export interface HealthCheckSettings {
  /** Bytes written once connected; empty for none. */
  readonly send: Uint8Array;
  /** The expected reply prefix; empty when no reply is awaited. */
  readonly expect: Uint8Array;
  /** Milliseconds between probe starts, before jitter. */
  readonly interval: number;
  /** Milliseconds a probe may take. */
  readonly timeout: number;
  /** Consecutive successes that turn an unhealthy target healthy. */
  readonly rise: number;
  /** Consecutive failures that turn a healthy target unhealthy. */
  readonly fall: number;
  /** Random spread of the interval, as a fraction of it. */
  readonly jitter: number;
}

/**
 * Probes one upstream: resolves when it is healthy, rejects (preferably with a
 * {@linkcode HealthCheckError}) when it is not. It must honour `signal` promptly:
 * `HealthProbe` aborts it on timeout (reason: a `TimeoutError`
 * `DOMException`), on removal and on close, and starts no new probe of that
 * upstream until the promise settles. The default is {@linkcode tcpCheck}.
 */
export type HealthCheck = (
  address: HostPort,
  settings: HealthCheckSettings,
  signal: AbortSignal,
) => Promise<void>;

/**
 * Why a health check failed, with a machine-readable {@linkcode HealthCheckError.reason}.
 *
 * @example Usage
 * ```ts
 * import { HealthCheckError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const error = new HealthCheckError("probe_bad_reply", "Cannot check upstream health: bad reply");
 * assert.equal(error.name, "HealthCheckError");
 * assert.equal(error.reason, "probe_bad_reply");
 * ```
 */
export class HealthCheckError extends Error {
  /** Why the check failed. */
  readonly reason: ProbeFailureReason;

  /**
   * Creates the error.
   *
   * @param reason Why the check failed.
   * @param message A description for the log, which may name the upstream.
   * @param options The `cause`, usually the socket error.
   */
  constructor(reason: ProbeFailureReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HealthCheckError";
    this.reason = reason;
  }
}

/**
 * The default {@linkcode HealthCheck}: connects over TCP with {@linkcode dialTcp},
 * writes `send` if any, reads until it has `expect.length` bytes (failing at the first
 * byte that differs), then closes the connection and waits for it to be closed.
 *
 * It sets no timer of its own: the caller bounds it with `signal`. An abort whose
 * reason is a `TimeoutError` (`AbortSignal.timeout(ms)`, or `HealthProbe`'s
 * stall-aware timeout) rejects with `probe_timeout`; any other abort rejects with the
 * signal's reason.
 *
 * @example Redis-style ping
 * ```ts ignore
 * import { tcpCheck } from "@mtlb/mtlb";
 *
 * const bytes = (text: string) => new TextEncoder().encode(text);
 * await tcpCheck(
 *   { hostname: "127.0.0.1", port: 6379 },
 *   { send: bytes("PING\r\n"), expect: bytes("+PONG") },
 *   AbortSignal.timeout(1000),
 * );
 * ```
 *
 * @param address The upstream.
 * @param settings What to send and which reply prefix to expect (empty for none).
 * @param signal Bounds the check; see above.
 * @returns Resolves once the exchange passed and the connection is closed.
 * @throws {HealthCheckError} `probe_refused`, `probe_timeout`, `probe_bad_reply`,
 * `probe_closed` (closed or reset before the full reply) or `probe_error`.
 */
export function tcpCheck(
  address: HostPort,
  settings: Pick<HealthCheckSettings, "send" | "expect">,
  signal: AbortSignal,
): Promise<void> {
  return check(dialTcp, address, settings, signal);
}

/**
 * The check of {@linkcode tcpCheck} over another connector: `dial` opens the
 * connection, and its failure fails the probe. With a `tlsDialer`, the handshake and
 * the upstream's certificate are part of health: an upstream refused over TLS fails
 * with `probe_tls`, and `send` / `expect` travel inside the TLS session.
 *
 * @example Over TLS
 * ```ts ignore
 * import { dialCheck, HealthProbe, tlsDialer } from "@mtlb/mtlb";
 *
 * const check = dialCheck(tlsDialer({ ca: await Deno.readTextFile("upstream-ca.crt") }));
 * const probe = new HealthProbe([{ address: "10.0.0.5:5432" }], { check });
 * ```
 *
 * @param dial The connector, such as `tlsDialer(...)`.
 * @returns A health check that dials with it.
 */
export function dialCheck(dial: Dialer<Socket>): HealthCheck {
  return (address, settings, signal) => check(dial, address, settings, signal);
}

async function check(
  dial: Dialer<Socket>,
  address: HostPort,
  settings: Pick<HealthCheckSettings, "send" | "expect">,
  signal: AbortSignal,
): Promise<void> {
  let socket: Socket;
  try {
    socket = await dial(address, signal);
  } catch (error) {
    throw checkError(error, address, signal);
  }
  try {
    await exchange(socket, address, settings, signal);
  } finally {
    await closeSocket(socket);
  }
}

function exchange(
  socket: Socket,
  address: HostPort,
  { send, expect }: Pick<HealthCheckSettings, "send" | "expect">,
  signal: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let received = 0;
    let settled = false;
    const finish = (error?: unknown): void => {
      if (settled) return;
      settled = true;
      socket.off("data", onData);
      socket.off("end", onClosed);
      socket.off("close", onClosed);
      socket.off("error", onError);
      signal.removeEventListener("abort", onAbort);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onData = (chunk: Uint8Array): void => {
      const take = Math.min(chunk.length, expect.length - received);
      for (let i = 0; i < take; i++) {
        if (chunk[i] !== expect[received + i]) {
          const reply = decoder.decode(
            new Uint8Array([...expect.subarray(0, received), ...chunk.subarray(0, take)]),
          );
          finish(
            new HealthCheckError(
              "probe_bad_reply",
              `Cannot check upstream health: ${formatHostPort(address)} replied ${
                JSON.stringify(reply)
              }, expected ${JSON.stringify(decoder.decode(expect))}`,
            ),
          );
          return;
        }
      }
      received += take;
      if (received === expect.length) finish();
    };
    const onClosed = (): void => {
      finish(
        new HealthCheckError(
          "probe_closed",
          `Cannot check upstream health: ${
            formatHostPort(address)
          } closed the connection after ${received} of ${expect.length} expected bytes`,
        ),
      );
    };
    const onError = (error: Error): void => finish(checkError(error, address, signal));
    const onAbort = (): void => finish(checkError(signal.reason, address, signal));
    if (signal.aborted) {
      onAbort();
      return;
    }
    socket.once("error", onError);
    socket.once("close", onClosed);
    signal.addEventListener("abort", onAbort, { once: true });
    if (expect.length > 0) {
      socket.on("data", onData);
      socket.once("end", onClosed);
    }
    if (send.length > 0) {
      socket.write(send, (error) => {
        if (error) onError(error);
        else if (expect.length === 0) finish();
      });
    } else if (expect.length === 0) {
      finish();
    }
  });
}

function closeSocket(socket: Socket): Promise<void> {
  return new Promise<void>((resolve) => {
    if (socket.closed) {
      resolve();
      return;
    }
    socket.once("close", () => resolve());
    socket.destroy();
  });
}

function isTimeout(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (error as { name?: unknown }).name === "TimeoutError";
}

/** Maps a dial or socket error to a {@linkcode HealthCheckError}; non-timeout aborts pass through. */
function checkError(error: unknown, address: HostPort, signal: AbortSignal): unknown {
  const where = formatHostPort(address);
  if (signal.aborted && error === signal.reason) {
    if (!isTimeout(error)) return error;
    return new HealthCheckError(
      "probe_timeout",
      `Cannot check upstream health: ${where} did not answer in time`,
      { cause: error },
    );
  }
  if (error instanceof UpstreamTlsError) {
    return new HealthCheckError(
      "probe_tls",
      `Cannot check upstream health: ${error.reason}: ${error.message}`,
      { cause: error },
    );
  }
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_"))) {
    // A TLS alert after the handshake, such as an upstream refusing the client certificate.
    return new HealthCheckError(
      "probe_tls",
      `Cannot check upstream health: ${where}: ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error },
    );
  }
  switch (code) {
    case "ECONNREFUSED":
      return new HealthCheckError(
        "probe_refused",
        `Cannot check upstream health: ${where} refused the connection`,
        { cause: error },
      );
    case "ECONNRESET":
    case "ECONNABORTED":
    case "EPIPE":
      return new HealthCheckError(
        "probe_closed",
        `Cannot check upstream health: ${where} reset the connection`,
        { cause: error },
      );
    case "ETIMEDOUT":
      return new HealthCheckError(
        "probe_timeout",
        `Cannot check upstream health: connecting to ${where} timed out`,
        { cause: error },
      );
    default:
      return new HealthCheckError(
        "probe_error",
        `Cannot check upstream health: ${where}: ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
  }
}

/**
 * The reason a health check's rejection fails a probe with: a
 * {@linkcode HealthCheckError}'s own, `probe_timeout` for any `TimeoutError`,
 * `probe_error` for anything else.
 *
 * @example Usage
 * ```ts
 * import { HealthCheckError, probeFailureReason } from "./health_check.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(probeFailureReason(new HealthCheckError("probe_refused", "Refused")), "probe_refused");
 * assert.equal(probeFailureReason(new DOMException("Too slow", "TimeoutError")), "probe_timeout");
 * assert.equal(probeFailureReason(new Error("boom")), "probe_error");
 * ```
 *
 * @param error What the check rejected with.
 * @returns Why the probe failed.
 */
export function probeFailureReason(error: unknown): ProbeFailureReason {
  if (error instanceof HealthCheckError) return error.reason;
  return isTimeout(error) ? "probe_timeout" : "probe_error";
}
