/**
 * DNS look-ups for upstreams discovered from DNS, behind an injectable
 * {@linkcode DnsResolver}: {@linkcode denoResolver} asks the system resolver or a
 * named server with `Deno.resolveDns`; tests inject answers of their own.
 *
 * @module
 */
import { parseHostPort } from "../core/address.ts";

/** One SRV record, as `Deno.resolveDns(name, "SRV")` returns it. */
export interface SrvAnswer {
  /** Lower is preferred. */
  priority: number;
  /** Relative weight among records of the same priority, 0 to 65535. */
  weight: number;
  /** The port of the service. */
  port: number;
  /** The host name of the service (a final dot is allowed). */
  target: string;
}

/**
 * Answers the look-ups of {@linkcode DnsUpstreams}. A name with no record of the type
 * asked (NXDOMAIN, no data) answers an empty list; a look-up that cannot be answered
 * (timeout, refused, unreachable server) rejects.
 */
export interface DnsResolver {
  /**
   * The addresses of `name`.
   *
   * @param name A host name.
   * @param type `"A"` (IPv4) or `"AAAA"` (IPv6).
   * @param signal Aborts the look-up.
   * @returns The addresses, possibly none.
   */
  addresses(name: string, type: "A" | "AAAA", signal: AbortSignal): Promise<string[]>;
  /**
   * The SRV records of `name`.
   *
   * @param name A service name such as `_api._tcp.example.org`.
   * @param signal Aborts the look-up.
   * @returns The records, possibly none.
   */
  srv(name: string, signal: AbortSignal): Promise<SrvAnswer[]>;
  /**
   * The server it asks, for messages: `"127.0.0.1:53"`, or words such as `"the
   * system's DNS servers"`.
   *
   * @default {undefined: not named}
   */
  readonly server?: string;
}

/** Options of {@linkcode denoResolver}. */
export interface DenoResolverOptions {
  /**
   * The DNS server to ask, `host:port` with an IP address (`"127.0.0.1:53"`,
   * `"[::1]:5353"`). Deno needs `--allow-net` for it.
   *
   * @default {the system resolver (the servers of /etc/resolv.conf)}
   */
  nameServer?: string;
}

/**
 * A {@linkcode DnsResolver} on `Deno.resolveDns`. Deno reports NXDOMAIN, an answer
 * with no record and SERVFAIL alike (`Deno.errors.NotFound`): all three answer an
 * empty list here.
 *
 * @example Usage
 * ```ts ignore
 * import { denoResolver } from "./dns_resolver.ts";
 *
 * const resolver = denoResolver({ nameServer: "127.0.0.1:53" });
 * const addresses = await resolver.addresses("api.internal", "A", AbortSignal.timeout(5000));
 * ```
 *
 * @param options The server to ask.
 * @returns The resolver.
 * @throws {TypeError} When `nameServer` is not `host:port`.
 */
export function denoResolver(options: DenoResolverOptions = {}): DnsResolver {
  const server = options.nameServer === undefined ? undefined : parseHostPort(options.nameServer);
  const nameServer = server === undefined
    ? {}
    : { nameServer: { ipAddr: server.hostname, port: server.port } };
  const ask = async <T>(lookup: () => Promise<T[]>): Promise<T[]> => {
    try {
      return await lookup();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return [];
      throw error;
    }
  };
  return {
    server: options.nameServer ?? "the system's DNS servers",
    addresses: (name, type, signal) =>
      ask(() => Deno.resolveDns(name, type, { ...nameServer, signal })),
    srv: (name, signal) => ask(() => Deno.resolveDns(name, "SRV", { ...nameServer, signal })),
  };
}
