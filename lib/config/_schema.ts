/**
 * The whole config file described once: every table and key of the TOML, with its
 * type, range, default, examples and documentation. `parseConfig` reads with it,
 * `configJsonSchema` turns it into the JSON Schema editors use, and docs/CONFIG.md is
 * written from that.
 *
 * Keys are read in snake_case and come out in camelCase, durations in milliseconds
 * and sizes in bytes, defaults filled in; what spans tables (group names, listeners,
 * overrides merged over `[health]` and `[outlier]`) is left to `parseConfig`.
 *
 * @module
 */
import * as z from "zod";
import { isIP } from "node:net";
import { HOST_PORT_PATTERN, parseHostPort } from "../core/address.ts";
import { DURATION_PATTERN } from "../core/duration.ts";
import { RATE_PATTERN, SIZE_PATTERN } from "../core/size.ts";
import { normalizeHex } from "../identity/certificate.ts";
import {
  address,
  bandwidth,
  boolean,
  describe,
  documented,
  duration,
  integer,
  type KeyText,
  list,
  named,
  oneOf,
  optional,
  required,
  shaped,
  size,
  table,
  text,
  withDefault,
} from "./_fields.ts";
import type {
  AdminConfig,
  ClientConfig,
  ClientGroupLimits,
  ClientMatch,
  ClusterConfig,
  Config,
  DnsUpstreamConfig,
  GroupConfig,
  HealthConfig,
  LimitsConfig,
  LogConfig,
  OutlierConfig,
  ServerConfig,
  TlsConfig,
  UpstreamConfig,
} from "./types.ts";

/** The TLS 1.3 cipher suites Deno (rustls) offers. */
export const TLS13_CIPHERS = [
  "TLS_AES_256_GCM_SHA384",
  "TLS_AES_128_GCM_SHA256",
  "TLS_CHACHA20_POLY1305_SHA256",
] as const;

const server = table({
  listen: optional(address(true), {
    description:
      "The shared listener. On it the group is chosen by the TLS SNI name (a group name, any case), else by the first offered ALPN protocol that is a group name, else the client's only group (see [routing](TRUST.md#routing-sni-and-alpn)). Required unless every group has its own `listen`. Port 0 takes a free port.",
    defaultText: "none (required unless every group has its own `listen`)",
    examples: ["127.0.0.1:8443", "[::1]:8443", "0.0.0.0:8443"],
  }),
  handshake_timeout: withDefault(duration(), "5s", {
    description:
      "A client that has not completed its TLS handshake by then is closed (`handshake_timeout`).",
    examples: ["5s", "2s"],
  }),
  connect_timeout: withDefault(duration(), "3s", {
    description: "Time allowed for one dial to an upstream.",
    examples: ["3s", "500ms"],
  }),
  connect_retries: withDefault(integer(0, 10), 2n, {
    description:
      "A failed dial is tried again this many times (the default makes three attempts in all), on an upstream not tried yet while there is one, else on a tried one again (a group of one upstream dials it up to three times), but never again on one refused for its certificate. See [retries](OPERATIONS.md#passive-health-ejection-panic-mode-retries).",
    examples: [2, 0],
  }),
  idle_timeout: withDefault(duration(), "15m", {
    description:
      "A connection with no byte in either direction for this long is closed (`idle_timeout`).",
    examples: ["15m", "1h"],
  }),
  drain_timeout: withDefault(duration(), "30s", {
    description:
      "On SIGTERM or SIGINT, how long open connections get to finish before they are closed.",
    examples: ["30s", "10s"],
  }),
  workers: optional(integer(1, 1024), {
    description:
      "Threads that accept and forward connections; `1` runs one event loop. With `[cluster]` mtlb runs one event loop whatever this says. See [workers](OPERATIONS.md#workers-all-cores). Changing it needs a restart.",
    defaultText: "one per CPU",
    examples: [4, 1],
  }),
  max_connections: optional(integer(1), {
    description:
      "Open client connections for the whole server, handshaking ones included. Beyond it a new connection is closed before any TLS work (`server_full`). The default is half the file descriptors left after 64 reserved: `(ulimit -n − 64) / 2`. Deno reads the limit only with `--allow-all`; with the narrow permissions mtlb assumes 32,768 (16,352 connections), so set it where `ulimit -Hn` is lower. `check` prints the value in force and where it came from.",
    defaultText: "from the open-files limit",
    examples: [10000],
  }),
  max_handshakes: optional(integer(1), {
    description:
      "TLS handshakes in flight. When a new connection would pass it (or `max_connections`), a handshake in flight makes room (`handshake_shed`): the oldest whose client has sent nothing for 100 ms, else the oldest in flight for a quarter of `handshake_timeout`; with neither, the newcomer is refused (`server_full`). Silent or slow clients cannot keep others out, and a burst of real ones is not cut short. With workers, each worker takes its share.",
    defaultText: "`max_connections`, at most 4096",
    examples: [4096],
  }),
  on_policy_change: withDefault(oneOf(["close", "keep"]), "close", {
    description:
      'What a reload does to live connections the new configuration would refuse (certificate revoked, client removed, group withdrawn, CA removed): `"close"` ends them (`revoked`, `policy_changed`); `"keep"` lets them run to their end. See [TRUST.md](TRUST.md#live-connections).',
    examples: ["close", "keep"],
  }),
  max_lifetime: optional(duration(), {
    description:
      "A forwarded connection open this long is closed (`max_lifetime` in its audit record), checked about once a second.",
    defaultText: "none (no bound)",
    examples: ["24h"],
  }),
  max_buffer: withDefault(size(16 * 1024), "1MiB", {
    description:
      "Bytes held per connection and direction at most, at least 16 KiB. A side that sends faster than the other reads is paused (when 64 KiB wait, the runtime's high-water mark; for a plain upstream, when a quarter of this waits, at most 256 KiB), and then holds no more than that and one 64 KiB read. A connection whose buffer passes it anyway, from a side that cannot be paused, is closed (`buffer_overflow`), and so is a client that sends more than this before its upstream is connected.",
    examples: ["1MiB", "256KiB"],
  }),
  resolver: optional(
    address(false).refine((value) => isIP(parseHostPort(value).hostname) !== 0, {
      error: (issue) => `must be an IP address and port, received ${describe(issue.input)}`,
    }),
    {
      description:
        'The DNS server that `{ dns = ... }` and `{ srv = ... }` upstreams are looked up with, `"IP:port"`. See [upstreams from DNS](OPERATIONS.md#upstreams-from-dns).',
      defaultText: "the system resolver (the `nameserver` lines of /etc/resolv.conf)",
      examples: ["127.0.0.1:53", "[fd00::53]:53"],
    },
  ),
  watch: withDefault(boolean(), false, {
    description:
      "Reload when the config file, a `[tls]` file or a file of a group's `tls` changes, as SIGHUP does. Changing it needs a restart.",
    examples: [false, true],
  }),
});

const tls = table({
  ca: required(text(), {
    description:
      "The CA bundle client certificates must chain to (PEM, one or more certificates, roots and intermediates), relative to the config's folder. `check` lists each CA with its `spki_sha256`, the value `match.issuer` takes.",
    examples: ["certs/ca.crt", "/etc/mtlb/ca.crt"],
  }),
  cert: required(text(), {
    description:
      "The server certificate, PEM, with its intermediates after it. Clients that check host names need each SNI name they send in it (see [the server certificate](TRUST.md#the-server-certificate)).",
    examples: ["certs/server.crt"],
  }),
  key: required(text(), {
    description: "The server's private key, PEM, unencrypted. It must match `cert`.",
    examples: ["certs/server.key"],
  }),
  ciphers: withDefault(
    list(
      oneOf(TLS13_CIPHERS, `a TLS 1.3 cipher suite (${TLS13_CIPHERS.join(", ")})`),
      { nonEmpty: "must list at least one cipher suite", identity: (suite) => suite },
    ),
    ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"],
    {
      description:
        "TLS 1.3 suites allowed, in order of preference; `TLS_CHACHA20_POLY1305_SHA256` may be added. A connection that negotiated another is refused (`cipher_not_allowed`). TLS 1.2 and older are never accepted.",
      examples: [["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]],
    },
  ),
  crl: optional(text(), {
    description:
      "Certificate revocation lists of the CAs of `ca`: PEM (one `X509 CRL` block per CA) or one DER CRL. See [revocation](TRUST.md#revocation).",
    defaultText: "none (no revocation check)",
    examples: ["certs/ca.crl"],
  }),
  client_eku: withDefault(oneOf(["required", "optional"]), "required", {
    description:
      'With `"required"` a client certificate must carry an extended key usage extension listing clientAuth; `"optional"` also accepts one without the extension (weaker). An extension without clientAuth is always refused.',
    examples: ["required", "optional"],
  }),
  crl_missing: withDefault(oneOf(["refuse", "allow"]), "refuse", {
    description:
      "With `crl`, what happens to a certificate whose issuing CA has no CRL in the file: refused (`crl_missing`), or not checked.",
    examples: ["refuse", "allow"],
  }),
});

/** `{ count, per }`: a token bucket of `count` new connections refilled every `per`. */
function rate(where: string, defaultText = "`[limits] connection_rate`") {
  return optional(
    table({
      count: required(integer(1), {
        description: "New connections per window, and the bucket's capacity.",
        examples: [100],
      }),
      per: required(duration(), { description: "The window.", examples: ["1m", "1s"] }),
    }),
    {
      description:
        `At most \`count\` new connections per \`per\`, as a token bucket of \`count\` refilled continuously (\`limit_rate\` beyond it)${where}.`,
      defaultText: where === "" ? "none (no rate limit)" : defaultText,
      examples: [{ count: 100, per: "1m" }],
    },
  );
}

const limits = table({
  max_connections_per_client: withDefault(integer(1), 10n, {
    description: "Concurrent connections per client (`limit_concurrency` beyond it).",
    examples: [10, 100],
  }),
  connection_rate: rate(""),
  on_rate_limit: withDefault(oneOf(["reject", "queue"]), "reject", {
    description:
      'A connection over a rate limit is refused (`"reject"`, `limit_rate`), or waits for its token (`"queue"`) before any upstream is dialed, holding its place under the concurrent caps; it is refused (`limit_rate`) when its token is not due within `queue_timeout` (known on arrival: tokens are reserved in arrival order). A drain refuses queued connections (`server_closing`).',
    examples: ["reject", "queue"],
  }),
  queue_timeout: withDefault(duration(), "5s", {
    description:
      'The longest a connection waits for its rate token, with `on_rate_limit = "queue"`.',
    examples: ["5s", "500ms"],
  }),
  bandwidth: optional(bandwidth(), {
    description:
      "Bytes per second per client, each direction, over all its connections: reads are paced (the sender is slowed by TCP backpressure), never dropped. At least `1KB/s`.",
    defaultText: "none (no limit)",
    examples: ["10MiB/s", "500KB/s"],
  }),
});

/** Whether a key is read with its default (a section) or may be left out (a group's override). */
type Mode = "section" | "override";
type Keyed<M extends Mode, T extends z.ZodType> = M extends "section" ? z.ZodPrefault<T>
  : z.ZodOptional<T>;

/** The keys of `[section]` (each with its default) or of a group's override of it (inherited). */
function inheritedKey<M extends Mode>(mode: M, section: string) {
  return <T extends z.ZodType>(key: string, schema: T, value: z.input<T>, doc: KeyText) =>
    (mode === "section"
      ? withDefault(schema, value, doc)
      : optional(schema, { ...doc, defaultText: `\`[${section}] ${key}\`` })) as Keyed<M, T>;
}

/** The keys of `[health]` (with defaults) or of a group's `health` (each inherited). */
function healthKeys<M extends Mode>(mode: M) {
  const key = inheritedKey(mode, "health");
  const step = (name: string, doc: KeyText) =>
    optional(text({ allowEmpty: true }), {
      ...doc,
      description: mode === "section"
        ? `${doc.description} An empty string is the same as none.`
        : `${doc.description} An empty string turns off the \`${name}\` of \`[health]\`.`,
      defaultText: mode === "section" ? "none" : `\`[health] ${name}\``,
    });
  return {
    interval: key("interval", duration(), "30s", {
      description: "Time between probes of an upstream.",
      examples: ["30s", "5s"],
    }),
    timeout: key("timeout", duration(), "1s", {
      description: "Time allowed for one probe.",
      examples: ["1s", "500ms"],
    }),
    rise: key("rise", integer(1, 1000), 1n, {
      description: "Consecutive successful probes before an unhealthy upstream is used again.",
      examples: [1, 2],
    }),
    fall: key("fall", integer(1, 1000), 1n, {
      description: "Consecutive failed probes before an upstream is taken out.",
      examples: [1, 3],
    }),
    send: step("send", {
      description:
        'Bytes written after connecting, such as `"PING\\r\\n"`. Without `send` and `expect` a probe is a plain TCP connect.',
      examples: ["PING\r\n"],
    }),
    expect: step("expect", {
      description:
        'The reply must start with these bytes, such as `"+PONG"`; alone, a banner check.',
      examples: ["+PONG", "SSH-"],
    }),
  };
}

/** The keys of `[outlier]` (with defaults) or of a group's `outlier` (each inherited). */
function outlierKeys<M extends Mode>(mode: M) {
  const key = inheritedKey(mode, "outlier");
  return {
    consecutive_failures: key("consecutive_failures", integer(0, 1000), 5n, {
      description:
        "Failures of one kind in a row (failed dials, or connections the upstream reset before sending anything) that eject an upstream. `0` turns ejection off.",
      examples: [5, 0],
    }),
    base_ejection_time: key("base_ejection_time", duration(), "30s", {
      description: "The first ejection; the n-th in a row lasts n times as long.",
      examples: ["30s", "10s"],
    }),
    max_ejection_time: key("max_ejection_time", duration(), "5m", {
      description: "The longest ejection; at least `base_ejection_time`.",
      examples: ["5m", "2m"],
    }),
    max_ejected_percent: key("max_ejected_percent", integer(0, 100), 50n, {
      description:
        "The largest share of a group ejected at once, in percent; at least one upstream when above 0, never all of them.",
      examples: [50, 34],
    }),
    panic_threshold: key("panic_threshold", integer(0, 100), 50n, {
      description:
        "When fewer than this share of a group's upstreams are available, in percent, ejected upstreams are picked again. `0`: only when none is left.",
      examples: [50, 0],
    }),
  };
}

/** Health settings without an empty `send` or `expect`, which is no step at all. */
export function withoutEmptySteps<
  T extends { send?: string | undefined; expect?: string | undefined },
>(
  { send, expect, ...rest }: T,
): Omit<T, "send" | "expect"> & { send?: string; expect?: string } {
  return { ...rest, ...(send ? { send } : {}), ...(expect ? { expect } : {}) };
}

const health = table(healthKeys("section")).transform(withoutEmptySteps);

const outlier = table(outlierKeys("section"));

/** How often an upstream entry looked up in DNS is looked up again, at least 100 ms. */
const dnsInterval = () =>
  withDefault(duration(100), "10s", {
    description:
      "Time between two look-ups of the name; the addresses found replace the last ones (kept ones keep their connections and health, gone ones drain). A failed look-up keeps the last set.",
    examples: ["10s", "1m"],
  });

/** A DNS name: letters, digits, `_`, `-` and dots, no empty label, a final dot allowed. */
const DNS_NAME_RE =
  /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** `"host:port"`, `{ address, weight }`, `{ dns, interval }` or `{ srv, interval }`. */
const upstream = z.union([
  address(false).transform((address) => ({ address, weight: 1 })),
  table({
    address: required(address(false), {
      description: "The upstream, `host:port`; a host name is resolved at each dial.",
      examples: ["127.0.0.1:6380"],
    }),
    weight: withDefault(integer(1, 1000), 1n, {
      description:
        "Relative weight: connections go to the healthy upstream with the fewest active connections relative to its weight.",
      examples: [2],
    }),
  }),
  table({
    dns: required(address(false), {
      description:
        "A host name and port: every A and AAAA address of the name is an upstream on the port. See [upstreams from DNS](OPERATIONS.md#upstreams-from-dns).",
      examples: ["api.internal:7000"],
    }),
    interval: dnsInterval(),
  }).transform(({ dns, interval }): DnsUpstreamConfig => {
    const { hostname, port } = parseHostPort(dns);
    return { type: "dns", name: hostname, port, interval };
  }),
  table({
    srv: required(shaped(DNS_NAME_RE, 'a DNS name such as "_api._tcp.internal"'), {
      description:
        "An SRV name: the addresses of the targets of its records of the lowest priority are upstreams, on the records' ports, with their weights. See [upstreams from DNS](OPERATIONS.md#upstreams-from-dns).",
      examples: ["_api._tcp.internal"],
    }),
    interval: dnsInterval(),
  }).transform(({ srv, interval }): DnsUpstreamConfig => ({
    type: "srv",
    name: srv.replace(/\.$/, ""),
    interval,
  })),
], {
  error: (issue) => {
    const kinds = ["address", "dns", "srv"].filter((key) =>
      typeof issue.input === "object" && issue.input !== null && key in issue.input
    );
    return kinds.length > 1
      ? `must have one of address, dns or srv, received a table with ${kinds.join(" and ")}`
      : `must be "host:port" or { address, weight }, or an entry looked up in DNS ({ dns = "name:port" } or { srv = "name" }), received ${
        describe(issue.input)
      }`;
  },
});

/** Whether an entry of `upstreams` is looked up in DNS. */
function isDns(entry: UpstreamConfig | DnsUpstreamConfig): entry is DnsUpstreamConfig {
  return "type" in entry;
}

const ALPN_RE = /^[\x21-\x7e]{1,255}$/;

const HOST_NAME_RE =
  /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A group's `tls`: how mtlb verifies its upstreams, and what it presents to them. */
const upstreamTls = table({
  ca: required(text(), {
    description:
      "The CA bundle (PEM) the upstreams' certificates must chain to, relative to the config's folder. Only these CAs are trusted, not the system's.",
    examples: ["certs/upstream-ca.crt"],
  }),
  cert: optional(text(), {
    description:
      "A client certificate (PEM, intermediates after it) presented to upstreams that ask for one (mutual TLS); with `key`.",
    defaultText: "none (no client certificate)",
    examples: ["certs/mtlb-client.crt"],
  }),
  key: optional(text(), {
    description: "The private key of `cert`, PEM, unencrypted; with `cert`.",
    defaultText: "none",
    examples: ["certs/mtlb-client.key"],
  }),
  server_name: optional(
    shaped(HOST_NAME_RE, "a host name", (name) => name.toLowerCase()),
    {
      description:
        "The name sent as SNI and verified in each upstream's certificate. Without it, each upstream's host is (an IP address is verified against the certificate's IP addresses, with no SNI), or for an upstream of a `{ dns = \"NAME:PORT\" }` entry, NAME. Required with `{ srv = ... }` entries.",
      defaultText: "each upstream's host",
      examples: ["db.internal"],
    },
  ),
});

/** A `[groups.NAME]` table, its `health` and `outlier` still the group's own overrides. */
export const GROUP = documented(
  table({
    upstreams: documented(
      list(upstream, {
        nonEmpty: "must list at least one upstream",
        identity: (u) =>
          isDns(u)
            ? `${u.type} ${u.name.toLowerCase()}${u.type === "dns" ? `:${u.port}` : ""}`
            : u.address.toLowerCase(),
      }),
      {
        description:
          '`"host:port"` strings, `{ address = "host:port", weight = N }` tables, and entries looked up in DNS at an interval: `{ dns = "name:port", interval = "10s" }` (every A and AAAA address of the name) and `{ srv = "_service._tcp.name", interval = "10s" }` (SRV targets, ports and weights). At least one, each once; `weight` is 1 to 1000 (default 1). Connections go to the healthy upstream with the fewest active connections relative to its weight; ties rotate. See [upstreams from DNS](OPERATIONS.md#upstreams-from-dns).',
        defaultText: "required",
        examples: [
          ["127.0.0.1:6379", { address: "127.0.0.1:6380", weight: 2 }],
          [{ dns: "api.internal:7000", interval: "10s" }],
          [{ srv: "_api._tcp.internal", interval: "30s" }, "10.0.0.9:7000"],
        ],
      },
    ),
    listen: optional(address(true), {
      description:
        "A listener of the group's own; every connection there is for this group, whatever its SNI or ALPN.",
      defaultText: "none (the shared `[server] listen`)",
      examples: ["127.0.0.1:9443"],
    }),
    health: optional(table(healthKeys("override")), {
      description: "Overrides of `[health]` for this group, key by key.",
      defaultText: "`[health]`",
      examples: [{ send: "PING\r\n", expect: "+PONG" }, { interval: "5s" }],
    }),
    outlier: optional(table(outlierKeys("override")), {
      description: "Overrides of `[outlier]` for this group, key by key.",
      defaultText: "`[outlier]`",
      examples: [{ consecutive_failures: 3 }],
    }),
    proxy_protocol: optional(oneOf(["v2"]), {
      description:
        "Send a PROXY protocol v2 header to the upstream before the client's bytes (see [PROXY v2](OPERATIONS.md#proxy-protocol-v2)); health probes send none.",
      defaultText: "none (no header)",
      examples: ["v2"],
    }),
    tls: optional(upstreamTls, {
      description:
        "Connect to the group's upstreams over TLS (1.2 or 1.3), verifying their certificates; health probes too. An upstream whose certificate does not chain to `ca`, expired or is not for the name is refused, and so is the client's connection (`upstream_tls_untrusted`, `upstream_tls_expired`, `upstream_tls_name`, `upstream_tls_handshake`). See [TLS to upstreams](OPERATIONS.md#tls-to-upstreams).",
      defaultText: "none (plain TCP)",
      examples: [{ ca: "certs/upstream-ca.crt", server_name: "db.internal" }],
    }),
    alpn: optional(
      list(
        shaped(
          ALPN_RE,
          'an ALPN protocol name (1 to 255 printable ASCII characters, such as "h2")',
        ),
      ),
      {
        description:
          'ALPN protocols mtlb may select for this group\'s clients, in order of preference (`["h2", "http/1.1"]`), so HTTP/2 and gRPC clients get the protocol their upstream speaks. One is selected only when the client offers it; otherwise the handshake goes on without ALPN. Each is 1 to 255 visible ASCII characters.',
        default: [],
        examples: [["h2", "http/1.1"]],
      },
    ),
    max_connections: optional(integer(1), {
      description:
        "Concurrent connections to the group over all its clients (`group_full` beyond it); each client's own caps apply besides.",
      defaultText: "none (no cap)",
      examples: [500],
    }),
  }).transform(({ upstreams, ...rest }) => ({
    ...rest,
    upstreams: upstreams.filter((u): u is UpstreamConfig => !isDns(u)),
    dns: upstreams.filter(isDns),
  })),
  {
    description: "A group: a named set of upstreams and how they are watched.",
    defaultText: "none",
    examples: [{ upstreams: ["127.0.0.1:6379"] }],
  },
);

const HEX_RE = /^\s*(?:[0-9a-fA-F]:?){63}[0-9a-fA-F]\s*$/;
const SERIAL_RE = /^\s*[0-9a-fA-F]+(?::[0-9a-fA-F]+)*\s*$/;

/** A SHA-256 in hex, colons optional, read as 64 lowercase digits. */
function sha256(what: string) {
  return shaped(
    HEX_RE,
    `${what} in hex (64 digits, colons optional)`,
    (value) => value.trim().replaceAll(":", "").toLowerCase(),
  );
}

/** The `match` of a client. */
const match = table({
  spki_sha256: optional(sha256("a SHA-256"), {
    description:
      "SHA-256 of the certificate's public key (SubjectPublicKeyInfo, DER), any case, colons optional: `openssl x509 -in app.crt -noout -pubkey | openssl pkey -pubin -outform der | sha256sum`. `main.ts certs` prints it for the clients it makes.",
    examples: ["3f1c" + "00".repeat(30)],
  }),
  serial: optional(
    shaped(
      SERIAL_RE,
      "a serial number in hex (colons optional)",
      normalizeHex,
    ),
    {
      description:
        "The serial number in hex, colons and leading zeros optional: `openssl x509 -in app.crt -noout -serial`.",
      examples: ["0A:1B:00"],
    },
  ),
  cn: optional(text(), { description: "The subject common name, exactly.", examples: ["alice"] }),
  san_uri: optional(text(), {
    description:
      'A URI subject alternative name the certificate carries, such as a SPIFFE ID `"spiffe://example.org/ns/prod/sa/app"`.',
    examples: ["spiffe://example.org/ns/prod/sa/app"],
  }),
  san_dns: optional(text().transform((name) => name.toLowerCase()), {
    description: "A DNS subject alternative name the certificate carries (any case).",
    examples: ["app.example.org"],
  }),
  issuer: optional(sha256("the SHA-256 of the issuing CA's public key (as `check` lists it)"), {
    description:
      "The `spki_sha256` of the CA that issued the certificate (its direct issuer), as `check` lists the CAs of `tls.ca`. It pins the client to that CA when the bundle holds several; `check` and start warn about rules matched by name or serial that another CA of the bundle could satisfy.",
    examples: ["ab" + "cd".repeat(31)],
  }),
}).refine((m) => Object.keys(m).length > 0, {
  error: "must give at least one of spki_sha256, serial, cn, san_uri, san_dns, issuer",
});

/** A `[clients.NAME.per_group.GROUP]` table. */
const perGroup = documented(
  table({
    max_connections: optional(integer(1), {
      description:
        "The client's concurrent connections to this group (`limit_concurrency` beyond it).",
      defaultText: "none (only its overall cap)",
      examples: [2],
    }),
    connection_rate: rate(" to this group", "none (only its overall rate)"),
  }),
  {
    description: "The client's limits within one of its groups; its overall limits apply besides.",
    defaultText: "none",
    examples: [{ max_connections: 2 }],
  },
);

/** A `[clients.NAME]` table. */
export const CLIENT = documented(
  table({
    match: documented(match, {
      description:
        "How the client's certificate is recognised, at least one key; every key given must match. A certificate matching no client (`unknown_identity`) or several (`ambiguous_identity`) is refused.",
      defaultText: "required",
      examples: [{ cn: "alice" }, { san_uri: "spiffe://example.org/ns/prod/sa/app" }],
    }),
    groups: documented(
      list(text({ expected: "a group name" }), {
        nonEmpty: "must list at least one group",
        identity: (group) => group,
      }),
      {
        description: "The groups it may use, at least one, each defined under `[groups]`.",
        defaultText: "required",
        examples: [["cache"]],
      },
    ),
    max_connections: optional(integer(1), {
      description: "Its own concurrent cap, instead of `[limits] max_connections_per_client`.",
      defaultText: "`[limits] max_connections_per_client`",
      examples: [20],
    }),
    connection_rate: rate(", instead of `[limits] connection_rate`"),
    bandwidth: optional(bandwidth(), {
      description:
        "Its bytes per second, each direction, over all its connections, instead of `[limits] bandwidth`.",
      defaultText: "`[limits] bandwidth`",
      examples: ["10MiB/s"],
    }),
    per_group: optional(named(perGroup), {
      description:
        "Its limits within some of its groups (`[clients.NAME.per_group.GROUP]`), besides its overall ones; each `GROUP` is one of its `groups`.",
      defaultText: "none",
      examples: [{ cache: { max_connections: 2, connection_rate: { count: 10, per: "1m" } } }],
    }),
  }),
  {
    description: "A client: how its certificate is recognised, the groups it may use, its limits.",
    defaultText: "none",
    examples: [{ match: { cn: "alice" }, groups: ["cache"] }],
  },
);

const admin = table({
  listen: optional(address(true), {
    description:
      "Where the admin endpoint listens; without it there is none. Keep it on a loopback or management address, or set `token_file`; `check` and start warn otherwise. Changing it needs a restart.",
    defaultText: "none (no admin endpoint)",
    examples: ["127.0.0.1:9090"],
  }),
  allow_reload: withDefault(boolean(), false, {
    description: "Whether `POST /reload` may reload the configuration (SIGHUP always can).",
    examples: [false, true],
  }),
  hosts: withDefault(
    list(
      shaped(
        HOST_NAME_RE,
        'a host name such as "mtlb.internal" (no port, no wildcard)',
        (host) => host.length <= 253 ? host.toLowerCase() : undefined,
      ),
      { identity: (host) => host },
    ),
    [],
    {
      description:
        'Names accepted in the `Host` header besides IP addresses and `localhost`, such as `["mtlb.internal"]` (no port, no wildcard). Requests naming anything else are answered 421, which defeats DNS rebinding.',
      examples: [["mtlb.internal"]],
    },
  ),
  token_file: optional(text(), {
    description:
      "A file holding a bearer token (at least 32 visible ASCII characters: `openssl rand -hex 32 > admin.token`), relative to the config's folder. With it, every request but `GET /healthz` needs `Authorization: Bearer TOKEN`. Read at start, by `check` and at every reload.",
    defaultText: "none (no token asked for)",
    examples: ["admin.token"],
  }),
});

const log = table({
  format: withDefault(oneOf(["auto", "text", "json"]), "auto", {
    description:
      '`"auto"` writes text on a terminal and JSON lines otherwise. `--log-format` overrides it. Changing it needs a restart.',
    examples: ["auto", "json"],
  }),
});

/** A Redis URL, read with the `host:port` it names. */
const REDIS_RE = /^\s*[Rr][Ee][Dd][Ii][Ss][Ss]?:\/\//;
const store = shaped(
  REDIS_RE,
  'a Redis URL such as "redis://127.0.0.1:6379"',
  (value) => {
    const url = new URL(value);
    if (url.hostname === "") return undefined;
    return { store: value, storeAddress: `${url.hostname}:${url.port === "" ? 6379 : url.port}` };
  },
);

const cluster = table({
  store: documented(
    store,
    {
      description:
        "The shared store: `redis://[user:password@]host:port[/db]`, or `rediss://...` for TLS.",
      defaultText: "required in the section",
      examples: ["redis://mtlb:secret@10.0.0.5:6379"],
    },
  ),
  on_store_error: withDefault(oneOf(["local", "closed"]), "local", {
    description:
      'When Redis fails or is slow, apply limits per instance (`"local"`), or refuse new connections (`"closed"`, `limit_store_unavailable`).',
    examples: ["local", "closed"],
  }),
  lease_ttl: withDefault(duration(1000), "15s", {
    description: "How long a dead instance's slots keep counting; at least 1 s.",
    examples: ["15s", "30s"],
  }),
  timeout: withDefault(duration(), "250ms", {
    description: "The longest wait on Redis for one connection.",
    examples: ["250ms", "100ms"],
  }),
  clients: withDefault(oneOf(["file", "shared"]), "file", {
    description:
      'Where this instance takes its `[clients]` table from: `"file"`, this file; `"shared"`, the fleet\'s client policy in the store, published with `main.ts clients push` and applied by every instance within a second (see [one client policy](FLEET.md#one-client-policy-for-the-fleet)). Groups, listeners and TLS stay this file\'s. Changing it needs a restart.',
    examples: ["file", "shared"],
  }),
  instance_id: optional(text(), {
    description: "This instance's name in Redis; never the same for two live instances.",
    defaultText: "random at each start",
    examples: ["lb-a"],
  }),
}).transform(({ store, ...rest }) => ({ ...store, ...rest }));

/** The tables of the file, in the order the reference lists them. */
export const SECTIONS = {
  server: withDefault(server, {}, {
    description: "The shared listener, timeouts and caps of the whole server.",
    examples: [{ listen: "127.0.0.1:8443" }],
  }),
  tls: required(tls, {
    description:
      "The server's certificate and the CAs client certificates must chain to. Paths are files, relative to the config's folder.",
    examples: [{ ca: "certs/ca.crt", cert: "certs/server.crt", key: "certs/server.key" }],
  }),
  limits: withDefault(limits, {}, {
    description:
      "Defaults for every client, per identity (the matched `[clients.NAME]`), not per IP address.",
    examples: [{ max_connections_per_client: 10 }],
  }),
  health: withDefault(health, {}, {
    description:
      "Active health checks, the defaults for every group; a group overrides any of them with `health = { ... }`. Upstreams are unknown until their first probe; mtlb listens once the first round is done.",
    examples: [{ interval: "30s" }],
  }),
  outlier: withDefault(outlier, {}, {
    description:
      "Passive health from real traffic, the defaults for every group; a group overrides any of them with `outlier = { ... }`. See [passive health](OPERATIONS.md#passive-health-ejection-panic-mode-retries).",
    examples: [{ consecutive_failures: 5 }],
  }),
  groups: required(
    named(GROUP).refine((groups) => Object.keys(groups).length > 0, {
      error: "must define at least one group, such as [groups.app]",
    }),
    {
      description:
        "Named sets of upstreams, at least one. `NAME` is what clients ask for with SNI or ALPN: letters, digits, `_`, `.` and `-`, starting with a letter or a digit; two names may not differ only in letter case.",
      examples: [{ cache: { upstreams: ["127.0.0.1:6379"] } }],
    },
  ),
  clients: withDefault(named(CLIENT), {}, {
    description:
      "Who may connect, recognised by their certificate; `NAME` as for groups. Without any client every connection is refused.",
    examples: [{ alice: { match: { cn: "alice" }, groups: ["cache"] } }],
  }),
  admin: withDefault(admin, {}, {
    description:
      "The HTTP admin endpoint: dashboard, metrics, status, reload (see [the admin endpoint](OPERATIONS.md#admin-endpoint)). Off unless `listen` is set.",
    examples: [{ listen: "127.0.0.1:9090" }],
  }),
  log: withDefault(log, {}, { description: "The log's format.", examples: [{ format: "json" }] }),
  cluster: optional(cluster, {
    description:
      "State shared by a fleet of instances through Redis (see [FLEET.md](FLEET.md)). Absent or empty: everything stays in memory, per instance.",
    defaultText: "none (in memory, per instance)",
    examples: [{ store: "redis://10.0.0.5:6379" }],
  }),
};

/** The type each pattern of the schema stands for, by its source, as docs/CONFIG.md names it. */
export const PATTERN_TYPES: ReadonlyMap<string, string> = new Map([
  [DURATION_PATTERN, "duration"],
  [SIZE_PATTERN, "size"],
  [RATE_PATTERN, "rate"],
  [HOST_PORT_PATTERN, "address"],
  [HEX_RE.source, "hex, 64 digits"],
  [SERIAL_RE.source, "hex"],
  [ALPN_RE.source, "protocol name"],
  [HOST_NAME_RE.source, "host name"],
  [REDIS_RE.source, "Redis URL"],
]);

/** The whole file. */
export const CONFIG_SCHEMA = table(SECTIONS);

/** What the schema reads from a valid file, before names, paths and overrides are settled. */
export type ParsedConfig = z.output<typeof CONFIG_SCHEMA>;
/** A group as read, its `health` and `outlier` its own overrides. */
export type ParsedGroup = z.output<typeof GROUP>;
/** A client as read. */
export type ParsedClient = z.output<typeof CLIENT>;

/** Whether two types accept the same values. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;

/**
 * The types of types.ts are what the schema reads: the compiler refuses this list
 * when a key, its type or whether it may be absent differ.
 */
export type _TypesMatchSchema = [
  Assert<Same<ServerConfig, ParsedConfig["server"]>>,
  // The suites are read as the names of TLS13_CIPHERS; the type says strings.
  Assert<Same<Omit<TlsConfig, "ciphers">, Omit<ParsedConfig["tls"], "ciphers">>>,
  Assert<Same<ParsedConfig["tls"]["ciphers"][number], typeof TLS13_CIPHERS[number]>>,
  Assert<Same<LimitsConfig, ParsedConfig["limits"]>>,
  Assert<Same<HealthConfig, ParsedConfig["health"]>>,
  Assert<Same<OutlierConfig, ParsedConfig["outlier"]>>,
  Assert<Same<Partial<HealthConfig>, NonNullable<ParsedGroup["health"]>>>,
  Assert<Same<Partial<OutlierConfig>, NonNullable<ParsedGroup["outlier"]>>>,
  Assert<Same<UpstreamConfig, ParsedGroup["upstreams"][number]>>,
  Assert<
    Same<Omit<GroupConfig, "name" | "health" | "outlier">, Omit<ParsedGroup, "health" | "outlier">>
  >,
  Assert<Same<ClientMatch, ParsedClient["match"]>>,
  Assert<Same<Omit<ClientConfig, "name">, ParsedClient>>,
  Assert<Same<ClientGroupLimits, NonNullable<ParsedClient["perGroup"]>[string]>>,
  Assert<Same<AdminConfig, ParsedConfig["admin"]>>,
  Assert<Same<LogConfig, ParsedConfig["log"]>>,
  Assert<Same<ClusterConfig | undefined, ParsedConfig["cluster"]>>,
  Assert<Same<keyof Config, keyof ParsedConfig | "path">>,
];
