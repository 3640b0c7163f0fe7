/**
 * Outbound TCP connections to upstreams, behind an injectable {@linkcode Dialer}.
 *
 * @module
 */
import { connect, type Socket } from "node:net";
import type { HostPort } from "../core/address.ts";

/**
 * Opens a connection to `address`, rejecting when `signal` aborts first.
 *
 * Tests inject their own dialer; the server uses {@linkcode dialTcp}.
 *
 * @typeParam S The socket type produced.
 */
export type Dialer<S = Socket> = (address: HostPort, signal: AbortSignal) => Promise<S>;

/**
 * Dials TCP with `node:net`, half-open allowed and Nagle off, as a proxy wants.
 * The socket is destroyed if `signal` aborts before it connects.
 *
 * The connected socket keeps the `"connect"` and `"error"` listeners this function
 * added (shared by all sockets; removing them would make every later emit slower on
 * V8). An `"error"` with no listener of the caller's still throws, as Node's
 * `emit("error")` does; add one, as with any socket. ("No listener of the caller's"
 * is judged when the error is emitted: a caller's `once` listener has removed itself
 * by the time the shared one runs, so use `on` for errors on these sockets.)
 *
 * @example Usage
 * ```ts ignore
 * import { dialTcp } from "@mtlb/mtlb";
 *
 * const socket = await dialTcp({ hostname: "127.0.0.1", port: 6379 }, AbortSignal.timeout(1000));
 * socket.end();
 * ```
 *
 * @param address Where to connect.
 * @param signal Aborts the attempt (use `AbortSignal.timeout` for a connect timeout).
 * @returns The connected socket.
 * @throws {Error} The socket error (`ECONNREFUSED`, ...) or the signal's reason.
 */
export function dialTcp(address: HostPort, signal: AbortSignal): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const socket = connect({
      host: address.hostname,
      port: address.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    const settle = (error: unknown) => {
      pending.delete(socket);
      signal.removeEventListener("abort", onAbort);
      if (error === undefined) {
        resolve(socket);
      } else {
        socket.destroy();
        reject(error);
      }
    };
    const onAbort = () => settle(signal.reason);
    pending.set(socket, settle);
    signal.addEventListener("abort", onAbort, { once: true });
    socket.on("error", onError);
    socket.on("connect", onConnect);
  });
}

/** Sockets still connecting, and what settles their dial. */
const pending = new WeakMap<Socket, (error: unknown) => void>();

/*
 * The "connect" and "error" listeners of every dialled socket are shared and never
 * removed. Removing the only listener of an event deletes its key from the socket's
 * `_events`, which turns that object into a V8 dictionary for the socket's life (about
 * 0.8 KiB more per connection, and slower lookups on every emit).
 */

function onConnect(this: Socket): void {
  pending.get(this)?.(undefined);
}

function onError(this: Socket, error: Error): void {
  const settle = pending.get(this);
  if (settle !== undefined) {
    settle(error);
  } else if (this.listenerCount("error") === 1) {
    // Nobody else listens: throw, as emit("error") does without listeners.
    throw error;
  }
}
