/**
 * The PROXY protocol v2 header of a forwarded connection.
 *
 * @module
 */
import type { TLSSocket } from "node:tls";
import type { CertIdentity } from "../identity/certificate.ts";
import {
  encodeProxyV2,
  encodeSslTlv,
  PP2_CLIENT,
  PP2_TYPE,
  type ProxyTlv,
  textTlv,
} from "./proxy_protocol.ts";

/**
 * The PROXY v2 header mtlb sends an upstream before a client's first byte: the
 * client's and the listener's addresses, ALPN and SNI (`AUTHORITY`), the TLS version,
 * cipher and client certificate CN (`SSL` sub-TLVs), the client's name and the SHA-256
 * of its public key (`0xE0`, `0xE1`). See `encodeProxyV2` for the format.
 *
 * @example Usage
 * ```ts ignore
 * upstream.write(proxyHeader(socket, "alice", identity, "h2", "cache", "TLS_AES_256_GCM_SHA384"));
 * ```
 *
 * @param socket The client's TLS socket (its addresses and TLS version).
 * @param client The client's name.
 * @param identity Its certificate's identity.
 * @param alpn The ALPN protocol selected, if any.
 * @param servername The SNI name, if any.
 * @param cipher The negotiated suite.
 * @returns The header.
 */
export function proxyHeader(
  socket: TLSSocket,
  client: string,
  identity: CertIdentity,
  alpn: string | undefined,
  servername: string | undefined,
  cipher: string,
): Uint8Array {
  const tlvs: ProxyTlv[] = [];
  if (typeof alpn === "string" && alpn !== "") tlvs.push(textTlv(PP2_TYPE.ALPN, alpn));
  if (typeof servername === "string" && servername !== "") {
    tlvs.push(textTlv(PP2_TYPE.AUTHORITY, servername));
  }
  const sub: ProxyTlv[] = [textTlv(PP2_TYPE.SSL_VERSION, socket.getProtocol() ?? "TLSv1.3")];
  if (identity.cn !== undefined) sub.push(textTlv(PP2_TYPE.SSL_CN, identity.cn));
  sub.push(textTlv(PP2_TYPE.SSL_CIPHER, cipher));
  tlvs.push(
    encodeSslTlv({ client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN, verify: 0, tlvs: sub }),
    textTlv(PP2_TYPE.MTLB_CLIENT, client),
    textTlv(PP2_TYPE.MTLB_SPKI_SHA256, identity.spkiSha256),
  );
  const { remoteAddress, remotePort, localAddress, localPort } = socket;
  const known = remoteAddress !== undefined && remotePort !== undefined &&
    localAddress !== undefined && localPort !== undefined;
  return encodeProxyV2(
    known
      ? {
        command: "proxy",
        source: { hostname: remoteAddress, port: remotePort },
        destination: { hostname: localAddress, port: localPort },
        tlvs,
      }
      : { command: "proxy", tlvs },
  );
}
