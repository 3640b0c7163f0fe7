/**
 * The byte forwarder between two sockets, and the PROXY protocol v2.
 *
 * @module
 */
export {
  forward,
  type ForwardEndReason,
  type ForwardOptions,
  type ForwardResult,
  type ForwardSocket,
  type ForwardStats,
  type ForwardThrottle,
} from "./forward.ts";
export {
  decodeSslTlv,
  encodeProxyV2,
  encodeSslTlv,
  type ParsedProxyV2,
  parseProxyV2,
  PP2_CLIENT,
  PP2_TYPE,
  PROXY_V2_SIGNATURE,
  ProxyProtocolError,
  type ProxySsl,
  type ProxyTlv,
  type ProxyV2Header,
  textTlv,
  tlvText,
} from "./proxy_protocol.ts";
