/**
 * Checks that span tables of a config: group names that differ only in case, clients
 * naming groups that do not exist, listeners that would collide, groups no listener
 * reaches, clients that can never be told apart, ejection times merged over
 * `[outlier]`. They run on the parts of the file that are valid, in the same pass as
 * the schema, so that one reading reports every problem.
 *
 * @module
 */
import { isIP } from "node:net";
import { parseHostPort } from "../core/address.ts";
import { formatDuration } from "../core/duration.ts";
import { closestName } from "../core/edit_distance.ts";
import type { ParsedClient, ParsedConfig, ParsedGroup } from "./_schema.ts";
import { hint, type Problem } from "./_problems.ts";
import { keyPath } from "./_key_lines.ts";

/** A TOML table as the parser returns it. */
export type Table = Record<string, unknown>;

/** Whether a parsed TOML value is a table (not an array or a date). */
export function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

/**
 * A table as the schema read it, each key it refused read as that key's first
 * example (or as absent, or its default): the checks take those as unknown.
 */
export interface Part<T> {
  /** The table, its refused keys standing in for no value of the file. */
  value: T;
  /** The TOML keys the schema refused. */
  bad: ReadonlySet<string>;
}

/**
 * The parts of a file the checks look at, each `undefined` when the schema could not
 * read it even without its bad keys; a group or client so refused is present by
 * name, `undefined`.
 */
export interface Parts {
  server: Part<ParsedConfig["server"]> | undefined;
  outlier: Part<ParsedConfig["outlier"]> | undefined;
  admin: Part<ParsedConfig["admin"]> | undefined;
  /** `undefined` when `[groups]` is absent or not a table. */
  groups: ReadonlyMap<string, Part<ParsedGroup> | undefined> | undefined;
  /** `undefined` when `[clients]` is not a table. */
  clients: ReadonlyMap<string, Part<ParsedClient> | undefined> | undefined;
}

/** The value of a part when its `key` was read, else `undefined`. */
function known<T>(part: Part<T> | undefined, key: string): T | undefined {
  return part === undefined || part.bad.has(key) ? undefined : part.value;
}

/**
 * Every problem that spans tables.
 *
 * @param parts The valid parts of the file.
 * @param doc The file as TOML, for what the parts no longer say (which keys were given).
 * @returns The problems found, in no particular order.
 */
export function crossChecks(parts: Parts, doc: Table): Problem[] {
  return [
    ...groupNames(parts),
    ...clientGroups(parts, doc),
    ...listeners(parts),
    ...ambiguousClients(parts),
    ...ejectionTimes(parts, doc),
    ...upstreamClientCertificates(parts),
  ];
}

/**
 * A group's `tls` has both `cert` and `key`, or neither; and a `server_name` when the
 * group has SRV entries, whose targets' host names are not kept to be verified.
 */
function upstreamClientCertificates({ groups }: Parts): Problem[] {
  const problems: Problem[] = [];
  for (const [name, group] of groups ?? []) {
    const tls = known(group, "tls")?.tls;
    if (tls === undefined) continue;
    const srv = known(group, "upstreams")?.dns.some((entry) => entry.type === "srv") ?? false;
    if (tls.serverName === undefined && srv) {
      problems.push({
        key: keyPath(["groups", name, "tls", "server_name"]),
        message:
          "must be set when the group has { srv = ... } upstreams: the name their certificates are verified against (an SRV target's host name is not kept)",
      });
    }
    if ((tls.cert === undefined) === (tls.key === undefined)) continue;
    const [given, missing] = tls.cert === undefined ? ["key", "cert"] : ["cert", "key"];
    problems.push({
      key: keyPath(["groups", name, "tls", missing]),
      message:
        `must be set with ${given}: the client certificate presented to upstreams needs both`,
    });
  }
  return problems;
}

/** TLS SNI names ignore case, so two group names may not differ only in case. */
function groupNames({ groups }: Parts): Problem[] {
  const problems: Problem[] = [];
  const lower = new Map<string, string>();
  for (const name of groups?.keys() ?? []) {
    const other = lower.get(name.toLowerCase());
    if (other === undefined) lower.set(name.toLowerCase(), name);
    else {
      problems.push({
        key: keyPath(["groups", name]),
        message: `differs from group "${other}" only in letter case: TLS SNI names ignore case`,
      });
    }
  }
  return problems;
}

/**
 * Each group a client names is defined (the client valid or not), and each group of
 * its `per_group` is one of its groups.
 */
function clientGroups({ groups }: Parts, doc: Table): Problem[] {
  if (groups === undefined || !isTable(doc.clients)) return [];
  const problems: Problem[] = [];
  // The closest group of each unknown name, looked for once (many clients may name it).
  const hints = new Map<string, string>();
  const closest = (group: string) =>
    hints.get(group) ?? hints.set(group, hint(closestName(group, [...groups.keys()]))).get(group)!;
  for (const [name, client] of Object.entries(doc.clients)) {
    if (!isTable(client) || !Array.isArray(client.groups)) continue;
    client.groups.forEach((group, i) => {
      if (typeof group === "string" && group !== "" && !groups.has(group)) {
        problems.push({
          key: keyPath(["clients", name, "groups", i]),
          message: `must name a group defined under [groups], received ${JSON.stringify(group)}${
            closest(group)
          }`,
        });
      }
    });
    if (!isTable(client.per_group)) continue;
    for (const group of Object.keys(client.per_group)) {
      if (!client.groups.includes(group)) {
        problems.push({
          key: keyPath(["clients", name, "per_group", group]),
          message: `must be one of the client's groups (${client.groups.join(", ")})`,
        });
      }
    }
  }
  return problems;
}

/**
 * Something listens, every group is reached by a listener, and no two listeners
 * would bind the same port on overlapping addresses.
 */
function listeners({ server, groups, admin }: Parts): Problem[] {
  const problems: Problem[] = [];
  const shared = known(server, "listen");
  // Each group's own listen, `undefined` where the key could not be read.
  const own = [...groups ?? []].map(([name, group]) => [name, known(group, "listen")] as const);
  if (shared !== undefined && shared.listen === undefined && groups !== undefined) {
    // A listener is missing only when every listen key could be read.
    if (own.every(([, group]) => group !== undefined && group.listen === undefined)) {
      problems.push({
        key: "server.listen",
        message: "must be set when no group has its own listen: nothing would listen",
      });
    } else {
      for (const [name, group] of own) {
        if (group === undefined || group.listen !== undefined) continue;
        problems.push({
          key: keyPath(["groups", name]),
          message:
            `needs a listen address: "server.listen" is not set, so no listener reaches this group`,
        });
      }
    }
  }
  const bound = [
    ["server.listen", shared?.listen],
    ...own.map(([name, group]) => [keyPath(["groups", name, "listen"]), group?.listen]),
    ["admin.listen", known(admin, "listen")?.listen],
  ].filter((listener): listener is [string, string] => listener[1] !== undefined);
  // The first listener on each port and host, and of each kind: any host (`*`), an
  // IPv4 one (`*4`); no host is written with a `*`.
  const byPort = new Map<number, Map<string, string>>();
  for (const [key, address] of bound) {
    const { hostname, port } = parseHostPort(address);
    if (port === 0) continue;
    const host = bindHost(hostname);
    const ipv4 = !host.includes(":");
    const seen = byPort.get(port) ?? new Map<string, string>();
    byPort.set(port, seen);
    const other = seen.get(host) ?? seen.get("::") ??
      (host === "::" ? seen.get("*") : ipv4 ? seen.get("0.0.0.0") : undefined) ??
      (host === "0.0.0.0" ? seen.get("*4") : undefined);
    if (other !== undefined) {
      problems.push({
        key,
        message: `uses ${JSON.stringify(address)}, which "${other}" already listens on`,
      });
    }
    for (const kind of [host, "*", ...(ipv4 ? ["*4"] : [])]) {
      if (!seen.has(kind)) seen.set(kind, key);
    }
  }
  return problems;
}

/**
 * The address a host binds, in one spelling: an IP address as the URL standard writes
 * it (IPv6 compressed, `::0` is `::`; IPv4 in four parts, `127.1` is `127.0.0.1`), an
 * IPv4-mapped IPv6 address as its IPv4 address; a name (`localhost` included, which
 * binds whatever the system resolves first) as written, lowercase.
 */
function bindHost(hostname: string): string {
  const text = hostname.toLowerCase();
  if (!/^[0-9a-fx.:]*[0-9a-f]$/.test(text)) return text;
  let host: string;
  try {
    host = new URL(`http://${text.includes(":") ? `[${text}]` : text}`).hostname;
  } catch {
    return text;
  }
  host = host.replace(/^\[(.*)\]$/, "$1");
  if (isIP(host) === 0) return text;
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (mapped === null) return host;
  const [high, low] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return [high >> 8, high & 255, low >> 8, low & 255].join(".");
}

/**
 * A client whose match fields include all of another client's fields can never be
 * identified alone: every certificate it matches matches the other one too.
 */
function ambiguousClients({ clients }: Parts): Problem[] {
  const valid = [...clients ?? []].flatMap(([name, client]) => {
    const match = known(client, "match")?.match;
    const entries = Object.entries(match ?? {}).map(([field, value]) => `${field}=${value}`);
    return match === undefined ? [] : [{ name, entries: entries.sort() }];
  });
  // The first client of each set of entries; a client is looked up by each subset of
  // its own (at most 2^6 for the six fields), not compared with every other one.
  const bySet = new Map<string, number>();
  valid.forEach(({ entries }, index) => {
    const set = JSON.stringify(entries);
    if (!bySet.has(set)) bySet.set(set, index);
  });
  return valid.flatMap(({ name, entries }, index): Problem[] => {
    const key = keyPath(["clients", name, "match"]);
    // Identical sets: the later of the two is reported, once.
    const same = bySet.get(JSON.stringify(entries))!;
    const other = (i: number) => JSON.stringify(keyPath(["clients", valid[i]!.name, "match"]));
    if (same < index) {
      return [{
        key,
        message: `is the same as ${other(same)}: a certificate matching one matches both`,
      }];
    }
    for (let subset = 1; subset < (1 << entries.length) - 1; subset++) {
      const found = bySet.get(JSON.stringify(entries.filter((_, i) => subset & (1 << i))));
      if (found === undefined) continue;
      const message = `can never match alone: every certificate it matches also matches ${
        other(found)
      }`;
      return [{ key, message }];
    }
    return [];
  });
}

/**
 * `max_ejection_time` is at least `base_ejection_time`, in `[outlier]` and in each
 * group's settings (its own over `[outlier]`); the key blamed is the one the table
 * gives, `max_ejection_time` when it gives both.
 */
function ejectionTimes({ outlier, groups }: Parts, doc: Table): Problem[] {
  const global = known(outlier, "base_ejection_time") && known(outlier, "max_ejection_time");
  type Times = { baseEjectionTime: number; maxEjectionTime: number };
  const check = (path: string, given: unknown, times: Times): Problem[] => {
    if (times.maxEjectionTime >= times.baseEjectionTime) return [];
    const max = JSON.stringify(formatDuration(times.maxEjectionTime));
    const base = JSON.stringify(formatDuration(times.baseEjectionTime));
    return isTable(given) && given.max_ejection_time !== undefined
      ? [{
        key: `${path}.max_ejection_time`,
        message: `must be at least base_ejection_time (${base}), received ${max}`,
      }]
      : [{
        key: `${path}.base_ejection_time`,
        message: `must be at most max_ejection_time (${max}), received ${base}`,
      }];
  };
  const problems = global === undefined ? [] : check("outlier", doc.outlier, global);
  for (const [name, group] of groups ?? []) {
    // A group that sets neither time has [outlier]'s, and its problem is reported there.
    const own = known(group, "outlier")?.outlier;
    const baseEjectionTime = own?.baseEjectionTime ?? global?.baseEjectionTime;
    const maxEjectionTime = own?.maxEjectionTime ?? global?.maxEjectionTime;
    if (own?.baseEjectionTime === undefined && own?.maxEjectionTime === undefined) continue;
    if (baseEjectionTime === undefined || maxEjectionTime === undefined) continue;
    const raw = isTable(doc.groups) && isTable(doc.groups[name]) ? doc.groups[name] : {};
    const times = { baseEjectionTime, maxEjectionTime };
    problems.push(...check(keyPath(["groups", name, "outlier"]), raw.outlier, times));
  }
  return problems;
}
