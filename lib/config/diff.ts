/**
 * What a reload changes: clients, groups and listeners added, removed or changed, and
 * the other settings that differ, for the log line a reload writes.
 *
 * @module
 */
import type { Config } from "./types.ts";
import { keyPath } from "./_key_lines.ts";

/** Names added, removed and changed between two configurations. */
export interface NameChanges {
  /** In the new configuration only. */
  added: string[];
  /** In the old configuration only. */
  removed: string[];
  /** In both, with different settings. */
  changed: string[];
}

/** The contents of the `[tls]` files, as loaded (`TlsMaterial` fits). */
export interface TlsFiles {
  /** The CA bundle, PEM. */
  ca: string;
  /** The server certificate chain, PEM. */
  cert: string;
  /** The server key, PEM. */
  key: string;
  /** The CRLs, PEM, when configured. */
  crl?: string | undefined;
  /** The files of the groups' `tls`, by group name. */
  upstreams?: ReadonlyMap<string, { ca: string; cert?: string; key?: string }> | undefined;
}

/** What differs between two configurations. */
export interface ConfigChanges {
  /** `[clients.*]`, by name. */
  clients: NameChanges;
  /** `[groups.*]`, by name. */
  groups: NameChanges;
  /** Listener addresses (`[server] listen` and the groups' own). */
  listeners: { added: string[]; removed: string[] };
  /**
   * Other sections and keys that differ (`tls.ca`, `limits`, `server.idle_timeout`...),
   * and the groups' `tls` files renewed in place (`groups.db.tls.ca`).
   */
  settings: string[];
}

/**
 * Compares two configurations.
 *
 * @example Usage
 * ```ts
 * import { diffConfig } from "./diff.ts";
 * import { parseConfig } from "./parse.ts";
 * import assert from "node:assert/strict";
 *
 * const base = `[server]\nlisten = "127.0.0.1:8443"\n[tls]\nca = "ca.crt"\ncert = "s.crt"\nkey = "s.key"\n` +
 *   `[groups.echo]\nupstreams = ["127.0.0.1:7001"]\n`;
 * const before = parseConfig(`${base}[clients.bob]\nmatch = { cn = "bob" }\ngroups = ["echo"]\n`, { path: "/lb.toml" });
 * const after = parseConfig(`${base}[clients.ann]\nmatch = { cn = "ann" }\ngroups = ["echo"]\n`, { path: "/lb.toml" });
 * const changes = diffConfig(before, after);
 * assert.deepEqual(changes.clients, { added: ["ann"], removed: ["bob"], changed: [] });
 * ```
 *
 * @param previous The configuration in force.
 * @param next The configuration replacing it.
 * @param files The contents of both configurations' `[tls]` files, to tell a file
 *   renewed in place.
 * @returns What differs.
 */
export function diffConfig(
  previous: Config,
  next: Config,
  files?: { previous: TlsFiles; next: TlsFiles },
): ConfigChanges {
  const settings: string[] = [];
  for (const section of ["server", "tls", "limits", "admin", "log", "cluster"] as const) {
    const before = (previous[section] ?? {}) as Record<string, unknown>;
    const after = (next[section] ?? {}) as Record<string, unknown>;
    for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
      if (section === "server" && key === "listen") continue; // Listed with the listeners.
      if (same(before[key], after[key])) continue;
      settings.push(`${section}.${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`);
    }
  }
  if (files !== undefined) {
    // The same paths with new contents (a certificate renewed in place).
    for (const key of ["ca", "cert", "key", "crl"] as const) {
      const name = `tls.${key}`;
      if (!settings.includes(name) && files.previous[key] !== files.next[key]) settings.push(name);
    }
    for (const [group, after] of files.next.upstreams ?? []) {
      const before = files.previous.upstreams?.get(group);
      if (before === undefined) continue;
      for (const key of ["ca", "cert", "key"] as const) {
        if (before[key] !== after[key]) settings.push(keyPath(["groups", group, "tls", key]));
      }
    }
  }
  const { added, removed } = diffNames(listenersOf(previous), listenersOf(next));
  return {
    clients: diffNames(previous.clients, next.clients),
    groups: diffNames(previous.groups, next.groups),
    listeners: { added, removed },
    settings,
  };
}

/**
 * The changes as one short phrase for a log line, such as
 * `clients +ann -bob; groups ~echo; settings tls.ca`.
 *
 * @example Usage
 * ```ts
 * import { describeChanges } from "./diff.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   describeChanges({
 *     clients: { added: ["ann"], removed: ["bob"], changed: [] },
 *     groups: { added: [], removed: [], changed: ["echo"] },
 *     listeners: { added: [], removed: [] },
 *     settings: ["tls.ca"],
 *   }),
 *   "clients +ann -bob; groups ~echo; settings tls.ca",
 * );
 * ```
 *
 * @param changes What {@linkcode diffConfig} found.
 * @returns The phrase, or `no changes`.
 */
export function describeChanges(changes: ConfigChanges): string {
  const parts: string[] = [];
  const names = (label: string, c: { added: string[]; removed: string[]; changed?: string[] }) => {
    const items = [
      ...c.added.map((n) => `+${n}`),
      ...c.removed.map((n) => `-${n}`),
      ...(c.changed ?? []).map((n) => `~${n}`),
    ];
    if (items.length > 0) parts.push(`${label} ${items.join(" ")}`);
  };
  names("clients", changes.clients);
  names("groups", changes.groups);
  names("listeners", changes.listeners);
  if (changes.settings.length > 0) parts.push(`settings ${changes.settings.join(", ")}`);
  return parts.length === 0 ? "no changes" : parts.join("; ");
}

/** The names only in `next`, only in `previous`, and in both with different values. */
function diffNames(
  previous: ReadonlyMap<string, unknown>,
  next: ReadonlyMap<string, unknown>,
): NameChanges {
  const added = [...next.keys()].filter((n) => !previous.has(n));
  const removed = [...previous.keys()].filter((n) => !next.has(n));
  const changed = [...next.keys()].filter((n) =>
    previous.has(n) && !same(previous.get(n), next.get(n))
  );
  return { added, removed, changed };
}

/** The listener addresses of a configuration, each group's own followed by its name. */
function listenersOf(config: Config): Map<string, true> {
  const addresses = config.server.listen === undefined ? [] : [config.server.listen];
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) addresses.push(`${group.listen} (${group.name})`);
  }
  return new Map(addresses.map((address) => [address, true]));
}

/** Whether two settings are the same, maps and sets compared by their contents. */
function same(a: unknown, b: unknown): boolean {
  const json = (value: unknown) =>
    JSON.stringify(
      value,
      (_key, v) => v instanceof Map ? Object.fromEntries(v) : v instanceof Set ? [...v] : v,
    );
  return json(a) === json(b);
}
