import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { type Config, ConfigError, loadConfig, parseConfig } from "../lib/config/mod.ts";
import { BASE, PATH } from "./_config_fixtures.ts";

/** BASE with one exact line replaced (the line must exist once). */
function edit(from: string, to: string): string {
  assert.ok(BASE.includes(from), `BASE has no ${JSON.stringify(from)}`);
  return BASE.replace(from, to);
}

function configError(text: string): ConfigError {
  try {
    parseConfig(text, { path: PATH });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  return assert.fail("expected a ConfigError");
}

Deno.test("parseConfig() reads every section and key of a full config", () => {
  const text = `
[server]
listen = "0.0.0.0:8443"
handshake_timeout = "2s"
connect_timeout = "500ms"
connect_retries = 1
idle_timeout = "1h"
drain_timeout = "10s"
workers = 4
max_connections = 5000
watch = true

[tls]
ca = "/srv/pki/ca.crt"
cert = "pki/server.crt"
key = "../keys/server.key"
ciphers = ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
crl = "pki/ca.crl"
client_eku = "optional"
crl_missing = "allow"

[limits]
max_connections_per_client = 5
connection_rate = { count = 100, per = "1m" }

[health]
interval = "10s"
timeout = "2s"
rise = 2
fall = 3
send = "PING\\r\\n"
expect = "+PONG"

[outlier]
consecutive_failures = 3
base_ejection_time = "10s"
max_ejection_time = "2m"
max_ejected_percent = 34
panic_threshold = 40

[admin]
listen = "127.0.0.1:9000"
allow_reload = true
hosts = ["MTLB.internal", "lb-1.mgmt.example.org"]
token_file = "admin.token"

[log]
format = "json"

[groups.cache]
upstreams = ["127.0.0.1:6379", { address = "[::1]:6380", weight = 2 }]
listen = "127.0.0.1:9443"
health = { expect = "", interval = "1s" }
outlier = { consecutive_failures = 0, panic_threshold = 0 }
proxy_protocol = "v2"

[groups.web-1]
upstreams = [
  { address = "Backend.internal:80" },
]

[clients.alice]
match = { spki_sha256 = "3F:1C:${"00:".repeat(28)}AB:CD", serial = "00:0A:FF" }
groups = ["cache", "web-1"]
max_connections = 20
connection_rate = { count = 5, per = "1s" }

[clients.spiffe]
match = { san_uri = "spiffe://example.org/web", san_dns = "Web.Example.org", cn = "web", issuer = "AB:${
    "cd:".repeat(30)
  }EF" }
groups = ["web-1"]
`;
  const config = parseConfig(text, { path: PATH });
  const health = { interval: 10_000, timeout: 2000, rise: 2, fall: 3, send: "PING\r\n" };
  const outlier = {
    consecutiveFailures: 3,
    baseEjectionTime: 10_000,
    maxEjectionTime: 120_000,
    maxEjectedPercent: 34,
    panicThreshold: 40,
  };
  const expected: Config = {
    path: PATH,
    server: {
      listen: "0.0.0.0:8443",
      handshakeTimeout: 2000,
      connectTimeout: 500,
      connectRetries: 1,
      idleTimeout: 3_600_000,
      drainTimeout: 10_000,
      workers: 4,
      maxConnections: 5000,
      onPolicyChange: "close",
      maxBuffer: 1048576,
      watch: true,
    },
    tls: {
      ca: "/srv/pki/ca.crt",
      cert: "/etc/mtlb/pki/server.crt",
      key: "/etc/keys/server.key",
      ciphers: ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"],
      crl: "/etc/mtlb/pki/ca.crl",
      clientEku: "optional",
      crlMissing: "allow",
    },
    limits: {
      maxConnectionsPerClient: 5,
      connectionRate: { count: 100, per: 60_000 },
      onRateLimit: "reject",
      queueTimeout: 5000,
    },
    health: { ...health, expect: "+PONG" },
    outlier,
    groups: new Map([
      ["cache", {
        name: "cache",
        upstreams: [{ address: "127.0.0.1:6379", weight: 1 }, { address: "[::1]:6380", weight: 2 }],
        dns: [],
        listen: "127.0.0.1:9443",
        // Field-by-field override; the empty expect switches the inherited one off.
        health: { ...health, interval: 1000 },
        outlier: { ...outlier, consecutiveFailures: 0, panicThreshold: 0 },
        proxyProtocol: "v2",
      }],
      ["web-1", {
        name: "web-1",
        upstreams: [{ address: "Backend.internal:80", weight: 1 }],
        dns: [],
        health: { ...health, expect: "+PONG" },
        outlier,
      }],
    ]),
    clients: new Map([
      ["alice", {
        name: "alice",
        match: { spkiSha256: `3f1c${"00".repeat(28)}abcd`, serial: "aff" },
        groups: ["cache", "web-1"],
        maxConnections: 20,
        connectionRate: { count: 5, per: 1000 },
      }],
      ["spiffe", {
        name: "spiffe",
        match: {
          sanUri: "spiffe://example.org/web",
          sanDns: "web.example.org",
          cn: "web",
          issuer: `ab${"cd".repeat(30)}ef`,
        },
        groups: ["web-1"],
      }],
    ]),
    admin: {
      listen: "127.0.0.1:9000",
      allowReload: true,
      hosts: ["mtlb.internal", "lb-1.mgmt.example.org"],
      tokenFile: "/etc/mtlb/admin.token",
    },
    log: { format: "json" },
  };
  assert.deepEqual(config, expected);
});

Deno.test("parseConfig() reads the limits of groups, clients within groups, queues and bandwidth", async (t) => {
  const text = BASE.replace(
    '[groups.echo]\nupstreams = ["127.0.0.1:7001"]',
    [
      "[limits]",
      "max_connections_per_client = 10",
      'connection_rate = { count = 100, per = "1m" }',
      'on_rate_limit = "queue"',
      'queue_timeout = "5s"',
      'bandwidth = "10MB/s"',
      "[groups.echo]",
      'upstreams = ["127.0.0.1:7001"]',
      "[groups.cache]",
      'upstreams = ["127.0.0.1:6379"]',
      "max_connections = 500",
    ].join("\n"),
  ).replace(
    'groups = ["echo"]',
    [
      'groups = ["echo", "cache"]',
      'bandwidth = "10MiB/s"',
      "[clients.alice.per_group.cache]",
      "max_connections = 2",
      'connection_rate = { count = 10, per = "1m" }',
    ].join("\n"),
  );
  const config = parseConfig(text, { path: PATH });
  assert.deepEqual(config.limits, {
    maxConnectionsPerClient: 10,
    connectionRate: { count: 100, per: 60_000 },
    onRateLimit: "queue",
    queueTimeout: 5000,
    bandwidth: 10_000_000,
  });
  assert.equal(config.groups.get("cache")!.maxConnections, 500);
  assert.equal(config.groups.get("echo")!.maxConnections, undefined);
  const alice = config.clients.get("alice")!;
  assert.equal(alice.bandwidth, 10 * 1024 * 1024);
  assert.deepEqual(alice.perGroup, {
    cache: { maxConnections: 2, connectionRate: { count: 10, per: 60_000 } },
  });

  const cases: [string, string, string, RegExp][] = [
    [
      "a per_group of a group the client may not use",
      text.replace(
        "[clients.alice.per_group.cache]",
        "[clients.alice.per_group.echo]\nmax_connections = 1\n[clients.alice.per_group.nope]",
      ),
      "clients.alice.per_group.nope",
      /must be one of the client's groups \(echo, cache\)/,
    ],
    [
      "a rate without /s",
      text.replace('bandwidth = "10MiB/s"', 'bandwidth = "10MiB"'),
      "clients.alice.bandwidth",
      /must be a rate such as "10MiB\/s"/,
    ],
    [
      "a rate under 1KB/s",
      text.replace('bandwidth = "10MB/s"', 'bandwidth = "999B/s"'),
      "limits.bandwidth",
      /must be at least "1KB\/s"/,
    ],
    [
      "an unknown on_rate_limit",
      text.replace('on_rate_limit = "queue"', 'on_rate_limit = "wait"'),
      "limits.on_rate_limit",
      /"reject" or "queue"/,
    ],
    [
      "a group cap of 0",
      text.replace("max_connections = 500", "max_connections = 0"),
      "groups.cache.max_connections",
      /at least 1/,
    ],
    [
      "an unknown per_group key",
      text.replace("max_connections = 2", "max_connection = 2"),
      "clients.alice.per_group.cache.max_connection",
      /did you mean "max_connections"/,
    ],
  ];
  for (const [name, bad, key, message] of cases) {
    await t.step(name, () => {
      const error = configError(bad);
      assert.ok(error.message.includes(`"${key}"`), error.message);
      assert.match(error.message, message);
    });
  }
});

Deno.test("parseConfig() fills in the documented defaults", () => {
  const config = parseConfig(BASE, { path: PATH });
  assert.deepEqual(config.server, {
    listen: "127.0.0.1:8443",
    handshakeTimeout: 5000,
    connectTimeout: 3000,
    connectRetries: 2,
    idleTimeout: 900_000,
    drainTimeout: 30_000,
    watch: false,
    onPolicyChange: "close",
    maxBuffer: 1048576,
  });
  const outlier = {
    consecutiveFailures: 5,
    baseEjectionTime: 30_000,
    maxEjectionTime: 300_000,
    maxEjectedPercent: 50,
    panicThreshold: 50,
  };
  assert.deepEqual(config.outlier, outlier);
  assert.deepEqual(config.tls.ciphers, ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]);
  assert.equal(config.tls.crl, undefined);
  assert.equal(config.tls.clientEku, "required");
  assert.equal(config.tls.crlMissing, "refuse");
  assert.deepEqual(config.limits, {
    maxConnectionsPerClient: 10,
    onRateLimit: "reject",
    queueTimeout: 5000,
  });
  assert.deepEqual(config.health, { interval: 30_000, timeout: 1000, rise: 1, fall: 1 });
  assert.deepEqual(config.groups.get("echo"), {
    name: "echo",
    upstreams: [{ address: "127.0.0.1:7001", weight: 1 }],
    dns: [],
    health: { interval: 30_000, timeout: 1000, rise: 1, fall: 1 },
    outlier,
  });
  assert.deepEqual(config.clients.get("alice"), {
    name: "alice",
    match: { cn: "alice" },
    groups: ["echo"],
  });
  assert.deepEqual(config.admin, { allowReload: false, hosts: [] });
  assert.deepEqual(config.log, { format: "auto" });
});

Deno.test("parseConfig() resolves relative paths against the config file's folder", async (t) => {
  await t.step("by default the folder of `path`", () => {
    const { tls } = parseConfig(BASE.replace('"certs/ca.crt"', '"../pki/./ca.crt"'), {
      path: "/srv/mtlb/config/lb.toml",
    });
    assert.equal(tls.ca, "/srv/mtlb/pki/ca.crt");
    assert.equal(tls.cert, "/srv/mtlb/config/certs/server.crt");
  });
  await t.step("an explicit baseDir wins", () => {
    const { tls } = parseConfig(BASE, { path: "lb.toml", baseDir: "/opt/lb" });
    assert.equal(tls.key, "/opt/lb/certs/server.key");
  });
  await t.step("absolute paths are kept", () => {
    const { tls } = parseConfig(BASE.replace('"certs/ca.crt"', '"/pki/ca.crt"'), { path: PATH });
    assert.equal(tls.ca, "/pki/ca.crt");
  });
});

Deno.test("parseConfig() accepts listeners on port 0 and per-group listeners only", () => {
  const config = parseConfig(
    edit('listen = "127.0.0.1:8443"', "")
      .replace(
        'upstreams = ["127.0.0.1:7001"]',
        'upstreams = ["127.0.0.1:7001"]\nlisten = "127.0.0.1:0"',
      ) +
      '[groups.other]\nupstreams = ["127.0.0.1:7002"]\nlisten = "127.0.0.1:0"\n',
    { path: PATH },
  );
  assert.equal(config.server.listen, undefined);
  assert.deepEqual([...config.groups.values()].map((g) => g.listen), [
    "127.0.0.1:0",
    "127.0.0.1:0",
  ]);
});

Deno.test("parseConfig() reports the file, line and key in the conventional message", () => {
  const error = configError(
    edit('upstreams = ["127.0.0.1:7001"]', 'upstreams = ["127.0.0.1:7001", "cache"]'),
  );
  assert.equal(error.name, "ConfigError");
  assert.equal(error.path, PATH);
  assert.equal(error.key, "groups.echo.upstreams[1]");
  assert.equal(error.line, 10);
  assert.equal(
    error.message,
    `Cannot load config: ${PATH}:10: "groups.echo.upstreams[1]" must be "host:port", received "cache"`,
  );
  assert.equal(error.detail, '"groups.echo.upstreams[1]" must be "host:port", received "cache"');
});

Deno.test("parseConfig() reports every problem of a file in one error, cross-table rules included", () => {
  const error = configError(
    [
      "[server]", //                                            1
      'listen = "127.0.0.1:8443"', //                           2
      'handshake_timeout = "5 s"', //                           3
      "[tls]", //                                               4
      'ca = "certs/ca.crt"', //                                 5
      "cert = 1", //                                            6
      'key = "certs/server.key"', //                            7
      "[groups.echo]", //                                       8
      'upstreams = ["127.0.0.1:7001", "cache"]', //             9
      "[groups.web]", //                                        10
      'upstreams = ["127.0.0.1:7002", "web"]', //               11
      'listen = "127.0.0.1:8443"', //                           12
      "[clients.alice]", //                                     13
      'match = { cn = "alice" }', //                            14
      'groups = ["echo", "cach"]', //                           15
      "[clients.alice2]", //                                    16
      'match = { cn = "alice" }', //                            17
      "groups = []", //                                         18
    ].join("\n"),
  );
  assert.deepEqual(
    error.problems.map((p) => [p.line, p.detail]),
    [
      [
        3,
        '"server.handshake_timeout" must be a duration such as "500ms", "30s", "5m" or "1h", received "5 s"',
      ],
      [6, '"tls.cert" must be a non-empty string, received 1'],
      [9, '"groups.echo.upstreams[1]" must be "host:port", received "cache"'],
      [11, '"groups.web.upstreams[1]" must be "host:port", received "web"'],
      [12, '"groups.web.listen" uses "127.0.0.1:8443", which "server.listen" already listens on'],
      [15, '"clients.alice.groups[1]" must name a group defined under [groups], received "cach"'],
      [
        17,
        '"clients.alice2.match" is the same as "clients.alice.match": a certificate matching one matches both',
      ],
      [18, '"clients.alice2.groups" must list at least one group'],
    ],
  );
  assert.equal(error.key, "server.handshake_timeout");
  assert.equal(error.line, 3);
  assert.equal(error.omitted, 0);
  // The first problem as ever, then each other one on a line of its own.
  const lines = error.message.split("\n");
  assert.equal(lines.length, 8);
  assert.equal(lines[0], `Cannot load config: ${PATH}:3: ${error.problems[0]!.detail}`);
  assert.equal(
    lines[2],
    `  ${PATH}:9: "groups.echo.upstreams[1]" must be "host:port", received "cache"`,
  );
});

Deno.test("parseConfig() names the known key closest to an unknown one", async (t) => {
  for (
    const [name, text, key, suggestion] of [
      ["a typo", BASE.replace('listen = "', 'listn = "'), "server.listn", "listen"],
      ["a letter swapped", BASE + '[health]\nintreval = "1s"\n', "health.intreval", "interval"],
      [
        "in an inline table",
        BASE.replace(
          'upstreams = ["127.0.0.1:7001"]',
          'upstreams = [{ address = "127.0.0.1:7001", wieght = 2 }]',
        ),
        "groups.echo.upstreams[0].wieght",
        "weight",
      ],
      ["a section", BASE + "[limit]\nmax_connections_per_client = 1\n", "limit", "limits"],
      ["nothing close", "debug = true\n" + BASE, "debug", undefined],
    ] as const
  ) {
    await t.step(name, () => {
      const error = configError(text);
      const problem = error.problems.find((p) => p.key === key);
      assert.ok(problem !== undefined, error.message);
      if (suggestion === undefined) assert.doesNotMatch(problem.detail, /did you mean/);
      else {assert.match(
          problem.detail,
          new RegExp(`is not a known key \\(did you mean "${suggestion}"\\?\\): expected one of `),
        );}
    });
  }
});

Deno.test("parseConfig() lists 20 problems at most and counts the others", () => {
  const unknown = Array.from({ length: 25 }, (_, i) => `unknown_${i} = ${i}`).join("\n");
  const error = configError(BASE.replace("[server]\n", `[server]\n${unknown}\n`));
  assert.equal(error.problems.length, 20);
  assert.equal(error.omitted, 5);
  assert.deepEqual(error.problems.map((p) => p.line), Array.from({ length: 20 }, (_, i) => i + 2));
  const lines = error.message.split("\n");
  assert.equal(lines.length, 21);
  assert.equal(lines.at(-1), "  and 5 more problems");
});

Deno.test("parseConfig() takes a TOML date for no value", () => {
  const error = configError(
    BASE.replace('ca = "certs/ca.crt"', "ca = 1979-05-27T07:32:00Z") +
      "[admin]\nlisten = 07:32:00\n",
  );
  assert.deepEqual(error.problems.map((p) => p.detail), [
    '"tls.ca" must be a non-empty string, received a date or time',
    '"admin.listen" must be "host:port", received a date or time',
  ]);
  assert.equal(
    configError("server = 1979-05-27\n" + BASE.replace('[server]\nlisten = "127.0.0.1:8443"', ""))
      .detail,
    '"server" must be a table, received a date or time',
  );
});

Deno.test("parseConfig() reports TOML syntax errors with line and column", () => {
  const error = configError(edit('key = "certs/server.key"', 'key = "certs/server.key'));
  assert.equal(error.key, undefined);
  assert.equal(error.line, 7);
  assert.equal(typeof error.column, "number");
  assert.match(error.message, new RegExp(`^Cannot load config: ${PATH}:7:\\d+: invalid TOML: \\S`));
  assert.ok(!error.message.includes("\n"), "one-line message");
  assert.equal(error.cause instanceof Error, true);
});

/** [case name, config text, expected key, expected line, message fragment]. */
const BAD: [string, string, string, number | undefined, string][] = [
  // Unknown keys, at every level.
  [
    "unknown top-level section",
    BASE + '[servr]\nlisten = "127.0.0.1:1"\n',
    "servr",
    15,
    "is not a known key",
  ],
  ["unknown top-level key", "debug = true\n" + BASE, "debug", 1, "expected one of server, tls"],
  [
    "unknown key in [server]",
    edit('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\nlistn = "127.0.0.1:8444"'),
    "server.listn",
    3,
    'is not a known key (did you mean "listen"?): expected one of listen, handshake_timeout',
  ],
  [
    "unknown key in [tls]",
    edit('ca = "certs/ca.crt"', 'ca = "certs/ca.crt"\ncafile = "x"'),
    "tls.cafile",
    6,
    "is not a known key",
  ],
  [
    "unknown key in a group",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001"]\nupstream = ["127.0.0.1:7002"]',
    ),
    "groups.echo.upstream",
    11,
    "is not a known key",
  ],
  [
    "unknown key in an upstream",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = [\n  "127.0.0.1:7001",\n  { address = "127.0.0.1:7002", wieght = 2 },\n]',
    ),
    "groups.echo.upstreams[1].wieght",
    12,
    "expected one of address, weight",
  ],
  [
    "unknown key in a group's health",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001"]\nhealth = { intervall = "1s" }',
    ),
    "groups.echo.health.intervall",
    11,
    "is not a known key",
  ],
  [
    "unknown key in [outlier]",
    BASE + "[outlier]\nconsecutive_errors = 3\n",
    "outlier.consecutive_errors",
    16,
    "expected one of consecutive_failures, base_ejection_time",
  ],
  [
    "unknown key in a group's outlier",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001"]\noutlier = { interval = "10s" }',
    ),
    "groups.echo.outlier.interval",
    11,
    "is not a known key",
  ],
  [
    "max_ejection_time below base_ejection_time",
    BASE + '[outlier]\nbase_ejection_time = "1m"\nmax_ejection_time = "30s"\n',
    "outlier.max_ejection_time",
    17,
    'must be at least base_ejection_time ("1m"), received "30s"',
  ],
  [
    "a group's base_ejection_time above the inherited maximum",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001"]\noutlier = { base_ejection_time = "10m" }',
    ),
    "groups.echo.outlier.base_ejection_time",
    11,
    'must be at most max_ejection_time ("5m"), received "10m"',
  ],
  [
    "max_ejected_percent above 100",
    BASE + "[outlier]\nmax_ejected_percent = 101\n",
    "outlier.max_ejected_percent",
    16,
    "must be from 0 to 100, received 101",
  ],
  [
    "panic_threshold negative",
    BASE + "[outlier]\npanic_threshold = -1\n",
    "outlier.panic_threshold",
    16,
    "must be from 0 to 100",
  ],
  [
    "connect_retries above 10",
    edit('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\nconnect_retries = 11'),
    "server.connect_retries",
    3,
    "must be from 0 to 10, received 11",
  ],
  [
    "unknown key in a client",
    BASE + "max_conections = 3\n",
    "clients.alice.max_conections",
    15,
    "is not a known key",
  ],
  [
    "unknown key in a match",
    edit('match = { cn = "alice" }', 'match = { cn = "alice", common_name = "alice" }'),
    "clients.alice.match.common_name",
    13,
    "expected one of spki_sha256, serial, cn, san_uri, san_dns",
  ],
  [
    "unknown key in [health]",
    BASE + "[health]\nretries = 3\n",
    "health.retries",
    16,
    "is not a known key",
  ],
  // Wrong types.
  [
    "listen not a string",
    edit('listen = "127.0.0.1:8443"', "listen = 8443"),
    "server.listen",
    2,
    'must be "host:port", received 8443',
  ],
  [
    "tls.ca not a string",
    edit('ca = "certs/ca.crt"', "ca = 1"),
    "tls.ca",
    5,
    "must be a non-empty string, received 1",
  ],
  [
    "tls.ca empty",
    edit('ca = "certs/ca.crt"', 'ca = ""'),
    "tls.ca",
    5,
    "must be a non-empty string",
  ],
  [
    "[server] not a table",
    edit('[server]\nlisten = "127.0.0.1:8443"', 'server = "127.0.0.1:8443"'),
    "server",
    1,
    'must be a table, received "127.0.0.1:8443"',
  ],
  [
    "client groups not an array",
    edit('groups = ["echo"]', 'groups = "echo"'),
    "clients.alice.groups",
    14,
    'must be an array, received "echo"',
  ],
  [
    "client group not a string",
    edit('groups = ["echo"]', "groups = [1]"),
    "clients.alice.groups[0]",
    14,
    "must be a group name",
  ],
  [
    "match not a table",
    edit('match = { cn = "alice" }', 'match = "alice"'),
    "clients.alice.match",
    13,
    "must be a table",
  ],
  [
    "upstream neither string nor table",
    edit('upstreams = ["127.0.0.1:7001"]', "upstreams = [7001]"),
    "groups.echo.upstreams[0]",
    10,
    "or { address, weight }",
  ],
  [
    "float where an integer belongs",
    BASE + "[health]\nrise = 2.0\n",
    "health.rise",
    16,
    "must be an integer, received 2",
  ],
  [
    "string where an integer belongs",
    BASE + '[limits]\nmax_connections_per_client = "10"\n',
    "limits.max_connections_per_client",
    16,
    "must be an integer",
  ],
  [
    "allow_reload not a boolean",
    BASE + '[admin]\nallow_reload = "yes"\n',
    "admin.allow_reload",
    16,
    "must be true or false",
  ],
  [
    "admin hosts not an array",
    BASE + '[admin]\nhosts = "mtlb.internal"\n',
    "admin.hosts",
    16,
    "must be an array",
  ],
  [
    "admin host with a port",
    BASE + '[admin]\nhosts = [\n  "mtlb.internal",\n  "mtlb.internal:9000",\n]\n',
    "admin.hosts[1]",
    18,
    'must be a host name such as "mtlb.internal" (no port, no wildcard), received "mtlb.internal:9000"',
  ],
  [
    "admin host a wildcard",
    BASE + '[admin]\nhosts = ["*.internal"]\n',
    "admin.hosts[0]",
    16,
    "no wildcard",
  ],
  [
    "admin host repeated in another case",
    BASE + '[admin]\nhosts = ["mtlb.internal", "MTLB.Internal"]\n',
    "admin.hosts[1]",
    16,
    'repeats "mtlb.internal", already admin.hosts[0]',
  ],
  [
    "admin token_file empty",
    BASE + '[admin]\ntoken_file = ""\n',
    "admin.token_file",
    16,
    "must be a non-empty string",
  ],
  [
    "log format unknown",
    BASE + '[log]\nformat = "yaml"\n',
    "log.format",
    16,
    'must be "auto" or "text" or "json"',
  ],
  [
    "proxy_protocol unknown",
    edit('upstreams = ["127.0.0.1:7001"]', 'upstreams = ["127.0.0.1:7001"]\nproxy_protocol = "v1"'),
    "groups.echo.proxy_protocol",
    11,
    'must be "v2"',
  ],
  [
    "cipher not TLS 1.3",
    edit(
      'key = "certs/server.key"',
      'key = "certs/server.key"\nciphers = ["ECDHE-RSA-AES128-GCM-SHA256"]',
    ),
    "tls.ciphers[0]",
    8,
    "must be a TLS 1.3 cipher suite",
  ],
  [
    "no ciphers",
    edit('key = "certs/server.key"', 'key = "certs/server.key"\nciphers = []'),
    "tls.ciphers",
    8,
    "at least one",
  ],
  // Durations.
  [
    "bad duration",
    edit("[server]", '[server]\nhandshake_timeout = "5 s"'),
    "server.handshake_timeout",
    2,
    'must be a duration such as "500ms"',
  ],
  [
    "duration as a number",
    edit("[server]", "[server]\nidle_timeout = 900"),
    "server.idle_timeout",
    2,
    "received 900",
  ],
  [
    "zero duration",
    BASE + '[health]\ninterval = "0s"\n',
    "health.interval",
    16,
    "must be longer than zero",
  ],
  [
    "duration beyond a timer's range",
    edit("[server]", '[server]\nidle_timeout = "999h"'),
    "server.idle_timeout",
    2,
    'must be at most "596h"',
  ],
  [
    "bad rate window",
    BASE + '[limits]\nconnection_rate = { count = 10, per = "1 minute" }\n',
    "limits.connection_rate.per",
    16,
    "must be a duration",
  ],
  [
    "rate without count",
    BASE + '[limits]\nconnection_rate = { per = "1m" }\n',
    "limits.connection_rate.count",
    16,
    "is required",
  ],
  // Addresses.
  [
    "upstream without port",
    edit('upstreams = ["127.0.0.1:7001"]', 'upstreams = ["cache"]'),
    "groups.echo.upstreams[0]",
    10,
    'must be "host:port", received "cache"',
  ],
  [
    "upstream on port 0",
    edit('upstreams = ["127.0.0.1:7001"]', 'upstreams = ["127.0.0.1:0"]'),
    "groups.echo.upstreams[0]",
    10,
    "port from 1 to 65535",
  ],
  [
    "listen port out of range",
    edit('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:99999"'),
    "server.listen",
    2,
    'must be "host:port"',
  ],
  [
    "admin listen bad",
    BASE + '[admin]\nlisten = "localhost"\n',
    "admin.listen",
    16,
    'must be "host:port"',
  ],
  // Hex.
  [
    "spki not hex",
    edit('match = { cn = "alice" }', 'match = { spki_sha256 = "xyz" }'),
    "clients.alice.match.spki_sha256",
    13,
    "must be a SHA-256 in hex",
  ],
  [
    "spki too short",
    edit('match = { cn = "alice" }', 'match = { spki_sha256 = "3f1c" }'),
    "clients.alice.match.spki_sha256",
    13,
    "64 digits",
  ],
  [
    "issuer too short",
    edit('match = { cn = "alice" }', 'match = { cn = "alice", issuer = "3f1c" }'),
    "clients.alice.match.issuer",
    13,
    "must be the SHA-256 of the issuing CA's public key (as `check` lists it) in hex (64 digits",
  ],
  [
    "issuer not hex",
    edit('match = { cn = "alice" }', `match = { cn = "alice", issuer = "${"zz".repeat(32)}" }`),
    "clients.alice.match.issuer",
    13,
    "64 digits, colons optional",
  ],
  [
    "issuer not a string",
    edit('match = { cn = "alice" }', 'match = { cn = "alice", issuer = 1 }'),
    "clients.alice.match.issuer",
    13,
    "must be the SHA-256 of the issuing CA's public key (as `check` lists it) in hex (64 digits, colons optional), received 1",
  ],
  [
    "client_eku neither required nor optional",
    edit('key = "certs/server.key"', 'key = "certs/server.key"\nclient_eku = "off"'),
    "tls.client_eku",
    8,
    '"required" or "optional"',
  ],
  [
    "crl_missing neither refuse nor allow",
    edit('key = "certs/server.key"', 'key = "certs/server.key"\ncrl_missing = true'),
    "tls.crl_missing",
    8,
    '"refuse" or "allow"',
  ],
  [
    "serial with 0x",
    edit('match = { cn = "alice" }', 'match = { serial = "0x1F" }'),
    "clients.alice.match.serial",
    13,
    "must be a serial number in hex",
  ],
  [
    "serial with empty colon part",
    edit('match = { cn = "alice" }', 'match = { serial = "1f::2a" }'),
    "clients.alice.match.serial",
    13,
    "in hex",
  ],
  // Clients.
  [
    "client with no match fields",
    edit('match = { cn = "alice" }', "match = {}"),
    "clients.alice.match",
    13,
    "at least one of spki_sha256",
  ],
  [
    "client without match",
    edit('match = { cn = "alice" }', ""),
    "clients.alice.match",
    12,
    "is required",
  ],
  [
    "client with empty cn",
    edit('match = { cn = "alice" }', 'match = { cn = "" }'),
    "clients.alice.match.cn",
    13,
    "non-empty",
  ],
  [
    "client naming an unknown group",
    edit('groups = ["echo"]', 'groups = ["echo", "cache"]'),
    "clients.alice.groups[1]",
    14,
    'must name a group defined under [groups], received "cache"',
  ],
  [
    "client with no groups",
    edit('groups = ["echo"]', "groups = []"),
    "clients.alice.groups",
    14,
    "at least one group",
  ],
  [
    "client listing a group twice",
    edit('groups = ["echo"]', 'groups = ["echo", "echo"]'),
    "clients.alice.groups[1]",
    14,
    'repeats "echo"',
  ],
  [
    "client max_connections 0",
    BASE + "max_connections = 0\n",
    "clients.alice.max_connections",
    15,
    "must be at least 1, received 0",
  ],
  [
    "two clients with the same match",
    BASE + '[clients.alice2]\nmatch = { cn = "alice" }\ngroups = ["echo"]\n',
    "clients.alice2.match",
    16,
    'is the same as "clients.alice.match"',
  ],
  [
    "same match written differently",
    edit('match = { cn = "alice" }', 'match = { serial = "0A:0B" }') +
    '[clients.alice2]\nmatch = { serial = "a0b" }\ngroups = ["echo"]\n',
    "clients.alice2.match",
    16,
    "is the same as",
  ],
  [
    "a client that can never match alone",
    BASE + '[clients.alice2]\nmatch = { cn = "alice", serial = "01" }\ngroups = ["echo"]\n',
    "clients.alice2.match",
    16,
    'can never match alone: every certificate it matches also matches "clients.alice.match"',
  ],
  [
    "a misspelt key of an upstream table",
    edit('upstreams = ["127.0.0.1:7001"]', 'upstreams = [{ adress = "127.0.0.1:7001" }]'),
    "groups.echo.upstreams[0].address",
    10,
    '"groups.echo.upstreams[0].adress" is not a known key (did you mean "address"?)',
  ],
  [
    "an unknown key named like a member of every object",
    BASE + "toString = 1\n",
    "clients.alice.toString",
    15,
    "is not a known key",
  ],
  [
    "__proto__ as a key of a table",
    BASE.replace("[server]", "[server]\n__proto__ = 1"),
    "server.__proto__",
    2,
    "is not a known key",
  ],
  [
    "an upstream both looked up and given",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = [{ dns = "api.internal:7000", srv = "_a._tcp.x" }]',
    ),
    "groups.echo.upstreams[0]",
    10,
    "must have one of address, dns or srv, received a table with dns and srv",
  ],
  [
    "a client named __proto__",
    BASE + '[clients.__proto__]\nmatch = { cn = 5 }\ngroups = ["echo"]\n',
    "clients.__proto__",
    15,
    "is not a usable key or name",
  ],
  [
    "a group named __proto__",
    BASE + '[groups.__proto__]\nupstreams = ["bad"]\nlisten = 5\n',
    "groups.__proto__",
    15,
    "is not a usable key or name",
  ],
  [
    "a group name one letter off",
    edit('groups = ["echo"]', 'groups = ["ech"]'),
    "clients.alice.groups[0]",
    14,
    'received "ech" (did you mean "echo"?)',
  ],
  [
    "a float for an integer",
    BASE + "max_connections = 2.0\n",
    "clients.alice.max_connections",
    15,
    "must be an integer, received 2.0",
  ],
  [
    "infinity for an integer",
    BASE + "max_connections = -inf\n",
    "clients.alice.max_connections",
    15,
    "must be an integer, received -inf",
  ],
  [
    "bad client name",
    BASE + '[clients."bad name"]\nmatch = { cn = "b" }\ngroups = ["echo"]\n',
    "clients.'bad name'",
    15,
    "has a bad name",
  ],
  // Groups and upstreams.
  [
    "group with no upstreams",
    edit('upstreams = ["127.0.0.1:7001"]', "upstreams = []"),
    "groups.echo.upstreams",
    10,
    "at least one upstream",
  ],
  [
    "group without upstreams key",
    edit('upstreams = ["127.0.0.1:7001"]', 'listen = "127.0.0.1:9443"'),
    "groups.echo.upstreams",
    9,
    "is required",
  ],
  [
    "duplicate upstream",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001", { address = "127.0.0.1:7001", weight = 2 }]',
    ),
    "groups.echo.upstreams[1]",
    10,
    'repeats "127.0.0.1:7001"',
  ],
  [
    "weight 0",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = [{ address = "127.0.0.1:7001", weight = 0 }]',
    ),
    "groups.echo.upstreams[0].weight",
    10,
    "must be from 1 to 1000, received 0",
  ],
  [
    "weight 1001",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = [{ address = "127.0.0.1:7001", weight = 1001 }]',
    ),
    "groups.echo.upstreams[0].weight",
    10,
    "received 1001",
  ],
  ["fall 0", BASE + "[health]\nfall = 0\n", "health.fall", 16, "must be from 1 to 1000"],
  [
    "no groups at all",
    BASE.slice(0, BASE.indexOf("[groups.echo]")),
    "groups",
    undefined,
    "is required",
  ],
  [
    "empty groups table",
    BASE.slice(0, BASE.indexOf("[groups.echo]")) + "[groups]\n",
    "groups",
    9,
    "at least one group",
  ],
  [
    "bad group name",
    BASE + '[groups."-x"]\nupstreams = ["127.0.0.1:7002"]\n',
    "groups.-x",
    15,
    "has a bad name",
  ],
  [
    "group names differing in case only",
    BASE + '[groups.Echo]\nupstreams = ["127.0.0.1:7002"]\n',
    "groups.Echo",
    15,
    "only in letter case",
  ],
  ["no [tls]", BASE.replace(/\[tls\][^[]*/, ""), "tls", undefined, "is required"],
  // Listeners.
  [
    "no listener",
    edit('listen = "127.0.0.1:8443"', ""),
    "server.listen",
    1,
    "nothing would listen",
  ],
  [
    "a group no listener reaches",
    edit('listen = "127.0.0.1:8443"', "") +
    '[groups.other]\nupstreams = ["127.0.0.1:7002"]\nlisten = "127.0.0.1:9443"\n',
    "groups.echo",
    9,
    'needs a listen address: "server.listen" is not set',
  ],
  [
    "group listener equal to the shared one",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001"]\nlisten = "127.0.0.1:8443"',
    ),
    "groups.echo.listen",
    11,
    'uses "127.0.0.1:8443", which "server.listen" already listens on',
  ],
  [
    "two groups on one listener",
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001"]\nlisten = "127.0.0.1:9443"',
    ) +
    '[groups.other]\nupstreams = ["127.0.0.1:7002"]\nlisten = "127.0.0.1:9443"\n',
    "groups.other.listen",
    18,
    '"groups.echo.listen" already listens on',
  ],
  [
    "wildcard overlapping a specific address",
    edit('listen = "127.0.0.1:8443"', 'listen = "0.0.0.0:8443"') +
    '[admin]\nlisten = "127.0.0.1:8443"\n',
    "admin.listen",
    16,
    '"server.listen" already listens on',
  ],
];

Deno.test("parseConfig() reads [cluster] with its defaults and store address", async (t) => {
  await t.step("defaults", () => {
    const config = parseConfig(BASE + '[cluster]\nstore = "redis://10.0.0.5"\n', { path: PATH });
    assert.deepEqual(config.cluster, {
      store: "redis://10.0.0.5",
      storeAddress: "10.0.0.5:6379",
      onStoreError: "local",
      leaseTtl: 15_000,
      timeout: 250,
      clients: "file",
    });
  });
  await t.step("every key", () => {
    const config = parseConfig(
      BASE +
        '[cluster]\nstore = "rediss://u:p@127.0.0.1:6380/1"\non_store_error = "closed"\n' +
        'lease_ttl = "5s"\ntimeout = "100ms"\ninstance_id = "lb-a"\nclients = "shared"\n',
      { path: PATH },
    );
    assert.equal(config.cluster?.clients, "shared");
    assert.equal(config.cluster?.storeAddress, "127.0.0.1:6380");
    assert.equal(config.cluster?.onStoreError, "closed");
    assert.equal(config.cluster?.leaseTtl, 5000);
    assert.equal(config.cluster?.instanceId, "lb-a");
  });
  await t.step("absent: no cluster", () => {
    assert.equal(parseConfig(BASE, { path: PATH }).cluster, undefined);
  });
  for (
    const [name, text, key] of [
      ["not a Redis URL", '[cluster]\nstore = "http://x:1"\n', "cluster.store"],
      ["no store", '[cluster]\ntimeout = "1s"\n', "cluster.store"],
      [
        "bad policy",
        '[cluster]\nstore = "redis://x"\non_store_error = "open"\n',
        "cluster.on_store_error",
      ],
      ["short lease", '[cluster]\nstore = "redis://x"\nlease_ttl = "10ms"\n', "cluster.lease_ttl"],
      ["bad clients", '[cluster]\nstore = "redis://x"\nclients = "redis"\n', "cluster.clients"],
      ["unknown key", '[cluster]\nstore = "redis://x"\nttl = "1s"\n', "cluster.ttl"],
    ] as const
  ) {
    await t.step(name, () => assert.equal(configError(BASE + text).key, key));
  }
});

Deno.test("parseConfig() tells listeners apart by the address they bind, however written", async (t) => {
  for (
    const [shared, admin] of [
      ["[::0]:8443", "[::1]:8443"],
      ["[0:0:0:0:0:0:0:1]:8443", "[::1]:8443"],
      ["127.0.0.1:8443", "127.1:8443"],
      ["0.0.0.0:8443", "[::ffff:127.0.0.1]:8443"],
    ]
  ) {
    await t.step(`${shared} and ${admin}`, () => {
      const text = edit('listen = "127.0.0.1:8443"', `listen = "${shared}"`);
      const error = configError(`${text}[admin]\nlisten = "${admin}"\n`);
      assert.equal(error.key, "admin.listen");
      assert.match(error.detail, /which "server\.listen" already listens on$/);
    });
  }
  await t.step("different addresses", () => {
    parseConfig(`${BASE}[admin]\nlisten = "127.0.0.2:8443"\n`, { path: PATH });
    parseConfig(`${BASE}[admin]\nlisten = "[::1]:8443"\n`, { path: PATH });
    // Hosts named like nothing but themselves.
    for (const name of ["any", "ipv4"]) {
      const ipv6 = edit('listen = "127.0.0.1:8443"', 'listen = "[::1]:8443"');
      parseConfig(`${ipv6}[admin]\nlisten = "${name}:8443"\n`, { path: PATH });
    }
  });
});

Deno.test("parseConfig() reports repeats and ejection times beside other problems", () => {
  const error = configError(
    edit(
      'upstreams = ["127.0.0.1:7001"]',
      'upstreams = ["127.0.0.1:7001", "127.0.0.1:7001", "nohost"]\n' +
        'outlier = { base_ejection_time = "10m", max_ejection_time = "1m" }',
    ) + '[outlier]\nbase_ejection_time = "soon"\n',
  );
  assert.deepEqual(error.problems.map((p) => [p.line, p.key]), [
    [10, "groups.echo.upstreams[2]"],
    [10, "groups.echo.upstreams[1]"],
    [11, "groups.echo.outlier.max_ejection_time"],
    [17, "outlier.base_ejection_time"],
  ]);
});

Deno.test("parseConfig() refuses TOML it cannot place or nest", async (t) => {
  await t.step("an impossible date, on its line", () => {
    const error = configError(BASE + "renewed = 2023-02-29\n");
    assert.equal(error.line, 15);
    assert.match(error.detail, /^invalid TOML: .*date/i);
  });
  await t.step("tables nested thousands deep", () => {
    for (const text of ["x" + ".a".repeat(10_000) + " = 1\n", "[x" + ".a".repeat(10_000) + "]\n"]) {
      assert.match(configError(BASE + text).detail, /^invalid TOML: values nested more than/);
    }
  });
});

Deno.test("parseConfig() rejects each bad config with its key and line", async (t) => {
  for (const [name, text, key, line, fragment] of BAD) {
    await t.step(name, () => {
      const error = configError(text);
      assert.equal(error.key, key, error.message);
      assert.equal(error.line, line, error.message);
      assert.equal(error.path, PATH);
      assert.ok(error.message.startsWith(`Cannot load config: ${PATH}`), error.message);
      assert.ok(error.message.includes(fragment), `${error.message}\n  lacks: ${fragment}`);
    });
  }
});

Deno.test("parseConfig() finds lines in multi-line arrays, inline tables and quoted keys", async (t) => {
  await t.step("an array element on its own line", () => {
    const error = configError(
      edit(
        'upstreams = ["127.0.0.1:7001"]',
        'upstreams = [\n  "127.0.0.1:7001", # first\n  """\n7002""",\n]',
      ),
    );
    assert.equal(error.key, "groups.echo.upstreams[1]");
    assert.equal(error.line, 12);
  });
  await t.step("a quoted group name with a dot", () => {
    const error = configError(
      BASE + '[groups."api.v1"]\n# the api\nupstreams = ["127.0.0.1:7002"]\nlisten = "nope"\n',
    );
    assert.equal(error.key, "groups.'api.v1'.listen");
    assert.equal(error.line, 18);
  });
  await t.step("a group whose name is another's name and key", () => {
    const error = configError(
      edit(
        "[groups.echo]",
        '[groups."echo.health"]\nupstreams = ["127.0.0.1:7002"]\n[groups.echo]\nhealth = 5',
      ),
    );
    assert.equal(error.key, "groups.echo.health");
    assert.equal(error.line, 12);
  });
  await t.step("a table after one of its subtables", () => {
    const error = configError(
      BASE + '[groups.two.health]\nfall = 2\n[groups.two]\nlisten = "127.0.0.1:9444"\n' +
        "[groups.three.health]\n",
    );
    assert.deepEqual(error.problems.map((p) => [p.key, p.line]), [
      ["groups.two.upstreams", 17],
      ["groups.three.upstreams", 19],
    ]);
  });
  await t.step("an array of tables", () => {
    const error = configError(
      edit(
        'upstreams = ["127.0.0.1:7001"]',
        '[[groups.echo.upstreams]]\naddress = "127.0.0.1:7001"\n' +
          '[[groups.echo.upstreams]]\naddress = "127.0.0.1:7002"\nweight = 0',
      ),
    );
    assert.equal(error.key, "groups.echo.upstreams[1].weight");
    assert.equal(error.line, 14);
  });
  await t.step("a dotted key at the top level", () => {
    const error = configError('admin.listen = "nope"\n' + BASE);
    assert.equal(error.key, "admin.listen");
    assert.equal(error.line, 1);
  });
});

Deno.test("parseConfig() treats an empty send or expect as off", () => {
  const config = parseConfig(
    BASE + '[health]\nsend = "PING\\r\\n"\nexpect = "+PONG"\n' +
      '[groups.banner]\nupstreams = ["127.0.0.1:7002"]\nhealth = { send = "", expect = "SSH-" }\n',
    { path: PATH },
  );
  assert.deepEqual(config.groups.get("echo")?.health, {
    interval: 30_000,
    timeout: 1000,
    rise: 1,
    fall: 1,
    send: "PING\r\n",
    expect: "+PONG",
  });
  assert.deepEqual(config.groups.get("banner")?.health, {
    interval: 30_000,
    timeout: 1000,
    rise: 1,
    fall: 1,
    expect: "SSH-",
  });
});

Deno.test("loadConfig() loads the shipped config/lb.toml with paths from its folder", async () => {
  const file = fromFileUrl(new URL("../config/lb.toml", import.meta.url));
  const root = fromFileUrl(new URL("../", import.meta.url));
  const config = await loadConfig(file);
  assert.equal(config.path, file);
  assert.equal(config.server.listen, "127.0.0.1:8443");
  assert.equal(config.tls.ca, join(root, "certs/ca.crt"));
  assert.equal(config.tls.cert, join(root, "certs/server.crt"));
  assert.equal(config.tls.key, join(root, "certs/server.key"));
  assert.deepEqual(
    [...config.groups.values()].map((g) => [g.name, g.listen, g.upstreams.map((u) => u.address)]),
    [
      ["echo", "127.0.0.1:9443", ["127.0.0.1:7001", "127.0.0.1:7002"]],
      ["cache", undefined, ["127.0.0.1:7003"]],
    ],
  );
  assert.deepEqual(config.clients.get("alice")?.groups, ["echo", "cache"]);
  assert.deepEqual(config.clients.get("alice")?.match, { cn: "alice" });
  assert.deepEqual(config.clients.get("bob")?.groups, ["echo"]);
  assert.deepEqual(config.clients.get("bob")?.match, { cn: "bob" });
});

Deno.test("loadConfig() names an unreadable file", async () => {
  const file = "/nonexistent/mtlb/lb.toml";
  await assert.rejects(loadConfig(file), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.path, file);
    assert.equal(error.key, undefined);
    assert.match(
      error.message,
      /^Cannot load config: \/nonexistent\/mtlb\/lb\.toml: cannot read the file: /,
    );
    return true;
  });
});
