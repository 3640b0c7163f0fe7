/**
 * What the tests' servers on 127.0.0.1 share: their address, the connections they
 * hold, and a stop that closes them all.
 *
 * @module
 */
import type { Server, Socket } from "node:net";

/** A server on 127.0.0.1 that a test starts and stops. */
export class LoopbackServer<S extends Socket = Socket> implements AsyncDisposable {
  readonly server: Server;
  /** Its open connections (the subclass adds and removes them). */
  readonly sockets = new Set<S>();

  /**
   * Wraps `server` (not listening yet, or already).
   *
   * @param server A `node:net` or `node:tls` server.
   */
  constructor(server: Server) {
    this.server = server;
  }

  /** Its port. */
  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** `127.0.0.1:<port>`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /**
   * Stops listening and destroys every open connection.
   *
   * @returns When it is closed.
   */
  stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    if (!this.server.listening) return Promise.resolve();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /**
   * Same as {@linkcode LoopbackServer.stop}.
   *
   * @returns When it is closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
