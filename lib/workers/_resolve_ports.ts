/**
 * One port for every worker: the listeners on port 0 of a configuration are bound
 * once, by the primary, and every worker then binds the same port (`SO_REUSEPORT`).
 *
 * @module
 */
import { createServer as createNetServer, type Server as NetServer } from "node:net";
import type { Config } from "../config/mod.ts";
import { formatHostPort, parseHostPort } from "../core/address.ts";

/** A config with its listeners on port 0 bound, and the sockets holding those ports. */
export interface ResolvedPorts {
  /** The configuration, its listeners on port 0 given the port they hold. */
  config: Config;
  /** `group + " " + configured address` of a listener on port 0, to the address it got. */
  ports: Map<string, string>;
  /** The sockets holding those ports until the workers listen. */
  placeholders: NetServer[];
}

/**
 * Binds the listeners on port 0 of a config to one port for every worker: a
 * placeholder socket (`SO_REUSEPORT`) holds the port while the workers bind it, and
 * is closed once they have. Listeners kept from the running config keep their port.
 *
 * @param config The configuration to run.
 * @param kept The ports of the running configuration: `group + " " + configured
 *   address` of a listener on port 0, to the address it got.
 * @returns The configuration with those ports, the ports, and the placeholders to
 *   close (with {@linkcode closePlaceholders}) once the workers listen.
 */
export async function resolvePorts(
  config: Config,
  kept: ReadonlyMap<string, string>,
): Promise<ResolvedPorts> {
  const ports = new Map<string, string>();
  const placeholders: NetServer[] = [];
  const resolve = async (address: string, group: string | undefined): Promise<string> => {
    const { hostname, port } = parseHostPort(address);
    if (port !== 0) return address;
    const key = `${group ?? ""} ${address}`;
    let bound = kept.get(key);
    if (bound === undefined) {
      const server = createNetServer();
      server.on("connection", (socket) => socket.destroy());
      placeholders.push(server);
      await new Promise<void>((done, fail) => {
        server.once("error", fail);
        server.listen({ host: hostname, port: 0, reusePort: true }, () => {
          server.off("error", fail);
          done();
        });
      });
      const { port: picked } = server.address() as { port: number };
      bound = formatHostPort({ hostname, port: picked });
    }
    ports.set(key, bound);
    return bound;
  };
  try {
    const server = config.server.listen === undefined
      ? config.server
      : { ...config.server, listen: await resolve(config.server.listen, undefined) };
    const groups = new Map(config.groups);
    for (const group of config.groups.values()) {
      if (group.listen === undefined) continue;
      groups.set(group.name, { ...group, listen: await resolve(group.listen, group.name) });
    }
    return { config: { ...config, server, groups }, ports, placeholders };
  } catch (error) {
    await closePlaceholders(placeholders);
    throw error;
  }
}

/**
 * Closes the placeholder sockets of {@linkcode resolvePorts}.
 *
 * @param servers The placeholders.
 * @returns When every one is closed.
 */
export function closePlaceholders(servers: NetServer[]): Promise<void> {
  return Promise.all(
    servers.map((server) =>
      new Promise<void>((resolve) => server.listening ? server.close(() => resolve()) : resolve())
    ),
  ).then(() => {});
}
