/**
 * `main.ts check`: validates the config and its certificates, prints a summary of
 * what the balancer would run, and warns about certificates near expiry, an
 * exposed admin endpoint, groups the server certificate does not name and loose
 * client rules.
 *
 * @module
 */
import { resolve } from "node:path";
import { isIP } from "node:net";
import {
  ASSUMED_FILE_DESCRIPTORS,
  connectionCaps,
  readFileDescriptorLimit,
} from "../listener/connection_caps.ts";
import { parseHostPort } from "../core/address.ts";
import type { Config, GroupConfig, TlsMaterial } from "../config/mod.ts";
import { formatDuration } from "../core/duration.ts";
import { formatSize } from "../core/size.ts";
import { checkPermissions, formatRunCommand } from "../control/permissions.ts";
import { hasDnsUpstreams, permissionNeeds, workerCount } from "../control/permission_needs.ts";
import { checkCertificateDates, daysLeft, upstreamCertificates } from "./certificate_dates.ts";
import { checkIssuerPins } from "./issuer_pins.ts";
import { sniCoverageWarning } from "./sni_coverage.ts";
import { readAdminToken, readConfig, readTls } from "./_read_config.ts";
import { EXIT_OK, EXIT_USAGE } from "./exit_codes.ts";
import { type Io, oneLine } from "./_io.ts";

/**
 * Runs `check` on the config at `path`: prints the summary on stdout, findings on
 * stderr.
 *
 * @param path The config file.
 * @param io Output and clock.
 * @returns {@linkcode EXIT_OK}, or {@linkcode EXIT_USAGE} for a config, certificate
 *   or permission the operator must fix (an expired certificate included).
 */
export async function checkCommand(path: string, io: Io): Promise<number> {
  const config = await readConfig(path, io, ["--config", resolve(path)]);
  if (typeof config === "number") return config;
  // `check` reads the config and its certificates, and starts no worker.
  const needs = permissionNeeds(config, { workers: 1 });
  const missing = checkPermissions({ net: [], read: needs.read }).missing.read;
  if (missing.length > 0) {
    io.err(
      `Cannot check the certificates: Deno has no read permission for ${
        missing.join(", ")
      }; run:\n  ${
        formatRunCommand({ net: [], read: needs.read }, {
          main: io.main,
          args: ["check", "--config", resolve(path)],
        })
      }\n`,
    );
    return EXIT_USAGE;
  }
  const tls = await readTls(config, io);
  if (typeof tls === "number") return tls;
  const token = await readAdminToken(config, io);
  if (typeof token === "number") return token;
  io.out(summarize(config, tls, io.now()));
  let code = EXIT_OK;
  for (const finding of checkCertificateDates(tls.certificates, io.now())) {
    io.err(`${finding.level === "error" ? "Error" : "Warning"}: ${finding.message}\n`);
    if (finding.level === "error") code = EXIT_USAGE;
  }
  // A group's expired material refuses that group's connections, not the server's start.
  for (const finding of checkCertificateDates(upstreamCertificates(tls), io.now())) {
    io.err(
      `Warning: ${finding.message}${
        finding.level === "error" ? ": connections to its group will be refused" : ""
      }\n`,
    );
  }
  const exposed = exposedAdmin(config);
  if (exposed !== undefined) io.err(`Warning: ${exposed}\n`);
  const uncovered = sniCoverageWarning(config, tls);
  if (uncovered !== undefined) io.err(`Warning: ${uncovered}\n`);
  for (const warning of checkIssuerPins(config, tls.authorities ?? [])) {
    io.err(`Warning: ${warning}\n`);
  }
  return code;
}

/**
 * A warning when `[admin] listen` is not a loopback address and no token is asked
 * for: anyone who reaches it reads client names and addresses.
 */
function exposedAdmin(config: Config): string | undefined {
  const { listen, tokenFile, allowReload } = config.admin;
  if (listen === undefined || tokenFile !== undefined) return undefined;
  if (isLoopbackHost(parseHostPort(listen).hostname)) return undefined;
  return `"admin.listen" ${
    JSON.stringify(listen)
  } is not a loopback address and "admin.token_file" is not set: anyone who can reach it can read the status (client names and addresses)${
    allowReload ? " and reload the config" : ""
  }; set [admin] token_file or listen on 127.0.0.1`;
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}

/** How many workers run, and why. */
function workers(config: Config): string {
  const count = workerCount(config);
  if (config.cluster !== undefined) return `${count} (one event loop with [cluster])`;
  return config.server.workers === undefined ? `${count} (one per CPU)` : `${count}`;
}

/** The shared store and its settings, never its password. */
function cluster(config: Config): string {
  const c = config.cluster;
  if (c === undefined) return "none (limits and counts per instance)";
  return `store ${
    new URL(c.store).protocol.replace(":", "")
  } ${c.storeAddress}, on_store_error = "${c.onStoreError}", lease_ttl ${
    formatDuration(c.leaseTtl)
  }, timeout ${formatDuration(c.timeout)}, clients = "${c.clients}"${
    c.clients === "shared" ? " (from the store; the file's [clients] only as a fallback)" : ""
  }, instance_id ${
    c.instanceId === undefined ? "random at each start" : JSON.stringify(c.instanceId)
  }`;
}

/** The human summary `check` prints. */
function summarize(config: Config, tls: TlsMaterial, now: number): string {
  const lines: string[] = [`Config ${config.path} is valid.`, "", "Listeners:"];
  if (config.server.listen !== undefined) {
    lines.push(
      `  ${config.server.listen}  shared: group by SNI, else ALPN, else the client's only group`,
    );
  }
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) lines.push(`  ${group.listen}  group ${group.name}`);
  }
  const { admin } = config;
  if (admin.listen !== undefined) {
    lines.push(`  ${admin.listen}  admin${admin.allowReload ? " (reload allowed)" : ""}`);
    lines.push(
      "",
      "Admin:",
      `  hosts: IP addresses, localhost${
        admin.hosts.length === 0 ? " (no other names)" : `, ${admin.hosts.join(", ")}`
      }`,
      `  token: ${
        admin.tokenFile === undefined
          ? "none (anyone who can reach it can read the status)"
          : `required but for /healthz, from ${admin.tokenFile}`
      }`,
    );
  }
  lines.push("", "Groups:");
  for (const group of config.groups.values()) {
    const h = group.health;
    const probe = h.send === undefined && h.expect === undefined ? "TCP connect" : [
      h.send === undefined ? "" : `send ${JSON.stringify(h.send)}`,
      h.expect === undefined ? "" : `expect ${JSON.stringify(h.expect)}`,
    ].filter((s) => s !== "").join(", ");
    lines.push(
      `  ${group.name}${group.proxyProtocol === undefined ? "" : " (PROXY v2)"}${
        group.maxConnections === undefined
          ? ""
          : ` (at most ${group.maxConnections} connections over all clients)`
      }`,
    );
    for (const upstream of group.upstreams) {
      lines.push(`    ${upstream.address}  weight ${upstream.weight}`);
    }
    for (const entry of group.dns) {
      lines.push(
        `    ${entry.type === "dns" ? `dns ${entry.name}:${entry.port}` : `srv ${entry.name}`}  ${
          entry.type === "dns" ? "every A and AAAA address" : "SRV targets, ports and weights"
        }, looked up every ${formatDuration(entry.interval)}`,
      );
    }
    lines.push(`    upstream tls: ${upstreamTls(group, tls)}`);
    lines.push(
      `    alpn: ${
        group.alpn === undefined || group.alpn.length === 0
          ? "none (no protocol selected)"
          : group.alpn.join(", ")
      }`,
    );
    const o = group.outlier;
    lines.push(
      `    health: ${probe} every ${formatDuration(h.interval)}, timeout ${
        formatDuration(h.timeout)
      }, rise ${h.rise}, fall ${h.fall}`,
      `    outlier: ${
        o.consecutiveFailures === 0
          ? "no ejection"
          : `eject after ${o.consecutiveFailures} consecutive failures for ${
            formatDuration(o.baseEjectionTime)
          } x ejections (at most ${
            formatDuration(o.maxEjectionTime)
          }), at most ${o.maxEjectedPercent}% of the group`
      }; panic below ${o.panicThreshold}% available`,
    );
  }
  const shared = config.cluster?.clients === "shared";
  lines.push(
    "",
    shared
      ? "Clients (served from the store's client policy; these only while it has none this instance can serve):"
      : "Clients:",
  );
  if (config.clients.size === 0) {
    lines.push(
      shared
        ? "  (none: without a stored client policy the instance does not start)"
        : "  (none: every connection will be refused)",
    );
  }
  const matchKeys: Record<string, string> = {
    spkiSha256: "spki_sha256",
    serial: "serial",
    cn: "cn",
    sanUri: "san_uri",
    sanDns: "san_dns",
    issuer: "issuer",
  };
  const rate = (r: { count: number; per: number } | undefined): string =>
    r === undefined ? "no rate limit" : `at most ${r.count} new per ${formatDuration(r.per)}`;
  for (const client of config.clients.values()) {
    const match = Object.entries(matchKeys)
      .filter(([field]) => client.match[field as keyof typeof client.match] !== undefined)
      .map(([field, key]) =>
        `${key}=${JSON.stringify(client.match[field as keyof typeof client.match])}`
      )
      .join(", ");
    const limits = [
      client.maxConnections === undefined ? "" : `${client.maxConnections} concurrent`,
      client.connectionRate === undefined ? "" : rate(client.connectionRate),
      client.bandwidth === undefined ? "" : `${formatSize(client.bandwidth)}/s each way`,
    ].filter((s) => s !== "");
    lines.push(
      `  ${client.name}: match ${match} -> ${client.groups.join(", ")}${
        limits.length === 0 ? "" : ` (${limits.join(", ")})`
      }`,
    );
    for (const [group, within] of Object.entries(client.perGroup ?? {})) {
      lines.push(
        `    in ${group}: ${
          [
            within.maxConnections === undefined ? "" : `${within.maxConnections} concurrent`,
            within.connectionRate === undefined ? "" : rate(within.connectionRate),
          ].filter((s) => s !== "").join(", ") || "no limit of its own"
        }`,
      );
    }
  }
  const { limits, server } = config;
  const fds = readFileDescriptorLimit();
  const caps = connectionCaps(server, fds);
  lines.push(
    "",
    `Limits: ${limits.maxConnectionsPerClient} concurrent per client, ${
      rate(limits.connectionRate)
    }, ${
      limits.onRateLimit === "queue"
        ? `over a rate limit queued up to ${
          formatDuration(limits.queueTimeout)
        } (on_rate_limit = "queue")`
        : `over a rate limit refused (on_rate_limit = "reject")`
    }, ${
      limits.bandwidth === undefined
        ? "no bandwidth limit"
        : `${formatSize(limits.bandwidth)}/s per client each way`
    }`,
    `Server: ${caps.maxConnections} connections at most${
      server.maxConnections === undefined
        ? ` (max_connections from the open-files limit, ${
          fds ?? `not readable without --allow-all: ${ASSUMED_FILE_DESCRIPTORS} assumed`
        })`
        : ""
    }, ${caps.maxHandshakes} handshakes in flight at most${
      server.maxHandshakes === undefined ? " (max_handshakes: max_connections, 4096 at most)" : ""
    }`,
    `Workers: ${workers(config)}`,
    `Timeouts: handshake ${formatDuration(server.handshakeTimeout)}, connect ${
      formatDuration(server.connectTimeout)
    } (${server.connectRetries} ${server.connectRetries === 1 ? "retry" : "retries"}), idle ${
      formatDuration(server.idleTimeout)
    }, drain ${formatDuration(server.drainTimeout)}`,
    `Connections: ${formatSize(server.maxBuffer)} buffered per direction at most (max_buffer), ${
      server.maxLifetime === undefined
        ? "no lifetime bound (max_lifetime)"
        : `closed after ${formatDuration(server.maxLifetime)} (max_lifetime)`
    }; on_policy_change = "${server.onPolicyChange}": ${
      server.onPolicyChange === "close"
        ? "a reload or CRL update closes the live connections it would now refuse"
        : "live connections a reload or CRL update would now refuse run to their end"
    }`,
    `TLS: 1.3 only, ${config.tls.ciphers.join(", ")}${
      tls.crl === undefined ? "" : `, with CRL (crl_missing = "${config.tls.crlMissing}")`
    }; client_eku = "${config.tls.clientEku}"`,
  );
  if (tls.crl === undefined) lines.push("CRL: none (tls.crl not set): no revocation check");
  for (const crl of tls.crls ?? []) {
    lines.push(
      `CRL: ${crl.issuer}, ${crl.revoked} revoked, issued ${crl.thisUpdate.toISOString()}, ${
        crl.nextUpdate === undefined
          ? "no nextUpdate"
          : `next update due ${crl.nextUpdate.toISOString()}`
      }`,
    );
  }
  lines.push(
    config.server.watch
      ? "Reload: on SIGHUP and when the config, [tls] or groups' tls files change (watch = true)"
      : "Reload: on SIGHUP (watch = false)",
    `DNS: ${
      hasDnsUpstreams(config)
        ? `upstreams looked up with ${server.resolver ?? "the system resolver (/etc/resolv.conf)"}${
          workerCount(config) > 1 ? `, once for all ${workerCount(config)} workers` : ""
        }`
        : `no upstream looked up in DNS${
          server.resolver === undefined ? "" : ` (resolver ${server.resolver} unused)`
        }`
    }`,
    `Log: format "${config.log.format}"`,
    `Cluster: ${cluster(config)}`,
  );
  lines.push(`CAs of tls.ca (match.issuer = a CA's spki_sha256 pins a client to it):`);
  for (const ca of tls.authorities ?? []) {
    const role = ca.selfSigned
      ? "root"
      : ca.signedBy === undefined
      ? "intermediate, its issuer not in the bundle"
      : `intermediate of ${oneLine(ca.signedBy.subject)}`;
    lines.push(
      `  ${oneLine(ca.subject)}  spki_sha256 = "${ca.spkiSha256}"  (${role}${
        ca.issuesCertificates ? "" : ", may not issue certificates"
      })`,
    );
  }
  lines.push("Certificates:");
  for (const cert of [...tls.certificates, ...upstreamCertificates(tls)]) {
    const days = daysLeft(cert, now);
    lines.push(
      `  ${cert.key}  ${oneLine(cert.subject)}  valid until ${cert.notAfter.toISOString()} (${
        days < 0 ? "expired" : `${days} days left`
      })`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/**
 * The names a group's upstreams are verified against without `server_name`: the
 * host of each listed one, the NAME of each `{ dns = "NAME:PORT" }` entry.
 */
function verifiedNames(group: GroupConfig): string {
  const names: string[] = [];
  if (group.upstreams.length > 0) names.push("each listed upstream's host");
  for (const entry of group.dns) {
    if (entry.type === "dns") {
      names.push(`"${entry.name}" (sent as SNI) for the addresses of ${entry.name}:${entry.port}`);
    }
  }
  return `${names.join(", ")} (no server_name)`;
}

/** What a group's `tls` does, for the summary. */
function upstreamTls(group: GroupConfig, tls: TlsMaterial): string {
  const settings = group.tls;
  if (settings === undefined) return "none (plain TCP to upstreams)";
  const material = tls.upstreams?.get(group.name);
  const cas = material?.certificates.filter((c) => c.which === "ca").length ?? 0;
  const client = material?.certificates.find((c) => c.which === "cert");
  return `verify against ${settings.ca} (${cas} CA certificate${cas === 1 ? "" : "s"}), name ${
    settings.serverName === undefined
      ? verifiedNames(group)
      : `"${settings.serverName}" (sent as SNI)`
  }; client certificate ${
    client === undefined ? "none" : `${oneLine(client.subject)} (${settings.cert})`
  }; health probes over TLS`;
}
