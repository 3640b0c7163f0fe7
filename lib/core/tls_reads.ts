/**
 * A workaround for Deno 2.9's `node:tls` sockets, server and client side alike:
 * {@linkcode linkTcpReads} makes pausing one stop reading its TCP socket.
 *
 * @module
 */
import type { TLSSocket } from "node:tls";

/** The TLS handle's read controls, and the TCP handle under it (Deno 2.9). */
interface ReadControls {
  readStop?: (this: ReadControls) => unknown;
  readStart?: (this: ReadControls) => unknown;
  _nativeTcpHandle?: { readStop?: () => unknown; readStart?: () => unknown } | null;
  [OWN_STOP]?: (this: ReadControls) => unknown;
  [OWN_START]?: (this: ReadControls) => unknown;
}

const OWN_STOP = Symbol("mtlb.readStop");
const OWN_START = Symbol("mtlb.readStart");
const PAUSE_STOPS_READS = Symbol.for("mtlb.pauseStopsReads");

function linkedReadStop(this: ReadControls): unknown {
  const result = this[OWN_STOP]?.call(this);
  this._nativeTcpHandle?.readStop?.();
  return result;
}

function linkedReadStart(this: ReadControls): unknown {
  this._nativeTcpHandle?.readStart?.();
  return this[OWN_START]?.call(this);
}

/**
 * Makes pausing a TLS socket stop reading its TCP socket, as in Node.
 *
 * Deno 2.9's TLS handle only stops handing decrypted bytes to JavaScript when paused:
 * the TCP socket under it keeps being read and decrypted into one growing buffer (a
 * client pushing 256 MiB at an upstream that never reads grew the process by 525 MiB;
 * an upstream pushing 64 MiB at a paused client-side socket, by 105 MiB), which then
 * comes in one chunk on resume, and a FIN that arrived meanwhile is lost. Linked, the
 * TLS handle's `readStop`/`readStart` also stop and start the TCP handle: the kernel's
 * receive window pushes back on the peer, and the FIN comes after the data. Call it
 * once the handshake completed (`"secureConnection"` on a server, `"secureConnect"`
 * on a client), before anything is awaited. Marks the socket with
 * `Symbol.for("mtlb.pauseStopsReads")` (`PAUSE_STOPS_READS` of `forward`).
 *
 * @example Usage
 * ```ts ignore
 * import { linkTcpReads } from "./tls_reads.ts";
 *
 * server.on("secureConnection", (socket) => linkTcpReads(socket));
 * ```
 *
 * @param socket A TLS socket whose handshake completed.
 * @returns Whether the runtime allowed the link (otherwise pausing stops nothing).
 */
export function linkTcpReads(socket: TLSSocket): boolean {
  const tls = (socket as unknown as { _handle?: ReadControls | null })._handle;
  const tcp = tls?._nativeTcpHandle;
  if (
    tls == null || tcp == null || typeof tls.readStop !== "function" ||
    typeof tls.readStart !== "function" || typeof tcp.readStop !== "function" ||
    typeof tcp.readStart !== "function"
  ) {
    return false;
  }
  tls[OWN_STOP] = tls.readStop;
  tls[OWN_START] = tls.readStart;
  tls.readStop = linkedReadStop;
  tls.readStart = linkedReadStart;
  (socket as unknown as Record<symbol, boolean>)[PAUSE_STOPS_READS] = true;
  return true;
}
