/**
 * Outbound TCP connections to upstreams, behind an injectable {@linkcode Dialer}.
 *
 * @module
 */
import { connect, type Socket } from "node:net";
import type { HostPort } from "./address.ts";

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
    const onAbort = () => {
      cleanup();
      socket.destroy();
      reject(signal.reason);
    };
    const onError = (error: Error) => {
      cleanup();
      socket.destroy();
      reject(error);
    };
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const cleanup = () => {
      signal.removeEventListener("abort", onAbort);
      socket.off("error", onError);
      socket.off("connect", onConnect);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once("error", onError);
    socket.once("connect", onConnect);
  });
}
