/**
 * Checks that span sections of a read config: listeners that would collide, groups no
 * listener reaches, clients that can never be told apart.
 *
 * @module
 */
import { type HostPort, parseHostPort } from "../core/address.ts";
import type { AdminConfig, ClientConfig, GroupConfig, ServerConfig } from "./types.ts";

/** Reports a problem with the value at key path `key`; never returns. */
export type Fail = (key: string, detail: string) => never;

/**
 * Refuses a config in which nothing listens, a group no listener reaches, or two
 * listeners that cannot both bind.
 */
export function checkListeners(
  fail: Fail,
  server: ServerConfig,
  groups: ReadonlyMap<string, GroupConfig>,
  admin: AdminConfig,
): void {
  const listeners: [key: string, address: string][] = [];
  if (server.listen !== undefined) listeners.push(["server.listen", server.listen]);
  for (const group of groups.values()) {
    if (group.listen !== undefined) listeners.push([`groups.${group.name}.listen`, group.listen]);
  }
  if (listeners.length === 0) {
    fail("server.listen", "must be set when no group has its own listen: nothing would listen");
  }
  if (server.listen === undefined) {
    for (const group of groups.values()) {
      if (group.listen === undefined) {
        fail(
          `groups.${group.name}`,
          `needs a listen address: "server.listen" is not set, so no listener reaches this group`,
        );
      }
    }
  }
  if (admin.listen !== undefined) listeners.push(["admin.listen", admin.listen]);
  for (let i = 0; i < listeners.length; i++) {
    const [key, address] = listeners[i]!;
    const a = parseHostPort(address);
    for (const [otherKey, otherAddress] of listeners.slice(0, i)) {
      if (bindConflict(a, parseHostPort(otherAddress))) {
        fail(key, `uses ${JSON.stringify(address)}, which "${otherKey}" already listens on`);
      }
    }
  }
}

/** Two listeners cannot both bind: same port (not 0) on the same or an overlapping host. */
function bindConflict(a: HostPort, b: HostPort): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  const x = a.hostname.toLowerCase();
  const y = b.hostname.toLowerCase();
  if (x === y || x === "::" || y === "::") return true;
  return (x === "0.0.0.0" && !y.includes(":")) || (y === "0.0.0.0" && !x.includes(":"));
}

/**
 * A client whose match fields include all of another client's fields can never be
 * identified alone: every certificate it matches matches the other one too.
 */
export function checkAmbiguousClients(
  fail: Fail,
  clients: ReadonlyMap<string, ClientConfig>,
): void {
  const entries = (c: ClientConfig): string[] =>
    Object.entries(c.match).map(([field, value]) => `${field}=${value}`);
  const byEntry = new Map<string, ClientConfig[]>();
  for (const client of clients.values()) {
    for (const entry of entries(client)) {
      const list = byEntry.get(entry);
      if (list === undefined) byEntry.set(entry, [client]);
      else list.push(client);
    }
  }
  for (const client of clients.values()) {
    const mine = new Set(entries(client));
    const candidates = new Set<ClientConfig>();
    for (const entry of mine) for (const other of byEntry.get(entry)!) candidates.add(other);
    for (const other of candidates) {
      if (other === client) continue;
      const theirs = entries(other);
      if (!theirs.every((entry) => mine.has(entry))) continue;
      if (theirs.length === mine.size) {
        // Identical sets: report the later entry of the two, once.
        if ([...clients.values()].indexOf(other) > [...clients.values()].indexOf(client)) continue;
        fail(
          `clients.${client.name}.match`,
          `is the same as "clients.${other.name}.match": a certificate matching one matches both`,
        );
      }
      fail(
        `clients.${client.name}.match`,
        `can never match alone: every certificate it matches also matches "clients.${other.name}.match"`,
      );
    }
  }
}
