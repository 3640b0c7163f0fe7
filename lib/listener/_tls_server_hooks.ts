/**
 * Per-connection hooks into Deno 2.9's `node:tls` server, for what its public API
 * cannot express:
 *
 * - **Naming a refused certificate.** With `rejectUnauthorized`, Deno destroys a
 *   socket whose client certificate failed verification before `secureConnection`,
 *   with no alert and no reason (`tlsClientError` says `ECONNRESET`). The server is
 *   created with `rejectUnauthorized: true`, so that rustls still requires a
 *   certificate (a client without one gets the `certificate_required` alert), and
 *   each socket is switched to hand a failed verification on as `authorized: false`,
 *   so the balancer reads the certificate and names the cause (`unknown_ca`,
 *   `expired`, ...) before it closes the connection.
 * - **Choosing ALPN, or none.** `ALPNCallback` must return one of the offered
 *   protocols or the handshake fails, so a client offering `h2, http/1.1` to a
 *   server that has nothing to select would be reset. The server is created with an
 *   `SNICallback` (it enables Deno's ClientHello step and leaves ALPN unselected), and
 *   each socket's ClientHello step consults the server's {@linkcode ClientHelloHandler}
 *   first (which also learns that the client spoke: a silent connection never does).
 *
 * Both rely on internals of Deno 2.9's `node:tls` (`ownerSymbol`, the TLS handle's
 * `onclienthello`, `getClientHelloAlpn`, `setAlpnProtocols`, `_rejectUnauthorized`);
 * tests pin them, and when a runtime lacks one the connection keeps the runtime's
 * own behaviour.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { Server, TLSSocket } from "node:tls";

/** What the client offered in its ClientHello. */
export interface ClientHelloInfo {
  /** The SNI server name, `""` without one. */
  servername: string;
  /** The ALPN protocols offered, in the client's order. */
  protocols: string[];
}

/**
 * Called for each ClientHello with the TCP socket it came on; returns the ALPN
 * protocol to select (one of `hello.protocols`), or `undefined` for none.
 */
export type ClientHelloHandler = (hello: ClientHelloInfo, raw: Socket | undefined) =>
  | string
  | undefined;

/** The TLS handle of a Deno 2.9 `node:tls` socket, as far as these hooks use it. */
interface TlsHandle {
  onclienthello?: (this: TlsHandle) => void;
  verifyError?: () => string;
  getServername?: () => string | false | undefined;
  getClientHelloAlpn?: () => string[];
  setAlpnProtocols?: (protocols: string[]) => void;
  _owner?: unknown;
  [ORIGINAL]?: (this: TlsHandle) => void;
}

const ORIGINAL = Symbol("mtlb.onclienthello");
const HANDLER = Symbol("mtlb.clientHelloHandler");

/** `ownerSymbol` of Deno's `node:net`, found on the first socket that has it. */
let ownerSymbol: symbol | undefined;

/**
 * The `SNICallback` that makes Deno run its ClientHello step (where ALPN is chosen by
 * {@linkcode hookTlsSocket}) while keeping the server's own secure context.
 *
 * @param _servername The SNI name (unused: one certificate serves every name).
 * @param done Called at once with no context: the server's context is used.
 */
export function keepContext(
  _servername: string,
  done: (error: Error | null, context?: undefined) => void,
): void {
  done(null, undefined);
}

/**
 * Installs `handler` for the ClientHello of every socket of `server` that
 * {@linkcode hookTlsSocket} prepares.
 *
 * @param server A `node:tls` server created with `SNICallback: keepContext`.
 * @param handler Learns of each ClientHello and chooses the ALPN protocol, or none.
 */
export function setClientHelloHandler(server: Server, handler: ClientHelloHandler): void {
  (server as Server & { [HANDLER]?: ClientHelloHandler })[HANDLER] = handler;
}

/**
 * Prepares the TLS socket that the `node:tls` server created for the raw TCP
 * socket of a `"connection"` event: a failed client certificate verification
 * reaches `secureConnection` with `authorized: false`, and the server's ALPN
 * selector runs on the ClientHello. Call it from the server's `"connection"`
 * listener (the server's own listener, which creates the TLS socket, runs first).
 *
 * @param raw The TCP socket of the `"connection"` event.
 * @returns The TLS socket, or `undefined` when the runtime does not expose it (the
 *   runtime's defaults then apply: refused certificates are reset without a cause).
 */
export function hookTlsSocket(raw: Socket): TLSSocket | undefined {
  const socket = tlsSocketOf(raw);
  if (socket === undefined) return undefined;
  if (socket._rejectUnauthorized === true) socket._rejectUnauthorized = false;
  // Deno decides `authorized` after the handshake by building the client certificate's
  // legacy object (`getPeerCertificate()`: fields, fingerprints) only to check that
  // there is one: about 6% of a full handshake's CPU. rustls requires a certificate
  // here, so `readAuthorization` takes the verifier's verdict alone instead.
  if (socket._requestCert === true && typeof socket._handle?.verifyError === "function") {
    socket._requestCert = false;
    (socket as { [OWN_AUTHORIZATION]?: boolean })[OWN_AUTHORIZATION] = true;
  }
  const tls = socket._handle;
  if (tls != null && typeof tls.onclienthello === "function") {
    tls[ORIGINAL] = tls.onclienthello;
    tls.onclienthello = onClientHello;
  }
  return socket;
}

/** The TLS socket Deno's `node:tls` server created over a raw TCP socket, if it exposes it. */
function tlsSocketOf(raw: Socket): HookedSocket | undefined {
  const handle = (raw as unknown as { _handle?: Record<symbol, unknown> | null })._handle;
  if (handle == null) return undefined;
  ownerSymbol ??= Object.getOwnPropertySymbols(handle).find((s) => s.description === "ownerSymbol");
  if (ownerSymbol === undefined) return undefined;
  const socket = handle[ownerSymbol];
  if (socket === undefined || socket === null || typeof socket !== "object") return undefined;
  return socket as HookedSocket;
}

/** A TLS socket of Deno 2.9's `node:tls`, as far as these hooks use it. */
type HookedSocket = TLSSocket & {
  _rejectUnauthorized?: boolean;
  _requestCert?: boolean;
  _handle?: TlsHandle | null;
};

const OWN_AUTHORIZATION = Symbol("mtlb.ownAuthorization");

/**
 * Sets `authorized` and `authorizationError` of a socket prepared by
 * {@linkcode hookTlsSocket} from the certificate verifier's verdict, as Deno would
 * have without building the certificate's object (see `hookTlsSocket`). Call it in
 * `"secureConnection"`; sockets Deno authorized itself are left alone.
 *
 * @param socket A server-side TLS socket whose handshake completed.
 */
export function readAuthorization(socket: TLSSocket): void {
  const hooked = socket as HookedSocket & { [OWN_AUTHORIZATION]?: boolean };
  if (hooked[OWN_AUTHORIZATION] !== true) return;
  let code = "";
  try {
    code = hooked._handle?.verifyError?.() ?? "";
  } catch {
    code = "UNABLE_TO_GET_ISSUER_CERT";
  }
  if (code === "") {
    hooked.authorized = true;
  } else {
    hooked.authorized = false;
    (hooked as { authorizationError?: unknown }).authorizationError = code;
  }
}

/**
 * Turns the ClientHello step of a server's new connections on or off (it applies to
 * connections accepted from then on).
 *
 * The step, which {@linkcode setClientHelloHandler}'s handler needs (ALPN chosen per
 * connection, the ALPN protocols offered, the first sign that a client spoke), costs
 * Deno 2.9 a second build of the TLS configuration for every handshake: about 8% of a
 * full handshake's CPU. A listener whose connections need none of it skips it. Off, a
 * server keeps its static ALPN (none here), {@linkcode offeredAlpn} returns `[]`, and
 * {@linkcode clientSpoke} tells whether a client spoke.
 *
 * @param server A `node:tls` server created with `SNICallback: keepContext`.
 * @param on Whether to run the step.
 */
export function setClientHelloStep(server: Server, on: boolean): void {
  // Deno 2.9 reads `_SNICallback` for each new connection; on a runtime that does not,
  // this does nothing and the step keeps running, as before.
  const internal = server as Server & { _SNICallback?: unknown };
  if ("_SNICallback" in internal) internal._SNICallback = on ? keepContext : undefined;
}

/**
 * Whether the client of a handshake in flight has sent its ClientHello, read from the
 * TLS handle (the TLS version is chosen on it), for connections without the ClientHello
 * step (see {@linkcode setClientHelloStep}).
 *
 * @param raw The TCP socket of the `"connection"` event.
 * @returns Whether it did; `false` when the runtime does not say.
 */
export function clientSpoke(raw: Socket): boolean {
  const tls = tlsSocketOf(raw)?._handle as
    | { getProtocol?: (out: Record<string, unknown>) => number }
    | null
    | undefined;
  try {
    return typeof tls?.getProtocol === "function" && tls.getProtocol({}) === 0;
  } catch {
    return false;
  }
}

/** The ClientHello step: tell the handler, select ALPN (or nothing), then let Deno finish it. */
function onClientHello(this: TlsHandle): void {
  const owner = this._owner as { server?: unknown; _parent?: Socket } | undefined;
  const handler = (owner?.server as { [HANDLER]?: ClientHelloHandler } | undefined)?.[HANDLER];
  if (handler !== undefined) {
    const protocols = this.getClientHelloAlpn?.() ?? [];
    const servername = this.getServername?.();
    let chosen: string | undefined;
    try {
      chosen = handler(
        { servername: typeof servername === "string" ? servername : "", protocols },
        owner?._parent,
      );
    } catch {
      chosen = undefined;
    }
    if (chosen !== undefined && protocols.includes(chosen)) this.setAlpnProtocols?.([chosen]);
  }
  this[ORIGINAL]?.call(this);
}

/**
 * The ALPN protocols a client offered, read from the TLS handle after the handshake.
 *
 * @param socket A server-side TLS socket prepared by {@linkcode hookTlsSocket}.
 * @returns The offered protocols in the client's order; `[]` when none or unknown.
 */
export function offeredAlpn(socket: TLSSocket): string[] {
  const tls = (socket as unknown as { _handle?: TlsHandle | null })._handle;
  try {
    return tls?.getClientHelloAlpn?.() ?? [];
  } catch {
    return [];
  }
}
