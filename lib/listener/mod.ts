/**
 * The mTLS listeners: TLS 1.3 servers that require a client certificate and bound what unauthenticated clients can hold.
 *
 * @module
 */
export { ECDH_CURVES, LISTEN_BACKLOG } from "./tls_listeners.ts";
